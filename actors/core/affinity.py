"""Affinity with bounded load: ``affinity_key`` keeps a session on the agent that holds its
context (DESIGN §4, "Affinity with bounded load").

- **Rendezvous (highest-random-weight) hashing**: every agent has a weight for a key, a
  64-bit mix of the key's hash and the agent's; the key's order is the agents by weight.
  Each shard can rank its own agents for a key, and the router's merge of the shards'
  lists is the order one shard holding every agent would give; an agent leaving moves
  only its own keys.
- **Bounded load** (Mirrokni, Thorup and Zadimoghaddam, "Consistent hashing with bounded
  loads"): an agent is acceptable for a key while it has headroom and the tasks it holds,
  plus this one, stay within ``ceil(ratio x (tasks held by all eligible agents + 1) /
  eligible agents)``, ``ratio`` = ``affinity_max_load_ratio`` (1.25).
- **Sticky**: the shard that owns the agent a key was last assigned to remembers it (a
  bounded map, most recent last). While that agent is acceptable the key stays (a hit);
  otherwise the key goes to the first acceptable agent in its order (spilled; new when
  no agent held it). Re-walking the order on every request would flap: a key would bounce
  back to its first agent the moment that agent dipped under the bound.
- Only the first ``affinity_candidates`` agents of the merged order are walked (each
  shard sends that many), so the router's answer is exactly one shard's; when none of
  them is acceptable the request falls back to its strategy (spilled).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from actors.core.results import SelectResult
from actors.core.table import AgentTable

Outcome = Literal["hit", "spilled", "new"]
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def stable_hash(text: str) -> int:
    """A 64-bit hash stable across processes and restarts (never 0: 0 means unset)."""
    h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return h or 1


def weights(key_hash: int, agent_hashes: np.ndarray) -> np.ndarray:
    """Rendezvous weights: splitmix64's finaliser of each agent's hash (32 bits, spread
    over 64 by a golden-ratio multiply) xor the key's."""
    with np.errstate(over="ignore"):
        z = agent_hashes.astype(np.uint64) * _GOLDEN
        z ^= np.uint64(key_hash)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        out: np.ndarray = z ^ (z >> np.uint64(31))
    return out


def load_bound(ratio: float, total_tasks: float, eligible: int) -> float:
    """The most tasks an acceptable agent may hold after this one."""
    return math.ceil(ratio * (total_tasks + 1.0) / max(eligible, 1))


@dataclass
class AffinityAnswer:
    """One shard's part of an affinity decision."""

    ids: list[str]  # its first agents in the key's order (weight descending), each
    # with headroom when the selection assigns (the load bound is the router's)
    weights: np.ndarray  # uint64
    tasks: np.ndarray  # tasks each holds
    total_tasks: float = 0.0  # over the shard's eligible agents, full ones included
    eligible: int = 0
    sticky: tuple[str, float, float] | None = None  # (agent, remembered at, its tasks)
    ratio: float = 1.25
    limit: int = 8  # affinity_candidates: how much of the merged order is walked


@dataclass
class AffinityPick:
    agent_id: str
    outcome: Outcome


def decide(answers: list[AffinityAnswer], limit: int) -> tuple[AffinityPick | None, Outcome]:
    """The router's decision over the shards' answers: the key's agent, or None and the
    outcome to report when the strategy must choose (spilled or new)."""
    if not answers:
        return None, "new"
    total = sum(a.total_tasks for a in answers)
    eligible = sum(a.eligible for a in answers)
    bound = load_bound(answers[0].ratio, total, eligible)
    held = [a.sticky for a in answers if a.sticky is not None]
    if held:
        # The most recent (several shards may remember the key: it moved between them).
        agent, _, tasks = max(held, key=lambda s: (s[1], s[0]))
        if tasks + 1.0 <= bound + 1e-9:
            return AffinityPick(agent, "hit"), "hit"
    outcome: Outcome = "spilled" if held else "new"
    ranked = sorted(
        (
            (int(a.weights[i]), a.ids[i], float(a.tasks[i]))
            for a in answers
            for i in range(len(a.ids))
        ),
        key=lambda t: (-t[0], t[1]),
    )[:limit]
    for _, agent, tasks in ranked:
        if tasks + 1.0 <= bound + 1e-9:
            return AffinityPick(agent, outcome), outcome
    return None, "spilled" if held or ranked else outcome


def claim(key: str | None, result: SelectResult) -> tuple[str, str] | None:
    """(key, the agent that serves it now) of a keyed selection: its first pick, which
    the shard owning that agent remembers when it records the assignment."""
    return (key, result.selected[0].agent_id) if key and result.selected else None


@dataclass
class Affinity:
    """A shard's side: the agents' hashes (per row, computed once) and the sticky map."""

    table: AgentTable
    max_keys: int
    sticky: OrderedDict[str, tuple[str, float]] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        # 32 bits an agent (0: not computed yet): memory per agent is a budget.
        self.table.register("hrw", (), np.uint32, 0)

    def hashes(self, rows: np.ndarray) -> np.ndarray:
        arr = self.table.arrays["hrw"]
        h = arr[rows]
        missing = np.flatnonzero(h == 0)
        if len(missing):
            ids = self.table.ids
            fresh = np.array(
                [stable_hash(ids[r]) & 0xFFFFFFFF or 1 for r in rows[missing].tolist()], np.uint32
            )
            arr[rows[missing]] = fresh
            h[missing] = fresh
        return h

    def remember(self, key: str, agent_id: str, at_s: float) -> None:
        if self.max_keys <= 0:
            return
        self.sticky[key] = (agent_id, at_s)
        self.sticky.move_to_end(key)
        while len(self.sticky) > self.max_keys:
            self.sticky.popitem(last=False)

    def answer(
        self,
        key: str,
        rows: np.ndarray,
        tasks: np.ndarray,
        limit: int,
        ratio: float,
        fleet: tuple[float, int],
    ) -> AffinityAnswer:
        """This shard's part for ``key`` over the known ``rows`` it may choose (``tasks``:
        what each holds); ``fleet``: the tasks held by every eligible agent and how
        many, for the bound."""
        ids = self.table.ids
        w = weights(stable_hash(key), self.hashes(rows))
        # A float pre-sort for speed, then the exact order (64-bit weight, then id) on a
        # margin of candidates: distinct weights may round to one float.
        pre = np.argsort(-w.astype(np.float64), kind="stable")[: limit * 4]
        top = sorted(pre.tolist(), key=lambda i: (-int(w[i]), ids[rows[i]]))[:limit]
        sticky = None
        held = self.sticky.get(key)
        if held is not None:
            r = self.table.index.get(held[0])
            at = np.flatnonzero(rows == r) if r is not None else np.empty(0, np.int64)
            if len(at):
                sticky = (held[0], held[1], float(tasks[int(at[0])]))
        pos = np.array(top, np.int64)
        return AffinityAnswer(
            [ids[rows[i]] for i in top],
            w[pos],
            tasks[pos],
            fleet[0],
            fleet[1],
            sticky,
            ratio,
            limit,
        )
