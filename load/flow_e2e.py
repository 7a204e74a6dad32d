"""Flow control end to end: ``ripple up`` on loopback, simulated agents that serve for a
fixed time, and callers over HTTP that offer twice what the fleet can do.

    python -m load flow-e2e [--smoke] [--json PATH]

The fleet: 8 agents with ``max_concurrency`` 2 (declared over HTTP), each task 1 s, so
16 tasks/s (with 0.5 s tasks, 2x is ~100 HTTP requests/s, which on a 2-core machine
saturates Serve's proxy and replica beside the agents and callers: BENCHMARKS).
Callers (Poisson arrivals, 2x that) ask ``POST /v1/select`` with ``wait_s`` 2:
``heavy`` sends 10x what ``light`` sends at priority 5 (97% of the load between them),
``interactive`` 3% at priority 8. A picked task runs on its simulated agent (which counts
how many it holds at once), then ``POST .../complete``. Then a probe: with the fleet
full, selections with ``wait_s`` 0, timed.

Reported: goodput (slot-seconds of work done over the fleet's), each tenant's served
share of what it offered, Jain's index over their max-min-normalised goodput, band-8 wait
p99, refusals (429) by reason and whether each had ``Retry-After``, 5xx answers (must be
none), the most tasks any agent held beside its ``max_concurrency``, and the time a
``wait_s: 0`` refusal takes. Only answered requests count; a transport error is
reported, not retried.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np

from actors.core.flow import jain_index
from load.common import Report, base_parser, percentiles_ms, section

AGENTS, SLOTS, TASK_S = 8, 2, 1.0
CAPACITY = AGENTS * SLOTS / TASK_S
WAIT_S = 2.0
TENANTS = {"heavy": (5, 10 / 11 * 0.97), "light": (5, 1 / 11 * 0.97), "interactive": (8, 0.03)}


@dataclass
class Tally:
    offered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TENANTS, 0))
    served: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TENANTS, 0))
    refused: dict[str, int] = field(default_factory=dict)
    refused_without_retry_after: int = 0
    server_errors: int = 0
    transport_errors: int = 0
    waits_s: dict[int, list[float]] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=lambda: {f"e2e-{i}": 0 for i in range(AGENTS)})
    most_held: int = 0
    busy_s: float = 0.0


class Agents:
    """The simulated agents: each counts the tasks it holds, serves for ``TASK_S``, then
    reports the completion."""

    def __init__(self, http: aiohttp.ClientSession, tally: Tally) -> None:
        self.http, self.tally = http, tally

    async def run(self, agent: str, assignment_id: str, until_s: float) -> None:
        t = self.tally
        t.held[agent] += 1
        t.most_held = max(t.most_held, t.held[agent])
        start = time.monotonic()
        await asyncio.sleep(TASK_S)
        t.held[agent] -= 1
        t.busy_s += max(0.0, min(time.monotonic(), until_s) - start)
        done = {"assignment_id": assignment_id, "duration_s": TASK_S}
        try:
            async with self.http.post(f"/v1/agents/{agent}/complete", json=done) as r:
                await r.read()
        except aiohttp.ClientError:
            t.transport_errors += 1


async def one_request(
    http: aiohttp.ClientSession, agents: Agents, tenant: str, until_s: float, tasks: set[Any]
) -> None:
    t = agents.tally
    priority = TENANTS[tenant][0]
    t.offered[tenant] += 1
    body = {"tenant": tenant, "priority": priority, "wait_s": WAIT_S}
    try:
        async with http.post("/v1/select", json=body) as r:
            status, answer, headers = r.status, await r.json(), r.headers
    except (aiohttp.ClientError, ValueError):
        t.transport_errors += 1
        return
    if status == 200:
        sel = answer["selected"][0]
        t.served[tenant] += 1
        t.waits_s.setdefault(priority, []).append(answer["waited_s"])
        task = asyncio.ensure_future(agents.run(sel["agent_id"], sel["assignment_id"], until_s))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    elif status == 429:
        reason = answer["error"].get("reason", "?")
        t.refused[reason] = t.refused.get(reason, 0) + 1
        t.refused[tenant] = t.refused.get(tenant, 0) + 1
        t.refused_without_retry_after += "Retry-After" not in headers
    elif status >= 500:
        t.server_errors += 1


def session(url: str) -> aiohttp.ClientSession:
    """aiohttp, not httpx: at a few hundred requests in flight httpx's pool spent a whole
    core of this 2-core machine, and the load generator, not Ripple, was measured."""
    return aiohttp.ClientSession(
        base_url=url,
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def offer(url: str, duration_s: float, load: float, seed: int) -> Tally:
    tally = Tally()
    rng = np.random.default_rng(seed)
    async with session(url) as http:
        for i in range(AGENTS):
            put = {"max_concurrency": SLOTS}
            async with http.put(f"/v1/agents/e2e-{i}", json=put) as r:
                r.raise_for_status()
        agents = Agents(http, tally)
        arrivals = []
        for tenant, (_, share) in TENANTS.items():
            at = np.cumsum(rng.exponential(1.0 / (load * CAPACITY * share), 10_000))
            arrivals += [(float(a), tenant) for a in at[at < duration_s]]
        arrivals.sort()
        t0 = time.monotonic()
        until_s = t0 + duration_s
        requests: set[Any] = set()
        tasks: set[Any] = set()
        for at_s, tenant in arrivals:
            delay = t0 + at_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            req = asyncio.ensure_future(one_request(http, agents, tenant, until_s, tasks))
            requests.add(req)
            req.add_done_callback(requests.discard)
        await asyncio.gather(*list(requests))
        await asyncio.gather(*list(tasks))
    return tally


async def refusal_latency(url: str, samples: int) -> tuple[dict[str, float], int]:
    """With every slot held, ``wait_s: 0`` selections: how long a refusal takes."""
    async with session(url) as http:
        held = []
        for _ in range(AGENTS * SLOTS):
            async with http.post("/v1/select", json={"tenant": "probe"}) as r:
                if r.status == 200:
                    held.append((await r.json())["selected"][0])
        times, not_429 = [], 0
        for _ in range(samples):
            t0 = time.perf_counter()
            async with http.post("/v1/select", json={"tenant": "probe"}) as r:
                await r.read()
                times.append(time.perf_counter() - t0)
                not_429 += r.status != 429
        for sel in held:
            done = {"assignment_id": sel["assignment_id"]}
            async with http.post(f"/v1/agents/{sel['agent_id']}/complete", json=done) as r:
                await r.read()
    return percentiles_ms(times), not_429


def start_service(port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "serve.cli", "up", "--port", str(port), "--log-level", "WARNING"]
    return subprocess.Popen(
        cmd,
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RAY_ADDRESS": ""},
    )


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("ripple up did not become ready")


def summarise(report: Report, t: Tally, duration_s: float) -> dict[str, Any]:
    names = list(TENANTS)
    jain = jain_index(
        np.array([t.served[k] for k in names], float),
        np.array([t.offered[k] for k in names], float),
    )
    goodput = t.busy_s / (duration_s * AGENTS * SLOTS)
    band8 = t.waits_s.get(8, [])
    report.add("goodput / capacity", goodput, "x", target=">= 0.85")
    for k in names:
        report.add(
            f"{k}: served / offered",
            t.served[k] / max(t.offered[k], 1),
            "x",
            params={"offered": t.offered[k]},
        )
    report.add("Jain's index (max-min normalised goodput)", jain or 0.0, "", target=">= 0.9")
    report.add(
        "interactive (band 8) refused", t.refused.get("interactive", 0), "requests", target="0"
    )
    if band8:
        report.add(
            "band 8 wait p99",
            float(np.percentile(band8, 99)),
            "s",
            target=f"<= {TASK_S:g} (one task time)",
        )
    report.add(
        "most tasks an agent held / max_concurrency", t.most_held / SLOTS, "x", target="<= 1"
    )
    report.add(
        "refusals (429) without Retry-After", t.refused_without_retry_after, "answers", target="0"
    )
    report.add("5xx answers", t.server_errors, "answers", target="0")
    report.add("transport errors", t.transport_errors, "requests")
    return {
        "offered": t.offered,
        "served": t.served,
        "refused": t.refused,
        "jain": jain,
        "goodput_vs_capacity": goodput,
        "most_held": t.most_held,
    }


def main(argv: list[str] | None = None) -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--port", type=int, default=8127)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the run")
    parser.add_argument("--url", help="use an already running service instead of starting one")
    args = parser.parse_args(argv)
    duration_s = 8.0 if args.smoke else args.seconds
    report = Report(
        "flow end to end (ripple up)",
        {
            "smoke": args.smoke,
            "seconds": duration_s,
            "agents": AGENTS,
            "slots": SLOTS,
            "task_s": TASK_S,
            "offered": "2x",
        },
    )
    url = args.url.rstrip("/") if args.url else f"http://127.0.0.1:{args.port}"
    proc = None if args.url else start_service(args.port)
    try:
        if proc is not None:
            with section("ripple up"):
                wait_ready(url, proc)
        with section(f"2x overload for {duration_s:g} s"):
            tally = asyncio.run(offer(url, duration_s, 2.0, seed=1))
        extra = summarise(report, tally, duration_s)
        with section("wait_s 0 into a full fleet"):
            lat, not_429 = asyncio.run(refusal_latency(url, 20 if args.smoke else 200))
        report.add_percentiles("wait_s 0 refusal", lat, floor_ms=None, p95_target=None)
        report.add("wait_s 0 answers other than 429", not_429, "answers", target="0")
        report.add("wait_s 0 refusal p99 <= 200 ms", float(lat["p99"] <= 200.0), "bool", target="1")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    report.finish(args.json, {"tally": extra})
    return report
