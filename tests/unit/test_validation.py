"""DESIGN §4 signal rules, for the pydantic model and the columnar fast path alike."""

from __future__ import annotations

import math
import pickle
from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from actors.core.columns import columns_from_arrays, columns_from_dicts, validate
from actors.core.errors import InvalidInput, NotFound, RippleError
from actors.core.models import SelectRequest, Signal, Weights
from actors.core.state import ShardState

from .helpers import sig

NOW = 1_700_000_000.0


def check(items: list[dict]) -> list[int]:
    """Indices the columnar validator accepts."""
    vb = validate(columns_from_dicts(items), NOW, max_ttl_s=3600, max_future_skew_s=5)
    return vb.index.tolist()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.01, 1.01, 7])
def test_bad_values_are_rejected_never_clamped(value: float) -> None:
    with pytest.raises(ValidationError):
        Signal(agent_id="a", signal_type="LOAD", value=value)
    assert check([sig("a", "LOAD", value)]) == []


@pytest.mark.parametrize(
    "field,value",
    [
        ("confidence", 1.5),
        ("confidence", math.nan),
        ("ttl_s", 0),
        ("ttl_s", 3601),
        ("ttl_s", math.inf),
    ],
)
def test_confidence_and_ttl_bounds(field: str, value: float) -> None:
    with pytest.raises(ValidationError):
        Signal(agent_id="a", signal_type="LOAD", value=0.5, **{field: value})
    assert check([sig("a", "LOAD", 0.5, **{field: value})]) == []


@pytest.mark.parametrize("agent_id", ["", "a" * 129, "has space", "semi;colon", "ünïcode"])
def test_agent_id_pattern(agent_id: str) -> None:
    with pytest.raises(ValidationError):
        Signal(agent_id=agent_id, signal_type="LOAD", value=0.5)
    assert check([sig(agent_id, "LOAD", 0.5)]) == []


def test_edge_values_and_id_characters_are_accepted() -> None:
    ok = [
        sig("A-z_0.9:x@y", "LOAD", 0.0),
        sig("b" * 128, "COST", 1.0, confidence=0.0, ttl_s=3600),
    ]
    for item in ok:
        Signal(**item)
    assert check(ok) == [0, 1]


def test_unknown_signal_type_and_unknown_field() -> None:
    assert check([sig("a", "VIBES", 0.5), {**sig("a", "LOAD", 0.5), "colour": "red"}]) == []


def test_timestamps_rfc3339_with_zone_accepted_naive_rejected() -> None:
    s = Signal(agent_id="a", signal_type="LOAD", value=0.5, timestamp="2026-11-26T12:00:00Z")
    assert s.timestamp == datetime(2026, 11, 26, 12, tzinfo=timezone.utc).timestamp()
    with pytest.raises(ValidationError, match="zone"):
        Signal(agent_id="a", signal_type="LOAD", value=0.5, timestamp="2026-11-26T12:00:00")
    with pytest.raises(ValidationError, match="zone"):
        Signal(agent_id="a", signal_type="LOAD", value=0.5, timestamp=datetime(2026, 11, 26, 12))
    iso = datetime.fromtimestamp(NOW - 1, timezone.utc).isoformat()
    assert check(
        [sig("a", "LOAD", 0.5, timestamp=iso), sig("a", "LOAD", 0.5, timestamp="2026-11-26")]
    ) == [0]


def test_future_rejected_and_expired_kept_as_history_only() -> None:
    items = [
        sig("a", "LOAD", 0.5, timestamp=NOW + 4.9),
        sig("a", "LOAD", 0.5, timestamp=NOW + 5.1),
        sig("a", "LOAD", 0.5, timestamp=NOW - 61, ttl_s=60),  # a backfilled sample
        sig("a", "LOAD", 0.5, timestamp=NOW - 59, ttl_s=60),
    ]
    vb = validate(columns_from_dicts(items), NOW, max_ttl_s=3600, max_future_skew_s=5)
    assert vb.index.tolist() == [0, 2, 3]
    assert vb.live[[0, 2, 3]].tolist() == [True, False, True]


