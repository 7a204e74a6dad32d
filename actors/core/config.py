"""Configuration, declared once: one pydantic model per concern, units in the names.

``ServiceConfig`` is the whole tree. It is a pydantic-settings model: it reads
``RIPPLE_*`` environment variables (nested ones with ``__``, e.g.
``RIPPLE_SHARD__HISTORY_SIZE=200``) and an optional YAML file. ``ripple up --config``,
the Serve config's ``args`` and ``actors.deploy(config)`` all build this same model, so a
setting means the same thing however the service is started. Entry points read the
environment once (``ServiceConfig.load``) and pass the config in; nothing below the
entry points reads ``os.environ``.

Precedence, highest first: explicit values (CLI flags, Serve ``args``, keyword
arguments), then environment variables, then the YAML file, then the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from actors.core.models import DEFAULT_WEIGHTS, MAX_FUTURE_SKEW_S, MAX_TTL_S, Weights

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ShardConfig(BaseModel):
    """Behaviour of one shard's state (the plain core)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    history_size: int = Field(100, ge=1, le=10_000, description="signals kept per agent")
    default_weights: Weights = Field(
        DEFAULT_WEIGHTS, description="weights when a request names none"
    )
    max_ttl_s: float = Field(MAX_TTL_S, gt=0.0, le=MAX_TTL_S, description="longest ttl_s accepted")
    max_future_skew_s: float = Field(
        MAX_FUTURE_SKEW_S,
        ge=0.0,
        le=60.0,
        description="how far ahead a timestamp may be (clock skew)",
    )
    sweep_interval_s: float = Field(5.0, gt=0.0, le=3600.0, description="expiry sweep period")
    # An agent with nothing live is kept this long after its last signal, so a brief gap
    # in reporting does not erase its history (and its trend).
    history_retention_s: float = Field(
        300.0, ge=0.0, le=86_400.0, description="an agent with nothing live is kept this long"
    )
    default_task_load: float = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="load one task adds until max_concurrency is declared or learned",
    )
    assignment_ttl_s: float = Field(
        60.0, gt=0.0, le=86_400.0, description="longest an uncompleted assignment counts"
    )
    max_inflight_per_agent: int = Field(
        4096, ge=1, le=1_000_000, description="bound on one agent's open assignments"
    )
    max_inflight_per_shard: int = Field(
        1_000_000, ge=1, le=100_000_000, description="bound on a shard's open assignments"
    )
    affinity_max_load_ratio: float = Field(
        1.25, ge=1.0, le=100.0, description="an affinity key's agent may hold this x the mean"
    )
    affinity_keys: int = Field(
        100_000, ge=0, le=10_000_000, description="affinity keys a shard remembers"
    )
    affinity_candidates: int = Field(
        8, ge=1, le=1_000, description="agents of a key's order each shard sends"
    )
    decision_records: int = Field(
        10_000, ge=0, le=1_000_000, description="decision records a shard keeps (0: none)"
    )
    trend_min_samples: int = Field(3, ge=3, le=1_000, description="LOAD samples a trend needs")
    # A trend fitted on samples microseconds apart extrapolates noise; demand a real span.
    trend_min_span_s: float = Field(1.0, gt=0.0, description="time those samples must span")
    trend_lookback_s: float = Field(600.0, gt=0.0, description="history window of a trend")
    trend_half_life_s: float = Field(
        30.0, gt=0.0, description="a LOAD sample this old weighs half as much in the trend"
    )
    trend_damping_s: float = Field(
        30.0, gt=0.0, description="how far ahead a trend's slope is followed, at most"
    )
    # Floor on the residual noise so a perfect fit of few points is not 100% certain.
    trend_noise_floor: float = Field(
        0.02, ge=0.0, le=1.0, description="least residual noise assumed"
    )
    # What outcomes teach (DESIGN §4): health, speed and measured quality per agent.
    eject_after_failures: int = Field(
        5, ge=1, le=1_000, description="consecutive failures that eject an agent"
    )
    eject_min_outcomes: int = Field(
        20, ge=1, le=100_000, description="outcomes before a low success rate can eject"
    )
    eject_success_gap: float = Field(
        0.2,
        gt=0.0,
        le=1.0,
        description="eject an agent whose success rate is this far below its shard's",
    )
    ejection_base_s: float = Field(
        10.0, gt=0.0, le=86_400.0, description="first ejection; doubles on each repeat"
    )
    ejection_max_s: float = Field(300.0, gt=0.0, le=86_400.0, description="longest ejection")
    max_ejected_fraction: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="most of a shard's agents ejected at once (at least one)",
    )
    probe_tasks: int = Field(
        1, ge=1, le=1_000, description="tasks a probing agent runs at once after an ejection"
    )
    outcome_memory: int = Field(
        50, ge=1, le=30_000, description="recent outcomes a success rate and a speed weigh"
    )
    outcome_half_life_s: float = Field(
        60.0,
        gt=0.0,
        le=86_400.0,
        description="an agent's outcomes weigh half as much after this long without one",
    )
    quality_prior_outcomes: float = Field(
        10.0,
        ge=0.0,
        le=100_000.0,
        description="outcomes the reported QUALITY counts as, against the measured rate",
    )
    preference_price: float = Field(
        0.5,
        ge=0.0,
        le=100.0,
        description="balanced: how much slower (as a fraction of predicted_s) the most "
        "preferred agent may be than the least and still win",
    )
    default_service_s: float = Field(
        1.0, gt=0.0, le=86_400.0, description="task time assumed before any completion"
    )
    initial_capacity: int = Field(1024, ge=1, description="agent rows allocated up front")
    max_queued_signals: int = Field(
        200_000, ge=1, description="signals a shard queues for ingest before it answers 503"
    )


