"""One real local Ray per test session; each module deploys into its own namespace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    import ray

    # Logical CPUs are a placement budget, not a thread count: enough for shards, routers
    # and a Serve replica at their fractional defaults on a 2-core box.
    ray.init(address="local", num_cpus=4, log_to_driver=False, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def namespace(request: pytest.FixtureRequest) -> str:
    return f"ripple-test-{request.module.__name__.rsplit('.', 1)[-1]}-{os.getpid()}"
