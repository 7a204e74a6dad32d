"""Ripple as a LiteLLM routing strategy: offline (``mock_response``), real Ripple actors."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

import actors
from actors.client.clients import RippleClient, connect_async
from actors.core.config import ServiceConfig

# LiteLLM fetches its price list from GitHub on import unless told not to: tests send
# nothing beyond loopback.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm")

from load.litellm_router import (  # noqa: E402
    failover_models,
    make_router,
    quick_recovery,
    send,
    slow_models,
)
from serve.litellm_strategy import RippleRoutingStrategy  # noqa: E402


@pytest.fixture(scope="module")
def client(ray_session, namespace) -> Iterator[RippleClient]:
    # Ejections short enough for a test: LiteLLM's cool-down logic is Ripple's core's now.
    shard = quick_recovery()
    c = actors.deploy(ServiceConfig(namespace=namespace, num_shards=2, num_routers=1, shard=shard))
    yield c
    actors.teardown(namespace)


def detach(strategy: RippleRoutingStrategy) -> None:
    litellm.callbacks = [cb for cb in litellm.callbacks if cb is not strategy]


def test_traffic_leaves_a_failing_deployment_and_returns_after_it_recovers(
    client, namespace
) -> None:
    # Each deployment runs two calls at once (LiteLLM's max_parallel_requests, which Ripple
    # takes as its max_concurrency); six at a time need all three, and while c is out the
    # calls wait for a slot on a or b (wait_s). Without a limit the mock deployments run any
    # number of calls in the same time, and Ripple, having measured that, may give one of
    # them every call: nothing would then depend on c coming back.
    models = failover_models(max_parallel_requests=2)
    router = make_router(models, None)
    strategy = RippleRoutingStrategy.attach(router, connect_async(namespace), seed=1, wait_s=5.0)
    # LiteLLM reports an outcome after the caller has its answer: each caller waits for
    # the reports, so what is tested is the routing, not how soon this machine ran them.
    reported = lambda: strategy.outcomes_reported  # noqa: E731
    try:

        async def scenario() -> tuple[dict, dict, int]:
            failing = await send(router, 60, concurrency=6, reported=reported)
            view = client.agent("litellm:gpt:c")
            # Past the ejection, whatever it grew to (1.5 s, doubled per failed probe).
            models[2]["litellm_params"]["mock_response"] = "c"
            router.set_model_list(models)
            await asyncio.sleep((view.ejected_for_s or 0.0) + 0.1)
            recovered = await send(router, 60, concurrency=6, reported=reported)
            return failing["served"], recovered["served"], view.ejections

        failing, recovered, ejections = asyncio.run(scenario())
    finally:
        detach(strategy)
    assert sum(failing.values()) == 60 and failing["c"] == 0, failing
    # While c fails it is tried at first: three failures in a row eject it, and at most one
    # other call was running on it when the third was reported. After that it gets one
    # probe per ejection that ends while the 60 calls run (how many depends on this
    # machine's speed: each ejection after the first followed a failed probe).
    assert ejections >= 1, failing
    assert failing["error"] <= 3 + 1 + (ejections - 1), (failing, ejections)
    # Once it answers again it is back in rotation: it starts probing, one call at a time,
    # then takes its share (a third).
    assert recovered["error"] == 0, recovered
    assert recovered["c"] >= 10, recovered
    assert strategy.picks_by_ripple == 120 and strategy.picks_by_fallback == 0
    assert strategy.picks_saturated == 0
    assert strategy.outcomes_reported == 120 and strategy.outcomes_lost == 0
    # Ripple saw the deployments, their outcomes and their labels.
    view = client.agent("litellm:gpt:c")
    assert view.labels == {"source": "litellm", "model_group": "gpt"}
    assert view.health == "healthy" and view.ejections >= 1 and view.success_rate is not None


def test_a_slow_deployment_gets_less_traffic(client, namespace) -> None:
    router = make_router(slow_models(), None)
    strategy = RippleRoutingStrategy.attach(router, connect_async(namespace), seed=2)
    try:
        served = asyncio.run(send(router, 90, concurrency=6))["served"]
    finally:
        detach(strategy)
    assert served["error"] == 0
    # Six times slower per call: an even split would give it a third.
    assert served["slow"] <= 0.2 * 90, served


def test_picks_fall_back_to_shuffle_when_ripple_is_gone(ray_session) -> None:
    namespace = "ripple-test-litellm-gone"
    actors.deploy(ServiceConfig(namespace=namespace, num_shards=1, num_routers=1))
    ripple = connect_async(namespace)
    actors.teardown(namespace)
    router = make_router(slow_models(), None)
    strategy = RippleRoutingStrategy.attach(router, ripple, seed=3)
    try:
        served = asyncio.run(send(router, 9, concurrency=3))["served"]
    finally:
        detach(strategy)
    assert served["error"] == 0 and sum(served.values()) == 9
    assert strategy.picks_by_fallback == 9 and strategy.picks_by_ripple == 0


def test_a_saturated_group_raises_litellms_rate_limit_error(client, namespace) -> None:
    from load.litellm_router import deployment

    # Two deployments of one call at a time, 0.3 s per call; four calls at once.
    models = [deployment(d, 0.3, max_parallel_requests=1, mock_response=d) for d in ("p", "q")]
    router = make_router(models, None)
    strategy = RippleRoutingStrategy.attach(router, connect_async(namespace), seed=4)

    async def call(**kw: object) -> str:
        try:
            r = await router.acompletion(
                model="gpt", messages=[{"role": "user", "content": "hi"}], **kw
            )
            return str(r.choices[0].message.content)
        except litellm.RateLimitError:
            return "429"

    async def scenario() -> tuple[list[str], list[str]]:
        now = await asyncio.gather(*(call(metadata={"tenant": "t"}) for _ in range(4)))
        await asyncio.sleep(0.5)
        # Waiting up to 2 s, every call is served as the deployments free.
        waited = await asyncio.gather(*(call(metadata={"wait_s": 2}) for _ in range(4)))
        return list(now), list(waited)

    try:
        now, waited = asyncio.run(scenario())
    finally:
        detach(strategy)
    assert sorted(now) == ["429", "429", "p", "q"], now
    assert sorted(waited) == ["p", "p", "q", "q"], waited
    assert strategy.picks_saturated == 2 and strategy.picks_by_fallback == 0
