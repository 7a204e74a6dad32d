"""Affinity with bounded load, simulated: sessions that want the agent holding their
context, against the load balance that keeps queues short.

    python -m load affinity [--smoke] [--json PATH] [--markdown PATH] [--plot PATH]

The fleet: 50 agents of 4 slots (``max_concurrency`` declared), equal speeds or 3x apart
(0.5-1.5), exponential task times (mean 1 s at speed 1), 70% utilisation. 2,000 keys with
Zipf(1.1) popularity: the hottest key alone asks for several agents' capacity. Mid-run
two agents leave (their tasks finish, none is sent to them after) and two join. Agents
run up to 4 tasks at once and queue the rest, FIFO; Ripple, whose agents declare their
concurrency, holds a task at the router when every agent is full and binds it when a slot
frees (its admission, as a waiting selection does).

Three workloads. **Hot keys**: Poisson arrivals, each task's key drawn by popularity (the
issue's targets; a task takes as long wherever it runs). **Conversations**: each session
sends its next task a think time (exponential, mean 2 s) after its previous one ended, so
a key never has two tasks out; as many sessions as keep the fleet about 70% busy (each
with its own draws, whatever the router), one key per session. **Hot keys, warm hits**:
the hot keys again, but a task that lands on the agent that served its key's previous
task takes 0.7 of its time there (its context is loaded: the peers publish larger cuts
in time to first token from cache-aware routing), for what stickiness is worth.

Routers on the same arrivals and seeds: Ripple with the key (``select(affinity_key=...)``,
every default), Ripple without it (the sojourn reference), plain consistent hashing (a
ring of 100 virtual nodes per agent), consistent hashing with bounded loads (Mirrokni et
al., c = 1.25, on the same ring), random, least in-flight.

Reported: stickiness (a key's task on the agent that served its previous task), the p99
over time of max/mean in-flight tasks (sampled each second, from 10% into the run),
mean and p99 sojourn, keys moved without cause by the membership change (a key's first
task after it went elsewhere though its previous agent stayed, could take it (within the
bound, a slot free) and the new agent is not a newcomer), tasks sent to agents that had
left.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import deque
from typing import Any

import numpy as np

from actors.core.affinity import load_bound, stable_hash
from actors.core.config import ShardConfig
from actors.core.errors import Saturated
from actors.core.models import SelectRequest
from actors.core.state import ShardState
from load.common import Report, section, seeds_of, simulation_parser, write_simulation

AGENTS, SLOTS, KEYS, ZIPF_S, UTILISATION = 50, 4, 2_000, 1.1, 0.7
THINK_S = 2.0  # a conversation's mean pause between a task's end and its next
ROUTERS = (
    "ripple (affinity_key)",
    "ripple (no key)",
    "consistent hashing",
    "bounded-load CH (c = 1.25)",
    "random",
    "least in-flight",
)
VNODES = 100
WARM = "hot keys, warm hits"
WORKLOADS = ("hot keys", "conversations", WARM)
HIT_WORK = 0.7  # a warm hit's share of the task's work (context already loaded)


class Ring:
    """Consistent hashing: each agent at ``VNODES`` points of a 64-bit ring."""

    def __init__(self, agents: list[str]) -> None:
        points = sorted((stable_hash(f"{a}#{v}"), a) for a in agents for v in range(VNODES))
        self.keys = [p for p, _ in points]
        self.agents = [a for _, a in points]

    def walk(self, key: str) -> Any:
        start = bisect.bisect(self.keys, stable_hash(key)) % len(self.keys)
        seen: set[str] = set()
        for i in itertools.chain(range(start, len(self.keys)), range(start)):
            a = self.agents[i]
            if a not in seen:
                seen.add(a)
                yield a


class Sim:
    def __init__(
        self,
        router: str,
        speeds: np.ndarray,
        seed: int,
        duration_s: float,
        workload: str = "hot keys",
    ):
        self.router, self.seed, self.duration_s = router, seed, duration_s
        self.workload = workload
        self.rng = np.random.default_rng([seed, ROUTERS.index(router)])
        n = len(speeds)
        self.names = [f"agent-{i}" for i in range(n + 2)]  # the last two join mid-run
        self.speed = dict(zip(self.names, np.concatenate([speeds, [1.0, 1.0]]), strict=True))
        self.live = set(self.names[:n])
        self.left: set[str] = set()
        self.running = dict.fromkeys(self.names, 0)
        self.queue: dict[str, deque[int]] = {a: deque() for a in self.names}
        self.now = 0.0
        self.ring = Ring(sorted(self.live))
        cfg = ShardConfig(initial_capacity=n + 2)
        self.state = ShardState(cfg, clock=lambda: self.now, seed=seed)
        for a in sorted(self.live):
            self.state.describe(a, max_concurrency=SLOTS)
        self.parked: deque[int] = deque()

    # ---------------------------------------------------------------- membership
    def leave(self, agents: list[str]) -> None:
        self.live -= set(agents)
        self.left |= set(agents)
        for a in agents:
            self.state.delete(a)
        self.ring = Ring(sorted(self.live))

    def join(self, agents: list[str]) -> None:
        self.live |= set(agents)
        for a in agents:
            self.state.describe(a, max_concurrency=SLOTS)
        self.ring = Ring(sorted(self.live))

    # ---------------------------------------------------------------- routing
    def held(self, a: str) -> int:
        return self.running[a] + len(self.queue[a])

    def pick(self, key: str) -> tuple[str | None, str | None]:
        live = sorted(self.live)
        if self.router.startswith("ripple"):
            req = SelectRequest(affinity_key=key if "affinity" in self.router else None)
            try:
                s = self.state.select(req).selected[0]
            except Saturated:
                return None, None
            return s.agent_id, s.assignment_id
        if self.router == "consistent hashing":
            return next(self.ring.walk(key)), None
        if self.router.startswith("bounded-load"):
            total = sum(self.held(a) for a in live)
            bound = load_bound(1.25, total, len(live))
            for a in self.ring.walk(key):
                if self.held(a) + 1 <= bound:
                    return a, None
            return next(self.ring.walk(key)), None
        if self.router == "random":
            return live[int(self.rng.integers(len(live)))], None
        loads = np.array([self.held(a) for a in live])
        best = np.flatnonzero(loads == loads.min())
        return live[int(best[self.rng.integers(len(best))])], None

    def acceptable(self, a: str) -> bool:
        """Within the bounded-load bound (c = 1.25) and with a free slot, as of now (the
        task being placed not yet counted anywhere)."""
        live = sorted(self.live)
        total = sum(self.held(b) for b in live)
        return self.held(a) + 1 <= load_bound(1.25, total, len(live)) and self.held(a) < SLOTS

    # ---------------------------------------------------------------- the run
    def run(self) -> dict[str, Any]:
        rng = np.random.default_rng(self.seed)  # the same arrivals for every router
        # Summed in a fixed order: a set's order follows the process's string hashing, and
        # a float sum in another order moves the arrival rate, and so every later event.
        capacity = sum(self.speed[a] for a in sorted(self.live)) * SLOTS
        conversations = self.workload == "conversations"
        # With warm hits, a task on the agent that served its key's previous task runs
        # at HIT_WORK of its time there: the context it needs is already loaded.
        warm = self.workload == WARM
        # Tasks as they come: when, whose key, how much work (at speed 1).
        arrive_t: list[float] = []
        key_of: list[int] = []
        work_of: list[float] = []
        events: list[tuple[float, int, str, int]] = []
        seq = itertools.count()

        def new_task(t: float, key: int, work: float) -> None:
            heapq.heappush(events, (t, next(seq), "arrive", len(arrive_t)))
            arrive_t.append(t)
            key_of.append(key)
            work_of.append(work)

        if conversations:
            # A session sends its next task a think time after its previous one ended:
            # each session has at most one task out. Its own draws, whatever the router.
            sessions = int(UTILISATION * capacity * (1.0 + THINK_S))
            talk = [np.random.default_rng([self.seed, 1, s]) for s in range(sessions)]
            for s in range(sessions):
                new_task(float(talk[s].uniform(0, THINK_S)), s, float(talk[s].exponential(1.0)))
        else:
            rate = UTILISATION * capacity
            count = int(rate * self.duration_s * 1.1) + 10
            arrivals = np.cumsum(rng.exponential(1.0 / rate, count))
            arrivals = arrivals[arrivals < self.duration_s]
            work = rng.exponential(1.0, len(arrivals))
            ranks = np.arange(1, KEYS + 1, dtype=np.float64)
            p = ranks**-ZIPF_S
            keys = rng.choice(KEYS, size=len(arrivals), p=p / p.sum())
            for t, k, w in zip(arrivals.tolist(), keys.tolist(), work.tolist(), strict=True):
                new_task(t, k, w)
        change_at = self.duration_s / 2
        heapq.heappush(events, (change_at, next(seq), "change", 0))
        for t in np.arange(1.0, self.duration_s, 1.0).tolist():
            heapq.heappush(events, (t, next(seq), "sample", 0))
        where: dict[int, str] = {}
        hits: set[int] = set()  # tasks that found their key's context (WARM only)
        token: dict[int, str | None] = {}
        done_at: dict[int, float] = {}
        last_agent: dict[int, str] = {}
        sticky_hits = sticky_n = 0
        moved_without_cause = moved_n = 0
        to_departed = 0
        ratio: list[float] = []
        before_change: dict[int, str] = {}
        newcomers: set[str] = set()

        def took(a: str, i: int) -> float:
            return work_of[i] / self.speed[a] * (HIT_WORK if i in hits else 1.0)

        def start(a: str, i: int) -> None:
            self.running[a] += 1
            heapq.heappush(events, (self.now + took(a, i), next(seq), "done", i))

        def place(a: str, i: int, aid: str | None) -> None:
            nonlocal sticky_hits, sticky_n, moved_without_cause, moved_n, to_departed
            k = key_of[i]
            where[i], token[i] = a, aid
            to_departed += a in self.left
            if k in last_agent:
                sticky_n += 1
                sticky_hits += last_agent[k] == a
                if warm and last_agent[k] == a:
                    hits.add(i)
            if k in before_change and self.now >= change_at:
                prev = before_change.pop(k)  # the key's first task after the change
                if prev in self.live and prev != a and a not in newcomers:
                    # Moved, though its agent stayed: with cause if that agent could not
                    # take it (over the bound, or no free slot), else without.
                    moved_without_cause += self.acceptable(prev)
                moved_n += prev in self.live
            last_agent[k] = a
            if self.running[a] < SLOTS:
                start(a, i)
            else:
                self.queue[a].append(i)

        while events:
            self.now, _, kind, i = heapq.heappop(events)
            if kind == "arrive":
                if self.now >= self.duration_s:
                    continue
                a, aid = self.pick(f"key-{key_of[i]}")
                if a is None:
                    self.parked.append(i)
                else:
                    place(a, i, aid)
            elif kind == "done":
                a = where[i]
                self.running[a] -= 1
                done_at[i] = self.now
                if self.router.startswith("ripple") and a in self.live:
                    took_s = took(a, i)
                    self.state.complete(a, token[i], ok=True, duration_s=took_s)
                if self.queue[a]:
                    start(a, self.queue[a].popleft())
                if conversations:  # the session thinks, then asks again
                    s = key_of[i]
                    gen = talk[s]
                    new_task(self.now + float(gen.exponential(THINK_S)), s, gen.exponential(1.0))
                while self.parked:
                    b, aid = self.pick(f"key-{key_of[self.parked[0]]}")
                    if b is None:
                        break
                    place(b, self.parked.popleft(), aid)
            elif kind == "change":
                before_change = dict(last_agent)
                live = sorted(self.live)
                gone = [live[int(j)] for j in self.rng.choice(len(live), 2, replace=False)]
                newcomers = set(self.names[-2:])
                self.leave(gone)
                self.join(sorted(newcomers))
            elif self.now >= 0.1 * self.duration_s:  # a sample of the balance
                held = np.array([self.held(a) for a in sorted(self.live)], np.float64)
                if held.mean() > 0:
                    ratio.append(float(held.max() / held.mean()))
        soj = np.array(
            [t - arrive_t[i] for i, t in done_at.items() if arrive_t[i] >= 0.1 * self.duration_s]
        )
        return {
            "router": self.router,
            "seed": self.seed,
            "stickiness": sticky_hits / max(sticky_n, 1),
            "max_over_mean_p99": float(np.percentile(ratio, 99)) if ratio else float("nan"),
            "mean_s": float(soj.mean()),
            "p99_s": float(np.percentile(soj, 99)),
            "moved_without_cause": moved_without_cause / max(moved_n, 1),
            "to_departed": to_departed,
            "tasks": len(soj),
        }


def run(seeds: list[int], duration_s: float) -> list[dict[str, Any]]:
    rows = []
    fleets = (("equal", np.ones(AGENTS)), ("3x apart", np.linspace(0.5, 1.5, AGENTS)))
    for workload in WORKLOADS:
        for fleet, speeds in fleets:
            with section(f"{workload}, speeds {fleet}"):
                for router in ROUTERS:
                    runs = [Sim(router, speeds, s, duration_s, workload).run() for s in seeds]
                    row: dict[str, Any] = {
                        "workload": workload,
                        "speeds": fleet,
                        "router": router,
                        "seeds": len(runs),
                    }
                    for key in runs[0]:
                        if key not in ("router", "seed"):
                            row[key] = float(np.mean([r[key] for r in runs]))
                    rows.append(row)
            same = [r for r in rows if (r["workload"], r["speeds"]) == (workload, fleet)]
            base = next(r for r in same if r["router"] == "ripple (no key)")
            for r in same:
                r["mean_vs_no_key"] = float(r["mean_s"]) / float(base["mean_s"])
                r["p99_vs_no_key"] = float(r["p99_s"]) / float(base["p99_s"])
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | speeds | router | stickiness | max/mean in flight, p99 | mean sojourn (s) "
        "| vs no key | p99 (s) | vs no key | moved without cause | tasks to departed agents |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['speeds']} | {r['router']} | {r['stickiness']:.3f} | "
            f"{r['max_over_mean_p99']:.2f} | {r['mean_s']:.3f} | {r['mean_vs_no_key']:.2f} | "
            f"{r['p99_s']:.2f} | {r['p99_vs_no_key']:.2f} | "
            f"{100 * r['moved_without_cause']:.2f}% | {r['to_departed']:.0f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(WORKLOADS), 2, figsize=(13, 4.5 * len(WORKLOADS)))
    panels = [(w, f) for w in WORKLOADS for f in ("equal", "3x apart")]
    for ax, (workload, fleet) in zip(axes.flat, panels, strict=True):
        mine = [r for r in rows if (r["workload"], r["speeds"]) == (workload, fleet)]
        for r in mine:
            ax.scatter(r["max_over_mean_p99"], r["stickiness"], s=60)
            ax.annotate(r["router"], (r["max_over_mean_p99"], r["stickiness"]), fontsize=7)
        ax.set_xscale("log")
        ratios = [r["max_over_mean_p99"] for r in mine]
        ax.set_xticks([t for t in (1.5, 2, 3, 5, 10, 20, 30) if min(ratios) <= t <= max(ratios)])
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{workload}, speeds {fleet}")
        ax.set_xlabel("max/mean in-flight, p99 over time (log)")
        ax.set_ylabel("stickiness")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> Report:
    parser = simulation_parser(
        __doc__ or "", "stickiness against balance", seeds=3, duration_s=300.0
    )
    args = parser.parse_args(argv)
    seeds = seeds_of(args)
    duration_s = 10.0 if args.smoke else args.duration_s
    report = Report("affinity", {"smoke": args.smoke, "seeds": seeds, "duration_s": duration_s})
    rows = run(seeds, duration_s)
    table = markdown(rows)
    print(table)
    for r in rows:
        if r["router"] != "ripple (affinity_key)":
            continue
        tag = f"{r['workload']}, speeds {r['speeds']}"
        # The targets are the hot-key workload's; the other workloads are reported as measured.
        hot = r["workload"] == "hot keys"

        def target(text: str, hot: bool = hot) -> str | None:
            return text if hot else None

        report.add(f"{tag}: stickiness", r["stickiness"], "", target=target(">= 0.50"))
        report.add(
            f"{tag}: max/mean in flight p99",
            r["max_over_mean_p99"],
            "x",
            target=target("<= 1.85"),
        )
        for q in ("mean", "p99"):
            report.add(
                f"{tag}: {q} sojourn vs no key", r[f"{q}_vs_no_key"], "x", target=target("<= 1.10")
            )
        report.add(
            f"{tag}: moved without cause",
            100 * r["moved_without_cause"],
            "%",
            target=target("<= 1"),
        )
        report.add(f"{tag}: tasks to departed agents", r["to_departed"], "tasks", target="0")
    write_simulation(report, args, table, rows, plot)
    return report
