"""Top-k with random tie-breaking, and the merge of per-shard partial answers.

Every candidate carries a uniform random key ``u``; order is (score desc, u desc). Because
the keys are i.i.d. across all agents, ties break uniformly at random, and merging
per-shard top-k lists by the same key gives exactly what one shard holding every agent
would give. A single shard answers through the same ``merge_partials`` as the router, so
the two paths cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from actors.core.affinity import AffinityAnswer, Outcome, decide
from actors.core.health import HEALTH_STATES
from actors.core.models import DIMENSIONS, SelectedAgent, SelectRequest, SelectResult


@dataclass
class Partial:
    """One shard's contribution to a selection: candidates in the shard's preferred order."""

    agent_ids: list[str]
    scores: np.ndarray  # routing score per candidate
    keys: np.ndarray  # uniform random tie-break keys
    dims: np.ndarray  # (len, 6) per-dimension effective scores
    known: np.ndarray  # bool
    considered: int  # candidates scored after exclude / require_signals
    eligible: int  # candidates also passing min_score (the population p2c samples from)
    max_signal_age_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    # The order key (higher first): the score, or for balanced and deadlines a rank in
    # time (``selection``); the predicted completion time and health code of each.
    ranks: np.ndarray = field(default_factory=lambda: np.empty(0))
    predicted_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    health: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8))
    # Assigning selections: candidates passed over for want of headroom, and when the
    # soonest of them is predicted to free a slot (the Retry-After of a refusal).
    full: int = 0
    free_in_s: float = float("inf")
    # For decision records: candidates removed by labels, exclude and require_signals,
    # and by health (ejected, or probing with its probe out).
    filtered: int = 0
    blocked: int = 0
    affinity: AffinityAnswer | None = None  # with an affinity_key (``affinity``)
    # Every candidate of this shard was unhealthy, so it sent them all (a shard's panic);
    # the merge keeps them only if every other shard panicked too (``confine_panics``).
    panic: bool = False

    @classmethod
    def empty(cls) -> Partial:
        return cls(
            [], np.empty(0), np.empty(0), np.empty((0, len(DIMENSIONS))), np.empty(0, bool), 0, 0
        )

    def order_keys(self) -> np.ndarray:
        return self.ranks if len(self.ranks) == len(self.scores) else self.scores


def top_order(
    scores: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the top ``k`` by (score, random key), best first, and their keys.

    Only the candidates tied with or above the k-th score draw keys, so a top-10 of a
    million agents costs one partition, not a million random numbers.
    """
    n = len(scores)
    if n == 0 or k <= 0:
        return np.empty(0, np.int64), np.empty(0)
    if k == 1:  # the common "give me the best agent": one pass, no sort
        best = np.flatnonzero(scores == scores.max())
        pick = best[rng.integers(len(best))] if len(best) > 1 else best[0]
        # The winner's key is the max of len(best) uniforms, as the general path would draw.
        return np.array([pick]), np.array([rng.random() ** (1.0 / len(best))])
    if k < n:
        kth = np.partition(scores, n - k)[n - k]
        pool = np.flatnonzero(scores >= kth)
    else:
        pool = np.arange(n)
    keys = rng.random(len(pool))
    order = np.lexsort((-keys, -scores[pool]))[:k]
    return pool[order], keys[order]


def merge_order(scores: np.ndarray, keys: np.ndarray) -> np.ndarray:
    return np.lexsort((-keys, -scores))


def concat(parts: list[Partial]) -> Partial:
    if not parts:  # an empty candidate list asks no shard at all
        return Partial.empty()
    if len(parts) == 1:
        return parts[0]
    return Partial(
        agent_ids=[a for p in parts for a in p.agent_ids],
        scores=np.concatenate([p.scores for p in parts]),
        keys=np.concatenate([p.keys for p in parts]),
        dims=np.concatenate([p.dims for p in parts]).reshape(-1, len(DIMENSIONS)),
        known=np.concatenate([p.known for p in parts]),
        considered=sum(p.considered for p in parts),
        eligible=sum(p.eligible for p in parts),
        max_signal_age_s=np.concatenate([p.max_signal_age_s for p in parts]),
        ranks=np.concatenate([p.order_keys() for p in parts]),
        predicted_s=np.concatenate([_or_nan(p.predicted_s, len(p.scores)) for p in parts]),
        health=np.concatenate([_or_healthy(p.health, len(p.scores)) for p in parts]),
        full=sum(p.full for p in parts),
        free_in_s=min(p.free_in_s for p in parts),
        filtered=sum(p.filtered for p in parts),
        blocked=sum(p.blocked for p in parts),
    )


