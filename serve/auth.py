"""Who may call what (DESIGN §11): JWT bearer tokens, HS256 with the service secret.

A token carries ``role`` (``admin``, ``router`` or ``agent``), for agents the ``agents`` it
may write (exact ids, or a prefix ending in ``*``), and ``exp``. ``ripple token`` issues
them. With no secret configured, authentication is off and every caller is an admin (and
``ripple up`` refuses to listen beyond loopback unless told ``--insecure``).

Verification is PyJWT's, with the algorithm pinned to HS256: ``alg: none`` and tokens
signed with another key or algorithm are rejected, and ``exp`` is required.
"""

from __future__ import annotations

import time
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


@dataclass(frozen=True)
class Principal:
    role: Role
    agents: tuple[str, ...] = ()  # for agents: exact ids or "prefix*"
    subject: str = ""

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
) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    agents = list(agents)
    if role == "agent" and not agents:
        raise ValueError("an agent token needs at least one agent id or prefix*")
    if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
        raise ValueError(f"ttl_s must be in (0, {MAX_TOKEN_TTL_S}]")
    issued = time.time() if now is None else now
    claims: dict[str, object] = {
        "role": role,
        "iat": int(issued),
        "exp": int(issued + ttl_s),
        "sub": subject or role,
    }
    if agents:
        claims["agents"] = agents
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
    return Principal(role, tuple(agents), str(claims.get("sub", "")))


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
