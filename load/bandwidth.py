"""What shards on one machine share: memory bandwidth, beside the cores.

    python -m load bandwidth [--smoke] [--json PATH]

A top-10 over every agent streams each agent's figures from memory once. Run in one
process, then in two at the same moment (as two shard actors answer one fanned-out
selection), it shows whether a second shard halves the work or only halves each shard's
share of the memory bus:

- streaming a 32 MB array (out of cache) and a 160 KB one (in cache), per process, alone
  and two at once: the ceilings;
- Ripple's own top-10 over ``agents`` agents (``ShardState.select``, balanced, read-only),
  alone and two at once.

Ripple's figure is beside the same selection alone (its ceiling); BENCHMARKS has what
this 2-vCPU VM gives.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import numpy as np

from load.common import Report, base_parser, section, time_calls

CACHE_ELEMENTS = 20_000  # 160 KB of float64: in L2
MEMORY_ELEMENTS = 4_000_000  # 32 MB: streamed from memory


def _stream(kind: str, seconds: float, ready: Any, go: Any, out: Any) -> None:
    a = np.random.default_rng(0).random(CACHE_ELEMENTS if kind == "cache" else MEMORY_ELEMENTS)
    ready.put(True)
    go.wait()
    t0, passes = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        float((a * 1.0001).sum())
        passes += 1
    out.put(passes * len(a) / (time.perf_counter() - t0))


def _top10(agents: int, reps: int, ready: Any, go: Any, out: Any) -> None:
    from actors.core.config import ShardConfig
    from actors.core.state import ShardState
    from load.core_bench import agent_names, populate, read_only

    state = ShardState(ShardConfig(initial_capacity=agents, history_size=1), seed=2)
    populate(state, agent_names(agents))
    req = read_only(k=10)
    state.select(req)  # warm
    ready.put(True)
    go.wait()
    # Warmed before the start signal, so both processes time only the selection.
    took = time_calls(lambda: state.select(req), count=reps, max_s=600.0, warmup=0)
    out.put(float(np.percentile(took, 50)))


def together(target: Any, args: tuple[Any, ...], processes: int) -> list[float]:
    """Start ``processes`` copies, let each get ready, then start them at once."""
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=target, args=(*args, ready, go, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=600)
    go.set()
    got = [float(out.get(timeout=600)) for _ in procs]
    for p in procs:
        p.join()
    return got


def main(argv: list[str] | None = None) -> Report:
    args = base_parser(__doc__ or "").parse_args(argv)
    seconds = 0.5 if args.smoke else 3.0
    agents = 50_000 if args.smoke else 500_000
    reps = 5 if args.smoke else 40
    report = Report("bandwidth", {"smoke": args.smoke, "agents": agents})
    with section("streaming"):
        for kind in ("cache", "memory"):
            alone = together(_stream, (kind, seconds), 1)[0]
            both = together(_stream, (kind, seconds), 2)
            report.add(
                f"elements/s per process, {kind}, two processes at once",
                float(np.mean(both)),
                "elements/s",
                ceiling=alone,
                params={"alone": alone, "each": both},
            )
    with section(f"top-10 over {agents:,} agents"):
        alone = together(_top10, (agents, reps), 1)[0]
        both = together(_top10, (agents, reps), 2)
        report.add(
            f"top-10 of {agents:,} agents p50, two processes at once",
            1e3 * float(np.mean(both)),
            "ms",
            ceiling=1e3 * alone,
            params={"alone_ms": 1e3 * alone, "each_ms": [1e3 * b for b in both]},
        )
    report.finish(args.json)
    return report


if __name__ == "__main__":
    main()
