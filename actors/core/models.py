"""Pydantic models for everything that crosses an edge (HTTP, the Ray client, the core API).

The hot ingest path does not build one model per signal: ``actors.core.columns`` applies the
same rules to whole columns with numpy. ``tests/unit/test_validation.py`` checks that the two
agree. Timestamps: unix seconds, or an RFC 3339 string / ``datetime`` *with* a zone. A naive
datetime is rejected, because guessing its zone silently shifts data by hours.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from actors.core.results import (  # noqa: F401 - re-exported: the public names stay here
    STRATEGIES,
    AgentScore,
    AgentView,
    CompleteResult,
    IngestResult,
    LiveSignal,
    OverloadPrediction,
    RejectedItem,
    ScoresResult,
    SelectedAgent,
    SelectResult,
    Strategy,
)

# No "/": every id must be one URL path segment (``/v1/agents/{agent_id}``).
AGENT_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
# Matched whole (``fullmatch``): with ``re.match`` the ``$`` lets a final newline through.
_AGENT_ID_RE = re.compile(AGENT_ID_PATTERN.removeprefix("^").removesuffix("$"))


def is_agent_id(agent_id: Any) -> bool:
    """The one agent-id check of every path (HTTP, clients, columns, the core)."""
    return isinstance(agent_id, str) and _AGENT_ID_RE.fullmatch(agent_id) is not None


MAX_TTL_S = 3600.0
DEFAULT_TTL_S = 60.0
MAX_FUTURE_SKEW_S = 5.0
MAX_TRACE_ID_LEN = 128
MAX_SIGNALS_PER_BATCH = 10_000
MAX_CANDIDATES = 10_000
MAX_K = 1_000


class SignalType(str, Enum):
    LOAD = "LOAD"
    CAPACITY = "CAPACITY"
    QUALITY = "QUALITY"
    COST = "COST"
    AVAILABILITY = "AVAILABILITY"
    # Last on purpose: its default weight is 0, so the all-agents scan can stop one row early.
    LATENCY = "LATENCY"


# Column order of every per-dimension array in the core. Never reorder: snapshots depend on it.
SIGNAL_TYPES: tuple[SignalType, ...] = tuple(SignalType)
DIMENSIONS: tuple[str, ...] = tuple(t.value.lower() for t in SIGNAL_TYPES)
NUM_DIMENSIONS = len(SIGNAL_TYPES)
TYPE_CODE: dict[str, int] = {t.value: i for i, t in enumerate(SIGNAL_TYPES)}
LOAD_CODE = TYPE_CODE["LOAD"]
CAPACITY_CODE = TYPE_CODE["CAPACITY"]
QUALITY_CODE = TYPE_CODE["QUALITY"]
LATENCY_CODE = TYPE_CODE["LATENCY"]
# LOAD, COST and LATENCY are "lower is better": their score is 1 - value.
INVERTED = np.array([t in ("LOAD", "COST", "LATENCY") for t in TYPE_CODE], dtype=bool)


def agent_id_problem(agent_id: Any) -> str:
    """Why ``agent_id`` is not a valid id (the same words on every path)."""
    if not isinstance(agent_id, str):
        return f"must be a string, got {type(agent_id).__name__}"
    if "/" in agent_id:
        return (
            "must not contain '/': every id is one URL path segment; "
            "namespace with ':' instead, e.g. 'team:agent-7'"
        )
    return "must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ -"


def check_agent_id(agent_id: Any) -> str:
    """The id itself, or an ``InvalidInput`` naming the field and what is wrong."""
    if is_agent_id(agent_id):
        return agent_id
    from actors.core.errors import InvalidInput

    raise InvalidInput(
        "invalid agent id", [{"field": "agent_id", "reason": agent_id_problem(agent_id)}]
    )


def _explain_agent_ids(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Ids are checked by pydantic's compiled pattern (no Python call per id on the hot
    path); only a failure comes here, to say in plain words what is wrong with which id."""
    try:
        return handler(value)
    except ValidationError as exc:
        for err in exc.errors():
            if err["type"] == "string_pattern_mismatch":
                where = "".join(f"[{p}]" for p in err["loc"])
                raise PydanticCustomError(
                    "invalid_agent_id",
                    "agent id {where}{id} {problem}",
                    {
                        "where": where + " " if where else "",
                        "id": repr(err["input"]),
                        "problem": agent_id_problem(err["input"]),
                    },
                ) from None
        raise


