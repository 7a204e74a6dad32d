"""Reservations: short-lived load increments a selection puts on the agents it chose.

Kept by agent id rather than by row, so the table's swap-remove never has to re-map them.
Each reservation remembers when it was made: a LOAD signal *measured* at time t already
reflects the reservations made at or before t, and clears only those. A LOAD measured earlier
but delivered later leaves newer reservations in place.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from actors.core.table import AgentTable


@dataclass(frozen=True)
class Reservation:
    made_at_s: float
    amount: float
    expires_at_s: float


class Reservations:
    def __init__(self, table: AgentTable, max_per_agent: int) -> None:
        self.table = table
        self.max_per_agent = max_per_agent
        self.by_agent: dict[str, deque[Reservation]] = {}
        table.on_remove(self._forget)

    def _forget(self, removed: list[str], _moved: dict[int, int]) -> None:
        by_agent = self.by_agent
        if by_agent:
            for a in removed:
                by_agent.pop(a, None)

    def add(self, agent_id: str, amount: float, ttl_s: float, now: float) -> None:
        held = self.by_agent.get(agent_id)
        if held is None:
            # Bounded: a router that never hears back cannot grow one agent's records.
            held = self.by_agent[agent_id] = deque(maxlen=self.max_per_agent)
        held.append(Reservation(now, amount, now + ttl_s))

    def absorb(self, rows: np.ndarray, load_ts: np.ndarray) -> None:
        """New LOAD measured at ``load_ts`` for ``rows``: drop reservations made by then."""
        if not self.by_agent:
            return
        ids = self.table.ids
        for r, t in zip(rows.tolist(), load_ts.tolist(), strict=True):
            held = self.by_agent.get(ids[r])
            if held is None:
                continue
            while held and held[0].made_at_s <= t:
                held.popleft()
            if not held:
                del self.by_agent[ids[r]]

    def amount(self, agent_id: str, now: float) -> float:
        held = self.by_agent.get(agent_id)
        if not held:
            return 0.0
        return sum(r.amount for r in held if r.expires_at_s > now)

    def amounts(self, rows: np.ndarray, now: float) -> np.ndarray | None:
        """Live reserved load per row, or None when nothing is reserved (the fast path)."""
        if not self.by_agent:
            return None
        ids = self.table.ids
        return np.fromiter((self.amount(ids[r], now) for r in rows.tolist()), np.float64, len(rows))

    def reserved_rows(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(rows, amounts) of every agent holding a live reservation."""
        index = self.table.index
        pairs = [(index[a], self.amount(a, now)) for a in self.by_agent]
        pairs = [(r, amt) for r, amt in pairs if amt > 0.0]
        if not pairs:
            return np.empty(0, np.int64), np.empty(0)
        rows, amts = zip(*pairs, strict=True)
        return np.array(rows, np.int64), np.array(amts)

    def expire(self, now: float) -> int:
        """Drop expired reservations; linear in the reservations held."""
        dropped = 0
        for a in list(self.by_agent):
            held = self.by_agent[a]
            live = [r for r in held if r.expires_at_s > now]
            if len(live) != len(held):
                dropped += len(held) - len(live)
                if live:
                    self.by_agent[a] = deque(live, maxlen=self.max_per_agent)
                else:
                    del self.by_agent[a]
        return dropped

    def holders(self) -> set[str]:
        return set(self.by_agent)

    def count(self) -> int:
        return sum(len(h) for h in self.by_agent.values())

    def records(self) -> list[tuple[str, float, float, float]]:
        """Every reservation as (agent id, made at, amount, expires at), for snapshots."""
        return [
            (a, r.made_at_s, r.amount, r.expires_at_s)
            for a, held in self.by_agent.items()
            for r in held
        ]

    def load_records(self, records: list[tuple[str, float, float, float]]) -> None:
        for a, made, amount, exp in records:
            self.add(a, amount, exp - made, made)
