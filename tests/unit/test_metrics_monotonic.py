"""Counters never go backwards between scrapes: not when a source is silent, not when it
restarts from zero."""

from __future__ import annotations

from actors.core.metrics import MetricsSnapshot, Monotonic


def snap(signals: int, agents: int, life: str = "first") -> MetricsSnapshot:
    """What a source reports; ``life`` is its incarnation (new after a restart)."""
    m = MetricsSnapshot(incarnation=life)
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
    back = MetricsSnapshot.from_counters_json(m.counters_json())
    assert back.signals_total == {"LOAD": 7} and back.assignments_expired == 2
    assert back.registration("LOAD").count == 3 and back.selection("balanced").count == 1
    assert back.signal_age_s.count == 1 and back.count_total() == m.count_total()
