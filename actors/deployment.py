"""Create (idempotently) and remove the named, detached actors of a deployment."""

from __future__ import annotations

import os
from typing import Any

from actors.config import ServiceConfig
from actors.errors import InvalidInput, NotDeployed

SHARD_NAME = "ripple-shard-{index}"
ROUTER_NAME = "ripple-router-{index}"


def ensure_ray(address: str | None = None, **init_kwargs: Any) -> None:
    """Join ``address`` (or RAY_ADDRESS), else start an embedded local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, log_to_driver=False, **init_kwargs)


def _actor_options(config: ServiceConfig, name: str, num_cpus: float) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": config.namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "num_cpus": num_cpus,
        "max_concurrency": config.max_concurrency,
    }


def deploy(
    config: ServiceConfig | None = None, address: str | None = None, **overrides: Any
) -> Any:
    """Create the shards and routers of ``config`` (or return the existing ones).

    Returns a connected ``RippleClient``. Calling it again with the same shape is a no-op;
    with a different number of shards it refuses, since that would re-home every agent.
    """
    import ray

    from actors.client import connect
    from actors.router import RouterActor
    from actors.shard_actor import ShardActor

    config = config or ServiceConfig()
    if overrides:
        config = config.model_copy(update=overrides)
    ensure_ray(address)
    try:
        existing: Any = ray.get_actor(ROUTER_NAME.format(index=0), namespace=config.namespace)
        have: Any = ray.get(existing.describe.remote(), timeout=config.connect_timeout_s)[
            "num_shards"
        ]
        if have != config.num_shards:
            raise InvalidInput(
                f"namespace {config.namespace!r} already runs {have} shards",
                [{"field": "num_shards", "reason": "teardown() first to change the shard count"}],
            )
    except ValueError:
        pass  # not deployed yet

    shard_cls: Any = ray.remote(ShardActor)
    shards: list[Any] = []
    for i in range(config.num_shards):
        opts = _actor_options(config, SHARD_NAME.format(index=i), config.shard_num_cpus)
        # Spread shards over nodes; restart a dead one (its state restarts empty).
        opts |= {"max_restarts": -1, "max_task_retries": 0, "scheduling_strategy": "SPREAD"}
        if config.shard_memory_bytes:
            opts["memory"] = config.shard_memory_bytes
        shards.append(shard_cls.options(**opts).remote(i, config.shard))
    router_cls: Any = ray.remote(RouterActor)
    routers: list[Any] = [
        router_cls.options(
            **_actor_options(config, ROUTER_NAME.format(index=j), config.router_num_cpus),
            max_restarts=-1,
        ).remote(shards, config)
        for j in range(config.num_routers)
    ]
    # Wait until every actor is placed and answering, so deploy() returning means ready.
    ray.get([s.ping.remote() for s in shards] + [r.ping.remote() for r in routers])
    return connect(namespace=config.namespace)


def teardown(namespace: str = "ripple", max_actors: int = 4096) -> int:
    """Kill every Ripple actor in ``namespace``; returns how many were removed."""
    import ray

    from actors.client import find_actor_names

    killed = 0
    for name in find_actor_names(namespace)[:max_actors]:
        try:
            ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
            killed += 1
        except ValueError:
            continue
    return killed


def require_router(namespace: str) -> Any:
    import ray

    try:
        return ray.get_actor(ROUTER_NAME.format(index=0), namespace=namespace)
    except ValueError as exc:
        raise NotDeployed(
            f"Ripple is not deployed in namespace {namespace!r}",
            [{"field": "namespace", "reason": "run actors.deploy() or `ripple up` first"}],
        ) from exc
