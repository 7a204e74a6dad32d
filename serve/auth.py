"""Who may call what (DESIGN §11): JWT bearer tokens, HS256 with the service secret.

A token carries ``role`` (``admin``, ``router`` or ``agent``), for agents the ``agents`` it
may write (exact ids, or a prefix ending in ``*``), and ``exp``. ``ripple token`` issues
them. With no secret configured, authentication is off and every caller is an admin (and
``ripple up`` refuses to listen beyond loopback unless told ``--insecure``).

Verification is PyJWT's, with the algorithm pinned to HS256: ``alg: none`` and tokens
signed with another key or algorithm are rejected, and ``exp`` is required.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import jwt

from actors.core.errors import Forbidden, Unauthorized

Role = Literal["admin", "router", "agent"]
ROLES: tuple[Role, ...] = ("admin", "router", "agent")
ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32
MAX_TOKEN_TTL_S = 366 * 86_400
# A longer Authorization header is refused unread (a token here is a few hundred bytes).
MAX_AUTHORIZATION_BYTES = 8192
# Distinct agents one ``prefix*`` token may write through one replica (the ``max_agents``
# claim lowers or raises it, up to the ceiling): a leaked agent token cannot create
# agents without end. Exact-id tokens are bounded by their list.
DEFAULT_PREFIX_MAX_AGENTS = 1000
MAX_PREFIX_MAX_AGENTS = 100_000


@dataclass(frozen=True)
class Principal:
    role: Role
    agents: tuple[str, ...] = ()  # for agents: exact ids or "prefix*"
    subject: str = ""
    token_id: str = ""  # a digest of the token: what the agent quota counts by
    max_agents: int = DEFAULT_PREFIX_MAX_AGENTS

    @property
    def has_prefix(self) -> bool:
        return self.role == "agent" and any(p.endswith("*") for p in self.agents)

    def may_write(self, agent_id: object) -> bool:
        """Whether this caller may write signals, metadata or completions for the id."""
        if self.role == "admin":
            return True
        if self.role != "agent" or not isinstance(agent_id, str):
            return False
        return any(
            agent_id.startswith(p[:-1]) if p.endswith("*") else agent_id == p for p in self.agents
        )


ADMIN = Principal("admin", subject="auth disabled")


def check_secret(secret: str) -> bytes:
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"the auth secret must be at least {MIN_SECRET_BYTES} bytes")
    return key


def issue_token(
    secret: str,
    role: Role,
    agents: Iterable[str] = (),
    ttl_s: float = 86_400.0,
    subject: str = "",
    now: float | None = None,
    all_agents: bool = False,
    max_agents: int | None = None,
) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    agents = list(agents)
    if role == "agent" and not agents:
        raise ValueError("an agent token needs at least one agent id or prefix*")
    if any(not a.strip() for a in agents):
        raise ValueError("an empty agent id or prefix is not allowed")
    if "*" in agents and not all_agents:
        raise ValueError("'*' lets the token write every agent: say so with all_agents")
    if max_agents is not None and not 1 <= max_agents <= MAX_PREFIX_MAX_AGENTS:
        raise ValueError(f"max_agents must be in [1, {MAX_PREFIX_MAX_AGENTS}]")
    if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
        raise ValueError(f"ttl_s must be in (0, {MAX_TOKEN_TTL_S}]")
    issued = time.time() if now is None else now
    claims: dict[str, object] = {
        "role": role,
        "iat": int(issued),
        "exp": int(issued + ttl_s),
        "sub": subject or role,
        "jti": secrets.token_hex(8),  # two tokens issued alike are still two quotas
    }
    if agents:
        claims["agents"] = agents
    if max_agents is not None:
        claims["max_agents"] = max_agents
    return jwt.encode(claims, check_secret(secret), algorithm=ALGORITHM)


def authenticate(authorization: str | None, secret: str | None) -> Principal:
    """The caller of a request, from its ``Authorization`` header."""
    if secret is None:
        return ADMIN
    if not authorization:
        raise Unauthorized(
            "a bearer token is required",
            [{"field": "Authorization", "reason": "missing; send 'Bearer <token>'"}],
        )
    if len(authorization) > MAX_AUTHORIZATION_BYTES:
        raise Unauthorized(
            "Authorization header too long",
            [{"field": "Authorization", "reason": f"longer than {MAX_AUTHORIZATION_BYTES} bytes"}],
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "malformed Authorization header",
            [{"field": "Authorization", "reason": "expected 'Bearer <token>'"}],
        )
    try:
        claims = jwt.decode(
            token.strip(),
            check_secret(secret),
            algorithms=[ALGORITHM],
            options={"require": ["exp", "role"]},
        )
        lifetime = float(claims["exp"]) - float(claims.get("iat", time.time()))
        if float(claims["exp"]) - time.time() > MAX_TOKEN_TTL_S or lifetime > MAX_TOKEN_TTL_S:
            raise jwt.InvalidTokenError(f"lifetime longer than {MAX_TOKEN_TTL_S} s")
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized(
            "token expired", [{"field": "Authorization", "reason": "exp is in the past"}]
        ) from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(
            "invalid token", [{"field": "Authorization", "reason": str(exc)}]
        ) from exc
    role, agents = claims.get("role"), claims.get("agents", [])
    if role not in ROLES:
        raise Unauthorized("invalid token", [{"field": "role", "reason": f"unknown role {role!r}"}])
    if not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
        raise Unauthorized("invalid token", [{"field": "agents", "reason": "must be strings"}])
    max_agents = claims.get("max_agents", DEFAULT_PREFIX_MAX_AGENTS)
    if not isinstance(max_agents, int) or not 1 <= max_agents <= MAX_PREFIX_MAX_AGENTS:
        raise Unauthorized(
            "invalid token", [{"field": "max_agents", "reason": "must be an integer in range"}]
        )
    digest = hashlib.sha256(token.strip().encode()).hexdigest()[:32]
    return Principal(role, tuple(agents), str(claims.get("sub", "")), digest, max_agents)


class AgentQuota:
    """How many distinct agents each ``prefix*`` token wrote through this replica; past
    its ``max_agents`` a new id is refused (``forbidden``). Bounded: the most recently
    active ``max_tokens`` tokens are tracked. Per replica: with R replicas a token may
    reach R times its quota (the README says so)."""

    def __init__(self, max_tokens: int = 1024) -> None:
        self.max_tokens = max_tokens
        self._seen: OrderedDict[str, set[str]] = OrderedDict()

    def allows(self, principal: Principal, agent_id: object) -> bool:
        """``may_write`` and, for a prefix token, within its quota (counting this id)."""
        if not principal.may_write(agent_id):
            return False
        if not principal.has_prefix or principal.role == "admin":
            return True
        seen = self._seen.get(principal.token_id)
        if seen is None:
            seen = self._seen[principal.token_id] = set()
            if len(self._seen) > self.max_tokens:
                self._seen.popitem(last=False)
        self._seen.move_to_end(principal.token_id)
        if agent_id in seen:
            return True
        if len(seen) >= principal.max_agents:
            return False
        seen.add(str(agent_id))
        return True


def require(principal: Principal, *roles: Role, agent_id: str | None = None) -> None:
    """Allow the request when the caller has one of ``roles``; an agent only for its own
    ``agent_id`` when the route names one."""
    if principal.role == "admin" or (principal.role in roles and principal.role != "agent"):
        return
    if principal.role == "agent" and "agent" in roles:
        if agent_id is None or principal.may_write(agent_id):
            return
        raise Forbidden(
            f"this token may not act for agent {agent_id!r}",
            [{"field": "agent_id", "reason": "not one of the token's agents"}],
        )
    raise Forbidden(
        f"role {principal.role!r} may not call this route",
        [{"field": "role", "reason": f"needs one of: {', '.join(('admin', *roles))}"}],
    )
