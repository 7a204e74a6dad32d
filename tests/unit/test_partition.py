"""The stable agent -> shard map shared by the client and the router."""

from __future__ import annotations

import numpy as np

from actors.core.partition import owners, partition, shard_of


def test_partition_is_stable_complete_and_ordered() -> None:
    ids = [f"agent-{i}" for i in range(500)] + [42, ["not", "hashable"]]  # type: ignore[list-item]
    cache: dict[str, int] = {}
    parts = partition(ids, 4, cache)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(ids)))
    for s, pos in enumerate(parts):
        assert pos.tolist() == sorted(pos.tolist())  # input order within a shard
        assert all(shard_of(ids[i], 4) == s for i in pos.tolist() if isinstance(ids[i], str))
    assert {500, 501} <= set(parts[0].tolist())  # non-string ids go to shard 0 to be rejected
    assert len(cache) == 500
    assert owners(ids[:500], 4, cache).tolist() == owners(ids[:500], 4).tolist()
    assert [p.tolist() for p in partition(ids[:3], 1)] == [[0, 1, 2]]
