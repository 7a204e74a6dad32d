"""A real 3-node Ray cluster on this host: deploy, HTTP smoke, short sweep, cross-node cost.

    python -m load.multinode                 # ~1-2 minutes
    python -m load.multinode --smoke --json results/multinode.json

It starts ``ray start --head`` plus two ``ray start --address`` worker nodes (each its own
raylet and object store), all with the same ``RAY_AUTH_MODE``, on loopback and on free
ports, in their own process groups. At the end it stops exactly those processes: never
``ray stop``, which would kill every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from load.common import Report, base_parser, percentiles_ms, section, time_calls

AUTH_MODE = "disabled"  # every process of this cluster must agree; set for all of them here
NAMESPACE = "ripple-multinode"
STOP_GRACE_S = 5.0  # SIGTERM to SIGKILL when the cluster is stopped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["RAY_AUTH_MODE"] = AUTH_MODE
    # A lost node is declared dead after ~3 s instead of Ray's default ~15 s, so the node
    # loss test waits less for its shards to be restarted elsewhere.
    env["RAY_health_check_period_ms"] = "1000"
    env["RAY_health_check_timeout_ms"] = "1000"
    env["RAY_health_check_failure_threshold"] = "3"
    return env


def _ports() -> list[str]:
    # Agents default to fixed ports, which a second node on the same host cannot reuse.
    # Ports Ray picks at random by default (node and object managers) are left to Ray: a
    # port chosen here and released could be taken by another process before Ray binds it.
    return [
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]


@contextlib.contextmanager
def local_cluster(
    workers: int = 2, cpus_per_node: int = 2, groups: dict[int, int] | None = None
) -> Iterator[str]:
    """Start a head and ``workers`` worker nodes; yield the GCS address; stop only them.
    ``groups`` is filled with each worker's process group (by its ``ripple_node_<i>``
    index), so a test can take a whole node down."""
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    temp_dir = tempfile.mkdtemp(prefix="rmn-", dir="/tmp")
    port = free_port()
    address = f"127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    common = ["--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus_per_node}"]
    try:
        head = [
            ray_bin,
            "start",
            "--head",
            f"--port={port}",
            "--include-dashboard=false",
            f"--ray-client-server-port={free_port()}",
            f"--temp-dir={temp_dir}",
            '--resources={"ripple_node_0": 1}',
            *common,
            *_ports(),
        ]
        procs.append(
            subprocess.Popen(
                head,
                env=node_env(),
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait_for_port(port, 60)
        for i in range(1, workers + 1):
            cmd = [
                ray_bin,
                "start",
                f"--address={address}",
                f'--resources={{"ripple_node_{i}": 1}}',
                *common,
                *_ports(),
            ]
            log_path = os.path.join(temp_dir, f"worker-{i}.log")
            with open(log_path, "wb") as log:
                procs.append(
                    subprocess.Popen(
                        cmd,
                        env=node_env(),
                        start_new_session=True,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            if groups is not None:
                groups[i] = procs[-1].pid  # the leader of its own session and group
            # One node at a time: nodes on one host share the session's port cache, and two
            # starting together can pick the same port and crash.
            _wait_for_text(log_path, "Ray runtime started", 120)
        yield address
    finally:
        # Workers first, each drained before the next, then the head they report to. A
        # node that has not exited STOP_GRACE_S after SIGTERM is killed with its whole
        # process group: the head took ~34 s to wind down on SIGTERM alone, and this
        # cluster, its temp dir included, is thrown away.
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_text(path: str, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open(path, errors="replace") as fh:
            if text in fh.read():
                return
        time.sleep(0.2)
    raise TimeoutError(f"{path}: no {text!r} within {timeout_s:g} s")


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"head node did not open port {port}")


def run_driver(address: str, smoke: bool, fn: str = "driver", *extra: Any) -> dict[str, Any]:
    """Everything that needs a driver on the cluster; runs in a subprocess of its own."""
    call = f"m.{fn}({address!r}, {smoke!r}, *{list(extra)!r})"
    code = f"import json, load.multinode as m; print('RESULT ' + json.dumps({call}))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=node_env(), capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(f"driver failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    return result


def _pinger(ray: Any, handle: Any) -> Any:
    return lambda: ray.get(handle.ping.remote())


def driver(address: str, smoke: bool) -> dict[str, Any]:
    import httpx
    import ray
    from ray import serve

    import actors
    from actors.core.config import ServiceConfig, ShardConfig
    from load.null_shard import NullShard
    from serve.app import build_app

    ray.init(address=address, log_to_driver=False)
    deadline = time.monotonic() + 60
    while len([n for n in ray.nodes() if n["Alive"]]) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    result: dict[str, Any] = {"nodes": len(nodes)}
    client = actors.deploy(
        ServiceConfig(namespace=NAMESPACE, num_shards=3, shard=ShardConfig(sweep_interval_s=5))
    )
    pings = ray.get([h.ping.remote() for h in client.shard_handles])
    shard_nodes = [p["node_id"] for p in pings]  # where each shard landed
    result["shard_nodes"] = len(set(shard_nodes))
    driver_node = ray.get_runtime_context().get_node_id()
    result["pids"] = [p["pid"] for p in pings]

    # HTTP smoke through Serve on loopback.
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"namespace": NAMESPACE, "num_shards": 3}), name="ripple", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=30) as http:
        signals = [
            {"agent_id": f"mn-{i}", "signal_type": "LOAD", "value": i / 100} for i in range(100)
        ]
        r1 = http.post("/v1/signals", json={"signals": signals})
        r2 = http.post("/v1/select", json={"k": 3})
        r3 = http.get("/readyz")
        r4 = http.get("/metrics")
        result["http"] = {
            "signals_status": r1.status_code,
            "accepted": r1.json().get("accepted"),
            "select_status": r2.status_code,
            "best": r2.json()["selected"][0]["agent_id"],
            "shards_answered": r2.json()["shards_answered"],
            "ready": r3.status_code,
            "metrics_has_shards": r4.text.count("coordination_shard_up{"),
        }

    # Cross-node cost: the same calls to a shard on the driver's node and on other nodes.
    seconds = 0.5 if smoke else 5.0
    per_shard = []
    null_cls: Any = ray.remote(NullShard)
    for i, h in enumerate(client.shard_handles):
        local = shard_nodes[i] == driver_node
        lat = percentiles_ms(time_calls(_pinger(ray, h), count=2000, max_s=seconds))
        per_shard.append(
            {
                "shard": i,
                "same_node_as_driver": local,
                "ping_p50_ms": lat["p50"],
                "ping_p95_ms": lat["p95"],
            }
        )
    result["per_shard"] = per_shard

    # Short sweep: ingest through the client into 1 and 3 shards, beside null shards.
    from load.scaling import drive

    sweep = []
    for s in (1, 3):
        handles = client.shard_handles[:s]
        real = drive(handles, 2, seconds, 10**6)
        nulls = [
            null_cls.options(num_cpus=0.1, scheduling_strategy="SPREAD").remote(i) for i in range(s)
        ]
        ray.get([n.ping.remote() for n in nulls])
        ceiling = drive(nulls, 2, seconds, 10**6)
        for n in nulls:
            ray.kill(n)
        sweep.append({"shards": s, "throughput": real, "ceiling": ceiling})
    result["sweep"] = sweep
    ids = [f"sel-{i}" for i in range(1000)]
    client.register_arrays(ids, np.zeros(1000, int), np.random.default_rng(0).random(1000))
    cands = ids[::10]
    sel = percentiles_ms(
        time_calls(
            lambda: client.select(candidates=cands, k=1, assign=False), count=500, max_s=seconds
        )
    )
    result["select_ms"] = sel
    serve.shutdown()
    actors.teardown(NAMESPACE)
    ray.shutdown()
    return result


def _parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        # pid (comm) state ppid ...; comm may hold spaces, so split after its ')'.
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def node_loss(address: str, smoke: bool, groups: dict[str, int]) -> dict[str, Any]:
    """Durable shards on 3 nodes (``wal``, ``fsync: always``, storage shared by every node:
    one directory of this host); kill a whole worker node holding a shard (not the
    router's); select meanwhile. Reports how selections answered while the shard was away
    (degraded, never hung), when the shard answered again, where, and whether every
    acknowledged signal came back."""
    import ray

    import actors
    from actors.core.config import DurabilityConfig, ServiceConfig
    from actors.core.errors import RippleError

    ray.init(address=address, log_to_driver=False, namespace="ripple-node-loss")
    deadline = time.monotonic() + 60
    while len([n for n in ray.nodes() if n["Alive"]]) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    storage = tempfile.mkdtemp(prefix="rmn-state-", dir="/tmp")
    namespace = NAMESPACE + "-durable"
    deadline_s = 1.0
    client = actors.deploy(
        ServiceConfig(
            namespace=namespace,
            num_shards=3,
            shard_deadline_s=deadline_s,
            durability=DurabilityConfig(mode="wal", fsync="always", storage_path=storage),
        )
    )
    ids = [f"nl-{i}" for i in range(600)]
    acked = client.register([{"agent_id": a, "signal_type": "QUALITY", "value": 0.5} for a in ids])
    index_of = {
        n["NodeID"]: int(k.rsplit("_", 1)[1])
        for n in ray.nodes()
        if n["Alive"]
        for k in n["Resources"]
        if k.startswith("ripple_node_")
    }
    router_node = ray.get(client.router_handles[0].deployment_info.remote())["node_id"]
    before = {s["shard"]: s for s in client.stats()["shards"]}
    victims = [
        node
        for node in {s["node_id"] for s in before.values()}
        if index_of.get(node, 0) != 0 and node != router_node
    ]
    result: dict[str, Any] = {"victim_found": bool(victims)}
    if not victims:
        actors.teardown(namespace)
        return result
    victim = victims[0]
    lost_shards = sorted(s for s, st in before.items() if st["node_id"] == victim)
    # The node's raylet (the parent of every worker on it) and its workers, then what its
    # `ray start` left: the node is gone, as if its machine had died.
    shard_pid = before[lost_shards[0]]["pid"]
    raylet = _parent_pid(shard_pid)
    for pid in (raylet, shard_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(groups[str(index_of[victim])], signal.SIGKILL)
    killed = time.monotonic()
    answers: list[dict[str, Any]] = []
    back_s = None
    while time.monotonic() - killed < 120:
        t0 = time.perf_counter()
        try:
            r = client.select(k=3, assign=False)
            answers.append({"s": time.perf_counter() - t0, "degraded": r.degraded, "ok": True})
            if not r.degraded and r.shards_answered == 3:
                back_s = time.monotonic() - killed
                break
        except RippleError as exc:
            answers.append({"s": time.perf_counter() - t0, "error": str(exc)[:200], "ok": False})
        time.sleep(0.2)
    after = {s["shard"]: s for s in client.stats()["shards"]}
    known = client.scores(ids).scores
    result.update(
        {
            "lost_shards": lost_shards,
            "selects": len(answers),
            "degraded_answers": sum(1 for a in answers if a.get("degraded")),
            "error_answers": sum(1 for a in answers if not a["ok"]),
            "slowest_select_s": max(a["s"] for a in answers),
            "shard_deadline_s": deadline_s,
            "back_s": back_s,
            "moved": all(after[s]["node_id"] != victim for s in lost_shards),
            "acked": acked.accepted,
            "found": sum(1 for a in ids if known[a].known),
            "restored_agents": [after[s]["durability"]["restored_agents"] for s in lost_shards],
        }
    )
    actors.teardown(namespace)
    ray.shutdown()
    shutil.rmtree(storage, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> Report:
    args = base_parser(__doc__ or "").parse_args(argv)
    report = Report(
        "multi-node (3 Ray nodes on one host)", {"smoke": args.smoke, "auth_mode": AUTH_MODE}
    )
    with section("3-node cluster: deploy, HTTP smoke, cross-node cost, sweep"):
        for attempt in range(3):
            # A node of a one-host cluster can lose a port race at start: start afresh.
            groups: dict[int, int] = {}
            with local_cluster(groups=groups) as address:
                r = run_driver(address, args.smoke)
                if r["nodes"] == 3:
                    # Last, as it takes a node down for good.
                    by_index = {str(i): g for i, g in groups.items()}
                    r["node_loss"] = run_driver(address, args.smoke, "node_loss", by_index)
            if r["nodes"] == 3:
                break
            print(
                f"  only {r['nodes']} nodes came up (attempt {attempt + 1}); retrying", flush=True
            )
    report.params["result"] = r
    report.add("nodes alive", r["nodes"], "nodes")
    report.add("nodes holding shards", r["shard_nodes"], "nodes")
    for ps in r["per_shard"]:
        where = "same node as driver" if ps["same_node_as_driver"] else "other node"
        report.add(
            f"actor round trip to shard {ps['shard']} ({where}), p50", ps["ping_p50_ms"], "ms"
        )
    for sw in r["sweep"]:
        report.add(
            f"client ingest across nodes, S={sw['shards']}",
            sw["throughput"],
            "signals/s",
            ceiling=sw["ceiling"],
        )
    report.add("select 100 of 1,000 via client, 3 nodes, p95", r["select_ms"]["p95"], "ms")
    loss = r.get("node_loss", {})
    if loss.get("victim_found"):
        report.add("node lost: selections answered degraded", loss["degraded_answers"], "answers")
        report.add("node lost: slowest selection meanwhile", loss["slowest_select_s"], "s")
        report.add("node lost: its shards answer again after", loss["back_s"] or -1, "s")
        report.add("node lost: acknowledged signals found", loss["found"], f"of {loss['acked']}")
    report.finish(args.json)
    return report


if __name__ == "__main__":
    main()
