"""Shared pieces of every benchmark: timing, one JSON result format, a Markdown table.

Every figure is reported beside a ceiling (or floor) measured in the same run, because
this machine is shared and noisy: a ratio to the same-run ceiling is what carries over.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    ceiling: float | None = None  # same-run ceiling (throughput) or floor (latency)
    target: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ceiling in (None, 0):
            return None
        return self.value / self.ceiling


@dataclass
class Report:
    benchmark: str
    params: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)

    def add(self, *args: Any, **kwargs: Any) -> Figure:
        fig = Figure(*args, **kwargs)
        self.figures.append(fig)
        print(
            f"  {fig.name}: {_fmt(fig.value)} {fig.unit}"
            + (f" (ceiling {_fmt(fig.ceiling)})" if fig.ceiling is not None else ""),
            flush=True,
        )
        return fig

    def add_percentiles(
        self,
        name: str,
        lat_ms: dict[str, float],
        unit: str = "ms",
        floor_ms: dict[str, float] | None = None,
        p95_target: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        """p50/p95/p99 of ``percentiles_ms`` output, in ``ms`` or ``µs``, beside a floor."""
        scale = 1e3 if unit == "µs" else 1.0
        for q in ("p50", "p95", "p99"):
            self.add(
                f"{name}, {q}",
                lat_ms[q] * scale,
                unit,
                ceiling=floor_ms[q] * scale if floor_ms else None,
                target=p95_target if q == "p95" else None,
                params=dict(params or {}, samples=lat_ms.get("n")),
            )

    def markdown(self) -> str:
        lines = [
            f"### {self.benchmark}",
            "",
            "| figure | value | unit | same-run ceiling / floor | ratio | target |",
            "| --- | ---: | --- | ---: | ---: | --- |",
        ]
        for f in self.figures:
            ratio = f"{f.ratio:.2f}" if f.ratio is not None else ""
            ceiling = _fmt(f.ceiling) if f.ceiling is not None else ""
            target = f.target or ""
            lines.append(
                f"| {f.name} | {_fmt(f.value)} | {f.unit} | {ceiling} | {ratio} | {target} |"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "machine": machine_info(),
            "params": self.params,
            "started_at": self.started_at,
            "duration_s": time.time() - self.started_at,
            "figures": [asdict(f) | {"ratio": f.ratio} for f in self.figures],
        }

    def finish(self, json_path: str | None, extra: dict[str, Any] | None = None) -> None:
        """Print the table; write the JSON (with ``extra``: raw results) when asked."""
        print()
        print(self.markdown())
        if json_path:
            os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
            with open(json_path, "w") as fh:
                json.dump({**self.to_json(), **(extra or {})}, fh, indent=2, default=float)
            print(f"\nwrote {json_path}")


def _fmt(x: float | None) -> str:
    if x is None:
        return ""
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
    }
    try:
        import ray

        info["ray"] = ray.__version__
    except (
        ImportError
    ):  # pragma: no cover - ray is a dependency, but keep the core bench standalone
        pass
    return info


def percentiles_ms(samples_s: list[float] | np.ndarray) -> dict[str, float]:
    arr = np.asarray(samples_s, dtype=np.float64) * 1e3
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "n": len(arr)}


class _Bar:
    """A transient rich progress bar on a terminal (nothing in CI logs), updated sparingly."""

    def __init__(self, description: str, max_s: float) -> None:
        self.max_s = max_s
        self.progress: Any = None
        if sys.stderr.isatty():
            try:
                from rich.progress import Progress
            except ImportError:  # rich comes with the load extra; the numbers do not need it
                return
            self.progress = Progress(transient=True)
            self.task = self.progress.add_task(description, total=max_s)

    def __enter__(self) -> _Bar:
        if self.progress is not None:
            self.progress.start()
        self.t0 = time.perf_counter()
        return self

    def tick(self, i: int) -> None:
        if self.progress is not None and i % 50 == 0:
            self.progress.update(
                self.task, completed=min(time.perf_counter() - self.t0, self.max_s)
            )

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def time_calls(
    fn: Callable[[], Any],
    *,
    count: int,
    max_s: float,
    warmup: int = 3,
    after: Callable[[], Any] | None = None,
) -> list[float]:
    """Latency of up to ``count`` calls, stopping after ``max_s`` seconds (bounded loops).
    ``after`` runs untimed after each call (to undo its side effects, say)."""
    for _ in range(warmup):
        fn()
    out: list[float] = []
    deadline = time.perf_counter() + max_s
    with _Bar("timing calls", max_s) as bar:
        while len(out) < count and time.perf_counter() < deadline:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
            if after is not None:
                after()
            bar.tick(len(out))
    return out


def throughput(fn: Callable[[int], int], *, max_batches: int, max_s: float) -> float:
    """Items per second of ``fn(i) -> items`` over up to ``max_batches`` calls or ``max_s``."""
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + max_s
    i = 0
    with _Bar("throughput", max_s) as bar:
        while i < max_batches and time.perf_counter() < deadline:
            done += fn(i)
            i += 1
            bar.tick(i)
    return done / (time.perf_counter() - t0)


@contextmanager
def ray_session() -> Iterator[None]:
    """An embedded local Ray for a benchmark, started and stopped here; or, when one runs
    already (several benchmarks in one process: ``python -m load A ... + B ...``, as CI's
    smoke runs them, so Ray starts once), that one, left running."""
    import ray

    if ray.is_initialized():
        yield
        return
    # Logical CPUs are a placement budget: enough for shards, routers and replicas at
    # their fractional requests on a 2-core machine.
    ray.init(address="local", num_cpus=4, log_to_driver=False, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def section(title: str) -> Iterator[None]:
    print(f"- {title}", flush=True)
    t0 = time.perf_counter()
    yield
    print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="a few-second run (what CI runs)")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    return p


def simulation_parser(
    doc: str, plot: str, seeds: int | None = None, duration_s: float | None = None
) -> argparse.ArgumentParser:
    """``base_parser`` and what a simulator takes: where ``write_simulation`` puts the
    table (``--markdown``) and the plot of ``plot`` (``--plot``), and, when given, its
    default number of seeds and simulated length."""
    p = base_parser(doc)
    if seeds is not None:
        p.add_argument("--seeds", type=int, default=seeds, help="seeds per cell")
    if duration_s is not None:
        p.add_argument("--duration-s", type=float, default=duration_s, help="simulated seconds")
    p.add_argument("--markdown", default=None, help="write the table as Markdown here")
    p.add_argument("--plot", default=None, help=f"write a PNG of {plot} here")
    return p


def seeds_of(args: argparse.Namespace) -> list[int]:
    """The seeds a simulator runs: one at smoke size, else 1 .. ``--seeds``."""
    return [1] if args.smoke else list(range(1, args.seeds + 1))


def lower_of_two(rng: np.random.Generator, values: np.ndarray) -> int:
    """Power of two choices: two distinct positions at random, the one with the lower
    value (a tie at random). The peers' P2C and least-request models share it."""
    a, b = rng.choice(len(values), 2, replace=False)
    if values[a] == values[b]:
        return int(a if rng.random() < 0.5 else b)
    return int(a if values[a] < values[b] else b)


def write_simulation(
    report: Report,
    args: argparse.Namespace,
    table: str,
    rows: list[dict[str, Any]],
    plot: Callable[[list[dict[str, Any]], str], None],
    extra: dict[str, Any] | None = None,
) -> None:
    """A simulator's outputs, where its ``--markdown``, ``--plot`` and ``--json`` say."""
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(table + "\n")
    if args.plot:
        plot(rows, args.plot)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({**report.to_json(), "rows": rows, **(extra or {})}, fh, indent=2)
