"""Counters never go backwards between scrapes: not when a source is silent, not when it
restarts from zero."""

from __future__ import annotations

from actors.core.metric_sources import Monotonic
from actors.core.metrics import Counters


def snap(signals: int, agents: int, life: str = "first") -> Counters:
    """What a source reports; ``life`` is its incarnation (new after a restart)."""
    m = Counters(incarnation=life)
    m.count(m.signals_total, "LOAD", signals)
    m.agents = agents
    return m


def test_silent_and_restarted_sources_keep_their_counts() -> None:
    mono = Monotonic()
    first = mono.total({"shard-0": snap(10, 5), "shard-1": snap(7, 3)})
    assert first.signals_total == {"LOAD": 17} and first.agents == 8
    silent = mono.total({"shard-0": snap(12, 5), "shard-1": None})
    assert silent.signals_total == {"LOAD": 19} and silent.agents == 5  # gauge: as of now
    restarted = mono.total({"shard-0": snap(12, 5), "shard-1": snap(2, 1, "second")})
    assert restarted.signals_total == {"LOAD": 21} and restarted.agents == 6
    later = mono.total({"shard-0": snap(13, 5), "shard-1": snap(4, 1, "second")})
    assert later.signals_total == {"LOAD": 24}


def test_a_source_that_restored_counters_adds_only_what_its_snapshot_missed() -> None:
    mono = Monotonic()
    assert mono.total({"s": snap(100, 5)}).signals_total == {"LOAD": 100}
    # Restarted from a snapshot that had counted 90 of the 100, then counted 3 more:
    # the 10 after the snapshot are added back, the 90 are not counted twice.
    back = snap(93, 5, "second")
    back.restored_base = snap(90, 0, "base")
    assert mono.total({"s": back}).signals_total == {"LOAD": 103}
    later = snap(95, 5, "second")
    later.restored_base = back.restored_base
    assert mono.total({"s": later}).signals_total == {"LOAD": 105}


def test_counters_survive_a_json_round_trip() -> None:
    m = snap(7, 2)
    m.registration("LOAD").observe(1e-6, 3)
    m.selection("balanced").observe(0.002)
    m.signal_age_s.observe(4.0)
    m.assignments_expired = 2
    back = Counters.from_counters_json(m.counters_json())
    assert back.signals_total == {"LOAD": 7} and back.assignments_expired == 2
    assert back.registration("LOAD").count == 3 and back.selection("balanced").count == 1
    assert back.signal_age_s.count == 1 and back.count_total() == m.count_total()


def test_a_restarted_source_that_falls_silent_keeps_what_it_had_added() -> None:
    """The silent branch added the last counts but not the restart's offset: the total
    fell by what the source had counted before its restart."""
    mono = Monotonic()
    mono.total({"s": snap(10, 1)})
    assert mono.total({"s": snap(3, 1, "second")}).signals_total == {"LOAD": 13}
    assert mono.total({"s": None}).signals_total == {"LOAD": 13}


def test_a_retired_source_keeps_its_counts_and_leaves_no_keys() -> None:
    mono = Monotonic()
    mono.total({"shard-0": snap(5, 1), "pushed-replica-a": snap(7, 0)})
    mono.total({"shard-0": snap(6, 1), "pushed-replica-a": snap(2, 0, "second")})
    mono.retire("pushed-replica-a")
    assert mono.sources() == {"shard-0"}
    assert mono.total({"shard-0": snap(6, 1)}).signals_total == {"LOAD": 6 + 7 + 2}


def test_pushed_sources_silent_past_their_ttl_are_forgotten() -> None:
    from actors.core.metric_sources import PushedCounters

    now = [0.0]
    pushed = PushedCounters(ttl_s=300.0, clock=lambda: now[0])
    pushed.absorb("replica-a", snap(1, 0))
    now[0] = 200.0
    pushed.absorb("replica-b", snap(2, 0))
    assert set(pushed.current()) == {"replica-a", "replica-b"}
    now[0] = 301.0
    assert set(pushed.current()) == {"replica-b"}  # bounded: a gone replica goes too
    pushed.absorb("replica-a", snap(3, 0))  # one that comes back is taken again
    assert set(pushed.current()) == {"replica-a", "replica-b"}


def test_degraded_selections_are_a_counter_like_the_others() -> None:
    """It lived beside the counters, so a restarted router's count went backwards."""
    mono = Monotonic()
    a = Counters(incarnation="first")
    for _ in range(4):
        a.record_degraded()
    assert mono.total({"router-0": a}).selections_degraded_total == 4
    b = Counters(incarnation="second")
    b.record_degraded()
    assert mono.total({"router-0": b}).selections_degraded_total == 5
    back = Counters.from_counters_json(a.counters_json())
    assert back.selections_degraded_total == 4 and back.count_total() == a.count_total()
