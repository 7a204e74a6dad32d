"""One error family for the whole service.

Errors cross actor boundaries (a shard raises, the router or the Serve replica
re-raises), so every error must survive pickling with its structured fields intact.
The HTTP edge maps ``http_status`` to a response in exactly one handler.
"""

from __future__ import annotations

from typing import Any


class RippleError(Exception):
    """Base error: a machine-readable ``code``, a message and per-field details."""

    code = "internal_error"
    http_status = 500

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[dict[str, Any]] = list(details or [])

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's default reduce only replays ``args``, which would drop details.
        return (type(self), (self.message, self.details))

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}

    def __str__(self) -> str:
        if not self.details:
            return self.message
        parts = "; ".join(f"{d.get('field', '?')}: {d.get('reason', '')}" for d in self.details)
        return f"{self.message} ({parts})"


class InvalidInput(RippleError):
    """A request or signal failed validation; details carry the field path and reason."""

    code = "invalid_input"
    http_status = 422


class NotFound(RippleError):
    code = "not_found"
    http_status = 404


class PayloadTooLarge(RippleError):
    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(RippleError):
    """A write whose body is not JSON (refused with auth off: a browser can forge it)."""

    code = "unsupported_media_type"
    http_status = 415


class MisdirectedRequest(RippleError):
    """A ``Host`` this service does not answer for (with auth off: DNS rebinding)."""

    code = "misdirected_request"
    http_status = 421


class Unavailable(RippleError):
    """The service (or every shard needed for an answer) cannot answer right now."""

    code = "unavailable"
    http_status = 503


class StorageUnavailable(Unavailable):
    """A change could not be made durable (disk full, I/O error, refused file): it was not
    applied. The shard retries its storage and takes writes again once it works."""

    code = "storage_unavailable"


class NotDeployed(Unavailable):
    code = "not_deployed"


class DeadlineExceeded(Unavailable):
    code = "deadline_exceeded"
    http_status = 504


class Unauthorized(RippleError):
    """No credentials, or credentials that are malformed, forged or expired."""

    code = "unauthorized"
    http_status = 401


class Forbidden(RippleError):
    """Valid credentials that do not allow this route or this agent."""

    code = "forbidden"
    http_status = 403


class MethodNotAllowed(RippleError):
    code = "method_not_allowed"
    http_status = 405


class Saturated(RippleError):
    """No candidate had headroom within the request's ``wait_s`` (``reason``
    "saturated"), or the request was evicted from a full flow-control queue ("shed").
    Nothing was assigned; ``retry_after_s`` is when a slot is predicted to free."""

    code = "saturated"
    http_status = 429

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | None = None,
        retry_after_s: float = 1.0,
        reason: str = "saturated",
        waited_s: float = 0.0,
    ) -> None:
        super().__init__(message, details)
        self.retry_after_s = retry_after_s
        self.reason = reason
        self.waited_s = waited_s

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.message, self.details, self.retry_after_s, self.reason, self.waited_s)
        return (type(self), args)

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "reason": self.reason,
            "retry_after_s": self.retry_after_s,
            "waited_s": self.waited_s,
        }


class InternalError(RippleError):
    """A bug on our side: the caller gets this and a request id, the log the traceback."""

    code = "internal_error"
    http_status = 500
