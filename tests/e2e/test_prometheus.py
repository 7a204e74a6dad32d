"""Prometheus's own tools against the shipped config, a live scrape and the dashboard (slow):

    apt-get install -y --no-install-recommends prometheus   # the test does this as root
    python -m pytest -m slow tests/e2e/test_prometheus.py

It starts `ripple up --demo` (its own Ray, on loopback), checks `deploy/prometheus.yml` with
`promtool check config` and a live `/metrics` with `promtool check metrics`, then runs a real
Prometheus server (loopback, a temporary data directory) that scrapes the service every
second, and evaluates every expression of the Grafana dashboard through its query API: each
must parse, and each must return data once the demo has produced some."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from .helpers import free_port, start_demo, wait_ready

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ripple.json"
# Series that exist only after an event the demo may not cause within the test's window.
MAY_BE_EMPTY = (
    "assignments_expired",
    "selections_degraded",
    "signals_rejected",
    "completed",
    "snapshot_duration",  # the first snapshot comes after snapshot_interval_s (60 s)
)


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
            check=False,
            capture_output=True,
            timeout=600,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("promtool")
    if found is None:
        pytest.skip("needs Debian's prometheus package (apt-get install -y prometheus)")
    return found


def start(args: list[str], **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


@pytest.mark.slow
def test_promtool_and_a_real_prometheus_accept_config_metrics_and_dashboard(tmp_path) -> None:
    tool = promtool()
    checked = subprocess.run([tool, "check", "config", str(CONFIG)], capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    port, prom_port = free_port(), free_port()
    up = start_demo(port, tmp_path / "state")
    prom = None
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_ready(url, 120, up), "ripple up --demo did not become ready"
        time.sleep(5)  # some demo traffic, so every family has samples
        scrape = httpx.get(f"{url}/metrics", timeout=10)
        assert scrape.status_code == 200
        linted = subprocess.run(
            [tool, "check", "metrics"], input=scrape.content, capture_output=True
        )
        assert linted.returncode == 0, (linted.stdout + linted.stderr).decode()

        # The shipped config, pointed at this service and scraping every second.
        config = yaml.safe_load(CONFIG.read_text())
        config["global"]["scrape_interval"] = "1s"
        config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom = start(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
        )
        api = f"http://127.0.0.1:{prom_port}/api/v1/query"

        def query(expr: str) -> dict:
            r = httpx.get(api, params={"query": expr}, timeout=10)
            body = r.json()
            assert r.status_code == 200 and body["status"] == "success", (expr, body)
            return body["data"]

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if query('up{job="ripple"}')["result"]:
                    break
            except (httpx.HTTPError, json.JSONDecodeError):
                pass
            time.sleep(1)
        time.sleep(20)  # enough scrapes for rate() over the dashboard's windows
        up_now = query('up{job="ripple"}')["result"]
        assert up_now and up_now[0]["value"][1] == "1", up_now

        dash = json.loads(DASHBOARD.read_text())
        empty = []
        for panel in dash["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                if not query(expr)["result"] and not any(m in expr for m in MAY_BE_EMPTY):
                    empty.append(expr)
        assert not empty, f"dashboard expressions with no data: {empty}"
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(timeout=30)
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
