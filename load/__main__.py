"""One entry point for every benchmark: ``python -m load NAME [options]`` (or ``ripple bench``).

python -m load core|actors|http|scaling|multinode|capacity [--smoke] [--json PATH] ...

Several in one process, separated by ``+``, share one embedded Ray (started once, not once
per benchmark; CI's smoke runs the Ray benchmarks so):

python -m load actors --smoke --json a.json + http --smoke --json h.json
"""

from __future__ import annotations

import importlib
import sys
import time

from load.common import ray_session

BENCHMARKS = {
    "core": "load.core_bench",
    "actors": "load.actor_bench",
    "http": "load.http_bench",
    "scaling": "load.scaling",
    "multinode": "load.multinode",
    "capacity": "load.capacity",
    "routing": "load.routing",
    "outcomes": "load.outcomes",
    "flow": "load.flow",
    "flow-e2e": "load.flow_e2e",
    "affinity": "load.affinity",
    "overload": "load.overload",
    "serve-router": "load.serve_router",
    "litellm": "load.litellm_router",
    "durability": "load.durability",
    "chaos": "load.chaos",
    "bandwidth": "load.bandwidth",
}


def runs(args: list[str]) -> list[list[str]] | None:
    """``NAME [options] + NAME [options] ...`` split into runs; None when a name is unknown."""
    out: list[list[str]] = [[]]
    for a in args:
        if a == "+":
            out.append([])
        else:
            out[-1].append(a)
    return out if all(r and r[0] in BENCHMARKS for r in out) else None


def main(argv: list[str] | None = None) -> int:
    planned = runs(list(sys.argv[1:] if argv is None else argv))
    if planned is None:
        names = "|".join(BENCHMARKS)
        usage = f"python -m load {{{names}}} [options] [+ NAME [options] ...]"
        print(f"usage: {usage}  (--help per benchmark)")
        return 2
    if len(planned) == 1:
        importlib.import_module(BENCHMARKS[planned[0][0]]).main(planned[0][1:])
        return 0
    start = time.monotonic()
    with ray_session():
        for name, *options in planned:
            print(f"-- {name} [{time.monotonic() - start:.0f}s in this process]", flush=True)
            importlib.import_module(BENCHMARKS[name]).main(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
