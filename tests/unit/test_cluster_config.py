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
    assert prepared["file_mounts"] == {"~/ripple": ".", "~/.ray/auth_token": "./ripple_ray_token"}


def test_cluster_yaml_keeps_ray_token_auth_on_and_the_dashboard_private() -> None:
    prepared = prepare_config(copy.deepcopy(yaml.safe_load(CLUSTER.read_text())))
    commands = [*prepared["head_start_ray_commands"], *prepared["worker_start_ray_commands"]]
    ray_commands = [c for c in commands if c.lstrip().startswith(("RAY_", "ray start"))]
    assert ray_commands and all("RAY_AUTH_MODE=token" in c for c in ray_commands)
    assert not any("RAY_AUTH_MODE=disabled" in c for c in commands)
    head = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=0.0.0.0" not in head and "--dashboard-host=$(hostname -I" in head


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
