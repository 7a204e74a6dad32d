"""Routing quality: a discrete-event simulation of a fleet, routed by Ripple and by peers.

    python -m load routing --smoke          # CI size, seconds
    python -m load routing --json results/routing.json --markdown results/routing.md \\
        --plot results/routing.png

Agents are single-server FIFO queues whose speeds differ (``--heterogeneity`` is the
ratio of the fastest to the slowest); tasks arrive as a Poisson stream at a given share
of the fleet's capacity. Every agent publishes ``LOAD = min(1, tasks in system / 20)`` and
``CAPACITY = speed / fastest speed`` every publication period (phases staggered), as a
real fleet would; in the "claim fastest" scenarios the ten slowest agents say CAPACITY 1.0
instead (a wrong or lying claim). Each strategy routes the *same* arrivals and service
times (same seeds):

- Ripple, driving the real core (``ShardState``, injected clock, no Ray): ``balanced``
  with completions reported (and ``max_concurrency`` declared), ``balanced`` with no
  completions (assignments expire), the old default (``best``, no assignment), ``p2c``
  and ``weighted``;
- peers, modelled as they work: random, round robin (per router), least-busy on the
  reported LOAD (LiteLLM's least-busy routes on a load figure that lags), greedy argmax of
  the reported score, P2C on the reported LOAD (Ray Serve's default, on cached queue
  lengths), a router that counts its own assignments since the last report (what llm-d /
  Dynamo style pickers do, per router), and an oracle that joins the shortest expected
  wait on the true state.

With several routers, arrivals are spread round robin over them; peers that keep local
state keep it per router, while every Ripple router shares the owner shard's state.
Figures: mean and p99 sojourn (arrival to completion), each as a ratio to the oracle and
to P2C, and evenness (the overlap of each agent's share of tasks with its capacity share;
1 is perfectly proportional).
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
from actors.core.models import SelectRequest, Strategy, Weights
from actors.core.state import ShardState
from load.common import (
    Report,
    lower_of_two,
    section,
    simulation_parser,
    write_simulation,
)

QUEUE_FULL = 20  # tasks at which an agent reports LOAD 1.0; also its max_concurrency
PHASES = 10  # report phases per period, so reports are staggered like a real fleet's
TTL_PERIODS = 10.0


@dataclass(frozen=True)
class Scenario:
    agents: int = 100
    utilisation: float = 0.9
    period_s: float = 1.0
    heterogeneity: float = 3.0
    routers: int = 1
    tasks: int = 20_000
    seed: int = 1
    liars: int = 0  # the slowest agents, claiming the fastest's CAPACITY (1.0)

    @property
    def label(self) -> str:
        return (
            f"util {self.utilisation:g}, period {self.period_s:g} s, "
            f"speeds {self.heterogeneity:g}x, routers {self.routers}"
        ) + (f", {self.liars} slowest claim fastest" if self.liars else "")


@dataclass
class Fleet:
    """The true state: queues, speeds, what each agent served."""

    speed: np.ndarray
    queues: list[deque[tuple[float, str | None]]] = field(default_factory=list)
    served: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.queues = [deque() for _ in range(len(self.speed))]
        self.served = np.zeros(len(self.speed), np.int64)

    def in_system(self) -> np.ndarray:
        return np.array([len(q) for q in self.queues])


class Router:
    """A routing strategy: ``pick`` an agent for a task; hear reports and completions."""

    name = "router"

    def __init__(self, n: int, routers: int, rng: np.random.Generator) -> None:
        self.n = n
        self.routers = routers
        self.rng = rng

    def pick(self, now: float, router: int, fleet: Fleet) -> tuple[int, str | None]:
        raise NotImplementedError

    def report(self, now: float, agents: np.ndarray, load: np.ndarray, cap: np.ndarray) -> None:
        """Agents published LOAD and CAPACITY (every router hears it)."""

    def completed(self, now: float, agent: int, task: str | None, duration_s: float) -> None:
        """A task ended; only strategies that are told of completions use this."""


class Reported(Router):
    """Peers that route on the last published figures."""

    def __init__(self, n: int, routers: int, rng: np.random.Generator) -> None:
        super().__init__(n, routers, rng)
        self.load = np.zeros(n)
        self.cap = np.ones(n)

    def report(self, now: float, agents: np.ndarray, load: np.ndarray, cap: np.ndarray) -> None:
        self.load[agents] = load
        self.cap[agents] = cap

    def argmin_random(self, x: np.ndarray) -> int:
        best = np.flatnonzero(x == x.min())
        return int(best[self.rng.integers(len(best))])


class RandomRouter(Router):
    name = "random"

    def pick(self, now: float, router: int, fleet: Fleet) -> tuple[int, str | None]:
        return int(self.rng.integers(self.n)), None


class RoundRobin(Router):
    name = "round robin"

    def __init__(self, n: int, routers: int, rng: np.random.Generator) -> None:
        super().__init__(n, routers, rng)
        self.next = [int(rng.integers(n)) for _ in range(routers)]

    def pick(self, now: float, router: int, fleet: Fleet) -> tuple[int, str | None]:
        a = self.next[router]
        self.next[router] = (a + 1) % self.n
        return a, None


class LeastBusy(Reported):
    name = "least-busy (reported)"

    def pick(self, now: float, router: int, fleet: Fleet) -> tuple[int, str | None]:
        return self.argmin_random(self.load), None


class Greedy(Reported):
    """Argmax of the same weighted score Ripple uses, on the reported state."""

    name = "greedy argmax (reported)"

    def pick(self, now: float, router: int, fleet: Fleet) -> tuple[int, str | None]:
        return self.argmin_random(-(0.25 * (1 - self.load) + 0.25 * self.cap)), None


class P2C(Reported):
    name = "p2c (reported)"

    def pick(self, now: float, router: int, fleet: Fleet) -> tuple[int, str | None]:
        return lower_of_two(self.rng, self.load), None


class LocalCounts(Reported):
    """Reported LOAD plus this router's own assignments since that report."""

    name = "local counts (per router)"

    def __init__(self, n: int, routers: int, rng: np.random.Generator) -> None:
        super().__init__(n, routers, rng)
        self.sent = np.zeros((routers, n))

    def report(self, now: float, agents: np.ndarray, load: np.ndarray, cap: np.ndarray) -> None:
        super().report(now, agents, load, cap)
        self.sent[:, agents] = 0

    def pick(self, now: float, router: int, fleet: Fleet) -> tuple[int, str | None]:
        a = self.argmin_random(self.load + self.sent[router] / QUEUE_FULL)
        self.sent[router, a] += 1
        return a, None


