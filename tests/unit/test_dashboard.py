"""The Grafana dashboard and the Prometheus config are data, checked against the code: every
metric a PromQL expression names is one the service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from actors.core.metrics import Counters
from serve.metrics import render_metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "ripple.json"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
_METRIC = re.compile(r"\b(coordination_[a-z_]+)\b")
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def exported_samples() -> set[str]:
    """Every sample name /metrics can carry (families and their series suffixes)."""
    snap = {
        "metrics": Counters(),
        "shard_up": {0: True},
        "shard_agents": {0: 0},
    }
    text, _ = render_metrics(snap)
    names: set[str] = set()
    for family in text_string_to_metric_families(text.decode()):
        names.add(family.name)
        names |= {family.name + s for s in _SUFFIXES}
        names |= {s.name for s in family.samples}
    return names


def expressions() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_every_dashboard_metric_is_exported() -> None:
    exported = exported_samples()
    exprs = expressions()
    assert len(exprs) >= 12
    used = {m for e in exprs for m in _METRIC.findall(e)}
    assert used, "the dashboard names no Ripple metric"
    assert used <= exported, sorted(used - exported)
    for e in exprs:  # well-formed enough to parse: balanced brackets and braces
        for opening, closing in ("()", "[]", "{}"):
            assert e.count(opening) == e.count(closing), e


def test_dashboard_covers_the_design_metrics_and_is_valid_grafana_json() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["schemaVersion"] >= 36 and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    text = " ".join(expressions())
    for needed in (
        "coordination_signals_total",
        "coordination_signals_rejected_total",
        "coordination_routing_selections_total",
        "coordination_agent_selection_duration_seconds_bucket",
        "coordination_selection_signal_age_seconds_bucket",
        "coordination_assignments_in_flight",
        "coordination_shard_up",
        "coordination_selections_degraded_total",
        "coordination_overload_predictions_total",
        "coordination_agents_by_health",
        "coordination_ejections_total",
    ):
        assert needed in text, needed


def test_prometheus_config_scrapes_metrics() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"]
