"""What outcomes teach (DESIGN §4): health states, the panic bound, speed, predicted_s with
its priors, decisions in seconds, deadlines, and what travels with snapshots and the WAL."""

from __future__ import annotations

import collections

import pytest

from actors.core import recovery, wal
from actors.core.config import ShardConfig
from actors.core.models import SelectRequest
from actors.core.state import ShardState

from .helpers import sig


def fleet(clock, n: int = 4, **cfg: object) -> ShardState:
    state = ShardState(ShardConfig(**cfg), clock=clock, seed=5)  # type: ignore[arg-type]
    for i in range(n):
        state.describe(f"a{i}", max_concurrency=4)
    return state


def run_task(state: ShardState, agent: str, ok: bool, clock, seconds: float = 0.5) -> None:
    aid = state.assign([agent])[agent]
    clock.advance(seconds)
    state.complete(agent, aid, ok=ok, duration_s=seconds)


def picks(state: ShardState, times: int = 50) -> collections.Counter[str]:
    return collections.Counter(
        state.select(SelectRequest(assign=False)).selected[0].agent_id for _ in range(times)
    )


def test_consecutive_failures_eject_then_probe_then_heal(clock) -> None:
    state = fleet(clock, eject_after_failures=3, ejection_base_s=10)
    for _ in range(2):
        run_task(state, "a0", False, clock)
    assert state.agent("a0").health == "healthy"  # two failures are not yet a run
    run_task(state, "a0", False, clock)
    view = state.agent("a0")
    assert view.health == "ejected" and view.ejections == 1
    assert view.ejected_for_s == pytest.approx(10.0)
    assert "a0" not in picks(state)
    assert state.counters().ejections_total == 1
    clock.advance(10.0)
    assert state.agent("a0").health == "probing"
    # A probing agent takes its probe (one task at a time), then is passed over.
    probe = state.assign(["a0"])["a0"]
    assert "a0" not in picks(state)
    clock.advance(0.5)
    state.complete("a0", probe, ok=True, duration_s=0.5)
    assert state.agent("a0").health == "healthy"


def test_a_failed_probe_ejects_again_for_twice_as_long_up_to_the_cap(clock) -> None:
    state = fleet(clock, eject_after_failures=1, ejection_base_s=10, ejection_max_s=30)
    run_task(state, "a0", False, clock, 0.1)
    spans = []
    for _ in range(3):
        spans.append(state.agent("a0").ejected_for_s)
        clock.advance(state.agent("a0").ejected_for_s or 0.0)
        assert state.agent("a0").health == "probing"
        run_task(state, "a0", False, clock, 0.1)
    assert spans == pytest.approx([10.0, 20.0, 30.0])  # doubling, capped at 30


def test_a_success_rate_far_below_the_shards_ejects(clock) -> None:
    state = fleet(clock, eject_min_outcomes=20, eject_success_gap=0.2)
    for i in range(40):
        for a in ("a1", "a2", "a3"):
            run_task(state, a, True, clock, 0.01)
        # a0 fails every third task: never 5 in a row, but 33% below the others.
        run_task(state, "a0", i % 3 != 0, clock, 0.01)
        if state.agent("a0").health != "healthy":
            break
    assert state.agent("a0").health == "ejected"
    assert state.agent("a1").health == "healthy"


def test_never_more_than_the_configured_fraction_is_ejected_and_all_unhealthy_panics(
    clock,
) -> None:
    state = fleet(clock, eject_after_failures=1, max_ejected_fraction=0.5)
    for a in ("a0", "a1", "a2", "a3"):
        run_task(state, a, False, clock, 0.01)
    health = [state.agent(f"a{i}").health for i in range(4)]
    assert health.count("ejected") == 2  # half of four; the others stay in rotation
    # Candidates that are all ejected: a panic routes to them rather than to nobody.
    ejected = [f"a{i}" for i in range(4) if health[i] == "ejected"]
    got = state.select(SelectRequest(candidates=ejected, assign=False)).selected
    assert got and got[0].agent_id in ejected and got[0].health == "ejected"