class Oracle(Router):
    """Join the shortest expected wait, on the true queues and speeds."""

    name = "oracle (true state)"

    def pick(self, now: float, router: int, fleet: Fleet) -> tuple[int, str | None]:
        wait = (fleet.in_system() + 1) / fleet.speed
        best = np.flatnonzero(wait == wait.min())
        return int(best[self.rng.integers(len(best))]), None


class Ripple(Router):
    """The real core: reports are ingested, each task is a ``select``."""

    def __init__(
        self,
        n: int,
        routers: int,
        rng: np.random.Generator,
        *,
        strategy: Strategy,
        assign: bool,
        completions: bool,
        declare: bool,
        clock: Callable[[], float],
        seed: int,
        default_weights: bool = False,
    ) -> None:
        super().__init__(n, routers, rng)
        self.name = f"ripple {strategy}" + (
            "" if not assign else " + completions" if completions else " (no completions)"
        )
        if not assign:
            self.name += " (old default)" if strategy == "best" else ""
        # The load dimension alone, or (as a new user would) the default weights, under
        # which the CAPACITY every agent reports is a preference too.
        self.name += ", default weights" if default_weights else ", load weighted alone"
        weights = None if default_weights else Weights(load=1)
        self.req = SelectRequest(strategy=strategy, assign=assign, weights=weights)
        self.completions = completions
        self.ids = [f"agent-{i}" for i in range(n)]
        self.row = {a: i for i, a in enumerate(self.ids)}
        self.state = ShardState(
            ShardConfig(default_task_load=1 / QUEUE_FULL, initial_capacity=n),
            clock=clock,
            seed=seed,
        )
        if declare:
            for a in self.ids:
                self.state.describe(a, max_concurrency=QUEUE_FULL)

    def report(self, now: float, agents: np.ndarray, load: np.ndarray, cap: np.ndarray) -> None:
        ids = [self.ids[a] for a in agents.tolist()]
        # A TTL of several periods: a report stays live until the next, with some decay.
        ttl = [max(5.0, TTL_PERIODS * self.period_s)] * len(ids)
        self.state.ingest_arrays(
            ids + ids,
            ["LOAD"] * len(ids) + ["CAPACITY"] * len(ids),
            np.concatenate([load, cap]),
            ttls_s=ttl + ttl,
        )

    period_s = 1.0

    def pick(self, now: float, router: int, fleet: Fleet) -> tuple[int, str | None]:
        try:
            s = self.state.select(self.req).selected[0]
        except Saturated:  # every agent at its max_concurrency: the task waits here
            return -1, None
        return self.row[s.agent_id], s.assignment_id

    def completed(self, now: float, agent: int, task: str | None, duration_s: float) -> None:
        if self.completions and task is not None:
            self.state.complete(self.ids[agent], task, ok=True, duration_s=duration_s)


