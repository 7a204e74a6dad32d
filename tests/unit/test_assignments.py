"""Assignments, completions, the load estimate, metadata and the balanced strategy."""

from __future__ import annotations

import collections

import pytest
from pydantic import ValidationError

from actors.core.config import ShardConfig
from actors.core.errors import InvalidInput
from actors.core.models import SelectRequest
from actors.core.state import ShardState

from .helpers import sig


@pytest.fixture
def state(clock) -> ShardState:
    return ShardState(ShardConfig(default_task_load=0.1), clock=clock, seed=7)


def test_select_assigns_by_default_and_complete_releases(state, clock) -> None:
    state.ingest_dicts([sig("a", "LOAD", 0.2)])
    pick = state.select(SelectRequest()).selected[0]
    assert pick.agent_id == "a" and pick.assignment_id
    assert state.agent("a").in_flight == 1
    assert state.agent("a").estimated_load == pytest.approx(0.3)
    clock.advance(1)
    done = state.complete("a", pick.assignment_id, ok=True)
    assert done.released and done.assignment_id == pick.assignment_id
    assert state.agent("a").in_flight == 0
    assert state.agent("a").estimated_load == pytest.approx(0.2)
    assert state.complete("a", pick.assignment_id).released is False  # only once
    assert state.metrics.completed_total == {"ok": 1}  # an id no longer open changes nothing


def test_complete_without_id_releases_the_oldest_and_unknown_agents_get_no_state(state) -> None:
    state.ingest_dicts([sig("a", "LOAD", 0.2)])
    first = state.assign(["a"])["a"]
    state.assign(["a"])
    assert state.complete("a").assignment_id == first
    assert state.agent("a").in_flight == 1
    assert state.complete("ghost").released is False and "ghost" not in state
    assert state.complete("a", "no-such-id").released is False


def test_a_report_absorbs_earlier_tasks_whose_completion_then_lowers_the_estimate(
    state, clock
) -> None:
    state.ingest_dicts([sig("a", "LOAD", 0.2)])
    aid = state.assign(["a"])["a"]
    clock.advance(1)
    state.ingest_dicts([sig("a", "LOAD", 0.3)])  # measured after the pick: includes it
    assert state.agent("a").estimated_load == pytest.approx(0.3)
    clock.advance(1)
    assert state.complete("a", aid).released
    assert state.agent("a").estimated_load == pytest.approx(0.2)  # done since the report
    clock.advance(1)
    state.ingest_dicts([sig("a", "LOAD", 0.25)])
    assert state.agent("a").estimated_load == pytest.approx(0.25)


def test_declared_max_concurrency_sets_the_load_per_task(state) -> None:
    state.describe("a", max_concurrency=20)
    state.ingest_dicts([sig("a", "LOAD", 0.5)])
    state.assign(["a", "a", "a", "a"])
    view = state.agent("a")
    assert view.max_concurrency == 20 and view.load_per_task == pytest.approx(0.05)
    assert view.estimated_load == pytest.approx(0.7)


def test_load_per_task_is_learned_from_reports_when_completions_are_reported(clock) -> None:
    state = ShardState(ShardConfig(default_task_load=0.3), clock=clock, seed=1)
    load, true_unit = 0.1, 0.02
    state.ingest_dicts([sig("a", "LOAD", load)])
    for _ in range(30):
        clock.advance(0.5)
        ids = [state.assign(["a"])["a"] for _ in range(5)]
        for aid in ids[:2]:
            state.complete("a", aid)
        load += 3 * true_unit
        clock.advance(0.5)
        state.ingest_dicts([sig("a", "LOAD", min(load, 1.0))])
        if load > 0.8:
            load = 0.1
            state.ingest_dicts([sig("a", "LOAD", load)])
    assert state.agent("a").load_per_task == pytest.approx(true_unit, rel=0.3)


def test_service_time_is_learned_from_durations_and_bounds_uncompleted_tasks(clock) -> None:
    state = ShardState(ShardConfig(assignment_ttl_s=60), clock=clock, seed=1)
    state.ingest_dicts([sig("a", "LOAD", 0.1)])
    for _ in range(20):
        aid = state.assign(["a"])["a"]
        clock.advance(2.0)  # assignment to completion, queueing included, is what counts
        state.complete("a", aid, duration_s=1.0)
    assert state.agent("a").service_time_s == pytest.approx(2.0)
    # Its callers report completions: a task past 8x the service time that no later task
    # overtook is still running (a long tail), not lost.
    slow = state.assign(["a"])["a"]
    clock.advance(20.0)
    assert state.agent("a").in_flight == 1
    # A task assigned after it completes: the overdue one was lost, and expires.
    later = state.assign(["a"])["a"]
    clock.advance(1.0)
    state.complete("a", later, duration_s=1.0)
    assert state.agent("a").in_flight == 0
    assert state.counters().assignments_expired == 1
    assert not state.complete("a", slow).released
    # One that never completes, with nothing after it, still goes at assignment_ttl_s.
    state.assign(["a"])
    clock.advance(59.0)
    assert state.agent("a").in_flight == 1
    clock.advance(1.5)
    assert state.agent("a").in_flight == 0