def _or_nan(a: np.ndarray, n: int) -> np.ndarray:
    return a if len(a) == n else np.full(n, np.nan)


def _or_healthy(a: np.ndarray, n: int) -> np.ndarray:
    return a if len(a) == n else np.zeros(n, np.int8)


def _interleave_samples(
    parts: list[Partial], total: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Merge per-shard uniform samples (without replacement) into one uniform sample.

    Each shard sent ``min(eligible, total)`` items in random order. Drawing the next item
    from shard ``s`` with probability remaining_s / remaining_all is exactly sequential
    sampling without replacement from the union.
    """
    remaining = np.array([p.eligible for p in parts], dtype=np.float64)
    taken = [0] * len(parts)
    out: list[tuple[int, int]] = []
    while len(out) < total and remaining.sum() > 0:
        s = int(rng.choice(len(parts), p=remaining / remaining.sum()))
        out.append((s, taken[s]))
        taken[s] += 1
        remaining[s] -= 1
    return out


def weighted_sample(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``min(k, len(weights))`` positions drawn without replacement, each draw in
    proportion to weight (Efraimidis-Spirakis keys). Zero weights are drawn last, at
    random, so the answer has ``k`` items however few weights are positive."""
    n = len(weights)
    if n == 0:
        return np.empty(0, np.int64)
    u = rng.random(n)
    with np.errstate(divide="ignore"):
        keys = np.where(weights > 0, np.log(u) / np.where(weights > 0, weights, 1.0), -np.inf)
    return np.lexsort((rng.random(n), keys))[::-1][:k]


def _p2c_winners(
    merged: Partial, parts: list[Partial], k: int, d: int, rng: np.random.Generator
) -> np.ndarray:
    """k power-of-d picks: each pick is the best of d candidates drawn at random from
    those not chosen yet. The shards sent uniform samples of up to k*d each; once fewer
    than d unseen remain (fewer than k*d eligible in all), a pick draws from every
    candidate not chosen yet, so k are returned whenever k are eligible."""
    offsets = np.cumsum([0] + [len(p.agent_ids) for p in parts])
    seq = [int(offsets[s] + i) for s, i in _interleave_samples(parts, k * d, rng)]
    chosen: list[int] = []
    pos = 0
    for _ in range(min(k, len(seq))):
        if pos + d <= len(seq):
            group = np.array(seq[pos : pos + d], np.int64)
            pos += d
        else:
            taken = set(chosen)
            rest = np.array([i for i in seq if i not in taken], np.int64)
            group = rest[rng.permutation(len(rest))[:d]]
        sc = merged.ranks[group]
        chosen.append(int(rng.choice(group[sc == sc.max()])))
    idx = np.array(chosen, dtype=np.int64)
    return idx[merge_order(merged.ranks[idx], merged.keys[idx])]


def balanced_picks(
    scores: np.ndarray, order: np.ndarray, k: int, tolerance: float, rng: np.random.Generator
) -> np.ndarray:
    """k picks, each uniformly at random among the remaining candidates whose score is
    within ``tolerance`` of the best remaining one. Several routers choosing at the same
    moment (before either's assignment is visible) then spread over the near-best agents
    instead of all taking the argmax; a clearly better agent is still always taken."""
    remaining = list(order.tolist())
    picks: list[int] = []
    for _ in range(min(k, len(remaining))):
        best = scores[remaining[0]]
        close = 1
        while close < len(remaining) and scores[remaining[close]] >= best - tolerance:
            close += 1
        picks.append(remaining.pop(int(rng.integers(close))))
    idx = np.array(picks, dtype=np.int64)
    return idx[merge_order(scores[idx], np.zeros(len(idx)))] if len(idx) > 1 else idx


def confine_panics(parts: list[Partial]) -> None:
    """A panic is the whole selection's, not a shard's: one shard whose candidates are
    all ejected sends them (it cannot know the others have healthy ones), but while any
    other shard had a healthy candidate, with headroom or not, the merge drops them, as
    one shard holding every agent would (an ejected agent alone on its shard would
    otherwise take the overflow whenever the healthy ones are full). In place: the
    router's saturation figures and decision records read these partials too."""
    if not any(p.panic for p in parts) or all(p.panic or not p.considered for p in parts):
        return
    for p in parts:
        if p.panic:
            n = len(p.agent_ids)
            p.agent_ids = []
            p.scores, p.keys, p.ranks = p.scores[:0], p.keys[:0], p.order_keys()[:0]
            p.dims, p.known = p.dims[:0], p.known[:0]
            p.max_signal_age_s, p.predicted_s = p.max_signal_age_s[:0], p.predicted_s[:0]
            p.health = p.health[:0]
            p.eligible, p.full, p.free_in_s = 0, 0, float("inf")
            p.blocked, p.panic, p.affinity = p.blocked + n, False, None


def merge_partials(
    parts: list[Partial],
    request: SelectRequest,
    rng: np.random.Generator,
    *,
    shards_answered: int = 1,
    shards_total: int = 1,
) -> tuple[SelectResult, Partial]:
    """Turn shard partials into the final answer (also used by a lone shard)."""
    k = request.k
    confine_panics(parts)
    merged = concat(parts)
    merged.ranks = merged.order_keys()
    ranks = merged.ranks
    if request.strategy == "p2c":
        idx = _p2c_winners(merged, parts, k, request.p2c_choices, rng)
    else:
        # A lone partial is already in (score, key) order; only a real merge needs a sort.
        order = merge_order(ranks, merged.keys) if len(parts) > 1 else np.arange(len(ranks))
        if request.strategy == "best":
            idx = order[:k]
        elif request.strategy == "balanced":
            idx = balanced_picks(ranks, order, k, request.balanced_tolerance, rng)
        else:  # weighted: sample k from the global top pool, proportional to score
            pool = order[: max(k, request.weighted_pool)]
            idx = pool[weighted_sample(merged.scores[pool], k, rng)]
            idx = idx[merge_order(merged.scores[idx], merged.keys[idx])]
    outcome: Outcome | None = None
    if request.affinity_key is not None:
        answers = [p.affinity for p in parts if p.affinity is not None]
        limit = max((p.affinity.limit for p in parts if p.affinity is not None), default=1)
        pick, outcome = decide(answers, limit)
        if pick is not None:  # the key's agent first, then the strategy's others
            at = merged.agent_ids.index(pick.agent_id)
            idx = np.concatenate([[at], idx[idx != at]])[: max(k, 1)].astype(np.int64)
    predicted = _or_nan(merged.predicted_s, len(merged.scores))
    health = _or_healthy(merged.health, len(merged.scores))
    deadline = request.deadline_s
    # Validating constructors, not model_construct: pydantic-core builds these in Rust,
    # faster than model_construct's Python loop over the fields (3 against 5 µs each).
    selected = [
        SelectedAgent(
            agent_id=merged.agent_ids[i],
            score=float(merged.scores[i]),
            scores=dict(zip(DIMENSIONS, merged.dims[i].tolist(), strict=True)),
            known=bool(merged.known[i]),
            assignment_id=None,
            predicted_s=None if np.isnan(predicted[i]) else float(predicted[i]),
            health=HEALTH_STATES[int(health[i])],
            deadline_at_risk=None if deadline is None else bool(predicted[i] > deadline),
        )
        for i in idx.tolist()
    ]
    result = SelectResult(
        selected=selected,
        considered=sum(p.considered for p in parts),
        shards_answered=shards_answered,
        shards_total=shards_total,
        degraded=shards_answered < shards_total,
        strategy=request.strategy,
        affinity=outcome,
    )
    ages = (
        merged.max_signal_age_s[idx]
        if len(merged.max_signal_age_s) == len(merged.agent_ids)
        else np.empty(0)
    )
    return result, Partial(
        [merged.agent_ids[i] for i in idx.tolist()],
        merged.scores[idx],
        merged.keys[idx],
        merged.dims[idx],
        merged.known[idx],
        0,
        0,
        ages,
        ranks[idx],
        predicted[idx],
        health[idx],
    )


def shard_fetch_size(request: SelectRequest) -> int:
    """How many candidates a shard must return for the merge to be exact."""
    if request.strategy == "p2c":
        return request.k * request.p2c_choices
    if request.strategy == "weighted":
        return max(request.k, request.weighted_pool)
    if request.strategy == "balanced":
        return max(request.k, request.balanced_pool)
    return request.k
