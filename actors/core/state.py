"""ShardState: the coordination core of one shard, a façade over small parts.

Plain Python + numpy; never imports Ray. The parts, each in its own module:

- ``table``: agent id <-> row, and every per-row array (swap-remove moves them all);
- ``signals``: live signals and their decayed scores;
- ``history``: the bounded ring of recent signals per agent;
- ``inflight``: assignments, completions and the load estimate between reports
  (``task_verbs``: the verbs that record them: assign, report_tasks, complete);
- ``metadata``: labels (``describe``);
- ``selection`` and ``merge``: a shard's candidates and the exact top-k merge;
- ``prediction``: overload trends; ``persistence``: the snapshot format; ``recovery``:
  snapshots in steps and WAL replay (``wal``: the record format);
- ``metrics``: counters and histograms, recorded here after each verb.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from actors.core import persistence, wal
from actors.core.columns import SignalColumns, columns_from_arrays, columns_from_dicts, validate
from actors.core.config import ShardConfig
from actors.core.errors import InvalidInput, NotFound
from actors.core.history import History
from actors.core.inflight import InFlight
from actors.core.merge import Partial, merge_partials
from actors.core.metadata import Labels
from actors.core.metrics import MetricsSnapshot
from actors.core.models import (
    DIMENSIONS,
    LOAD_CODE,
    AgentScore,
    AgentView,
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
from actors.core.selection import Scorer, partial_select
from actors.core.signals import LiveSignals
from actors.core.table import AgentTable
from actors.core.task_verbs import TaskVerbs


class ShardState(TaskVerbs):
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
        self.inflight = InFlight(
            self.table,
            default_unit=cfg.default_task_load,
            assignment_ttl_s=cfg.assignment_ttl_s,
            max_per_agent=cfg.max_inflight_per_agent,
            max_per_shard=cfg.max_inflight_per_shard,
        )
        self.labels = Labels(self.table)
        self.scorer = Scorer(self.table, self.signals, self.inflight, self.labels)
        self.predictor = Predictor(cfg, self.hist, self.signals)
        self.metrics = MetricsSnapshot()
        self.scan = OverloadScan(self.table, self.predictor, self.inflight, self.metrics)
        # Called with one encoded WAL record per change (``actors.core.wal``), when the
        # host keeps a write-ahead log; None: no log. Every verb calls it before it
        # changes anything, so when it raises (the storage refused the record) the
        # change is not applied.
        self.journal: Callable[[bytes], None] | None = None

    # ------------------------------------------------------------------ ingest
    def ingest(self, cols: SignalColumns) -> IngestResult:
        t0 = time.perf_counter()
        now = self._clock()
        cfg, table = self.config, self.table
        known = table.lookup(cols.agent_ids)
        vb = validate(
            cols,
            now,
            max_ttl_s=cfg.max_ttl_s,
            max_future_skew_s=cfg.max_future_skew_s,
            known_rows=known,
        )
        idx = vb.index
        if len(idx):
            codes = cols.type_codes[idx]
            vals = cols.values[idx]
            # A timestamp a few seconds ahead is clock skew: age and expiry count from receipt.
            ts = np.minimum(vb.effective_ts_s[idx], now)
            confidences, ttls = cols.confidences[idx], cols.ttls_s[idx]
            # Logged before anything changes: a record the storage refused leaves no trace.
            if self.journal is not None:
                applied = SignalColumns(
                    agent_ids=[cols.agent_ids[i] for i in idx.tolist()],
                    type_codes=codes,
                    values=vals,
                    confidences=confidences,
                    ttls_s=ttls,
                    timestamps_s=ts,
                )
                self.journal(wal.encode_ingest(now, applied))
            rows = table.rows_creating(cols.agent_ids, idx, known[idx])
            self.hist.write(rows, codes, vals, ts)
            # A backfilled sample (expired on arrival) goes into history, never live.
            live = vb.live[idx]
            r, c, t = self.signals.write(
                rows[live],
                codes[live],
                vals[live],
                confidences[live],
                ttls[live],
                ts[live],
                now,
            )
            is_load = c == LOAD_CODE
            if is_load.any():
                self.inflight.on_load(
                    r[is_load], self.table["val"][LOAD_CODE, r[is_load]], t[is_load]
                )
        self.metrics.record_ingest(
            cols.type_codes[idx], vb.reasons, time.perf_counter() - t0, len(cols)
        )
        return IngestResult.model_construct(accepted=len(idx), rejected=vb.rejected)

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
        t0 = time.perf_counter()
        result, chosen = merge_partials([self.partial_select(req)], req, self._rng)
        if req.assign:
            ids = self.assign([s.agent_id for s in result.selected])
            for s in result.selected:
                s.assignment_id = ids.get(s.agent_id)
        self.metrics.record_selection(
            req.strategy, chosen.max_signal_age_s, time.perf_counter() - t0
        )
        return result

    def describe(
        self,
        agent_id: str,
        max_concurrency: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> AgentView:
        """Set metadata (no TTL; omitted fields are kept). Creates the agent if new."""
        meta = DescribeRequest(max_concurrency=max_concurrency, labels=labels)
        check_agent_id(agent_id)
        now = self._clock()
        if self.journal is not None:
            args = {
                "agent": agent_id,
                "max_concurrency": meta.max_concurrency,
                "labels": meta.labels,
            }
            self.journal(wal.encode("describe", now, args))
        r = self.table.row(agent_id)
        if r is None:
            self.table.add([agent_id])
            r = self.table.n - 1
            self.hist.touch(r, now)  # retained like an agent that just reported
        if meta.max_concurrency is not None:
            self.inflight.declare(r, meta.max_concurrency)
        if meta.labels is not None:
            self.labels.replace(agent_id, meta.labels)
        return self.agent(agent_id)

    def scores(
        self, agent_ids: Sequence[str], weights: Weights | None = None
    ) -> dict[str, AgentScore]:
        now = self._clock()
        w = self._weights(weights)
        ids = list(dict.fromkeys(agent_ids))
        known, dims = self.scorer.known_dims(self.table.lookup(ids), now)
        total = w @ dims
        return {
            a: AgentScore.model_construct(
                score=float(total[j]),
                known=bool(known[j]),
                scores=dict(zip(DIMENSIONS, dims[:, j].tolist(), strict=True)),
            )
            for j, a in enumerate(ids)
        }

    # ------------------------------------------------------------------ agents
    def _row(self, agent_id: str) -> int:
        r = self.table.row(agent_id)
        if r is None:
            raise NotFound(
                f"agent {agent_id!r} is not known",
                [{"field": "agent_id", "reason": "unknown agent"}],
            )
        return r

    def agent(self, agent_id: str) -> AgentView:
        now = self._clock()
        r = self._row(agent_id)
        dims = self.scorer.dims(np.array([r]), now)[:, 0]
        reported = self.signals.value(LOAD_CODE, r, now)
        delta = self.inflight.delta(agent_id, r, now)
        return AgentView(
            agent_id=agent_id,
            signals=self.signals.view(r, now),
            scores=dict(zip(DIMENSIONS, dims.tolist(), strict=True)),
            score=float(self._default_w @ dims),
            history_length=self.hist.length(r),
            estimated_load=None if reported is None else reported + delta,
            labels=self.labels.get(agent_id),
            **self.inflight.view(agent_id, r, now),
        )

    def delete(self, agent_id: str) -> bool:
        r = self.table.row(agent_id)
        if r is None:
            return False
        if self.journal is not None:
            self.journal(wal.encode("delete", self._clock(), {"agent": agent_id}))
        self.table.remove([r])
        return True

    def history(self, agent_id: str) -> list[dict[str, Any]]:
        """The agent's retained history, oldest first (by arrival)."""
        return self.hist.series(self._row(agent_id))

    # ------------------------------------------------------------------ prediction
    def predict(self, agent_id: str, params: PredictParams | None = None) -> OverloadPrediction:
        params = params or PredictParams()
        now = self._clock()
        r = self._row(agent_id)
        rows = np.array([r])
        fit = self.predictor.fit(rows, now, params, self.inflight.deltas(rows, now))
        out = self.predictor.prediction(agent_id, r, fit, 0, now, params)
        self.metrics.record_prediction(out.will_overload)
        return out

    def overloads(self, params: PredictParams | None = None) -> list[OverloadPrediction]:
        """Every agent whose probability of overload is at least ``min_probability``."""
        return self.scan.everything(params or PredictParams(), self._clock)

    def overloads_page(
        self, params: PredictParams, start_row: int, limit: int, budget_s: float
    ) -> tuple[list[OverloadPrediction], int | None]:
        """Up to ``limit`` overloads from ``start_row`` within ``budget_s`` of work, and the
        row to resume from (None: done)."""
        return self.scan.page(params, start_row, limit, budget_s, self._clock)

    def page_steps(
        self, params: PredictParams, start_row: int, limit: int, budget_s: float
    ) -> Iterator[tuple[list[OverloadPrediction], int | None]]:
        """``overloads_page`` chunk by chunk, for a host that yields in between."""
        return self.scan.steps(params, start_row, limit, budget_s, self._clock)

    # ------------------------------------------------------------------ upkeep
    def sweep(self) -> dict[str, int]:
        """Drop expired signals and assignments, then agents with nothing live, nothing
        in flight and no recent history (with all their state). Linear in the agents."""
        now = self._clock()
        if self.journal is not None:
            self.journal(wal.encode("sweep", now))
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

    def __len__(self) -> int:
        return self.table.n

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self.table.index

    def agent_ids(self) -> list[str]:
        return list(self.table.ids)

    def stats(self) -> dict[str, int]:
        return {
            "agents": self.table.n,
            "live_signals": self.signals.live_count(self._clock()),
            "history_signals": self.hist.total(),
            "in_flight": self.inflight.open_total,
            # Assignments refused by the shard's bound on open records (not in flight).
            "refused_assignments": self.inflight.refused_total,
            "array_bytes": self.table.nbytes(),
        }

    def metrics_snapshot(self) -> MetricsSnapshot:
        s = self.stats()
        self.metrics.agents = s["agents"]
        self.metrics.live_signals = s["live_signals"]
        self.metrics.in_flight = s["in_flight"]
        # Reads expire overdue tasks too, so the part's own counter is the total.
        self.metrics.assignments_expired = self.inflight.expired_total
        return self.metrics

    def array_bytes(self) -> int:
        return self.table.nbytes()

    # ------------------------------------------------------------------ snapshot
    def snapshot_extra(self) -> dict[str, Any]:
        """What a snapshot holds besides the arrays: in-flight records, labels, counters."""
        return {
            "inflight": self.inflight.records(),
            "labels": {a: dict(m) for a, m in self.labels.by_agent.items()},
            "metrics": self.metrics.counters_json(),
        }

    def snapshot(self) -> bytes:
        """Versioned bytes of the whole state (arrays via ``np.savez``; no pickle)."""
        return persistence.dump(
            self.table, self.config.history_size, self.snapshot_extra(), self._clock()
        )

    @classmethod
    def restore(
        cls,
        data: bytes,
        config: ShardConfig | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> ShardState:
        """A state from ``snapshot()`` bytes; corrupt input is an ``InvalidInput``."""
        size = persistence.history_size(data)
        if not isinstance(size, int) or size < 1:
            raise InvalidInput(
                "corrupt or incompatible snapshot",
                [{"field": "history_size", "reason": f"got {size!r}"}],
            )
        config = config or ShardConfig(history_size=size)
        if config.history_size != size:
            raise InvalidInput(
                "snapshot history_size differs from config",
                [{"field": "history_size", "reason": f"snapshot has {size}"}],
            )
        state = cls(config, clock, seed)
        snap = persistence.load(data, state.table)
        try:
            state.table.add(snap.ids)
            for name, arr in snap.arrays.items():
                state.table.arrays[name][..., : state.table.n] = arr
            state.inflight.load_records(snap.inflight)
            for agent_id, labels in snap.labels.items():
                state.labels.replace(agent_id, labels)
            counted = MetricsSnapshot.from_counters_json(snap.metrics)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
            raise InvalidInput(
                "corrupt or incompatible snapshot", [{"field": "snapshot", "reason": str(exc)}]
            ) from exc
        # Merged into the live object (the overload scan holds it), and kept as the base
        # a scrape subtracts, so counters neither restart at zero nor count twice.
        state.metrics.merge(counted)
        state.metrics.restored_base = counted
        return state
