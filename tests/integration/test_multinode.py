"""A real 3-node Ray cluster on this host (head + two workers), driven as a user would.

Runs ``load/multinode.py`` in a subprocess: it starts its own nodes with one auth mode for
every process, deploys shards spread over the nodes, runs the HTTP smoke and a short sweep,
then kills a whole worker node holding a durable shard, and stops only the processes it
started.
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
    # A whole worker node holding a durable shard is killed: selections meanwhile answer
    # degraded within the shard deadline (never hang), the shard restarts on another node
    # from the shared storage, and every acknowledged signal is back.
    loss = result["node_loss"]
    assert loss["victim_found"], loss
    assert loss["error_answers"] == 0 and loss["degraded_answers"] >= 1, loss
    assert loss["slowest_select_s"] < 3 * loss["shard_deadline_s"] + 2.0, loss
    assert loss["back_s"] is not None and loss["moved"], loss
    assert loss["found"] == loss["acked"] == 600, loss
