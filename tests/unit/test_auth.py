"""Bearer tokens: issue, verify, roles and agent scopes (no Ray, no HTTP)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from actors.core.errors import Forbidden, Unauthorized
from serve.auth import ADMIN, Principal, authenticate, issue_token, require

SECRET = "s" * 40


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_issue_and_verify_each_role() -> None:
    for role in ("admin", "router"):
        assert authenticate(bearer(issue_token(SECRET, role)), SECRET).role == role
    who = authenticate(bearer(issue_token(SECRET, "agent", ["gpt-a", "team:*"])), SECRET)
    assert who.role == "agent" and who.may_write("gpt-a") and who.may_write("team:x")
    assert not who.may_write("gpt-b") and not who.may_write("team-x") and not who.may_write(7)


def test_missing_malformed_expired_forged_and_alg_none_are_401() -> None:
    with pytest.raises(Unauthorized, match="required"):
        authenticate(None, SECRET)
    with pytest.raises(Unauthorized, match="malformed"):
        authenticate("Basic dXNlcjpwYXNz", SECRET)
    old = issue_token(SECRET, "admin", ttl_s=10, now=time.time() - 60)
    with pytest.raises(Unauthorized, match="expired"):
        authenticate(bearer(old), SECRET)
    forged = issue_token("t" * 40, "admin")
    with pytest.raises(Unauthorized, match="invalid"):
        authenticate(bearer(forged), SECRET)

    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'role': 'admin', 'exp': 2**40})}."
    with pytest.raises(Unauthorized):
        authenticate(bearer(unsigned), SECRET)
    no_exp = jwt.encode({"role": "admin"}, SECRET.encode(), algorithm="HS256")
    with pytest.raises(Unauthorized):
        authenticate(bearer(no_exp), SECRET)
    bad_role = jwt.encode({"role": "root", "exp": 2**40}, SECRET.encode(), algorithm="HS256")
    with pytest.raises(Unauthorized, match="invalid"):
        authenticate(bearer(bad_role), SECRET)


def test_no_secret_means_auth_off_and_short_secrets_are_refused() -> None:
    assert authenticate(None, None) is ADMIN
    with pytest.raises(ValueError, match="32 bytes"):
        issue_token("short", "admin")
    with pytest.raises(ValueError, match="agent"):
        issue_token(SECRET, "agent", [])


def test_route_roles_and_agent_scope() -> None:
    router, agent = Principal("router"), Principal("agent", ("gpt-a",))
    require(ADMIN)  # admin-only routes
    with pytest.raises(Forbidden, match="role"):
        require(router)
    require(router, "router")
    with pytest.raises(Forbidden, match="role"):
        require(agent, "router")
    require(agent, "agent", agent_id="gpt-a")
    with pytest.raises(Forbidden, match="agent"):
        require(agent, "agent", agent_id="gpt-b")
    with pytest.raises(Forbidden, match="role"):
        require(router, "agent", agent_id="gpt-a")
    require(router, "router", "agent", agent_id="gpt-b")  # complete: routers may, any id