def steady_without_completions(clock) -> ShardState:
    """2 tasks/s for 10 s at a steady LOAD of 0.6 (0.1 per task), nothing completed."""
    state = ShardState(ShardConfig(default_task_load=0.1), clock=clock, seed=1)
    state.ingest_dicts([sig("a", "LOAD", 0.6)])
    for _ in range(10):
        for _ in range(2):
            state.assign(["a"])
        clock.advance(1.0)
        state.ingest_dicts([sig("a", "LOAD", 0.6)])
    return state


def test_tasks_without_completions_expire_at_three_service_times(clock) -> None:
    state = steady_without_completions(clock)
    svc = state.agent("a").service_time_s
    assert svc is not None
    state.ingest_dicts([sig("a", "LOAD", 0.6)])
    state.assign(["a"])
    before = state.agent("a").in_flight
    clock.advance(3 * svc + 0.1)
    assert state.agent("a").in_flight < before


def test_service_time_without_completions_comes_from_littles_law(clock) -> None:
    """2 tasks/s at a steady load of 0.6 with 0.1 per task: 6 in system, 3 s each."""
    state = steady_without_completions(clock)
    assert state.agent("a").service_time_s == pytest.approx(3.0, rel=0.05)


def test_in_flight_records_are_bounded_per_agent_and_per_shard(clock) -> None:
    cfg = ShardConfig(max_inflight_per_agent=3, max_inflight_per_shard=5)
    state = ShardState(cfg, clock=clock)
    state.ingest_dicts([sig("a", "LOAD", 0.1), sig("b", "LOAD", 0.1)])
    for _ in range(5):
        state.assign(["a"])
    assert state.agent("a").in_flight == 3  # the oldest were dropped
    assert len(state.assign(["b", "b"])) == 1 and state.agent("b").in_flight == 2
    assert state.assign(["b"]) == {}  # the shard is full: chosen but not recorded
    assert state.stats()["in_flight"] == 5


def test_describe_creates_labels_filter_and_metadata_is_validated(state, clock) -> None:
    view = state.describe("sql-1", max_concurrency=8, labels={"skill": "sql", "region": "eu"})
    assert view.labels == {"skill": "sql", "region": "eu"} and view.max_concurrency == 8
    state.describe("sql-2", labels={"skill": "sql", "region": "us"})
    state.ingest_dicts([sig("py-1", "LOAD", 0.0)])
    req = SelectRequest(k=5, require_labels={"skill": "sql"}, assign=False)
    assert {s.agent_id for s in state.select(req).selected} == {"sql-1", "sql-2"}
    req = SelectRequest(k=5, require_labels={"skill": "sql", "region": "eu"}, assign=False)
    assert [s.agent_id for s in state.select(req).selected] == ["sql-1"]
    cands = SelectRequest(
        candidates=["sql-2", "py-1", "ghost"], require_labels={"skill": "sql"}, assign=False
    )
    assert [s.agent_id for s in state.select(cands).selected] == ["sql-2"]
    state.describe("sql-2", labels={})  # replaces: no labels left
    assert [s.agent_id for s in state.select(req.model_copy()).selected] == ["sql-1"]
    assert state.describe("sql-2", max_concurrency=2).labels == {}  # omitted: kept
    with pytest.raises(InvalidInput):
        state.describe("bad/id")
    with pytest.raises(ValidationError):
        state.describe("x", labels={f"k{i}": "v" for i in range(33)})
    with pytest.raises(ValidationError):
        state.describe("x", max_concurrency=0)
    # Metadata has no TTL, but a described agent with nothing else is swept in time.
    clock.advance(state.config.history_retention_s + 1)
    state.sweep()
    assert "sql-1" not in state and state.labels.by_agent == {}


