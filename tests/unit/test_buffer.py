"""The batching buffer shared by the Ray and HTTP clients, over a fake sender."""

from __future__ import annotations

from typing import Any

from actors.client.buffer import SignalBuffer


class FakeSink:
    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.down = False

    def __call__(self, batch: list[Any]) -> tuple[int, list[Any]]:
        if self.down:
            raise ConnectionError("service unreachable")
        self.batches.append(batch)
        bad = [i for i, x in enumerate(batch) if x < 0]
        return len(batch) - len(bad), bad


def test_flushes_by_size_and_on_close() -> None:
    sink = FakeSink()
    with SignalBuffer(sink, max_batch=10, flush_interval_s=60, max_pending=100) as buf:
        for i in range(25):
            buf.add(i)
        assert [len(b) for b in sink.batches] == [10, 10]
    assert [len(b) for b in sink.batches] == [10, 10, 5]
    assert buf.accepted == 25 and buf.rejected == []


def test_flushes_by_interval() -> None:
    sink = FakeSink()
    buf = SignalBuffer(sink, max_batch=1000, flush_interval_s=0.01, max_pending=1000)
    buf.add(1)
    for _ in range(500):
        if sink.batches:
            break
        buf._closed.wait(0.01)
    buf.close()
    assert sink.batches == [[1]]


def test_bounded_while_the_service_is_down_and_recovers() -> None:
    sink = FakeSink()
    sink.down = True
    buf = SignalBuffer(sink, max_batch=10, flush_interval_s=60, max_pending=30)
    for i in range(50):
        buf.add(i)
    assert len(buf._pending) == 30 and buf.dropped == 20
    assert isinstance(buf.last_error, ConnectionError)
    sink.down = False
    buf.add(-1)
    buf.close()
    assert buf.accepted == 30 and len(buf.rejected) == 1
    assert sum(len(b) for b in sink.batches) == 31


def test_retry_only_what_a_partial_outage_did_not_apply_in_order() -> None:
    from actors.client.answers import ItemOutcome, item_detail
    from actors.core.errors import InvalidInput, Unavailable

    sent: list[list[int]] = []
    answers: list[Exception | None] = [
        Unavailable(
            "1 of 4 applied",
            [  # decided on the typed outcome, whatever the words say
                item_detail(1, ItemOutcome.NOT_APPLIED, "shard 1 unavailable"),
                item_detail(3, ItemOutcome.NOT_APPLIED, "rejected, in other words"),
                item_detail(2, ItemOutcome.REJECTED, "value: out of range"),
            ],
        ),
        None,
        InvalidInput("body too odd"),
    ]

    def send(batch: list[int]) -> tuple[int, list[object]]:
        sent.append(list(batch))
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return len(batch), []

    buf = SignalBuffer(send, max_batch=4, flush_interval_s=60, max_pending=100)
    for i in range(4):
        buf._pending.append(i)
    assert buf.flush() is False  # a partial outage: keep the unapplied, in order
    assert buf._pending == [1, 3] and buf.accepted == 1 and len(buf.rejected) == 1
    buf._pending.append(4)
    assert buf.flush() is True and sent[-1] == [1, 3, 4] and buf.accepted == 4
    buf._pending.append(5)
    assert buf.flush() is True  # a 4xx is not retried, but it is counted and kept
    assert buf.failed == 1 and "body too odd" in buf.failures[0][0] and buf._pending == []
    buf._closed.set()
