"""The Serve config file validates against Ray's own schema, and its args against ours."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def test_the_serve_config_refuses_to_start_beyond_loopback_without_a_secret(
    monkeypatch, tmp_path
) -> None:
    from serve.app import build_app

    monkeypatch.delenv("RIPPLE_AUTH_SECRET", raising=False)
    (app,) = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text())).applications
    assert app.args["http"]["host"] == "0.0.0.0"
    with pytest.raises(ValueError, match="without authentication"):
        build_app(app.args)
    monkeypatch.setenv("RIPPLE_AUTH_SECRET", "s" * 32)
    assert build_app(app.args) is not None
    short = tmp_path / "short"
    short.write_text("too-short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        build_app({**app.args, "auth_secret_file": str(short)})
    with pytest.raises(ValueError, match="cannot read the auth secret file"):
        build_app({**app.args, "auth_secret_file": str(tmp_path / "missing")})