class HttpConfig(BaseModel):
    """The Serve ingress: where it listens, its replica and its limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="HTTP bind address")
    insecure: bool = Field(
        False, description="allow a non-loopback host with no authentication (DESIGN §11)"
    )
    port: int = Field(8000, ge=1, le=65_535, description="HTTP port")
    replica_num_cpus: float = Field(0.25, ge=0.0, description="CPUs of the Serve replica")
    max_ongoing_requests: int = Field(256, ge=1, description="Serve's per-replica cap")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest request body")
    batch_max_size: int = Field(
        1000, ge=1, le=10_000, description="single-signal posts coalesced per shard call"
    )
    # 0: no waiting at low load; under load, requests queue while a batch is in flight and
    # the next batch takes all of them, so batching comes from concurrency, not from delay.
    batch_wait_timeout_s: float = Field(0.0, ge=0.0, description="wait to fill a batch")
    # Serve runs handlers on a second event loop in its own thread by default; every
    # request and every shard call's answer then crosses threads. On the replica's loop a
    # select or a one-signal post took about 1 ms less here (BENCHMARKS, HTTP).
    user_code_in_main_loop: bool = Field(
        True, description="run handlers on the replica's own event loop"
    )


class FlowConfig(BaseModel):
    """Each router's flow-control queue (DESIGN §4, "Admission and flow control")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_wait_s: float = Field(
        30.0, ge=0.0, le=300.0, description="the longest a selection may wait for headroom"
    )
    max_waiting_per_band: int = Field(
        1000, ge=1, le=1_000_000, description="waiters per priority band in one router"
    )
    max_waiting: int = Field(
        10_000, ge=1, le=1_000_000, description="waiters in one router (all bands)"
    )
    fairness_half_life_s: float = Field(
        60.0, gt=0.0, le=86_400.0, description="memory of each tenant's attained service"
    )
    max_tenants: int = Field(
        10_000, ge=1, le=1_000_000, description="tenants whose service a router remembers"
    )
    dispatch_tries: int = Field(
        8, ge=1, le=1000, description="waiters tried per freed-capacity notice"
    )
    # A freed slot's notice reaches every polling router at once; the one holding the
    # highest band needs a selection's round trip (a few ms) to bind it.
    band_yield_s: float = Field(
        0.025, ge=0.0, le=1.0, description="how long lower bands yield a freed slot"
    )


