"""The Ray Serve HTTP API (DESIGN §5): a FastAPI ingress over the Ray client.

Routes only: every route checks its caller (``serve.auth``) first; errors become one JSON
body in ``serve.errors``. Batch posts go straight to the owning shards; single-signal posts
are coalesced with ``@serve.batch`` into one batched shard call.
"""

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from ray import serve

from actors.client import AsyncRippleClient, connect_async
from actors.client.relay import PUSH_INTERVAL_S
from actors.cluster.deployment import deploy_actors
from actors.cluster.tracing import context_from_headers, traced
from actors.core.columns import columns_from_dicts
from actors.core.config import HttpConfig, ServiceConfig
from actors.core.decode import columns_from_json
from actors.core.errors import Forbidden, NotFound, RippleError, Unavailable
from actors.core.models import (
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
from serve import errors
from serve.auth import AgentQuota, Principal, Role, authenticate, require
from serve.errors import RETRY_AFTER_S, ErrorBody, documented
from serve.guard import Gate, Guard, exposure_problem
from serve.ingest import (
    forbidden_items,
    ingest_response,
    parse_envelope,
    per_post,
    per_post_failed,
    with_forbidden,
)
from serve.metrics import render_metrics
from serve.openapi import (
    AGENT_READ,
    AUTH,
    INGEST,
    READ,
    SELECT,
    SIGNALS_BODY,
    WRITE,
    AgentPath,
    AssignmentPath,
    IngestBody,
)
from serve.replica import ingress_options

log = logging.getLogger(__name__)
RECENT_SELECTIONS = 50
UI_PAGE = (Path(__file__).parent / "static" / "ui.html").read_text()


app = FastAPI(
    title="Ripple coordination service",
    version="1",
    description="Agents report signals; routers ask which agent should get the next task.",
)
# Inside RequestContext (added next), so the request id is set. Both read the replica's
# settings from ``app.state`` (set once by the replica's constructor).
app.add_middleware(Guard)
errors.install(app, HttpConfig().max_body_bytes)


def _json(model: BaseModel) -> Response:
    """Serialise a result built by the core directly: the ``response_model`` documents it,
    and re-validating what the core just built would only add latency to the hot path."""
    return Response(model.model_dump_json(), media_type="application/json")


# Its resources and max_ongoing_requests come from HttpConfig (``build_app``, ``serve.replica``).
@serve.deployment
@serve.ingress(app)
class RippleIngress:
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = ServiceConfig.load(**(config or {}))
        logging.basicConfig(level=self.config.log_level)
        for handler in logging.getLogger().handlers:
            handler.addFilter(errors.RequestIdFilter())
        http = self.config.http
        app.state.max_body_bytes = http.max_body_bytes
        self.secret = self.config.resolved_auth_secret()
        self.quota = AgentQuota()
        app.state.gate = Gate(secret=self.secret, host=http.host)
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_SELECTIONS)
        # Idempotent: attaches to shards created by `ripple up`, or creates them under
        # `serve run` / `serve deploy`, so every way of starting gives the same service.
        deploy_actors(self.config)
        self.client: AsyncRippleClient = connect_async(namespace=self.config.namespace)
        # Selections and scores fan out from this replica to the shards (the router
        # actors' logic, one hop less); its counters are pushed to the router actors every
        # second and before each scrape, so /metrics on any replica counts them once.
        self.router = self.client.local_router()
        self.source = f"replica-{os.getpid()}-{os.urandom(4).hex()}"
        self._pusher: asyncio.Task[None] | None = None
        batcher: Any = self._batched_register
        batcher.set_max_batch_size(http.batch_max_size)
        batcher.set_batch_wait_timeout_s(http.batch_wait_timeout_s)

    def _ensure_pusher(self) -> None:
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.get_running_loop().create_task(self._push_forever())

    async def _push_forever(self) -> None:
        while True:
            await asyncio.sleep(PUSH_INTERVAL_S)
            try:
                await self.client.push_metrics(self.source, self.router)
            except Exception as exc:  # the next push carries the same cumulative counts
                log.debug("pushing selection counters failed: %s", exc)

    def _caller(self, request: Request, *roles: Role, agent_id: str | None = None) -> Principal:
        # Authenticated by ``serve.guard`` before the body was read (/v1/ routes).
        principal = getattr(request.state, "principal", None)
        if principal is None:
            principal = authenticate(request.headers.get("authorization"), self.secret)
        require(principal, *roles, agent_id=agent_id)
        return principal

    def _writer(self, request: Request, agent_id: str) -> None:
        """A caller that may write this agent's signals or metadata (creating it)."""
        principal = self._caller(request, "agent", agent_id=agent_id)
        if not self.quota.allows(principal, agent_id):
            raise Forbidden(
                f"this token reached its quota of {principal.max_agents} agents",
                [{"field": "agent_id", "reason": "past the token's max_agents"}],
            )

    # ------------------------------------------------------------------ signals
    @app.post(
        "/v1/signals",
        summary="Register a batch of signals (1-10,000)",
        responses=INGEST,
        openapi_extra=SIGNALS_BODY,
    )
    async def post_signals(self, request: Request) -> JSONResponse:
        # The ingest span (``actors.client.ops``) joins the caller's trace.
        with traced(request.headers):
            return await self._post_signals(request)

    async def _post_signals(self, request: Request) -> JSONResponse:
        principal = self._caller(request, "agent")
        raw = await request.body()
        # A clean batch goes from bytes to columns in one pass; anything else (or a batch
        # with items an agent token may not write) takes the precise path below.
        fast = columns_from_json(raw)
        may_write = partial(self.quota.allows, principal)
        if fast is not None and (principal.role == "admin" or all(map(may_write, fast.agent_ids))):
            return ingest_response(await self.client.register_columns(fast))
        items = parse_envelope(raw)
        if principal.role == "admin":
            return ingest_response(await self.client.register_columns(columns_from_dicts(items)))
        # An agent token's items for other agents are refused here, never sent on.
        forbidden = forbidden_items(items, may_write)
        if not forbidden:
            return ingest_response(await self.client.register_columns(columns_from_dicts(items)))
        refused = set(forbidden)
        allowed = [i for i in range(len(items)) if i not in refused]
        result = IngestResult.model_construct(accepted=0, rejected=[])
        if allowed:
            result = await self.client.register_columns(
                columns_from_dicts([items[i] for i in allowed])
            )
        merged = with_forbidden(result, allowed, forbidden)
        return ingest_response(merged, forbidden_only=not result.rejected)

    @serve.batch(max_batch_size=1000, batch_wait_timeout_s=0.0)
    async def _batched_register(
        self, items: list[dict[str, Any]]
    ) -> list[IngestResult | Unavailable]:
        try:
            merged = await self.client.register_columns(columns_from_dicts(items))
        except Unavailable as exc:
            return per_post_failed(exc, len(items))
        return per_post(merged, len(items))

    @app.post(
        "/v1/agents/{agent_id}/signals",
        summary="Register one signal (coalesced into batches)",
        responses={
            **WRITE,
            422: {"model": IngestBody | ErrorBody, "description": "Rejected, or malformed"},
        },
    )
    async def post_agent_signal(
        self, request: Request, agent_id: AgentPath, body: SignalBody
    ) -> JSONResponse:
        self._writer(request, agent_id)
        item = body.model_dump(exclude_none=True)
        item["agent_id"] = agent_id
        result = await self._batched_register(item)
        if isinstance(result, Unavailable):
            raise result
        return ingest_response(result)

    # ------------------------------------------------------------------ routing
    @app.post(
        "/v1/select",
        response_model=SelectResult,
        summary="Choose the best agent(s)",
        responses=SELECT,
    )
    async def select(self, request: Request, req: SelectRequest) -> Response:
        self._caller(request, "router")
        self._ensure_pusher()
        result = await self.router.select(req, context_from_headers(request.headers))
        if req.assign:  # the status page's own read-only selections are not news
            self.recent.appendleft(
                {
                    "at": time.time(),
                    "strategy": result.strategy,
                    "picked": [s.agent_id for s in result.selected],
                    "best_score": result.selected[0].score if result.selected else None,
                    "degraded": result.degraded,
                    "assignment_id": result.selected[0].assignment_id if result.selected else None,
                    "waited_s": result.waited_s,
                }
            )
        return _json(result)

    @app.get(
        "/v1/recent",
        summary="The latest assigning selections made through this replica (status page)",
        responses=documented(*AUTH, 500),
    )
    async def recent_selections(self, request: Request) -> dict[str, Any]:
        self._caller(request, "router")
        return {"selections": list(self.recent)}

    @app.post("/v1/scores", response_model=ScoresResult, responses=WRITE)
    async def scores(self, request: Request, req: ScoresRequest) -> Response:
        self._caller(request, "router")
        return _json(await self.router.scores(req))

    @app.get(
        "/v1/assignments/{assignment_id}",
        summary="Why an assignment went where it went (its decision record)",
        responses=AGENT_READ,
    )
    async def decision(self, request: Request, assignment_id: AssignmentPath) -> dict[str, Any]:
        self._caller(request, "router")
        return await self.client.explain(assignment_id)

    # ------------------------------------------------------------------ agents
    @app.get("/v1/agents/{agent_id}", response_model=AgentView, responses=AGENT_READ)
    async def agent(self, request: Request, agent_id: AgentPath) -> AgentView:
        self._caller(request, "router")
        return await self.client.agent(agent_id)

    @app.put(
        "/v1/agents/{agent_id}",
        response_model=AgentView,
        summary="Set agent metadata",
        responses=WRITE,
    )
    async def describe(
        self, request: Request, agent_id: AgentPath, body: DescribeRequest
    ) -> AgentView:
        self._writer(request, agent_id)
        return await self.client.describe(
            agent_id, max_concurrency=body.max_concurrency, labels=body.labels
        )

    @app.post(
        "/v1/agents/{agent_id}/complete",
        response_model=CompleteResult,
        summary="Report that an assigned task ended",
        responses=WRITE,
    )
    async def complete(
        self, request: Request, agent_id: AgentPath, body: CompleteRequest
    ) -> CompleteResult:
        self._caller(request, "router", "agent", agent_id=agent_id)
        return await self.client.complete(
            agent_id, body.assignment_id, ok=body.ok, duration_s=body.duration_s
        )

    @app.delete("/v1/agents/{agent_id}", status_code=204, responses=AGENT_READ)
    async def delete(self, request: Request, agent_id: AgentPath) -> Response:
        self._caller(request)
        if not await self.client.delete(agent_id):
            raise NotFound(
                f"agent {agent_id!r} is not known",
                [{"field": "agent_id", "reason": "unknown agent"}],
            )
        return Response(status_code=204)

    @app.get(
        "/v1/agents/{agent_id}/overload",
        response_model=OverloadPrediction,
        responses=AGENT_READ,
    )
    async def overload(
        self,
        request: Request,
        agent_id: AgentPath,
        horizon_s: float = Query(60.0, gt=0, le=3600),
        threshold: float = Query(0.8, gt=0, lt=1),
    ) -> OverloadPrediction:
        self._caller(request, "router")
        return await self.client.predict_overload(
            agent_id, horizon_s=horizon_s, threshold=threshold
        )

    @app.get("/v1/overloads", responses=READ)
    async def overloads(
        self,
        request: Request,
        horizon_s: float = Query(60.0, gt=0, le=3600),
        threshold: float = Query(0.8, gt=0, lt=1),
        min_probability: float = Query(0.5, ge=0, le=1),
        limit: int = Query(1000, ge=1, le=10_000, description="most overloads in this page"),
        cursor: str | None = Query(
            None, pattern=r"^[0-9,-]{1,20000}$", description="next_cursor of the last page"
        ),
    ) -> dict[str, Any]:
        self._caller(request, "router")
        params = PredictParams(
            horizon_s=horizon_s, threshold=threshold, min_probability=min_probability
        )
        out = await self.client.overloads_request(params, cursor, limit)
        out["overloads"] = [p.model_dump() for p in out["overloads"]]
        return out

    # ------------------------------------------------------------------ operations
    @app.get("/v1/stats", responses=documented(*AUTH, 500, 503))
    async def stats(self, request: Request) -> dict[str, Any]:
        self._caller(request)
        # The cluster's state, and this replica's flow-control queue (where the HTTP
        # selections that wait for headroom wait).
        return {**await self.client.stats(), "flow": self.router.flow.summary()}

    @app.get("/metrics", response_class=PlainTextResponse, responses=documented(*AUTH, 500, 503))
    async def metrics(self, request: Request) -> Response:
        if self.config.metrics_require_admin:
            self._caller(request)
        with contextlib.suppress(RippleError):  # this replica's latest counts first
            await self.client.push_metrics(self.source, self.router)
        body, content_type = render_metrics(await self.client.metrics_snapshot())
        return Response(body, media_type=content_type)

    @app.get("/ui", response_class=HTMLResponse, responses=documented(500))
    async def ui(self) -> HTMLResponse:
        """The status page: one self-contained HTML file (no CDN, no build step) that
        reads the JSON API with the token typed into it; the page itself holds no data."""
        return HTMLResponse(UI_PAGE)

    @app.get("/healthz", responses=documented(500))
    async def healthz(self) -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", responses=documented(500, 503))
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
            "storage_degraded": stats.get("storage_degraded", []),
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
    problem = exposure_problem(config, config.resolved_auth_secret())
    if problem is not None:
        raise ValueError(problem)
    ingress: Any = RippleIngress
    return ingress.options(**ingress_options(config.http)).bind(config.to_args())
