"""Bounded per-agent history: a ring of the last ``size`` signals of each agent.

Stored on the agent table as (size, rows) arrays, so prediction can fit every agent's
series with whole-array passes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actors.core.models import SIGNAL_TYPES
from actors.core.table import AgentTable, columns


class History:
    def __init__(self, table: AgentTable, size: int) -> None:
        self.table = table
        self.size = size
        table.register("hts", (size,), np.float64, 0.0)
        table.register("hval", (size,), np.float32, 0.0)
        table.register("htype", (size,), np.int8, -1)
        table.register("hpos", (), np.int32, 0)
        table.register("hlen", (), np.int32, 0)
        table.register("last_seen", (), np.float64, 0.0)

    def write(self, rows: np.ndarray, codes: np.ndarray, vals: np.ndarray, ts: np.ndarray) -> None:
        t, H = self.table, self.size
        hpos, hlen = t["hpos"], t["hlen"]
        order = np.argsort(rows, kind="stable")
        sr = rows[order]
        starts = np.flatnonzero(np.r_[True, sr[1:] != sr[:-1]])
        counts = np.diff(np.r_[starts, len(sr)])
        group = np.repeat(np.arange(len(starts)), counts)
        rank = np.arange(len(sr)) - starts[group]
        # More than H signals for one agent in one batch: only the last H survive anyway.
        keep = rank >= counts[group] - H
        slot = ((hpos[sr] + rank) % H)[keep]
        src = order[keep]
        dst = sr[keep]
        t["hts"][slot, dst] = ts[src]
        t["hval"][slot, dst] = vals[src]
        t["htype"][slot, dst] = codes[src]
        urows = sr[starts]
        hpos[urows] = (hpos[urows] + counts) % H
        hlen[urows] = np.minimum(hlen[urows] + counts, H)
        np.maximum.at(t["last_seen"], rows, ts)

    def touch(self, row: int, now: float) -> None:
        """Count ``now`` as the row's last sign of life (a described agent)."""
        self.table["last_seen"][row] = max(self.table["last_seen"][row], now)

    def length(self, row: int) -> int:
        return int(self.table["hlen"][row])

    def total(self) -> int:
        return int(self.table["hlen"][: self.table.n].sum())

    def series(self, row: int) -> list[dict[str, Any]]:
        """The agent's retained history, oldest first (by arrival)."""
        t, H = self.table, self.size
        n, pos = int(t["hlen"][row]), int(t["hpos"][row])
        slots = np.arange(n) if n < H else (np.arange(H) + pos) % H
        return [
            {
                "signal_type": SIGNAL_TYPES[int(t["htype"][s, row])].value,
                "value": float(t["hval"][s, row]),
                "timestamp": float(t["hts"][s, row]),
            }
            for s in slots.tolist()
        ]

    def window(
        self, rows: np.ndarray, code: int, since_s: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(timestamps, values, mask) as (size, len(rows)) arrays: the samples of one
        signal type at or after ``since_s``."""
        t = self.table
        hts, htype = columns(t["hts"], rows), columns(t["htype"], rows)
        filled = np.arange(self.size)[:, None] < t["hlen"][rows][None, :]
        mask = filled & (htype == code) & (hts >= since_s)
        return hts, columns(t["hval"], rows).astype(np.float64), mask

    def stale(self, before_s: float) -> np.ndarray:
        """Per row: no signal at all since ``before_s``."""
        stale: np.ndarray = self.table["last_seen"][: self.table.n] < before_s
        return stale
