"""Bearer tokens: issue, verify, roles and agent scopes (no Ray, no HTTP)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from actors.core.errors import Forbidden, Unauthorized
from serve.auth import (
    ADMIN,
    MAX_AUTHORIZATION_BYTES,
    MAX_TOKEN_TTL_S,
    AgentQuota,
    Principal,
    authenticate,
    issue_token,
    require,
)

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


def test_all_agent_and_empty_patterns_need_saying() -> None:
    with pytest.raises(ValueError, match="empty"):
        issue_token(SECRET, "agent", [""])
    with pytest.raises(ValueError, match="all_agents"):
        issue_token(SECRET, "agent", ["*"])
    who = authenticate(bearer(issue_token(SECRET, "agent", ["*"], all_agents=True)), SECRET)
    assert who.may_write("anyone")


def test_the_server_caps_token_lifetime_and_header_size() -> None:
    now = int(time.time())
    long_lived = jwt.encode(
        {"role": "admin", "iat": now, "exp": now + MAX_TOKEN_TTL_S + 3600}, SECRET, "HS256"
    )
    with pytest.raises(Unauthorized, match="invalid token"):
        authenticate(bearer(long_lived), SECRET)
    with pytest.raises(Unauthorized, match="too long"):
        authenticate("Bearer " + "x" * (MAX_AUTHORIZATION_BYTES + 1), SECRET)


def test_a_prefix_token_writes_at_most_its_max_agents() -> None:
    quota = AgentQuota()
    prefix = authenticate(bearer(issue_token(SECRET, "agent", ["t:*"], max_agents=3)), SECRET)
    assert [quota.allows(prefix, f"t:{i}") for i in range(5)] == [True] * 3 + [False] * 2
    assert quota.allows(prefix, "t:1")  # one it already writes stays allowed
    assert not quota.allows(prefix, "other")  # not its pattern at all
    other = authenticate(bearer(issue_token(SECRET, "agent", ["t:*"], max_agents=3)), SECRET)
    assert other.token_id != prefix.token_id and quota.allows(other, "t:9")
    exact = authenticate(bearer(issue_token(SECRET, "agent", ["a", "b"])), SECRET)
    assert quota.allows(exact, "a") and quota.allows(exact, "b")
    assert quota.allows(ADMIN, "anything")
    small = AgentQuota(max_tokens=1)  # bounded: the least recently active token is forgotten
    small.allows(prefix, "t:1")
    small.allows(other, "t:1")
    assert list(small._seen) == [other.token_id]
