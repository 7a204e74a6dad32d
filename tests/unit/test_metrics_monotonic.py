"""Counters never go backwards between scrapes: not when a source is silent, not when it
restarts from zero."""

from __future__ import annotations

from actors.core.metrics import MetricsSnapshot, Monotonic


def snap(signals: int, agents: int) -> MetricsSnapshot:
    m = MetricsSnapshot()
    m.count(m.signals_total, "LOAD", signals)
    m.agents = agents
    return m


def test_silent_and_restarted_sources_keep_their_counts() -> None:
    mono = Monotonic()
    first = mono.total({"shard-0": snap(10, 5), "shard-1": snap(7, 3)})
    assert first.signals_total == {"LOAD": 17} and first.agents == 8
    silent = mono.total({"shard-0": snap(12, 5), "shard-1": None})
    assert silent.signals_total == {"LOAD": 19} and silent.agents == 5  # gauge: as of now
    restarted = mono.total({"shard-0": snap(12, 5), "shard-1": snap(2, 1)})
    assert restarted.signals_total == {"LOAD": 21} and restarted.agents == 6
    later = mono.total({"shard-0": snap(13, 5), "shard-1": snap(4, 1)})
    assert later.signals_total == {"LOAD": 24}