def test_two_routers_that_chose_a_probing_agent_at_once_send_one_probe(clock) -> None:
    state = fleet(clock, eject_after_failures=1, ejection_base_s=1.0)
    run_task(state, "a0", False, clock, 0.01)
    clock.advance(1.0)
    assert state.agent("a0").health == "probing"
    # Both routers' partial answers were taken before either assigned.
    req = SelectRequest(candidates=["a0"], assign=True)
    assert [state.partial_select(req).agent_ids for _ in range(2)] == [["a0"], ["a0"]]
    first = state.assign(["a0"], admit=True)
    assert "a0" in first
    assert state.assign(["a0"], admit=True) == {}  # the probe is out: as if full
    assert state.assign(["a0"]) != {}  # not a selection's: recorded as told


def test_a_panic_is_the_selections_not_one_shards(clock) -> None:
    """An ejected agent alone on its shard: that shard sends it (all its candidates are
    unhealthy), but the merge passes it over while another shard has a healthy agent, with
    headroom or not, as one shard holding all three would."""
    import numpy as np

    from actors.core.merge import merge_partials

    healthy, lone = fleet(clock, n=2), fleet(clock, n=0, eject_after_failures=1)
    lone.describe("c", max_concurrency=4)
    run_task(lone, "c", False, clock, 0.01)
    assert lone.agent("c").health == "ejected"
    rng = np.random.default_rng(0)

    def merged(req: SelectRequest) -> tuple[list[str], list]:
        # As a router asks: each shard for the candidates it owns.
        mine = [[a for a in req.candidates or () if a != "c"], ["c"]]
        parts = [
            shard.partial_select(req.model_copy(update={"candidates": own}))
            for shard, own in zip((healthy, lone), mine, strict=True)
            if own
        ]
        result, _ = merge_partials(parts, req, rng, shards_total=2, shards_answered=2)
        return [p.agent_id for p in result.selected], parts

    req = SelectRequest(candidates=["a0", "a1", "c"], k=3, assign=True)
    got, parts = merged(req)
    assert sorted(got) == ["a0", "a1"]
    assert parts[1].blocked == 1 and not parts[1].panic and not parts[1].agent_ids
    # The healthy ones full: a saturated answer (nothing picked), not the ejected one.
    for a in ("a0", "a1"):
        for _ in range(4):
            healthy.assign([a])
    got, parts = merged(req)
    assert got == [] and sum(p.full for p in parts) == 2
    # Only the ejected one asked for: the panic stands.
    assert merged(SelectRequest(candidates=["c"], assign=False))[0] == ["c"]


def test_a_fast_failing_agent_that_looks_idle_stops_getting_work(clock) -> None:
    """The black hole: LOAD 0 and 5 ms failures. Load-based routing would send it most."""
    state = fleet(clock)
    state.ingest_dicts([sig(f"a{i}", "LOAD", 0.5) for i in range(1, 4)] + [sig("a0", "LOAD", 0)])
    sent = collections.Counter()
    for _ in range(200):
        pick = state.select(SelectRequest()).selected[0]
        sent[pick.agent_id] += 1
        if pick.agent_id == "a0":
            clock.advance(0.005)
            state.complete("a0", pick.assignment_id, ok=False, duration_s=0.005)
        else:
            clock.advance(0.05)
            state.complete(pick.agent_id, pick.assignment_id, ok=True, duration_s=0.05)
    assert sent["a0"] <= 5  # ejected after its fifth failure in a row


