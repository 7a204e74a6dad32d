"""Plain counters and histograms kept by each shard and merged at scrape time.

No prometheus objects live in the shards: the Serve app's custom collector pulls a
``MetricsSnapshot`` from every shard and renders the sums, so a cluster is one target.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.core.models import SIGNAL_TYPES

# Bucket upper bounds, in seconds. Registration is amortised per signal (microseconds);
# selection is per call; signal age spans seconds up to the maximum TTL.
REGISTRATION_BUCKETS_S: tuple[float, ...] = (
    1e-7,
    2.5e-7,
    5e-7,
    1e-6,
    2.5e-6,
    5e-6,
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    1e-3,
)
SELECTION_BUCKETS_S: tuple[float, ...] = (
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    5e-2,
    0.1,
    0.25,
    1.0,
)
SIGNAL_AGE_BUCKETS_S: tuple[float, ...] = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
SNAPSHOT_BUCKETS_S: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: np.ndarray = field(init=False)  # one per bound plus +Inf, not cumulative
    total: float = 0.0
    _edges: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)
        self._edges = np.asarray(self.bounds, dtype=np.float64)

    def observe(self, value: float, count: int = 1) -> None:
        # bisect on a tuple beats numpy's per-call overhead for one value.
        self.counts[bisect_left(self.bounds, value)] += count
        self.total += value * count

    def observe_many(self, values: np.ndarray) -> None:
        if len(values) <= 8:  # the usual top-k of a selection: bisect beats numpy's setup
            for v in values.tolist():
                self.observe(v)
            return
        if len(values):
            np.add.at(self.counts, np.searchsorted(self._edges, values, side="left"), 1)
            self.total += float(values.sum())

    def merge(self, other: Histogram) -> None:
        self.counts += other.counts
        self.total += other.total

    def set_shortfall(self, mine: Histogram, newer: Histogram | None) -> None:
        """Become what ``newer`` lacks of ``mine``, bucket by bucket (never negative)."""
        self.counts[:] = np.maximum(mine.counts - (newer.counts if newer else 0), 0)
        self.total = max(mine.total - (newer.total if newer else 0.0), 0.0)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus-style (le, cumulative count) pairs ending in +Inf."""
        les = [repr(float(b)) for b in self.bounds] + ["+Inf"]
        return list(zip(les, np.cumsum(self.counts).tolist(), strict=True))


# The storage steps a shard counts failures of (a closed set: a bounded label).
STORAGE_STEPS = ("append", "fsync", "open", "snapshot", "rebuild")


