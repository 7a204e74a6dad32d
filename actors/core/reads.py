"""What a shard tells about its agents without changing them: their scores, one agent's
view (signals, scores, the estimate, health, speed), its overload forecast, and the
shard's own figures (stats, the counters a scrape reads).

Reads of the parts ``ShardState`` composes, through the ``Scorer`` that already holds
them; the verbs that change state stay in ``ShardState``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from actors.core.health import HEALTH_STATES
from actors.core.history import History
from actors.core.metrics import Counters
from actors.core.models import (
    DIMENSIONS,
    LOAD_CODE,
    AgentScore,
    AgentView,
    OverloadPrediction,
    PredictParams,
)
from actors.core.prediction import Predictor
from actors.core.selection import Scorer


class Reads:
    def __init__(
        self,
        scorer: Scorer,
        hist: History,
        predictor: Predictor,
        metrics: Counters,
        default_w: np.ndarray,
    ) -> None:
        self.scorer = scorer
        self.hist = hist
        self.predictor = predictor
        self.metrics = metrics
        self.default_w = default_w

    def scores(self, agent_ids: Sequence[str], w: np.ndarray, now: float) -> dict[str, AgentScore]:
        """Each agent's score under weights ``w`` (unknown agents: neutral, ``known``
        false), with its dimension scores, ``predicted_s`` and health."""
        scorer = self.scorer
        ids = list(dict.fromkeys(agent_ids))
        rows = scorer.table.lookup(ids)
        known, dims, held = scorer.known_dims(rows, now, tasks=True)
        total = w @ dims
        predicted = scorer.predicted(rows, dims, now, held).tolist()
        health = scorer.health_of(rows, now).tolist()
        return {
            a: AgentScore.model_construct(
                score=float(total[j]),
                known=bool(known[j]),
                scores=dict(zip(DIMENSIONS, dims[:, j].tolist(), strict=True)),
                predicted_s=predicted[j],
                health=HEALTH_STATES[health[j]],
            )
            for j, a in enumerate(ids)
        }

    def agent(self, agent_id: str, r: int, now: float) -> AgentView:
        """The view of the agent at row ``r``."""
        scorer = self.scorer
        rows = np.array([r])
        dims2 = scorer.dims(rows, now)
        dims = dims2[:, 0]
        reported = scorer.signals.value(LOAD_CODE, r, now)
        delta = scorer.estimate.delta(agent_id, r, now)
        return AgentView(
            agent_id=agent_id,
            signals=scorer.signals.view(r, now),
            scores=dict(zip(DIMENSIONS, dims.tolist(), strict=True)),
            score=float(self.default_w @ dims),
            history_length=self.hist.length(r),
            estimated_load=None if reported is None else reported + delta,
            labels=scorer.labels.get(agent_id),
            **scorer.inflight.view(agent_id, r, now),
            **scorer.health.view(r, now),
            **scorer.speed.view(r),
            predicted_s=float(scorer.predicted(rows, dims2, now)[0]),
        )

    def predict(
        self, agent_id: str, r: int, params: PredictParams, now: float
    ) -> OverloadPrediction:
        """The overload forecast of the agent at row ``r`` (counted in the metrics)."""
        rows = np.array([r])
        scorer = self.scorer
        fit = self.predictor.fit(
            rows, now, params, scorer.estimate.deltas(rows, now), scorer.measured(rows, now)
        )
        out = self.predictor.prediction(agent_id, r, fit, 0, now, params)
        self.metrics.record_prediction(out.will_overload)
        return out

    def stats(self, now: float) -> dict[str, int]:
        """The shard's own figures (the gauges of ``/v1/stats``)."""
        scorer = self.scorer
        return {
            "agents": scorer.table.n,
            "live_signals": scorer.signals.live_count(now),
            "history_signals": self.hist.total(),
            "in_flight": scorer.inflight.open_total,
            # Assignments refused by the shard's bound on open records (not in flight).
            "refused_assignments": scorer.inflight.refused_total,
            # Agents by health state (what outcomes teach; DESIGN §4).
            **{f"agents_{k}": v for k, v in scorer.health.counts(now).items()},
            "array_bytes": scorer.table.nbytes(),
        }

    def counters(self, now: float) -> Counters:
        """The counters with the shard's gauges, as a scrape reads them."""
        scorer = self.scorer
        # Only the gauges a scrape shows, each read once: the health count and the live
        # signals are passes over every agent (``stats`` also sums the history).
        # Reads expire overdue tasks too, so the part's own counter is the total.
        return self.metrics.with_gauges(
            scorer.table.n,
            scorer.signals.live_count(now),
            scorer.inflight.open_total,
            scorer.inflight.expired_total,
            scorer.health.counts(now),
        )
