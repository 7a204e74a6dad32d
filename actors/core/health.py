"""What completions teach about an agent's health (DESIGN §4, "measured beats reported").

An agent that fails fast looks idle to every router that routes on load: it finishes (by
failing) sooner than anyone, so it reports LOAD 0 and attracts the traffic (a "black
hole"). Each shard sees every completion of the agents it owns, from every router, so it
keeps per agent:

- a recency-weighted success rate (the last ``outcome_memory`` outcomes weigh; the first
  ones average plainly, so a new agent's rate is not anchored on its first task) and the
  run of consecutive failures;
- a state: ``healthy`` → ``ejected`` (after ``eject_after_failures`` failures in a row,
  or, with ``eject_min_outcomes`` outcomes, a success rate ``eject_success_gap`` below the
  shard's) for ``ejection_base_s`` doubling on each repeat up to ``ejection_max_s`` →
  ``probing`` (at most ``probe_tasks`` tasks at a time: a success makes it healthy, a
  failure ejects it again) → ``healthy``. An agent
  healthy for a whole ``ejection_max_s`` after an ejection starts its back-off afresh.

No more than ``max_ejected_fraction`` of a shard's agents (at least one) is ejected at once (Envoy's
max ejection percent); a selection whose every candidate is unhealthy routes to them all
(a panic, rather than no answer). The states move lazily: an ejection that has run out is
``probing`` from the next read on, so nothing runs on a timer.

Every figure is a per-row array on the agent table: it moves with swap-removes, travels
with snapshots, and a WAL replay rebuilds it (each completion replays at its own time).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from actors.core.config import ShardConfig
from actors.core.table import AgentTable

HEALTHY, EJECTED, PROBING = 0, 1, 2
_MAX_COUNT = 30_000  # int16 counters stop here
_MAX_EJECTIONS = 100  # int8; the back-off is long capped by then
HEALTH_STATES: tuple[Literal["healthy", "ejected", "probing"], ...] = (
    "healthy",
    "ejected",
    "probing",
)


class Health:
    def __init__(self, table: AgentTable, cfg: ShardConfig) -> None:
        self.table = table
        self.cfg = cfg
        # Recency-weighted success rate (meaningless while ``outcomes`` is 0).
        table.register("ok_rate", (), np.float32, 0.0)
        table.register("outcomes", (), np.int16, 0)  # outcomes weighed, <= outcome_memory
        table.register("fail_run", (), np.int16, 0)
        table.register("health", (), np.int8, HEALTHY)
        table.register("ejected_until", (), np.float64, -np.inf)
        table.register("ejections", (), np.int8, 0)  # in the current back-off
        self._any_unhealthy: bool | None = None  # None: to be looked at
        # Sums over the agents of (outcomes, outcomes x rate), for the shard's rate.
        self._sums = (0.0, 0.0)
        self._recorded = 0
        # Removed rows may take an unhealthy agent and outcomes with them; a restore
        # writes the arrays and then calls ``forget_cache`` too.
        table.on_remove(lambda _removed, _moved: self.forget_cache())

    # ------------------------------------------------------------------ writes
    def record(self, row: int, ok: bool, now: float) -> bool:
        """One outcome; True when it ejected the agent."""
        t = self.table.arrays
        old_n, rate = float(t["outcomes"][row]), float(t["ok_rate"][row])
        n = min(old_n + 1.0, float(self.cfg.outcome_memory))
        t["ok_rate"][row] = float(ok) if old_n == 0 else rate + (float(ok) - rate) / n
        t["outcomes"][row] = n
        self._count(old_n, rate, n, float(t["ok_rate"][row]))
        # Compact counters: a run this long ejects whatever the settings (they stop there).
        t["fail_run"][row] = 0 if ok else min(int(t["fail_run"][row]) + 1, _MAX_COUNT)
        state = self.state(row, now)
        if state == PROBING:
            if ok:
                # Back in rotation. Its rate keeps its failures, fading with time
                # (``evidence``), so it regains traffic as they age; one that fails again
                # is ejected again on its next failure (``_far_below``, watched closer).
                t["health"][row] = HEALTHY
                self._any_unhealthy = None
                return False
            return self._eject(row, now)
        if state != HEALTHY or ok:
            return False
        if t["fail_run"][row] >= self.cfg.eject_after_failures or self._far_below(row):
            return self._eject(row, now)
        return False

    def _far_below(self, row: int) -> bool:
        """With enough outcomes, a success rate far below the rest of the shard's. An
        agent back from an ejection is watched closer: a quarter of the outcomes (at
        least 5) are enough."""
        t, cfg = self.table.arrays, self.cfg
        needed = min(cfg.eject_min_outcomes, cfg.outcome_memory)
        if t["ejections"][row] > 0:
            needed = min(needed, max(5, needed // 4))
        mine, rate = float(t["outcomes"][row]), float(t["ok_rate"][row])
        if mine < needed:
            return False
        # The others' rate: the shard's running sums without this agent's share.
        weight, weighted = self._sums
        if weight - mine <= 1e-9:
            return False  # nobody to compare with
        others = (weighted - mine * rate) / (weight - mine)
        # Far below even allowing for its sampling noise (one standard error): an agent
        # that is merely worse than the rest (a 0.75 among 0.87s) is for the success
        # term of the ranking to send less work, not for ejection (which takes capacity).
        noise = math.sqrt(max(rate * (1.0 - rate), 0.0) / mine)
        return rate + noise < others - cfg.eject_success_gap

    def _eject(self, row: int, now: float) -> bool:
        t, n, cfg = self.table.arrays, self.table.n, self.cfg
        self.refresh(np.arange(n), now)
        # The cap (Envoy's max ejection percent), which always lets one agent go.
        cap = max(1, int(cfg.max_ejected_fraction * n))
        if np.count_nonzero(t["health"][:n] == EJECTED) + 1 > cap:
            return False  # this one stays in rotation
        if now - t["ejected_until"][row] > cfg.ejection_max_s:
            t["ejections"][row] = 0  # healthy long enough: the back-off starts afresh
        t["ejections"][row] = min(int(t["ejections"][row]) + 1, _MAX_EJECTIONS)
        span = min(cfg.ejection_base_s * 2.0 ** (int(t["ejections"][row]) - 1), cfg.ejection_max_s)
        t["ejected_until"][row] = now + span
        t["health"][row] = EJECTED
        self._any_unhealthy = True
        return True

    def forget_cache(self) -> None:
        self._any_unhealthy = None
        self.resum()

    # ------------------------------------------------------------------ reads
    def refresh(self, rows: np.ndarray, now: float) -> None:
        """Ejections that have run out become probing."""
        t = self.table.arrays
        h = t["health"][rows]
        over = rows[(h == EJECTED) & (t["ejected_until"][rows] <= now)]
        t["health"][over] = PROBING

    def state(self, row: int, now: float) -> int:
        self.refresh(np.array([row]), now)
        return int(self.table["health"][row])

    def any_unhealthy(self) -> bool:
        """Whether any agent of the shard is ejected or probing (cached: asked several
        times per selection, changed only by an ejection, a healing or a removal)."""
        if self._any_unhealthy is None:
            self._any_unhealthy = bool(self.table["health"][: self.table.n].any())
        return self._any_unhealthy

    def states(self, rows: np.ndarray, now: float) -> np.ndarray:
        """Health code of each row (int8)."""
        if not self.any_unhealthy():
            return np.zeros(len(rows), np.int8)
        self.refresh(rows, now)
        states: np.ndarray = self.table["health"][rows]
        return states

    def blocked(self, rows: np.ndarray, open_tasks: np.ndarray, now: float) -> np.ndarray | None:
        """Rows a selection must pass over: ejected, or probing with its probes running.
        None when every agent of the shard is healthy (the usual case, no mask)."""
        if not self.any_unhealthy():
            return None
        h = self.states(rows, now)
        out: np.ndarray = (h == EJECTED) | self._probes_running(h, open_tasks)
        return out

    def probes_out(self, rows: np.ndarray, open_tasks: np.ndarray, now: float) -> np.ndarray | None:
        """Rows probing with all their probes running: at assignment they count as full
        (two routers that chose one at the same moment must not both send it a probe).
        None when every agent of the shard is healthy."""
        if not self.any_unhealthy():
            return None
        return self._probes_running(self.states(rows, now), open_tasks)

    def _probes_running(self, states: np.ndarray, open_tasks: np.ndarray) -> np.ndarray:
        out: np.ndarray = (states == PROBING) & (open_tasks >= self.cfg.probe_tasks)
        return out

    def evidence(self, rows: np.ndarray, now: float) -> np.ndarray:
        """Outcomes each row's rate weighs, fading with the time since the agent was last
        given a task (``outcome_half_life_s``; the time ``learning`` keeps for its
        arrival rate, which is also about when its last outcome came): an agent avoided
        for its failures is tried again once they are old, instead of never again."""
        t = self.table.arrays
        rows = self.table.span(rows)  # type: ignore[assignment]
        age = t["arrive_at"][rows] - now
        age /= self.cfg.outcome_half_life_s
        np.exp2(age, out=age)
        age *= t["outcomes"][rows]
        return age

    def quality(self, rows: np.ndarray, reported: np.ndarray, now: float) -> np.ndarray:
        """The quality score an agent is scored on: the reported QUALITY score, moved by
        how far its measured success rate is from the shard's, in proportion to the
        evidence (``n / (n + quality_prior_outcomes)`` of ``n`` outcomes). Relative to the
        shard, so agents that succeed alike stay alike however many tasks each has run
        (an absolute rate against a neutral prior would favour the busiest, which would
        get busier), and an agent with no outcomes keeps what it reports."""
        t = self.table.arrays
        if not t["outcomes"][self.table.span(rows)].any():
            return reported
        n = self.evidence(rows, now)
        # (rate - fleet) x n / (n + m): 0 where n is 0, so no mask is needed.
        shift = t["ok_rate"][self.table.span(rows)] - self.fleet_rate()
        shift *= n
        m = self.cfg.quality_prior_outcomes
        shift /= n + m if m > 0 else np.maximum(n, 1e-12)
        shift += reported
        np.minimum(shift, 1.0, out=shift)
        np.maximum(shift, 0.0, out=shift)
        return shift

    def fleet_rate(self) -> float:
        """The shard's success rate: its agents' rates weighed by their outcomes (1 with
        none), from running sums (a selection reads it; an O(agents) pass each time would
        cost a large shard milliseconds), made exact again every 1,024 outcomes and on
        every removal, at points a WAL replay meets too."""
        weight, weighted = self._sums
        return weighted / weight if weight > 0 else 1.0

    def _count(self, old_n: float, old_rate: float, n: float, rate: float) -> None:
        self._recorded += 1
        if self._recorded % 1024 == 0:
            self.resum()
            return
        weight, weighted = self._sums
        self._sums = (weight + n - old_n, weighted + n * rate - old_n * old_rate)

    def resum(self) -> None:
        """The running sums afresh from the arrays (after a removal or a restore)."""
        t, n = self.table.arrays, self.table.n
        w = t["outcomes"][:n].astype(np.float64)
        self._sums = (float(w.sum()), float(w @ t["ok_rate"][:n]))

    def success(self, rows: np.ndarray, now: float) -> np.ndarray:
        """Estimated chance that a task succeeds: the measured rate against a prior of 1
        worth ``quality_prior_outcomes`` outcomes (optimism where little is known, the
        way a UCB bandit explores: an agent with no outcomes yet, or whose failures have
        faded, is tried rather than shunned, and measured again)."""
        t = self.table.arrays
        n = self.evidence(rows, now)
        m = self.cfg.quality_prior_outcomes
        prior = 1.0
        if m <= 0:
            return np.where(n > 0, t["ok_rate"][rows], prior)
        out: np.ndarray = t["ok_rate"][rows] * n
        out += m * prior
        out /= n + m  # n = 0: the prior
        return out

    def counts(self, now: float) -> dict[str, int]:
        n = self.table.n
        h = self.states(np.arange(n), now)
        return {name: int(np.count_nonzero(h == code)) for code, name in enumerate(HEALTH_STATES)}

    def view(self, row: int, now: float) -> dict[str, object]:
        t = self.table.arrays
        state = self.state(row, now)
        rate = t["ok_rate"][row]
        return {
            "health": HEALTH_STATES[state],
            "success_rate": float(rate) if t["outcomes"][row] > 0 else None,
            "outcomes": round(float(t["outcomes"][row])),
            "ejected_for_s": (float(t["ejected_until"][row] - now) if state == EJECTED else None),
            "ejections": int(t["ejections"][row]),
        }