def strategies(sc: Scenario, clock: Callable[[], float]) -> list[Callable[[], Router]]:
    n, r = sc.agents, sc.routers

    def rng(k: int) -> np.random.Generator:
        return np.random.default_rng([sc.seed, 1000 + k])

    def ripple(k: int, **kw: Any) -> Callable[[], Router]:
        def make() -> Router:
            router = Ripple(n, r, rng(k), clock=clock, seed=sc.seed + k, **kw)
            router.period_s = sc.period_s
            return router

        return make

    def peer(k: int, cls: type[Router]) -> Callable[[], Router]:
        return lambda: cls(n, r, rng(k))

    peers: list[type[Router]] = [RandomRouter, RoundRobin, LeastBusy, Greedy, P2C, LocalCounts]
    out = [peer(k, cls) for k, cls in enumerate(peers)]
    out.append(peer(50, Oracle))
    out += [
        ripple(60, strategy="balanced", assign=True, completions=True, declare=True),
        ripple(61, strategy="balanced", assign=True, completions=False, declare=True),
        ripple(
            65,
            strategy="balanced",
            assign=True,
            completions=True,
            declare=True,
            default_weights=True,
        ),
        ripple(
            66,
            strategy="balanced",
            assign=True,
            completions=False,
            declare=True,
            default_weights=True,
        ),
        ripple(62, strategy="best", assign=False, completions=False, declare=False),
        ripple(63, strategy="p2c", assign=True, completions=True, declare=True),
        ripple(64, strategy="weighted", assign=True, completions=True, declare=True),
    ]
    return out


@dataclass
class Outcome:
    strategy: str
    mean_s: float
    p99_s: float
    evenness: float
    tasks: int


