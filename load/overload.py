"""Overload prediction quality: Ripple's predictor beside persistence and a damped trend.

    python -m load overload --smoke
    python -m load overload --traces 400 --json results/overload.json

A generator of LOAD traces in seven shapes (linear ramps, spikes, saturating curves,
steps, oscillations, random walks, flat), each with measurement noise, sampled every
``--every-s`` seconds. For each trace the history up to a random cut goes into a real
``ShardState`` (injected clock) and each predictor gives P(LOAD > threshold at cut +
horizon); the truth is the *observed* LOAD there (what an operator would see). Same traces
and cuts for every predictor.

Baselines, each with a Gaussian spread from the trace's own increments (so their Brier
score is not handicapped by hard 0/1 answers):
- persistence: the last value stays;
- damped trend: Holt's linear trend with damping (alpha 0.5, beta 0.3, phi 0.98 per sample).

Figures: F1 at P >= 0.5, Brier score, and a reliability table (mean predicted probability
against observed frequency per bin).

**Task traces** (``--task-traces``): LOAD is what an agent's queue makes of the tasks it is
given. An agent with 8 slots (exponential service, mean 1 s) gets tasks as a Poisson
stream whose rate follows one of the seven shapes (its utilisation from 0 to 1.3); every
task is assigned through a real ``ShardState`` and completed with its duration, and the
agent reports ``LOAD = min(1, tasks held / 8)`` every 5 s. The same predictors at a random
cut, plus Ripple's LOAD trend alone (what it predicts without the measured state). The
fluid model's one constant (``actors.core.fluid.LEVEL_ERROR``) was set on seed 5; the
default seed (31) is held out.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from actors.core.models import PredictParams
from actors.core.state import ShardState
from load.common import Report, base_parser, section

SHAPES = ("ramp", "spike", "saturating", "step", "oscillation", "random_walk", "flat")


def trace(shape: str, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A noise-free LOAD curve of ``shape`` over times ``t`` (seconds from 0)."""
    dur = t[-1]
    base = rng.uniform(0.05, 0.6)
    if shape == "ramp":
        y = base + rng.uniform(-0.4, 1.0) * t / dur
    elif shape == "spike":
        at, width = rng.uniform(0.2, 1.0) * dur, rng.uniform(20, 120)
        y = base + rng.uniform(0.2, 0.7) * np.exp(-0.5 * ((t - at) / width) ** 2)
    elif shape == "saturating":
        y = base + rng.uniform(0.1, 0.7) * (1 - np.exp(-t / rng.uniform(60, 400)))
    elif shape == "step":
        y = base + rng.uniform(-0.3, 0.5) * (t > rng.uniform(0.3, 1.0) * dur)
    elif shape == "oscillation":
        y = base + rng.uniform(0.05, 0.35) * np.sin(
            2 * np.pi * t / rng.uniform(120, 900) + rng.uniform(0, 6.3)
        )
    elif shape == "random_walk":
        steps = rng.normal(0, rng.uniform(0.005, 0.03), len(t))
        y = base + np.cumsum(steps)
    else:
        y = np.full(len(t), rng.uniform(0.05, 0.95))
    return np.asarray(y)


@dataclass
class Case:
    shape: str
    times: np.ndarray  # observed sample times up to the cut
    values: np.ndarray
    truth: float  # observed value at cut + horizon


