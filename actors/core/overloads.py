"""Scanning a shard for agents about to overload, in bounded chunks.

The list of every agent at risk can span a million agents; fitting them all in one call
would hold the shard's event loop for seconds. The scan works in chunks of rows, can stop
at a limit or a time budget, and says where to resume, so a host yields between chunks and
a caller pages with a cursor. Rows move when agents are removed, so a paged scan is not a
snapshot: an agent can be missed or seen twice across pages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np

from actors.core.estimate import LoadEstimate
from actors.core.fluid import Measured
from actors.core.metrics import Counters
from actors.core.models import OverloadPrediction, PredictParams
from actors.core.prediction import Predictor
from actors.core.table import AgentTable

EVERYTHING_CHUNK_ROWS = 65_536
# Rows fitted between two turns of a host's event loop in a paged scan: a few ms of work.
PAGE_CHUNK_ROWS = 4096
Page = tuple[list[OverloadPrediction], int | None]


class OverloadScan:
    def __init__(
        self,
        table: AgentTable,
        predictor: Predictor,
        estimate: LoadEstimate,
        metrics: Counters,
        measure: Callable[[np.ndarray, float], Measured],
    ) -> None:
        self.table = table
        self.predictor = predictor
        self.estimate = estimate
        self.metrics = metrics
        self.measure = measure  # the measured state of rows (``Scorer.measured``)

    def chunk(
        self, params: PredictParams, start_row: int, rows: int, now: float, limit: int | None
    ) -> Page:
        """Overloads among ``rows`` rows from ``start_row``: at most ``limit``, and the row
        to resume from (None at the end)."""
        n = self.table.n
        if start_row >= n:
            return [], None
        block = np.arange(start_row, min(start_row + rows, n))
        fit = self.predictor.fit(
            block, now, params, self.estimate.deltas(block, now), self.measure(block, now)
        )
        hits = np.flatnonzero(fit.sufficient & (fit.probability >= params.min_probability))
        resume: int | None = int(block[-1]) + 1 if block[-1] + 1 < n else None
        if limit is not None and len(hits) > limit:
            hits = hits[:limit]
            resume = int(block[hits[-1]]) + 1
        out = []
        for j in hits.tolist():
            r = int(block[j])
            p = self.predictor.prediction(self.table.ids[r], r, fit, j, now, params)
            self.metrics.record_prediction(p.will_overload)
            out.append(p)
        return out, resume

    def everything(
        self, params: PredictParams, clock: Callable[[], float]
    ) -> list[OverloadPrediction]:
        now = clock()
        out: list[OverloadPrediction] = []
        start: int | None = 0
        while start is not None:
            page, start = self.chunk(params, start, EVERYTHING_CHUNK_ROWS, now, None)
            out += page
        out.sort(key=lambda p: -(p.probability or 0.0))
        return out

    def steps(
        self,
        params: PredictParams,
        start_row: int,
        limit: int,
        budget_s: float,
        clock: Callable[[], float],
    ) -> Iterator[Page]:
        """Yields (found so far, resume row) after each chunk, so an async host can give
        its event loop a turn in between; stops at ``limit`` or after ``budget_s``."""
        deadline = time.monotonic() + budget_s
        now = clock()
        found: list[OverloadPrediction] = []
        row: int | None = start_row
        while row is not None and len(found) < limit:
            page, row = self.chunk(params, row, PAGE_CHUNK_ROWS, now, limit - len(found))
            found += page
            yield found, row
            if time.monotonic() >= deadline:
                return

    def page(
        self,
        params: PredictParams,
        start_row: int,
        limit: int,
        budget_s: float,
        clock: Callable[[], float],
    ) -> Page:
        out: Page = ([], start_row)
        for step in self.steps(params, start_row, limit, budget_s, clock):
            out = step
        return out
