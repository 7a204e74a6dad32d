"""Random operation sequences against a tiny, obviously-correct reference model,
and the cross-shard merge against a single shard holding every agent."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.core.config import ShardConfig
from actors.core.merge import merge_partials
from actors.core.models import DEFAULT_WEIGHTS, DIMENSIONS, SelectRequest, Weights
from actors.core.state import ShardState

from .conftest import Clock

AGENTS = [f"ag-{i}" for i in range(6)]
TYPES = ["LOAD", "CAPACITY", "QUALITY", "COST", "LATENCY", "AVAILABILITY"]
RETENTION_S = 20.0


@dataclass
class Reference:
    """Dicts and the formula of DESIGN §4, written the slow and plain way."""

    live: dict[tuple[str, str], tuple[float, float, float, float]] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)

    def ingest(self, s: dict, now: float) -> bool:
        ttl = s.get("ttl_s", 60.0)
        ts = min(s.get("timestamp", now), now)
        key = (s["agent_id"], s["signal_type"])
        held = self.live.get(key)
        backfill = s.get("timestamp", now) + ttl <= now  # history only, never live
        if not backfill and (held is None or ts >= held[2] or held[2] + held[3] <= now):
            self.live[key] = (s["value"], s.get("confidence", 1.0), ts, ttl)
        self.last_seen[s["agent_id"]] = max(self.last_seen.get(s["agent_id"], 0.0), ts)
        return True

    def delete(self, agent: str) -> None:
        self.last_seen.pop(agent, None)
        for key in [k for k in self.live if k[0] == agent]:
            del self.live[key]

    def sweep(self, now: float) -> None:
        for agent in list(self.last_seen):
            has_live = any(
                a == agent and ts + ttl > now for (a, _), (_, _, ts, ttl) in self.live.items()
            )
            if not has_live and self.last_seen[agent] < now - RETENTION_S:
                self.delete(agent)

    def dims(self, agent: str, now: float) -> dict[str, float]:
        out = {}
        for t in TYPES:
            held = self.live.get((agent, t))
            eff = 0.5
            if held is not None:
                value, conf, ts, ttl = held
                age = now - ts
                if age < ttl:
                    score = 1 - value if t in ("LOAD", "COST", "LATENCY") else value
                    eff = 0.5 + (score - 0.5) * conf * (1 - age / ttl)
            out[t.lower()] = eff
        return out

    def score(self, agent: str, weights: dict[str, float], now: float) -> float:
        d = self.dims(agent, now)
        return sum(weights.get(k, 0.0) * d[k] for k in d) / sum(weights.values())


signal = st.fixed_dictionaries(
    {
        "agent_id": st.sampled_from(AGENTS),
        "signal_type": st.sampled_from(TYPES),
        "value": st.floats(0, 1),
    },
    optional={
        "confidence": st.floats(0, 1),
        "ttl_s": st.sampled_from([1.0, 5.0, 60.0]),
        "timestamp_offset_s": st.sampled_from([-0.5, -3.0, 2.0]),
    },
)
operation = st.one_of(
    st.tuples(st.just("ingest"), st.lists(signal, min_size=1, max_size=8)),
    st.tuples(st.just("advance"), st.floats(0.0, 15.0)),
    st.tuples(st.just("delete"), st.sampled_from(AGENTS)),
    st.tuples(st.just("sweep"), st.none()),
)
weights = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(list(DIMENSIONS)), st.floats(0.1, 5.0), min_size=1),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, max_size=25), weights, st.integers(1, 6))
def test_core_matches_reference_model(ops: list, w: dict | None, k: int) -> None:
    clock = Clock()
    state = ShardState(ShardConfig(history_retention_s=RETENTION_S), clock=clock, seed=0)
    ref = Reference()
    for kind, arg in ops:
        if kind == "ingest":
            batch = []
            for s in arg:
                s = dict(s)
                off = s.pop("timestamp_offset_s", None)
                if off is not None:
                    s["timestamp"] = clock() + off
                batch.append(s)
            accepted = state.ingest_dicts(batch).accepted
            assert accepted == sum(ref.ingest(s, clock()) for s in batch)
        elif kind == "advance":
            clock.advance(arg)
        elif kind == "delete":
            state.delete(arg)
            ref.delete(arg)
        else:
            state.sweep()
            ref.sweep(clock())

    weight_model = Weights(**w) if w else None
    wdict = w or DEFAULT_WEIGHTS.model_dump(exclude_none=True)
    now = clock()
    got = state.scores(AGENTS, weight_model)
    for a in AGENTS:
        assert got[a].known == (a in ref.last_seen)
        assert got[a].score == pytest.approx(ref.score(a, wdict, now), abs=1e-9)
        assert got[a].scores == pytest.approx(ref.dims(a, now), abs=1e-9)
    expected = sorted((ref.score(a, wdict, now) for a in ref.last_seen), reverse=True)[:k]
    top = state.select(SelectRequest(k=k, weights=weight_model, strategy="best", assign=False))
    assert [s.score for s in top.selected] == pytest.approx(expected, abs=1e-9)
    assert top.considered == len(ref.last_seen)


def shard_of(agent: str, n: int) -> int:
    return int(agent.split("-")[1]) % n


def split_states(num_shards: int, n_agents: int, seed: int) -> tuple[ShardState, list[ShardState]]:
    clock = Clock()
    rng = np.random.default_rng(seed)
    single = ShardState(clock=clock, seed=seed)
    shards = [ShardState(clock=clock, seed=seed + 1 + i) for i in range(num_shards)]
    ids = [f"m-{i}" for i in range(n_agents)]
    # Coarse values make many exact ties, which is where merges usually go wrong.
    values = rng.integers(0, 4, (n_agents, 2)) / 4
    for i, a in enumerate(ids):
        batch = [
            {"agent_id": a, "signal_type": "LOAD", "value": float(values[i, 0])},
            {"agent_id": a, "signal_type": "QUALITY", "value": float(values[i, 1])},
        ]
        single.ingest_dicts(batch)
        shards[shard_of(a, num_shards)].ingest_dicts(batch)
    return single, shards


@pytest.mark.parametrize("strategy", ["balanced", "best", "weighted", "p2c"])
def test_merged_shard_answers_equal_one_shard_holding_everything(strategy: str) -> None:
    single, shards = split_states(3, 60, seed=5)
    rng = np.random.default_rng(9)
    for k in (1, 3, 10):
        req = SelectRequest(k=k, strategy=strategy, min_score=0.3, weighted_pool=12, assign=False)
        merged, _ = merge_partials(
            [s.partial_select(req) for s in shards], req, rng, shards_total=3, shards_answered=3
        )
        alone = single.select(req)
        assert merged.considered == alone.considered == 60
        assert len(merged.selected) == len(alone.selected) == k
        if strategy == "best":
            assert [s.score for s in merged.selected] == [s.score for s in alone.selected]


def wins_over_two_shards(
    first: list[str], second: list[str], req: SelectRequest, rounds: int
) -> collections.Counter[str]:
    """Who wins ``rounds`` merged selections over two shards holding identical agents."""
    clock = Clock()
    shards = [ShardState(clock=clock, seed=s) for s in (1, 2)]
    for state, ids in zip(shards, (first, second), strict=True):
        state.ingest_dicts([{"agent_id": a, "signal_type": "LOAD", "value": 0.2} for a in ids])
    rng = np.random.default_rng(0)
    return collections.Counter(
        merge_partials([s.partial_select(req) for s in shards], req, rng)[0].selected[0].agent_id
        for _ in range(rounds)
    )


def test_merged_tie_breaking_is_uniform_across_shards() -> None:
    """Ties spread evenly even when one shard holds more of the tied agents."""
    req = SelectRequest(k=1, strategy="best")
    wins = wins_over_two_shards([f"m-{i}" for i in range(3)], ["m-9"], req, 2000)
    assert all(400 < c < 600 for c in wins.values()), wins  # 500 each, not 1/6 vs 1/2


def test_merged_p2c_samples_uniformly_across_unequal_shards() -> None:
    req = SelectRequest(k=1, strategy="p2c")
    wins = wins_over_two_shards([f"m-{i}" for i in range(9)], ["m-99"], req, 3000)
    assert 200 < wins["m-99"] < 400, wins  # 1 in 10


@settings(max_examples=100, deadline=None)
@given(
    lead=st.sampled_from([(), (3,), (2, 4)]),
    n=st.integers(1, 40),
    picks=st.lists(st.integers(0, 39), max_size=30),
    bounds=st.tuples(st.integers(0, 40), st.integers(0, 40)),
)
def test_columns_reads_what_indexing_the_row_axis_reads(lead, n, picks, bounds) -> None:
    """``columns`` (a take along the row axis, for speed) gives exactly ``arr[..., rows]``
    for any rows, repeats and order included, or a mask; a slice stays a view of the table."""
    from actors.core.table import columns

    arr = np.arange(int(np.prod(lead, dtype=int)) * n, dtype=np.float64).reshape(*lead, n)
    rows = np.array([p % n for p in picks], dtype=np.int64)
    got = columns(arr, rows)
    assert got.shape == arr[..., rows].shape and np.array_equal(got, arr[..., rows])
    mask = np.zeros(n, bool)
    mask[rows] = True
    assert np.array_equal(columns(arr, mask), arr[..., mask])
    lo, hi = sorted(bounds)
    view = columns(arr, slice(lo, min(hi, n)))
    assert np.array_equal(view, arr[..., lo : min(hi, n)])
    assert view.size == 0 or np.shares_memory(view, arr)
