"""The fast batch decode: the same columns as the precise path for clean batches, and
None (the precise path, with its per-item reports) for anything else."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.core.columns import columns_from_dicts
from actors.core.decode import columns_from_json

item = st.fixed_dictionaries(
    {
        "agent_id": st.text(min_size=0, max_size=12),
        "signal_type": st.sampled_from(["LOAD", "CAPACITY", "LATENCY", "load", "X"]),
        "value": st.one_of(st.floats(-2, 2), st.integers(-3, 3)),
    },
    optional={
        "confidence": st.floats(-1, 2),
        "ttl_s": st.one_of(st.floats(-5, 1e5), st.integers(0, 10)),
        "timestamp": st.one_of(
            st.none(), st.floats(0, 2e9), st.just("2026-01-01T00:00:00+00:00"), st.just("soon")
        ),
        "trace_id": st.one_of(st.none(), st.text(max_size=200)),
    },
)


def same(a, b) -> None:
    assert a.agent_ids == b.agent_ids and a.structural == b.structural
    for name in ("type_codes", "values", "confidences", "ttls_s", "timestamps_s"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@settings(max_examples=200, deadline=None)
@given(st.lists(item, min_size=1, max_size=20))
def test_clean_batches_give_the_columns_of_the_precise_path(items) -> None:
    raw = json.dumps({"signals": items}).encode()
    fast = columns_from_json(raw)
    if fast is not None:  # None is allowed: the precise path then decides
        same(fast, columns_from_dicts(json.loads(raw)["signals"]))


@pytest.mark.parametrize(
    "body",
    [
        {"signals": [{"agent_id": "a", "signal_type": "LOAD", "value": True}]},
        {"signals": [{"agent_id": "a", "signal_type": "LOAD", "value": "0.5"}]},
        {"signals": [{"agent_id": "a", "signal_type": "LOAD"}]},
        {"signals": [{"agent_id": "a", "signal_type": "LOAD", "value": 0.5, "extra": 1}]},
        {"signals": [{"agent_id": 7, "signal_type": "LOAD", "value": 0.5}]},
        {"signals": [{"agent_id": "a", "signal_type": "LOAD", "value": 0.5, "timestamp": True}]},
        {"signals": [{"agent_id": "a", "signal_type": "LOAD", "value": 0.5, "confidence": None}]},
        {
            "signals": [
                {"agent_id": "a", "signal_type": "LOAD", "value": 0.5, "trace_id": "x" * 200}
            ]
        },
        {"signals": []},
        {"signals": ["x"]},
        {"signals": [{"agent_id": "a", "signal_type": "LOAD", "value": 0.5}], "more": 1},
        [],
    ],
)
def test_anything_not_exactly_right_takes_the_precise_path(body) -> None:
    assert columns_from_json(json.dumps(body).encode()) is None


def test_malformed_json_takes_the_precise_path() -> None:
    assert columns_from_json(b'{"signals": [') is None
