"""When the fleet is full: admission, priorities and tenant fairness, simulated.

The fleet: 10 agents of 4 slots (``max_concurrency`` declared), exponential task times
(mean 1 s), so 40 tasks/s of capacity. Offered load from 0.5x to 2x that, from three
tenants: ``heavy`` sends 10x what ``light`` sends, both at priority 5 and 97% of the load
between them; ``interactive`` sends the other 3% at priority 8. Every request may wait
``wait_s`` = 10 s; a caller gives up after that. Arrivals spread over 1 or 4 routers,
each with its own queue; a freed slot reaches the routers ``NOTICE_S`` later (a
long-poll's answer), in random order (the race of their long-polls; with Ripple, the
routers holding the highest band waiting first, as its shards answer them), and an
arrival in between may take it.

Every policy runs the real core (``ShardState``: headroom, the balanced selection,
completions) and, where it queues, the real queue (``actors.core.flow.FlowQueue``), with
the dispatch rule of ``actors.cluster.waiting`` (try waiters in order when a slot frees;
stop at the first without headroom), on an injected clock:

- **no admission (Ripple before)**: every request is assigned at once (concurrency not
  declared); agents queue what exceeds their slots, FIFO; a task that has not started
  within ``wait_s`` has lost its caller (its work is wasted, it is not goodput);
- **FIFO queue**: admission, one first-come-first-served queue (Ray Serve's and
  LiteLLM's ``max_queued_requests``-style back-pressure);
- **strict priority**: admission, bands served in order, FIFO within a band (no
  fairness between tenants);
- **ripple**: admission, bands, least attained service between tenants within a band.

Reported per policy, load and router count: goodput (tasks started within ``wait_s`` and
completed, per second, over the fleet's capacity), each tenant's served share of what it
offered, Jain's index over the tenants' goodput normalised by their max-min fair shares
(``actors.core.flow.jain_index``), queue-wait percentiles per band, refusals by reason,
and the most tasks any agent held beside its ``max_concurrency`` (counted by the
simulated agents).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.core.config import FlowConfig, ShardConfig
from actors.core.errors import Saturated
from actors.core.flow import FlowQueue, Waiter, jain_index
from actors.core.models import SelectRequest
from actors.core.state import ShardState
from load.common import Report, section, seeds_of, simulation_parser, write_simulation

AGENTS, SLOTS, MEAN_S = 10, 4, 1.0
CAPACITY = AGENTS * SLOTS / MEAN_S  # tasks/s
WAIT_S = 10.0
TENANTS = {"heavy": (5, 10 / 11 * 0.97), "light": (5, 1 / 11 * 0.97), "interactive": (8, 0.03)}
POLICIES = ("no admission (Ripple before)", "FIFO queue", "strict priority", "ripple")
LOADS = (0.5, 1.0, 1.5, 2.0)
ROUTERS = (1, 4)
JUDGED_FROM_S = 30.0
# From a completion to a router's next selection: the shard's long-poll answer and a
# selection's fan-out, about an actor call each here (BENCHMARKS, actors).
NOTICE_S = 0.003


@dataclass
class Task:
    tenant: str
    priority: int
    arrived_s: float
    work_s: float
    router: int
    started_s: float = np.nan
    refused: str | None = None


class Fleet:
    """The agents' own view: tasks running in their slots (and, without admission,
    those queued behind them)."""

    def __init__(self) -> None:
        self.running = [0] * AGENTS
        self.queued: list[deque[tuple[int, str | None]]] = [deque() for _ in range(AGENTS)]
        self.most_held = 0


class Sim:
    def __init__(self, policy: str, load: float, routers: int, seed: int, duration_s: float):
        self.policy, self.load, self.routers = policy, load, routers
        self.duration_s = duration_s
        self.rng = np.random.default_rng(seed)
        self.now = 0.0
        self.admit = policy != POLICIES[0]
        cfg = ShardConfig(initial_capacity=AGENTS)
        self.state = ShardState(cfg, clock=lambda: self.now, seed=seed)
        self.ids = [f"agent-{i}" for i in range(AGENTS)]
        self.row = {a: i for i, a in enumerate(self.ids)}
        for a in self.ids:
            if self.admit:
                self.state.describe(a, max_concurrency=SLOTS)
            self.state.ingest_arrays([a], ["LOAD"], [0.0], ttls_s=[3600.0])
        self.queues = [FlowQueue(FlowConfig()) for _ in range(routers)]
        self.fleet = Fleet()
        self.events: list[tuple[float, int, str, Any]] = []
        self.seq = itertools.count()
        self.tasks: list[Task] = []
        self.req = SelectRequest()

    # ---------------------------------------------------------------- the event loop
    def at(self, t: float, kind: str, x: Any) -> None:
        heapq.heappush(self.events, (t, next(self.seq), kind, x))

    def run(self) -> None:
        rate = self.load * CAPACITY
        for tenant, (prio, share) in TENANTS.items():
            t = 0.0
            while True:
                t += self.rng.exponential(1.0 / (rate * share))
                if t >= self.duration_s:
                    break
                task = Task(tenant, prio, t, self.rng.exponential(MEAN_S), 0)
                task.router = int(self.rng.integers(self.routers))
                self.tasks.append(task)
        self.tasks.sort(key=lambda k: k.arrived_s)
        for i, task in enumerate(self.tasks):
            self.at(task.arrived_s, "arrive", i)
        while self.events:
            self.now, _, kind, x = heapq.heappop(self.events)
            if kind == "arrive":
                self.arrive(x)
            elif kind == "done":
                self.done(*x)
            elif kind == "timeout":
                self.timeout(*x)
            elif kind == "freed":
                self.freed()

    # ---------------------------------------------------------------- routing
    def _key(self, task: Task) -> tuple[int, str]:
        """What the policy's queue sees of a request: FIFO sees neither band nor tenant,
        strict priority the band only."""
        if self.policy == "FIFO queue":
            return 5, "all"
        if self.policy == "strict priority":
            return task.priority, "all"
        return task.priority, task.tenant

    def try_assign(self, i: int) -> bool:
        try:
            pick = self.state.select(self.req).selected[0]
        except Saturated:
            return False
        self.give(i, self.row[pick.agent_id], pick.assignment_id)
        return True

    def arrive(self, i: int) -> None:
        task = self.tasks[i]
        q = self.queues[task.router]
        prio, tenant = self._key(task)
        q.offered(tenant, self.now)
        if q.top_band() < prio and self.try_assign(i):
            q.served(tenant, self.now)
            return
        waiter = Waiter(prio, tenant, self.now, i)
        for gone in q.push(waiter):
            self.tasks[gone.payload].refused = "shed"
        self.at(self.now + WAIT_S, "timeout", (task.router, waiter))

    def timeout(self, router: int, waiter: Waiter) -> None:
        if self.queues[router].remove(waiter):
            self.tasks[waiter.payload].refused = "saturated"

    def dispatch(self, router: int) -> None:
        q = self.queues[router]
        while len(q):
            w = q.order(self.now, 1)[0]
            if not self.try_assign(w.payload):
                return
            q.remove(w)
            q.served(w.tenant, self.now)

    # ---------------------------------------------------------------- the agents
    def give(self, i: int, agent: int, aid: str | None) -> None:
        fleet = self.fleet
        held = fleet.running[agent] + len(fleet.queued[agent]) + 1
        fleet.most_held = max(fleet.most_held, held)
        if fleet.running[agent] < SLOTS:
            self.start(i, agent, aid)
        else:
            fleet.queued[agent].append((i, aid))

    def start(self, i: int, agent: int, aid: str | None) -> None:
        task = self.tasks[i]
        task.started_s = self.now
        self.fleet.running[agent] += 1
        self.at(self.now + task.work_s, "done", (i, agent, aid))

    def done(self, i: int, agent: int, aid: str | None) -> None:
        fleet = self.fleet
        fleet.running[agent] -= 1
        self.state.complete(self.ids[agent], aid, ok=True, duration_s=self.tasks[i].work_s)
        if fleet.queued[agent]:
            nxt, nxt_aid = fleet.queued[agent].popleft()
            self.start(nxt, agent, nxt_aid)
        if self.admit:  # the routers' long-polls answer, a moment later
            self.at(self.now + NOTICE_S, "freed", None)

    def freed(self) -> None:
        """A slot freed: each router's long-poll answers, in the order of their race;
        Ripple's shard answers the routers holding the highest band waiting first (the
        others ``band_yield_s`` later: after those have bound it)."""
        race = self.rng.permutation(self.routers).tolist()
        if self.policy == "ripple":
            race.sort(key=lambda r: -self.queues[r].top_band())  # stable: ties keep the race
        for r in race:
            self.dispatch(r)

    # ---------------------------------------------------------------- results
    def result(self) -> dict[str, Any]:
        judged = [t for t in self.tasks if JUDGED_FROM_S <= t.arrived_s < self.duration_s]
        span_s = self.duration_s - JUDGED_FROM_S
        good = [
            t for t in judged if np.isfinite(t.started_s) and t.started_s - t.arrived_s <= WAIT_S
        ]
        # Goodput: the slot-seconds of useful work (tasks started within their wait,
        # whenever they arrived) done inside the judged window.
        end = self.duration_s
        busy_s = sum(
            max(0.0, min(t.started_s + t.work_s, end) - max(t.started_s, JUDGED_FROM_S))
            for t in self.tasks
            if t.started_s - t.arrived_s <= WAIT_S
        )
        offered = {k: sum(t.tenant == k for t in judged) for k in TENANTS}
        served = {k: sum(t.tenant == k for t in good) for k in TENANTS}
        waits: dict[str, list[float]] = {}
        for t in good:
            waits.setdefault(str(t.priority), []).append(t.started_s - t.arrived_s)
        refused: dict[str, int] = {}
        for t in judged:
            if t.refused:
                refused[t.refused] = refused.get(t.refused, 0) + 1
                refused[t.tenant] = refused.get(t.tenant, 0) + 1
        names = list(TENANTS)
        jain = jain_index(
            np.array([served[k] for k in names], float),
            np.array([offered[k] for k in names], float),
        )
        return {
            "policy": self.policy,
            "load": self.load,
            "routers": self.routers,
            "goodput_vs_capacity": busy_s / (span_s * AGENTS * SLOTS),
            "served_share": {k: served[k] / max(offered[k], 1) for k in names},
            "jain": jain,
            "wait_s": {
                b: {
                    "p50": float(np.percentile(w, 50)),
                    "p99": float(np.percentile(w, 99)),
                    "n": len(w),
                }
                for b, w in sorted(waits.items())
            },
            "refused": refused,
            "offered": offered,
            "most_held": self.fleet.most_held,
            "max_concurrency": SLOTS,
        }


def run(seeds: list[int], duration_s: float, loads: tuple[float, ...]) -> list[dict[str, Any]]:
    rows = []
    for routers in ROUTERS:
        for load in loads:
            with section(f"{routers} router(s), offered {load:g}x capacity"):
                for policy in POLICIES:
                    runs = [Sim(policy, load, routers, s, duration_s) for s in seeds]
                    for sim in runs:
                        sim.run()
                    rows.append(mean_of([sim.result() for sim in runs]))
    return rows


def mean_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(results[0])
    out["seeds"] = len(results)
    for key in ("goodput_vs_capacity", "jain"):
        known = [r[key] for r in results if r[key] is not None]
        out[key] = float(np.mean(known)) if known else None
    out["served_share"] = {
        k: float(np.mean([r["served_share"][k] for r in results])) for k in TENANTS
    }
    bands = {b for r in results for b in r["wait_s"]}
    out["wait_s"] = {
        b: {
            q: float(np.mean([r["wait_s"][b][q] for r in results if b in r["wait_s"]]))
            for q in ("p50", "p99")
        }
        for b in sorted(bands)
    }
    reasons = {k for r in results for k in r["refused"]}
    out["refused"] = {k: int(sum(r["refused"].get(k, 0) for r in results)) for k in reasons}
    out["most_held"] = max(r["most_held"] for r in results)
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| routers | offered | policy | goodput / capacity | light served | heavy served "
        "| interactive served | Jain | wait p99 band 8 (s) | wait p99 band 5 (s) | refused "
        "(saturated / shed) | most held / max_concurrency |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        s = r["served_share"]

        ref = r["refused"]
        lines.append(
            f"| {r['routers']} | {r['load']:g}x | {r['policy']} | "
            f"{r['goodput_vs_capacity']:.3f} | {s['light']:.3f} | {s['heavy']:.3f} | "
            f"{s['interactive']:.3f} | {_num(r['jain'])} | {_p99(r, '8')} | {_p99(r, '5')} | "
            f"{ref.get('saturated', 0)} / {ref.get('shed', 0)} | "
            f"{r['most_held']} / {r['max_concurrency']} |"
        )
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _p99(row: dict[str, Any], band: str) -> str:
    w = row["wait_s"]
    return f"{w[band]['p99']:.2f}" if band in w else ""


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(ROUTERS), 3, figsize=(16, 4.2 * len(ROUTERS)), squeeze=False)
    for i, routers in enumerate(ROUTERS):
        for policy in POLICIES:
            sel = [r for r in rows if r["routers"] == routers and r["policy"] == policy]
            if not sel:
                continue
            x = [r["load"] for r in sel]
            axes[i][0].plot(x, [r["goodput_vs_capacity"] for r in sel], "o-", label=policy)
            axes[i][1].plot(x, [r["served_share"]["light"] for r in sel], "o-", label=policy)
            axes[i][2].plot(x, [r["jain"] or np.nan for r in sel], "o-", label=policy)
        axes[i][0].set_ylabel(f"{routers} router(s)")
        for ax, title in zip(
            axes[i],
            ("goodput / capacity", "light tenant: served / offered", "Jain's index"),
            strict=True,
        ):
            ax.set_title(title)
            ax.set_xlabel("offered load / capacity")
    axes[0][2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> Report:
    parser = simulation_parser(__doc__ or "", "the sweep", seeds=3, duration_s=300.0)
    args = parser.parse_args(argv)
    seeds = seeds_of(args)
    duration_s = 45.0 if args.smoke else args.duration_s
    loads = (2.0,) if args.smoke else LOADS
    report = Report("flow", {"smoke": args.smoke, "seeds": seeds, "duration_s": duration_s})
    rows = run(seeds, duration_s, loads)
    table = markdown(rows)
    print(table)
    for r in rows:
        if r["policy"] == "ripple" and r["load"] == 2.0:
            tag = f"2x overload, {r['routers']} router(s)"
            report.add(f"{tag}: goodput / capacity", r["goodput_vs_capacity"], "x", target=">= 0.9")
            report.add(
                f"{tag}: light tenant served / offered",
                r["served_share"]["light"],
                "x",
                target=">= 0.9",
            )
            report.add(
                f"{tag}: Jain's index",
                r["jain"],
                "",
                target=">= 0.95" if r["routers"] == 1 else ">= 0.9",
            )
            report.add(f"{tag}: band 8 refused", r["refused"].get("interactive", 0), "tasks")
            if "8" in r["wait_s"]:
                report.add(
                    f"{tag}: band 8 wait p99",
                    r["wait_s"]["8"]["p99"],
                    "s",
                    target=f"<= {MEAN_S:g} (one mean task time)",
                )
            report.add(
                f"{tag}: most tasks held / max_concurrency",
                r["most_held"] / r["max_concurrency"],
                "x",
                target="<= 1",
            )
    write_simulation(report, args, table, rows, plot)
    return report


if __name__ == "__main__":
    main()
