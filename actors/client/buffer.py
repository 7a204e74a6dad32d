"""Coalesces one-at-a-time signals into batches, for the Ray client and the HTTP client alike.

Delivery rules:
- a batch that fails with a *retryable* error (an outage, an overloaded shard, the
  network) is retried, in order, ahead of newer signals; when the error says which items
  were applied, only the others are sent again;
- a batch that fails for any other reason (a 4xx: it would fail again) is not retried:
  it is counted in ``failed`` and kept, bounded, in ``failures`` with its error;
- items the service rejected one by one land in ``rejected``;
- while the service is unreachable the buffer holds at most ``max_pending`` signals; past
  that the oldest go, counted in ``dropped`` and logged. Nothing is lost silently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from actors.client.answers import ItemOutcome
from actors.core.errors import RippleError, Unavailable

log = logging.getLogger(__name__)

# Sends one batch; returns (accepted, rejected items).
Send = Callable[[list[Any]], tuple[int, list[Any]]]
_MAX_KEPT = 10_000


def default_retryable(exc: BaseException) -> bool:
    """An outage or overload, or a connection that failed: a later try may succeed."""
    return isinstance(exc, (Unavailable, ConnectionError, TimeoutError))


def partial_failure(
    exc: BaseException, size: int
) -> tuple[dict[int, str], list[dict[str, Any]]] | None:
    """What a partial failure (``merge_register``'s 503) says of a batch: the positions not
    applied, with why (to resend), and the items rejected (processed, not to resend);
    None when it does not say (then nothing is known to be applied)."""
    details = getattr(exc, "details", None) if isinstance(exc, RippleError) else None
    again: dict[int, str] = {}
    rejected: list[dict[str, Any]] = []
    for d in details or []:
        idx, outcome = d.get("index"), d.get("outcome")
        if not isinstance(idx, int) or not 0 <= idx < size:
            continue
        if outcome == ItemOutcome.REJECTED:
            rejected.append({"index": idx, "error": str(d.get("reason", ""))})
        elif outcome in (ItemOutcome.NOT_APPLIED, ItemOutcome.UNKNOWN):
            again[idx] = str(d.get("reason", ""))
    return (again, rejected) if again else None


class SignalBuffer:
    """Flushed by size, by interval (a background thread) and on close."""

    def __init__(
        self,
        send: Send,
        max_batch: int,
        flush_interval_s: float,
        max_pending: int,
        retryable: Callable[[BaseException], bool] = default_retryable,
    ) -> None:
        self._send = send
        self._retryable = retryable
        self.max_batch = max_batch
        self.max_pending = max(max_pending, max_batch)
        self.flush_interval_s = flush_interval_s
        self.accepted = 0
        self.rejected: list[Any] = []
        self.failed = 0
        self.failures: list[tuple[str, int]] = []  # (error, signals in the batch)
        self.dropped = 0
        self.last_error: Exception | None = None
        self._pending: list[Any] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ripple-signal-buffer", daemon=True)
        self._thread.start()

    def add(self, signal: Any) -> None:
        if self._closed.is_set():
            raise RuntimeError("buffer is closed")
        with self._lock:
            self._pending.append(signal)
            full = len(self._pending) >= self.max_batch
        if full:
            self.flush()

    def flush(self) -> bool:
        """Send one batch; False when it must be retried (it is kept, in order)."""
        with self._lock:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        if not batch:
            return True
        try:
            accepted, rejected = self._send(batch)
        except Exception as exc:
            self.last_error = exc
            if not self._retryable(exc):
                self.failed += len(batch)
                if len(self.failures) < _MAX_KEPT:
                    self.failures.append((f"{type(exc).__name__}: {exc}", len(batch)))
                log.warning("%d signals failed, not retried: %s", len(batch), exc)
                return True
            told = partial_failure(exc, len(batch))
            retry = batch
            if told is not None:
                again, rejected_here = told
                retry = [batch[i] for i in sorted(again)]
                self.accepted += len(batch) - len(retry) - len(rejected_here)
                self.rejected.extend(rejected_here[: _MAX_KEPT - len(self.rejected)])
            with self._lock:
                self._pending = retry + self._pending
                overflow = len(self._pending) - self.max_pending
                if overflow > 0:
                    self.dropped += overflow
                    del self._pending[:overflow]
                    log.warning("buffer full: dropped the %d oldest signals", overflow)
            return False
        self.accepted += accepted
        self.rejected.extend(rejected[: _MAX_KEPT - len(self.rejected)])
        return True

    def _run(self) -> None:
        while not self._closed.wait(self.flush_interval_s):
            self.flush()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        while self._pending and self.flush():
            pass

    def __enter__(self) -> SignalBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
