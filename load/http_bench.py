"""HTTP benchmark through Ray Serve, beside a null Serve endpoint measured in the same run.

    python -m load.http_bench --smoke          # CI size
    python -m load.http_bench --json results/http.json
    python -m load.http_bench --haproxy        # Serve's HAProxy ingress, not the default proxy

The null endpoint is a Serve deployment behind the same proxy that parses the same body
and answers at once: the ceiling for any endpoint on this machine.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx
import numpy as np

from load.common import Report, base_parser, percentiles_ms, section
from serve.auth import issue_token

AUTH_SECRET = "http-bench-secret-" + "x" * 32
AGENT_TOKEN = issue_token(AUTH_SECRET, "agent", ["agent-*"], ttl_s=3600)
NAMESPACE = "ripple-http-bench"


def start(port: int, shards: int) -> None:
    from ray import serve

    import actors
    from actors.cluster.deployment import ensure_ray
    from serve.app import build_app

    ensure_ray(None)
    actors.teardown(NAMESPACE)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        build_app(
            {"namespace": NAMESPACE, "num_shards": shards, "shard": {"sweep_interval_s": 60}}
        ),
        name="ripple",
        route_prefix="/",
    )
    # The same service with authentication on, over the same shards, for the auth figure.
    serve.run(
        build_app(
            {
                "namespace": NAMESPACE,
                "num_shards": shards,
                "shard": {"sweep_interval_s": 60},
                "auth_secret": AUTH_SECRET,
            }
        ),
        name="ripple-auth",
        route_prefix="/auth",
    )
    from load.null_http import Null

    serve.run(Null.bind(), name="null", route_prefix="/null")  # type: ignore[attr-defined]


async def load_loop(
    client: httpx.AsyncClient, make: Any, concurrency: int, count: int, max_s: float
) -> tuple[float, list[float], int]:
    """Successful requests/s, their latencies, and the error answers, of ``count``
    requests at ``concurrency``, bounded by ``max_s`` (DESIGN §8: an error answer is
    neither a request served nor a latency)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + max_s
    issued = 0

    async def worker() -> None:
        nonlocal issued, errors
        while issued < count and time.perf_counter() < deadline:
            issued += 1
            method, url, body, *rest = make(issued)
            headers = rest[0] if rest else None
            t0 = time.perf_counter()
            r = await client.request(method, url, json=body, headers=headers)
            if r.status_code >= 400:
                errors += 1
            else:
                latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - t0), latencies, errors


