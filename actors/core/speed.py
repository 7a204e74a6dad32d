"""How fast an agent is, measured, and when one more task would finish (DESIGN §4,
"Decisions in time units").

Per agent, from successful completions (a failure's time says nothing about real work):

- ``work_s``: a recency-weighted time one task takes (the reported ``duration_s``, else
  the time from assignment to completion);
- ``parallel``: how many tasks it progresses at once: 1 until measured (a declared
  ``max_concurrency`` is what the agent accepts, and may queue, so it only caps this): a task that
  found ``a`` tasks ahead and still waited ``w`` seconds before its ``duration_s`` began
  says ``parallel ≈ (a + 1) · work / (w + work)`` (FIFO over ``parallel`` servers); one that
  did not wait says only ``parallel ≥ a + 1``, so it can raise the figure, never lower it.
  Learned in the log domain, so 20 → 1 takes a few samples, not dozens.

``predicted_s`` of one more task on an agent holding ``n`` tasks is

    work · max(1, (n + 1) / parallel)

that is, its own time while a slot is free, and the queue's drain time beyond. Agents
with no completions yet use priors: the shard's median ``work_s`` (``default_service_s``
while it has none), scaled by the speed the agent reports (CAPACITY, or 1 - LATENCY:
0.5 is the median agent, 1.0 twice as fast; ``default_service_s`` before any completion),
and for agents whose callers report no
completions at all, the drain rate learned from their LOAD reports (``learning``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from actors.core.config import ShardConfig
from actors.core.models import CAPACITY_CODE, LATENCY_CODE
from actors.core.table import AgentTable

_PARALLEL_RATE = 0.1  # learning rate of the parallelism
# Completions a task time weighs: speed changes slowly, and a noisy figure misroutes (an
# agent's queue, not its time, reacts to a sudden slowdown: see ``LoadEstimate.tasks``).
_WORK_MEMORY = 200
_WORK_PRIOR_N = 5.0  # completions the prior task time counts as
# Agents with a learned task time before their median is the prior. One: a small fleet's
# new agents must look like its others, or they are never tried (a default of 1 s beside
# 20 ms agents starves them); shards that learned different medians rank their new agents
# differently (BENCHMARKS notes it).
MEDIAN_MIN_AGENTS = 1
_WAITED = 0.1  # a wait shorter than this share of work_s is no wait
_MIN_SPEED_SCORE = 0.05  # a reported speed of 0 is "very slow", not "never"


class Speed:
    def __init__(
        self, table: AgentTable, cfg: ShardConfig, drain_learned: Callable[[], bool]
    ) -> None:
        self.table = table
        self.cfg = cfg
        self.drain_learned = drain_learned  # any agent's drain rate learned (``learning``)
        table.register("work_s", (), np.float32, 0.0)  # meaningless while work_n is 0
        table.register("work_n", (), np.int16, 0)  # completions weighed, <= _WORK_MEMORY
        # Tasks it runs at once; 1 until measured (a declared max_concurrency is what it
        # accepts, and may queue, so it only caps this).
        table.register("parallel", (), np.float32, 1.0)
        # Of the tasks seen waiting, recency-weighted: their work (tasks ahead + 1, in task
        # times) and the wall time they took; parallel = their ratio (0: none seen yet).
        table.register("par_num", (), np.float32, 0.0)
        table.register("par_den", (), np.float32, 0.0)
        self._median = cfg.default_service_s
        self._learned = 0  # completions learned from (when the median is due again)

    def learn(self, row: int, duration_s: float | None, seen_s: float | None, ahead: int) -> None:
        """A successful task: it took ``duration_s`` to run (reported, may be None) and
        ``seen_s`` from assignment to completion (None when the assignment is unknown),
        with ``ahead`` tasks open on the agent when it was assigned."""
        work = duration_s if duration_s is not None else seen_s
        if work is None or not work >= 0:
            return
        t = self.table.arrays
        first = t["work_n"][row] == 0
        n = min(int(t["work_n"][row]) + 1, _WORK_MEMORY)
        old = t["work_s"][row]
        t["work_s"][row] = work if first else old + (work - old) / n
        t["work_n"][row] = n
        self._learned += 1
        self._refresh_median(force=first)
        if duration_s is None or seen_s is None or ahead < 0:
            return
        mean = float(t["work_s"][row])
        if not mean > 0:
            return
        p = float(t["parallel"][row])
        if seen_s - duration_s > _WAITED * mean:
            # It queued: (a + 1) tasks' work took ``seen_s`` of wall time. A ratio of
            # recency-weighted sums, not a mean of ratios (which a long tail would bias).
            keep = 1.0 - _PARALLEL_RATE
            t["par_num"][row] = keep * t["par_num"][row] + (ahead + 1) * mean
            t["par_den"][row] = keep * t["par_den"][row] + seen_s
            learned = max(float(t["par_num"][row] / t["par_den"][row]), 1.0)
        elif ahead + 1 > p:
            # A lower bound: it ran all of them at once.
            learned = math.exp(math.log(p) + _PARALLEL_RATE * (math.log(ahead + 1) - math.log(p)))
        else:
            return
        t["parallel"][row] = self._cap(row, learned)

    def _cap(self, row: int, p: float) -> float:
        declared = self.table["max_concurrency"][row]
        return min(p, float(declared)) if declared > 0 else p

    def median_work_s(self) -> float:
        """The shard's median learned task time (``default_service_s`` while none is
        learned): the prior of agents with few completions."""
        return self._median

    def _refresh_median(self, force: bool) -> None:
        """Recomputed as completions are learned (an agent's first, then at powers of
        two, then every 100): in ``learn``, not on a read, so a WAL replay (which reads
        nothing) rebuilds the same figure the verbs built."""
        learned = self._learned
        if not force and learned & (learned - 1) and (learned < 1024 or learned % 100):
            return
        n = self.table.n
        known = self.table["work_s"][:n][self.table["work_n"][:n] > 0]
        enough = len(known) >= MEDIAN_MIN_AGENTS
        self._median = float(np.median(known)) if enough else self.cfg.default_service_s

    def state_json(self) -> dict[str, float]:
        """What a snapshot keeps besides the arrays: the prior as last computed."""
        return {"median_work_s": self._median, "learned": self._learned}

    def load_state_json(self, data: dict[str, Any]) -> None:
        if data:
            self._median = float(data["median_work_s"])
            self._learned = int(data["learned"])

    def predicted_s(
        self, rows: np.ndarray, tasks: np.ndarray, speed_scores: np.ndarray
    ) -> np.ndarray:
        """Completion time of one more task on each row holding ``tasks`` (estimated);
        ``speed_scores``: the reported speed of each row (0.5 when it reports none)."""
        t = self.table.arrays
        work = self.work(rows, speed_scores)
        rows = self.table.span(rows)  # type: ignore[assignment]
        par = t["parallel"][rows]
        n = t["work_n"][rows]
        queue = tasks + 1.0
        queue /= par
        np.maximum(queue, 1.0, out=queue)
        out: np.ndarray = work * queue
        if self.drain_learned():
            drain = t["drain_per_s"][rows]
            by_drain = (n == 0) & (drain > 0)
            if by_drain.any():
                out[by_drain] = (tasks[by_drain] + 1.0) / drain[by_drain]
        return out

    def work(self, rows: np.ndarray, speed_scores: np.ndarray) -> np.ndarray:
        """The time one task takes: the learned one, shrunk toward the prior by a few
        pseudo-completions (one long first task must not make an agent look slow for
        good: it would get too little work to be measured again)."""
        t = self.table.arrays
        prior = np.maximum(speed_scores, _MIN_SPEED_SCORE)
        if not self._learned:  # no completion anywhere yet: the prior alone
            np.divide(self.median_work_s() * 0.5, prior, out=prior)
            return prior
        rows = self.table.span(rows)  # type: ignore[assignment]
        np.divide(self.median_work_s() * 0.5 * _WORK_PRIOR_N, prior, out=prior)
        n = t["work_n"][rows]
        work: np.ndarray = t["work_s"][rows] * n
        work += prior
        work /= n + _WORK_PRIOR_N
        return work

    def capacity(self, rows: np.ndarray) -> np.ndarray:
        """Tasks each row can run at once, for how much it can finish: the learned
        parallelism once a task was seen waiting (then it is measured); before that it is
        only a lower bound (the most seen running together), and the declared
        ``max_concurrency``, when there is one, is the better figure."""
        t = self.table.arrays
        par = t["parallel"][rows]
        declared = t["max_concurrency"][rows]
        unmeasured = (t["par_den"][rows] <= 0) & (declared > 0)
        out: np.ndarray = np.where(unmeasured, declared, par)
        return out

    def learned_any(self) -> bool:
        """Whether any completion has taught this shard a task time yet."""
        return self._learned > 0

    def measured_share(self, rows: np.ndarray) -> np.ndarray:
        """How far measurement has replaced the reported speed (0: not at all, toward 1)."""
        if not self._learned:
            return np.zeros(len(rows))
        n = self.table["work_n"][self.table.span(rows)]
        out: np.ndarray = n / (n + _WORK_PRIOR_N)
        return out

    @staticmethod
    def speed_scores(dims: np.ndarray) -> np.ndarray:
        """Reported speed per column of a (6, rows) score matrix: CAPACITY, else LATENCY
        (already inverted: 1 is fast) where CAPACITY says nothing (0.5)."""
        cap, lat = dims[CAPACITY_CODE], dims[LATENCY_CODE]
        out: np.ndarray = np.where(cap != 0.5, cap, lat)
        return out

    def view(self, row: int) -> dict[str, float | None]:
        t = self.table.arrays
        work, par = t["work_s"][row], t["parallel"][row]
        return {
            "work_s": float(work) if t["work_n"][row] > 0 else None,
            "parallelism": float(par),
        }