def test_sweep_keeps_agents_with_tasks_in_flight(clock) -> None:
    state = ShardState(ShardConfig(history_retention_s=0, assignment_ttl_s=60), clock=clock)
    state.ingest_dicts([sig("busy", "LOAD", 0.5, ttl_s=1), sig("idle", "LOAD", 0.5, ttl_s=1)])
    state.assign(["busy"])
    clock.advance(2)
    state.sweep()
    assert state.agent_ids() == ["busy"]


def test_balanced_spreads_concurrent_picks_over_near_equal_agents(clock) -> None:
    """Ten equal agents and twenty picks with no report in between: each gets two, because
    every pick is an assignment the next pick sees."""
    state = ShardState(ShardConfig(default_task_load=0.05), clock=clock, seed=3)
    state.ingest_dicts([sig(f"a{i}", "LOAD", 0.3) for i in range(10)])
    picks = collections.Counter(
        state.select(SelectRequest()).selected[0].agent_id for _ in range(20)
    )
    assert sorted(picks.values()) == [2] * 10


def test_balanced_takes_a_clearly_better_agent_and_returns_k(clock) -> None:
    state = ShardState(clock=clock, seed=3)
    state.ingest_dicts([sig("idle", "LOAD", 0.0)] + [sig(f"b{i}", "LOAD", 0.9) for i in range(5)])
    for _ in range(10):
        res = state.select(SelectRequest(k=3, assign=False))
        assert res.selected[0].agent_id == "idle" and len(res.selected) == 3
        assert res.strategy == "balanced"


def test_reserve_is_a_synonym_of_assign() -> None:
    assert SelectRequest(reserve=False).assign is False
    assert SelectRequest.model_validate({"reserve": True}).assign is True
    with pytest.raises(ValidationError):
        SelectRequest.model_validate({"reserve": True, "assign": False})


def test_without_completions_the_estimate_falls_between_reports_at_the_drain_rate(
    clock,
) -> None:
    """An agent that finishes 2 tasks/s while busy, whose caller never reports completions:
    from consecutive reports the shard learns the drain rate, and between reports the
    estimate falls with it instead of only rising with each assignment."""
    state = ShardState(ShardConfig(), clock=clock, seed=1)
    state.describe("a", max_concurrency=20)
    n = 5
    state.ingest_dicts([sig("a", "LOAD", n / 20)])
    for _ in range(8):
        for _ in range(3):
            state.assign(["a"])
        clock.advance(1.0)
        n += 3 - 2  # three assigned, two done in each second
        state.ingest_dicts([sig("a", "LOAD", n / 20)])
    clock.advance(1.0)  # one second after the last report, nothing assigned since
    assert state.agent("a").estimated_load == pytest.approx((n - 2) / 20, abs=0.005)
    state.assign(["a"])
    assert state.agent("a").estimated_load == pytest.approx((n - 1) / 20, abs=0.005)


def test_an_agent_idle_at_every_report_still_learns_that_it_drains_fast(clock) -> None:
    """A fast agent finishes all its tasks before each report (LOAD 0 every time): the
    reports only bound its rate from below, and that bound must raise the estimate, or
    the agent looks ever busier and is starved."""
    state = ShardState(ShardConfig(), clock=clock, seed=1)
    state.describe("fast", max_concurrency=20)
    state.ingest_dicts([sig("fast", "LOAD", 0.0)])
    for _ in range(5):
        for _ in range(8):
            state.assign(["fast"])
        clock.advance(2.0)
        state.ingest_dicts([sig("fast", "LOAD", 0.0)])  # all eight done by now
    assert state.table["drain_per_s"][state.table.index["fast"]] >= 4.0
    for _ in range(8):
        state.assign(["fast"])
    clock.advance(2.0)
    assert state.agent("fast").estimated_load == pytest.approx(0.0, abs=1e-9)


def test_report_tasks_opens_and_closes_tasks_placed_outside_ripple(state, clock) -> None:
    state.ingest_dicts([sig("a", "LOAD", 0.2), sig("b", "LOAD", 0.2)])
    clock.advance(1)
    out = state.report_tasks(["a", "a", "b", "ghost"], [])
    assert out == {"assigned": 3, "released": 0}  # the unknown agent gets no state
    assert "ghost" not in state
    assert state.agent("a").in_flight == 2
    assert state.agent("a").estimated_load == pytest.approx(0.4)
    out = state.report_tasks([], [("a", True, 0.5), ("b", False, None), ("ghost", True, 1.0)])
    assert out == {"assigned": 0, "released": 2}
    assert state.agent("a").in_flight == 1 and state.agent("b").in_flight == 0
    assert state.metrics.completed_total == {"ok": 1, "failed": 1}  # not the ghost's
