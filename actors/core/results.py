"""What the core answers: results and views (the requests are in ``models``).

Split from ``models`` to keep each module readable; ``models`` re-exports these names, so
``from actors.core.models import SelectResult`` keeps working.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Strategy = Literal["balanced", "best", "p2c", "weighted"]
STRATEGIES: tuple[str, ...] = ("balanced", "best", "p2c", "weighted")


Health = Literal["healthy", "ejected", "probing"]


class AgentScore(BaseModel):
    score: float
    scores: dict[str, float]
    known: bool
    predicted_s: float | None = Field(
        None, description="predicted completion time of one more task on this agent"
    )
    health: Health = Field("healthy", description="as measured from outcomes")


class SelectedAgent(AgentScore):
    agent_id: str
    assignment_id: str | None = Field(
        None, description="the in-flight task recorded on this agent; pass it to complete"
    )
    deadline_at_risk: bool | None = Field(
        None, description="with deadline_s: predicted_s exceeds it (no agent could meet it)"
    )


class SelectResult(BaseModel):
    selected: list[SelectedAgent]
    considered: int
    shards_answered: int = 1
    shards_total: int = 1
    degraded: bool = False
    strategy: Strategy = "balanced"
    waited_s: float = Field(
        0.0, description="time this selection waited in the flow-control queue for headroom"
    )
    affinity: Literal["hit", "spilled", "new"] | None = Field(
        None,
        description="with affinity_key: hit (the key's agent), spilled (it could not take "
        "the task: the next acceptable one in the key's order, or the strategy's pick), new",
    )


class ScoresResult(BaseModel):
    scores: dict[str, AgentScore]
    shards_answered: int = 1
    shards_total: int = 1
    degraded: bool = False


class RejectedItem(BaseModel):
    index: int
    error: str
    field: str | None = None


class IngestResult(BaseModel):
    accepted: int
    rejected: list[RejectedItem] = Field(default_factory=list)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as plain tuples: a pydantic model's own pickle state costs more than
        the answer to a one-signal call is worth (it travels back from every shard)."""
        rows = [(r.index, r.error, r.field) for r in self.rejected]
        return (_ingest_result_from_wire, (self.accepted, rows))


def _ingest_result_from_wire(
    accepted: int, rows: list[tuple[int, str, str | None]]
) -> IngestResult:
    rejected = [RejectedItem.model_construct(index=i, error=e, field=f) for i, e, f in rows]
    return IngestResult.model_construct(accepted=accepted, rejected=rejected)


class LiveSignal(BaseModel):
    value: float
    confidence: float
    timestamp: float
    age_s: float
    expires_in_s: float
    weight: float


class AgentView(BaseModel):
    agent_id: str
    signals: dict[str, LiveSignal]
    scores: dict[str, float]
    score: float
    history_length: int
    in_flight: int = Field(0, description="open assignments")
    estimated_load: float | None = Field(
        None, description="last reported LOAD + assigned since - completed since"
    )
    load_per_task: float = Field(description="1/max_concurrency, declared or learned")
    service_time_s: float | None = Field(None, description="learned time per task")
    max_concurrency: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    health: Health = Field("healthy", description="healthy, ejected or probing (outcomes)")
    success_rate: float | None = Field(None, description="recency-weighted, from outcomes")
    outcomes: int = Field(0, description="outcomes the success rate weighs")
    ejected_for_s: float | None = Field(None, description="until the ejection ends")
    ejections: int = Field(0, description="ejections in the current back-off")
    work_s: float | None = Field(None, description="learned time one task takes")
    parallelism: float = Field(1.0, description="tasks it runs at once, learned (1 until then)")
    predicted_s: float | None = Field(
        None, description="predicted completion time of one more task"
    )


class CompleteResult(BaseModel):
    released: bool
    assignment_id: str | None = None


class OverloadPrediction(BaseModel):
    agent_id: str
    status: Literal["ok", "insufficient_data"]
    will_overload: bool | None
    probability: float | None = Field(None, description="P(load > threshold at now+horizon)")
    predicted_load: float | None = Field(None, description="fit at now+horizon, bounded to [0,1]")
    current_load: float | None
    slope_per_s: float | None
    samples: int
    span_s: float
    horizon_s: float
    threshold: float
    reason: str | None = None