AgentId = Annotated[str, StringConstraints(strict=True, pattern=AGENT_ID_PATTERN)]
CheckedIds = WrapValidator(_explain_agent_ids)


def _whole_number(value: Any) -> Any:
    """A JSON integer may be written 8 or 8.0 (JSON Schema agrees); a boolean or a string
    is not one, even in pydantic's lax mode."""
    if isinstance(value, (bool, str)):
        raise ValueError("must be an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeInt = Annotated[int, BeforeValidator(_whole_number)]

# Strict: a boolean or a numeric string is an error, never coerced (as in ``columns``).
UnitFloat = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=True)]


def timestamp_to_unix_s(value: Any) -> float | None:
    """Normalise an accepted timestamp form to unix seconds; raise ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("timestamp must be unix seconds or RFC 3339, not a boolean")
    if isinstance(value, (int, float)):
        ts = float(value)
    elif isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp datetime must carry a time zone")
        ts = value.timestamp()
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise ValueError("timestamp must be unix seconds or RFC 3339 with a zone") from exc
        if parsed.tzinfo is None:
            raise ValueError("timestamp must carry a time zone (e.g. 'Z' or '+00:00')")
        ts = parsed.timestamp()
    else:
        raise ValueError("timestamp must be unix seconds or RFC 3339 with a zone")
    if not math.isfinite(ts) or ts < 0:
        raise ValueError("timestamp must be a finite, non-negative unix time")
    return ts


class SignalBody(BaseModel):
    """A signal without its agent id: the body of ``POST /v1/agents/{agent_id}/signals``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal_type: SignalType
    value: UnitFloat
    confidence: UnitFloat = 1.0
    ttl_s: float = Field(DEFAULT_TTL_S, gt=0.0, le=MAX_TTL_S, allow_inf_nan=False, strict=True)
    timestamp: Annotated[
        float | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "number", "minimum": 0},
                    {"type": "string", "format": "date-time"},
                    {"type": "null"},
                ],
                "description": "unix seconds or RFC 3339 with a zone; at most "
                f"{MAX_FUTURE_SKEW_S:g} s in the future; default: time of receipt",
            }
        ),
    ] = None
    trace_id: str | None = Field(None, max_length=MAX_TRACE_ID_LEN)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> float | None:
        return timestamp_to_unix_s(value)


class Signal(SignalBody):
    """One signal an agent reports about itself."""

    agent_id: Annotated[AgentId, CheckedIds]


