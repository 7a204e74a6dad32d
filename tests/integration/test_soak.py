"""Soak: agents come and go for a minute; the shards' state and memory must stay flat.

Marked ``slow`` (outside CI): ``python -m pytest -m slow``. Bounded in time and count.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import actors
from actors.core.config import ServiceConfig, ShardConfig

SOAK_S = 60.0
AGENTS_PER_WAVE = 2_000


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_churn_keeps_state_and_memory_bounded(ray_session, namespace) -> None:
    import ray

    shard = ShardConfig(sweep_interval_s=0.5, history_retention_s=1.0)
    client = actors.deploy(ServiceConfig(namespace=namespace, num_shards=2, shard=shard))
    try:
        rng = np.random.default_rng(0)
        peak_agents, rss = 0, []
        deadline = time.monotonic() + SOAK_S
        wave = 0
        while time.monotonic() < deadline and wave < 10_000:
            ids = [f"w{wave}-a{i}" for i in range(AGENTS_PER_WAVE)]
            res = client.register_arrays(
                ids, np.zeros(len(ids), int), rng.random(len(ids)), ttls_s=np.full(len(ids), 0.5)
            )
            assert res.accepted == len(ids)
            wave += 1
            time.sleep(0.25)
            if wave % 8 == 0:
                peak_agents = max(peak_agents, client.stats()["agents"])
                rss.append(
                    sum(
                        p["rss_bytes"]
                        for p in ray.get([h.ping.remote() for h in client.shard_handles])
                    )
                )
        created = wave * AGENTS_PER_WAVE
        # Live agents are the last ~2 s of waves, never everything ever created.
        assert created > 50_000
        assert peak_agents < 12 * AGENTS_PER_WAVE, (peak_agents, created)
        # Memory after warm-up stays within 25% of its first reading.
        settled = rss[len(rss) // 3 :]
        assert max(settled) < 1.25 * settled[0], rss
    finally:
        actors.teardown(namespace)
