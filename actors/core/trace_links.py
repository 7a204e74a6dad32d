"""Which of a batch's ``trace_id`` values its ingest span links to (DESIGN §4, "Decision
records", and its OpenTelemetry spans): a batch mixes many traces, so none parents the
span; each distinct one shaped like a W3C ``traceparent`` becomes a link, up to
``MAX_TRACES``. Plain Python: the OpenTelemetry side is ``actors.cluster.tracing``.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_TRACES = 32  # trace ids one batch's span links to, at most


def distinct_traces(ids: Iterable[str | None]) -> tuple[str, ...]:
    """The first ``MAX_TRACES`` distinct trace ids shaped like a W3C ``traceparent``
    (``00-<32 hex>-<16 hex>-<2 hex>``; the tracer parses them), in order. None: a signal
    without one; any other value is a caller's own id, never linked."""
    out: dict[str, None] = {}
    for t in ids:
        if t is not None and len(t) == 55 and t[2] == t[35] == t[52] == "-" and t not in out:
            out[t] = None
            if len(out) == MAX_TRACES:
                break
    return tuple(out)