def test_backfilled_series_goes_to_history_never_live(clock) -> None:
    state = ShardState(clock=clock)
    now = clock()
    old = [
        sig("a", "LOAD", v, timestamp=now - 600 + 60 * i, ttl_s=30)
        for i, v in enumerate([0.1, 0.2, 0.3])
    ]
    assert state.ingest_dicts(old).accepted == 3
    assert state.history("a")[-1]["value"] == pytest.approx(0.3)
    assert state.agent("a").signals == {}


def test_partial_batch_applies_valid_items_and_reports_each_invalid_one(clock) -> None:
    state = ShardState(clock=clock)
    items = [
        sig("ok-1", "LOAD", 0.2),
        sig("bad", "LOAD", 2.0),
        "not an object",
        {"agent_id": "x", "value": 0.1},
        sig("ok-2", "QUALITY", 0.9, trace_id="t-1"),
        sig("bad id!", "LOAD", 0.5),
    ]
    result = state.ingest_dicts(items)
    assert result.accepted == 2
    assert {r.index: r.field for r in result.rejected} == {
        1: "value",
        2: "",
        3: "signal_type",
        5: "agent_id",
    }
    assert "2.0" in result.rejected[0].error
    assert set(state.agent_ids()) == {"ok-1", "ok-2"}
    assert state.metrics.rejected_total == {
        "value_out_of_range": 1,
        "malformed": 2,
        "invalid_agent_id": 1,
    }


def test_columnar_input_with_codes_and_names(clock) -> None:
    state = ShardState(clock=clock)
    r = state.ingest_arrays(["a", "b", "c"], np.array([0, 3, 9]), np.array([0.1, 0.2, 0.3]))
    assert r.accepted == 2 and r.rejected[0].index == 2 and r.rejected[0].field == "signal_type"
    r = state.ingest_arrays(
        ["a"], ["QUALITY"], [0.7], confidences=[0.5], ttls_s=[10], timestamps_s=[None]
    )
    assert r.accepted == 1
    with pytest.raises(InvalidInput):
        columns_from_arrays(["a", "b"], ["LOAD"], [0.1, 0.2])


def test_weights_rules() -> None:
    w = Weights(quality=3, load=1)
    assert w.vector().tolist() == [0.25, 0, 0.75, 0, 0, 0]
    for bad in ({"load": -1}, {"load": 0, "cost": 0}, {}, {"speed": 1}, {"load": math.inf}):
        with pytest.raises(ValidationError):
            Weights(**bad)


def test_select_request_limits() -> None:
    with pytest.raises(ValidationError):
        SelectRequest(k=0)
    with pytest.raises(ValidationError):
        SelectRequest(k=1001)
    with pytest.raises(ValidationError):
        SelectRequest(candidates=["ok", "not ok"])
    with pytest.raises(ValidationError):
        SelectRequest(strategy="random")


def test_errors_survive_pickling_with_their_fields() -> None:
    err = InvalidInput("bad batch", [{"field": "signals.3.value", "reason": "out of range"}])
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, InvalidInput) and isinstance(back, RippleError)
    assert back.details == err.details and back.code == "invalid_input" and back.http_status == 422
    assert "signals.3.value" in str(back)
    assert pickle.loads(pickle.dumps(NotFound("gone"))).http_status == 404


# Every wrong type a JSON body or a Python caller can send in place of a number: booleans
# (an int subclass) and numeric strings must be rejected, never coerced.
wrong_types = st.one_of(st.booleans(), st.sampled_from(["0.5", "1", "nan", ""]), st.none())
finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2), wrong_types
)
timestamps = st.one_of(
    st.floats(NOW - 4000, NOW + 10),
    st.just(math.nan),
    st.just(math.inf),
    st.booleans(),
    st.sampled_from([str(NOW), "2023-11-14T22:13:20Z", "2023-11-14T22:13:20"]),
    st.none(),
)
item_strategy = st.fixed_dictionaries(
    {
        "agent_id": st.one_of(
            st.from_regex(r"[A-Za-z0-9._:@/-]{1,130}", fullmatch=True),
            st.text(max_size=5),
            st.integers(0, 3),
        ),
        "signal_type": st.sampled_from(["LOAD", "CAPACITY", "LATENCY", "load", "NOPE"]),
        "value": finite_or_not,
    },
    optional={
        "confidence": finite_or_not,
        "ttl_s": st.one_of(st.floats(-1, 4000), st.just(math.nan), wrong_types),
        "timestamp": timestamps,
    },
)


