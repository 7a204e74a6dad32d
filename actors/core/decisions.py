"""Decision records: why a task went where it went (DESIGN §4, "Decision records").

Every assigning selection leaves a record with the shard that owns the chosen agent: the
request, how many agents each shard considered and how many each filter removed, the
chosen agent's dimension scores, ``predicted_s`` and health, the runners-up with theirs,
the wait in the flow-control queue, and later the assignment's outcome. The router
builds it (``build``, plain code) from what the shards answered and sends it with the
assignment, so recording costs no extra call. Kept in a bounded ring per shard, by
assignment id, oldest out first; not in the WAL (a restart forgets them).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.core.health import HEALTH_STATES
from actors.core.merge import Partial
from actors.core.models import DIMENSIONS, SelectRequest, SelectResult

RUNNERS_UP = 3  # the best candidates not chosen, kept per record


def _agent(p: Partial, i: int) -> dict[str, Any]:
    predicted = float(p.predicted_s[i]) if len(p.predicted_s) > i else float("nan")
    return {
        "agent_id": p.agent_ids[i],
        "score": round(float(p.scores[i]), 6),
        "scores": {d: round(float(v), 6) for d, v in zip(DIMENSIONS, p.dims[i], strict=True)},
        "predicted_s": None if np.isnan(predicted) else round(predicted, 6),
        "health": HEALTH_STATES[int(p.health[i])] if len(p.health) > i else "healthy",
    }


@dataclass(frozen=True)
class Pending:
    """What a record is made of, kept as it is and made into a record only when asked
    for: a selection in the shard itself then pays a tuple, not a document."""

    req: SelectRequest
    parts: dict[int, Partial]
    chosen: tuple[str, ...]
    degraded: bool
    waited_s: float
    at_s: float

    @classmethod
    def of(
        cls, req: SelectRequest, parts: dict[int, Partial], result: SelectResult, waited_s: float
    ) -> Pending:
        chosen = tuple(s.agent_id for s in result.selected)
        return cls(req, parts, chosen, result.degraded, waited_s, time.time())

    def build(self) -> dict[str, Any]:
        return build(self.req, self.parts, self.chosen, self.degraded, self.waited_s, self.at_s)


def build(
    req: SelectRequest,
    parts: dict[int, Partial],
    chosen_ids: tuple[str, ...],
    degraded: bool,
    waited_s: float,
    at_s: float,
) -> dict[str, Any]:
    """The record of one assigning selection (its assignment ids are added per agent by
    the owning shard). ``parts``: each answering shard's partial, by shard index."""
    chosen = set(chosen_ids)
    ranked: list[tuple[float, Partial, int]] = []
    for p in parts.values():
        keys = p.order_keys()
        ranked += [(float(keys[i]), p, i) for i in range(len(p.agent_ids))]
    ranked.sort(key=lambda t: -t[0])
    picks = {}
    for _, p, i in ranked:
        if p.agent_ids[i] in chosen and p.agent_ids[i] not in picks:
            picks[p.agent_ids[i]] = _agent(p, i)
    runners = [(p, i) for _, p, i in ranked if p.agent_ids[i] not in chosen][:RUNNERS_UP]
    return {
        "at": at_s,
        "request": {
            "strategy": req.strategy,
            "k": req.k,
            "weights": None if req.weights is None else req.weights.model_dump(),
            "candidates": None if req.candidates is None else len(req.candidates),
            "exclude": len(req.exclude),
            "require_labels": req.require_labels,
            "require_signals": req.require_signals,
            "min_score": req.min_score,
            "deadline_s": req.deadline_s,
            "tenant": req.tenant,
            "priority": req.priority,
            "wait_s": req.wait_s,
        },
        "shards": [
            {
                "shard": s,
                "considered": p.considered,
                "removed": {
                    "labels_or_excluded": p.filtered,
                    "unhealthy": p.blocked,
                    "no_headroom": p.full,
                    "min_score": max(p.considered - p.blocked - p.full - p.eligible, 0),
                },
                "eligible": p.eligible,
            }
            for s, p in sorted(parts.items())
        ],
        "chosen": [picks[a] for a in chosen_ids if a in picks],
        "runners_up": [_agent(p, i) for p, i in runners],
        "waited_s": round(waited_s, 6),
        "degraded": degraded,
        "outcome": None,
    }


class DecisionLog:
    """The bounded ring of one shard's records, by assignment id."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # assignment id -> [record (or what makes it), agent id, outcome]
        self.records: OrderedDict[str, list[Any]] = OrderedDict()

    def add(self, assignment_id: str, agent_id: str, record: dict[str, Any] | Pending) -> None:
        if self.capacity <= 0:
            return
        self.records[assignment_id] = [record, agent_id, None]
        while len(self.records) > self.capacity:
            self.records.popitem(last=False)

    def outcome(self, assignment_id: str | None, ok: bool, duration_s: float | None) -> None:
        entry = None if assignment_id is None else self.records.get(assignment_id)
        if entry is not None:
            entry[2] = {"ok": ok, "duration_s": duration_s, "at": time.time()}

    def get(self, assignment_id: str) -> dict[str, Any] | None:
        entry = self.records.get(assignment_id)
        if entry is None:
            return None
        record, agent_id, outcome = entry
        made = record.build() if isinstance(record, Pending) else record
        return {**made, "assignment_id": assignment_id, "agent": agent_id, "outcome": outcome}
