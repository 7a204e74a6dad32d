"""In-process benchmark of the plain core (one ShardState, one Python thread).

    python -m load.core_bench            # full size (about a minute, ~3 GB for 1M agents)
    python -m load.core_bench --smoke    # a few seconds, what CI runs
    python -m load.core_bench --json results/core.json

Every throughput figure sits beside a ceiling from the same run: a loop that only maps
the same ids to rows and scatters the same values into arrays of the same shape, i.e.
the least work any implementation storing these signals must do in Python + numpy.
"""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import numpy as np

from actors.core.config import ShardConfig
from actors.core.models import (
    DIMENSIONS,
    NUM_DIMENSIONS,
    SIGNAL_TYPES,
    PredictParams,
    SelectRequest,
)
from actors.core.state import ShardState
from load.common import Report, base_parser, percentiles_ms, section, throughput, time_calls

BATCH = 1_000
TYPE_NAMES = [t.value for t in SIGNAL_TYPES]
CODE = {name: i for i, name in enumerate(TYPE_NAMES)}


def agent_names(n: int) -> list[str]:
    return [f"agent-{i:07d}" for i in range(n)]


def make_batches(names: list[str], count: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    out = []
    for _ in range(count):
        idx = rng.integers(0, len(names), BATCH)
        out.append(
            {
                "ids": [names[i] for i in idx.tolist()],
                "codes": rng.integers(0, NUM_DIMENSIONS, BATCH),
                "values": rng.random(BATCH),
                "conf": np.full(BATCH, 0.9),
                "ttl": np.full(BATCH, 60.0),
            }
        )
    return out


def populate(
    state: ShardState, names: list[str], signals_per_type: int = 1, chunk: int = 10_000
) -> None:
    rng = np.random.default_rng(7)
    for _ in range(signals_per_type):
        for start in range(0, len(names), chunk):
            ids = names[start : start + chunk]
            for code in range(NUM_DIMENSIONS):
                state.ingest_arrays(ids, np.full(len(ids), code), rng.random(len(ids)))


class NullStore:
    """The ceiling: dict lookups plus the same scatters, no validation or semantics."""

    def __init__(self, names: list[str], history: int) -> None:
        self.index = {a: i for i, a in enumerate(names)}
        n = len(names)
        self.val = np.zeros((NUM_DIMENSIONS, n))
        self.ts = np.zeros((NUM_DIMENSIONS, n))
        self.hval = np.zeros((history, n), np.float32)
        self.hpos = np.zeros(n, np.int32)

    def put(self, ids: list[str], codes: np.ndarray, values: np.ndarray) -> int:
        get = self.index.__getitem__
        rows = np.fromiter(map(get, ids), np.int64, len(ids))
        now = time.time()
        self.val[codes, rows] = values
        self.ts[codes, rows] = now
        self.hval[self.hpos[rows], rows] = values
        self.hpos[rows] = (self.hpos[rows] + 1) % self.hval.shape[0]
        return len(ids)


def bench_ingest(report: Report, n_agents: int, batches: int, max_s: float) -> None:
    rng = np.random.default_rng(n_agents)
    names = agent_names(n_agents)
    data = make_batches(names, batches, rng)
    state = ShardState(ShardConfig(initial_capacity=n_agents))
    populate(state, names)
    null = NullStore(names, state.config.history_size)
    dicts = [
        [
            {
                "agent_id": a,
                "signal_type": TYPE_NAMES[c],
                "value": v,
                "confidence": 0.9,
                "ttl_s": 60.0,
            }
            for a, c, v in zip(b["ids"], b["codes"].tolist(), b["values"].tolist(), strict=True)
        ]
        for b in data
    ]

    def columnar(i: int) -> int:
        b = data[i % batches]
        return state.ingest_arrays(b["ids"], b["codes"], b["values"], b["conf"], b["ttl"]).accepted

    def ceiling_columnar(i: int) -> int:
        b = data[i % batches]
        return null.put(b["ids"], b["codes"], b["values"])

    def from_dicts(i: int) -> int:
        return state.ingest_dicts(dicts[i % batches]).accepted

    def ceiling_dicts(i: int) -> int:
        items = dicts[i % batches]
        ids = [d["agent_id"] for d in items]
        codes = np.fromiter((CODE[d["signal_type"]] for d in items), np.int64, len(items))
        values = np.array([d["value"] for d in items])
        return null.put(ids, codes, values)

    for label, fn, ceil in (
        ("columnar", columnar, ceiling_columnar),
        ("list-of-dicts", from_dicts, ceiling_dicts),
    ):
        ceiling = throughput(ceil, max_batches=batches * 4, max_s=max_s)
        value = throughput(fn, max_batches=batches * 4, max_s=max_s)
        target = "≥ 1,000,000/s" if label == "columnar" else "≥ 300,000/s"
        report.add(
            f"ingest {label}, batches of {BATCH}, {n_agents:,} agents",
            value,
            "signals/s",
            ceiling=ceiling,
            target=target,
            params={"agents": n_agents, "batch": BATCH},
        )


def read_only(**kw: Any) -> SelectRequest:
    """Scoring and picking without side effects: the figure comparable across versions."""
    return SelectRequest(strategy="best", assign=False, **kw)


def bench_select_candidates(report: Report, count: int, max_s: float) -> None:
    names = agent_names(1_000)
    state = ShardState(seed=1)
    populate(state, names)
    rng = np.random.default_rng(3)
    cand_sets = [
        [names[i] for i in rng.choice(1_000, 100, replace=False).tolist()] for _ in range(64)
    ]
    it = iter(range(10**9))

    def call() -> None:
        state.select(read_only(candidates=cand_sets[next(it) % 64], k=1))

    # Floor: the same lookups and gather, then an argmax, with no semantics.
    exp, kk, index = state.table["exp"], state.table["k"], state.table.index

    def floor() -> None:
        rows = np.fromiter(map(index.__getitem__, cand_sets[next(it) % 64]), np.int64, 100)
        s = (kk[:, rows] * np.maximum(exp[:, rows] - time.time(), 0)).sum(axis=0)
        int(np.argmax(s))

    lat = percentiles_ms(time_calls(call, count=count, max_s=max_s))
    fl = percentiles_ms(time_calls(floor, count=count, max_s=max_s))
    report.add_percentiles(
        "select 100 of 1,000 agents (best, read-only)",
        lat,
        "µs",
        floor_ms=fl,
        p95_target="p95 ≤ 100 µs",
    )

    # The default path: balanced on the estimated load, assigning the pick. Every agent
    # declares max_concurrency and completes its task after the next selection, so the
    # load estimate (not the no-task fast path) is what is measured.
    for a in names:
        state.describe(a, max_concurrency=8)
    last: list[tuple[str, str | None]] = []

    def balanced() -> None:
        res = state.select(SelectRequest(candidates=cand_sets[next(it) % 64], k=1))
        pick = res.selected[0]
        last.append((pick.agent_id, pick.assignment_id))

    def settle() -> None:
        while last:
            state.complete(*last.pop())

    lat = percentiles_ms(time_calls(balanced, count=count, max_s=max_s, after=settle))
    report.add_percentiles(
        "balanced select 100 of 1,000 agents, assigning",
        lat,
        "µs",
        floor_ms=fl,
        p95_target="p95 ≤ 150 µs",
    )


def bench_top10(report: Report, n_agents: int, count: int, max_s: float) -> None:
    names = agent_names(n_agents)
    state = ShardState(ShardConfig(initial_capacity=n_agents, history_size=1), seed=2)
    with section(f"populate {n_agents:,} agents"):
        populate(state, names)
    req = read_only(k=10)
    lat = percentiles_ms(time_calls(lambda: state.select(req), count=count, max_s=max_s, warmup=1))
    # Amplitudes, not expiries: equal timestamps would make the partition's input constant.
    amp = state.table["k"][:, : len(state)]

    weights = np.full(len(amp), 1.0 / len(amp))

    def floor() -> None:
        # The least any scoring must do: read each live value once, combine, partition.
        s = weights @ amp
        np.partition(s, len(s) - 10)

    fl = percentiles_ms(time_calls(floor, count=count, max_s=max_s, warmup=1))
    target = "p95 ≤ 25 ms" if n_agents >= 1_000_000 else None
    report.add_percentiles(f"top-10 of {n_agents:,} agents", lat, floor_ms=fl, p95_target=target)


def bench_predict(report: Report, count: int, max_s: float) -> None:
    clock = [1_000_000.0]
    state = ShardState(clock=lambda: clock[0])
    for i in range(100):
        clock[0] += 1.0
        state.ingest_arrays(["hot"], ["LOAD"], [min(0.3 + 0.005 * i, 1.0)])
    params = PredictParams()
    lat = percentiles_ms(time_calls(lambda: state.predict("hot", params), count=count, max_s=max_s))
    report.add_percentiles(
        "overload prediction (100 samples)", lat, "µs", p95_target="p95 ≤ 100 µs"
    )


def bench_memory(report: Report, n_agents: int) -> None:
    names = agent_names(n_agents)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    # The default capacity, grown as agents arrive 500 at a time (DESIGN §8): arrays
    # sized up front to exactly n agents would hide the slack that growth leaves.
    state = ShardState(ShardConfig())
    populate(
        state,
        names,
        signals_per_type=(state.config.history_size + NUM_DIMENSIONS - 1) // NUM_DIMENSIONS,
        chunk=500,
    )
    used, peak = tracemalloc.get_traced_memory()
    used -= base
    peak -= base
    tracemalloc.stop()
    full = int((state.table["hlen"][: len(state)] == state.config.history_size).mean() * 100)
    report.add(
        "memory per agent, full 100-signal history",
        used / n_agents,
        "bytes",
        target="≤ 2,048 bytes",
        params={
            "agents": n_agents,
            "full_history_pct": full,
            "array_bytes_per_agent": state.table.nbytes() / n_agents,
            "peak_bytes_per_agent": peak / n_agents,
            "capacity_rows": state.table.capacity,
        },
    )


def main(argv: list[str] | None = None) -> Report:
    args = base_parser(__doc__ or "").parse_args(argv)
    smoke = args.smoke
    report = Report(
        "core (in-process ShardState)", {"smoke": smoke, "dimensions": list(DIMENSIONS)}
    )
    max_s = 0.3 if smoke else 3.0
    with section("ingest"):
        bench_ingest(report, 1_000, 20 if smoke else 200, max_s)
        bench_ingest(report, 10_000 if smoke else 100_000, 20 if smoke else 200, max_s)
    with section("select 100 of 1,000"):
        bench_select_candidates(report, 200 if smoke else 5_000, max_s)
    with section("top-10 of all agents"):
        bench_top10(report, 20_000 if smoke else 100_000, 20 if smoke else 200, max_s)
        if not smoke:
            bench_top10(report, 1_000_000, 60, 15.0)
    with section("prediction"):
        bench_predict(report, 200 if smoke else 5_000, max_s)
    with section("memory"):
        bench_memory(report, 1_000 if smoke else 10_000)
    report.finish(args.json)
    return report


if __name__ == "__main__":
    main()
