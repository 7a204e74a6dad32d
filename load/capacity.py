"""Capacity model fitted to the measured sweep, checked against every measured point.

    python -m load.capacity --scaling results/scaling.json --core results/core.json \
        [--json results/capacity.json]

The model, per signal and per shard (CPU-seconds, cores):
    c  CPU per signal, everything included: client partition and submit, Ray transport,
       shard-side deserialise, validate and ingest
    b  shard time per signal (a shard is one Python thread, so it tops out at 1/b)
    o  fixed overhead per shard process, in cores (event loop, Ray's background threads)
On a machine with P cores running the clients and S shards,
    throughput(S) = min(S / b, (P - S * o) / c)
The parameters are fitted to the measured sweep (least squares on relative error) and the
model reports how far it lands from each measured point. The projection assumes batches
of 1,000 per shard call, clients outside the shard nodes (so shard nodes pay b and o,
not c), one core per shard plus one per node for Ray, and selection cost linear in agents
per shard (from the core benchmark).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import numpy as np

from load.common import Report

B_GRID = np.geomspace(1e-7, 1e-4, 121)


def predict(params: tuple[float, float, float], shards: np.ndarray, cores: float) -> np.ndarray:
    c, b, o = params
    return np.minimum(shards / b, np.maximum(cores - shards * o, 1e-9) / c)


def fit(shards: np.ndarray, measured: np.ndarray, cores: float) -> tuple[float, float, float]:
    """Exhaustive grid in (c, b, o): three parameters, a handful of points, no optimiser."""
    cs = np.geomspace(1e-7, 1e-4, 121)[:, None, None, None]
    bs = B_GRID[None, :, None, None]
    os_ = np.linspace(0.0, 0.25, 51)[None, None, :, None]
    s = shards[None, None, None, :]
    pred = np.minimum(s / bs, np.maximum(cores - s * os_, 1e-9) / cs)
    err = ((pred / measured - 1.0) ** 2).sum(axis=-1)
    i, j, k = np.unravel_index(np.argmin(err), err.shape)
    return float(cs[i, 0, 0, 0]), float(bs[0, j, 0, 0]), float(os_[0, 0, k, 0])


def figure(report_json: dict[str, Any], prefix: str) -> float:
    for f in report_json["figures"]:
        if f["name"].startswith(prefix):
            return float(f["value"])
    raise KeyError(prefix)


def main(argv: list[str] | None = None) -> Report:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scaling", required=True)
    p.add_argument("--core", required=True)
    p.add_argument("--cores", type=float, default=None, help="cores of the measured machine")
    p.add_argument(
        "--node-cores", type=float, default=16.0, help="cores per node in the projection"
    )
    p.add_argument("--target-signals-s", type=float, default=1_000_000)
    p.add_argument("--target-agents", type=float, default=10_000_000)
    p.add_argument("--json")
    args = p.parse_args(argv)
    with open(args.scaling) as fh:
        scaling = json.load(fh)
    with open(args.core) as fh:
        core = json.load(fh)
    cores = args.cores or float(scaling["machine"]["cpus"])
    rows = scaling["params"]["rows"]
    shards = np.array([r["shards"] for r in rows], dtype=np.float64)
    measured = np.array([r["throughput"] for r in rows])
    params = fit(shards, measured, cores)
    c, b, o = params
    model = predict(params, shards, cores)
    report = Report(
        "capacity model",
        {
            "c_cpu_s_per_signal": c,
            "b_shard_s_per_signal": b,
            "o_cores_per_shard": o,
            "cores": cores,
            "node_cores": args.node_cores,
        },
    )
    worst = 0.0
    for s, m, pr in zip(shards, measured, model, strict=True):
        err = pr / m - 1.0
        worst = max(worst, abs(err))
        report.add(
            f"model vs measured, S={int(s)}",
            pr,
            "signals/s",
            ceiling=m,
            target="within 25%",
            params={"error": err},
        )
    report.add("worst model error on measured points", worst * 100, "%", target="≤ 25%")

    # Projection. Shard nodes run shards only (the fleet's agents and Serve replicas are
    # the clients), so a shard costs what the fitted model says one costs per signal:
    # b, measured through the whole path (DESIGN §8: the fitted value, not the in-process
    # core's 1/ingest rate, which leaves out the transport and undercounts shards).
    core_ingest = figure(core, "ingest columnar, batches of 1000, 100,000 agents")
    # b is identified only if the shard bound binds at some measured S. On a small machine
    # every point is client-bound and the fit puts b anywhere below the data (the grid's
    # floor): then use the bound the data does give, b <= 1 / (one shard's measured rate).
    shard_bound = shards / b < np.maximum(cores - shards * o, 1e-9) / c
    b_identified = bool(shard_bound.any()) and b > B_GRID[0] * 1.01
    shard_cost_s = b if b_identified else 1.0 / (rows[0]["throughput"] / rows[0]["shards"])
    report.params["b_identified"] = b_identified
    utilisation = 0.7
    shards_for_rate = math.ceil(args.target_signals_s * shard_cost_s / utilisation)
    bytes_per_agent = figure(core, "memory per agent")
    ms_per_million = figure(core, "top-10 of 1,000,000 agents, p50")
    agents_per_shard_for_20ms = 1e6 * 20.0 / ms_per_million
    shards_for_agents = math.ceil(args.target_agents / agents_per_shard_for_20ms)
    total_shards = max(shards_for_rate, shards_for_agents)
    nodes = math.ceil(total_shards / (args.node_cores - 1))  # one core per node for Ray
    memory_gib = args.target_agents * bytes_per_agent / 2**30
    report.add(
        "shard cost per signal (fitted b)"
        if b_identified
        else "shard cost per signal (b not identified: bound from one shard's rate)",
        shard_cost_s * 1e6,
        "µs",
        params={"fitted_b_us": b * 1e6, "in_process_core_ingest_us": 1e6 / core_ingest},
    )
    report.add(
        f"shards for {args.target_signals_s:,.0f} signals/s at {utilisation:.0%} utilisation",
        shards_for_rate,
        "shards",
    )
    report.add(
        f"shards to keep top-10 over {args.target_agents:,.0f} agents near 20 ms",
        shards_for_agents,
        "shards",
    )
    report.add(
        f"{args.node_cores:g}-core nodes for both",
        nodes,
        "nodes",
        params={"shards": total_shards, "core_state_gib": memory_gib},
    )
    report.add(f"core state for {args.target_agents:,.0f} agents", memory_gib, "GiB")
    report.params["assumptions"] = [
        "1,000 signals per shard call (the client batches per shard)",
        "each shard is one Python thread: one core each; one more core per node for Ray",
        "clients (agents, Serve replicas) run elsewhere; shard nodes pay ingest + transport",
        "a shard costs the fitted b per signal (ingest plus its side of the transport); "
        "when the sweep is client-bound at every S, b's upper bound 1/rate(S=1)",
        f"selection cost linear in agents per shard: {ms_per_million:.1f} ms per 1M (core bench)",
        f"memory {bytes_per_agent:,.0f} bytes per agent with full history (core bench)",
        "cross-node calls cost what same-node calls cost on loopback (multi-node run); "
        "a real network adds its round trip to each selection, not to ingest throughput",
    ]
    report.finish(args.json)
    return report


if __name__ == "__main__":
    main()
