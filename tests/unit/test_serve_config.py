"""The Serve config file validates against Ray's own schema, and its args against ours."""

from __future__ import annotations

import os
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


def test_ripple_up_merges_a_durability_section_from_env_and_cli(monkeypatch, tmp_path) -> None:
    """``RIPPLE_DURABILITY__MODE=wal ripple up --storage DIR`` failed: the environment's
    section was validated (mode wal, no storage) before the CLI's was merged in."""
    import argparse

    from serve.cli import durability_overrides

    monkeypatch.setenv("RIPPLE_DURABILITY__MODE", "wal")
    monkeypatch.setenv("RIPPLE_DURABILITY__FSYNC", "always")
    ns = argparse.Namespace(
        no_durability=False, storage=str(tmp_path), fsync=None, config=None, namespace=None
    )
    config = ServiceConfig.load(durability=durability_overrides(ns), http={"port": 9001})
    d = config.durability
    assert (d.mode, d.fsync, d.storage_path) == ("wal", "always", str(tmp_path))
    assert config.http.port == 9001 and config.http.host == "127.0.0.1"
    # CLI > environment > file > defaults, key by key.
    yaml_file = tmp_path / "ripple.yaml"
    yaml_file.write_text(
        "durability:\n  snapshot_interval_s: 30\n  fsync: everysec\nnum_shards: 3\n"
    )
    config = ServiceConfig.load(yaml_file, durability={"storage_path": str(tmp_path)})
    d = config.durability
    assert (d.mode, d.fsync, d.snapshot_interval_s) == ("wal", "always", 30.0)
    assert config.num_shards == 3


def test_ripple_up_is_durable_by_default_unless_the_settings_say_otherwise(
    monkeypatch, tmp_path
) -> None:
    import argparse

    from serve.cli import durability_overrides

    for key in [k for k in os.environ if k.startswith("RIPPLE_DURABILITY__")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    ns = argparse.Namespace(
        no_durability=False, storage=None, fsync=None, config=None, namespace="ns1"
    )
    assert durability_overrides(ns) == {
        "mode": "wal",
        "storage_path": str(tmp_path / "state" / "ripple" / "ns1"),
        "fsync": None,
    }
    yaml_file = tmp_path / "ripple.yaml"
    yaml_file.write_text("durability:\n  mode: snapshot\n  storage_path: /tmp/elsewhere\n")
    ns.config = str(yaml_file)
    assert "mode" not in durability_overrides(ns)  # the file's section wins over the default
    assert ServiceConfig.load(yaml_file, durability=durability_overrides(ns)).durability.mode == (
        "snapshot"
    )
    ns.no_durability = True
    assert durability_overrides(ns) == {"mode": "none"}
