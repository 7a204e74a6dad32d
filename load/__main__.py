"""One entry point for every benchmark: ``python -m load NAME [options]`` (or ``ripple bench``).

python -m load core|actors|http|scaling|multinode|capacity [--smoke] [--json PATH] ...
"""

from __future__ import annotations

import importlib
import sys

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


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in BENCHMARKS:
        print(f"usage: python -m load {{{'|'.join(BENCHMARKS)}}} [options]  (--help per benchmark)")
        return 2
    module = importlib.import_module(BENCHMARKS[args[0]])
    module.main(args[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
