"""ShardState: the coordination core of one shard. Plain Python + numpy; never imports Ray.

Layout: one row per known agent, struct-of-arrays with the row on the last axis, so
scoring every agent is a handful of whole-array passes. For each (dimension, agent) the
live signal is kept as an expiry time ``exp`` and an amplitude per second ``k``:

    effective score = 0.5 + (score - 0.5) * confidence * decay(age)
                    = 0.5 + k * max(exp - now, 0),   k = (score - 0.5) * confidence / ttl

with linear decay (1 at age 0, 0 at the TTL). A missing or expired signal has k = 0 and so
scores the neutral 0.5: stale data means "unknown", never "idle".
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import Any

import numpy as np

from actors.columns import SignalColumns, columns_from_arrays, columns_from_dicts, validate
from actors.config import ShardConfig
from actors.core_metrics import MetricsSnapshot
from actors.errors import InvalidInput, NotFound
from actors.models import (
    DIMENSIONS,
    INVERTED,
    LOAD_CODE,
    NUM_DIMENSIONS,
    SIGNAL_TYPES,
    AgentScore,
    AgentView,
    IngestResult,
    LiveSignal,
    OverloadPrediction,
    PredictParams,
    SelectRequest,
    SelectResult,
    Weights,
)
from actors.prediction import fit_trends
from actors.selection import Partial, merge_partials, shard_fetch_size, top_order

SNAPSHOT_VERSION = 1
_D = NUM_DIMENSIONS
_OVERLOAD_CHUNK_ROWS = 65_536


class ShardState:
    """All live signals, history and reservations of the agents one shard owns."""

    # name -> (leading shape, dtype, fill for a fresh row)
    _ROW_ARRAYS: dict[str, tuple[tuple[str, ...], Any, float]] = {
        "exp": (("D",), np.float64, 0.0),
        "k": (("D",), np.float64, 0.0),
        "ts": (("D",), np.float64, -np.inf),
        "val": (("D",), np.float64, np.nan),
        "conf": (("D",), np.float64, 0.0),
        "hts": (("H",), np.float64, 0.0),
        "hval": (("H",), np.float32, 0.0),
        "htype": (("H",), np.int8, -1),
        "hpos": ((), np.int32, 0),
        "hlen": ((), np.int32, 0),
        "res_amt": ((), np.float64, 0.0),
        "res_exp": ((), np.float64, 0.0),
        "last_seen": ((), np.float64, 0.0),
    }

    _exp: np.ndarray
    _k: np.ndarray
    _ts: np.ndarray
    _val: np.ndarray
    _conf: np.ndarray
    _hts: np.ndarray
    _hval: np.ndarray
    _htype: np.ndarray
    _hpos: np.ndarray
    _hlen: np.ndarray
    _res_amt: np.ndarray
    _res_exp: np.ndarray
    _last_seen: np.ndarray

    def __init__(
        self,
        config: ShardConfig | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.config = config or ShardConfig()
        self._clock = clock
        self._rng = np.random.default_rng(seed)
        self._H = self.config.history_size
        self._default_w = self.config.default_weights.vector()
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._reserved: set[int] = set()
        self._n = 0
        self._cap = 0
        self._arrays: dict[str, np.ndarray] = {}
        self._grow(self.config.initial_capacity)
        self.metrics = MetricsSnapshot()

    # ------------------------------------------------------------------ storage
    def _grow(self, need: int) -> None:
        if need <= self._cap:
            return
        cap = max(need, int(self._cap * 1.5) + 1)
        dims = {"D": _D, "H": self._H}
        for name, (lead, dtype, _) in self._ROW_ARRAYS.items():
            new = np.empty((*(dims[d] for d in lead), cap), dtype=dtype)
            if name in self._arrays:
                new[..., : self._n] = self._arrays[name][..., : self._n]
            self._arrays[name] = new
            setattr(self, "_" + name, new)
        self._cap = cap

    def _add_agents(self, ids: list[str]) -> None:
        start = self._n
        self._grow(start + len(ids))
        for name, (_, _, fill) in self._ROW_ARRAYS.items():
            self._arrays[name][..., start : start + len(ids)] = fill
        for j, a in enumerate(ids):
            self._index[a] = start + j
        self._ids.extend(ids)
        self._n += len(ids)

    def _lookup(self, ids: Sequence[Any]) -> np.ndarray:
        """Row of each id; -1 where unknown (no state is created) or not even hashable
        (rejected later by validation)."""
        get = self._index.get
        try:
            return np.array(list(map(get, ids, repeat(-1, len(ids)))), dtype=np.int64)
        except TypeError:
            return np.array([get(a, -1) if isinstance(a, str) else -1 for a in ids], np.int64)

    def _rows_for(self, ids: list[Any], idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Rows for the valid items ``idx``, creating agents that are new in this batch."""
        new = np.flatnonzero(rows < 0)
        if len(new):
            fresh = list(dict.fromkeys(ids[i] for i in idx[new].tolist()))
            self._add_agents(fresh)
            get = self._index.__getitem__
            rows = rows.copy()
            rows[new] = [get(ids[i]) for i in idx[new].tolist()]
        return rows

    def _remove_rows(self, rows: Iterable[int]) -> None:
        """Swap-remove: move the last rows into the holes so arrays stay dense."""
        drop = np.unique(np.fromiter(rows, np.int64))
        if not len(drop):
            return
        n_after = self._n - len(drop)
        holes = drop[drop < n_after]
        tail = np.setdiff1d(np.arange(n_after, self._n), drop, assume_unique=True)
        for r in drop.tolist():
            del self._index[self._ids[r]]
        for arr in self._arrays.values():
            arr[..., holes] = arr[..., tail]
        for h, t in zip(holes.tolist(), tail.tolist(), strict=True):
            self._ids[h] = self._ids[t]
            self._index[self._ids[h]] = h
        del self._ids[n_after:]
        moved = dict(zip(tail.tolist(), holes.tolist(), strict=True))
        self._reserved = {moved.get(r, r) for r in self._reserved if r not in set(drop.tolist())}
        self._n = n_after

    # ------------------------------------------------------------------ ingest
    def ingest(self, cols: SignalColumns) -> IngestResult:
        t0 = time.perf_counter()
        now = self._clock()
        cfg = self.config
        vb = validate(
            cols,
            now,
            max_ttl_s=cfg.max_ttl_s,
            max_future_skew_s=cfg.max_future_skew_s,
            known_rows=(known := self._lookup(cols.agent_ids)),
        )
        idx = vb.index
        if len(idx):
            rows = self._rows_for(cols.agent_ids, idx, known[idx])
            codes = cols.type_codes[idx]
            vals = cols.values[idx]
            # A timestamp a few seconds ahead is clock skew: age and expiry count from receipt.
            ts = np.minimum(vb.effective_ts_s[idx], now)
            self._write_history(rows, codes, vals, ts)
            self._write_live(rows, codes, vals, cols.confidences[idx], cols.ttls_s[idx], ts, now)
            np.maximum.at(self._last_seen, rows, ts)
        self._count_ingest(cols.type_codes[idx], vb.reasons, time.perf_counter() - t0, len(cols))
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

    def _count_ingest(
        self, codes: np.ndarray, reasons: dict[str, int], took_s: float, total: int
    ) -> None:
        m = self.metrics
        per_signal_s = took_s / max(total, 1)
        for code, count in zip(*np.unique(codes, return_counts=True), strict=True):
            name = SIGNAL_TYPES[int(code)].value
            m.count(m.signals_total, name, int(count))
            m.registration(name).observe(per_signal_s, int(count))
        for reason, count in reasons.items():
            m.count(m.rejected_total, reason, count)

    def _write_history(
        self, rows: np.ndarray, codes: np.ndarray, vals: np.ndarray, ts: np.ndarray
    ) -> None:
        H = self._H
        order = np.argsort(rows, kind="stable")
        sr = rows[order]
        starts = np.flatnonzero(np.r_[True, sr[1:] != sr[:-1]])
        counts = np.diff(np.r_[starts, len(sr)])
        group = np.repeat(np.arange(len(starts)), counts)
        rank = np.arange(len(sr)) - starts[group]
        # More than H signals for one agent in one batch: only the last H survive anyway.
        keep = rank >= counts[group] - H
        slot = ((self._hpos[sr] + rank) % H)[keep]
        src = order[keep]
        dst = sr[keep]
        self._hts[slot, dst] = ts[src]
        self._hval[slot, dst] = vals[src]
        self._htype[slot, dst] = codes[src]
        urows = sr[starts]
        self._hpos[urows] = (self._hpos[urows] + counts) % H
        self._hlen[urows] = np.minimum(self._hlen[urows] + counts, H)

    def _write_live(
        self,
        rows: np.ndarray,
        codes: np.ndarray,
        vals: np.ndarray,
        confs: np.ndarray,
        ttls: np.ndarray,
        ts: np.ndarray,
        now: float,
    ) -> None:
        key = rows * _D + codes
        order = np.lexsort((np.arange(len(key)), ts, key))
        sk = key[order]
        win = order[np.r_[sk[1:] != sk[:-1], True]]  # newest per (agent, type); ties: last sent
        r, c = rows[win], codes[win]
        # An older signal never replaces a newer live one; an expired one is simply gone.
        fresh = (ts[win] >= self._ts[c, r]) | (self._exp[c, r] <= now)
        win, r, c = win[fresh], r[fresh], c[fresh]
        v, cf, tt, t = vals[win], confs[win], ttls[win], ts[win]
        score = np.where(INVERTED[c], 1.0 - v, v)
        self._val[c, r] = v
        self._conf[c, r] = cf
        self._ts[c, r] = t
        self._exp[c, r] = t + tt
        self._k[c, r] = (score - 0.5) * cf / tt
        if self._reserved:
            # A reservation stands in for load until the agent reports load again.
            cleared = set(r[c == LOAD_CODE].tolist()) & self._reserved
            for row in cleared:
                self._res_amt[row] = 0.0
                self._res_exp[row] = 0.0
            self._reserved -= cleared

    # ------------------------------------------------------------------ scoring
    def _weights(self, weights: Weights | None) -> np.ndarray:
        return self._default_w if weights is None else weights.vector()

    def _dims(self, rows: np.ndarray, now: float) -> np.ndarray:
        """(6, len(rows)) effective dimension scores of known rows, reservations applied."""
        t = self._exp[:, rows] - now
        np.maximum(t, 0.0, out=t)
        t *= self._k[:, rows]
        t += 0.5
        if self._reserved:
            res = np.where(self._res_exp[rows] > now, self._res_amt[rows], 0.0)
            t[LOAD_CODE] = np.maximum(t[LOAD_CODE] - res, 0.0)
        return t

    def _known_dims(self, rows: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        known = rows >= 0
        if known.all():
            return known, self._dims(rows, now)
        dims = np.full((_D, len(rows)), 0.5)
        if known.any():
            dims[:, known] = self._dims(rows[known], now)
        return known, dims

    def _all_scores(self, w: np.ndarray, now: float) -> np.ndarray:
        """Routing score of every row: the one O(agents) pass, limited to weighted dims."""
        n = self._n
        nz = np.flatnonzero(w)
        lo, hi = int(nz[0]), int(nz[-1]) + 1
        t = np.subtract(self._exp[lo:hi, :n], now)
        np.maximum(t, 0.0, out=t)
        t *= self._k[lo:hi, :n]
        scores = w[lo:hi] @ t
        scores += 0.5
        live_res = [r for r in self._reserved if self._res_exp[r] > now]
        if live_res:
            rr = np.array(live_res, np.int64)
            scores[rr] = w @ self._dims(rr, now)
        return scores

    def _has_live(self, rows: np.ndarray | slice, now: float) -> np.ndarray:
        live: np.ndarray = np.any(self._exp[:, rows] > now, axis=0)
        return live

    def _oldest_age(self, rows: np.ndarray, now: float) -> np.ndarray:
        ts = self._ts[:, rows]
        ts[self._exp[:, rows] <= now] = np.inf
        return now - ts.min(axis=0)  # -inf where nothing is live; dropped when recorded

    def partial_select(self, req: SelectRequest) -> Partial:
        """This shard's candidates for a selection, enough for an exact global merge."""
        now = self._clock()
        w = self._weights(req.weights)
        if req.candidates is not None:
            cand = list(dict.fromkeys(req.candidates))
            if req.exclude:
                ex = set(req.exclude)
                cand = [c for c in cand if c not in ex]
            rows = self._lookup(cand)
            if req.require_signals:
                keep = rows >= 0
                keep[keep] = self._has_live(rows[keep], now)
                rows = rows[keep]
                cand = [c for c, kp in zip(cand, keep.tolist(), strict=True) if kp]
            known, dims = self._known_dims(rows, now)
            scores = w @ dims
            cand_ids: list[str] | None = cand
        else:
            cand_ids = None
            rows = np.arange(self._n)
            scores = self._all_scores(w, now)
            mask = None
            if req.exclude:
                mask = np.ones(self._n, bool)
                mask[[r for r in map(self._index.get, req.exclude) if r is not None]] = False
            if req.require_signals:
                live = self._has_live(slice(0, self._n), now)
                mask = live if mask is None else mask & live
            if mask is not None:
                rows = np.flatnonzero(mask)
                scores = scores[rows]
            known = np.ones(len(rows), bool)
            dims = None
        considered = len(scores)
        ok = np.flatnonzero(scores >= req.min_score) if req.min_score is not None else None
        elig_scores = scores if ok is None else scores[ok]
        fetch = shard_fetch_size(req)
        if req.strategy == "p2c":
            pos = self._rng.permutation(len(elig_scores))[:fetch]
            keys = self._rng.random(len(pos))
        else:
            pos, keys = top_order(elig_scores, fetch, self._rng)
        if ok is not None:
            pos = ok[pos]
        sel_rows = rows[pos]
        sel_known = known[pos]
        if dims is not None:
            sel_dims = dims[:, pos].T
        else:
            sel_dims = self._dims(sel_rows, now).T if len(sel_rows) else np.empty((0, _D))
        ages = np.full(len(pos), np.nan)
        if sel_known.any():
            ages[sel_known] = self._oldest_age(sel_rows[sel_known], now)
        ids = self._ids
        return Partial(
            [ids[r] for r in sel_rows.tolist()]
            if cand_ids is None
            else [cand_ids[i] for i in pos.tolist()],
            scores[pos],
            keys,
            np.ascontiguousarray(sel_dims),
            sel_known,
            considered,
            len(elig_scores),
            ages,
        )

    def select(self, req: SelectRequest) -> SelectResult:
        """A whole selection on this shard alone (the router merges the same partials)."""
        t0 = time.perf_counter()
        result, chosen = merge_partials([self.partial_select(req)], req, self._rng)
        if req.reserve:
            self._mark_reserved(result, self.reserve([s.agent_id for s in result.selected]))
        self.record_selection(req.strategy, chosen.max_signal_age_s, time.perf_counter() - t0)
        return result

    @staticmethod
    def _mark_reserved(result: SelectResult, reserved: list[bool]) -> None:
        for s, ok in zip(result.selected, reserved, strict=True):
            s.reserved = ok

    def record_selection(self, strategy: str, ages_s: np.ndarray, took_s: float) -> None:
        m = self.metrics
        m.count(m.selections_total, strategy)
        m.selection(strategy).observe(took_s)
        m.signal_age_s.observe_many(ages_s[np.isfinite(ages_s)])

    def reserve(
        self, agent_ids: Sequence[str], amount: float | None = None, ttl_s: float | None = None
    ) -> list[bool]:
        """Hold a short-lived load increment on known agents; unknown ones get no state."""
        now = self._clock()
        amount = self.config.reservation_load if amount is None else amount
        ttl_s = self.config.reservation_ttl_s if ttl_s is None else ttl_s
        out = []
        for a in agent_ids:
            r = self._index.get(a)
            if r is None:
                out.append(False)
                continue
            active = self._res_exp[r] > now
            self._res_amt[r] = (self._res_amt[r] if active else 0.0) + amount
            self._res_exp[r] = now + ttl_s
            self._reserved.add(r)
            out.append(True)
        return out

    def scores(
        self, agent_ids: Sequence[str], weights: Weights | None = None
    ) -> dict[str, AgentScore]:
        now = self._clock()
        w = self._weights(weights)
        ids = list(dict.fromkeys(agent_ids))
        known, dims = self._known_dims(self._lookup(ids), now)
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
        r = self._index.get(agent_id)
        if r is None:
            raise NotFound(
                f"agent {agent_id!r} is not known",
                [{"field": "agent_id", "reason": "unknown agent"}],
            )
        return r

    def agent(self, agent_id: str) -> AgentView:
        now = self._clock()
        r = self._row(agent_id)
        rows = np.array([r])
        dims = self._dims(rows, now)[:, 0]
        signals = {}
        for c, t in enumerate(SIGNAL_TYPES):
            exp = float(self._exp[c, r])
            if exp > now:
                ts = float(self._ts[c, r])
                ttl = exp - ts
                signals[t.value] = LiveSignal(
                    value=float(self._val[c, r]),
                    confidence=float(self._conf[c, r]),
                    timestamp=ts,
                    age_s=now - ts,
                    expires_in_s=exp - now,
                    weight=float(self._conf[c, r]) * (exp - now) / ttl,
                )
        reserved = float(self._res_amt[r]) if self._res_exp[r] > now else 0.0
        return AgentView(
            agent_id=agent_id,
            signals=signals,
            scores=dict(zip(DIMENSIONS, dims.tolist(), strict=True)),
            score=float(self._default_w @ dims),
            history_length=int(self._hlen[r]),
            reserved_load=reserved,
        )

    def delete(self, agent_id: str) -> bool:
        r = self._index.get(agent_id)
        if r is None:
            return False
        self._remove_rows([r])
        return True

    def history(self, agent_id: str) -> list[dict[str, Any]]:
        """The agent's retained history, oldest first (by arrival)."""
        r = self._row(agent_id)
        n, pos = int(self._hlen[r]), int(self._hpos[r])
        slots = np.arange(n) if n < self._H else (np.arange(self._H) + pos) % self._H
        return [
            {
                "signal_type": SIGNAL_TYPES[int(self._htype[s, r])].value,
                "value": float(self._hval[s, r]),
                "timestamp": float(self._hts[s, r]),
            }
            for s in slots.tolist()
        ]

    # ------------------------------------------------------------------ prediction
    def _fit(self, rows: np.ndarray, now: float, params: PredictParams) -> Any:
        cfg = self.config
        hts, htype = self._hts[:, rows], self._htype[:, rows]
        filled = np.arange(self._H)[:, None] < self._hlen[rows][None, :]
        mask = filled & (htype == LOAD_CODE) & (hts >= now - cfg.trend_lookback_s)
        return fit_trends(
            hts,
            self._hval[:, rows].astype(np.float64),
            mask,
            now_s=now,
            horizon_s=params.horizon_s,
            threshold=params.threshold,
            min_samples=cfg.trend_min_samples,
            min_span_s=cfg.trend_min_span_s,
            noise_floor=cfg.trend_noise_floor,
        )

    def _prediction(
        self, agent_id: str, row: int, fit: Any, j: int, now: float, params: PredictParams
    ) -> OverloadPrediction:
        live = self._exp[LOAD_CODE, row] > now
        current = float(self._val[LOAD_CODE, row]) if live else None
        samples, span = int(fit.samples[j]), float(fit.span_s[j])
        common = dict(
            agent_id=agent_id,
            current_load=current,
            samples=samples,
            span_s=span,
            horizon_s=params.horizon_s,
            threshold=params.threshold,
        )
        if not fit.sufficient[j]:
            cfg = self.config
            reason = (
                f"need at least {cfg.trend_min_samples} LOAD samples spanning "
                f"{cfg.trend_min_span_s:g} s in the last {cfg.trend_lookback_s:g} s; "
                f"have {samples} spanning {span:.3g} s"
            )
            return OverloadPrediction(
                status="insufficient_data",
                will_overload=None,
                probability=None,
                predicted_load=None,
                slope_per_s=None,
                reason=reason,
                **common,
            )
        prob = float(fit.probability[j])
        return OverloadPrediction(
            status="ok",
            will_overload=prob >= params.min_probability,
            probability=prob,
            predicted_load=float(min(max(fit.predicted[j], 0.0), 1.0)),
            slope_per_s=float(fit.slope_per_s[j]),
            **common,
        )

    def predict(self, agent_id: str, params: PredictParams | None = None) -> OverloadPrediction:
        params = params or PredictParams()
        now = self._clock()
        r = self._row(agent_id)
        out = self._prediction(agent_id, r, self._fit(np.array([r]), now, params), 0, now, params)
        self._count_prediction(out)
        return out

    def _count_prediction(self, p: OverloadPrediction) -> None:
        key = "insufficient_data" if p.will_overload is None else str(p.will_overload).lower()
        self.metrics.count(self.metrics.predictions_total, key)

    def overloads(self, params: PredictParams | None = None) -> list[OverloadPrediction]:
        """Every agent whose probability of overload is at least ``min_probability``."""
        params = params or PredictParams()
        now = self._clock()
        out: list[OverloadPrediction] = []
        for start in range(0, self._n, _OVERLOAD_CHUNK_ROWS):
            rows = np.arange(start, min(start + _OVERLOAD_CHUNK_ROWS, self._n))
            fit = self._fit(rows, now, params)
            hits = np.flatnonzero(fit.sufficient & (fit.probability >= params.min_probability))
            for j in hits.tolist():
                r = int(rows[j])
                p = self._prediction(self._ids[r], r, fit, j, now, params)
                self._count_prediction(p)
                out.append(p)
        out.sort(key=lambda p: -(p.probability or 0.0))
        return out

    # ------------------------------------------------------------------ upkeep
    def sweep(self) -> dict[str, int]:
        """Drop expired signals, then agents with nothing live and no recent history."""
        now = self._clock()
        n = self._n
        expired = (self._exp[:, :n] <= now) & (self._exp[:, :n] > 0.0)
        expired_count = int(expired.sum())
        self._exp[:, :n][expired] = 0.0
        self._k[:, :n][expired] = 0.0
        for r in [r for r in self._reserved if self._res_exp[r] <= now]:
            self._res_amt[r] = 0.0
            self._reserved.discard(r)
        idle = ~self._has_live(slice(0, n), now)
        stale = self._last_seen[:n] < now - self.config.history_retention_s
        drop = np.flatnonzero(idle & stale)
        drop = drop[~np.isin(drop, list(self._reserved))] if self._reserved else drop
        self._remove_rows(drop.tolist())
        return {"expired_signals": expired_count, "dropped_agents": len(drop)}

    def __len__(self) -> int:
        return self._n

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._index

    def agent_ids(self) -> list[str]:
        return list(self._ids)

    def stats(self) -> dict[str, int]:
        now = self._clock()
        n = self._n
        return {
            "agents": n,
            "live_signals": int((self._exp[:, :n] > now).sum()),
            "history_signals": int(self._hlen[:n].sum()),
            "reservations": len(self._reserved),
            "array_bytes": self.array_bytes(),
        }

    def metrics_snapshot(self) -> MetricsSnapshot:
        s = self.stats()
        self.metrics.agents = s["agents"]
        self.metrics.live_signals = s["live_signals"]
        return self.metrics

    def array_bytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())

    # ------------------------------------------------------------------ snapshot
    def snapshot(self) -> bytes:
        """Versioned bytes of the whole state (arrays via ``np.savez``; no pickle)."""
        n = self._n
        buf = io.BytesIO()
        meta = {
            "version": SNAPSHOT_VERSION,
            "history_size": self._H,
            "dimensions": list(DIMENSIONS),
            "ids": self._ids,
            "taken_at": self._clock(),
        }
        arrays = {name: a[..., :n] for name, a in self._arrays.items()}
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def restore(
        cls,
        data: bytes,
        config: ShardConfig | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> ShardState:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(z["__meta__"].tobytes())
            if meta.get("version") != SNAPSHOT_VERSION:
                raise InvalidInput(
                    "unsupported snapshot version",
                    [{"field": "version", "reason": f"got {meta.get('version')}"}],
                )
            if list(meta["dimensions"]) != list(DIMENSIONS):
                raise InvalidInput("snapshot has a different dimension layout")
            config = config or ShardConfig(history_size=meta["history_size"])
            if config.history_size != meta["history_size"]:
                raise InvalidInput(
                    "snapshot history_size differs from config",
                    [{"field": "history_size", "reason": f"snapshot has {meta['history_size']}"}],
                )
            state = cls(
                config.model_copy(update={"initial_capacity": max(len(meta["ids"]), 1)}),
                clock,
                seed,
            )
            state._add_agents(list(meta["ids"]))
            for name in cls._ROW_ARRAYS:
                state._arrays[name][..., : state._n] = z[name]
        state._reserved = set(np.flatnonzero(state._res_amt[: state._n] > 0).tolist())
        return state
