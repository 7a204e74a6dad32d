"""A small httpx client for the HTTP API, sync and async, with a batching buffer.

Each method is written once, as a request (``_Req``: method, path, body, how to read the
answer); the sync client sends it with ``httpx.Client``, the async one with
``httpx.AsyncClient``. That is the only difference between them.

Errors come back typed (``actors.core.errors``): a 503 is ``Unavailable`` (retryable, its
details say which items were not applied), a 4xx the caller's mistake. The buffer retries
only what is retryable, keeps the order, and never drops anything silently.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec

import httpx

from actors.client.buffer import SignalBuffer
from actors.core.errors import (
    Forbidden,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RippleError,
    Unauthorized,
    Unavailable,
)

P = ParamSpec("P")

_BY_STATUS: dict[int, type[RippleError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    422: InvalidInput,
    503: Unavailable,
}


def _raise_for(response: httpx.Response) -> None:
    """Turn an error response back into the service's typed error."""
    if response.status_code < 400 or (
        response.status_code in (403, 422) and response.text[:64].startswith('{"accepted"')
    ):
        return  # an ingest answer: per-item results, not an error of the whole call
    try:
        err = response.json().get("error", {})
    except ValueError:
        err = {}
    cls = _BY_STATUS.get(response.status_code, RippleError)
    raise cls(err.get("message", f"HTTP {response.status_code}"), err.get("details"))


def retryable(exc: BaseException) -> bool:
    """What a retry can fix: an outage or overload (503), or the network."""
    return isinstance(exc, (Unavailable, httpx.TransportError, ConnectionError, TimeoutError))


def _identity(body: Any) -> Any:
    return body


@dataclass
class _Req:
    method: str
    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    read: Callable[[Any], Any] = _identity  # the JSON answer -> the method's result
    check: bool = True  # raise for an error status


def _result(r: httpx.Response, req: _Req) -> Any:
    if req.check:
        _raise_for(r)
    return req.read(r.json() if r.content else None)


class _Calls:
    """The requests of every method, shared by both clients."""

    @staticmethod
    def register(signals: Sequence[dict[str, Any]]) -> _Req:
        """Per-item results: a partly (207) or wholly (422) rejected batch returns, not raises."""
        return _Req("POST", "/v1/signals", {"json": {"signals": list(signals)}})

    @staticmethod
    def register_one(agent_id: str, signal: dict[str, Any]) -> _Req:
        return _Req("POST", f"/v1/agents/{agent_id}/signals", {"json": signal})

    @staticmethod
    def select(
        candidates: Sequence[str] | None = None,
        k: int = 1,
        weights: dict[str, float] | None = None,
        **options: Any,
    ) -> _Req:
        body: dict[str, Any] = {"k": k, **options}
        if candidates is not None:
            body["candidates"] = list(candidates)
        if weights is not None:
            body["weights"] = weights
        return _Req("POST", "/v1/select", {"json": body})

    @staticmethod
    def scores(agent_ids: Sequence[str], weights: dict[str, float] | None = None) -> _Req:
        body: dict[str, Any] = {"agent_ids": list(agent_ids)}
        if weights:
            body["weights"] = weights
        return _Req("POST", "/v1/scores", {"json": body})

    @staticmethod
    def agent(agent_id: str) -> _Req:
        return _Req("GET", f"/v1/agents/{agent_id}")

    @staticmethod
    def delete(agent_id: str) -> _Req:
        return _Req("DELETE", f"/v1/agents/{agent_id}", read=lambda _: None)

    @staticmethod
    def describe(agent_id: str, **metadata: Any) -> _Req:
        """``max_concurrency`` and/or ``labels``; omitted fields are kept."""
        return _Req("PUT", f"/v1/agents/{agent_id}", {"json": metadata})

    @staticmethod
    def complete(agent_id: str, assignment_id: str | None = None, **kw: Any) -> _Req:
        """A task ended (``ok``, ``duration_s`` optional); True if it was in flight."""
        body = {"assignment_id": assignment_id, **kw}
        return _Req(
            "POST",
            f"/v1/agents/{agent_id}/complete",
            {"json": body},
            read=lambda b: bool(b["released"]),
        )

    @staticmethod
    def predict_overload(agent_id: str, horizon_s: float = 60, threshold: float = 0.8) -> _Req:
        params = {"horizon_s": horizon_s, "threshold": threshold}
        return _Req("GET", f"/v1/agents/{agent_id}/overload", {"params": params})

    @staticmethod
    def overloads(**params: Any) -> _Req:
        """One page (``limit``, ``cursor``); its ``next_cursor`` asks for the next."""
        return _Req(
            "GET", "/v1/overloads", {"params": {k: v for k, v in params.items() if v is not None}}
        )

    @staticmethod
    def stats() -> _Req:
        return _Req("GET", "/v1/stats")

    @staticmethod
    def ready() -> _Req:
        return _Req("GET", "/readyz", read=lambda b: bool(b and b.get("ready")), check=False)


