"""What a shard learns about each agent's tasks (DESIGN §4): the load one task adds, how
long a task takes, how fast an agent drains its queue, how often it reports.

- The unit (load per task) is ``1 / max_concurrency`` when the agent declares it, else
  learned from how its LOAD moved with the net tasks between two reports, else a default.
- The service time comes from completions (assignment to completion), or, for agents whose
  callers report none, by Little's law from LOAD and the assignment rate. It bounds how
  long an uncompleted task counts (``task_ttl_s``).
- The drain rate (tasks/s while busy) is learned from consecutive reports of agents whose
  callers never report completions, so their estimate falls between reports too.

Every figure is a per-row array on the agent table, so it moves with swap-removes and
travels with snapshots. ``actors.core.inflight`` records the tasks and asks this part.
"""

from __future__ import annotations

import math

import numpy as np

from actors.core.flights import Flight
from actors.core.table import AgentTable

# Learning rates of the per-agent estimators (exponentially weighted means).
_UNIT_EWMA = 0.2
_SERVICE_EWMA = 0.05
_DRAIN_EWMA = 0.2
_MIN_DRAIN_SPAN_S = 0.2
# A task lives at least this long, and a learned service time is stretched by this factor
# before it bounds a task: a slow task is far more likely than a lost one.
_MIN_TASK_S = 0.05
_SERVICE_STRETCH = 3.0
# When callers report completions, a task is looked at only this many times its mean time
# in the system (exponential service: e^-8, 0.03% of tasks still run then), and even then
# expires only if a task assigned after it has completed (``InFlight._lost``).
_REPORTED_STRETCH = 8.0
UNIT_BOUNDS = (1e-4, 1.0)
# Time constants of the two assignment-rate averages (fast, slow): their gap is the trend
# of the arrival rate, for the overload forecast from measured state (``fluid``).
ARRIVAL_TAUS_S = (15.0, 60.0)


