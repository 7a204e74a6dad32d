"""The load estimate between LOAD reports (DESIGN §4): what each agent holds now, from
its last report and the task records since (``inflight``),

    estimated = last reported LOAD + unit x (tasks assigned since that report
                                              - tasks completed since that report)

where ``unit = 1 / max_concurrency``: declared by the agent (``describe``), or learned from
how its LOAD moved with the net tasks between reports (``learning``). For an agent whose
callers report no completions, the completions nobody reported are expected from its
learned drain rate, so the estimate falls between reports instead of only rising. For one
whose callers report them, the tasks open on it are a measurement: never fewer.
"""

from __future__ import annotations

import numpy as np

from actors.core.inflight import InFlight
from actors.core.models import LOAD_CODE
from actors.core.table import AgentTable


class LoadEstimate:
    """Reads of the in-flight records' mirrors; expiring what is past its time first is
    the one write (``InFlight.refresh``), so no estimate counts a task already lost."""

    def __init__(self, table: AgentTable, inflight: InFlight) -> None:
        self.table = table
        self.inflight = inflight
        self.rates = inflight.rates

    def delta(self, agent_id: str, row: int, now: float) -> float:
        """Estimated load change since the last report (0 with nothing open)."""
        if agent_id not in self.inflight.flights:
            return 0.0
        d = self.deltas(np.array([row]), now)
        return 0.0 if d is None else float(d[0])

    def deltas(self, rows: np.ndarray, now: float) -> np.ndarray | None:
        """Per row, or None when no agent has anything in flight (the fast path)."""
        if not self.inflight.any_open():
            return None
        self.inflight.refresh(rows, now)
        t = self.table.arrays
        net = t["fresh"][rows] - t["done_since"][rows]
        units = t["unit_eff"][rows]
        out: np.ndarray = units * net
        if not self.rates.drain_learned:
            return out
        drain = t["drain_per_s"][rows]
        use = (drain > 0) & (t["report_at"][rows] > -np.inf)
        if use.any():
            # Completions nobody reported, expected from the learned drain rate: never
            # more than the tasks the report and the fresh assignments put there.
            tasks = t["report_load"][rows][use] / units[use] + t["fresh"][rows][use]
            elapsed = now - t["report_at"][rows][use]
            out[use] -= units[use] * np.minimum(drain[use] * elapsed, tasks)
        return out

    def with_deltas(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(rows, deltas) of every agent whose estimate differs from its report."""
        if not self.inflight.any_open():
            return np.empty(0, np.int64), np.empty(0)
        t, n = self.table.arrays, self.table.n
        rows = np.flatnonzero((t["fresh"][:n] != 0) | (t["done_since"][:n] != 0))
        d = self.deltas(rows, now)
        assert d is not None
        keep = d != 0.0
        return rows[keep], d[keep]

    def tasks(self, rows: np.ndarray, now: float) -> np.ndarray:
        """Estimated tasks each row holds: its live LOAD report plus the tasks since, in
        tasks (``unit``); for an agent whose callers report completions, never fewer than
        the tasks open on it: a stuck or lying LOAD report is overruled by what is
        measured."""
        return self.tasks_after(rows, now, self.deltas(rows, now))

    def tasks_after(self, rows: np.ndarray, now: float, delta: np.ndarray | None) -> np.ndarray:
        """``tasks`` for a caller that already has ``deltas(rows, now)``."""
        t = self.table.arrays
        idx = self.table.span(rows)
        # One dimension's row first, then the rows of it: a 1-d gather, not a 2-d one.
        load = np.where(t["exp"][LOAD_CODE][idx] > now, t["val"][LOAD_CODE][idx], 0.0)
        if delta is None:  # nothing in flight anywhere: nothing measured either
            load /= t["unit_eff"][idx]
            return load
        load += delta
        np.maximum(load, 0.0, out=load)
        load /= t["unit_eff"][idx]
        np.maximum(load, t["open_n"][idx] * t["completes"][idx], out=load)
        return load

    def measured_rows(self) -> np.ndarray:
        """Rows whose open tasks are a measurement (their callers report completions)."""
        n = self.table.n
        t = self.table.arrays
        return np.flatnonzero(t["completes"][:n] & (t["open_n"][:n] > 0))
