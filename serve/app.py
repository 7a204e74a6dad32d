"""The Ray Serve HTTP API (DESIGN §5): a FastAPI ingress over the Ray client.

Batch posts go straight to the owning shards; single-signal posts are coalesced with
``@serve.batch`` into one batched shard call. All errors become the same JSON body in one
place (``_ripple_error``), with the status code carried by the error type.
"""

import json
import logging
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from actors.client import AsyncRippleClient, connect_async
from actors.cluster.deployment import deploy_actors
from actors.core.columns import columns_from_dicts
from actors.core.config import ServiceConfig
from actors.core.errors import InvalidInput, NotFound, PayloadTooLarge, RippleError, Unavailable
from actors.core.models import (
    MAX_SIGNALS_PER_BATCH,
    AgentView,
    CompleteRequest,
    CompleteResult,
    DescribeRequest,
    IngestResult,
    OverloadPrediction,
    PredictParams,
    ScoresRequest,
    ScoresResult,
    SelectRequest,
    SelectResult,
    SignalBody,
)
from serve.metrics import render_metrics

log = logging.getLogger(__name__)
RETRY_AFTER_S = 1


class SignalsBody(BaseModel):
    """Only the envelope is validated here: items are checked one by one by the core, so
    one bad signal is reported by index instead of failing the whole batch."""

    model_config = ConfigDict(extra="forbid")

    signals: list[Any] = Field(..., min_length=1, max_length=MAX_SIGNALS_PER_BATCH)


def _error_body(err: RippleError) -> dict[str, Any]:
    return {"error": err.to_dict()}


def _ripple_error(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RippleError)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(err, Unavailable) else None
    return JSONResponse(_error_body(err), status_code=err.http_status, headers=headers)


def _request_validation_error(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestValidationError)
    details = [
        {
            "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
            "reason": e.get("msg", ""),
        }
        for e in err.errors()
    ]
    return _ripple_error(_, InvalidInput("request failed validation", details))


app = FastAPI(
    title="Ripple coordination service",
    version="1",
    description="Agents report signals; routers ask which agent should get the next task.",
)
app.add_exception_handler(RippleError, _ripple_error)
app.add_exception_handler(RequestValidationError, _request_validation_error)


@app.middleware("http")
async def limit_body_size(request: Request, call_next: Any) -> Response:
    limit = getattr(request.app.state, "max_body_bytes", ServiceConfig().http.max_body_bytes)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        err = PayloadTooLarge(
            f"body of {declared} bytes exceeds {limit}", [{"field": "body", "reason": "too large"}]
        )
        return JSONResponse(_error_body(err), status_code=413)
    response: Response = await call_next(request)
    return response


def _json(model: BaseModel) -> Response:
    """Serialise a result built by the core directly: the ``response_model`` documents it,
    and re-validating what the core just built would only add latency to the hot path."""
    return Response(model.model_dump_json(), media_type="application/json")


def _ingest_response(result: IngestResult) -> JSONResponse:
    body = {"accepted": result.accepted, "rejected": [r.model_dump() for r in result.rejected]}
    if not result.rejected:
        status = 200
    elif result.accepted:
        status = 207
    else:
        status = 422
    return JSONResponse(body, status_code=status)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
