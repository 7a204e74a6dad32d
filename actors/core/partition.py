"""Stable agent -> shard mapping. Every process must agree, so never Python's salted hash()."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xxhash


def shard_of(agent_id: str, num_shards: int) -> int:
    return xxhash.xxh64_intdigest(agent_id.encode()) % num_shards


OWNER_CACHE_MAX = 1_000_000


def owners(
    agent_ids: Sequence[Any], num_shards: int, cache: dict[str, int] | None = None
) -> np.ndarray:
    """Owning shard of each id. Non-string ids go to shard 0, which rejects them with a
    proper field error rather than failing the whole batch here.

    ``cache`` (agent -> shard) spares a long-lived client the hash of ids it has seen; it
    is cleared when it passes ``OWNER_CACHE_MAX`` so a fleet with churn cannot grow it.
    """
    if num_shards == 1:
        return np.zeros(len(agent_ids), np.int64)
    cache = {} if cache is None else cache
    if len(cache) > OWNER_CACHE_MAX:
        cache.clear()
    get = cache.get
    try:
        found = [get(a) for a in agent_ids]
    except TypeError:  # an unhashable id
        found = [get(a) if isinstance(a, str) else 0 for a in agent_ids]
    if None in found:
        for i, a in enumerate(agent_ids):
            if found[i] is None:
                found[i] = cache[a] = shard_of(a, num_shards) if isinstance(a, str) else 0
    return np.array(found, dtype=np.int64)


def partition(
    agent_ids: Sequence[Any], num_shards: int, cache: dict[str, int] | None = None
) -> list[np.ndarray]:
    """Positions of ``agent_ids`` owned by each shard, in input order within a shard."""
    if num_shards == 1:
        return [np.arange(len(agent_ids))]
    order = np.argsort(owned := owners(agent_ids, num_shards, cache), kind="stable")
    owners_sorted = owned[order]
    bounds = np.searchsorted(owners_sorted, np.arange(num_shards + 1))
    return [order[bounds[s] : bounds[s + 1]] for s in range(num_shards)]
