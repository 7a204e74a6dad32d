"""OpenTelemetry spans with the SDK's in-memory exporter: the tree of a selection that
waits for headroom, joined to the caller's ``traceparent``, and a batch ingest linked to
the traces its signals name."""

from __future__ import annotations

import asyncio
import json
import pickle

import numpy as np
import pytest

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import context as otel_context  # noqa: E402
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


def test_a_batch_ingest_links_to_the_traces_its_signals_name(clock) -> None:
    from actors.client.ops import ClientOps
    from actors.cluster.adapter import Fanout, drive
    from actors.core.columns import columns_from_dicts
    from actors.core.state import ShardState
    from actors.core.trace_links import MAX_TRACES
    from tests.unit.test_flow import LongPollShards

    ops = ClientOps.__new__(ClientOps)  # its ingest op over two in-process shards
    ops._shards = Fanout(LongPollShards([ShardState(clock=clock), ShardState(clock=clock)]), 1.0)
    ops.num_shards, ops._owner = 2, {}
    traced_ids = [f"00-{i + 1:032x}-{i + 7:016x}-01" for i in range(MAX_TRACES + 5)]
    signals = [
        {"agent_id": f"a{i}", "signal_type": "LOAD", "value": 0.5, "trace_id": t}
        for i, t in enumerate(traced_ids)
    ]
    signals += [
        {"agent_id": "b", "signal_type": "LOAD", "value": 0.1, "trace_id": traced_ids[0]},
        {"agent_id": "c", "signal_type": "LOAD", "value": 0.1, "trace_id": "job-42"},
        {"agent_id": "d", "signal_type": "LOAD", "value": 0.1},
    ]
    EXPORTER.clear()
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async def go() -> int:
        parent = context_from_headers({"traceparent": caller})
        token = otel_context.attach(parent)
        try:
            return (await drive(ops.register_columns_op(columns_from_dicts(signals)))).accepted
        finally:
            otel_context.detach(token)

    assert asyncio.run(go()) == len(signals)
    (span,) = [s for s in EXPORTER.get_finished_spans() if s.name == "ripple.ingest"]
    # The caller's trace is the parent; the signals' traces are links: the first 32
    # distinct ones (a repeat counts once; "job-42" names no W3C context).
    assert span.context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    assert [link.context.trace_id for link in span.links] == list(range(1, MAX_TRACES + 1))
    assert span.attributes["ripple.traces"] == MAX_TRACES
    assert span.attributes["ripple.accepted"] == len(signals)


def test_trace_ids_stay_where_the_batch_was_built() -> None:
    from actors.core.columns import SignalColumns, columns_from_dicts
    from actors.core.decode import columns_from_json

    t1, t2 = (f"00-{i:032x}-{i:016x}-01" for i in (1, 2))
    items = [
        {"agent_id": "a", "signal_type": "LOAD", "value": 0.5, "trace_id": t1},
        {"agent_id": "b", "signal_type": "LOAD", "value": 0.5, "trace_id": t1},
        {"agent_id": "c", "signal_type": "LOAD", "value": 0.5, "trace_id": t2},
        {"agent_id": "d", "signal_type": "LOAD", "value": 0.5, "trace_id": "job-42"},
    ]
    cols = columns_from_dicts(items)
    assert cols.trace_ids == (t1, t2)  # distinct, in order; a caller's own id is not one
    fast = columns_from_json(json.dumps({"signals": items}).encode())
    assert fast is not None and fast.trace_ids == (t1, t2)
    assert SignalColumns.concat([cols, columns_from_dicts(items[2:])]).trace_ids == (t1, t2)
    # A shard gets none: not in a shard's share, not over the wire.
    assert cols.take(np.array([0])).trace_ids == ()
    assert pickle.loads(pickle.dumps(cols)).trace_ids == ()
