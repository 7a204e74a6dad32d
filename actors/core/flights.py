"""The records behind ``inflight``: one open task, and one agent's tasks and
reconciliation state (plain data, kept by agent id)."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(slots=True)
class Assignment:
    made_at_s: float
    expires_at_s: float
    ahead: int = -1  # tasks open on the agent when this one was assigned (-1: unknown)
    overdue: bool = False  # past its time, but not known lost (``InFlight._lost``)


@dataclass
class Flight:
    """One agent's open assignments and its reconciliation state."""

    open: OrderedDict[str, Assignment] = field(default_factory=OrderedDict)
    report_ts: float = -math.inf  # measurement time of the last LOAD report
    report_value: float = math.nan
    completed_since: int = 0  # absorbed tasks reported finished since that report
    # Every task assigned, and every one reported done, since that report: the net
    # change that LOAD's move is regressed on to learn the load per task.
    assigned_since: int = 0
    done_since: int = 0
    reports_completions: bool = False
    # When the latest-assigned task reported done was assigned: an overdue task assigned
    # before it is lost, not still running (its callers report completions).
    last_done_made_s: float = -math.inf


@dataclass
class Released:
    released: bool
    assignment_id: str | None = None
    seen_s: float | None = None  # assignment to completion (None: the task was not open)
    ahead: int = -1  # tasks open when it was assigned