def test_predicted_s_uses_priors_until_completions_then_the_measurement(clock) -> None:
    state = ShardState(ShardConfig(default_service_s=2.0), clock=clock, seed=1)
    plain = [f"plain-{i}" for i in range(8)]
    state.ingest_dicts(
        [sig("fast", "CAPACITY", 1.0, ttl_s=3600)] + [sig(a, "LOAD", 0.0) for a in plain]
    )
    # No completion anywhere: default_service_s, scaled by the reported speed.
    assert state.agent("plain-0").predicted_s == pytest.approx(2.0)
    assert state.agent("fast").predicted_s == pytest.approx(1.0, rel=0.05)
    for _ in range(50):
        run_task(state, "plain-0", True, clock, 0.2)
    # The measurement replaces the prior (shrunk toward it by 5 pseudo-completions) ...
    assert state.agent("plain-0").predicted_s == pytest.approx(0.2, rel=0.01)
    # ... and the shard's median becomes the prior of agents without completions.
    for a in plain[1:]:
        run_task(state, a, True, clock, 0.2)
    assert state.agent("fast").predicted_s == pytest.approx(0.1, rel=0.1)


def test_predicted_s_counts_the_queue_and_learns_parallelism(clock) -> None:
    state = ShardState(clock=clock, seed=1)
    state.describe("serial", max_concurrency=8)  # accepts 8, runs one at a time
    state.describe("wide", max_concurrency=8)  # runs 4 at once
    for _ in range(30):
        serial = [state.assign(["serial"])["serial"] for _ in range(4)]
        for aid in serial:  # FIFO, one at a time: the i-th waited i task times
            clock.advance(1.0)
            state.complete("serial", aid, duration_s=1.0)
        wide = [state.assign(["wide"])["wide"] for _ in range(4)]
        clock.advance(1.0)
        for aid in wide:  # all four ran together: none waited
            state.complete("wide", aid, duration_s=1.0)
    assert state.agent("serial").parallelism == pytest.approx(1.0, abs=0.3)
    assert state.agent("wide").parallelism == pytest.approx(4.0, rel=0.2)
    for _ in range(3):
        state.assign(["serial"])
        state.assign(["wide"])
    # Three held: the serial agent finishes one more in 4 task times, the wide one in 1.
    assert state.agent("serial").predicted_s == pytest.approx(4.0, rel=0.3)
    assert state.agent("wide").predicted_s == pytest.approx(1.0, rel=0.2)


def test_a_stuck_load_report_is_overruled_by_the_tasks_measured_open(clock) -> None:
    state = fleet(clock, n=2)
    for _ in range(6):
        state.assign(["a0"])
    state.ingest_dicts([sig("a0", "LOAD", 0.2), sig("a1", "LOAD", 0.2)])  # a0's is stuck
    state.complete("a0", None, duration_s=1.0)  # its callers report completions
    view = state.agent("a0")
    assert view.in_flight == 5
    assert view.scores["load"] == 0.0  # 5 tasks of 4 slots: not the 0.8 LOAD 0.2 says
    assert picks(state, 20) == {"a1": 20}


def test_balanced_prices_a_preference_in_time_and_never_queues_without_bound(clock) -> None:
    """A preferred agent (QUALITY 1) against a neutral one, both serial, same speed: it
    gets the work while its predicted time is within 1 + preference_price of the other's,
    then the other does, however strong the preference."""
    state = ShardState(ShardConfig(preference_price=0.5), clock=clock, seed=2)
    state.ingest_dicts([sig("liked", "QUALITY", 1.0), sig("plain", "QUALITY", 0.5)])
    sent = collections.Counter(
        state.select(SelectRequest()).selected[0].agent_id for _ in range(40)
    )
    # Serial agents with equal speed: preference 0.6 against 0.5 under the default
    # weights is a 5% price, so the liked one leads by at most one task in each ~20.
    assert sent["plain"] >= 15
    assert sent["liked"] >= sent["plain"]


def test_deadline_picks_the_preferred_agent_that_can_make_it_or_flags_the_risk(clock) -> None:
    state = ShardState(ShardConfig(default_service_s=1.0), clock=clock, seed=2)
    state.ingest_dicts([sig("liked", "QUALITY", 1.0), sig("plain", "QUALITY", 0.2)])
    for _ in range(3):
        state.assign(["liked"])  # serial: one more task there finishes in 4 s
    pick = state.select(SelectRequest(deadline_s=2.0, assign=False)).selected[0]
    assert pick.agent_id == "plain" and pick.deadline_at_risk is False
    loose = state.select(SelectRequest(deadline_s=10.0, assign=False)).selected[0]
    assert loose.agent_id == "liked" and loose.deadline_at_risk is False
    tight = state.select(SelectRequest(deadline_s=0.5, assign=False)).selected[0]
    assert tight.agent_id == "plain" and tight.deadline_at_risk is True
    assert tight.predicted_s == pytest.approx(1.0)