@serve.ingress(app)
class RippleIngress:
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = ServiceConfig.load(**(config or {}))
        logging.basicConfig(level=self.config.log_level)
        http = self.config.http
        app.state.max_body_bytes = http.max_body_bytes
        # Idempotent: attaches to shards created by `ripple up`, or creates them under
        # `serve run` / `serve deploy`, so every way of starting gives the same service.
        deploy_actors(self.config)
        self.client: AsyncRippleClient = connect_async(namespace=self.config.namespace)
        batcher: Any = self._batched_register
        batcher.set_max_batch_size(http.batch_max_size)
        batcher.set_batch_wait_timeout_s(http.batch_wait_timeout_s)

    # ------------------------------------------------------------------ signals
    @app.post("/v1/signals", summary="Register a batch of signals (1-10,000)")
    async def post_signals(self, request: Request) -> JSONResponse:
        raw = await request.body()
        limit = self.config.http.max_body_bytes
        if len(raw) > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        try:
            body = SignalsBody.model_validate_json(raw)
        except ValueError as exc:
            details: list[dict[str, Any]] = list(getattr(exc, "errors", lambda: [])())
            raise InvalidInput(
                'body must be {"signals": [...]} with 1 to 10,000 items',
                [
                    {"field": ".".join(map(str, e.get("loc", ()))), "reason": e.get("msg", "")}
                    for e in details
                ],
            ) from exc
        return _ingest_response(
            await self.client.register_columns(columns_from_dicts(body.signals))
        )

    @serve.batch(max_batch_size=1000, batch_wait_timeout_s=0.0)
    async def _batched_register(self, items: list[dict[str, Any]]) -> list[IngestResult]:
        merged = await self.client.register_columns(columns_from_dicts(items))
        by_index = {r.index: r for r in merged.rejected}
        return [
            IngestResult(accepted=0, rejected=[by_index[i].model_copy(update={"index": 0})])
            if i in by_index
            else IngestResult(accepted=1)
            for i in range(len(items))
        ]

    @app.post(
        "/v1/agents/{agent_id}/signals", summary="Register one signal (coalesced into batches)"
    )
    async def post_agent_signal(self, agent_id: str, body: SignalBody) -> JSONResponse:
        item = body.model_dump(exclude_none=True)
        item["agent_id"] = agent_id
        return _ingest_response(await self._batched_register(item))

    # ------------------------------------------------------------------ routing
    @app.post("/v1/select", response_model=SelectResult, summary="Choose the best agent(s)")
    async def select(self, req: SelectRequest) -> Response:
        return _json(await self.client.select_request(req))

    @app.post("/v1/scores", response_model=ScoresResult)
    async def scores(self, req: ScoresRequest) -> Response:
        return _json(await self.client.scores_request(req))

    # ------------------------------------------------------------------ agents
    @app.get("/v1/agents/{agent_id}", response_model=AgentView)
    async def agent(self, agent_id: str) -> AgentView:
        return await self.client.agent(agent_id)

    @app.put("/v1/agents/{agent_id}", response_model=AgentView, summary="Set agent metadata")
    async def describe(self, agent_id: str, body: DescribeRequest) -> AgentView:
        return await self.client.describe(
            agent_id, max_concurrency=body.max_concurrency, labels=body.labels
        )

    @app.post(
        "/v1/agents/{agent_id}/complete",
        response_model=CompleteResult,
        summary="Report that an assigned task ended",
    )
    async def complete(self, agent_id: str, body: CompleteRequest) -> CompleteResult:
        return await self.client.complete(
            agent_id, body.assignment_id, ok=body.ok, duration_s=body.duration_s
        )

    @app.delete("/v1/agents/{agent_id}", status_code=204)
    async def delete(self, agent_id: str) -> Response:
        if not await self.client.delete(agent_id):
            raise NotFound(
                f"agent {agent_id!r} is not known",
                [{"field": "agent_id", "reason": "unknown agent"}],
            )
        return Response(status_code=204)

    @app.get("/v1/agents/{agent_id}/overload", response_model=OverloadPrediction)
    async def overload(
        self,
        agent_id: str,
        horizon_s: float = Query(60.0, gt=0, le=3600),
        threshold: float = Query(0.8, gt=0, lt=1),
    ) -> OverloadPrediction:
        return await self.client.predict_overload(
            agent_id, horizon_s=horizon_s, threshold=threshold
        )

    @app.get("/v1/overloads")
    async def overloads(
        self,
        horizon_s: float = Query(60.0, gt=0, le=3600),
        threshold: float = Query(0.8, gt=0, lt=1),
        min_probability: float = Query(0.5, ge=0, le=1),
    ) -> dict[str, Any]:
        params = PredictParams(
            horizon_s=horizon_s, threshold=threshold, min_probability=min_probability
        )
        out = await self.client.overloads_request(params)
        out["overloads"] = [p.model_dump() for p in out["overloads"]]
        return out

    # ------------------------------------------------------------------ operations
    @app.get("/v1/stats")
    async def stats(self) -> dict[str, Any]:
        return await self.client.stats()

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(self) -> Response:
        body, content_type = render_metrics(await self.client.metrics_snapshot())
        return Response(body, media_type=content_type)

    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        try:
            stats = await self.client.stats()
        except RippleError as exc:
            return JSONResponse(
                {"ready": False, "error": exc.to_dict()},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        ready = bool(stats["ready"])
        body = {
            "ready": ready,
            "shards_up": stats["shards_up"],
            "shards_total": stats["shards_total"],
        }
        return JSONResponse(
            body,
            status_code=200 if ready else 503,
            headers=None if ready else {"Retry-After": str(RETRY_AFTER_S)},
        )


def build_app(args: dict[str, Any] | None = None) -> Any:
    """Application builder for ``serve run serve.app:build_app`` and the Serve config: its
    ``args`` are a ``ServiceConfig`` (nested, as in the YAML file of ``ripple up --config``)."""
    config = ServiceConfig.load(**(args or {}))
    ingress: Any = RippleIngress
    return ingress.options(
        ray_actor_options={"num_cpus": config.http.replica_num_cpus},
        max_ongoing_requests=config.http.max_ongoing_requests,
    ).bind(json.loads(config.model_dump_json()))