def simulate(sc: Scenario, make: Callable[[], Router], clock_cell: list[float]) -> Outcome:
    """One strategy on the scenario's arrivals; ``clock_cell[0]`` is the shared clock."""
    rng = np.random.default_rng(sc.seed)
    speed = rng.uniform(1.0, sc.heterogeneity, sc.agents) if sc.heterogeneity > 1 else None
    speed = np.ones(sc.agents) if speed is None else speed
    speed *= 2.0 / speed.mean()  # mean service rate 2 tasks/s per agent
    rate = sc.utilisation * speed.sum()
    arrivals = np.cumsum(rng.exponential(1.0 / rate, sc.tasks))
    work = rng.exponential(1.0, sc.tasks)  # service time = work / speed of its agent
    fleet = Fleet(speed)
    clock_cell[0] = 0.0
    router = make()
    cap = speed / speed.max()
    cap[np.argsort(speed, kind="stable")[: sc.liars]] = 1.0  # wrong claims, if any
    events: list[tuple[float, int, str, int]] = []
    seq = itertools.count()
    groups = np.array_split(rng.permutation(sc.agents), PHASES)
    for g in range(PHASES):
        heapq.heappush(events, (sc.period_s * g / PHASES, next(seq), "report", g))
    heapq.heappush(events, (float(arrivals[0]), next(seq), "arrive", 0))
    sojourn = np.full(sc.tasks, np.nan)
    started: dict[int, tuple[int, float, str | None, float]] = {}  # agent -> current task
    done = 0

    def start(agent: int, now: float) -> None:
        task_ix, assignment = fleet.queues[agent][0]
        dur = work[int(task_ix)] / speed[agent]
        started[agent] = (int(task_ix), now, assignment, dur)
        heapq.heappush(events, (now + dur, next(seq), "depart", agent))

    # Tasks held at the router while every agent is at its max_concurrency (Ripple's
    # admission; DESIGN §4): bound to an agent when a completion frees a slot.
    parked: deque[int] = deque()

    def place(agent: int, task: int, assignment: str | None, now: float) -> None:
        fleet.queues[agent].append((float(task), assignment))
        if len(fleet.queues[agent]) == 1:
            start(agent, now)

    while events and done < sc.tasks:
        now, _, kind, x = heapq.heappop(events)
        clock_cell[0] = now
        if kind == "arrive":
            agent, assignment = router.pick(now, x % sc.routers, fleet)
            if agent < 0:
                parked.append(x)
            else:
                place(agent, x, assignment, now)
            if x + 1 < sc.tasks:
                heapq.heappush(events, (float(arrivals[x + 1]), next(seq), "arrive", x + 1))
        elif kind == "depart":
            task_ix, _, assignment, dur = started.pop(x)
            fleet.queues[x].popleft()
            fleet.served[x] += 1
            sojourn[task_ix] = now - arrivals[task_ix]
            done += 1
            router.completed(now, x, assignment, dur)
            if fleet.queues[x]:
                start(x, now)
            while parked:  # a slot freed: tasks Ripple held back are bound now
                agent, assignment = router.pick(now, parked[0] % sc.routers, fleet)
                if agent < 0:
                    break
                place(agent, parked.popleft(), assignment, now)
        else:  # a report phase: its agents publish what they see now
            agents = groups[x]
            load = np.minimum(fleet.in_system()[agents] / QUEUE_FULL, 1.0)
            router.report(now, agents, load, cap[agents])
            heapq.heappush(events, (now + sc.period_s, next(seq), "report", x))
    # The first tenth is warm-up: queues start empty, which flatters everyone.
    steady = sojourn[sc.tasks // 10 :]
    steady = steady[np.isfinite(steady)]
    served = fleet.served / max(fleet.served.sum(), 1)
    share = speed / speed.sum()
    return Outcome(
        router.name,
        float(steady.mean()),
        float(np.percentile(steady, 99)),
        float(np.minimum(served, share).sum()),
        len(steady),
    )


def run_scenario(sc: Scenario) -> list[Outcome]:
    clock_cell = [0.0]
    makers = strategies(sc, lambda: clock_cell[0])
    return [simulate(sc, make, clock_cell) for make in makers]


def scenarios(smoke: bool) -> list[Scenario]:
    if smoke:
        return [Scenario(agents=20, tasks=2_000, utilisation=0.9, period_s=1.0)]
    base = Scenario()
    out = [
        Scenario(utilisation=u, period_s=p) for p in (0.5, 1.0, 5.0) for u in (0.5, 0.7, 0.9, 0.95)
    ]
    out += [Scenario(heterogeneity=h) for h in (1.0, 10.0)]
    out += [Scenario(routers=r, period_s=p) for r in (4,) for p in (1.0, 5.0)]
    out += [Scenario(liars=10, period_s=p) for p in (1.0, 5.0)]
    return [s for s in out if s != base] + [base]


def main(argv: list[str] | None = None) -> Report:
    args = simulation_parser(__doc__ or "", "the sweep").parse_args(argv)
    report = Report("routing", {"smoke": args.smoke})
    rows: list[dict[str, Any]] = []
    for sc in scenarios(args.smoke):
        with section(sc.label):
            outcomes = run_scenario(sc)
        oracle = next(o for o in outcomes if o.strategy.startswith("oracle"))
        p2c = next(o for o in outcomes if o.strategy == "p2c (reported)")
        for o in outcomes:
            row = {
                **asdict(sc),
                **asdict(o),
                "mean_vs_oracle": o.mean_s / oracle.mean_s,
                "p99_vs_p2c": o.p99_s / p2c.p99_s,
            }
            rows.append(row)
    table = markdown(rows)
    print(table)
    write_simulation(report, args, table, rows, plot)
    return report


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| scenario | strategy | mean sojourn (s) | vs oracle | p99 (s) | p99 vs P2C | evenness |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    )
    lines = [head]
    for r in rows:
        sc = Scenario(**{k: r[k] for k in Scenario.__dataclass_fields__})
        lines.append(
            f"| {sc.label} | {r['strategy']} | {r['mean_s']:.3f} | {r['mean_vs_oracle']:.2f} | "
            f"{r['p99_s']:.3f} | {r['p99_vs_p2c']:.2f} | {r['evenness']:.3f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    names = list(dict.fromkeys(r["strategy"] for r in rows))
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(names), 1)))
    for ax, period in zip(axes, (0.5, 1.0, 5.0), strict=True):
        sel = [
            r
            for r in rows
            if r["period_s"] == period
            and r["routers"] == 1
            and r["heterogeneity"] == 3.0
            and not r.get("liars")
        ]
        for name, colour in zip(names, colours, strict=True):
            pts = sorted(
                (r["utilisation"], r["mean_vs_oracle"]) for r in sel if r["strategy"] == name
            )
            if len(pts) > 1:
                style = "-" if name.startswith(("ripple", "oracle")) else "--"
                ax.plot(*zip(*pts, strict=True), style, color=colour, marker="o", label=name)
        ax.set_title(f"LOAD published every {period:g} s")
        ax.set_xlabel("utilisation")
        ax.set_yscale("log")
    axes[0].set_ylabel("mean sojourn / oracle")
    axes[-1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