class DurabilityConfig(BaseModel):
    """Snapshots and the write-ahead log of every shard (DESIGN §10), as Redis's RDB + AOF.

    Loss window on a crash of the shard's process: ``none`` everything; ``snapshot`` the
    changes since the last snapshot; ``wal`` nothing acknowledged, whatever ``fsync`` says
    (each change is written to the operating system before it is acknowledged). On a
    crash of the machine (or its disk going away), ``wal`` loses with ``fsync: always``
    nothing acknowledged, with ``everysec`` about the last second, with ``no`` whatever
    the operating system had not flushed (typically up to 30 s)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["none", "snapshot", "wal"] = Field(
        "none", description="none, snapshot, or wal (snapshots + write-ahead log)"
    )
    fsync: Literal["always", "everysec", "no"] = Field(
        "everysec", description="when the WAL is flushed to disk (wal mode)"
    )
    storage_path: str | None = Field(
        None, description="directory or URI (s3://bucket/prefix?endpoint_override=…) for state"
    )
    wal_dir: str | None = Field(
        None,
        description="local WAL directory (default: storage_path when local, else a temp dir)",
    )
    snapshot_interval_s: float = Field(
        60.0, gt=0.0, le=86_400.0, description="time between snapshots of a shard"
    )
    keep_snapshots: int = Field(2, ge=1, le=100, description="snapshots kept per shard")

    @model_validator(mode="after")
    def _needs_storage(self) -> DurabilityConfig:
        if self.mode != "none" and not self.storage_path:
            raise ValueError(f"durability mode {self.mode!r} needs a storage_path")
        return self


class ServiceConfig(BaseSettings):
    """Shape and placement of a deployment: shards, routers, resources, deadlines."""

    model_config = SettingsConfigDict(
        env_prefix="RIPPLE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    namespace: str = Field("ripple", min_length=1, max_length=64, description="Ray namespace")
    num_shards: int = Field(2, ge=1, le=1024, description="state shards (actors)")
    num_routers: int = Field(1, ge=1, le=64, description="router actors (fan-out, merge)")
    shard: ShardConfig = ShardConfig()
    http: HttpConfig = HttpConfig()
    durability: DurabilityConfig = DurabilityConfig()
    flow: FlowConfig = FlowConfig()
    # Fractional by default: two shards, a router and a Serve replica at 1 CPU each would not
    # fit a 2-CPU laptop and would wait forever for placement.
    shard_num_cpus: float = Field(0.25, ge=0.0, description="logical CPUs per shard")
    router_num_cpus: float = Field(0.1, ge=0.0, description="logical CPUs per router")
    shard_memory_bytes: int | None = Field(None, ge=0, description="memory reserved per shard")
    shard_deadline_s: float = Field(
        2.0, gt=0.0, le=120.0, description="a shard later than this makes an answer degraded"
    )
    connect_timeout_s: float = Field(10.0, gt=0.0, description="wait for a deployment to answer")
    max_concurrency: int = Field(64, ge=1, le=10_000, description="calls an actor runs at once")
    log_level: LogLevel = Field("INFO", description="level of every Ripple logger")
    auth_secret: SecretStr | None = Field(
        None, description="HS256 key of bearer tokens (>= 32 bytes); none: auth off"
    )
    auth_secret_file: Path | None = Field(None, description="file holding the auth secret")
    metrics_require_admin: bool = Field(False, description="/metrics needs an admin token")

    def resolved_auth_secret(self) -> str | None:
        """The secret in force (the file wins over the value), or None: auth is off."""
        if self.auth_secret_file is not None:
            try:
                secret = self.auth_secret_file.read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:  # a clean message, no traceback
                raise ValueError(
                    f"cannot read the auth secret file {self.auth_secret_file}: {exc}"
                ) from exc
        elif self.auth_secret is not None:
            secret = self.auth_secret.get_secret_value()
        else:
            return None
        if len(secret.encode()) < 32:
            raise ValueError(
                "the auth secret must be at least 32 bytes "
                f"(got {len(secret.encode())}; e.g. `openssl rand -hex 32`)"
            )
        return secret

    def to_args(self) -> dict[str, Any]:
        """JSON-ready settings for another process (the Serve replica), secret included."""
        args: dict[str, Any] = self.model_dump(mode="json")
        if self.auth_secret is not None:
            args["auth_secret"] = self.auth_secret.get_secret_value()
        return args

    # Set per load() call; a class attribute because settings sources are built per class.
    _yaml_file: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = cls._yaml_file
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    @classmethod
    def sections_given(cls, yaml_file: str | Path | None = None) -> set[str]:
        """The top-level settings the ``RIPPLE_*`` environment or the YAML file give (read,
        not validated), for a caller whose defaults yield to them (``ripple up``)."""
        given = set(EnvSettingsSource(cls)())
        if yaml_file is not None:
            given |= set(YamlConfigSettingsSource(cls, yaml_file=Path(yaml_file))())
        return given

    @classmethod
    def load(cls, yaml_file: str | Path | None = None, **overrides: Any) -> ServiceConfig:
        """Defaults < YAML file < ``RIPPLE_*`` environment < ``overrides``. An override of
        None is skipped; a dict overrides a section (``http={"port": 9000}``) key by key."""
        base_cls: type[ServiceConfig] = cls
        if yaml_file is not None:
            path = Path(yaml_file)
            if not path.is_file():
                raise FileNotFoundError(f"config file {path} does not exist")
            base_cls = type("_ScopedServiceConfig", (cls,), {"_yaml_file": path})
        # The overrides go in as init arguments, the highest of pydantic-settings' sources,
        # which it deep-merges with the others before validating once: a section given
        # partly by the environment and partly here is checked whole (the environment's
        # ``durability.mode: wal`` with the CLI's ``storage_path``).
        return cls.model_validate(base_cls(**_without_none(overrides)).model_dump())


def _without_none(overrides: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            out[key] = _without_none(value)
        elif value is not None:
            out[key] = value
    return out


def settings_table(model: type[BaseModel] = ServiceConfig, key: str = "", env: str = "") -> str:
    """The README's settings table, generated from the model so the two cannot drift."""
    lines = [] if key else ["| setting (YAML key) | environment variable | default | meaning |"]
    if not key:
        lines.append("| --- | --- | --- | --- |")
    for name, field in model.model_fields.items():
        default = field.default
        if name in ("shard", "http", "durability", "flow"):
            lines.append(settings_table(type(default), f"{key}{name}.", f"{env}{name.upper()}__"))
            continue
        if isinstance(default, BaseModel):
            default = ", ".join(f"{k}={v:g}" for k, v in default.model_dump().items() if v)
        lines.append(
            f"| `{key}{name}` | `RIPPLE_{env}{name.upper()}` | `{default}` | "
            f"{field.description or ''} |"
        )
    return "\n".join(lines)
