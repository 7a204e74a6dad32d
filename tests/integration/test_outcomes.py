"""What outcomes teach, through real actors: a fast-failing agent that looks idle stops
receiving tasks within its detection window, and comes back once it recovers."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator

import pytest

import actors
from actors.client.clients import RippleClient
from actors.core.config import ServiceConfig, ShardConfig

AGENTS = [f"worker-{i}" for i in range(6)]


@pytest.fixture(scope="module")
def client(ray_session, namespace) -> Iterator[RippleClient]:
    # Ejections and the memory of outcomes short enough for a test; the rest as a user
    # gets it.
    # (3 s of ejection: the first 60 tasks must fit in it on a loaded 2-core CI machine.)
    shard = ShardConfig(ejection_base_s=3.0, outcome_half_life_s=1.0)
    c = actors.deploy(ServiceConfig(namespace=namespace, num_shards=2, num_routers=2, shard=shard))
    yield c
    actors.teardown(namespace)


def route(
    client: RippleClient, tasks: int, failing: set[str], window: int = 1
) -> collections.Counter[str]:
    """Route ``tasks`` tasks with the default selection, ``window`` of them in flight at
    once (each completes when the window is full, oldest first); the agents in
    ``failing`` fail at once (5 ms), the others succeed in 20 ms."""
    sent: collections.Counter[str] = collections.Counter()
    running: collections.deque[tuple[str, str | None]] = collections.deque()

    def finish() -> None:
        agent, aid = running.popleft()
        bad = agent in failing
        client.complete(agent, aid, ok=not bad, duration_s=0.005 if bad else 0.02)

    for _ in range(tasks):
        pick = client.select().selected[0]
        sent[pick.agent_id] += 1
        running.append((pick.agent_id, pick.assignment_id))
        if len(running) >= window:
            finish()
    while running:
        finish()
    return sent


def test_a_black_hole_is_ejected_within_its_window_and_returns_after_it_recovers(
    client,
) -> None:
    for a in AGENTS:
        client.describe(a, max_concurrency=2)
    # The failing agent reports itself idle; the others half busy.
    client.register(
        [{"agent_id": a, "signal_type": "LOAD", "value": 0.5, "ttl_s": 600} for a in AGENTS[1:]]
        + [{"agent_id": AGENTS[0], "signal_type": "LOAD", "value": 0.0, "ttl_s": 600}]
    )
    failing = {AGENTS[0]}
    first = route(client, 60, failing)
    # It stops getting work within its detection window: its measured success rate makes
    # it the costliest agent per successful task, and five failures in a row eject it.
    assert first[AGENTS[0]] <= 5, first
    view = client.agent(AGENTS[0])
    assert view.success_rate == 0.0 and view.health in ("healthy", "ejected"), view
    later = route(client, 60, failing)
    # Still failing: at most a probe (or a retry once its failures are old), which fails.
    assert later[AGENTS[0]] <= 2, later
    # It recovers; once its ejection ends and its failures fade, it is tried again, and
    # under load it is back in
    # rotation: its measured success rate, still low, costs it some share, not all.
    # (Six tasks in flight: the seven free slots the declared concurrency leaves, since
    # the others report one task each, fit them; admission refuses beyond.)
    time.sleep((client.agent(AGENTS[0]).ejected_for_s or 0.0) + 3.0)
    back = route(client, 120, set(), window=6)
    assert back[AGENTS[0]] >= 10, back
    assert client.agent(AGENTS[0]).health == "healthy"
    # Every pick says its health and predicted time.
    pick = client.select().selected[0]
    assert pick.health == "healthy" and pick.predicted_s is not None and pick.predicted_s > 0