@dataclass
class MetricsSnapshot:
    """Everything one shard counts; summed across shards by ``merge``."""

    signals_total: dict[str, int] = field(default_factory=dict)
    rejected_total: dict[str, int] = field(default_factory=dict)
    selections_total: dict[str, int] = field(default_factory=dict)
    predictions_total: dict[str, int] = field(default_factory=dict)
    registration_s: dict[str, Histogram] = field(default_factory=dict)
    selection_s: dict[str, Histogram] = field(default_factory=dict)
    signal_age_s: Histogram = field(default_factory=lambda: Histogram(SIGNAL_AGE_BUCKETS_S))
    completed_total: dict[str, int] = field(default_factory=dict)
    # Storage steps that failed (append, fsync, open, snapshot, rebuild): each refused
    # the writes it carried, or delayed a snapshot.
    storage_failures_total: dict[str, int] = field(default_factory=dict)
    assignments_expired: int = 0
    wal_bytes_total: int = 0  # written to the write-ahead log
    snapshot_s: Histogram = field(default_factory=lambda: Histogram(SNAPSHOT_BUCKETS_S))
    agents: int = 0
    live_signals: int = 0
    in_flight: int = 0
    # Which life of the source this is (new per process and per restore), and the
    # counters it restored from a snapshot: a scrape that sees a new incarnation adds
    # what the old one had counted beyond that base, so counters never go backwards.
    incarnation: str = field(default_factory=lambda: os.urandom(6).hex())
    restored_base: MetricsSnapshot | None = None

    def take_over(self, other: MetricsSnapshot) -> None:
        """Become ``other`` (its counters and incarnation), in place: a state rebuilt
        after a take-back goes on counting where the one it replaces was (the overload
        scan holds this object, so it is updated, not swapped)."""
        self.__dict__.update(other.__dict__)

    def count(self, table: dict[str, int], key: str, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n

    def registration(self, signal_type: str) -> Histogram:
        return self.registration_s.setdefault(signal_type, Histogram(REGISTRATION_BUCKETS_S))

    def selection(self, strategy: str) -> Histogram:
        return self.selection_s.setdefault(strategy, Histogram(SELECTION_BUCKETS_S))

    # ---------------------------------------------------------- recording, in one place
    def record_ingest(
        self, codes: np.ndarray, reasons: dict[str, int], took_s: float, total: int
    ) -> None:
        per_signal_s = took_s / max(total, 1)
        for code, count in zip(*np.unique(codes, return_counts=True), strict=True):
            name = SIGNAL_TYPES[int(code)].value
            self.count(self.signals_total, name, int(count))
            self.registration(name).observe(per_signal_s, int(count))
        for reason, count in reasons.items():
            self.count(self.rejected_total, reason, count)

    def record_selection(self, strategy: str, ages_s: np.ndarray, took_s: float) -> None:
        self.count(self.selections_total, strategy)
        self.selection(strategy).observe(took_s)
        self.signal_age_s.observe_many(ages_s[np.isfinite(ages_s)])

    def with_gauges(
        self, agents: int, live_signals: int, in_flight: int, expired: int
    ) -> MetricsSnapshot:
        """These counters with the shard's gauges as of now (read at each scrape)."""
        self.agents, self.live_signals, self.in_flight = agents, live_signals, in_flight
        self.assignments_expired = expired
        return self

    def record_rejected(self, reason: str, signals: int) -> None:
        """Signals refused whole before validation (back-pressure, storage)."""
        self.count(self.rejected_total, reason, signals)

    def record_completion(self, ok: bool) -> None:
        self.count(self.completed_total, "ok" if ok else "failed")

    def record_wal_bytes(self, n: int) -> None:
        self.wal_bytes_total += n

    def record_snapshot(self, took_s: float) -> None:
        self.snapshot_s.observe(took_s)

    def record_storage_failure(self, step: str) -> None:
        self.count(self.storage_failures_total, step)

    def record_prediction(self, will_overload: bool | None) -> None:
        key = "insufficient_data" if will_overload is None else str(will_overload).lower()
        self.count(self.predictions_total, key)

    def count_total(self) -> int:
        """Everything counted, for telling a restarted source (its total fell)."""
        return (
            sum(sum(getattr(self, t).values()) for t in self._TABLES)
            + self.assignments_expired
            + self.wal_bytes_total
            + self.snapshot_s.count
            + sum(h.count for h in (*self.registration_s.values(), *self.selection_s.values()))
            + self.signal_age_s.count
        )

    _TABLES = (
        "signals_total",
        "rejected_total",
        "selections_total",
        "predictions_total",
        "completed_total",
        "storage_failures_total",
    )

    def counters_json(self) -> dict[str, Any]:
        """The counters and histograms (not the gauges), for a snapshot: a restored shard
        goes on counting from where it was instead of from zero."""

        def hist(h: Histogram) -> list[Any]:
            return [h.counts.tolist(), h.total]

        return {
            **{name: dict(getattr(self, name)) for name in self._TABLES},
            "registration_s": {k: hist(h) for k, h in self.registration_s.items()},
            "selection_s": {k: hist(h) for k, h in self.selection_s.items()},
            "signal_age_s": hist(self.signal_age_s),
            "assignments_expired": self.assignments_expired,
            "wal_bytes_total": self.wal_bytes_total,
            "snapshot_s": hist(self.snapshot_s),
        }

    @classmethod
    def from_counters_json(cls, data: dict[str, Any]) -> MetricsSnapshot:
        """Inverse of ``counters_json``; anything malformed is a ``ValueError``."""
        out = cls()

        def fill(h: Histogram, raw: list[Any]) -> Histogram:
            counts, total = raw
            if len(counts) != len(h.counts):
                raise ValueError("histogram buckets differ")
            h.counts[:] = np.asarray(counts, np.int64)
            h.total = float(total)
            return h

        for name in cls._TABLES:
            getattr(out, name).update({str(k): int(v) for k, v in data.get(name, {}).items()})
        for k, raw in data.get("registration_s", {}).items():
            fill(out.registration(k), raw)
        for k, raw in data.get("selection_s", {}).items():
            fill(out.selection(k), raw)
        fill(out.signal_age_s, data.get("signal_age_s", [[0] * len(out.signal_age_s.counts), 0.0]))
        out.assignments_expired = int(data.get("assignments_expired", 0))
        out.wal_bytes_total = int(data.get("wal_bytes_total", 0))
        if "snapshot_s" in data:
            fill(out.snapshot_s, data["snapshot_s"])
        return out

    def shortfall(self, newer: MetricsSnapshot) -> MetricsSnapshot:
        """What ``newer`` lacks of these counters, item by item (never negative): added to
        ``newer`` it gives counters that did not go backwards."""
        out = MetricsSnapshot()
        for name in self._TABLES:
            mine, theirs, gap = getattr(self, name), getattr(newer, name), getattr(out, name)
            for k, v in mine.items():
                if v > theirs.get(k, 0):
                    gap[k] = v - theirs.get(k, 0)
        for mine_h, theirs_h, get in (
            (self.registration_s, newer.registration_s, out.registration),
            (self.selection_s, newer.selection_s, out.selection),
        ):
            for k, h in mine_h.items():
                get(k).set_shortfall(h, theirs_h.get(k))
        out.signal_age_s.set_shortfall(self.signal_age_s, newer.signal_age_s)
        out.snapshot_s.set_shortfall(self.snapshot_s, newer.snapshot_s)
        out.assignments_expired = max(self.assignments_expired - newer.assignments_expired, 0)
        out.wal_bytes_total = max(self.wal_bytes_total - newer.wal_bytes_total, 0)
        return out

    def merge(self, other: MetricsSnapshot) -> None:
        for name in self._TABLES:
            mine, theirs = getattr(self, name), getattr(other, name)
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        for k, h in other.registration_s.items():
            self.registration(k).merge(h)
        for k, h in other.selection_s.items():
            self.selection(k).merge(h)
        self.signal_age_s.merge(other.signal_age_s)
        self.agents += other.agents
        self.live_signals += other.live_signals
        self.in_flight += other.in_flight
        self.assignments_expired += other.assignments_expired
        self.wal_bytes_total += other.wal_bytes_total
        self.snapshot_s.merge(other.snapshot_s)


class Monotonic:
    """Counters that never go backwards across scrapes, per source (a shard or a router).

    A source that does not answer keeps its last counters. A source in a new incarnation
    (or whose counters went down) restarted: what it had counted beyond the base it
    restored (everything, when it came back empty) becomes an offset added on. Gauges
    (agents, live signals, in flight) are taken as they are."""

    def __init__(self) -> None:
        self._last: dict[str, MetricsSnapshot] = {}
        self._offset: dict[str, MetricsSnapshot] = {}

    def total(self, fresh: dict[str, MetricsSnapshot | None]) -> MetricsSnapshot:
        out = MetricsSnapshot()
        for source, snap in fresh.items():
            last = self._last.get(source)
            if snap is None:  # no answer this time: its counters as last seen
                if last is not None:
                    _merge_counters(out, last)
                continue
            if last is not None and (
                snap.incarnation != last.incarnation or snap.count_total() < last.count_total()
            ):
                base = snap.restored_base or MetricsSnapshot()
                self._offset.setdefault(source, MetricsSnapshot()).merge(last.shortfall(base))
            self._last[source] = snap
            out.merge(snap)
            if source in self._offset:
                _merge_counters(out, self._offset[source])
        return out


def _merge_counters(into: MetricsSnapshot, snap: MetricsSnapshot) -> None:
    """Counters and histograms only: a gauge of a silent or restarted source is stale."""
    gauges = (into.agents, into.live_signals, into.in_flight)
    into.merge(snap)
    into.agents, into.live_signals, into.in_flight = gauges
