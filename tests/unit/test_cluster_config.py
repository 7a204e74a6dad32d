"""cluster.yaml validates offline with Ray's own launcher schema."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[2] / "cluster.yaml"


def test_cluster_yaml_passes_rays_launcher_schema() -> None:
    raw = yaml.safe_load(CLUSTER.read_text())
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    assert prepared["head_node_type"] == "ripple.head"
    assert prepared["available_node_types"]["ripple.worker"]["min_workers"] == 2
    head_cmds = " ".join(prepared["head_start_ray_commands"])
    assert "ray start --head" in head_cmds and "serve deploy" in head_cmds
    assert any("pip install ~/ripple" in c for c in prepared["setup_commands"])
    assert prepared["file_mounts"] == {"~/ripple": "."}


def test_a_broken_cluster_yaml_is_refused() -> None:
    raw = yaml.safe_load(CLUSTER.read_text())
    raw["available_node_types"]["ripple.worker"]["min_workers"] = "two"
    with pytest.raises(jsonschema.ValidationError) as info:
        validate_config(prepare_config(raw))
    assert info.value.instance == "two" and info.value.validator == "type"
    assert list(info.value.absolute_path) == [
        "available_node_types",
        "ripple.worker",
        "min_workers",
    ]