def make_cases(n: int, horizon_s: float, every_s: float, seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    out = []
    duration = 900.0
    t = np.arange(0.0, duration + horizon_s + every_s, every_s)
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        clean = trace(shape, t, rng)
        noisy = np.clip(clean + rng.normal(0, rng.uniform(0.005, 0.04), len(t)), 0.0, 1.0)
        cut = int(rng.integers(int(120 / every_s), int(duration / every_s)))
        ahead = cut + round(horizon_s / every_s)
        out.append(Case(shape, t[: cut + 1], noisy[: cut + 1], float(noisy[ahead])))
    return out


def ripple(cases: list[Case], horizon_s: float, threshold: float) -> np.ndarray:
    now = [0.0]
    params = PredictParams(horizon_s=horizon_s, threshold=threshold)
    out = np.full(len(cases), np.nan)
    t0 = 1_700_000_000.0
    for i, c in enumerate(cases):
        state = ShardState(clock=lambda: now[0])
        now[0] = t0 + float(c.times[-1])
        keep = c.times >= c.times[-1] - 600.0
        state.ingest_arrays(
            ["a"] * int(keep.sum()),
            ["LOAD"] * int(keep.sum()),
            c.values[keep],
            ttls_s=[60.0] * int(keep.sum()),
            timestamps_s=(t0 + c.times[keep]).tolist(),
        )
        p = state.predict("a", params)
        out[i] = p.probability if p.probability is not None else np.nan
    return out


def _spread(c: Case, horizon_s: float) -> float:
    """Std of the h-step change implied by the trace's own one-step increments."""
    inc = np.diff(c.values[-120:])
    dt = float(np.median(np.diff(c.times)))
    return max(float(np.std(inc)) * math.sqrt(horizon_s / dt), 0.02)


def persistence(cases: list[Case], horizon_s: float, threshold: float) -> np.ndarray:
    return np.array(
        [norm.sf(threshold, loc=c.values[-1], scale=_spread(c, horizon_s)) for c in cases]
    )


def damped_trend(
    cases: list[Case],
    horizon_s: float,
    threshold: float,
    alpha: float = 0.5,
    beta: float = 0.3,
    phi: float = 0.98,
) -> np.ndarray:
    out = []
    for c in cases:
        y = c.values[-120:]
        level, trend = float(y[0]), 0.0
        for v in y[1:]:
            prev = level
            level = alpha * v + (1 - alpha) * (level + phi * trend)
            trend = beta * (level - prev) + (1 - beta) * phi * trend
        steps = round(horizon_s / float(np.median(np.diff(c.times))))
        forecast = level + trend * sum(phi**k for k in range(1, steps + 1))
        out.append(norm.sf(threshold, loc=forecast, scale=_spread(c, horizon_s)))
    return np.array(out)


SLOTS = 8
REPORT_EVERY_S = 5.0


@dataclass
class TaskCase:
    shape: str
    probs: dict[str, float]  # predictor -> P(overload at cut + horizon)
    truth: float


def task_case(shape: str, horizon_s: float, threshold: float, rng: np.random.Generator) -> TaskCase:
    """One agent's queue through a real core, predicted at a random cut."""
    duration = 900.0
    grid = np.arange(0.0, duration + horizon_s + 1.0, 1.0)
    rho = np.clip(trace(shape, grid, rng), 0.0, 1.0) * 1.3
    lam = rho * SLOTS  # tasks/s at a mean service time of 1 s
    lam_max = max(float(lam.max()), 1e-9)
    cand = np.cumsum(rng.exponential(1.0 / lam_max, int(lam_max * grid[-1] * 1.5) + 10))
    cand = cand[cand < grid[-1]]
    arrivals = cand[rng.random(len(cand)) < np.interp(cand, grid, lam) / lam_max]
    cut = float(rng.uniform(120.0, duration))
    cut = REPORT_EVERY_S * round(cut / REPORT_EVERY_S)
    t0 = 1_700_000_000.0
    now = [t0]
    state = ShardState(clock=lambda: now[0])
    state.describe("a", max_concurrency=SLOTS)
    busy: list[tuple[float, int, str | None, float]] = []  # (done at, seq, id, duration)
    waiting: list[tuple[int, str | None]] = []
    held_at: dict[float, int] = {}
    loads: list[tuple[float, float]] = []
    seq = 0
    i = 0
    next_report = 0.0
    end = cut + horizon_s

    def held() -> int:
        return len(busy) + len(waiting)

    while True:
        t_arr = float(arrivals[i]) if i < len(arrivals) else np.inf
        t_done = busy[0][0] if busy else np.inf
        t = min(t_arr, t_done, next_report)
        if t > end:
            break
        now[0] = t0 + t
        if t == next_report:
            load = min(1.0, held() / SLOTS)
            held_at[t] = held()
            if t <= cut:
                loads.append((t, load))
                state.ingest_arrays(["a"], ["LOAD"], [load], timestamps_s=[t0 + t])
            next_report += REPORT_EVERY_S
        elif t == t_arr:
            aid = state.assign(["a"]).get("a") if t <= cut else None
            i += 1
            seq += 1
            if len(busy) < SLOTS:
                dur = float(rng.exponential(1.0))
                heapq.heappush(busy, (t + dur, seq, aid, dur))
            else:
                waiting.append((seq, aid))
        else:
            _, _, aid, dur = heapq.heappop(busy)
            if t <= cut:
                state.complete("a", aid, duration_s=dur)
            if waiting:
                s2, a2 = waiting.pop(0)
                d2 = float(rng.exponential(1.0))
                heapq.heappush(busy, (t + d2, s2, a2, d2))
    now[0] = t0 + cut
    params = PredictParams(horizon_s=horizon_s, threshold=threshold)
    rows = np.array([0])
    with_state = state.predict("a", params).probability
    trend = state.predictor.fit(rows, t0 + cut, params, state.estimate.deltas(rows, t0 + cut))
    series = Case(shape, np.array([x for x, _ in loads]), np.array([v for _, v in loads]), 0.0)
    probs = {
        "ripple": np.nan if with_state is None else float(with_state),
        "ripple, LOAD trend only": float(trend.probability[0]),
        "persistence": float(persistence([series], horizon_s, threshold)[0]),
        "damped trend": float(damped_trend([series], horizon_s, threshold)[0]),
    }
    truth = min(1.0, held_at.get(cut + horizon_s, held()) / SLOTS)
    return TaskCase(shape, probs, truth)


def task_cases(n: int, horizon_s: float, threshold: float, seed: int) -> list[TaskCase]:
    rng = np.random.default_rng(seed)
    return [task_case(SHAPES[i % len(SHAPES)], horizon_s, threshold, rng) for i in range(n)]


def scores(prob: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    ok = np.isfinite(prob)
    p, y = prob[ok], truth[ok]
    pred = p >= 0.5
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    bins = np.linspace(0, 1, 6)
    which = np.clip(np.digitize(p, bins) - 1, 0, 4)
    reliability = [
        {
            "bin": f"{bins[b]:.1f}-{bins[b + 1]:.1f}",
            "cases": int((which == b).sum()),
            "mean_predicted": float(p[which == b].mean()) if (which == b).any() else None,
            "observed": float(y[which == b].mean()) if (which == b).any() else None,
        }
        for b in range(5)
    ]
    return {
        "f1": f1,
        "brier": float(np.mean((p - y) ** 2)),
        "answered": int(ok.sum()),
        "overconfident_share": float(np.mean((p < 0.01) | (p > 0.99))),
        "reliability": reliability,
    }


def main(argv: list[str] | None = None) -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--traces", type=int, default=2100)
    parser.add_argument("--horizon-s", type=float, default=60.0)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--every-s", type=float, default=5.0)
    # The predictor's half-life and damping (30 s each) were chosen on seeds 7 and 11;
    # the default seed is a held-out set.
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--task-traces", type=int, default=350, help="0: none")
    parser.add_argument("--task-seed", type=int, default=31)
    args = parser.parse_args(argv)
    n = 70 if args.smoke else args.traces
    report = Report("overload", {"traces": n, "horizon_s": args.horizon_s, "smoke": args.smoke})
    cases = make_cases(n, args.horizon_s, args.every_s, args.seed)
    truth = np.array([c.truth > args.threshold for c in cases])
    predictors: dict[str, Callable[[list[Case], float, float], np.ndarray]] = {
        "ripple": ripple,
        "persistence": persistence,
        "damped trend": damped_trend,
    }
    results: dict[str, Any] = {}
    for name, fn in predictors.items():
        with section(name):
            results[name] = scores(fn(cases, args.horizon_s, args.threshold), truth)
        report.add(f"{name}: F1", results[name]["f1"], "", target="≥ 0.85 (ripple)")
        report.add(f"{name}: Brier", results[name]["brier"], "", target="≤ 0.07 (ripple)")
    print(f"\n{int(truth.sum())} of {n} cases overload at the horizon")
    for name, r in results.items():
        print(f"\nreliability, {name} (answered {r['answered']}):")
        for b in r["reliability"]:
            print(
                f"  {b['bin']}: {b['cases']} cases, predicted {b['mean_predicted']}, "
                f"observed {b['observed']}"
            )
    tasks: dict[str, Any] = {}
    n_tasks = 14 if args.smoke else args.task_traces
    if n_tasks:
        with section(f"task traces ({n_tasks}, seed {args.task_seed})"):
            tcases = task_cases(n_tasks, args.horizon_s, args.threshold, args.task_seed)
        ttruth = np.array([c.truth > args.threshold for c in tcases])
        for name in tcases[0].probs:
            prob = np.array([c.probs[name] for c in tcases])
            tasks[name] = scores(prob, ttruth)
            label = f"task traces, {name}"
            report.add(f"{label}: F1", tasks[name]["f1"], "", target="≥ 0.85 (ripple)")
            report.add(f"{label}: Brier", tasks[name]["brier"], "", target="≤ 0.07 (ripple)")
        print(f"\n{int(ttruth.sum())} of {n_tasks} task traces overload at the horizon")
    report.finish(
        args.json,
        {"predictors": results, "positives": int(truth.sum()), "task_traces": tasks},
    )
    return report


if __name__ == "__main__":
    main()
