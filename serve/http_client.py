"""A small httpx client for the HTTP API, sync and async, with a batching helper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from actors.client.buffer import SignalBuffer
from actors.core.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RippleError,
    Unauthorized,
    Unavailable,
)

_BY_STATUS: dict[int, type[RippleError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
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


def _select_body(
    candidates: Sequence[str] | None, k: int, weights: dict[str, float] | None, **options: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"k": k, **options}
    if candidates is not None:
        body["candidates"] = list(candidates)
    if weights is not None:
        body["weights"] = weights
    return body


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

    def _json(self, method: str, url: str, **kw: Any) -> Any:
        r = self.http.request(method, url, **kw)
        _raise_for(r)
        return r.json() if r.content else None

    def register(self, signals: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Per-item results: a partly (207) or wholly (422) rejected batch returns, not raises."""
        result: dict[str, Any] = self._json("POST", "/v1/signals", json={"signals": list(signals)})
        return result

    def register_one(self, agent_id: str, signal: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._json("POST", f"/v1/agents/{agent_id}/signals", json=signal)
        return result

    def select(
        self,
        candidates: Sequence[str] | None = None,
        k: int = 1,
        weights: dict[str, float] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "POST", "/v1/select", json=_select_body(candidates, k, weights, **options)
        )
        return result

    def scores(
        self, agent_ids: Sequence[str], weights: dict[str, float] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"agent_ids": list(agent_ids)}
        if weights:
            body["weights"] = weights
        result: dict[str, Any] = self._json("POST", "/v1/scores", json=body)
        return result

    def agent(self, agent_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/v1/agents/{agent_id}")
        return result

    def delete(self, agent_id: str) -> None:
        self._json("DELETE", f"/v1/agents/{agent_id}")

    def describe(self, agent_id: str, **metadata: Any) -> dict[str, Any]:
        """``max_concurrency`` and/or ``labels``; omitted fields are kept."""
        result: dict[str, Any] = self._json("PUT", f"/v1/agents/{agent_id}", json=metadata)
        return result

    def complete(self, agent_id: str, assignment_id: str | None = None, **kw: Any) -> bool:
        """A task ended (``ok``, ``duration_s`` optional); True if it was in flight."""
        body = {"assignment_id": assignment_id, **kw}
        result: dict[str, Any] = self._json("POST", f"/v1/agents/{agent_id}/complete", json=body)
        return bool(result["released"])

    def predict_overload(
        self, agent_id: str, horizon_s: float = 60, threshold: float = 0.8
    ) -> dict[str, Any]:
        params = {"horizon_s": horizon_s, "threshold": threshold}
        result: dict[str, Any] = self._json("GET", f"/v1/agents/{agent_id}/overload", params=params)
        return result

    def overloads(self, **params: float) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/v1/overloads", params=params)
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/v1/stats")
        return result

    def ready(self) -> bool:
        return self.http.get("/readyz").status_code == 200

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

        return SignalBuffer(send, max_batch, flush_interval_s, max_pending)


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

    async def _json(self, method: str, url: str, **kw: Any) -> Any:
        r = await self.http.request(method, url, **kw)
        _raise_for(r)
        return r.json() if r.content else None

    async def register(self, signals: Sequence[dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = await self._json(
            "POST", "/v1/signals", json={"signals": list(signals)}
        )
        return result

    async def register_one(self, agent_id: str, signal: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._json(
            "POST", f"/v1/agents/{agent_id}/signals", json=signal
        )
        return result

    async def select(
        self,
        candidates: Sequence[str] | None = None,
        k: int = 1,
        weights: dict[str, float] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        body = _select_body(candidates, k, weights, **options)
        result: dict[str, Any] = await self._json("POST", "/v1/select", json=body)
        return result

    async def agent(self, agent_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/v1/agents/{agent_id}")
        return result

    async def describe(self, agent_id: str, **metadata: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("PUT", f"/v1/agents/{agent_id}", json=metadata)
        return result

    async def complete(self, agent_id: str, assignment_id: str | None = None, **kw: Any) -> bool:
        body = {"assignment_id": assignment_id, **kw}
        result: dict[str, Any] = await self._json(
            "POST", f"/v1/agents/{agent_id}/complete", json=body
        )
        return bool(result["released"])
