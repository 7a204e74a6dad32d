"""What crosses between actors: the pickled envelope and the compact forms of the hot
path's objects (a one-signal batch, an ingest answer) must arrive exactly as they left."""

from __future__ import annotations

import asyncio
import pickle

import numpy as np
import pytest

from actors.cluster.adapter import PickledCalls
from actors.core.columns import columns_from_dicts
from actors.core.errors import InvalidInput
from actors.core.models import IngestResult, RejectedItem


def test_signal_columns_round_trip_exactly() -> None:
    cols = columns_from_dicts(
        [
            {"agent_id": "a", "signal_type": "LOAD", "value": 0.25, "ttl_s": 5},
            {"agent_id": "b", "signal_type": "NOPE", "value": 0.5, "timestamp": 3.5},
            {"agent_id": "c", "signal_type": "COST", "value": "x"},
        ]
    )
    back = pickle.loads(pickle.dumps(cols))
    assert back.agent_ids == cols.agent_ids
    assert back.structural == cols.structural == {2: ("value", "must be a number, got str")}
    assert back.type_codes.dtype == np.int64
    np.testing.assert_array_equal(back.type_codes, cols.type_codes)  # -1 survives
    for name in ("values", "confidences", "ttls_s", "timestamps_s"):
        np.testing.assert_array_equal(getattr(back, name), getattr(cols, name))  # NaN too


def test_empty_columns_round_trip() -> None:
    back = pickle.loads(pickle.dumps(columns_from_dicts([])))
    assert len(back) == 0 and back.values.shape == (0,)


def test_ingest_result_round_trip() -> None:
    result = IngestResult(accepted=3, rejected=[RejectedItem(index=1, error="bad", field="value")])
    assert pickle.loads(pickle.dumps(result)) == result


class _Endpoint(PickledCalls):
    def plain(self, x: int) -> int:
        return x + 1

    async def later(self, x: int) -> list[int]:
        await asyncio.sleep(0)
        return [x, x]

    async def refuse(self) -> None:
        raise InvalidInput("no", [{"field": "x", "reason": "bad"}])


def _call(method: str, *args: object) -> object:
    blob = asyncio.run(_Endpoint().call(method, pickle.dumps(args)))
    return pickle.loads(blob)


def test_envelope_runs_sync_and_async_methods() -> None:
    assert _call("plain", 1) == 2
    assert _call("later", 4) == [4, 4]


def test_envelope_lets_errors_through_unchanged() -> None:
    with pytest.raises(InvalidInput):
        _call("refuse")
