"""The HTTP ingest paths' plain parts: the batch envelope, per-item answers, and the
split of a coalesced call's answer back to each single-signal post. No Ray, no FastAPI
routes: ``serve.app`` calls these around its awaits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from actors.client.buffer import partial_failure
from actors.core.errors import InvalidInput, Unavailable
from actors.core.models import MAX_SIGNALS_PER_BATCH, IngestResult, RejectedItem

FORBIDDEN_ITEM = "forbidden: not one of the token's agents, or past its max_agents"


class SignalsBody(BaseModel):
    """Only the envelope is validated here: items are checked one by one by the core, so
    one bad signal is reported by index instead of failing the whole batch."""

    model_config = ConfigDict(extra="forbid")

    signals: list[Any] = Field(..., min_length=1, max_length=MAX_SIGNALS_PER_BATCH)


def parse_envelope(raw: bytes) -> list[Any]:
    """The items of a ``{"signals": [...]}`` body, or a 422 naming what is wrong."""
    try:
        return SignalsBody.model_validate_json(raw).signals
    except ValueError as exc:
        details: list[dict[str, Any]] = list(getattr(exc, "errors", lambda: [])())
        raise InvalidInput(
            'body must be {"signals": [...]} with 1 to 10,000 items',
            [
                {"field": ".".join(map(str, e.get("loc", ()))), "reason": e.get("msg", "")}
                for e in details
            ],
        ) from exc


def ingest_response(result: IngestResult, forbidden_only: bool = False) -> JSONResponse:
    body = {"accepted": result.accepted, "rejected": [r.model_dump() for r in result.rejected]}
    if not result.rejected:
        status = 200
    elif result.accepted:
        status = 207
    else:
        status = 403 if forbidden_only else 422
    return JSONResponse(body, status_code=status)


def forbidden_items(items: list[Any], may_write: Callable[[Any], bool]) -> list[int]:
    """Indices of the items an agent token may not write (they are never sent on)."""
    return [
        i
        for i, item in enumerate(items)
        if not may_write(item.get("agent_id") if isinstance(item, dict) else None)
    ]


def with_forbidden(result: IngestResult, allowed: list[int], forbidden: list[int]) -> IngestResult:
    """The answer for the whole batch: ``result`` covers the ``allowed`` items (indices
    into them), the ``forbidden`` ones are refused, all by their index in the body."""
    rejected = [r.model_copy(update={"index": allowed[r.index]}) for r in result.rejected]
    rejected += [RejectedItem(index=i, field="agent_id", error=FORBIDDEN_ITEM) for i in forbidden]
    rejected.sort(key=lambda r: r.index)
    return IngestResult.model_construct(accepted=result.accepted, rejected=rejected)


def per_post(merged: IngestResult, n: int) -> list[IngestResult | Unavailable]:
    """A coalesced call's answer split back to its ``n`` single-signal posts."""
    by_index = {r.index: r for r in merged.rejected}
    return [
        IngestResult(accepted=0, rejected=[by_index[i].model_copy(update={"index": 0})])
        if i in by_index
        else IngestResult(accepted=1)
        for i in range(n)
    ]


def per_post_failed(exc: Unavailable, n: int) -> list[IngestResult | Unavailable]:
    """Only the posts whose shards did not answer failed; the others were applied (or
    rejected), and their callers must hear so: a retry would duplicate them."""
    told = partial_failure(exc, n)
    failed, rejected = told if told is not None else (dict.fromkeys(range(n), exc.message), [])
    refused = {r["index"]: r["error"] for r in rejected}
    return [
        Unavailable(exc.message, [{"field": "signal", "reason": failed[i]}])
        if i in failed
        else IngestResult(
            accepted=0, rejected=[RejectedItem(index=0, error=refused[i], field=None)]
        )
        if i in refused
        else IngestResult(accepted=1)
        for i in range(n)
    ]
