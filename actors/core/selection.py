"""One shard's side of a selection: score the candidates, return enough for an exact merge.

The load dimension here is the *estimated* current load (``inflight``: the last report
plus the tasks assigned since, minus those completed since), so every path that scores an
agent (selection, ``scores``, the agent view) sees the same number.
"""

from __future__ import annotations

import numpy as np

from actors.core.inflight import InFlight
from actors.core.merge import Partial, shard_fetch_size, top_order
from actors.core.metadata import Labels
from actors.core.models import LOAD_CODE, NUM_DIMENSIONS, SelectRequest
from actors.core.signals import LiveSignals
from actors.core.table import AgentTable


class Scorer:
    """Effective dimension scores and routing scores, in-flight tasks applied."""

    def __init__(
        self, table: AgentTable, signals: LiveSignals, inflight: InFlight, labels: Labels
    ) -> None:
        self.table = table
        self.signals = signals
        self.inflight = inflight
        self.labels = labels

    def dims(self, rows: np.ndarray, now: float) -> np.ndarray:
        t = self.signals.dims(rows, now)
        delta = self.inflight.deltas(rows, now)
        if delta is not None:
            # Tasks since the report are known for sure: they shift the (decayed) load
            # score undecayed. Clipped so the dimension stays a score in [0, 1].
            np.clip(t[LOAD_CODE] - delta, 0.0, 1.0, out=t[LOAD_CODE])
        return t

    def known_dims(self, rows: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Dimension scores of rows from ``lookup``; unknown (-1) rows score 0.5."""
        known = rows >= 0
        if known.all():
            return known, self.dims(rows, now)
        dims = np.full((NUM_DIMENSIONS, len(rows)), 0.5)
        if known.any():
            dims[:, known] = self.dims(rows[known], now)
        return known, dims

    def all_scores(self, w: np.ndarray, now: float) -> np.ndarray:
        scores = self.signals.all_scores(w, now)
        rows, _ = self.inflight.with_deltas(now)
        if len(rows):
            scores[rows] = w @ self.dims(rows, now)
        return scores


def partial_select(
    scorer: Scorer, req: SelectRequest, w: np.ndarray, now: float, rng: np.random.Generator
) -> Partial:
    """This shard's candidates for a selection, enough for an exact global merge."""
    table, signals = scorer.table, scorer.signals
    if req.candidates is not None:
        cand = list(dict.fromkeys(req.candidates))
        if req.exclude:
            ex = set(req.exclude)
            cand = [c for c in cand if c not in ex]
        if req.require_labels:
            # An unknown candidate has no labels, so it cannot match.
            cand = [c for c in cand if scorer.labels.matches(c, req.require_labels)]
        rows = table.lookup(cand)
        if req.require_signals:
            keep = rows >= 0
            keep[keep] = signals.has_live(rows[keep], now)
            rows = rows[keep]
            cand = [c for c, kp in zip(cand, keep.tolist(), strict=True) if kp]
        known, dims = scorer.known_dims(rows, now)
        scores = w @ dims
        cand_ids: list[str] | None = cand
    else:
        cand_ids = None
        n = table.n
        rows = np.arange(n)
        scores = scorer.all_scores(w, now)
        mask = None
        if req.exclude:
            mask = np.ones(n, bool)
            mask[[r for r in map(table.index.get, req.exclude) if r is not None]] = False
        if req.require_signals:
            live = signals.has_live(slice(0, n), now)
            mask = live if mask is None else mask & live
        if req.require_labels:
            matching = np.zeros(n, bool)
            matching[[table.index[a] for a in scorer.labels.matching(req.require_labels)]] = True
            mask = matching if mask is None else mask & matching
        if mask is not None:
            rows = np.flatnonzero(mask)
            scores = scores[rows]
        known = np.ones(len(rows), bool)
        dims = None
    considered = len(scores)
    ok = np.flatnonzero(scores >= req.min_score) if req.min_score is not None else None
    elig_scores = scores if ok is None else scores[ok]
    fetch = shard_fetch_size(req)
    if req.strategy == "p2c":
        pos = rng.permutation(len(elig_scores))[:fetch]
        keys = rng.random(len(pos))
    else:
        pos, keys = top_order(elig_scores, fetch, rng)
    if ok is not None:
        pos = ok[pos]
    sel_rows = rows[pos]
    sel_known = known[pos]
    if dims is not None:
        sel_dims = dims[:, pos].T
    else:
        sel_dims = scorer.dims(sel_rows, now).T if len(sel_rows) else np.empty((0, NUM_DIMENSIONS))
    ages = np.full(len(pos), np.nan)
    if sel_known.any():
        ages[sel_known] = signals.oldest_age(sel_rows[sel_known], now)
    ids = table.ids
    return Partial(
        [ids[r] for r in sel_rows.tolist()]
        if cand_ids is None
        else [cand_ids[i] for i in pos.tolist()],
        scores[pos],
        keys,
        np.ascontiguousarray(sel_dims),
        sel_known,
        considered,
        len(elig_scores),
        ages,
    )
