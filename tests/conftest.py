"""One real local Ray per test session, started only by the tests that ask for it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    import ray

    from serve.proxy_middleware import CALLBACK

    # As ``ripple up`` does for the cluster it embeds: Serve's proxy replaces an unsafe
    # X-Request-ID before it reads it (read when the proxy starts, from Ray's environment).
    os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", CALLBACK)
    # Logical CPUs are a placement budget, not a thread count: enough for shards, routers
    # and a Serve replica at their fractional defaults on a 2-core box.
    ray.init(address="local", num_cpus=4, log_to_driver=False, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def namespace(request: pytest.FixtureRequest) -> str:
    """Each module deploys into its own namespace, so modules never see each other's agents."""
    return f"ripple-test-{request.module.__name__.rsplit('.', 1)[-1]}-{os.getpid()}"
