"""Ripple's LiteLLM routing strategy against LiteLLM's own strategies, offline.

python -m load litellm [--smoke] [--json PATH] [--requests N]

Three deployments of one model group, answered by LiteLLM's ``mock_response`` (no network):
- failover: ``c`` fails (a mock 500) for the first half of the calls, then recovers;
- slow: ``slow`` takes 6x as long per call as the other two.
Each strategy gets the same calls at the same concurrency. LiteLLM's strategies run with
their default cool-downs (their own protection against failing deployments); Ripple's runs
with LiteLLM's cool-downs off, so what it achieves is its own. No retries anywhere, so a
failed call is an error the user sees.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Callable
from typing import Any

from actors.core.config import ShardConfig
from load.common import Report, base_parser, ray_session

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-list download

FAIL = "litellm.InternalServerError"
PEERS = ("simple-shuffle", "least-busy", "latency-based-routing")


def deployment(dep_id: str, call_s: float, **params: Any) -> dict[str, Any]:
    """A mock deployment whose calls take ``call_s`` (real ones take time, so calls overlap
    and the load estimate matters)."""
    params = {"mock_delay": call_s, **params}
    return {
        "model_name": "gpt",
        "litellm_params": {"model": f"openai/{dep_id}", "api_key": "offline", **params},
        "model_info": {"id": dep_id},
    }


async def send(
    router: Any, n: int, concurrency: int, reported: Callable[[], int] | None = None
) -> dict[str, Any]:
    """n calls, ``concurrency`` at a time: which deployment answered each (or 'error'),
    and the latency of those that succeeded.

    LiteLLM runs its outcome callbacks after the caller has its answer. By default a caller
    gives them 10 ms, as a busy application would; with ``reported`` (the outcomes handed
    over so far) it waits, up to 2 s, until every call finished so far has been reported,
    so what is tested is the routing, not how soon this machine ran LiteLLM's callbacks."""
    import litellm

    served: collections.Counter[str] = collections.Counter()
    latency_s: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    finished = 0

    async def settle() -> None:
        if reported is None:
            await asyncio.sleep(0.01)
            return
        deadline = time.monotonic() + 2.0
        while reported() < finished and time.monotonic() < deadline:
            await asyncio.sleep(0.002)

    async def one() -> None:
        nonlocal finished
        async with gate:
            t0 = time.perf_counter()
            try:
                r = await router.acompletion(
                    model="gpt", messages=[{"role": "user", "content": "hi"}]
                )
                served[r.choices[0].message.content] += 1
                latency_s.append(time.perf_counter() - t0)
            except litellm.InternalServerError:
                served["error"] += 1
            finished += 1
            await settle()

    await asyncio.gather(*(one() for _ in range(n)))
    await asyncio.sleep(0.2)
    return {"served": served, "latency_s": latency_s}


def make_router(model_list: list[dict[str, Any]], strategy: str | None) -> Any:
    import litellm

    if strategy is None:  # Ripple picks; LiteLLM's own cool-downs off
        return litellm.Router(model_list=model_list, num_retries=0, disable_cooldowns=True)
    return litellm.Router(model_list=model_list, num_retries=0, routing_strategy=strategy)


