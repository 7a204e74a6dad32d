"""A middleware for Serve's HTTP proxy: a caller's ``X-Request-ID`` is kept only when it is
a short safe token, else replaced, before the proxy reads it. The proxy echoes the id it
read in every response and hands it to the replica, so the header and the error body
carry the same id. Serve loads it from ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=
serve.proxy_middleware.middlewares`` in the proxy's environment: ``ripple up`` sets it for
the cluster it embeds; on a cluster of one's own, set it where Ray starts (cluster.yaml
does)."""

from __future__ import annotations

import uuid

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from serve.errors import SAFE_REQUEST_ID

CALLBACK = "serve.proxy_middleware.middlewares"


class SafeRequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope.get("headers") or []
            given = [v for k, v in headers if k.lower() == b"x-request-id"]
            if given and not SAFE_REQUEST_ID.fullmatch(given[0].decode("latin-1")):
                kept = [(k, v) for k, v in headers if k.lower() != b"x-request-id"]
                kept.append((b"x-request-id", uuid.uuid4().hex.encode()))
                scope = {**scope, "headers": kept}
        await self.app(scope, receive, send)


def middlewares() -> list[Middleware]:
    return [Middleware(SafeRequestId)]
