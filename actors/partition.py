"""Stable agent -> shard mapping. Every process must agree, so never Python's salted hash()."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xxhash


def shard_of(agent_id: str, num_shards: int) -> int:
    return xxhash.xxh64_intdigest(agent_id.encode()) % num_shards


def partition(agent_ids: Sequence[Any], num_shards: int) -> list[np.ndarray]:
    """Positions of ``agent_ids`` owned by each shard. Non-string ids go to shard 0, which
    rejects them with a proper field error rather than failing the whole batch here."""
    if num_shards == 1:
        return [np.arange(len(agent_ids))]
    h = xxhash.xxh64_intdigest
    owners = np.fromiter(
        (h(a.encode()) % num_shards if isinstance(a, str) else 0 for a in agent_ids),
        np.int64,
        len(agent_ids),
    )
    order = np.argsort(owners, kind="stable")
    bounds = np.searchsorted(owners[order], np.arange(num_shards + 1))
    return [order[bounds[s] : bounds[s + 1]] for s in range(num_shards)]