class Weights(BaseModel):
    """Per-request weights. Named dimensions replace the defaults; unnamed ones weigh 0."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        # "At least one positive weight", said in the schema too, so API clients and
        # fuzzers know an all-zero weighting is invalid before sending it.
        json_schema_extra={
            "anyOf": [
                {"required": [d], "properties": {d: {"type": "number", "exclusiveMinimum": 0}}}
                for d in ("load", "capacity", "quality", "cost", "latency", "availability")
            ]
        },
    )

    load: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    capacity: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    quality: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    cost: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    latency: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    availability: float | None = Field(None, ge=0.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _not_all_zero(self) -> Weights:
        if max(self.as_tuple()) <= 0.0:
            raise ValueError("at least one weight must be positive")
        return self

    def as_tuple(self) -> tuple[float, ...]:
        return tuple(float(getattr(self, d) or 0.0) for d in DIMENSIONS)

    def vector(self) -> np.ndarray:
        """Weights in column order, normalised to sum to 1. Scaled by the largest first,
        so weights near the float limit (whose sum would overflow to inf) still work."""
        w = np.array(self.as_tuple(), dtype=np.float64)
        w /= w.max()
        return w / w.sum()


DEFAULT_WEIGHTS = Weights(
    load=0.25, capacity=0.25, quality=0.20, cost=0.15, latency=0.0, availability=0.15
)

MAX_LABELS = 32
LabelKey = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]
LabelValue = Annotated[str, StringConstraints(strict=True, max_length=256)]
LabelMap = Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)]
Tenant = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128)]
AffinityKey = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=256)]
MAX_WAIT_S = 300.0  # the most any configuration lets a selection wait for headroom


class SelectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    candidates: Annotated[list[AgentId] | None, CheckedIds] = Field(None, max_length=MAX_CANDIDATES)
    k: WholeInt = Field(1, ge=1, le=MAX_K)
    weights: Weights | None = None
    strategy: Strategy = "balanced"
    exclude: Annotated[list[AgentId], CheckedIds] = Field(
        default_factory=list, max_length=MAX_CANDIDATES
    )
    require_signals: bool = False
    min_score: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    require_labels: LabelMap | None = Field(
        None, description="only agents carrying every one of these labels"
    )
    assign: bool = Field(
        True, description="record an in-flight task on each agent chosen (a write)"
    )
    p2c_choices: WholeInt = Field(2, ge=2, le=16, description="d in power-of-d-choices")
    weighted_pool: WholeInt = Field(
        16, ge=1, le=MAX_K, description="size of the top pool the weighted strategy samples from"
    )
    balanced_pool: WholeInt = Field(
        8, ge=1, le=MAX_K, description="top candidates per shard that balanced spreads over"
    )
    balanced_tolerance: float = Field(
        0.005,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="balanced picks at random among agents whose cost (predicted_s priced "
        "by preference) is within this fraction of the best",
    )
    deadline_s: float | None = Field(
        None,
        gt=0.0,
        le=86_400.0,
        allow_inf_nan=False,
        description="among agents predicted to finish one more task within this, the most "
        "preferred (weighted: its pool is those); when none can, the soonest "
        "(deadline_at_risk)",
    )
    # Admission and flow control (DESIGN §4): when no candidate has headroom, an
    # assigning selection waits up to wait_s in its router's queue, higher priority first,
    # tenants sharing fairly within a priority.
    priority: WholeInt = Field(
        5, ge=0, le=9, description="flow-control band: a higher one is always served first"
    )
    tenant: Tenant = Field(
        "default", description="fairness key: tenants share freed capacity within a band"
    )
    affinity_key: AffinityKey | None = Field(
        None,
        description="keep tasks with this key (a session, a conversation, a prefix) on the "
        "agent that served the key last while it has headroom and is within the load bound",
    )
    wait_s: float = Field(
        0.0,
        ge=0.0,
        le=MAX_WAIT_S,
        allow_inf_nan=False,
        description="how long to wait for headroom when every candidate is full (capped by "
        "the service's flow.max_wait_s; the answer says what it waited)",
    )

    @model_validator(mode="before")
    @classmethod
    def _reserve_is_assign(cls, data: Any) -> Any:
        """``reserve`` was the old name of ``assign``; both are accepted."""
        if isinstance(data, dict) and "reserve" in data:
            data = dict(data)
            reserve = data.pop("reserve")
            if "assign" in data and data["assign"] != reserve:
                raise ValueError("reserve is a synonym of assign; give one or the other")
            data["assign"] = reserve
        return data


class ScoresRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    agent_ids: Annotated[list[AgentId], CheckedIds] = Field(
        ..., min_length=1, max_length=MAX_CANDIDATES
    )
    weights: Weights | None = None


class DescribeRequest(BaseModel):
    """``PUT /v1/agents/{agent_id}``: metadata without a TTL. Omitted fields are kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrency: (
        Annotated[
            WholeInt,
            Field(ge=1, le=1_000_000),
            # Pydantic loses the bounds of a validated int inside an Optional; state them.
            WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 1_000_000}),
        ]
        | None
    ) = Field(None, description="tasks the agent runs at once")

    labels: LabelMap | None = Field(None, description="replaces the agent's labels")


class CompleteRequest(BaseModel):
    """``POST /v1/agents/{agent_id}/complete``: a task the agent was assigned has ended."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    assignment_id: str | None = Field(
        None, max_length=64, description="omitted: the agent's oldest open task"
    )
    ok: bool = True
    duration_s: float | None = Field(None, ge=0.0, le=86_400.0, allow_inf_nan=False)


class PredictParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    horizon_s: float = Field(60.0, gt=0.0, le=3600.0, allow_inf_nan=False)
    threshold: float = Field(0.8, gt=0.0, lt=1.0, allow_inf_nan=False)
    min_probability: float = Field(0.5, ge=0.0, le=1.0, allow_inf_nan=False)
