"""What outcomes teach: agents that fail, slow down or report wrongly, routed by Ripple
and by peers (a discrete-event simulation, same seeds for every strategy).

    python -m load outcomes --smoke         # CI size, seconds
    python -m load outcomes --json results/outcomes.json \\
        --markdown results/outcomes.md --plot results/outcomes.png

The fleet: 20 agents with 4 slots each (4 tasks run at once, more wait in FIFO order),
equal speeds (exponential service, mean 1 s), tasks arriving as a Poisson stream at 70%
of capacity, 600 s. Every agent publishes ``LOAD = min(1, tasks held / 4)`` every second
(phases staggered); every completion is reported with ``ok`` and ``duration_s``; a
failure is not retried (it counts as a failed task). Four scenarios:

- **black hole**: from t = 120 s one agent fails every task in 5 ms and, being idle,
  reports LOAD 0;
- **flaky**: one agent fails 30% of its tasks (at the end of a normal service time);
- **gray**: from t = 120 s one agent is 5x slower and its LOAD report is stuck at 0.2;
- **quality**: 10 agents whose success rates are 0.75 ... 0.99.

Strategies, each a faithful model of how it routes:

- Ripple, the real core (``ShardState``, injected clock, no Ray), as a new user runs it:
  ``select()`` with every default (balanced, default weights), ``max_concurrency``
  declared, completions reported;
- random; P2C on the reported LOAD (Ray Serve's default);
- LiteLLM-style: least busy on the router's own in-flight counts, with LiteLLM's
  cool-down (more than ``allowed_fails`` = 3 failures in the current minute, or a failure
  rate above 50% in it with at least 5 requests, cools the deployment down for 5 s);
- Envoy-style: least request (the better of two random agents by active requests) with
  outlier detection (5 consecutive errors eject; success-rate ejection for agents with
  100+ requests in a 10 s interval below mean - 1.9 sd of at least 5 such agents;
  ejection time 30 s x times ejected, at most 300 s; at most 10% of agents ejected;
  ejections are lifted at each 10 s interval);
- an oracle that knows the true state: the least expected time per successful task (the
  true speed, queue and success rate; ties at random): a free slot on the most reliable
  agent, unless its queue makes another sooner per success.

Figures per scenario and strategy (means over seeds): success rate, the share of tasks
sent to the bad agent after a 30 s detection window, mean and p99 sojourn (arrival to
completion), and the failures over time (regret, against the oracle).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from actors.core.config import ShardConfig
from actors.core.errors import Saturated
from actors.core.models import SelectRequest
from actors.core.state import ShardState
from load.common import (
    Report,
    lower_of_two,
    section,
    seeds_of,
    simulation_parser,
    write_simulation,
)

SLOTS = 4
PHASES = 10
BIN_S = 30.0  # width of a regret bin


@dataclass(frozen=True)
class Scenario:
    name: str
    agents: int = 20
    utilisation: float = 0.7
    duration_s: float = 600.0
    change_at_s: float = 120.0
    seed: int = 1

    def success_rates(self) -> np.ndarray:
        rates = np.ones(self.agents)
        if self.name == "flaky":
            rates[0] = 0.7
        elif self.name == "quality":
            rates[:] = np.linspace(0.75, 0.99, self.agents)
        return rates

    @property
    def bad_agent(self) -> int | None:
        return 0 if self.name in ("black hole", "flaky", "gray") else None

    @property
    def judged_from_s(self) -> float:
        """When the figures start: after the change plus a 30 s detection window (flaky:
        30 s from the start; quality: the 120 s the target allows for learning)."""
        if self.name in ("black hole", "gray"):
            return self.change_at_s + 30.0
        return 120.0 if self.name == "quality" else 30.0


@dataclass
class Agent:
    """One agent's true state: tasks running in its slots and those waiting."""

    running: int = 0
    waiting: deque[tuple[int, Any]] = field(default_factory=deque)

    @property
    def held(self) -> int:
        return self.running + len(self.waiting)


