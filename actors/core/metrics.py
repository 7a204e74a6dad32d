"""Plain counters and histograms kept by each shard and merged at scrape time.

No prometheus objects live in the shards: the Serve app's custom collector pulls the
``Counters`` of every shard and router and renders the sums, so a cluster is one target.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from dataclasses import dataclass, field, fields
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
FLOW_WAIT_BUCKETS_S: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


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

# Each field of ``Counters`` says its kind once, and every operation walks the fields by
# kind: a table of counts by label, a table of histograms by label (with their bounds), a
# histogram, a single count, or a gauge (a value as of now, not summed over time).
_TABLE, _HISTS, _HIST, _COUNT, _GAUGE = "table", "hists", "hist", "count", "gauge"
_GAUGES = "gauges"  # gauges by label (summed over sources like a gauge)


_TABLE_FIELD = {"kind": _TABLE}
_HIST_FIELD = {"kind": _HIST}
_COUNT_FIELD = {"kind": _COUNT}
_GAUGE_FIELD = {"kind": _GAUGE}


@dataclass
class Counters:
    """Everything a shard or a router counts, live (not a copy): merged across sources at
    scrape time by ``merge``, kept from going backwards by ``Monotonic``."""

    signals_total: dict[str, int] = field(default_factory=dict, metadata=_TABLE_FIELD)
    rejected_total: dict[str, int] = field(default_factory=dict, metadata=_TABLE_FIELD)
    selections_total: dict[str, int] = field(default_factory=dict, metadata=_TABLE_FIELD)
    predictions_total: dict[str, int] = field(default_factory=dict, metadata=_TABLE_FIELD)
    completed_total: dict[str, int] = field(default_factory=dict, metadata=_TABLE_FIELD)
    # Storage steps that failed (append, fsync, open, snapshot, rebuild): each refused
    # the writes it carried, or delayed a snapshot.
    storage_failures_total: dict[str, int] = field(default_factory=dict, metadata=_TABLE_FIELD)
    registration_s: dict[str, Histogram] = field(
        default_factory=dict, metadata={"kind": _HISTS, "bounds": REGISTRATION_BUCKETS_S}
    )
    selection_s: dict[str, Histogram] = field(
        default_factory=dict, metadata={"kind": _HISTS, "bounds": SELECTION_BUCKETS_S}
    )
    signal_age_s: Histogram = field(
        default_factory=lambda: Histogram(SIGNAL_AGE_BUCKETS_S), metadata=_HIST_FIELD
    )
    snapshot_s: Histogram = field(
        default_factory=lambda: Histogram(SNAPSHOT_BUCKETS_S), metadata=_HIST_FIELD
    )
    assignments_expired: int = field(default=0, metadata=_COUNT_FIELD)
    wal_bytes_total: int = field(default=0, metadata=_COUNT_FIELD)  # written to the write-ahead log
    selections_degraded_total: int = field(
        default=0, metadata=_COUNT_FIELD
    )  # answered without every shard
    # Agents ejected for failing (DESIGN §4), and the agents in each health state now.
    ejections_total: int = field(default=0, metadata=_COUNT_FIELD)
    agents_healthy: int = field(default=0, metadata=_GAUGE_FIELD)
    agents_ejected: int = field(default=0, metadata=_GAUGE_FIELD)
    agents_probing: int = field(default=0, metadata=_GAUGE_FIELD)
    agents: int = field(default=0, metadata=_GAUGE_FIELD)
    # Flow control (routers; DESIGN §4): refusals by reason (saturated, shed), the wait
    # of each request that waited, by priority; waiting requests by priority; and each
    # tenant's decayed attained service and demand (Jain's index is computed from their
    # sums at scrape time, so it is the whole cluster's, not an average of routers').
    flow_shed_total: dict[str, int] = field(default_factory=dict, metadata=_TABLE_FIELD)
    # Selections with an affinity_key, by outcome (hit, spilled, new).
    affinity_total: dict[str, int] = field(default_factory=dict, metadata=_TABLE_FIELD)
    flow_wait_s: dict[str, Histogram] = field(
        default_factory=dict, metadata={"kind": _HISTS, "bounds": FLOW_WAIT_BUCKETS_S}
    )
    flow_waiting: dict[str, int] = field(default_factory=dict, metadata={"kind": _GAUGES})
    flow_attained: dict[str, float] = field(default_factory=dict, metadata={"kind": _GAUGES})
    flow_demanded: dict[str, float] = field(default_factory=dict, metadata={"kind": _GAUGES})
    live_signals: int = field(default=0, metadata=_GAUGE_FIELD)
    in_flight: int = field(default=0, metadata=_GAUGE_FIELD)
    # Which life of the source this is (new per process and per restore), and the
    # counters it restored from a snapshot: a scrape that sees a new incarnation adds
    # what the old one had counted beyond that base, so counters never go backwards.
    incarnation: str = field(default_factory=lambda: os.urandom(6).hex())
    restored_base: Counters | None = None

    @classmethod
    def _names(cls, kind: str) -> list[str]:
        return [f.name for f in fields(cls) if f.metadata.get("kind") == kind]

    @classmethod
    def _bounds(cls, name: str) -> tuple[float, ...]:
        return next(f.metadata["bounds"] for f in fields(cls) if f.name == name)

    def hist(self, name: str, key: str) -> Histogram:
        """The histogram ``key`` of the table ``name`` (made on first use)."""
        table: dict[str, Histogram] = getattr(self, name)
        h = table.get(key)
        if h is None:
            h = table[key] = Histogram(self._bounds(name))
        return h

    def count(self, table: dict[str, int], key: str, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n

    def registration(self, signal_type: str) -> Histogram:
        return self.hist("registration_s", signal_type)

    def selection(self, strategy: str) -> Histogram:
        return self.hist("selection_s", strategy)

    def take_over(self, other: Counters) -> None:
        """Become ``other`` (its counters and incarnation), in place: a state rebuilt
        after a take-back goes on counting where the one it replaces was (the overload
        scan holds this object, so it is updated, not swapped)."""
        self.__dict__.update(other.__dict__)

    def with_gauges(
        self,
        agents: int,
        live_signals: int,
        in_flight: int,
        expired: int,
        health: dict[str, int] | None = None,
    ) -> Counters:
        """These counters with the shard's gauges as of now (read at each scrape)."""
        self.agents, self.live_signals, self.in_flight = agents, live_signals, in_flight
        self.assignments_expired = expired
        health = health or {}
        self.agents_healthy = health.get("healthy", 0)
        self.agents_ejected = health.get("ejected", 0)
        self.agents_probing = health.get("probing", 0)
        return self

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

    def record_restored(self, counted: Counters) -> None:
        """Counters a snapshot brought back: merged into this live object (the overload
        scan holds it), and kept as the base a scrape subtracts, so counters neither
        restart at zero nor count twice."""
        self.merge(counted)
        self.restored_base = counted

    def record_degraded(self) -> None:
        self.selections_degraded_total += 1

    def record_rejected(self, reason: str, signals: int) -> None:
        """Signals refused whole before validation (back-pressure, storage)."""
        self.count(self.rejected_total, reason, signals)

    def record_ejection(self) -> None:
        self.ejections_total += 1

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

    # ---------------------------------------------------------- every field, by kind
    def count_total(self) -> int:
        """Everything counted, for telling a restarted source (its total fell)."""
        total = sum(sum(getattr(self, t).values()) for t in self._names(_TABLE))
        total += sum(getattr(self, c) for c in self._names(_COUNT))
        total += sum(getattr(self, h).count for h in self._names(_HIST))
        return total + sum(
            h.count for name in self._names(_HISTS) for h in getattr(self, name).values()
        )

    def counters_json(self) -> dict[str, Any]:
        """The counters and histograms (not the gauges), for a snapshot: a restored shard
        goes on counting from where it was instead of from zero."""

        def hist(h: Histogram) -> list[Any]:
            return [h.counts.tolist(), h.total]

        return {
            **{name: dict(getattr(self, name)) for name in self._names(_TABLE)},
            **{
                name: {k: hist(h) for k, h in getattr(self, name).items()}
                for name in self._names(_HISTS)
            },
            **{name: hist(getattr(self, name)) for name in self._names(_HIST)},
            **{name: getattr(self, name) for name in self._names(_COUNT)},
        }

    @classmethod
    def from_counters_json(cls, data: dict[str, Any]) -> Counters:
        """Inverse of ``counters_json``; anything malformed is a ``ValueError``. A field a
        snapshot of an older version lacks starts at zero."""
        out = cls()

        def fill(h: Histogram, raw: list[Any]) -> None:
            counts, total = raw
            if len(counts) != len(h.counts):
                raise ValueError("histogram buckets differ")
            h.counts[:] = np.asarray(counts, np.int64)
            h.total = float(total)

        for name in cls._names(_TABLE):
            getattr(out, name).update({str(k): int(v) for k, v in data.get(name, {}).items()})
        for name in cls._names(_HISTS):
            for k, raw in data.get(name, {}).items():
                fill(out.hist(name, str(k)), raw)
        for name in cls._names(_HIST):
            if name in data:
                fill(getattr(out, name), data[name])
        for name in cls._names(_COUNT):
            setattr(out, name, int(data.get(name, 0)))
        return out

    def shortfall(self, newer: Counters) -> Counters:
        """What ``newer`` lacks of these counters, item by item (never negative): added to
        ``newer`` it gives counters that did not go backwards."""
        out = Counters()
        for name in self._names(_TABLE):
            mine, theirs, gap = getattr(self, name), getattr(newer, name), getattr(out, name)
            for k, v in mine.items():
                if v > theirs.get(k, 0):
                    gap[k] = v - theirs.get(k, 0)
        for name in self._names(_HISTS):
            theirs_h = getattr(newer, name)
            for k, h in getattr(self, name).items():
                out.hist(name, k).set_shortfall(h, theirs_h.get(k))
        for name in self._names(_HIST):
            getattr(out, name).set_shortfall(getattr(self, name), getattr(newer, name))
        for name in self._names(_COUNT):
            setattr(out, name, max(getattr(self, name) - getattr(newer, name), 0))
        return out

    def merge(self, other: Counters, gauges: bool = True) -> None:
        """Add ``other``'s counts (and, with ``gauges``, its gauges) to these."""
        for name in self._names(_TABLE):
            mine = getattr(self, name)
            for k, v in getattr(other, name).items():
                mine[k] = mine.get(k, 0) + v
        for name in self._names(_HISTS):
            for k, h in getattr(other, name).items():
                self.hist(name, k).merge(h)
        for name in self._names(_HIST):
            getattr(self, name).merge(getattr(other, name))
        for name in self._names(_COUNT) + (self._names(_GAUGE) if gauges else []):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in self._names(_GAUGES) if gauges else []:
            mine = getattr(self, name)
            for k, v in getattr(other, name).items():
                mine[k] = mine.get(k, 0) + v
