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
