"""Who may reach the API at all, checked before a route runs (DESIGN §11).

- With authentication on, every ``/v1/`` request's bearer token is verified here, before
  FastAPI validates its body: an anonymous caller gets 401 and learns nothing of the
  schema. The route then checks the role and the agent against the principal found here.
- With authentication off (loopback only), what a browser could forge is refused: a write
  whose content type is not JSON (415; a cross-site form or ``text/plain`` post needs no
  preflight) and a ``Host`` that is neither a loopback name nor the configured host (421;
  DNS rebinding would otherwise reach the API from a web page).
- ``exposure_problem``: the one rule every way of starting the API applies (``ripple up``,
  the Serve config): no unauthenticated listener beyond loopback unless ``insecure``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from actors.core.config import ServiceConfig
from actors.core.errors import MisdirectedRequest, RippleError, UnsupportedMediaType
from serve.auth import authenticate
from serve.errors import error_response, request_id_var

LOOPBACK = ("127.0.0.1", "localhost", "::1")
_WRITES = (b"POST", b"PUT", b"PATCH")


def exposure_problem(config: ServiceConfig, secret: str | None) -> str | None:
    """Why this configuration must not start (None: it may)."""
    if secret is None and config.http.host not in LOOPBACK and not config.http.insecure:
        return (
            f"refusing to listen on {config.http.host} without authentication: set "
            "RIPPLE_AUTH_SECRET (or auth_secret_file), or set http.insecure "
            "(ripple up --insecure)"
        )
    return None


@dataclass(frozen=True)
class Gate:
    """What the guard needs to know, set once per replica."""

    secret: str | None = None
    host: str = "127.0.0.1"

    @functools.cached_property
    def allowed_hosts(self) -> frozenset[str]:
        hosts = set(LOOPBACK)
        if self.host not in ("0.0.0.0", "::"):
            hosts.add(self.host.lower())
        return frozenset(hosts)


def _host_name(raw: bytes) -> str:
    host = raw.decode("latin-1").strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware; runs inside ``serve.errors.RequestContext`` (the request id is set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The replica's gate is on the application's state (Starlette puts the app in
        # the scope before any middleware runs); its routes tell a 405 from a write.
        top = scope["app"]
        try:
            self._check(scope, getattr(top.state, "gate", Gate()), top.router.routes)
        except RippleError as err:
            await error_response(err, request_id_var.get())(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _routed(scope: Scope, routes: Sequence[Any]) -> bool:
        return any(route.matches(scope)[0] == Match.FULL for route in routes)

    def _check(self, scope: Scope, gate: Gate, routes: Sequence[Any]) -> None:
        headers = dict(scope.get("headers") or [])
        if gate.secret is not None:
            if scope["path"].startswith("/v1/"):
                auth = headers.get(b"authorization")
                principal = authenticate(
                    None if auth is None else auth.decode("latin-1"), gate.secret
                )
                scope.setdefault("state", {})["principal"] = principal
            return
        host = _host_name(headers.get(b"host", b""))
        if host not in gate.allowed_hosts:
            raise MisdirectedRequest(
                f"host {host!r} is not served here",
                [{"field": "Host", "reason": "must be a loopback name or the configured host"}],
            )
        if scope["method"].encode() in _WRITES and self._routed(scope, routes):
            kind = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
            if kind != b"application/json" and not kind.endswith(b"+json"):
                raise UnsupportedMediaType(
                    "writes must be JSON",
                    [{"field": "Content-Type", "reason": "expected application/json"}],
                )
