"""A real 3-node Ray cluster on this host (head + two workers), driven as a user would.

Runs ``load/multinode.py`` in a subprocess: it starts its own nodes with one auth mode for
every process, deploys shards spread over the nodes, runs the HTTP smoke and a short sweep,
and stops only the processes it started.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(420)
def test_three_node_cluster_deploy_http_smoke_and_sweep(tmp_path: Path) -> None:
    out = tmp_path / "multinode.json"
    proc = subprocess.run(
        [sys.executable, "-m", "load.multinode", "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())["params"]["result"]
    assert result["nodes"] == 3
    assert result["shard_nodes"] >= 2  # SPREAD put shards on more than one node
    http = result["http"]
    assert http["signals_status"] == 200 and http["accepted"] == 100
    assert http["select_status"] == 200 and http["best"] == "mn-0" and http["shards_answered"] == 3
    assert http["ready"] == 200 and http["metrics_has_shards"] == 3
    assert all(s["throughput"] > 0 and s["ceiling"] > 0 for s in result["sweep"])
