"""Live signals and scoring.

For each (dimension, agent) the live signal is kept as an expiry time ``exp`` and an
amplitude per second ``k``:

    effective score = 0.5 + (score - 0.5) * confidence * decay(age)
                    = 0.5 + k * max(exp - now, 0),   k = (score - 0.5) * confidence / ttl

with linear decay (1 at age 0, 0 at the TTL). A missing or expired signal has k = 0 and so
scores the neutral 0.5: stale data means "unknown", never "idle".
"""

from __future__ import annotations

import numpy as np

from actors.core.models import INVERTED, NUM_DIMENSIONS, SIGNAL_TYPES, LiveSignal
from actors.core.table import AgentTable, columns

_D = NUM_DIMENSIONS


class LiveSignals:
    def __init__(self, table: AgentTable) -> None:
        self.table = table
        table.register("exp", (_D,), np.float64, 0.0)
        table.register("k", (_D,), np.float64, 0.0)
        table.register("ts", (_D,), np.float64, -np.inf)
        table.register("val", (_D,), np.float64, np.nan)
        table.register("conf", (_D,), np.float64, 0.0)

    def write(
        self,
        rows: np.ndarray,
        codes: np.ndarray,
        vals: np.ndarray,
        confs: np.ndarray,
        ttls: np.ndarray,
        ts: np.ndarray,
        now: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Make the newest signal per (agent, type) live; returns what became live as
        (rows, codes, timestamps)."""
        if not len(rows):
            return rows, codes, ts
        t = self.table
        exp_a, ts_a = t["exp"], t["ts"]
        key = rows * _D + codes
        order = np.lexsort((np.arange(len(key)), ts, key))
        sk = key[order]
        win = order[np.r_[sk[1:] != sk[:-1], True]]  # newest per (agent, type); ties: last sent
        r, c = rows[win], codes[win]
        # An older signal never replaces a newer live one; an expired one is simply gone.
        fresh = (ts[win] >= ts_a[c, r]) | (exp_a[c, r] <= now)
        win, r, c = win[fresh], r[fresh], c[fresh]
        v, cf, tt, tw = vals[win], confs[win], ttls[win], ts[win]
        score = np.where(INVERTED[c], 1.0 - v, v)
        t["val"][c, r] = v
        t["conf"][c, r] = cf
        ts_a[c, r] = tw
        exp_a[c, r] = tw + tt
        t["k"][c, r] = (score - 0.5) * cf / tt
        return r, c, tw

    def dims(self, rows: np.ndarray, now: float) -> np.ndarray:
        """(6, len(rows)) effective dimension scores of known rows."""
        a = self.table.arrays
        span = self.table.span(rows)
        t = columns(a["exp"], span) - now
        np.maximum(t, 0.0, out=t)
        t *= columns(a["k"], span)
        t += 0.5
        return t

    def all_scores(self, w: np.ndarray, now: float) -> np.ndarray:
        """Routing score of every row: the one O(agents) pass, limited to weighted dims."""
        n = self.table.n
        nz = np.flatnonzero(w)
        lo, hi = int(nz[0]), int(nz[-1]) + 1
        t = np.subtract(self.table["exp"][lo:hi, :n], now)
        np.maximum(t, 0.0, out=t)
        t *= self.table["k"][lo:hi, :n]
        scores = w[lo:hi] @ t
        scores += 0.5
        return scores

    def has_live(self, rows: np.ndarray | slice, now: float) -> np.ndarray:
        live: np.ndarray = np.any(self.table["exp"][:, rows] > now, axis=0)
        return live

    def oldest_age(self, rows: np.ndarray, now: float) -> np.ndarray:
        a = self.table.arrays
        ts = columns(a["ts"], rows).copy()  # written below: never through to the table
        ts[columns(a["exp"], rows) <= now] = np.inf
        return now - ts.min(axis=0)  # -inf where nothing is live; dropped when recorded

    def value(self, code: int, row: int, now: float) -> float | None:
        """The live value of one dimension, or None when it has expired."""
        if self.table["exp"][code, row] <= now:
            return None
        return float(self.table["val"][code, row])

    def expire(self, now: float) -> int:
        """Forget expired signals (reads already ignore them); returns how many."""
        n = self.table.n
        exp = self.table["exp"][:, :n]
        expired = (exp <= now) & (exp > 0.0)
        exp[expired] = 0.0
        self.table["k"][:, :n][expired] = 0.0
        return int(expired.sum())

    def live_count(self, now: float) -> int:
        return int((self.table["exp"][:, : self.table.n] > now).sum())

    def view(self, row: int, now: float) -> dict[str, LiveSignal]:
        t = self.table
        out = {}
        for c, typ in enumerate(SIGNAL_TYPES):
            exp = float(t["exp"][c, row])
            if exp > now:
                ts = float(t["ts"][c, row])
                conf = float(t["conf"][c, row])
                out[typ.value] = LiveSignal(
                    value=float(t["val"][c, row]),
                    confidence=conf,
                    timestamp=ts,
                    age_s=now - ts,
                    expires_in_s=exp - now,
                    weight=conf * (exp - now) / (exp - ts),
                )
        return out
