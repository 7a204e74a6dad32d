"""Authentication end to end: real Serve with a secret, every route with and without each
role, forged cross-agent writes, expired and forged tokens."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from serve.auth import issue_token

from .helpers import free_port

SECRET = "an-e2e-secret-that-is-long-enough-0123456789"
ROLES = ("admin", "router", "agent", None)

# route -> (method, path, json body or None, roles allowed). The agent token below may
# write "own-1" only; the routes that name an agent use "own-1".
SIG = {"signal_type": "LOAD", "value": 0.3}
ROUTES: list[tuple[str, str, Any, set[str | None]]] = [
    ("POST", "/v1/signals", {"signals": [{"agent_id": "own-1", **SIG}]}, {"admin", "agent"}),
    ("POST", "/v1/agents/own-1/signals", SIG, {"admin", "agent"}),
    ("PUT", "/v1/agents/own-1", {"max_concurrency": 4}, {"admin", "agent"}),
    ("POST", "/v1/select", {"candidates": ["own-1"], "assign": False}, {"admin", "router"}),
    ("POST", "/v1/agents/own-1/complete", {}, {"admin", "router", "agent"}),
    ("POST", "/v1/scores", {"agent_ids": ["own-1"]}, {"admin", "router"}),
    ("GET", "/v1/agents/own-1", None, {"admin", "router"}),
    ("GET", "/v1/assignments/ffffffff-1", None, {"admin", "router"}),
    ("GET", "/v1/agents/own-1/overload", None, {"admin", "router"}),
    ("GET", "/v1/overloads", None, {"admin", "router"}),
    ("GET", "/v1/stats", None, {"admin"}),
    ("DELETE", "/v1/agents/own-1", None, {"admin"}),
    ("GET", "/metrics", None, {"admin", "router", "agent", None}),
    ("GET", "/healthz", None, {"admin", "router", "agent", None}),
    ("GET", "/readyz", None, {"admin", "router", "agent", None}),
]


@pytest.fixture(scope="module")
def secured(ray_session, namespace) -> Iterator[str]:
    from ray import serve

    import actors
    from serve.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {"namespace": namespace, "num_shards": 2, "auth_secret": SECRET}
    serve.run(build_app(args), name="e2e-auth", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    actors.teardown(namespace)


def headers(role: str | None, agents: tuple[str, ...] = ("own-1",)) -> dict[str, str]:
    if role is None:
        return {}
    token = issue_token(SECRET, role, agents if role == "agent" else ())  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "method,path,body,allowed", ROUTES, ids=[r[1] + " " + r[0] for r in ROUTES]
)
def test_every_route_with_and_without_each_role(secured, method, path, body, allowed) -> None:
    with httpx.Client(base_url=secured, timeout=30) as http:
        for role in ROLES:
            if path == "/v1/agents/own-1" and method == "DELETE" and role == "admin":
                continue  # run last below: it deletes the agent the others use
            r = http.request(method, path, json=body, headers=headers(role))
            if role in allowed:
                assert r.status_code not in (401, 403), (role, r.status_code, r.text)
            elif role is None:
                assert r.status_code == 401, (role, r.text)
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert r.json()["error"]["request_id"] == r.headers["X-Request-ID"]
            else:
                assert r.status_code == 403, (role, r.status_code, r.text)
                assert r.json()["error"]["code"] == "forbidden"


def test_agent_tokens_write_only_their_own_agents(secured) -> None:
    with httpx.Client(base_url=secured, timeout=30) as http:
        mine = headers("agent", ("own-*",))
        batch = {
            "signals": [
                {"agent_id": "own-2", **SIG},
                {"agent_id": "someone-else", **SIG},
                {"agent_id": "own-3", "signal_type": "LOAD", "value": 7},
            ]
        }
        r = http.post("/v1/signals", json=batch, headers=mine)
        assert r.status_code == 207, r.text
        got = r.json()
        assert got["accepted"] == 1
        assert {x["index"]: x["field"] for x in got["rejected"]} == {1: "agent_id", 2: "value"}
        assert "forbidden" in got["rejected"][0]["error"]
        admin = headers("admin")
        assert http.get("/v1/agents/someone-else", headers=admin).status_code == 404  # not applied
        only_forged = {"signals": [{"agent_id": "victim", **SIG}]}
        r = http.post("/v1/signals", json=only_forged, headers=mine)
        assert r.status_code == 403 and r.json()["accepted"] == 0
        assert http.get("/v1/agents/victim", headers=admin).status_code == 404
        assert http.put("/v1/agents/victim", json={}, headers=mine).status_code == 403
        assert http.post("/v1/agents/victim/complete", json={}, headers=mine).status_code == 403


def test_expired_forged_and_unsigned_tokens_are_401(secured) -> None:
    import time

    with httpx.Client(base_url=secured, timeout=30) as http:
        expired = issue_token(SECRET, "admin", ttl_s=5, now=time.time() - 60)
        forged = issue_token("x" * 40, "admin")
        for value in (f"Bearer {expired}", f"Bearer {forged}", "Bearer not.a.jwt", "Bearer"):
            r = http.get("/v1/stats", headers={"Authorization": value})
            assert r.status_code == 401, (value, r.text)
            assert r.json()["error"]["code"] == "unauthorized"


def test_authentication_comes_before_body_validation(secured) -> None:
    """An anonymous caller learns nothing about the schema: 401, not 422."""
    with httpx.Client(base_url=secured, timeout=30) as http:
        for method, path, body in (
            ("POST", "/v1/select", {"k": "not-a-number", "nonsense": 1}),
            ("PUT", "/v1/agents/own-1", {"max_concurrency": -5}),
            ("POST", "/v1/scores", {"agent_ids": "x"}),
            ("POST", "/v1/agents/own-1/complete", {"duration_s": "slow"}),
        ):
            r = http.request(method, path, json=body)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = http.post("/v1/select", json={"k": "x"}, headers=headers("router"))
        assert r.status_code == 422  # a caller with a valid token hears what is wrong
