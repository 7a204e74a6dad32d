"""Ripple's Serve request router against Serve's default power-of-two router.

python -m load serve-router [--smoke] [--json PATH] [--requests N] [--rate R]

One deployment, three replicas, one of them ``--slow-factor`` times slower per request
(each replica serves one request at a time; the rest wait in its queue, as a model server
with one GPU would). The same Poisson arrival times (same seed) go through a handle whose
deployment uses Serve's default router, then one that uses ``RippleRequestRouter``, in the
same run. Reported: mean and p95 latency, each replica's share of the requests, and the
slow replica's capacity share, which an ideal router would not exceed by much.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from load.common import Report, base_parser, ray_session

APP_DEFAULT = "router-default"
APP_RIPPLE = "router-ripple"
ROUTER_PATH = "serve.request_router:RippleRequestRouter"


def make_worker(base_s: float, slow_factor: float) -> Any:
    from ray import serve

    @serve.deployment(num_replicas=3, max_ongoing_requests=16, ray_actor_options={"num_cpus": 0.01})
    class Worker:
        def __init__(self) -> None:
            self.rank = serve.get_replica_context().rank.rank
            self.service_s = base_s * (slow_factor if self.rank == 0 else 1.0)
            self.lock = asyncio.Lock()

        async def __call__(self, _: Any = None) -> int:
            async with self.lock:  # one request at a time, like one accelerator
                await asyncio.sleep(self.service_s)
            return self.rank

    return Worker


async def _drive(handle: Any, arrivals_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Send at the given offsets; latency of each success and the rank that served it."""
    lat = np.full(len(arrivals_s), np.nan)
    rank = np.full(len(arrivals_s), -1)

    async def one(i: int, t0: float) -> None:
        delay = t0 + arrivals_s[i] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = time.perf_counter()
        try:
            rank[i] = await handle.remote()
            lat[i] = time.perf_counter() - sent
        except Exception:  # counted as an error, never as a latency
            pass

    start = time.perf_counter()
    await asyncio.gather(*(one(i, start) for i in range(len(arrivals_s))))
    errors = int(np.isnan(lat).sum())
    return lat, rank, errors


def summarise(lat: np.ndarray, rank: np.ndarray, errors: int) -> dict[str, Any]:
    ok = ~np.isnan(lat)
    served = rank[ok]
    return {
        "requests": len(lat),
        "succeeded": int(ok.sum()),
        "errors": errors,
        "mean_ms": float(lat[ok].mean() * 1e3),
        "p95_ms": float(np.percentile(lat[ok], 95) * 1e3),
        "share": {r: float((served == r).mean()) for r in range(3)},
    }


def compare(
    namespace: str,
    requests: int = 700,
    rate_per_s: float = 70.0,
    base_s: float = 0.02,
    slow_factor: float = 4.0,
    seed: int = 1,
    warmup: int = 40,
    apps: tuple[str, ...] = (APP_DEFAULT, APP_RIPPLE),
) -> dict[str, Any]:
    """Run the routers of ``apps`` on the same arrivals; Serve and Ripple (``namespace``)
    must be up."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    worker = make_worker(base_s, slow_factor)
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate_per_s, requests))
    warm = np.arange(warmup) * (2.0 / rate_per_s)
    capacity = np.array([1.0 / slow_factor, 1.0, 1.0])
    out: dict[str, Any] = {
        "params": {
            "requests": requests,
            "rate_per_s": rate_per_s,
            "base_s": base_s,
            "slow_factor": slow_factor,
            "seed": seed,
            "utilisation": rate_per_s * base_s / capacity.sum(),
        },
        "slow_capacity_share": float(capacity[0] / capacity.sum()),
    }
    # Keyword arguments through a dict: Ray's pydantic-v1 shim confuses mypy's plugin.
    ripple_router: dict[str, Any] = {
        "request_router_class": ROUTER_PATH,
        "request_router_kwargs": {"namespace": namespace, "seed": seed},
    }
    routers = {APP_DEFAULT: None, APP_RIPPLE: RequestRouterConfig(**ripple_router)}
    for app in apps:
        config = routers[app]
        dep = worker if config is None else worker.options(request_router_config=config)
        handle = serve.run(dep.bind(), name=app, route_prefix=f"/{app}")
        try:
            asyncio.run(_drive(handle, warm))
            out[app] = summarise(*asyncio.run(_drive(handle, arrivals)))
        finally:
            serve.delete(app)
    return out


def main(argv: list[str] | None = None) -> Report:
    from ray import serve

    import actors
    from actors.core.config import ServiceConfig

    parser = base_parser(__doc__ or "")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=70.0)
    parser.add_argument("--slow-factor", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    n = 150 if args.smoke else args.requests
    namespace = "ripple-bench-serve-router"
    with ray_session():
        try:
            actors.deploy(ServiceConfig(namespace=namespace, num_shards=1, num_routers=1))
            serve.start()
            out = compare(namespace, n, args.rate, slow_factor=args.slow_factor, seed=args.seed)
        finally:
            serve.shutdown()
            actors.teardown(namespace)
    report = Report("serve-router", {**out["params"], "smoke": args.smoke})
    d, r = out[APP_DEFAULT], out[APP_RIPPLE]
    report.add("mean latency, ripple", r["mean_ms"], "ms", ceiling=d["mean_ms"], target="≤ default")
    report.add("p95 latency, ripple", r["p95_ms"], "ms", ceiling=d["p95_ms"])
    slow_target = f"≤ {100 * out['slow_capacity_share'] + 5:.1f} %"
    report.add(
        "slow replica share, ripple",
        100 * r["share"][0],
        "%",
        ceiling=100 * d["share"][0],
        target=slow_target,
    )
    for name, res in ((APP_DEFAULT, d), (APP_RIPPLE, r)):
        print(f"{name}: {res}")
    report.finish(args.json, {"runs": out})
    return report
