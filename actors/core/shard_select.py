"""One shard's answer to a selection: its candidates after the filters (labels, exclude,
require_signals, health, headroom, ``min_score``), ranked by the ``Scorer``, and enough of
them (with the affinity candidates of a keyed request) for the router's merge to be exact
(``merge``). Split from ``selection`` (how agents are scored and ranked): this module is
what is filtered and what travels.
"""

from __future__ import annotations

import numpy as np

from actors.core.affinity import AffinityAnswer
from actors.core.merge import Partial, shard_fetch_size, top_order
from actors.core.models import NUM_DIMENSIONS, SelectRequest
from actors.core.selection import Scorer


def _candidate_rows(
    scorer: Scorer, req: SelectRequest, now: float
) -> tuple[np.ndarray, list[str] | None]:
    """Rows (-1: unknown candidate) after exclude, labels and require_signals, and the
    candidate ids when the request named them."""
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
        return rows, cand
    n = table.n
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
    return (np.arange(n) if mask is None else np.flatnonzero(mask)), None


def partial_select(
    scorer: Scorer, req: SelectRequest, w: np.ndarray, now: float, rng: np.random.Generator
) -> Partial:
    """This shard's candidates for a selection, enough for an exact global merge."""
    rows, cand_ids = _candidate_rows(scorer, req, now)
    considered = len(rows)
    asked = scorer.table.n if req.candidates is None else len(set(req.candidates))
    in_time = req.strategy == "balanced" or req.deadline_s is not None
    dims: np.ndarray | None = None
    tasks: np.ndarray | None = None
    scores: np.ndarray | None = None
    # The tasks each candidate holds, once, for whatever needs them: ranking in time,
    # headroom, and an affinity key's bound.
    want_tasks = in_time or req.affinity_key is not None
    if cand_ids is not None or in_time:
        known, dims, tasks = scorer.known_dims(rows, now, tasks=want_tasks)
        if not in_time or req.min_score is not None:  # else only the picks' are needed
            scores = w @ dims
    else:
        known = np.ones(len(rows), bool)
        scores = scorer.all_scores(w, now)
        if len(rows) != scorer.table.n:
            scores = scores[rows]
        if want_tasks:
            tasks = scorer.estimate.tasks(rows, now)
    blocked = scorer.blocked(rows, now)
    # Health first (all blocked: a panic, route to all, unless another shard has a healthy
    # candidate: ``merge.confine_panics``), then headroom: an assigning selection takes
    # only agents with a free slot; none left is a saturated answer.
    drop = blocked if blocked is not None and not blocked.all() else None
    panic = blocked is not None and drop is None and len(rows) > 0
    blocked_n = 0 if drop is None else int(drop.sum())
    # An affinity bound is relative to the mean load of every eligible agent, full or not.
    fleet = None
    if tasks is not None and req.affinity_key is not None:
        eligible = known if drop is None else known & ~drop
        fleet = (float(tasks[eligible].sum()), int(eligible.sum()))
    full_n, free_in_s = 0, float("inf")
    if req.assign:
        sub = rows if drop is None else rows[~drop]
        held = None if tasks is None or drop is None else tasks[~drop]
        full = scorer.full(sub, now, tasks if drop is None else held)
        if full is not None:
            full_n = int(full.sum())
            if full.all():  # a saturated answer: say when a slot should free
                free_in_s = scorer.free_in_s(sub[full], now)
            if drop is None:
                drop = full
            else:
                drop = drop.copy()
                drop[np.flatnonzero(~drop)[full]] = True
    kept: np.ndarray | None = None  # positions in ``cand_ids`` of the rows still in
    if drop is not None:
        keep = np.flatnonzero(~drop)
        rows, known = rows[keep], known[keep]
        scores = None if scores is None else scores[keep]
        dims = None if dims is None else dims.take(keep, axis=1)
        tasks = None if tasks is None else tasks[keep]
        # The named ids are mapped through ``keep`` for the few picks only, at the end.
        kept = keep
    ok = None
    if req.min_score is not None:
        assert scores is not None
        ok = np.flatnonzero(scores >= req.min_score)
    predicted = None
    if in_time:
        assert dims is not None
        predicted = scorer.predicted(rows, dims, now, tasks)
        ranks = scorer.ranks(req, rows, dims, w, predicted, now)
    else:
        assert scores is not None
        ranks = scores
    elig = ranks if ok is None else ranks[ok]
    fetch = shard_fetch_size(req)
    if req.strategy == "p2c":
        pos = rng.permutation(len(elig))[:fetch]
        keys = rng.random(len(pos))
    else:
        pos, keys = top_order(elig, fetch, rng)
    if ok is not None:
        pos = ok[pos]
    answer = None
    if fleet is not None and tasks is not None and scorer.affinity is not None:
        # The key's agents travel with the shard's best, so the merge can pick them.
        assert req.affinity_key is not None
        answer, extra = _affinity(scorer, req.affinity_key, rows, known, tasks, ok, fleet)
        extra = extra[~np.isin(extra, pos)]
        if len(extra):
            pos = np.concatenate([pos, extra])
            keys = np.concatenate([keys, rng.random(len(extra))])
    sel_rows = rows[pos]
    sel_known = known[pos]
    if dims is not None:
        sel_dims = dims.take(pos, axis=1)
    elif len(sel_rows):
        sel_dims = scorer.dims(sel_rows, now)
    else:
        sel_dims = np.empty((NUM_DIMENSIONS, 0))
    sel_pred = (
        predicted[pos] if predicted is not None else scorer.predicted(sel_rows, sel_dims, now)
    )
    ages = np.full(len(pos), np.nan)
    if sel_known.any():
        ages[sel_known] = scorer.signals.oldest_age(sel_rows[sel_known], now)
    ids = scorer.table.ids
    return Partial(
        [ids[r] for r in sel_rows.tolist()]
        if cand_ids is None
        else [cand_ids[i] for i in (pos if kept is None else kept[pos]).tolist()],
        w @ sel_dims if scores is None else scores[pos],
        keys,
        np.ascontiguousarray(sel_dims.T),
        sel_known,
        considered,
        len(elig),
        ages,
        ranks[pos],
        sel_pred,
        scorer.health_of(sel_rows, now),
        full_n,
        free_in_s,
        max(asked - considered, 0),
        blocked_n,
        answer,
        panic,
    )


def _affinity(
    scorer: Scorer,
    key: str,
    rows: np.ndarray,
    known: np.ndarray,
    tasks: np.ndarray,
    ok: np.ndarray | None,
    fleet: tuple[float, int],
) -> tuple[AffinityAnswer, np.ndarray]:
    """This shard's affinity answer over its candidates (those with headroom, when it
    assigns), and the positions (into ``rows``) of the agents it names. ``fleet``: the
    tasks held by every eligible agent and how many, full ones included (the bound's)."""
    assert scorer.affinity is not None
    base = np.arange(len(rows)) if ok is None else ok
    base = base[known[base]]
    r = rows[base]
    cfg = scorer.cfg
    answer = scorer.affinity.answer(
        key, r, tasks[base], cfg.affinity_candidates, cfg.affinity_max_load_ratio, fleet
    )
    index = scorer.table.index
    named = answer.ids + ([answer.sticky[0]] if answer.sticky is not None else [])
    return answer, base[np.isin(r, [index[a] for a in named])]
