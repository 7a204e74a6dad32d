"""The flow-control queue of one router (DESIGN §4, "Admission and flow control"), plain
and sans-I/O: what waits, in which order it is served, and what is shed.

- **Bands**: ``priority`` 0-9; a waiter of a higher band is always served first.
- **Fairness within a band: least attained service** over a decaying window (half-life
  ``fairness_half_life_s``): the tenant that got the least service lately goes first,
  oldest first within a tenant. Chosen over deficit round robin because one set of
  numbers (each tenant's decayed service, and its decayed demand) both orders the queue
  and measures fairness (``fairness_index``), across the requests that waited and those
  served at once; and a tenant that went quiet is not owed a backlog of turns (its
  service fades), while a burst from a new tenant gets turns at once. Every task costs
  one unit of service: Ripple does not know a task's size before it runs.
- **Bounds**: ``max_waiting_per_band`` per band and ``max_waiting`` in all; a push that
  would exceed either sheds the oldest waiter of the lowest band waiting (which may be
  the newcomer itself, when it is the lowest).

The router owns the futures and the timers (``actors.cluster.waiting``); this module only
decides. Times are the caller's clock (``now``), so a simulator runs it on its own.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.core.config import FlowConfig

NUM_BANDS = 10


@dataclass(eq=False)
class Waiter:
    priority: int
    tenant: str
    arrived_s: float
    payload: Any = None  # the router's (request, future); opaque here
    seq: int = 0
    queued: bool = field(default=False, init=False)


class Decayed:
    """Per-key amounts that halve every ``half_life_s`` (a tenant's service, its demand)."""

    def __init__(self, half_life_s: float) -> None:
        self.rate = math.log(2.0) / half_life_s
        self.values: dict[str, tuple[float, float]] = {}  # key -> (amount, as of)

    def add(self, key: str, amount: float, now: float) -> None:
        self.values[key] = (self.get(key, now) + amount, now)

    def get(self, key: str, now: float) -> float:
        got = self.values.get(key)
        if got is None:
            return 0.0
        amount, at = got
        return amount * math.exp(-self.rate * max(now - at, 0.0))

    def prune(self, keep: int, now: float, protect: set[str]) -> None:
        """Forget all but the ``keep`` largest (and those in ``protect``)."""
        if len(self.values) <= keep:
            return
        ranked = sorted(self.values, key=lambda k: self.get(k, now), reverse=True)
        self.values = {k: self.values[k] for i, k in enumerate(ranked) if i < keep or k in protect}


class FlowQueue:
    def __init__(self, config: FlowConfig | None = None) -> None:
        self.config = cfg = config or FlowConfig()
        # band -> tenant -> waiters, oldest first
        self.bands: list[dict[str, deque[Waiter]]] = [{} for _ in range(NUM_BANDS)]
        self.counts = [0] * NUM_BANDS
        self.attained = Decayed(cfg.fairness_half_life_s)
        self.demanded = Decayed(cfg.fairness_half_life_s)
        self._seq = itertools.count()

    def __len__(self) -> int:
        return sum(self.counts)

    def top_band(self) -> int:
        """The highest band with a waiter, -1 when none waits."""
        for band in range(NUM_BANDS - 1, -1, -1):
            if self.counts[band]:
                return band
        return -1

    def waiting(self) -> dict[int, int]:
        return {b: c for b, c in enumerate(self.counts) if c}

    # ------------------------------------------------------------------ accounting
    def offered(self, tenant: str, now: float) -> None:
        """An assigning request arrived (served at once, queued or refused): demand."""
        self.demanded.add(tenant, 1.0, now)
        limit = self.config.max_tenants
        if len(self.demanded.values) > limit:
            protect = {t for band in self.bands for t in band}
            self.demanded.prune(limit, now, protect)
            self.attained.prune(limit, now, protect | set(self.demanded.values))

    def served(self, tenant: str, now: float) -> None:
        self.attained.add(tenant, 1.0, now)

    def fairness_index(self, now: float) -> float | None:
        """Jain's index over tenants' attained service, each normalised by its max-min
        fair share of what was served (``fair_shares``); None with no demand."""
        tenants = list(self.demanded.values)
        demand = np.array([self.demanded.get(t, now) for t in tenants])
        got = np.array([self.attained.get(t, now) for t in tenants])
        return jain_index(got, demand)

    # ------------------------------------------------------------------ the queue
    def push(self, waiter: Waiter) -> list[Waiter]:
        """Queue ``waiter``; returns the waiters shed to make room (maybe itself)."""
        waiter.seq = next(self._seq)
        band = self.bands[waiter.priority]
        band.setdefault(waiter.tenant, deque()).append(waiter)
        waiter.queued = True
        self.counts[waiter.priority] += 1
        shed: list[Waiter] = []
        while self.counts[waiter.priority] > self.config.max_waiting_per_band:
            shed.append(self._pop_oldest(waiter.priority))
        while len(self) > self.config.max_waiting:
            shed.append(self._pop_oldest(self._lowest_band()))
        return shed

    def _lowest_band(self) -> int:
        return next(b for b in range(NUM_BANDS) if self.counts[b])

    def _pop_oldest(self, band: int) -> Waiter:
        tenants = self.bands[band]
        oldest = min(tenants, key=lambda t: tenants[t][0].seq)
        w = tenants[oldest][0]
        self.remove(w)
        return w

    def remove(self, waiter: Waiter) -> bool:
        """Take ``waiter`` out (served, timed out, gone); False when it was not queued."""
        if not waiter.queued:
            return False
        tenants = self.bands[waiter.priority]
        q = tenants[waiter.tenant]
        if q[0] is waiter:
            q.popleft()
        else:
            q.remove(waiter)
        if not q:
            del tenants[waiter.tenant]
        waiter.queued = False
        self.counts[waiter.priority] -= 1
        return True

    def order(self, now: float, limit: int) -> list[Waiter]:
        """The first ``limit`` waiters in the order they are to be served: by band,
        highest first; within a band, each tenant's oldest, least attained service
        first, then each tenant's next, and so on."""
        out: list[Waiter] = []
        for band in range(NUM_BANDS - 1, -1, -1):
            if not self.counts[band]:
                continue
            tenants = self.bands[band]
            ranked = sorted(tenants, key=lambda t: (self.attained.get(t, now), tenants[t][0].seq))
            queues = [iter(tenants[t]) for t in ranked]
            while queues and len(out) < limit:
                alive = []
                for q in queues:
                    w = next(q, None)
                    if w is not None and len(out) < limit:
                        out.append(w)
                        alive.append(q)
                queues = alive
            if len(out) >= limit:
                break
        return out


def fair_shares(demand: np.ndarray, total: float) -> np.ndarray:
    """Max-min fair split of ``total`` over demands (water-filling): every tenant gets
    its demand or the common level, whichever is less."""
    n = len(demand)
    out = np.zeros(n)
    left, order = float(total), np.argsort(demand)
    for i, j in enumerate(order.tolist()):
        level = left / (n - i)
        out[j] = min(float(demand[j]), level)
        left -= out[j]
    return out


def jain_index(got: np.ndarray, demand: np.ndarray) -> float | None:
    """Jain's index, (Σx)² / (n·Σx²), of x = what each tenant got over its max-min fair
    share of the total got: 1.0 when the split is max-min fair, 1/n when one tenant took
    everything. None with no demand, or nothing served."""
    keep = demand > 1e-9
    if not keep.any():
        return None
    got, demand = got[keep], demand[keep]
    total = float(got.sum())
    if total <= 0:
        return None  # nobody was served: nothing to compare
    share = fair_shares(demand, total)
    x = got / np.maximum(share, 1e-12)
    return float(x.sum() ** 2 / (len(x) * (x**2).sum()))