class World:
    """The truth the oracle sees and the simulation moves."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.agents = [Agent() for _ in range(sc.agents)]
        self.rates = sc.success_rates()
        self.now = 0.0

    def slow(self, a: int) -> float:
        return 5.0 if self.sc.name == "gray" and a == 0 and self.now >= self.sc.change_at_s else 1.0

    def black_hole(self, a: int) -> bool:
        return self.sc.name == "black hole" and a == 0 and self.now >= self.sc.change_at_s

    def success_rate(self, a: int) -> float:
        return 0.0 if self.black_hole(a) else float(self.rates[a])

    def reported_load(self, a: int) -> float:
        if self.sc.name == "gray" and a == 0 and self.now >= self.sc.change_at_s:
            return 0.2  # stuck
        return min(1.0, self.agents[a].held / SLOTS)


class Router:
    name = "router"

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n = n
        self.rng = rng

    def pick(self, now: float, world: World) -> tuple[int, Any]:
        raise NotImplementedError

    def report(self, now: float, agents: list[int], loads: list[float]) -> None:
        """Agents published LOAD."""

    def completed(self, now: float, agent: int, token: Any, ok: bool, duration_s: float) -> None:
        """A task ended (its caller reports every completion)."""

    def random_among(self, idx: np.ndarray) -> int:
        return int(idx[self.rng.integers(len(idx))])


class RandomRouter(Router):
    name = "random"

    def pick(self, now: float, world: World) -> tuple[int, Any]:
        return int(self.rng.integers(self.n)), None


class P2C(Router):
    name = "p2c (reported LOAD)"

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        super().__init__(n, rng)
        self.load = np.zeros(n)

    def report(self, now: float, agents: list[int], loads: list[float]) -> None:
        self.load[agents] = loads

    def pick(self, now: float, world: World) -> tuple[int, Any]:
        return lower_of_two(self.rng, self.load), None


class LiteLLMCooldown(Router):
    """Least busy by the router's own in-flight counts, skipping deployments in cool-down."""

    name = "litellm-style cool-down (least busy)"
    allowed_fails = 3
    cooldown_s = 5.0

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        super().__init__(n, rng)
        self.inflight = np.zeros(n)
        self.until = np.zeros(n)
        self.minute = -1
        self.fails = np.zeros(n)
        self.reqs = np.zeros(n)

    def _roll(self, now: float) -> None:
        m = int(now // 60)
        if m != self.minute:
            self.minute, self.fails[:], self.reqs[:] = m, 0, 0

    def pick(self, now: float, world: World) -> tuple[int, Any]:
        self._roll(now)
        ok = np.flatnonzero(self.until <= now)
        if not len(ok):
            ok = np.arange(self.n)  # every deployment cooling down: LiteLLM tries them all
        busy = self.inflight[ok]
        a = self.random_among(ok[busy == busy.min()])
        self.inflight[a] += 1
        self.reqs[a] += 1
        return a, None

    def completed(self, now: float, agent: int, token: Any, ok: bool, duration_s: float) -> None:
        self._roll(now)
        self.inflight[agent] -= 1
        if ok:
            return
        self.fails[agent] += 1
        rate_bad = self.reqs[agent] >= 5 and self.fails[agent] / self.reqs[agent] > 0.5
        if self.fails[agent] > self.allowed_fails or rate_bad:
            self.until[agent] = now + self.cooldown_s


class EnvoyOutlier(Router):
    """Least request (P2C on active requests) with outlier detection."""

    name = "envoy-style outlier detection (least request)"
    consecutive = 5
    interval_s = 10.0
    base_ejection_s = 30.0
    max_ejection_s = 300.0
    max_ejected = 0.10
    sr_min_hosts, sr_min_requests, sr_stdev_factor = 5, 100, 1.9

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        super().__init__(n, rng)
        self.active = np.zeros(n)
        self.run = np.zeros(n, np.int64)
        self.ejected_until = np.full(n, -np.inf)
        self.times = np.zeros(n, np.int64)
        self.next_tick = self.interval_s
        self.ok_i = np.zeros(n)
        self.all_i = np.zeros(n)

    def _eject(self, a: int, now: float) -> None:
        if self.ejected_until[a] > now:
            return
        if np.count_nonzero(self.ejected_until > now) + 1 > self.max_ejected * self.n:
            return
        self.times[a] += 1
        self.ejected_until[a] = now + min(self.base_ejection_s * self.times[a], self.max_ejection_s)

    def _tick(self, now: float) -> None:
        while now >= self.next_tick:
            t = self.next_tick
            self.next_tick += self.interval_s
            hosts = np.flatnonzero(self.all_i >= self.sr_min_requests)
            if len(hosts) >= self.sr_min_hosts:
                sr = self.ok_i[hosts] / self.all_i[hosts]
                limit = sr.mean() - self.sr_stdev_factor * sr.std()
                for h in hosts[sr < limit].tolist():
                    self._eject(h, t)
            self.ok_i[:], self.all_i[:] = 0, 0

    def pick(self, now: float, world: World) -> tuple[int, Any]:
        self._tick(now)
        ok = np.flatnonzero(self.ejected_until <= now)
        if len(ok) < 2:
            ok = np.arange(self.n)
        a, b = self.rng.choice(ok, 2, replace=False)
        if self.active[a] == self.active[b]:
            pick = int(a if self.rng.random() < 0.5 else b)
        else:
            pick = int(a if self.active[a] < self.active[b] else b)
        self.active[pick] += 1
        return pick, None

    def completed(self, now: float, agent: int, token: Any, ok: bool, duration_s: float) -> None:
        self._tick(now)
        self.active[agent] -= 1
        self.all_i[agent] += 1
        if ok:
            self.ok_i[agent] += 1
            self.run[agent] = 0
            return
        self.run[agent] += 1
        if self.run[agent] >= self.consecutive:
            self.run[agent] = 0
            self._eject(agent, now)


class Oracle(Router):
    name = "oracle (true state)"

    def pick(self, now: float, world: World) -> tuple[int, Any]:
        held = np.array([a.held for a in world.agents])
        rate = np.array([world.success_rate(a) for a in range(self.n)])
        slow = np.array([world.slow(a) for a in range(self.n)])
        # Expected seconds per successful task, on the true queues, speeds and rates.
        cost = slow * np.maximum(1.0, (held + 1) / SLOTS) / np.maximum(rate, 1e-6)
        return self.random_among(np.flatnonzero(cost == cost.min())), None


class Ripple(Router):
    name = "ripple (defaults)"

    def __init__(self, n: int, rng: np.random.Generator, clock: Callable[[], float], seed: int):
        super().__init__(n, rng)
        self.ids = [f"agent-{i}" for i in range(n)]
        self.row = {a: i for i, a in enumerate(self.ids)}
        self.state = ShardState(ShardConfig(initial_capacity=n), clock=clock, seed=seed)
        for a in self.ids:
            self.state.describe(a, max_concurrency=SLOTS)
        self.req = SelectRequest()
        self.released_false = 0  # completions of tasks the core had already expired

    def report(self, now: float, agents: list[int], loads: list[float]) -> None:
        self.state.ingest_arrays([self.ids[a] for a in agents], ["LOAD"] * len(agents), loads)

    def pick(self, now: float, world: World) -> tuple[int, Any]:
        try:
            s = self.state.select(self.req).selected[0]
        except Saturated:  # every agent at its max_concurrency: the task waits here
            return -1, None
        return self.row[s.agent_id], s.assignment_id

    def completed(self, now: float, agent: int, token: Any, ok: bool, duration_s: float) -> None:
        out = self.state.complete(self.ids[agent], token, ok=ok, duration_s=duration_s)
        self.released_false += not out.released


@dataclass
class Outcome:
    scenario: str
    strategy: str
    seed: int
    success: float
    bad_share: float | None
    mean_s: float
    p99_s: float
    tasks: int
    failures_by_bin: list[int]
    tasks_by_bin: list[int]
    released_false: int = 0


def makers(sc: Scenario, clock: Callable[[], float]) -> list[Callable[[], Router]]:
    n = sc.agents

    def rng(k: int) -> np.random.Generator:
        return np.random.default_rng([sc.seed, 1000 + k])

    def peer(k: int, cls: type[Router]) -> Callable[[], Router]:
        return lambda: cls(n, rng(k))

    peers: list[type[Router]] = [RandomRouter, P2C, LiteLLMCooldown, EnvoyOutlier, Oracle]
    out = [peer(k, cls) for k, cls in enumerate(peers)]
    out.append(lambda: Ripple(n, rng(60), clock, sc.seed + 60))
    return out


def simulate(sc: Scenario, make: Callable[[], Router], clock_cell: list[float]) -> Outcome:
    rng = np.random.default_rng(sc.seed)
    capacity = sc.agents * SLOTS  # tasks/s at mean service 1 s
    rate = sc.utilisation * capacity
    count = int(rate * sc.duration_s * 1.2) + 10
    arrivals = np.cumsum(rng.exponential(1.0 / rate, count))
    arrivals = arrivals[arrivals < sc.duration_s]
    work = rng.exponential(1.0, len(arrivals))
    luck = rng.random(len(arrivals))  # a task fails when luck >= its agent's success rate
    world = World(sc)
    clock_cell[0] = 0.0
    router = make()
    events: list[tuple[float, int, str, int]] = []
    seq = itertools.count()
    groups = np.array_split(rng.permutation(sc.agents), PHASES)
    for g in range(PHASES):
        heapq.heappush(events, (g / PHASES, next(seq), "report", g))
    if len(arrivals):
        heapq.heappush(events, (float(arrivals[0]), next(seq), "arrive", 0))
    where = np.full(len(arrivals), -1)
    done_at = np.full(len(arrivals), np.nan)
    ok_task = np.zeros(len(arrivals), bool)
    tokens: dict[int, Any] = {}

    def start(a: int, task: int, now: float) -> None:
        agent = world.agents[a]
        agent.running += 1
        dur = 0.005 if world.black_hole(a) else work[task] * world.slow(a)
        heapq.heappush(events, (now + dur, next(seq), "done", task))
        started[task] = (now, dur)

    started: dict[int, tuple[float, float]] = {}
    # Tasks held at the router while every agent is at its max_concurrency (Ripple's
    # admission; DESIGN §4): bound to an agent when a completion frees a slot.
    parked: deque[int] = deque()

    def place(a: int, task: int, token: Any, now: float) -> None:
        where[task], tokens[task] = a, token
        agent = world.agents[a]
        if agent.running < SLOTS:
            start(a, task, now)
        else:
            agent.waiting.append((task, token))

    while events:
        now, _, kind, x = heapq.heappop(events)
        if now > sc.duration_s + 120:
            break
        clock_cell[0] = world.now = now
        if kind == "arrive":
            a, token = router.pick(now, world)
            if a < 0:
                parked.append(x)
            else:
                place(a, x, token, now)
            if x + 1 < len(arrivals):
                heapq.heappush(events, (float(arrivals[x + 1]), next(seq), "arrive", x + 1))
        elif kind == "done":
            a = int(where[x])
            agent = world.agents[a]
            agent.running -= 1
            ok = bool(luck[x] < world.success_rate(a))
            ok_task[x] = ok
            done_at[x] = now
            _, dur = started.pop(x)
            router.completed(now, a, tokens.pop(x), ok, dur)
            if agent.waiting:
                nxt, _ = agent.waiting.popleft()
                start(a, nxt, now)
            while parked:  # a slot freed: tasks Ripple held back are bound now
                a, token = router.pick(now, world)
                if a < 0:
                    break
                place(a, parked.popleft(), token, now)
        elif now < sc.duration_s:  # a report phase
            agents = groups[x].tolist()
            router.report(now, agents, [world.reported_load(a) for a in agents])
            heapq.heappush(events, (now + 1.0, next(seq), "report", x))
    judged = (arrivals >= sc.judged_from_s) & np.isfinite(done_at)
    soj = (done_at - arrivals)[judged]
    bins = int(np.ceil(sc.duration_s / BIN_S))
    b = np.minimum((arrivals // BIN_S).astype(int), bins - 1)
    finished = np.isfinite(done_at)
    fails = np.bincount(b[finished & ~ok_task], minlength=bins)
    tasks = np.bincount(b[finished], minlength=bins)
    bad = sc.bad_agent
    return Outcome(
        sc.name,
        router.name,
        sc.seed,
        float(ok_task[judged].mean()),
        None if bad is None else float((where[judged] == bad).mean()),
        float(soj.mean()),
        float(np.percentile(soj, 99)),
        int(judged.sum()),
        fails.tolist(),
        tasks.tolist(),
        getattr(router, "released_false", 0),
    )


SCENARIOS = ("black hole", "flaky", "gray", "quality")


def scenario(name: str, seed: int, smoke: bool) -> Scenario:
    agents = 10 if name == "quality" else 20
    return Scenario(name, agents=agents, seed=seed, duration_s=180.0 if smoke else 600.0)


def run(seeds: list[int], smoke: bool) -> list[Outcome]:
    out = []
    cell = [0.0]
    for name in SCENARIOS:
        for seed in seeds:
            sc = scenario(name, seed, smoke)
            with section(f"{name}, seed {seed}"):
                out += [simulate(sc, make, cell) for make in makers(sc, lambda: cell[0])]
    return out


def summarise(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """Means over seeds, per scenario and strategy, with ratios to the oracle."""
    rows: list[dict[str, Any]] = []
    keys = list(dict.fromkeys((o.scenario, o.strategy) for o in outcomes))
    for scen, strat in keys:
        group = [o for o in outcomes if o.scenario == scen and o.strategy == strat]
        oracle = [o for o in outcomes if o.scenario == scen and o.strategy.startswith("oracle")]
        row: dict[str, Any] = {
            "scenario": scen,
            "strategy": strat,
            "seeds": len(group),
            "success": float(np.mean([o.success for o in group])),
            "bad_share": None
            if group[0].bad_share is None
            else float(np.mean([o.bad_share for o in group])),
            "mean_s": float(np.mean([o.mean_s for o in group])),
            "p99_s": float(np.mean([o.p99_s for o in group])),
            "tasks": int(sum(o.tasks for o in group)),
            "released_false": int(sum(o.released_false for o in group)),
        }
        row["success_vs_oracle"] = row["success"] / float(np.mean([o.success for o in oracle]))
        row["mean_vs_oracle"] = row["mean_s"] / float(np.mean([o.mean_s for o in oracle]))
        fails = np.sum([o.failures_by_bin for o in group], axis=0)
        ofails = np.sum([o.failures_by_bin for o in oracle], axis=0)
        row["regret_by_bin"] = np.cumsum(fails - ofails).tolist()
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | strategy | success | vs oracle | share to the bad agent | mean sojourn (s) "
        "| vs oracle | p99 (s) | regret at the end (tasks) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        share = "" if r["bad_share"] is None else f"{100 * r['bad_share']:.2f}%"
        lines.append(
            f"| {r['scenario']} | {r['strategy']} | {r['success']:.4f} | "
            f"{r['success_vs_oracle']:.4f} | {share} | {r['mean_s']:.3f} | "
            f"{r['mean_vs_oracle']:.2f} | {r['p99_s']:.2f} | {r['regret_by_bin'][-1]} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SCENARIOS), figsize=(18, 4.5))
    for ax, scen in zip(axes, SCENARIOS, strict=True):
        for r in rows:
            if r["scenario"] != scen:
                continue
            x = BIN_S * (np.arange(len(r["regret_by_bin"])) + 1)
            style = "-" if r["strategy"].startswith(("ripple", "oracle")) else "--"
            ax.plot(x, r["regret_by_bin"], style, label=r["strategy"])
        ax.set_title(scen)
        ax.set_xlabel("time (s)")
        ax.set_yscale("symlog")
    axes[0].set_ylabel("failed tasks beyond the oracle's (cumulative)")
    axes[-1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> Report:
    args = simulation_parser(__doc__ or "", "regret over time", seeds=5).parse_args(argv)
    seeds = seeds_of(args)
    report = Report("outcomes", {"smoke": args.smoke, "seeds": seeds})
    outcomes = run(seeds, args.smoke)
    rows = summarise(outcomes)
    table = markdown(rows)
    print(table)
    for r in rows:
        if r["strategy"].startswith("ripple"):
            report.add(f"{r['scenario']}: success vs oracle", r["success_vs_oracle"], "x")
            report.add(f"{r['scenario']}: mean sojourn vs oracle", r["mean_vs_oracle"], "x")
            if r["bad_share"] is not None:
                report.add(f"{r['scenario']}: share to the bad agent", 100 * r["bad_share"], "%")
            report.add(f"{r['scenario']}: released false", r["released_false"], "completions")
    write_simulation(report, args, table, rows, plot, {"runs": [asdict(o) for o in outcomes]})
    return report


if __name__ == "__main__":
    main()