class Rates:
    """The learned per-agent figures, on the shared agent table."""

    def __init__(self, table: AgentTable, *, default_unit: float, assignment_ttl_s: float):
        self.table = table
        self.default_unit = default_unit
        self.assignment_ttl_s = assignment_ttl_s
        self.drain_learned = False  # no drain rate anywhere: estimates skip that part
        self.limits_version = 0  # advances when an agent's concurrency becomes known
        table.register("max_concurrency", (), np.float64, np.nan)  # declared
        table.register("unit", (), np.float64, np.nan)  # learned load per task
        # The load per task in force (declared, else learned, else the default), kept up
        # to date on every change so the hot path reads one array.
        table.register("unit_eff", (), np.float64, default_unit)
        table.register("service_s", (), np.float64, np.nan)  # learned service time
        table.register("service_from_durations", (), np.bool_, 0)
        # For agents whose callers never report completions: tasks/s the agent drains
        # while busy (learned from consecutive reports).
        table.register("drain_per_s", (), np.float64, np.nan)
        table.register("report_every_s", (), np.float64, np.nan)
        # Assignments per second, exponentially averaged over ARRIVAL_TAUS_S, as of
        # ``arrive_at``.
        table.register("arrive_fast", (), np.float32, 0.0)
        table.register("arrive_slow", (), np.float32, 0.0)
        table.register("arrive_at", (), np.float64, -np.inf)

    # ------------------------------------------------------------------ the unit
    def unit_of(self, row: int) -> float:
        """Load one task adds: 1/max_concurrency if declared, else learned, else default."""
        return float(self.table["unit_eff"][row])

    def declare(self, row: int, max_concurrency: int) -> None:
        self.table["max_concurrency"][row] = max_concurrency
        self.limits_version += 1
        self._set_unit(row)

    def _set_unit(self, row: int) -> None:
        declared, learned = self.table["max_concurrency"][row], self.table["unit"][row]
        self.table["unit_eff"][row] = (
            1.0 / declared if declared > 0 else learned if learned > 0 else self.default_unit
        )

    def learn_unit(self, row: int, load_moved: float, net_tasks: int) -> None:
        """LOAD moved by ``load_moved`` while ``net_tasks`` more tasks were open."""
        sample = load_moved / net_tasks
        if UNIT_BOUNDS[0] <= sample <= UNIT_BOUNDS[1]:
            old = self.table["unit"][row]
            if not old > 0:
                self.limits_version += 1
            self.table["unit"][row] = sample if not old > 0 else old + _UNIT_EWMA * (sample - old)
            self._set_unit(row)

    # ------------------------------------------------------------------ time
    def task_ttl_s(self, row: int, completions_reported: bool = False) -> float:
        """How long an uncompleted task counts: a few learned service times, but never
        less than two report intervals (a report, not a guess, should retire it), and
        never more than ``assignment_ttl_s``."""
        svc = self.table["service_s"][row]
        if not svc > 0:
            return self.assignment_ttl_s
        every = self.table["report_every_s"][row]
        floor = max(_MIN_TASK_S, 2.0 * every) if every > 0 else _MIN_TASK_S
        stretch = _REPORTED_STRETCH if completions_reported else _SERVICE_STRETCH
        return float(min(self.assignment_ttl_s, max(floor, stretch * svc)))

    def time_in_system_s(self, row: int) -> float:
        """The learned mean time from assignment to completion (a floor when unknown)."""
        svc = self.table["service_s"][row]
        return float(svc) if svc > _MIN_TASK_S else _MIN_TASK_S

    def learn_service(self, row: int, seconds: float, *, from_durations: bool) -> None:
        svc = self.table["service_s"]
        old = svc[row]
        svc[row] = seconds if not old > 0 else old + _SERVICE_EWMA * (seconds - old)
        if from_durations:
            self.table["service_from_durations"][row] = True

    def learn_service_from_load(self, row: int, tasks_per_s: float, load: float) -> None:
        """Little's law (time in system = tasks in system / arrival rate), for agents whose
        callers report no durations."""
        tasks = load / self.unit_of(row)
        if not self.table["service_from_durations"][row] and tasks_per_s > 0 and tasks > 0:
            self.learn_service(row, tasks / tasks_per_s, from_durations=False)

    def learn_report_interval(self, row: int, gap_s: float) -> None:
        every = self.table["report_every_s"]
        old = every[row]
        every[row] = gap_s if not old > 0 else old + _DRAIN_EWMA * (gap_s - old)

    def learn_drain(self, row: int, fl: Flight, v: float, t: float, between: int) -> None:
        """Tasks finished between two reports = assigned - (rise in LOAD / unit). When the
        agent was loaded at both ends it was busy throughout, and that is its drain rate;
        when it was idle at an end it may have idled meanwhile, so the figure is only a
        lower bound: it can raise the learned rate, never lower it (a fast agent that is
        always idle when it reports must not look slow)."""
        span = t - fl.report_ts
        low, high = min(v, fl.report_value), max(v, fl.report_value)
        # Reports a moment apart would turn a rounding step into an absurd rate.
        if span < _MIN_DRAIN_SPAN_S or high >= 1.0:
            return
        drained = between - (v - fl.report_value) / self.unit_of(row)
        if drained <= 0:
            return
        rate = drained / span
        arr = self.table["drain_per_s"]
        old = arr[row]
        self.drain_learned = True
        if not old > 0:
            arr[row] = rate
        elif low > 0 or rate > old:
            arr[row] = old + _DRAIN_EWMA * (rate - old)

    # ------------------------------------------------------------------ arrivals
    def count_assignment(self, row: int, now: float) -> None:
        t = self.table.arrays
        last = float(t["arrive_at"][row])
        gap = now - last if now > last else 0.0
        fast_tau, slow_tau = ARRIVAL_TAUS_S
        t["arrive_fast"][row] = t["arrive_fast"][row] * math.exp(-gap / fast_tau) + 1 / fast_tau
        t["arrive_slow"][row] = t["arrive_slow"][row] * math.exp(-gap / slow_tau) + 1 / slow_tau
        t["arrive_at"][row] = max(now, last)

    def arrival_rates(self, rows: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(fast, slow) assignment rates per second of rows, decayed to ``now``."""
        t = self.table.arrays
        gap = np.maximum(now - t["arrive_at"][rows], 0.0)
        fast = t["arrive_fast"][rows] * np.exp(-gap / ARRIVAL_TAUS_S[0])
        slow = t["arrive_slow"][rows] * np.exp(-gap / ARRIVAL_TAUS_S[1])
        return fast, slow

    def after_restore(self, n: int) -> None:
        self.drain_learned = bool(np.any(self.table["drain_per_s"][:n] > 0))

    def view(self, row: int) -> dict[str, float | int | None]:
        svc = self.table["service_s"][row]
        declared = self.table["max_concurrency"][row]
        return {
            "load_per_task": self.unit_of(row),
            "max_concurrency": int(declared) if declared > 0 else None,
            "service_time_s": float(svc) if svc > 0 else None,
        }
