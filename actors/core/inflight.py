"""In-flight assignments: the record of every task a selection assigned, reconciled with
the LOAD reports (DESIGN §4).

A selection that assigns records one task on each chosen agent; a completion, an expiry
or a LOAD report settles it. Per agent the records say which tasks are open, which of
them the last report has not seen yet ("fresh"), and which of those it had seen were
completed since ("absorbed" tasks: a LOAD *measured* at t already counts the tasks
assigned before t). Their counts are mirrored in per-row arrays, from which
``estimate.LoadEstimate`` reads what each agent holds between reports.

A task nobody completes expires after a learned service time (from reported durations,
or by Little's law from LOAD and the assignment rate), bounded by ``assignment_ttl_s``.
Records are kept by agent id, so the table's swap-remove never re-maps them. What is
learned per agent (the unit, the service time, the drain rate) is ``actors.core.learning``.
"""

from __future__ import annotations

import itertools
import math
import os
from typing import Any

import numpy as np

from actors.core.config import ShardConfig
from actors.core.flights import Assignment, Flight, Released
from actors.core.learning import Rates
from actors.core.models import LOAD_CODE
from actors.core.table import AgentTable


class InFlight:
    def __init__(self, table: AgentTable, cfg: ShardConfig) -> None:
        self.table = table
        self.rates = Rates(
            table, default_unit=cfg.default_task_load, assignment_ttl_s=cfg.assignment_ttl_s
        )
        self.max_per_agent = cfg.max_inflight_per_agent
        self.max_per_shard = cfg.max_inflight_per_shard
        self.flights: dict[str, Flight] = {}
        self.open_total = 0
        self.expired_total = 0
        self.refused_total = 0
        # Unique across restarts and processes: a random prefix plus a counter.
        self._ids = (f"{os.urandom(4).hex()}-{i}" for i in itertools.count(1))
        # Mirrors of each Flight, so the estimate of many rows is a few array passes: open
        # tasks the last report has not seen, absorbed tasks completed since it, and the
        # earliest expiry among the former (past it, the row is refreshed first).
        table.register("fresh", (), np.int32, 0)
        table.register("done_since", (), np.int32, 0)
        table.register("next_exp", (), np.float64, np.inf)
        # When and how loaded the last report was (for agents whose callers report no
        # completions), so the estimate also falls between reports instead of only rising.
        table.register("report_at", (), np.float64, -np.inf)
        table.register("report_load", (), np.float64, np.nan)
        # Every open task, and whether the agent's callers report completions: then the
        # open tasks are a measurement of what it holds, whatever its LOAD says.
        table.register("open_n", (), np.int32, 0)
        table.register("completes", (), np.bool_, 0)
        table.on_remove(self._forget)

    def _sync(self, agent_id: str, row: int) -> None:
        """Recompute the row's mirrors from its Flight (after any change but a new task)."""
        t = self.table.arrays
        fl = self.flights.get(agent_id)
        if fl is None:
            t["fresh"][row], t["done_since"][row], t["next_exp"][row] = 0, 0, np.inf
            t["report_at"][row] = -np.inf
            t["open_n"][row], t["completes"][row] = 0, False
            return
        fresh = [a.expires_at_s for a in fl.open.values() if a.made_at_s >= fl.report_ts]
        t["report_at"][row] = -np.inf if fl.reports_completions else fl.report_ts
        t["report_load"][row] = fl.report_value
        t["fresh"][row] = len(fresh)
        t["done_since"][row] = fl.completed_since
        t["next_exp"][row] = min(fresh, default=np.inf)
        t["open_n"][row], t["completes"][row] = len(fl.open), fl.reports_completions

    def _forget(self, removed: list[str], _moved: dict[int, int]) -> None:
        for a in removed:
            fl = self.flights.pop(a, None)
            if fl is not None:
                self.open_total -= len(fl.open)

    # ------------------------------------------------------------------ parameters
    def unit_of(self, row: int) -> float:
        return self.rates.unit_of(row)

    def declare(self, row: int, max_concurrency: int) -> None:
        self.rates.declare(row, max_concurrency)

    def _new_flight(self, row: int, now: float) -> Flight:
        """A Flight that starts from the agent's live LOAD report, if it has one (read from
        the live-signal arrays on the shared table), so the first task after a quiet spell
        is reconciled against that report and the drain estimate applies at once."""
        t = self.table.arrays
        exp, ts = t["exp"][LOAD_CODE, row], t["ts"][LOAD_CODE, row]
        if exp > now:
            return Flight(report_ts=float(ts), report_value=float(t["val"][LOAD_CODE, row]))
        return Flight()

    # ------------------------------------------------------------------ writes
    def new_id(self) -> str:
        """A fresh assignment id (taken before the assignment is logged and made)."""
        return next(self._ids)

    def is_open(self, agent_id: str, assignment_id: str) -> bool:
        fl = self.flights.get(agent_id)
        return fl is not None and assignment_id in fl.open

    def assign(self, agent_id: str, row: int, now: float, aid: str | None = None) -> str | None:
        """Record one task; None when the shard's bound on open records is reached.
        ``aid``: the id to use (a WAL replay gives back the ids handed out before)."""
        if self.open_total >= self.max_per_shard:
            self._expire_agent(agent_id, now)
            if self.open_total >= self.max_per_shard:
                self.refused_total += 1
                return None
        fl = self.flights.get(agent_id)
        new = fl is None
        if fl is None:
            fl = self.flights[agent_id] = self._new_flight(row, now)
        if len(fl.open) >= self.max_per_agent:  # the oldest is surely done or lost
            fl.open.popitem(last=False)
            self.open_total -= 1
            self.expired_total += 1
            self._sync(agent_id, row)
        aid = next(self._ids) if aid is None else aid
        ttl_s = self.rates.task_ttl_s(row, fl.reports_completions)
        task = fl.open[aid] = Assignment(now, now + ttl_s, len(fl.open))
        fl.assigned_since += 1
        self.open_total += 1
        self.rates.count_assignment(row, now)
        t = self.table.arrays
        t["open_n"][row] += 1
        if new:
            self._sync(agent_id, row)
        elif task.made_at_s >= fl.report_ts:  # the usual case: one more fresh task
            t["fresh"][row] += 1
            t["next_exp"][row] = min(t["next_exp"][row], task.expires_at_s)
        return aid

    def complete(
        self,
        agent_id: str,
        row: int,
        assignment_id: str | None,
        ok: bool,
        duration_s: float | None,
        now: float,
    ) -> Released:
        fl = self.flights.get(agent_id)
        task: Assignment | None = None
        if fl is not None and fl.open:
            if assignment_id is None:  # no id: the oldest open task ended
                assignment_id, task = fl.open.popitem(last=False)
            else:
                task = fl.open.pop(assignment_id, None)
        # What bounds an uncompleted task is its time from assignment to completion
        # (queueing included), so that is learned when the task is known; a reported
        # ``duration_s`` (processing only) is the fallback.
        seen_s = now - task.made_at_s if task is not None else duration_s
        if seen_s is not None and seen_s >= 0:
            self.rates.learn_service(row, seen_s, from_durations=True)
        if fl is not None:
            fl.done_since += 1
            fl.reports_completions = True
        if task is None or fl is None:
            return Released(False, assignment_id)
        self.open_total -= 1
        if task.made_at_s < fl.report_ts:
            fl.completed_since += 1
        fl.last_done_made_s = max(fl.last_done_made_s, task.made_at_s)
        # Overdue tasks this one overtook were lost, not slow.
        lost = [a for a, o in fl.open.items() if o.overdue and o.made_at_s < task.made_at_s]
        for a in lost:
            del fl.open[a]
        self.open_total -= len(lost)
        self.expired_total += len(lost)
        self._sync(agent_id, row)
        return Released(True, assignment_id, seen_s, task.ahead)

    def on_load(self, rows: np.ndarray, values: np.ndarray, ts: np.ndarray) -> None:
        """New LOAD reports measured at ``ts``: absorb the tasks assigned by then, and
        learn the per-task unit and the service time from how LOAD moved."""
        ids = self.table.ids
        for r, v, t in zip(rows.tolist(), values.tolist(), ts.tolist(), strict=True):
            fl = self.flights.get(ids[r])
            if fl is None:  # nothing assigned since the agent was last reconciled
                continue
            # Without completion reports LOAD's move says nothing about one task's share.
            net = fl.assigned_since - fl.done_since
            learn = fl.reports_completions and math.isfinite(fl.report_value)
            if learn and net != 0:
                self.rates.learn_unit(r, v - fl.report_value, net)
            # Tasks assigned between the two measurements (not between the two arrivals:
            # a report can arrive after tasks it did not see). Open ones only, which for
            # an agent without completion reports is all of them until they expire.
            between = sum(1 for a in fl.open.values() if fl.report_ts <= a.made_at_s < t)
            if between and math.isfinite(fl.report_ts) and t > fl.report_ts:
                self.rates.learn_service_from_load(r, between / (t - fl.report_ts), v)
            if not fl.reports_completions and math.isfinite(fl.report_value):
                self.rates.learn_drain(r, fl, v, t, between)
            if math.isfinite(fl.report_ts) and t > fl.report_ts:
                self.rates.learn_report_interval(r, t - fl.report_ts)
            fl.report_ts, fl.report_value = t, v
            fl.completed_since = 0
            fl.assigned_since = fl.done_since = 0
            if not fl.open and not fl.reports_completions:
                del self.flights[ids[r]]
            self._sync(ids[r], r)

    def _expire_agent(self, agent_id: str, now: float) -> None:
        fl = self.flights.get(agent_id)
        if fl is None:
            return
        # An expired task that the last report already counted stays in that report until
        # the next one: not hearing back is no evidence that it finished.
        gone = [aid for aid, a in fl.open.items() if a.expires_at_s <= now]
        row = self.table.index[agent_id]
        if fl.reports_completions and gone:
            gone = self._lost(fl, row, gone, now)
        for aid in gone:
            del fl.open[aid]
        self.open_total -= len(gone)
        self.expired_total += len(gone)
        self._sync(agent_id, row)

    def _lost(self, fl: Flight, row: int, overdue: list[str], now: float) -> list[str]:
        """Of the overdue tasks of an agent whose callers report completions, those lost:
        a task assigned after it has been reported done, or it has run for the longest a
        task may (``assignment_ttl_s``). The others are still running (a long tail, not a
        lost report): they count on, and are looked at again a service time later."""
        cap = self.rates.assignment_ttl_s
        # A declared max_concurrency is a hard bound (admission): a slot is given back
        # on a completion, or at assignment_ttl_s, never on a guess that a long task was
        # lost (exponential task times alone put one in ~3,000 past 8x the mean).
        declared = self.table["max_concurrency"][row] > 0
        lost = []
        for aid in overdue:
            task = fl.open[aid]
            if now >= task.made_at_s + cap:
                lost.append(aid)
            elif declared:
                task.expires_at_s = task.made_at_s + cap
            elif task.made_at_s < fl.last_done_made_s:
                lost.append(aid)
            else:
                again = now + self.rates.time_in_system_s(row)
                task.expires_at_s = min(task.made_at_s + cap, again)
                task.overdue = True
        return lost

    def expire(self, now: float) -> int:
        """Drop tasks past their time; linear in the open records."""
        before = self.expired_total
        for a in list(self.flights):
            self._expire_agent(a, now)
        return self.expired_total - before

    # ------------------------------------------------------------------ reads
    def any_open(self) -> bool:
        """Whether any agent has a task record (else every estimate is its report)."""
        return bool(self.flights)

    def refresh(self, rows: np.ndarray, now: float) -> None:
        """Expire the tasks of rows whose earliest fresh task is past its time (before an
        estimate reads their mirrors)."""
        stale = rows[self.table.arrays["next_exp"][rows] <= now]
        ids = self.table.ids
        for r in stale.tolist():
            self._expire_agent(ids[r], now)

    def open_count(self, agent_id: str, now: float) -> int:
        fl = self.flights.get(agent_id)
        return 0 if fl is None else sum(1 for a in fl.open.values() if a.expires_at_s > now)

    def holders(self) -> set[str]:
        return {a for a, fl in self.flights.items() if fl.open}

    def view(self, agent_id: str, row: int, now: float) -> dict[str, Any]:
        return {"in_flight": self.open_count(agent_id, now), **self.rates.view(row)}

    # ------------------------------------------------------------------ snapshots
    def records(self) -> list[list[Any]]:
        return [
            [
                a,
                fl.report_ts,
                fl.report_value,
                fl.completed_since,
                fl.assigned_since,
                fl.done_since,
                fl.reports_completions,
                [[aid, t.made_at_s, t.expires_at_s, t.ahead] for aid, t in fl.open.items()],
                fl.last_done_made_s,
            ]
            for a, fl in self.flights.items()
        ]

    def load_records(self, records: list[list[Any]]) -> None:
        self.rates.after_restore(self.table.n)
        for a, rts, rv, completed, assigned, done, reports, open_, *rest in records:
            fl = Flight(report_ts=float(rts), report_value=float(rv))
            fl.completed_since, fl.assigned_since = int(completed), int(assigned)
            fl.done_since, fl.reports_completions = int(done), bool(reports)
            # Records of an older snapshot lack the last two fields (tasks ahead, the
            # latest done task): unknown, as for a task assigned before they were kept.
            fl.last_done_made_s = float(rest[0]) if rest else -math.inf
            for aid, made, exp, *ahead in open_:
                fl.open[str(aid)] = Assignment(
                    float(made), float(exp), int(ahead[0]) if ahead else -1
                )
            self.flights[str(a)] = fl
            self.open_total += len(fl.open)
            self._sync(str(a), self.table.index[str(a)])
