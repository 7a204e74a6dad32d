"""Headroom: which agents may take one more task now (DESIGN §4, "Admission and flow
control").

An agent's slots are its declared ``max_concurrency``, else the concurrency its LOAD
reports imply (a LOAD of 1 is full, so ``1 / unit`` tasks fill it, the unit learned from
how LOAD moved with its tasks: ``learning``); an agent with neither has unknown
concurrency and always has headroom. It has headroom while the tasks it is estimated to
hold (``LoadEstimate.tasks``: never fewer than those measured open when completions are
reported) leave a slot free. An assigning selection considers only agents with headroom,
and ``assign`` checks again, so two routers that chose the same last slot at once cannot
both take it.

Every change that can free a slot (a completion, an expiry, a LOAD report, a new agent, a
declared concurrency) advances ``epoch``; the shard actor wakes the routers waiting on it
(a long-poll, ``actors.cluster.shard``), which is how a waiting selection binds late.
"""

from __future__ import annotations

import numpy as np

from actors.core.errors import Saturated
from actors.core.learning import Rates
from actors.core.table import AgentTable

_SLACK = 1e-6  # a float estimate of 2.9999999 tasks holds 3


class Admission:
    def __init__(self, table: AgentTable, rates: Rates) -> None:
        self.table = table
        self.rates = rates
        self.epoch = 0  # advances whenever capacity may have freed
        self._removals = 0  # rows move on a removal: the cached mask is stale
        self._cached: tuple[tuple[int, int], np.ndarray, bool] = (
            (-1, -1),
            np.zeros(0, bool),
            False,
        )
        table.on_remove(self._on_remove)

    def _on_remove(self, _ids: list[str], _moved: dict[int, int]) -> None:
        self._removals += 1

    def freed(self) -> None:
        self.epoch += 1

    def _limited(self) -> tuple[np.ndarray, bool]:
        """Per row: whether its concurrency is known (declared or learned); and whether
        any row's is (cached until a concurrency becomes known or rows move)."""
        n = self.table.n
        version, mask, any_known = self._cached
        now_version = (self.rates.limits_version, self._removals)
        if version != now_version or len(mask) > n:
            a = self.table.arrays
            mask = ~(np.isnan(a["max_concurrency"][:n]) & np.isnan(a["unit"][:n]))
            any_known = bool(mask.any())
            self._cached = (now_version, mask, any_known)
        if len(mask) < n:  # rows added since: unknown concurrency until said otherwise
            mask = np.concatenate([mask, np.zeros(n - len(mask), bool)])
            self._cached = (now_version, mask, any_known)
        return mask, any_known

    def limited(self, rows: np.ndarray) -> np.ndarray | None:
        """Which of ``rows`` (known rows) have known concurrency; None: none has."""
        mask, any_known = self._limited()
        if not any_known:
            return None
        out = mask[rows]
        return out if out.any() else None

    def slots(self, rows: np.ndarray) -> np.ndarray:
        return 1.0 / self.table.arrays["unit_eff"][rows]

    def full(self, rows: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        """Of rows with known concurrency, those holding every slot (``tasks``: theirs)."""
        out: np.ndarray = tasks + 1.0 > self.slots(rows) + _SLACK
        return out

    @staticmethod
    def free_in_s(slots: np.ndarray, tasks: np.ndarray, work_s: np.ndarray) -> float:
        """When a slot is predicted to free on the soonest of full agents: the tasks
        beyond its slots, plus one, each taking a task time shared over the slots."""
        if not len(slots):
            return float("inf")
        wait = work_s * (np.maximum(tasks - slots, 0.0) + 1.0) / np.maximum(slots, 1.0)
        return float(wait.min())


def saturated(full: int, free_in_s: float, waited_s: float = 0.0) -> Saturated:
    """The refusal of an assigning selection that found no candidate with headroom."""
    retry = free_in_s if np.isfinite(free_in_s) else 1.0
    return Saturated(
        f"every candidate is at its concurrency ({full} full)",
        [{"field": "wait_s", "reason": "no agent had headroom within it"}],
        retry_after_s=round(max(retry, 0.001), 3),
        reason="saturated",
        waited_s=waited_s,
    )