async def failover(
    router: Any, n: int, concurrency: int, models: list[dict[str, Any]], recover_wait_s: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Half the calls while ``c`` fails, then ``c`` recovers, then the other half."""
    failing = await send(router, n // 2, concurrency)
    models[2]["litellm_params"]["mock_response"] = "c"
    router.set_model_list(models)
    await asyncio.sleep(recover_wait_s)
    recovered = await send(router, n - n // 2, concurrency)
    return failing, recovered


def failover_models(call_s: float = 0.05, **params: Any) -> list[dict[str, Any]]:
    """``a`` and ``b`` answer, ``c`` fails; ``params``: more LiteLLM parameters for all three."""
    return [
        deployment("a", call_s, mock_response="a", **params),
        deployment("b", call_s, mock_response="b", **params),
        deployment("c", call_s, mock_response=FAIL, **params),
    ]


def quick_recovery() -> ShardConfig:
    """Ejections as short as LiteLLM's cool-downs, and failures that fade as fast, so both
    recover within a run (the benchmark's and the integration tests')."""
    return ShardConfig(ejection_base_s=1.5, eject_after_failures=3, outcome_half_life_s=1.0)


def slow_models(call_s: float = 0.05) -> list[dict[str, Any]]:
    return [
        deployment("fast1", call_s, mock_response="fast1"),
        deployment("fast2", call_s, mock_response="fast2"),
        deployment("slow", call_s, mock_response="slow", mock_delay=6 * call_s),
    ]


def run_all(
    namespace: str, n: int, call_s: float, concurrency: int = 6, peers: tuple[str, ...] = PEERS
) -> dict[str, Any]:
    """Every strategy through both scenarios; Ripple (``namespace``) must be up."""
    import litellm

    from actors.client.clients import connect_async
    from serve.litellm_strategy import RippleRoutingStrategy

    out: dict[str, Any] = {}
    for name in ("ripple", *peers):
        models = failover_models(call_s)
        router = make_router(models, None if name == "ripple" else name)
        strategy = None
        if name == "ripple":
            strategy = RippleRoutingStrategy.attach(router, connect_async(namespace), seed=1)
        try:
            # The wait covers Ripple's ejection (1.5 s here) and LiteLLM's cool-down (5 s).
            failing, recovered = asyncio.run(failover(router, n, concurrency, models, 6.0))
            slow_router = make_router(slow_models(call_s), None if name == "ripple" else name)
            if name == "ripple":
                litellm.callbacks = [cb for cb in litellm.callbacks if cb is not strategy]
                strategy = RippleRoutingStrategy.attach(
                    slow_router, connect_async(namespace), seed=2
                )
            slow = asyncio.run(send(slow_router, n, concurrency))
        finally:
            if strategy is not None:
                litellm.callbacks = [cb for cb in litellm.callbacks if cb is not strategy]
        out[name] = {
            "failing": dict(failing["served"]),
            "recovered": dict(recovered["served"]),
            "slow": dict(slow["served"]),
            "slow_mean_ms": 1e3 * sum(slow["latency_s"]) / max(1, len(slow["latency_s"])),
        }
    return out


def main(argv: list[str] | None = None) -> Report:
    import actors
    from actors.core.config import ServiceConfig

    parser = base_parser(__doc__ or "")
    parser.add_argument("--requests", type=int, default=240)
    # Real LLM calls take seconds; 200 ms keeps the run short while Ripple's own cost per
    # pick (a few ms through the router actor) stays small beside a call, as it would be.
    parser.add_argument("--call-s", type=float, default=0.2)
    args = parser.parse_args(argv)
    n = 60 if args.smoke else args.requests
    namespace = "ripple-bench-litellm"
    with ray_session():
        try:
            shard = quick_recovery()
            actors.deploy(
                ServiceConfig(namespace=namespace, num_shards=1, num_routers=1, shard=shard)
            )
            # Smoke (CI): one peer is enough to show the script runs end to end.
            peers = PEERS[:1] if args.smoke else PEERS
            out = run_all(namespace, n, args.call_s, peers=peers)
        finally:
            actors.teardown(namespace)
    report = Report(
        "litellm", {"requests": n, "concurrency": 6, "call_s": args.call_s, "smoke": args.smoke}
    )
    half = n // 2
    for name, r in out.items():
        report.add(f"{name}: errors while c fails", r["failing"].get("error", 0), f"of {half}")
        report.add(
            f"{name}: c's share after it recovers",
            100 * r["recovered"].get("c", 0) / (n - half),
            "%",
        )
        report.add(f"{name}: slow deployment's share", 100 * r["slow"].get("slow", 0) / n, "%")
        report.add(f"{name}: mean latency, slow scenario", r["slow_mean_ms"], "ms")
    report.finish(args.json, {"runs": out})
    return report
