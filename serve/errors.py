"""Every answer that is not a success, in one place: one JSON body, one status per class.

- A caller's mistake is a 4xx naming the field (``InvalidInput``, ``NotFound``, an unknown
  route, a wrong method, ``Unauthorized``, ``Forbidden``, ``PayloadTooLarge``).
- An outage is a 503 with ``Retry-After`` (``Unavailable``), and nothing was applied (or the
  body says exactly what was).
- A bug is a 500 with the request id; its traceback goes to the log under that id, never
  to the caller.

Every response carries ``X-Request-ID`` (the caller's, when it sends a sane one), and
every error body repeats it, so a report from a user finds its log lines.
"""

from __future__ import annotations

import contextvars
import logging
import math
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors.core.errors import (
    InternalError,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RippleError,
    Saturated,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = "X-Request-ID"
RETRY_AFTER_S = 1
# A caller's X-Request-ID is kept only when it is a short safe token (it goes into logs).
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record, so every line of a request carries it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def error_response(err: RippleError, request_id: str) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(err, Unavailable):
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if isinstance(err, Saturated):  # whole seconds, never 0: when a slot should free
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after_s)))
    if isinstance(err, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="ripple"'
    body = {"error": {**err.to_dict(), "request_id": request_id}}
    return JSONResponse(body, status_code=err.http_status, headers=headers)


def _rid(request: Request) -> str:
    return getattr(request.state, "request_id", None) or request_id_var.get()


def _ripple_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RippleError)
    if err.http_status >= 500 and not isinstance(err, Unavailable):
        log.error("request %s failed: %s", _rid(request), err)
    return error_response(err, _rid(request))


def _validation_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestValidationError)
    details = [
        {
            "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
            "reason": e.get("msg", ""),
        }
        for e in err.errors()
    ]
    return error_response(InvalidInput("request failed validation", details), _rid(request))


def _http_error(request: Request, err: Exception) -> JSONResponse:
    """Starlette's own answers (unknown route, wrong method) in our format."""
    assert isinstance(err, StarletteHTTPException)
    path = request.url.path
    mapped: RippleError
    too_big = getattr(request.state, "body_too_large", None)
    if too_big is not None:
        # FastAPI reads a model's body itself and turns any error while reading it into
        # a 400 "error parsing the body": the limit that stopped the stream says 413.
        mapped = too_big
    elif err.status_code == 404:
        mapped = NotFound(f"no route {path}", [{"field": "path", "reason": "unknown route"}])
    elif err.status_code == 405:
        mapped = MethodNotAllowed(
            f"{request.method} is not allowed on {path}",
            [{"field": "method", "reason": f"{request.method} not allowed"}],
        )
    else:
        mapped = RippleError(str(err.detail))
        mapped.http_status = err.status_code
        mapped.code = "http_error"
    response = error_response(mapped, _rid(request))
    if err.headers:
        response.headers.update(err.headers)
    if err.status_code == 405:
        # Starlette names the methods of the first route matching the path only; every
        # route with this path counts (GET, PUT and DELETE share /v1/agents/{id}).
        response.headers["Allow"] = ", ".join(_allowed_methods(request))
    return response


def _allowed_methods(request: Request) -> list[str]:
    path, root = request.scope["path"], request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    methods: set[str] = set()
    for route in request.app.router.routes:
        regex, served = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and served and regex.match(path):
            methods |= set(served)
    return sorted(methods)


def _bug(request: Request, err: Exception) -> JSONResponse:
    rid = _rid(request)
    log.error("request %s: internal error", rid, exc_info=err)
    return error_response(
        InternalError(f"internal error; quote request id {rid} when reporting it"), rid
    )


class RequestContext:
    """ASGI middleware: a request id per request, and the body limit counted while the
    body streams in (a chunked body has no Content-Length to trust)."""

    def __init__(self, app: ASGIApp, default_max_body_bytes: int) -> None:
        self.app = app
        self.default_max_body_bytes = default_max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)
        # The replica's setting, kept on the application's state (Starlette puts the app
        # in the scope before any middleware runs).
        limit = getattr(scope["app"].state, "max_body_bytes", self.default_max_body_bytes)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_big = PayloadTooLarge(
                        f"body exceeds {limit} bytes",
                        [{"field": "body", "reason": f"more than {limit} bytes"}],
                    )
                    scope["state"]["body_too_large"] = too_big
                    raise too_big
            return message

        async def with_id(message: Message) -> None:
            # Serve's proxy echoes the X-Request-ID it saw (``serve.proxy_middleware``
            # makes that one safe first); when ours differs, ours is the one we send.
            if message["type"] == "http.response.start" and rid != given:
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            declared = dict(scope.get("headers") or []).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > limit:
                too_big = PayloadTooLarge(
                    f"body of {int(declared)} bytes exceeds {limit}",
                    [{"field": "body", "reason": f"more than {limit} bytes"}],
                )
                await error_response(too_big, rid)(scope, receive, with_id)
                return
            await self.app(scope, counted, with_id)
        finally:
            request_id_var.reset(token)


def install(app: FastAPI, default_max_body_bytes: int) -> None:
    """Register every handler and the middleware on ``app``. The body limit in force is
    ``app.state.max_body_bytes`` (set by the replica from its config), else the default."""
    app.add_exception_handler(RippleError, _ripple_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _bug)
    app.add_middleware(RequestContext, default_max_body_bytes=default_max_body_bytes)


class ErrorDetail(BaseModel):
    field: str | None = None
    reason: str = ""
    # In a batch's 503: the item's position and what became of it (not_applied: resend;
    # unknown: its shard missed the deadline; rejected: fix it). Decide on these, not on
    # the words of ``reason``.
    index: int | None = None
    outcome: str | None = None


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)
    request_id: str
    # A 429 (``saturated``): why (saturated: nothing freed within wait_s; shed: evicted
    # from a full queue), when a slot is predicted to free, and how long it waited.
    reason: str | None = None
    retry_after_s: float | None = None
    waited_s: float | None = None


class ErrorBody(BaseModel):
    error: ErrorInfo


_WORDS = {
    400: "Malformed request",
    401: "Missing, malformed or expired bearer token",
    403: "The token's role or agents do not allow this",
    404: "Unknown agent or route",
    405: "Method not allowed",
    413: "Body too large",
    415: "A write whose body is not JSON (with authentication off)",
    421: "A Host header this service does not answer for (with authentication off)",
    429: "Saturated: no agent had headroom within wait_s, or the request was shed from a "
    "full queue; nothing was assigned (Retry-After: when a slot should free)",
    422: "A field failed validation (the body names it)",
    500: "Internal error (quote the request id)",
    503: "A shard is unavailable or overloaded; nothing was applied unless the body says so",
}


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: every error status it can answer, with the body."""
    # Any route answers 421 to a foreign Host while authentication is off.
    return {c: {"model": ErrorBody, "description": _WORDS[c]} for c in (*codes, 421)}