def _sync(spec: Callable[P, _Req]) -> Callable[Concatenate[Any, P], Any]:
    def method(self: RippleHTTPClient, *args: P.args, **kwargs: P.kwargs) -> Any:
        req = spec(*args, **kwargs)
        return _result(self.http.request(req.method, req.path, **req.kwargs), req)

    method.__doc__ = spec.__doc__
    return method


def _async(
    spec: Callable[P, _Req],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, Any]]:
    async def method(self: AsyncRippleHTTPClient, *args: P.args, **kwargs: P.kwargs) -> Any:
        req = spec(*args, **kwargs)
        return _result(await self.http.request(req.method, req.path, **req.kwargs), req)

    method.__doc__ = spec.__doc__
    return method


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class RippleHTTPClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        timeout_s: float = 10.0,
        token: str | None = None,
    ) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=_headers(token))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RippleHTTPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    register = _sync(_Calls.register)
    register_one = _sync(_Calls.register_one)
    select = _sync(_Calls.select)
    scores = _sync(_Calls.scores)
    agent = _sync(_Calls.agent)
    delete = _sync(_Calls.delete)
    describe = _sync(_Calls.describe)
    complete = _sync(_Calls.complete)
    predict_overload = _sync(_Calls.predict_overload)
    overloads = _sync(_Calls.overloads)
    stats = _sync(_Calls.stats)
    ready = _sync(_Calls.ready)

    def metrics_text(self) -> str:
        r = self.http.get("/metrics")
        _raise_for(r)
        return r.text

    def buffer(
        self, max_batch: int = 1000, flush_interval_s: float = 0.05, max_pending: int = 100_000
    ) -> SignalBuffer:
        def send(batch: list[Any]) -> tuple[int, list[Any]]:
            result = self.register(batch)
            return result["accepted"], result["rejected"]

        return SignalBuffer(send, max_batch, flush_interval_s, max_pending, retryable)


class AsyncRippleHTTPClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        timeout_s: float = 10.0,
        max_connections: int = 64,
        token: str | None = None,
    ) -> None:
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self.http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s, limits=limits, headers=_headers(token)
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncRippleHTTPClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    register = _async(_Calls.register)
    register_one = _async(_Calls.register_one)
    select = _async(_Calls.select)
    scores = _async(_Calls.scores)
    agent = _async(_Calls.agent)
    delete = _async(_Calls.delete)
    describe = _async(_Calls.describe)
    complete = _async(_Calls.complete)
    predict_overload = _async(_Calls.predict_overload)
    overloads = _async(_Calls.overloads)
    stats = _async(_Calls.stats)
    ready = _async(_Calls.ready)

    async def metrics_text(self) -> str:
        r = await self.http.get("/metrics")
        _raise_for(r)
        return r.text
