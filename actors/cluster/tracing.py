"""OpenTelemetry spans for selections and batch ingest (the ``[otel]`` extra; DESIGN §4).

Only ``opentelemetry-api`` is used here: with no SDK configured in the process its tracer
is a no-op (a non-recording span costs about a microsecond, beside milliseconds of actor
calls), and without the package at all every call below does nothing. A deployment that
wants traces installs an SDK and an exporter in the Serve replica and the router actors
(e.g. ``opentelemetry-instrument``), as for any OpenTelemetry-instrumented service.

Spans: ``ripple.select`` (attributes: strategy, k, assign, tenant, priority; picks,
degraded, waited) with children ``ripple.queue_wait`` (a wait for headroom),
``ripple.shard`` (one per shard asked, ``ripple.shard``: its index), ``ripple.merge`` and
``ripple.assign``; and ``ripple.ingest`` (signals, shards, accepted, rejected).
Attributes are bounded: no agent ids, no per-signal values. The caller's context comes
from the incoming HTTP request's W3C ``traceparent`` (``context_from_headers``,
``traced``). A batch mixes many traces, so the signals' own ``trace_id`` values do not
parent its span: ``ripple.ingest`` links to each distinct one that names a W3C trace
context (a ``traceparent`` value, ``00-<trace id>-<span id>-<flags>``), at most
``MAX_TRACES`` (32) a batch, the OpenTelemetry way for work that batches requests of
several traces; ``ripple.traces`` counts the ones linked. Other ``trace_id`` values (a
caller's own ids) are accepted and not linked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

try:  # the [otel] extra; Ray's Serve dependencies usually bring it too
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised only where the API is absent
    trace = None  # type: ignore[assignment]

Span = Any  # an opentelemetry Span, or None when the API is absent
_W3C = TraceContextTextMapPropagator() if trace is not None else None


def context_from_headers(headers: Mapping[str, str]) -> Any:
    """The trace context an incoming request carries (``traceparent``), or None."""
    if trace is None:
        return None
    return propagate.extract(dict(headers))


@contextmanager
def traced(headers: Mapping[str, str]) -> Iterator[None]:
    """The incoming request's trace context as the current one, for the spans started
    under it without an explicit parent."""
    ctx = context_from_headers(headers)
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def start(name: str, parent: Any = None, links: Sequence[str] = (), **attributes: Any) -> Span:
    """A span named ``name`` under ``parent`` (a span or a context; None: the current
    context), linked to the W3C trace contexts among ``links``. End it with ``end``."""
    if trace is None:
        return None
    if parent is not None and not isinstance(parent, otel_context.Context):
        parent = trace.set_span_in_context(parent)
    span = trace.get_tracer("ripple").start_span(name, context=parent)
    if span.is_recording():
        span.set_attributes({f"ripple.{k}": v for k, v in attributes.items() if v is not None})
        linked = 0
        for text in links:
            ctx = _span_context(text)
            if ctx is not None:
                span.add_link(ctx)
                linked += 1
        if links:
            span.set_attribute("ripple.traces", linked)
    return span


def _span_context(traceparent: str) -> Any:
    """The remote span context a ``traceparent`` value names, or None."""
    # W3C's format whatever propagator the process configured for its HTTP headers.
    carrier = {"traceparent": traceparent}
    got = trace.get_current_span(_W3C.extract(carrier)).get_span_context()
    return got if got.is_valid else None


def child(name: str, parent: Span, **attributes: Any) -> Span:
    """A span under ``parent``, or None when the parent records nothing (no SDK): a
    selection then pays for one no-op span, not one per step."""
    if parent is None or not parent.is_recording():
        return None
    return start(name, parent, **attributes)


def end(span: Span, **attributes: Any) -> None:
    if span is None:
        return
    if attributes and span.is_recording():
        span.set_attributes({f"ripple.{k}": v for k, v in attributes.items() if v is not None})
    span.end()
