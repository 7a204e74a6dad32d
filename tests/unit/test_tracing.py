"""OpenTelemetry spans with the SDK's in-memory exporter: the tree of a selection that
waits for headroom, joined to the caller's ``traceparent``, and of a batch ingest."""

from __future__ import annotations

import asyncio

import pytest

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from actors.cluster.tracing import context_from_headers  # noqa: E402
from actors.core.models import SelectRequest  # noqa: E402
from tests.unit.test_flow import complete_soon, make_router  # noqa: E402

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    tp = sdk.TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(tp)


def test_a_waiting_selection_is_one_tree_under_the_callers_trace(clock) -> None:
    EXPORTER.clear()
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async def go() -> None:
        router = make_router(clock)
        first = (await router.select(SelectRequest())).selected[0]
        EXPORTER.clear()
        done = complete_soon(router, "a0", first.assignment_id, 0.05)
        parent = context_from_headers({"traceparent": caller})
        await router.select(SelectRequest(wait_s=5, tenant="t", priority=7), parent)
        await done

    asyncio.run(go())
    spans = EXPORTER.get_finished_spans()
    names = [s.name for s in spans]
    # Tried at once (full), again when the shards first answer, then bound.
    assert "ripple.queue_wait" in names and names.count("ripple.select") >= 2
    trace_id = int("0af7651916cd43dd8448eb211c80319c", 16)
    assert all(s.context.trace_id == trace_id for s in spans)
    wait = next(s for s in spans if s.name == "ripple.queue_wait")
    assert wait.attributes["ripple.outcome"] == "bound" and wait.attributes["ripple.tenant"] == "t"
    bound = [s for s in spans if s.name == "ripple.select"][-1]
    children = {s.name for s in spans if s.parent and s.parent.span_id == bound.context.span_id}
    assert children == {"ripple.shard", "ripple.merge", "ripple.assign"}
    assert bound.attributes["ripple.picks"] == 1 and bound.attributes["ripple.waited_s"] > 0


def test_a_refused_wait_says_why() -> None:
    from tests.unit.conftest import Clock

    EXPORTER.clear()

    async def go() -> None:
        router = make_router(Clock())
        await router.select(SelectRequest())
        with pytest.raises(Exception, match="saturated"):
            await router.select(SelectRequest(wait_s=0.05))

    asyncio.run(go())
    wait = next(s for s in EXPORTER.get_finished_spans() if s.name == "ripple.queue_wait")
    assert wait.attributes["ripple.outcome"] == "saturated"
