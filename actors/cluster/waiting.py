"""A router's flow control: selections that found no headroom wait here, and are bound to
an agent when a shard says a slot may have freed (late binding; DESIGN §4).

The order, the bounds and the fairness are ``actors.core.flow.FlowQueue`` (plain, unit
tested); this is the asyncio around it: one future per waiter, its timer, and one
dispatcher task that long-polls every shard's ``wait_capacity`` while anything waits
(no busy polling: each poll returns when the shard's capacity epoch moves, or after a
second) and then tries the waiters in the queue's order. Each poll says the highest band
waiting here, and a shard answers the routers holding lower bands ``band_yield_s``
later, so priority holds across routers too. A request that arrives while
requests of its band or a higher one wait joins the queue rather than racing them for
the next free slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.cluster import tracing
from actors.cluster.adapter import Fanout
from actors.core.config import FlowConfig
from actors.core.errors import RippleError, Saturated
from actors.core.flow import FlowQueue, Waiter, jain_index
from actors.core.metrics import Counters
from actors.core.models import SelectRequest, SelectResult

log = logging.getLogger(__name__)

# One selection without waiting: the request, how long it waited already (for its
# record), the caller's trace context.
SelectOnce = Callable[[SelectRequest, float, Any], Awaitable[SelectResult]]
_POLL_S = 1.0  # the longest one long-poll waits (well inside a shard deadline)


@dataclass(eq=False)
class _Ticket:
    request: SelectRequest
    future: asyncio.Future[SelectResult]
    parent: Any = None  # the caller's trace context
    # The dispatcher's selection for it, while one runs (done when it ends, bound or not).
    attempt: asyncio.Future[None] | None = None


class FlowControl:
    def __init__(
        self,
        select_once: SelectOnce,
        fanout: Fanout,
        config: FlowConfig,
        metrics: Counters,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.select_once = select_once
        self.fanout = fanout
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.queue = FlowQueue(config)
        self.retry_after_s = 1.0  # the last refusal's prediction, for refusals at the door
        self._dispatcher: asyncio.Task[None] | None = None
        self._epochs: dict[int, int] = {}  # each shard's capacity epoch, as last seen
        self._polls: dict[int, asyncio.Future[int]] = {}  # outstanding long-polls

    # ------------------------------------------------------------------ the front door
    async def select(self, req: SelectRequest, parent: Any = None) -> SelectResult:
        if not req.assign:  # read-only: never waits, never counts
            return await self.select_once(req, 0.0, parent)
        t0 = self.clock()
        self.queue.offered(req.tenant, t0)
        wait_s = min(req.wait_s, self.config.max_wait_s)
        if self.queue.top_band() < req.priority:  # nobody of its band or above waits
            try:
                result = await self.select_once(req, 0.0, parent)
            except Saturated as refused:
                self.retry_after_s = refused.retry_after_s
                if wait_s <= 0:
                    self._refused("saturated", req.priority)
                    raise
            else:
                self.queue.served(req.tenant, self.clock())
                return result
        elif wait_s <= 0:
            self._refused("saturated", req.priority)
            raise self._saturated(0.0, "requests of its priority or higher are waiting")
        return await self._wait(req, t0, wait_s, parent)

    async def _wait(
        self, req: SelectRequest, t0: float, wait_s: float, parent: Any
    ) -> SelectResult:
        span = tracing.start("ripple.queue_wait", parent, priority=req.priority, tenant=req.tenant)
        try:
            return await self._wait_for(req, t0, wait_s, parent)
        except Saturated as refused:
            tracing.end(span, outcome=refused.reason)
            span = None
            raise
        finally:
            tracing.end(span, outcome="bound")

    async def _wait_for(
        self, req: SelectRequest, t0: float, wait_s: float, parent: Any
    ) -> SelectResult:
        ticket = _Ticket(req, asyncio.get_running_loop().create_future(), parent)
        waiter = Waiter(req.priority, req.tenant, t0, ticket)
        for gone in self.queue.push(waiter):
            self._shed(gone, t0)
        self._set_waiting()
        self._ensure_dispatcher()
        try:
            done, _ = await asyncio.wait({ticket.future}, timeout=wait_s)
            if not done and ticket.attempt is not None:
                # A selection for it is under way: if it assigns, the assignment is the
                # caller's, not a task left open with nobody to run it. Wait for that
                # try to end (it may find no headroom: then the answer is a refusal).
                await asyncio.wait({ticket.attempt})
        finally:
            # Timed out, or the caller went away (cancelled): out of the queue.
            if self.queue.remove(waiter):
                self._set_waiting()
        waited = self.clock() - t0
        if not ticket.future.done():
            self._refused("saturated", req.priority, waited)
            raise self._saturated(waited, "no agent had headroom within wait_s")
        result = ticket.future.result()  # raises a shed or a failure as it was set
        result.waited_s = round(waited, 6)
        return result

    # ------------------------------------------------------------------ the dispatcher
    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_forever())

    async def _dispatch_forever(self) -> None:
        while len(self.queue):
            try:
                freed = await self._capacity_moved()
                if freed:
                    await self._dispatch_round(freed)
            except Exception:  # the dispatcher must outlive any one failure
                log.exception("flow-control dispatch failed")
                await asyncio.sleep(0.1)

    async def _capacity_moved(self) -> int:
        """Long-poll every shard (one poll each outstanding at a time); as soon as any
        says its capacity epoch moved, by how much in all (about the slots freed: one
        per completion or expiry; a report or a new agent may free several, or none).
        The other polls stay out for the next call."""
        poll_s = min(_POLL_S, self.fanout.deadline_s / 2)
        transport = self.fanout.transport
        # The shard lets the router with the highest band waiting bind first.
        band, yield_s = self.queue.top_band(), self.config.band_yield_s
        for s in range(self.fanout.num_shards):
            if s not in self._polls:
                args = (self._epochs.get(s, -1), poll_s, band, yield_s)
                ref = transport.submit(s, "wait_capacity", args)
                self._polls[s] = asyncio.ensure_future(transport.awaitable(ref))
        done, _ = await asyncio.wait(
            self._polls.values(), timeout=self.fanout.deadline_s, return_when="FIRST_COMPLETED"
        )
        moved = 0
        for s, poll in list(self._polls.items()):
            if poll not in done:
                continue
            del self._polls[s]
            if poll.exception() is not None:  # down or restarting: ask again later
                self._epochs.pop(s, None)
                continue
            epoch, seen = poll.result(), self._epochs.get(s)
            moved += 1 if seen is None else max(epoch - seen, 0)
            self._epochs[s] = epoch
        if not done:  # no shard answered at all: do not spin
            await asyncio.sleep(poll_s)
        return moved

    async def _dispatch_round(self, freed: int) -> None:
        """Bind as many waiters as slots freed, at once (one selection each, in the
        queue's order; each assignment is admitted by its shard, so concurrent tries
        cannot overfill an agent). While every try succeeds there may be more room (a
        report can free several slots): one more at a time. A waiter restricted to some
        agents (candidates, labels, exclude) that finds none free is passed over; an
        unrestricted one that finds none ends the round. ``dispatch_tries`` bounds the
        tries that find nothing."""
        batch, misses = min(freed, self.config.dispatch_tries), 0
        passed: set[Waiter] = set()
        while batch and len(self.queue) and misses < self.config.dispatch_tries:
            ordered = self.queue.order(self.clock(), batch + len(passed))
            waiters = [w for w in ordered if w not in passed][:batch]
            if not waiters:
                return
            outcomes = await asyncio.gather(*(self._try(w) for w in waiters))
            missed = [w for w, ok in zip(waiters, outcomes, strict=True) if not ok]
            if any(_unconstrained(w.payload.request) for w in missed):
                return
            misses += len(missed)
            passed.update(missed)
            batch = max(len(missed), 1)

    async def _try(self, waiter: Waiter) -> bool:
        """One selection for ``waiter``: True when it was answered (bound, or failed for
        another reason than headroom), False when it found no headroom."""
        ticket: _Ticket = waiter.payload
        if ticket.future.done():  # it left meanwhile (timed out, cancelled)
            self.queue.remove(waiter)
            return True
        attempt = ticket.attempt = asyncio.get_running_loop().create_future()
        try:
            return await self._bind(waiter, ticket)
        finally:  # the answer (if any) is set on the ticket before its caller looks
            ticket.attempt = None
            attempt.set_result(None)

    async def _bind(self, waiter: Waiter, ticket: _Ticket) -> bool:
        try:
            waited = self.clock() - waiter.arrived_s
            result = await self.select_once(ticket.request, waited, ticket.parent)
        except Saturated as refused:
            self.retry_after_s = refused.retry_after_s
            return False
        except RippleError as exc:  # an outage or a caller's mistake: that one's answer
            self.queue.remove(waiter)
            if not ticket.future.done():
                ticket.future.set_exception(exc)
            return True
        self.queue.remove(waiter)
        self._set_waiting()
        now = self.clock()
        self.queue.served(waiter.tenant, now)
        self.metrics.hist("flow_wait_s", str(waiter.priority)).observe(now - waiter.arrived_s)
        if ticket.future.done():  # its caller went away meanwhile: the task stays open
            log.info("a waiting selection's caller left before its assignment")
        else:
            ticket.future.set_result(result)
        return True

    # ------------------------------------------------------------------ refusals, gauges
    def _shed(self, waiter: Waiter, now: float) -> None:
        ticket: _Ticket = waiter.payload
        self._refused("shed", waiter.priority, now - waiter.arrived_s)
        if not ticket.future.done():
            ticket.future.set_exception(
                Saturated(
                    "evicted from a full flow-control queue by newer or higher-priority work",
                    [{"field": "priority", "reason": "the queue was full at this priority"}],
                    retry_after_s=self.retry_after_s,
                    reason="shed",
                    waited_s=round(now - waiter.arrived_s, 6),
                )
            )

    def _saturated(self, waited_s: float, why: str) -> Saturated:
        return Saturated(
            f"saturated: {why}",
            [{"field": "wait_s", "reason": why}],
            retry_after_s=self.retry_after_s,
            reason="saturated",
            waited_s=round(waited_s, 6),
        )

    def _refused(self, reason: str, priority: int, waited_s: float = 0.0) -> None:
        self.metrics.count(self.metrics.flow_shed_total, reason)
        if waited_s > 0:
            self.metrics.hist("flow_wait_s", str(priority)).observe(waited_s)

    def _set_waiting(self) -> None:
        self.metrics.flow_waiting = {str(b): c for b, c in self.queue.waiting().items()}

    def summary(self) -> dict[str, object]:
        """For the status page: waiting by band, refusals by reason, fairness."""
        attained, demanded = self.fairness()
        tenants = sorted(demanded)
        index = jain_index(
            np.array([attained[t] for t in tenants]), np.array([demanded[t] for t in tenants])
        )
        return {
            "waiting": {str(b): n for b, n in self.queue.waiting().items()},
            "refused": dict(self.metrics.flow_shed_total),
            "fairness_index": index,
            "tenants": len(tenants),
        }

    def fairness(self) -> tuple[dict[str, float], dict[str, float]]:
        """Each tenant's decayed attained service and demand, as of now (the gauge)."""
        now = self.clock()
        q = self.queue
        tenants = list(q.demanded.values)
        return (
            {t: q.attained.get(t, now) for t in tenants},
            {t: q.demanded.get(t, now) for t in tenants},
        )


def _unconstrained(req: SelectRequest) -> bool:
    """A request any agent could serve: its refusal says every other such one fails too."""
    return req.candidates is None and not req.require_labels and not req.exclude