async def run(report: Report, url: str, smoke: bool, with_null: bool = True) -> None:
    """With ``with_null`` False (an existing service via --url), the ceiling for request
    rates and latency is ``GET /healthz`` of the same service: the cheapest request through
    the same proxy. There is then no batch ceiling."""
    max_s = 3.0 if smoke else 10.0
    rng = np.random.default_rng(0)
    async with httpx.AsyncClient(
        base_url=url,
        timeout=30,
        limits=httpx.Limits(max_connections=128, max_keepalive_connections=128),
    ) as c:

        def one(i: int) -> tuple[str, str, Any]:
            return (
                "POST",
                f"/v1/agents/agent-{i % 1000}/signals",
                {"signal_type": "LOAD", "value": 0.5},
            )

        def null_one(i: int) -> tuple[str, str, Any]:
            if not with_null:
                return "GET", "/healthz", None
            return "POST", "/null/signal", {"signal_type": "LOAD", "value": 0.5}

        for conc in (1, 16, 64):
            with section(f"single-signal POST, concurrency {conc}"):
                count = 100 if smoke else 3000
                ceil_rps, ceil_lat, _ = await load_loop(c, null_one, conc, count, max_s)
                rps, lat, errs = await load_loop(c, one, conc, count, max_s)
                p, pc = percentiles_ms(lat), percentiles_ms(ceil_lat)
                report.add(
                    f"single-signal POST req/s, concurrency {conc}",
                    rps,
                    "req/s",
                    ceiling=ceil_rps,
                    target="≥ 80% of null endpoint",
                    params={"errors": errs},
                )
                report.add(
                    f"single-signal POST p95, concurrency {conc}", p["p95"], "ms", ceiling=pc["p95"]
                )

        batch = {
            "signals": [
                {"agent_id": f"agent-{i}", "signal_type": "LOAD", "value": float(v)}
                for i, v in enumerate(rng.random(1000))
            ]
        }
        with section("batch POST of 1,000 signals"):
            n = 30 if smoke else 300
            ceil_rps, _, _ = await load_loop(
                c, lambda i: ("POST", "/null/batch", batch), 4, n if with_null else 0, max_s
            )
            rps, _, errs = await load_loop(c, lambda i: ("POST", "/v1/signals", batch), 4, n, max_s)
            report.add(
                "HTTP batch ingest, 1,000 per POST",
                rps * 1000,
                "signals/s",
                ceiling=ceil_rps * 1000 if with_null else None,
                target="≥ 100,000 signals/s",
                params={"errors": errs},
            )
        if with_null:
            with section("batch POST of 1,000 signals, auth on (an agent token for agent-*)"):
                auth = {"Authorization": f"Bearer {AGENT_TOKEN}"}
                secured, _, errs_auth = await load_loop(
                    c, lambda i: ("POST", "/auth/v1/signals", batch, auth), 4, n, max_s
                )
                # The same-run reference is the auth-off figure just above.
                report.add(
                    "HTTP batch ingest with auth, 1,000 per POST",
                    secured * 1000,
                    "signals/s",
                    ceiling=rps * 1000,
                    target="within 10% of auth off",
                    params={"errors": errs_auth},
                )

        with section("select 100 of 1,000 over HTTP"):
            ids = [f"agent-{i}" for i in range(1000)]
            sets = [[ids[j] for j in rng.choice(1000, 100, replace=False)] for _ in range(32)]
            n = 100 if smoke else 2000
            _, ceil_lat, _ = await load_loop(
                c,
                lambda i: (
                    null_one(i)
                    if not with_null
                    else ("POST", "/null/signal", {"candidates": sets[i % 32]})
                ),
                1,
                n,
                max_s,
            )
            _, lat, errs = await load_loop(
                c,
                lambda i: (
                    "POST",
                    "/v1/select",
                    {"candidates": sets[i % 32], "k": 1, "assign": False},
                ),
                1,
                n,
                max_s,
            )
            p, pc = percentiles_ms(lat), percentiles_ms(ceil_lat)
            report.add_percentiles(
                "select 100 of 1,000 over HTTP",
                p,
                floor_ms=pc,
                p95_target="p95 ≤ null p95 + 3 ms",
                params={"errors": errs},
            )


def main(argv: list[str] | None = None) -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--haproxy", action="store_true", help="use Serve's HAProxy ingress")
    parser.add_argument("--url", help="measure an already running service (e.g. from `ripple up`)")
    parser.add_argument(
        "--throughput-optimized",
        action="store_true",
        help="set RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (Serve's own fast-path switch)",
    )
    args = parser.parse_args(argv)
    if args.haproxy:
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"  # read by Serve when the proxy starts
    if args.throughput_optimized:
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    report = Report(
        "http (Ray Serve)",
        {
            "smoke": args.smoke,
            "shards": args.shards,
            "proxy": "haproxy" if args.haproxy else "default",
            "throughput_optimized": args.throughput_optimized,
        },
    )
    if args.url:  # an existing service: measure it, start and stop nothing
        asyncio.run(run(report, args.url.rstrip("/"), args.smoke, with_null=False))
        report.finish(args.json)
        return report
    start(args.port, args.shards)
    try:
        asyncio.run(run(report, f"http://127.0.0.1:{args.port}", args.smoke))
    finally:
        import ray
        from ray import serve

        import actors

        serve.shutdown()
        actors.teardown(NAMESPACE)
        ray.shutdown()
    report.finish(args.json)
    return report


if __name__ == "__main__":
    main()
