"""ShardState: the coordination core of one shard, a façade over small parts.

Plain Python + numpy; never imports Ray. The parts, each in its own module:

- ``table``: agent id <-> row, and every per-row array (swap-remove moves them all);
- ``intake``: what a batch of signals changes (validated, journalled, then applied);
- ``signals``: live signals and their decayed scores;
- ``history``: the bounded ring of recent signals per agent;
- ``inflight``: assignments and completions, reconciled with the reports; ``estimate``:
  the load each agent holds between reports (``learning``: what is learned per agent;
  ``tasks``: the verbs that record tasks: assign, report_tasks, complete);
- ``metadata``: labels (``describe``);
- ``selection``: scores and ranks; ``shard_select``: a shard's candidates after the
  filters (health, headroom: ``admission``; the key's agents: ``affinity``); ``merge``:
  the exact top-k merge; ``decisions``: why each assignment went where it went;
- ``prediction``: overload trends (``overloads``: the paged scan); ``persistence``: the
  snapshot format; ``recovery``: restore (``recovery.restore(data, config)``), snapshots
  in steps and WAL replay (``wal``: the record format);
- ``reads``: what a shard tells about its agents (scores, one agent's view, its forecast);
- ``metrics``: counters and histograms, recorded here after each verb.

Every verb that changes state takes ``at_s``, the time it happens (None: now, by the
clock): a WAL replay runs each record at its own time through the same verbs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from actors.core import decisions as records
from actors.core import wal
from actors.core.admission import Admission, saturated
from actors.core.affinity import Affinity, claim
from actors.core.columns import SignalColumns, columns_from_arrays, columns_from_dicts
from actors.core.config import ShardConfig
from actors.core.decisions import DecisionLog
from actors.core.errors import NotFound
from actors.core.estimate import LoadEstimate
from actors.core.health import Health
from actors.core.history import History
from actors.core.inflight import InFlight
from actors.core.intake import Intake
from actors.core.merge import Partial, merge_partials
from actors.core.metadata import Labels
from actors.core.metrics import Counters
from actors.core.models import (
    AgentScore,
    AgentView,
    CompleteResult,
    DescribeRequest,
    IngestResult,
    OverloadPrediction,
    PredictParams,
    SelectRequest,
    SelectResult,
    Weights,
    check_agent_id,
)
from actors.core.overloads import OverloadScan
from actors.core.prediction import Predictor
from actors.core.reads import Reads
from actors.core.selection import Scorer
from actors.core.shard_select import partial_select
from actors.core.signals import LiveSignals
from actors.core.speed import Speed
from actors.core.table import AgentTable
from actors.core.tasks import Tasks


class ShardState:
    """All live signals, history, assignments and metadata of the agents one shard owns."""

    def __init__(
        self,
        config: ShardConfig | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.config = cfg = config or ShardConfig()
        self._clock = clock
        self._rng = np.random.default_rng(seed)
        self._default_w = cfg.default_weights.vector()
        self.table = AgentTable(cfg.initial_capacity)
        self.signals = LiveSignals(self.table)
        self.hist = History(self.table, cfg.history_size)
        self.inflight = InFlight(self.table, cfg)
        self.estimate = LoadEstimate(self.table, self.inflight)
        self.labels = Labels(self.table)
        self.health = Health(self.table, cfg)
        self.speed = Speed(self.table, cfg, lambda: self.inflight.rates.drain_learned)
        self.admission = Admission(self.table, self.inflight.rates)
        self.scorer = Scorer(
            self.table,
            self.signals,
            self.inflight,
            self.estimate,
            self.labels,
            self.health,
            self.speed,
            self.admission,
            cfg,
        )
        self.predictor = Predictor(cfg, self.hist, self.signals)
        self.metrics = Counters()
        self.decisions = DecisionLog(cfg.decision_records)
        self.affinity = Affinity(self.table, cfg.affinity_keys)
        self.scorer.affinity = self.affinity
        self.scan = OverloadScan(
            self.table, self.predictor, self.estimate, self.metrics, self.scorer.measured
        )
        self.reads = Reads(self.scorer, self.hist, self.predictor, self.metrics, self._default_w)
        self.tasks: Tasks = Tasks(
            self.table, self.inflight, self.health, self.speed, self.metrics, self._log
        )
        self.intake = Intake(
            cfg,
            self.table,
            self.hist,
            self.signals,
            self.inflight,
            self.admission,
            self.metrics,
            self._log,
        )
        # Called with one encoded WAL record per change (``actors.core.wal``), when the
        # host keeps a write-ahead log; None: no log. Every verb calls it before it
        # changes anything, so when it raises (the storage refused the record) the
        # change is not applied.
        self.journal: Callable[[bytes], None] | None = None

    def now(self, at_s: float | None = None) -> float:
        """``at_s`` when a verb is told when it happens (a replay), else the clock."""
        return self._clock() if at_s is None else at_s

    def _log(self, record: Callable[[], bytes]) -> None:
        """Journal one change (encoded only when a log is kept), before it is applied."""
        if self.journal is not None:
            self.journal(record())

    # ------------------------------------------------------------------ ingest
    def ingest(self, cols: SignalColumns, at_s: float | None = None) -> IngestResult:
        return self.intake.ingest(cols, self.now(at_s))

    def ingest_dicts(self, items: Sequence[Any]) -> IngestResult:
        return self.ingest(columns_from_dicts(items))

    def ingest_arrays(
        self,
        agent_ids: Sequence[Any],
        signal_types: Any,
        values: Any,
        confidences: Any = None,
        ttls_s: Any = None,
        timestamps_s: Any = None,
    ) -> IngestResult:
        return self.ingest(
            columns_from_arrays(agent_ids, signal_types, values, confidences, ttls_s, timestamps_s)
        )

    # ------------------------------------------------------------------ selection
    def _weights(self, weights: Weights | None) -> np.ndarray:
        return self._default_w if weights is None else weights.vector()

    def partial_select(self, req: SelectRequest) -> Partial:
        """This shard's candidates for a selection, enough for an exact global merge."""
        return partial_select(
            self.scorer, req, self._weights(req.weights), self._clock(), self._rng
        )

    def select(self, req: SelectRequest) -> SelectResult:
        """A whole selection on this shard alone (the router merges the same partials)."""
        t0, now = time.perf_counter(), self._clock()
        part = partial_select(self.scorer, req, self._weights(req.weights), now, self._rng)
        result, chosen = merge_partials([part], req, self._rng)
        if req.assign:
            # The picks have headroom: partial_select just checked, on this same state.
            why = (
                records.Pending.of(req, {0: part}, result, 0.0) if self.decisions.capacity else None
            )
            first = claim(req.affinity_key, result)
            ids = self.assign(
                [s.agent_id for s in result.selected], record=why, affinity=first, at_s=now
            )
            for s in result.selected:
                s.assignment_id = ids.get(s.agent_id)
            if not result.selected and part.full:
                raise saturated(part.full, part.free_in_s)
        self.metrics.record_selection(
            req.strategy, chosen.max_signal_age_s, time.perf_counter() - t0
        )
        if result.affinity is not None:
            self.metrics.count(self.metrics.affinity_total, result.affinity)
        return result

    # ------------------------------------------------------------------ tasks
    def assign(
        self,
        agent_ids: Sequence[str],
        admit: bool = False,
        record: dict[str, Any] | records.Pending | None = None,
        affinity: tuple[str, str] | None = None,
        at_s: float | None = None,
    ) -> dict[str, str]:
        """Record one in-flight task on each known agent; unknown ones get no state. With
        ``admit`` (a selection's assignment), only on agents with headroom: a full one,
        or a probing one whose probes all run, gets no task (another router took the
        last slot, or the probe, first). ``record``: the decision's record;
        ``affinity``: (key, agent) when that agent now serves the key.
        Returns the assignment id of each agent assigned."""
        now = self.now(at_s)
        rows = self.table.lookup(agent_ids)
        full = self.scorer.full(rows, now) if admit else None
        if admit:
            probed = self.scorer.probes_out(rows, now)
            if probed is not None:
                full = probed if full is None else full | probed
        if full is not None:
            agent_ids = [a for a, f in zip(agent_ids, full.tolist(), strict=True) if not f]
        ids = dict(self.tasks.assign_with_ids([(a, None) for a in agent_ids], now))
        if record is not None:  # why (``decisions``), kept under each assignment id
            for agent, aid in ids.items():
                self.decisions.add(aid, agent, record)
        if affinity is not None and affinity[1] in ids:  # (key, the key's agent now)
            self.affinity.remember(affinity[0], affinity[1], now)
        return ids

    def report_tasks(
        self,
        assigned: Sequence[str],
        completed: Sequence[tuple[str, bool, float | None]],
        at_s: float | None = None,
    ) -> dict[str, int]:
        if completed:
            self.admission.freed()
        return self.tasks.report(assigned, completed, self.now(at_s))

    def complete(
        self,
        agent_id: str,
        assignment_id: str | None = None,
        ok: bool = True,
        duration_s: float | None = None,
        at_s: float | None = None,
    ) -> CompleteResult:
        now = self.now(at_s)
        out = self.tasks.complete(agent_id, assignment_id, ok, duration_s, now)
        if out.released:
            self.admission.freed()
            self.decisions.outcome(out.assignment_id, ok, duration_s)
        return out

    def decision(self, assignment_id: str) -> dict[str, Any] | None:
        """The record of why this assignment went where it went (None: not kept here)."""
        return self.decisions.get(assignment_id)

    # ------------------------------------------------------------------ metadata
    def describe(
        self,
        agent_id: str,
        max_concurrency: int | None = None,
        labels: dict[str, str] | None = None,
        at_s: float | None = None,
    ) -> AgentView:
        """Set metadata (no TTL; omitted fields are kept). Creates the agent if new."""
        meta = DescribeRequest(max_concurrency=max_concurrency, labels=labels)
        check_agent_id(agent_id)
        now = self.now(at_s)
        args = {"agent": agent_id, "max_concurrency": meta.max_concurrency, "labels": meta.labels}
        self._log(lambda: wal.encode("describe", now, args))
        r = self.table.row(agent_id)
        if r is None:
            self.table.add([agent_id])
            r = self.table.n - 1
            self.hist.touch(r, now)  # retained like an agent that just reported
        if meta.max_concurrency is not None:
            self.inflight.declare(r, meta.max_concurrency)
            self.admission.freed()
        if meta.labels is not None:
            self.labels.replace(agent_id, meta.labels)
        return self.agent(agent_id, now)

    def scores(
        self, agent_ids: Sequence[str], weights: Weights | None = None
    ) -> dict[str, AgentScore]:
        return self.reads.scores(agent_ids, self._weights(weights), self._clock())

    # ------------------------------------------------------------------ agents
    def _row(self, agent_id: str) -> int:
        r = self.table.row(agent_id)
        if r is None:
            raise NotFound(
                f"agent {agent_id!r} is not known",
                [{"field": "agent_id", "reason": "unknown agent"}],
            )
        return r

    def agent(self, agent_id: str, at_s: float | None = None) -> AgentView:
        return self.reads.agent(agent_id, self._row(agent_id), self.now(at_s))

    def delete(self, agent_id: str, at_s: float | None = None) -> bool:
        r = self.table.row(agent_id)
        if r is None:
            return False
        now = self.now(at_s)
        self._log(lambda: wal.encode("delete", now, {"agent": agent_id}))
        self.table.remove([r])
        return True

    def history(self, agent_id: str) -> list[dict[str, Any]]:
        """The agent's retained history, oldest first (by arrival)."""
        return self.hist.series(self._row(agent_id))

    # ------------------------------------------------------------------ prediction
    def predict(self, agent_id: str, params: PredictParams | None = None) -> OverloadPrediction:
        row = self._row(agent_id)
        return self.reads.predict(agent_id, row, params or PredictParams(), self._clock())

    # ------------------------------------------------------------------ upkeep
    def sweep(self, at_s: float | None = None) -> dict[str, int]:
        """Drop expired signals and assignments, then agents with nothing live, nothing
        in flight and no recent history (with all their state). Linear in the agents."""
        now = self.now(at_s)
        self._log(lambda: wal.encode("sweep", now))
        n = self.table.n
        expired = self.signals.expire(now)
        self.inflight.expire(now)
        idle = ~self.signals.has_live(slice(0, n), now)
        stale = self.hist.stale(now - self.config.history_retention_s)
        drop = np.flatnonzero(idle & stale)
        holders = self.inflight.holders()
        if holders and len(drop):
            ids = self.table.ids
            drop = drop[[ids[r] not in holders for r in drop.tolist()]]
        self.table.remove(drop.tolist())
        return {"expired_signals": expired, "dropped_agents": len(drop)}

    @property
    def capacity_epoch(self) -> int:
        """Advances whenever a slot may have freed: a completion, an expiry (on a sweep
        or a read), a LOAD report, a new agent, a declared concurrency."""
        return self.admission.epoch + self.inflight.expired_total

    def __len__(self) -> int:
        return self.table.n

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self.table.index

    def agent_ids(self) -> list[str]:
        return list(self.table.ids)

    def stats(self) -> dict[str, int]:
        return self.reads.stats(self._clock())

    def counters(self) -> Counters:
        return self.reads.counters(self._clock())