def test_measured_success_informs_quality(clock) -> None:
    state = fleet(clock, n=4, quality_prior_outcomes=10)
    for i in range(40):
        run_task(state, "a0", True, clock, 0.01)
        run_task(state, "a1", i % 4 != 0, clock, 0.01)  # 75%
    q0, q1 = state.agent("a0").scores["quality"], state.agent("a1").scores["quality"]
    # Relative to the shard's rate (0.875), in proportion to the evidence (40 of 50):
    # neither reports QUALITY, so both start from the neutral 0.5.
    assert q0 == pytest.approx(0.5 + 0.125 * 0.8, abs=0.03)
    assert q1 == pytest.approx(0.5 - 0.125 * 0.8, abs=0.03)
    # Agents that succeed alike score alike, however many tasks each ran.
    for _ in range(30):
        run_task(state, "a2", True, clock, 0.01)
    run_task(state, "a3", True, clock, 0.01)
    assert state.agent("a2").scores["quality"] == pytest.approx(
        state.agent("a3").scores["quality"], abs=0.1
    )
    assert state.agent("a1").success_rate == pytest.approx(0.75, abs=0.08)


def test_health_and_speed_travel_with_snapshots_and_the_wal(clock) -> None:
    records: list[bytes] = []
    state = ShardState(ShardConfig(eject_after_failures=2), clock=clock, seed=5)
    state.journal = records.append
    for i in range(4):
        state.describe(f"a{i}", max_concurrency=4)
    for _ in range(10):
        run_task(state, "a1", True, clock, 0.3)
    run_task(state, "a0", False, clock, 0.01)
    run_task(state, "a0", False, clock, 0.01)
    before = state.agent("a0"), state.agent("a1")
    assert before[0].health == "ejected" and before[1].work_s == pytest.approx(0.3)
    restored = recovery.restore(recovery.snapshot(state), state.config, clock)
    assert (restored.agent("a0"), restored.agent("a1")) == before
    replayed = ShardState(state.config, clock=clock)
    decoded = wal.decode(wal.SEGMENT_HEADER + b"".join(records))
    list(recovery.replay(replayed, decoded.records))
    assert (replayed.agent("a0"), replayed.agent("a1")) == before


def test_overload_forecast_from_the_measured_queue(clock) -> None:
    """Its LOAD says 0.5 and has been flat; but tasks arrive at 6/s and it finishes 4/s
    (4 slots, 1 s each): the measured queue says it overloads. A twin given 2/s, which
    reports what it holds, does not."""
    state = ShardState(clock=clock, seed=1)
    for a in ("busy", "calm"):
        state.describe(a, max_concurrency=8)
    running: dict[str, list[tuple[float, str]]] = {"busy": [], "calm": []}
    rates = {"busy": 6, "calm": 2}
    for second in range(120):
        for a, per_s in rates.items():
            for _ in range(per_s):
                running[a].append((clock.now_s, state.assign([a])[a]))
            # 4 slots of 1 s each: up to 4 of the oldest finish every second.
            for made, aid in running[a][:4]:
                state.complete(a, aid, duration_s=1.0)
                assert clock.now_s - made >= 0
            running[a] = running[a][4:]
        if second % 5 == 0:
            state.ingest_dicts(
                [
                    sig("busy", "LOAD", 0.5),  # stuck
                    sig("calm", "LOAD", min(1.0, len(running["calm"]) / 8)),
                ]
            )
        clock.advance(1.0)
    busy, calm = state.predict("busy"), state.predict("calm")
    assert busy.status == "ok" and busy.will_overload and busy.probability > 0.9
    assert calm.status == "ok" and not calm.will_overload and calm.probability < 0.1
