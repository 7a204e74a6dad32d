"""The Serve config file validates against Ray's own schema, and its args against ours."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from actors.core.config import ServiceConfig

CONFIG = Path(__file__).resolve().parents[2] / "serve" / "config.yaml"


def test_serve_config_validates_with_rays_schema() -> None:
    raw = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    (app,) = schema.applications
    assert app.import_path == "serve.app:build_app" and app.route_prefix == "/"
    config = ServiceConfig.load(**app.args)
    assert config.num_shards == 4 and config.http.replica_num_cpus == 1.0
    assert config.shard.sweep_interval_s == 5.0
