"""Prometheus exposition of the whole cluster, computed at scrape time.

The Serve replica gathers every shard's and every router's ``Counters`` (summed,
never going backwards: ``actors.client.ops``) and renders it through a custom collector,
so a cluster is a single scrape target. No metric carries an ``agent_id`` label: agent
ids are unbounded, label sets must not be.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from actors.core.columns import REJECT_REASONS
from actors.core.flow import NUM_BANDS, jain_index
from actors.core.health import HEALTH_STATES
from actors.core.metrics import STORAGE_STEPS, Counters, Histogram
from actors.core.models import SIGNAL_TYPES, STRATEGIES

OUTCOMES = ("ok", "failed")
FLOW_REFUSALS = ("saturated", "shed")
BANDS = tuple(str(b) for b in range(NUM_BANDS))
PREDICTED = ("true", "false", "insufficient_data")


def _counter(
    name: str, doc: str, label: str, values: dict[str, int], known: tuple[str, ...]
) -> Metric:
    fam = CounterMetricFamily(name, doc, labels=[label])
    for key in sorted(set(known) | set(values)):
        fam.add_metric([key], values.get(key, 0))
    return fam


def _histograms(
    name: str, doc: str, label: str, hists: dict[str, Histogram], known: tuple[str, ...]
) -> Metric:
    fam = HistogramMetricFamily(name, doc, labels=[label])
    for key in sorted(set(known) | set(hists)):
        h = hists.get(key)
        if h is None:
            continue
        fam.add_metric([key], buckets=h.cumulative(), sum_value=h.total)
    return fam


class SnapshotCollector(Collector):
    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        m: Counters = self.snapshot["metrics"]
        types = tuple(t.value for t in SIGNAL_TYPES)
        yield _counter(
            "coordination_signals_total", "Signals accepted.", "signal_type", m.signals_total, types
        )
        yield _counter(
            "coordination_signals_rejected_total",
            "Signals rejected, by reason.",
            "reason",
            m.rejected_total,
            REJECT_REASONS,
        )
        # A gauge: DESIGN §7 called it coordination_agents_total, but Prometheus keeps
        # _total for counters and `promtool check metrics` rejects it on a gauge.
        yield GaugeMetricFamily("coordination_agents", "Agents with state.", value=m.agents)
        yield _counter(
            "coordination_routing_selections_total",
            "Selections served.",
            "strategy",
            m.selections_total,
            STRATEGIES,
        )
        yield GaugeMetricFamily(
            "coordination_assignments_in_flight",
            "Assigned tasks not completed yet.",
            value=m.in_flight,
        )
        yield _counter(
            "coordination_assignments_completed_total",
            "Assigned tasks reported complete, by outcome.",
            "outcome",
            m.completed_total,
            OUTCOMES,
        )
        yield CounterMetricFamily(
            "coordination_assignments_expired_total",
            "Assigned tasks never completed, dropped after their service time.",
            value=m.assignments_expired,
        )
        health = GaugeMetricFamily(
            "coordination_agents_by_health",
            "Agents by health state, as measured from outcomes.",
            labels=["state"],
        )
        for state in HEALTH_STATES:
            health.add_metric([state], getattr(m, f"agents_{state}"))
        yield health
        yield CounterMetricFamily(
            "coordination_ejections_total",
            "Agents ejected for failing (a run of failures or a low success rate).",
            value=m.ejections_total,
        )
        yield _histograms(
            "coordination_signal_registration_duration_seconds",
            "Registration time per signal (batch time amortised over its signals).",
            "signal_type",
            m.registration_s,
            types,
        )
        yield _histograms(
            "coordination_agent_selection_duration_seconds",
            "Selection latency at the router.",
            "strategy",
            m.selection_s,
            STRATEGIES,
        )
        yield _counter(
            "coordination_overload_predictions_total",
            "Overload predictions made.",
            "predicted",
            m.predictions_total,
            PREDICTED,
        )
        age = HistogramMetricFamily(
            "coordination_selection_signal_age_seconds",
            "Age of the oldest live signal of each selected agent.",
        )
        age.add_metric([], buckets=m.signal_age_s.cumulative(), sum_value=m.signal_age_s.total)
        yield age
        yield _counter(
            "coordination_storage_failures_total",
            "Storage steps of the shards that failed (the writes they carried were refused).",
            "step",
            m.storage_failures_total,
            STORAGE_STEPS,
        )
        yield CounterMetricFamily(
            "coordination_wal_bytes",
            "Bytes written to the shards' write-ahead logs.",
            value=m.wal_bytes_total,
        )
        snap = HistogramMetricFamily(
            "coordination_snapshot_duration_seconds",
            "Time to take one shard snapshot (copy, encode, store).",
        )
        snap.add_metric([], buckets=m.snapshot_s.cumulative(), sum_value=m.snapshot_s.total)
        yield snap
        up = GaugeMetricFamily(
            "coordination_shard_up", "1 if the shard answered this scrape.", labels=["shard"]
        )
        for shard, ok in sorted(self.snapshot["shard_up"].items()):
            up.add_metric([str(shard)], 1.0 if ok else 0.0)
        yield up
        agents = GaugeMetricFamily(
            "coordination_shard_agents", "Agents held by each shard.", labels=["shard"]
        )
        for shard, n in sorted(self.snapshot["shard_agents"].items()):
            agents.add_metric([str(shard)], n)
        yield agents
        yield CounterMetricFamily(
            "coordination_selections_degraded_total",
            "Selections answered without every shard.",
            value=m.selections_degraded_total,
        )
        yield _counter(
            "coordination_affinity_hits_total",
            "Selections with an affinity_key, by outcome: hit (the key's agent), spilled "
            "(it could not take the task), new (no agent held the key).",
            "outcome",
            m.affinity_total,
            ("hit", "spilled", "new"),
        )
        yield from _flow(m)


def _flow(m: Counters) -> Iterator[Metric]:
    """Flow control (DESIGN §4): every router's queue, summed."""
    waiting = GaugeMetricFamily(
        "coordination_flow_waiting",
        "Selections waiting for headroom in the routers' queues, by priority band.",
        labels=["priority"],
    )
    for band in BANDS:
        waiting.add_metric([band], m.flow_waiting.get(band, 0))
    yield waiting
    yield _histograms(
        "coordination_flow_wait_seconds",
        "Time selections waited for headroom (served or refused), by priority band.",
        "priority",
        m.flow_wait_s,
        BANDS,
    )
    yield _counter(
        "coordination_flow_shed_total",
        "Selections refused with a 429: saturated (no headroom within wait_s) or shed "
        "(evicted from a full queue).",
        "reason",
        m.flow_shed_total,
        FLOW_REFUSALS,
    )
    tenants = sorted(m.flow_demanded)
    index = jain_index(
        np.array([m.flow_attained.get(t, 0.0) for t in tenants]),
        np.array([m.flow_demanded[t] for t in tenants]),
    )
    yield GaugeMetricFamily(
        "coordination_flow_fairness_index",
        "Jain's index over tenants' attained service (decayed window), each over its "
        "max-min fair share: 1 is fair, 1/n one tenant took all.",
        value=1.0 if index is None else index,
    )


def render_metrics(snapshot: dict[str, Any]) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry), CONTENT_TYPE_LATEST
