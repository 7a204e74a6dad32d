"""The shard actor's ingest lane over a plain ShardState, with asyncio and no Ray."""

from __future__ import annotations

import asyncio

import pytest

from actors.cluster.ingest_lane import IngestLane
from actors.core.columns import columns_from_dicts
from actors.core.errors import Unavailable
from actors.core.models import SelectRequest
from actors.core.state import ShardState

from .helpers import sig


def test_queued_batches_merge_into_one_ingest_with_per_caller_results(clock) -> None:
    state = ShardState(clock=clock)
    calls: list[int] = []

    def ingest(cols):
        calls.append(len(cols))
        return state.ingest(cols)

    lane = IngestLane(ingest)
    batches = [
        [sig("a", "LOAD", 0.1), sig("a", "LOAD", 5.0)],
        [sig("b", "LOAD", 0.2)],
        [sig("bad id", "LOAD", 0.3), sig("a", "LOAD", 0.9)],
    ]

    async def main():
        return await asyncio.gather(*(lane.submit(columns_from_dicts(b)) for b in batches))

    results = asyncio.run(main())
    assert calls == [5]  # all three queued before the worker ran: one merged pass
    assert [r.accepted for r in results] == [1, 1, 1]
    assert [[x.index for x in r.rejected] for r in results] == [[1], [], [0]]
    assert results[2].rejected[0].field == "agent_id"
    # Same outcome as sending them one after another: the later batch's value is live.
    assert state.agent("a").signals["LOAD"].value == pytest.approx(0.9)
    assert state.agent("a").history_length == 2


def test_reads_run_between_write_batches(clock) -> None:
    state = ShardState(clock=clock)
    order: list[str] = []

    def ingest(cols):
        order.append("write")
        return state.ingest(cols)

    lane = IngestLane(ingest, max_merged_signals=1)

    async def read():
        order.append("read")
        return state.select(SelectRequest(k=1))

    async def main():
        writes = [
            asyncio.ensure_future(lane.submit(columns_from_dicts([sig(f"w{i}", "LOAD", 0.5)])))
            for i in range(4)
        ]
        await asyncio.sleep(0)  # the first write starts
        reads = asyncio.ensure_future(read())
        await asyncio.gather(*writes, reads)

    asyncio.run(main())
    assert order.index("read") < len(order) - 1  # the read did not wait for the whole backlog
    assert len(state) == 4


def test_an_ingest_failure_reaches_every_caller_and_the_lane_goes_on(clock) -> None:
    state = ShardState(clock=clock)
    fail = [True]

    def ingest(cols):
        if fail[0]:
            fail[0] = False
            raise RuntimeError("boom")
        return state.ingest(cols)

    lane = IngestLane(ingest)

    async def main():
        with pytest.raises(RuntimeError):
            await lane.submit(columns_from_dicts([sig("x", "LOAD", 0.1)]))
        return await lane.submit(columns_from_dicts([sig("x", "LOAD", 0.1)]))

    assert asyncio.run(main()).accepted == 1


def test_the_queue_is_bounded_and_refuses_unapplied(clock) -> None:
    """Past the bound a batch is refused with a retryable error and nothing of it applied;
    what was queued before is applied in order, and the queue drains back to zero."""
    state = ShardState(clock=clock)
    lane = IngestLane(state.ingest, max_queued_signals=5)

    async def run() -> list[object]:
        batches = [
            columns_from_dicts(
                [{"agent_id": f"q{b}-{i}", "signal_type": "LOAD", "value": 0.1} for i in range(2)]
            )
            for b in range(4)
        ]
        return await asyncio.gather(*(lane.submit(c) for c in batches), return_exceptions=True)

    results = asyncio.run(run())
    accepted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Unavailable)]
    assert len(accepted) == 2 and len(refused) == 2
    assert lane.queued_signals == 0 and lane.refused_signals == 4
    assert len(state) == 4 and "q3-0" not in state
