"""Coalesces one-at-a-time signals into batches, for the Ray client and the HTTP client alike."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

# Sends one batch; returns (accepted, rejected items).
Send = Callable[[list[Any]], tuple[int, list[Any]]]
_MAX_KEPT_REJECTIONS = 10_000


class SignalBuffer:
    """Flushed by size, by interval (a background thread) and on close.

    Bounded: while the service is unreachable it keeps at most ``max_pending`` signals and
    counts what it had to drop in ``dropped``, so memory never grows without end.
    """

    def __init__(
        self, send: Send, max_batch: int, flush_interval_s: float, max_pending: int
    ) -> None:
        self._send = send
        self.max_batch = max_batch
        self.max_pending = max(max_pending, max_batch)
        self.flush_interval_s = flush_interval_s
        self.accepted = 0
        self.rejected: list[Any] = []
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
        """Send one batch; False when it failed (the batch is kept for the next try)."""
        with self._lock:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        if not batch:
            return True
        try:
            accepted, rejected = self._send(batch)
        except Exception as exc:  # keep the batch, within the bound, and say why
            self.last_error = exc
            with self._lock:
                self._pending = batch + self._pending
                overflow = len(self._pending) - self.max_pending
                if overflow > 0:
                    self.dropped += overflow
                    del self._pending[:overflow]
            return False
        self.accepted += accepted
        self.rejected.extend(rejected[: _MAX_KEPT_REJECTIONS - len(self.rejected)])
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
