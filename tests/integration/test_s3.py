"""Snapshots on S3: a real S3-compatible server (moto's, on loopback), a real shard taken
through snapshot, SIGKILL and restore against it."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest

import actors
from actors.client.clients import wait_until_ready
from actors.core.config import DurabilityConfig, ServiceConfig

boto3 = pytest.importorskip("boto3")
pytest.importorskip("pyarrow")
moto_server = pytest.importorskip("moto.server")


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=f"http://{endpoint}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """A bucket on a loopback S3 server; its endpoint."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"127.0.0.1:{port}"
    s3_client(endpoint).create_bucket(Bucket="ripple")
    yield endpoint
    server.stop()


def test_a_shard_restores_its_snapshot_from_s3_after_a_sigkill(ray_session, s3, tmp_path) -> None:
    namespace = f"ripple-test-s3-{os.getpid()}"
    uri = f"s3://test:test@ripple/state?endpoint_override={s3}&scheme=http&region=us-east-1"
    config = ServiceConfig(
        namespace=namespace,
        num_shards=1,
        num_routers=1,
        durability=DurabilityConfig(
            mode="snapshot", storage_path=uri, snapshot_interval_s=3600, wal_dir=str(tmp_path)
        ),
    )
    client = actors.deploy(config)
    try:
        ids = [f"s3-agent-{i}" for i in range(200)]
        client.register([{"agent_id": a, "signal_type": "QUALITY", "value": 0.6} for a in ids])
        client.describe("s3-agent-7", max_concurrency=5, labels={"zone": "eu"})
        done = client.checkpoint()[0]
        assert done["bytes"] > 0
        objects = s3_client(s3).list_objects_v2(Bucket="ripple", Prefix="state/shard-0/")
        # pyarrow marks the folder with an empty "shard-0/" object; the snapshot is the file.
        names = [o["Key"] for o in objects.get("Contents", []) if not o["Key"].endswith("/")]
        assert names == [f"state/shard-0/snap-{done['seq']:012d}.npz"], names

        shard = client.stats()["shards"][0]
        assert shard["durability"]["storage"] == "s3://ripple/state/shard-0"  # no secret
        os.kill(shard["pid"], signal.SIGKILL)
        assert wait_until_ready(client, timeout_s=60)["ready"]
        back = client.stats()["shards"][0]
        assert back["pid"] != shard["pid"] and back["durability"]["restored_agents"] == 200
        known = client.scores(ids).scores
        assert all(known[a].known for a in ids)
        view = client.agent("s3-agent-7")
        assert view.labels == {"zone": "eu"} and view.max_concurrency == 5
    finally:
        actors.teardown(namespace)
