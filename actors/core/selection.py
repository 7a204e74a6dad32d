"""How a shard scores and ranks agents (``Scorer``); what it filters and sends for a
selection is ``shard_select``.

The load dimension here is the *estimated* current load (``estimate``: the last report
plus the tasks assigned since, minus those completed since; never below the tasks open on
an agent whose callers report completions), and the quality dimension is the measured
success rate weighed against the reported QUALITY (``health``), so every path that scores
an agent (selection, ``scores``, the agent view) sees the same numbers.

Ranking (DESIGN §4, "Decisions in time units"): ``best``, ``p2c`` and ``weighted`` rank by
the weighted score. ``balanced`` ranks by a cost in seconds,

    cost = predicted_s / success x (1 + preference_price x (1 - preference))

that is, seconds per *successful* task (``success``: the measured success rate against an
optimistic prior, its evidence fading with time, ``health``), priced by ``preference``,
the weighted mean of every dimension but load (load is what ``predicted_s`` measures, in
seconds): the most preferred agent (1) wins over the least (0) only while its predicted
time is within ``1 + preference_price`` times the other's, so a preference never becomes
an unbounded queue. The rank is ``-log(cost)``, so the balanced tolerance is a fraction
of the cost. With ``deadline_s`` (any strategy), agents predicted within it rank first,
by preference, the rest after, soonest first: ``weighted`` then draws its pool from
them. A probing agent with no probe running ranks first: it is owed the probe that
decides whether it is back.

Health: ejected agents, and probing agents whose probes are running, are passed over,
unless that leaves none of this shard's candidates (a panic: all are considered).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from actors.core.admission import Admission
from actors.core.affinity import Affinity
from actors.core.config import ShardConfig
from actors.core.estimate import LoadEstimate
from actors.core.fluid import MIN_COMPLETIONS, Measured
from actors.core.health import PROBING, Health
from actors.core.inflight import InFlight
from actors.core.metadata import Labels
from actors.core.models import (
    CAPACITY_CODE,
    LATENCY_CODE,
    LOAD_CODE,
    NUM_DIMENSIONS,
    QUALITY_CODE,
    SelectRequest,
)
from actors.core.signals import LiveSignals
from actors.core.speed import Speed
from actors.core.table import AgentTable

# Above any rank in time (-log of a cost in seconds): a probe goes first.
PROBE_RANK = 1e9


class Scorer:
    """Effective dimension scores, routing scores and predicted times."""

    def __init__(
        self,
        table: AgentTable,
        signals: LiveSignals,
        inflight: InFlight,
        estimate: LoadEstimate,
        labels: Labels,
        health: Health,
        speed: Speed,
        admission: Admission,
        cfg: ShardConfig,
    ) -> None:
        self.admission = admission
        self.cfg = cfg
        # Rendezvous hashing and the sticky map (``affinity``), set by the shard's state.
        self.affinity: Affinity | None = None
        self.table = table
        self.signals = signals
        self.inflight = inflight
        self.estimate = estimate
        self.labels = labels
        self.health = health
        self.speed = speed
        self.price = cfg.preference_price

    def dims(self, rows: np.ndarray, now: float) -> np.ndarray:
        return self.dims_and_tasks(rows, now, tasks=False)[0]

    def dims_and_tasks(
        self, rows: np.ndarray, now: float, tasks: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Dimension scores of known rows and, with ``tasks``, the tasks each holds (the
        ``LoadEstimate.tasks``), sharing one pass over the in-flight estimate."""
        t = self.signals.dims(rows, now)
        delta = self.estimate.deltas(rows, now)
        if delta is not None:
            # Tasks since the report are known for sure: they shift the (decayed) load
            # score undecayed; the tasks measured open bound it (a stuck report). Kept a
            # score in [0, 1].
            a, idx = self.table.arrays, self.table.span(rows)
            held = a["open_n"][idx] * a["completes"][idx] * a["unit_eff"][idx]
            load = t[LOAD_CODE]
            load -= delta
            np.minimum(load, 1.0 - held, out=load)
            # Kept in [0, 1] (min and max in place: np.clip's wrapper costs more than both).
            np.minimum(load, 1.0, out=load)
            np.maximum(load, 0.0, out=load)
        t[QUALITY_CODE] = self.health.quality(rows, t[QUALITY_CODE], now)
        return t, self.estimate.tasks_after(rows, now, delta) if tasks else None

    def known_dims(
        self, rows: np.ndarray, now: float, tasks: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Dimension scores of rows from ``lookup`` (unknown (-1) rows score 0.5) and,
        with ``tasks``, the tasks each holds (0 for unknown rows)."""
        known = rows >= 0
        if known.all():
            return known, *self.dims_and_tasks(rows, now, tasks)
        dims = np.full((NUM_DIMENSIONS, len(rows)), 0.5)
        held = np.zeros(len(rows)) if tasks else None
        if known.any():
            d, h = self.dims_and_tasks(rows[known], now, tasks)
            dims[:, known] = d
            if held is not None and h is not None:
                held[known] = h
        return known, dims, held

    def all_scores(self, w: np.ndarray, now: float) -> np.ndarray:
        """Routing score of every row: one pass over the weighted live signals, then the
        rows whose estimate or measured quality differs from their reports, rescored."""
        scores = self.signals.all_scores(w, now)
        rows, _ = self.estimate.with_deltas(now)
        extra = []
        if w[LOAD_CODE] > 0:
            extra.append(self.estimate.measured_rows())
        if w[QUALITY_CODE] > 0:
            extra.append(np.flatnonzero(self.table["outcomes"][: self.table.n] > 0))
        if extra:
            rows = np.union1d(rows, np.concatenate(extra)).astype(np.int64)
        if len(rows):
            scores[rows] = w @ self.dims(rows, now)
        return scores

    def predicted(
        self, rows: np.ndarray, dims: np.ndarray, now: float, tasks: np.ndarray | None = None
    ) -> np.ndarray:
        """``predicted_s`` of rows from ``lookup`` (unknown ones: the shard's prior);
        ``tasks``: what ``dims_and_tasks`` gave for them, if at hand."""
        known = rows >= 0
        speed = self.speed.speed_scores(dims)
        if known.all():
            held = self.estimate.tasks(rows, now) if tasks is None else tasks
            return self.speed.predicted_s(rows, held, speed)
        out = self.speed.median_work_s() * 0.5 / np.maximum(speed, 0.05)
        k = rows[known]
        if len(k):
            held = self.estimate.tasks(k, now) if tasks is None else tasks[known]
            out[known] = self.speed.predicted_s(k, held, speed[known])
        return out

    def measured(self, rows: np.ndarray, now: float) -> Measured:
        """The measured state of known rows, for the overload forecast (``fluid``)."""
        a = self.table.arrays
        dims, tasks = self.dims_and_tasks(rows, now)
        assert tasks is not None
        work = self.speed.work(rows, self.speed.speed_scores(dims))
        fast, slow = self.inflight.rates.arrival_rates(rows, now)
        unit = a["unit_eff"][rows]
        live = a["exp"][LOAD_CODE][rows] > now
        reported = np.where(live, a["val"][LOAD_CODE][rows], 0.0)
        return Measured(
            use=a["completes"][rows] & (a["work_n"][rows] >= MIN_COMPLETIONS),
            tasks=tasks,
            fast=fast,
            slow=slow,
            mu=self.speed.capacity(rows) / work,
            work_s=work,
            unit=unit,
            outside=np.maximum(reported - a["open_n"][rows] * unit, 0.0),
        )

    def blocked(self, rows: np.ndarray, now: float) -> np.ndarray | None:
        """Rows (from ``lookup``) the health states pass over; None: none."""
        return self._health_mask(self.health.blocked, rows, now)

    def probes_out(self, rows: np.ndarray, now: float) -> np.ndarray | None:
        """Rows (from ``lookup``) probing with all their probes running; None: none."""
        return self._health_mask(self.health.probes_out, rows, now)

    def _health_mask(
        self,
        mask: Callable[[np.ndarray, np.ndarray, float], np.ndarray | None],
        rows: np.ndarray,
        now: float,
    ) -> np.ndarray | None:
        """``mask`` (a ``Health`` read of rows and their open tasks) over rows from
        ``lookup``, unknown ones False; None when it marks none."""
        if not self.health.any_unhealthy():
            return None
        known = rows >= 0
        k = rows[known]
        if not len(k):
            return None
        m = mask(k, self.table["open_n"][k], now)
        if m is None or not m.any():
            return None
        out = np.zeros(len(rows), bool)
        out[known] = m
        return out

    def full(
        self, rows: np.ndarray, now: float, tasks: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Which rows (from ``lookup``) have no headroom (None: none); ``tasks``: the
        tasks each holds, if at hand."""
        known = rows >= 0
        lim = self.admission.limited(rows[known] if not known.all() else rows)
        if lim is None:
            return None
        if not known.all():
            whole = np.zeros(len(rows), bool)
            whole[known] = lim
            lim = whole
        if lim.all():  # the usual case where concurrency is declared: no copies
            held = self.estimate.tasks(rows, now) if tasks is None else tasks
            f = self.admission.full(rows, held)
            return f if f.any() else None
        r = rows[lim]
        held = self.estimate.tasks(r, now) if tasks is None else tasks[lim]
        f = self.admission.full(r, held)
        if not f.any():
            return None
        out = np.zeros(len(rows), bool)
        out[np.flatnonzero(lim)[f]] = True
        return out

    def free_in_s(self, rows: np.ndarray, now: float) -> float:
        """When the soonest of these full rows is predicted to free a slot (the
        Retry-After of a refusal; ``admission``)."""
        held = self.estimate.tasks(rows, now)
        work = self.speed.work(rows, self.speed.speed_scores(self.dims(rows, now)))
        return self.admission.free_in_s(self.admission.slots(rows), held, work)

    def health_of(self, rows: np.ndarray, now: float) -> np.ndarray:
        out = np.zeros(len(rows), np.int8)
        if not self.health.any_unhealthy():
            return out
        known = rows >= 0
        if known.any():
            out[known] = self.health.states(rows[known], now)
        return out

    def preference(self, rows: np.ndarray, dims: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Weighted mean of every dimension but load (0.5 when only load is weighted).
        CAPACITY and LATENCY are what an agent says of its speed: as completions measure
        the speed (in ``predicted_s``), their weight here fades, so a speed is not
        counted twice and a claim does not outweigh the measurement."""
        wp = w.copy()
        wp[LOAD_CODE] = 0.0
        total = wp.sum()
        if total <= 0:
            return np.full(dims.shape[1], 0.5)
        num: np.ndarray = wp @ dims
        speed_w = wp[CAPACITY_CODE] + wp[LATENCY_CODE]
        if speed_w <= 0 or not self.speed.learned_any():
            out: np.ndarray = num / total
            return out
        known = rows >= 0
        if known.all():
            fade = self.speed.measured_share(rows)  # the share measured ...
        else:
            fade = np.zeros(len(rows))
            fade[known] = self.speed.measured_share(rows[known])
        said = wp[CAPACITY_CODE] * dims[CAPACITY_CODE] + wp[LATENCY_CODE] * dims[LATENCY_CODE]
        said *= fade
        num -= said
        # ... leaves the claim that much less weight (never all of it: fade < 1).
        fade *= -speed_w
        fade += total
        num /= fade
        return num

    def success(self, rows: np.ndarray, now: float) -> np.ndarray | None:
        """Chance of success of each row; None when every outcome so far succeeded."""
        if self.health.fleet_rate() >= 1.0:
            return None
        known = rows >= 0
        if known.all():
            return self.health.success(rows, now)
        out = np.ones(len(rows))
        out[known] = self.health.success(rows[known], now)
        return out

    def ranks(
        self,
        req: SelectRequest,
        rows: np.ndarray,
        dims: np.ndarray,
        w: np.ndarray,
        predicted: np.ndarray,
        now: float,
    ) -> np.ndarray:
        pref = self.preference(rows, dims, w)
        success = self.success(rows, now)
        if req.deadline_s is not None:
            within = predicted <= req.deadline_s
            # Within the deadline: by preference (sooner breaks near-ties); beyond it:
            # after every agent within, soonest first.
            inside = 1.0 + pref - 1e-3 * np.minimum(predicted / req.deadline_s, 1.0)
            out: np.ndarray = np.where(within, inside, -predicted)
            return out
        # Seconds per *successful* task (a task that fails is done again elsewhere),
        # priced by preference: predicted x (1 + price x (1 - pref)) / success.
        pref -= 1.0
        pref *= -self.price
        pref += 1.0
        pref *= predicted
        if success is not None:
            pref /= np.maximum(success, 1e-3)
        np.maximum(pref, 1e-12, out=pref)
        ranks: np.ndarray = np.log(pref)
        ranks *= -1.0
        # A probing agent (its ejection over, no probe running) is owed its probe: the
        # one task that decides whether it is back, whatever its past says of it.
        if self.health.any_unhealthy():
            probing = self.health_of(rows, now) == PROBING
            if probing.any():
                ranks[probing] = PROBE_RANK
        return ranks
