"""Create (idempotently) and remove the named, detached actors of a deployment."""

from __future__ import annotations

import os
from typing import Any

from actors.core.config import ServiceConfig
from actors.core.errors import DeadlineExceeded, InvalidInput, NotDeployed

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


def deploy_actors(
    config: ServiceConfig | None = None, address: str | None = None, **overrides: Any
) -> ServiceConfig:
    """Create the shards and routers of ``config`` (or keep the existing ones).

    Returns the config deployed. Calling it again with the same shape is a no-op; with a
    different number of shards it refuses, since that would re-home every agent.
    """
    import ray

    from actors.cluster.router import RouterActor
    from actors.cluster.shard import ShardActor

    config = config or ServiceConfig()
    if overrides:
        config = config.model_copy(update=overrides)
    ensure_ray(address)
    try:
        existing: Any = ray.get_actor(ROUTER_NAME.format(index=0), namespace=config.namespace)
        have: Any = ray.get(existing.deployment_info.remote(), timeout=config.connect_timeout_s)[
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
        # Spread shards over nodes; restart a dead one (it restores its state from the
        # durability storage, or starts empty with durability off).
        opts |= {"max_restarts": -1, "max_task_retries": 0, "scheduling_strategy": "SPREAD"}
        if config.shard_memory_bytes:
            opts["memory"] = config.shard_memory_bytes
        shards.append(
            shard_cls.options(**opts).remote(
                i, config.shard, config.log_level, config.durability, config.namespace
            )
        )
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
    return config


def teardown(namespace: str = "ripple", max_actors: int = 4096) -> int:
    """Kill every Ripple actor in ``namespace``; returns how many were removed."""
    import ray

    killed = 0
    for name in find_actor_names(namespace)[:max_actors]:
        try:
            ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
            killed += 1
        except ValueError:
            continue
    return killed


def find_actor_names(namespace: str) -> list[str]:
    import ray

    named = ray.util.list_named_actors(all_namespaces=True)
    return sorted(
        a["name"]
        for a in named
        if a.get("namespace") == namespace and a["name"].startswith("ripple-")
    )


def locate(
    namespace: str, address: str | None, timeout_s: float
) -> tuple[list[Any], list[Any], ServiceConfig]:
    """Handles of a running deployment's routers and shards, and its config."""
    import ray

    ensure_ray(address)
    router = require_router(namespace)
    try:
        info = ray.get(router.deployment_info.remote(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError as exc:
        raise DeadlineExceeded(
            f"router in {namespace!r} did not answer in {timeout_s:g} s"
        ) from exc
    config = ServiceConfig.model_validate(info["config"])
    try:
        shards = [
            ray.get_actor(SHARD_NAME.format(index=i), namespace=namespace)
            for i in range(info["num_shards"])
        ]
        routers = [
            ray.get_actor(ROUTER_NAME.format(index=j), namespace=namespace)
            for j in range(config.num_routers)
        ]
    except ValueError as exc:
        raise NotDeployed(f"Ripple in {namespace!r} is only partly deployed: {exc}") from exc
    return routers, shards, config


def require_router(namespace: str) -> Any:
    import ray

    try:
        return ray.get_actor(ROUTER_NAME.format(index=0), namespace=namespace)
    except ValueError as exc:
        raise NotDeployed(
            f"Ripple is not deployed in namespace {namespace!r}",
            [{"field": "namespace", "reason": "run actors.deploy() or `ripple up` first"}],
        ) from exc