def model_accepts(items: list[dict]) -> list[int]:
    """Indices the pydantic model (the slow path) accepts, with the receipt-time rules."""
    expected = []
    for i, item in enumerate(items):
        try:
            s = Signal(**item)
        except ValidationError:
            continue
        ts = NOW if s.timestamp is None else s.timestamp
        if ts <= NOW + 5:  # the time rule needs the receipt clock
            expected.append(i)
    return expected


@settings(max_examples=300, deadline=None)
@given(st.lists(item_strategy, min_size=1, max_size=20))
def test_columnar_validator_agrees_with_the_pydantic_model(items: list[dict]) -> None:
    """A signal's fate never depends on its neighbours: each item alone and in the mixed
    batch gets the model's verdict, through dicts and through columns alike."""
    expected = model_accepts(items)
    assert check(items) == expected
    assert [i for i, item in enumerate(items) if check([item]) == [0]] == expected
    cols = columns_from_arrays(
        [d["agent_id"] for d in items],
        [d["signal_type"] for d in items],
        [d["value"] for d in items],
        confidences=[d.get("confidence", 1.0) for d in items],
        ttls_s=[d.get("ttl_s", 60.0) for d in items],
        timestamps_s=[d.get("timestamp") for d in items],
    )
    vb = validate(cols, NOW, max_ttl_s=3600, max_future_skew_s=5)
    # The columns API has no "absent" for confidence/ttl: an explicit None there is wrong.
    assert vb.index.tolist() == model_accepts(
        [
            {**d, "confidence": d.get("confidence", 1.0), "ttl_s": d.get("ttl_s", 60.0)}
            for d in items
        ]
    )


@pytest.mark.parametrize(
    "field,bad",
    [
        ("value", True),
        ("value", "0.5"),
        ("confidence", False),
        ("ttl_s", "30"),
        ("timestamp", math.nan),
    ],
)
def test_a_wrong_type_is_rejected_alone_and_among_valid_items(field: str, bad: object) -> None:
    """Regression: the columnar fast path took True as 1.0, numeric strings, and a NaN
    timestamp as "no timestamp" when the rest of the batch was valid."""
    bad_item = {**sig("a", "LOAD", 0.5), field: bad}
    with pytest.raises(ValidationError):
        Signal(**bad_item)
    batch = [sig(f"ok-{i}", "LOAD", 0.5) for i in range(5)]
    assert check([bad_item]) == []
    assert check([*batch, bad_item]) == [0, 1, 2, 3, 4]
    arrays = [np.array([0.5, 0.5]), np.array([True, True]), np.array(["0.5", "0.5"])]
    for arr in arrays[1:]:
        cols = columns_from_arrays(["a", "b"], ["LOAD", "LOAD"], arr)
        assert validate(cols, NOW, max_ttl_s=3600, max_future_skew_s=5).index.tolist() == []
    cols = columns_from_arrays(
        ["a", "b"], ["LOAD", "LOAD"], arrays[0], timestamps_s=[NOW, math.nan]
    )
    assert validate(cols, NOW, max_ttl_s=3600, max_future_skew_s=5).index.tolist() == [0]


def test_agent_ids_with_a_slash_are_rejected_with_a_hint() -> None:
    """Every id must be one URL path segment (``/v1/agents/{id}``)."""
    with pytest.raises(ValidationError, match="namespace with ':'"):
        Signal(agent_id="team/agent-7", signal_type="LOAD", value=0.5)
    vb = validate(
        columns_from_dicts([sig("team/agent-7", "LOAD", 0.5), sig("team:agent-7", "LOAD", 0.5)]),
        NOW,
        max_ttl_s=3600,
        max_future_skew_s=5,
    )
    assert vb.index.tolist() == [1]
    assert vb.rejected[0].field == "agent_id" and "':'" in vb.rejected[0].error
