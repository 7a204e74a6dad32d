"""The task verbs of a shard: what routers record about the tasks they place.

``assign`` opens a task on each chosen agent (a selection's second step), ``report_tasks``
records tasks that a router outside Ripple placed and saw end, ``complete`` closes one.
The records live in ``inflight.InFlight``; these verbs add the WAL records and the
metrics. Mixed into ``ShardState``, whose parts they use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from actors.core import wal
from actors.core.inflight import InFlight
from actors.core.metrics import MetricsSnapshot
from actors.core.models import CompleteResult
from actors.core.table import AgentTable


class TaskVerbs:
    table: AgentTable
    inflight: InFlight
    metrics: MetricsSnapshot
    journal: Callable[[bytes], None] | None
    _clock: Callable[[], float]

    def assign(self, agent_ids: Sequence[str]) -> dict[str, str]:
        """Record one in-flight task on each known agent; unknown ones get no state.
        Returns the assignment id of each agent assigned."""
        return dict(self.assign_with_ids([(a, None) for a in agent_ids]))

    def assign_with_ids(self, pairs: Sequence[tuple[str, str | None]]) -> list[tuple[str, str]]:
        """``assign`` with the id of each task given (None: a new one); a WAL replay
        gives back the ids handed out before. Returns (agent, id) of each task opened."""
        now = self._clock()
        planned = [
            (a, self.inflight.new_id() if wanted is None else wanted)
            for a, wanted in pairs
            if self.table.row(a) is not None
        ]
        # Logged before anything changes: a record the storage refused leaves no trace.
        # A replay refuses what this call refuses (the same bounds on the same state).
        if planned and self.journal is not None:
            self.journal(wal.encode("assign", now, {"pairs": planned}))
        out = []
        for a, aid in planned:
            r = self.table.row(a)
            assert r is not None
            if self.inflight.assign(a, r, now, aid) is not None:
                out.append((a, aid))
        return out

    def report_tasks(
        self, assigned: Sequence[str], completed: Sequence[tuple[str, bool, float | None]]
    ) -> dict[str, int]:
        """Tasks that a router outside Ripple placed and saw end (the Serve request router,
        the LiteLLM strategy), in one call: each id in ``assigned`` opens a task on that
        agent if it is known; each ``(agent_id, ok, duration_s)`` closes its oldest one."""
        opened = len(self.assign_with_ids([(a, None) for a in assigned]))
        released = sum(self.complete(a, None, ok, d).released for a, ok, d in completed)
        return {"assigned": opened, "released": released}

    def complete(
        self,
        agent_id: str,
        assignment_id: str | None = None,
        ok: bool = True,
        duration_s: float | None = None,
    ) -> CompleteResult:
        """A task ended: the load estimate drops now, not at the next LOAD report. An
        unknown agent, or an ``assignment_id`` that is not open, gets ``released: false``
        and changes nothing."""
        r = self.table.row(agent_id)
        if r is None or (
            assignment_id is not None and not self.inflight.is_open(agent_id, assignment_id)
        ):
            # An id that is not open (unknown, already completed or expired) changes
            # nothing: a caller must not be able to talk an agent's estimate down.
            return CompleteResult(released=False, assignment_id=assignment_id)
        now = self._clock()
        if self.journal is not None:
            args = {"agent": agent_id, "id": assignment_id, "ok": ok, "duration_s": duration_s}
            self.journal(wal.encode("complete", now, args))
        out = self.inflight.complete(agent_id, r, assignment_id, ok, duration_s, now)
        self.metrics.count(self.metrics.completed_total, "ok" if ok else "failed")
        return CompleteResult(released=out.released, assignment_id=out.assignment_id)
