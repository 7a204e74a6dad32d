"""Configuration: one pydantic model per concern, units in the names.

The environment is read once (``ServiceConfig.from_env``) by entry points and passed in;
nothing below reads ``os.environ`` on its own.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from actors.models import DEFAULT_WEIGHTS, MAX_TTL_S, Weights


class ShardConfig(BaseModel):
    """Behaviour of one shard's state (the plain core)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    history_size: int = Field(100, ge=1, le=10_000)
    default_weights: Weights = DEFAULT_WEIGHTS
    max_ttl_s: float = Field(MAX_TTL_S, gt=0.0, le=MAX_TTL_S)
    max_future_skew_s: float = Field(5.0, ge=0.0, le=60.0)
    sweep_interval_s: float = Field(5.0, gt=0.0, le=3600.0)
    # An agent with nothing live is kept this long after its last signal, so a brief gap
    # in reporting does not erase its history (and its trend).
    history_retention_s: float = Field(300.0, ge=0.0, le=86_400.0)
    reservation_load: float = Field(0.1, gt=0.0, le=1.0)
    reservation_ttl_s: float = Field(5.0, gt=0.0, le=600.0)
    trend_min_samples: int = Field(3, ge=3, le=1_000)
    # A trend fitted on samples microseconds apart extrapolates noise; demand a real span.
    trend_min_span_s: float = Field(1.0, gt=0.0)
    trend_lookback_s: float = Field(600.0, gt=0.0)
    # Floor on the residual noise so a perfect fit of few points is not 100% certain.
    trend_noise_floor: float = Field(0.02, ge=0.0, le=1.0)
    initial_capacity: int = Field(1024, ge=1)


class ServiceConfig(BaseModel):
    """Shape and placement of a deployment: shards, routers, resources, deadlines."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field("ripple", min_length=1, max_length=64)
    num_shards: int = Field(2, ge=1, le=1024)
    num_routers: int = Field(1, ge=1, le=64)
    shard: ShardConfig = ShardConfig()
    # Fractional by default: two shards, a router and a Serve replica at 1 CPU each would not
    # fit a 2-CPU laptop and would wait forever for placement.
    shard_num_cpus: float = Field(0.25, ge=0.0)
    router_num_cpus: float = Field(0.1, ge=0.0)
    shard_memory_bytes: int | None = Field(None, ge=0)
    shard_deadline_s: float = Field(2.0, gt=0.0, le=120.0)
    connect_timeout_s: float = Field(10.0, gt=0.0)
    max_concurrency: int = Field(64, ge=1, le=10_000)

    @classmethod
    def from_env(cls, prefix: str = "RIPPLE_", **overrides: Any) -> ServiceConfig:
        """Read ``RIPPLE_NUM_SHARDS`` etc. once; explicit overrides win."""
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = os.environ.get(prefix + name.upper())
            if raw is not None and name != "shard":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
