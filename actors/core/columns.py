"""Batch validation of signals as columns.

Applies the rules of ``actors.core.models.Signal`` to a whole batch at once with numpy, so the
ingest hot path never builds one pydantic object per signal. Each invalid item is reported
with its index, field and reason; valid items go on. Nothing is clamped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.core.errors import InvalidInput
from actors.core.models import (
    DEFAULT_TTL_S,
    MAX_TRACE_ID_LEN,
    TYPE_CODE,
    RejectedItem,
    Signal,
    agent_id_problem,
    is_agent_id,
    timestamp_to_unix_s,
)
from actors.core.trace_links import distinct_traces

_ALLOWED_KEYS = frozenset(Signal.model_fields)
_REQUIRED_KEYS = ("agent_id", "signal_type", "value")
# Metric label values for rejections: a closed set, so the label's cardinality is bounded.
REJECT_REASONS = (
    "malformed",
    "invalid_agent_id",
    "invalid_signal_type",
    "value_out_of_range",
    "confidence_out_of_range",
    "ttl_out_of_range",
    "invalid_timestamp",
    "timestamp_in_future",
    "overloaded",  # refused by a shard's back-pressure, not applied
    "storage",  # refused because its WAL record could not be made durable, not applied
)


@dataclass
class SignalColumns:
    """A batch of signals as parallel columns. ``timestamps_s`` NaN means "time of receipt"."""

    agent_ids: list[Any]
    type_codes: np.ndarray  # int64, -1 where the type is unknown
    values: np.ndarray
    confidences: np.ndarray
    ttls_s: np.ndarray
    timestamps_s: np.ndarray
    # Errors found while building the columns (wrong JSON types, missing keys), by index.
    structural: dict[int, tuple[str, str]] = field(default_factory=dict)
    # The distinct ``trace_id`` values of the batch shaped like a W3C ``traceparent``, at
    # most ``MAX_TRACES``: the ingest span links to those. Kept where the batch was built
    # (a shard has no use for them), so neither ``take`` nor pickling carries them.
    trace_ids: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.agent_ids)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle the numbers as one bytes object, not five arrays: every call to a shard
        pickles its batch (``PickledCalls``), and five array reconstructions cost more
        than a one-signal batch is worth; handed to Ray as is, it also ships one in-band
        buffer instead of five out-of-band ones (0.1-0.2 ms each here). The arrays that
        come back are read-only views, as Ray's own are."""
        packed = np.empty((5, len(self)), np.float64)
        packed[0].view(np.int64)[:] = self.type_codes  # the codes' bits, unchanged
        packed[1:] = (self.values, self.confidences, self.ttls_s, self.timestamps_s)
        return (_columns_from_wire, (self.agent_ids, packed.tobytes(), self.structural))

    @classmethod
    def concat(cls, parts: list[SignalColumns]) -> SignalColumns:
        """One batch of several, in order; ``structural`` indices shift with their part."""
        if len(parts) == 1:
            return parts[0]
        structural: dict[int, tuple[str, str]] = {}
        offset = 0
        for p in parts:
            structural.update({offset + i: e for i, e in p.structural.items()})
            offset += len(p)
        return cls(
            agent_ids=[a for p in parts for a in p.agent_ids],
            type_codes=np.concatenate([p.type_codes for p in parts]),
            values=np.concatenate([p.values for p in parts]),
            confidences=np.concatenate([p.confidences for p in parts]),
            ttls_s=np.concatenate([p.ttls_s for p in parts]),
            timestamps_s=np.concatenate([p.timestamps_s for p in parts]),
            structural=structural,
            trace_ids=distinct_traces(t for p in parts for t in p.trace_ids),
        )

    def take(self, positions: np.ndarray) -> SignalColumns:
        """The sub-batch at ``positions`` (re-indexed from 0), e.g. one shard's share."""
        pos = positions.tolist()
        where = {p: i for i, p in enumerate(pos)} if self.structural else {}
        return SignalColumns(
            agent_ids=[self.agent_ids[p] for p in pos],
            type_codes=self.type_codes[positions],
            values=self.values[positions],
            confidences=self.confidences[positions],
            ttls_s=self.ttls_s[positions],
            timestamps_s=self.timestamps_s[positions],
            structural={where[p]: e for p, e in self.structural.items() if p in where},
        )


def _columns_from_wire(
    agent_ids: list[Any], packed: bytes, structural: dict[int, tuple[str, str]]
) -> SignalColumns:
    rows = np.frombuffer(packed, np.float64).reshape(5, len(agent_ids))
    codes, values, confidences, ttls_s, timestamps_s = rows
    return SignalColumns(
        agent_ids, codes.view(np.int64), values, confidences, ttls_s, timestamps_s, structural
    )


def _type_code(t: Any) -> int:
    """Code of a signal type name; -1 for anything else (integer codes are accepted only
    as a whole integer column, in ``columns_from_arrays``)."""
    try:
        return TYPE_CODE.get(t, -1)
    except TypeError:  # unhashable
        return -1


# Exactly the Python types the strict pydantic model takes for a number (bool is an int
# subclass, so it must be excluded by type, not by isinstance).
_NUMBER_TYPES = frozenset({float, int})
_TIMESTAMP_FAST_TYPES = frozenset({float, int, type(None)})


def _is_number(v: Any) -> bool:
    return (type(v) in _NUMBER_TYPES) or (
        isinstance(v, (np.floating, np.integer)) and not isinstance(v, np.bool_)
    )


def _float_column(raw: Any, name: str, structural: dict[int, tuple[str, str]]) -> np.ndarray:
    """A float column from a list or an array; anything but a real number (a boolean, a
    numeric string, None) is a structural error for its item, never coerced."""
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "iuf":
        return np.asarray(raw, dtype=np.float64)
    items = raw.tolist() if isinstance(raw, np.ndarray) else list(raw)
    if set(map(type, items)) <= _NUMBER_TYPES:
        return np.asarray(items, dtype=np.float64)
    out = np.empty(len(items), dtype=np.float64)
    for i, v in enumerate(items):
        if _is_number(v):
            out[i] = float(v)
        else:
            out[i] = np.nan
            structural.setdefault(i, (name, f"must be a number, got {type(v).__name__}"))
    return out


def timestamp_column(raw: Any, structural: dict[int, tuple[str, str]]) -> np.ndarray:
    """Unix seconds; NaN inside the columns means "not given" (time of receipt). A given
    NaN, boolean or numeric string is a structural error, as in the pydantic model."""
    items = raw.tolist() if isinstance(raw, np.ndarray) else list(raw)
    if set(map(type, items)) <= _TIMESTAMP_FAST_TYPES:
        out = np.asarray(items, dtype=np.float64)  # None becomes NaN: "time of receipt"
        for i in np.flatnonzero(np.isnan(out)).tolist():
            if items[i] is not None:
                structural.setdefault(i, ("timestamp", "must be a finite unix time, got nan"))
        return out
    out = np.full(len(items), np.nan)
    for i, v in enumerate(items):
        try:
            if isinstance(v, (np.floating, np.integer)) and not isinstance(v, np.bool_):
                v = v.item()
            ts = timestamp_to_unix_s(v)
        except ValueError as exc:
            structural.setdefault(i, ("timestamp", str(exc)))
            continue
        if ts is not None:
            out[i] = ts
    return out


def columns_from_dicts(items: Sequence[Any]) -> SignalColumns:
    """Build columns from a list of signal dicts (JSON objects) or ``Signal`` models."""
    structural: dict[int, tuple[str, str]] = {}
    if items and all(isinstance(d, Signal) for d in items):
        items = [d.model_dump(exclude_none=True) for d in items]
    dicts: list[Mapping[str, Any]] = []
    for i, d in enumerate(items):
        if not isinstance(d, Mapping):
            structural[i] = ("", "each signal must be an object")
            dicts.append({})
            continue
        if not _ALLOWED_KEYS.issuperset(d.keys()):
            extra = sorted(str(k) for k in d.keys() - _ALLOWED_KEYS)
            structural[i] = (extra[0], "unknown field")
        for key in _REQUIRED_KEYS:
            if key not in d:
                structural.setdefault(i, (key, "field required"))
        dicts.append(d)
    trace_ids = [d.get("trace_id") for d in dicts]
    for i, t in enumerate(trace_ids):
        if t is not None and (not isinstance(t, str) or len(t) > MAX_TRACE_ID_LEN):
            structural.setdefault(
                i, ("trace_id", f"must be a string of at most {MAX_TRACE_ID_LEN}")
            )
            trace_ids[i] = None
    return SignalColumns(
        agent_ids=[d.get("agent_id") for d in dicts],
        type_codes=np.fromiter(
            (_type_code(d.get("signal_type")) for d in dicts), np.int64, len(dicts)
        ),
        values=_float_column([d.get("value") for d in dicts], "value", structural),
        confidences=_float_column(
            [d.get("confidence", 1.0) for d in dicts], "confidence", structural
        ),
        ttls_s=_float_column([d.get("ttl_s", DEFAULT_TTL_S) for d in dicts], "ttl_s", structural),
        timestamps_s=timestamp_column([d.get("timestamp") for d in dicts], structural),
        structural=structural,
        trace_ids=distinct_traces(trace_ids),
    )


def columns_from_arrays(
    agent_ids: Sequence[Any],
    signal_types: Sequence[Any] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    confidences: Sequence[float] | np.ndarray | None = None,
    ttls_s: Sequence[float] | np.ndarray | None = None,
    timestamps_s: Sequence[float | None] | np.ndarray | None = None,
) -> SignalColumns:
    """Columnar input: signal types as names or integer codes; NaN timestamp = receipt."""
    n = len(agent_ids)
    given = [c for c in (signal_types, values, confidences, ttls_s, timestamps_s) if c is not None]
    lengths = {len(c) for c in given}
    if lengths != {n}:
        raise InvalidInput(
            "columns must all have the same length",
            [{"field": "columns", "reason": f"lengths {sorted(lengths | {n})}"}],
        )
    structural: dict[int, tuple[str, str]] = {}
    types = np.asarray(signal_types)
    if types.dtype.kind in "iu":
        codes = np.where((types >= 0) & (types < len(TYPE_CODE)), types, -1).astype(np.int64)
    else:
        codes = np.fromiter((_type_code(t) for t in types.tolist()), np.int64, n)

    def col(raw: Any, default: float, name: str) -> np.ndarray:
        return np.full(n, default) if raw is None else _float_column(raw, name, structural)

    return SignalColumns(
        agent_ids=list(agent_ids),
        type_codes=codes,
        values=col(values, np.nan, "value"),
        confidences=col(confidences, 1.0, "confidence"),
        ttls_s=col(ttls_s, DEFAULT_TTL_S, "ttl_s"),
        timestamps_s=(
            np.full(n, np.nan)
            if timestamps_s is None
            else timestamp_column(timestamps_s, structural)
        ),
        structural=structural,
    )


@dataclass
class ValidatedBatch:
    """The valid part of a batch (positions into the original) and the rejected items."""

    index: np.ndarray
    rejected: list[RejectedItem]
    effective_ts_s: np.ndarray  # per original item; receipt time where none was given
    reasons: dict[str, int]
    live: np.ndarray  # per original item: not expired on arrival


def validate(
    cols: SignalColumns,
    now_s: float,
    *,
    max_ttl_s: float,
    max_future_skew_s: float,
    known_rows: np.ndarray | None = None,
) -> ValidatedBatch:
    """Apply DESIGN §4's rules to every item at once; report the first failing field."""
    n = len(cols)
    v, c, ttl, ts = cols.values, cols.confidences, cols.ttls_s, cols.timestamps_s
    with np.errstate(invalid="ignore"):
        bad_value = ~(np.isfinite(v) & (v >= 0.0) & (v <= 1.0))
        bad_conf = ~(np.isfinite(c) & (c >= 0.0) & (c <= 1.0))
        bad_ttl = ~(np.isfinite(ttl) & (ttl > 0.0) & (ttl <= max_ttl_s))
        given = ~np.isnan(ts)
        bad_ts_range = given & ~(np.isfinite(ts) & (ts >= 0.0))
        future = given & (ts > now_s + max_future_skew_s)
        eff_ts = np.where(given, ts, now_s)
        # Expired on arrival (a backfilled sample): valid, kept in history, never live.
        live = ~(eff_ts + ttl <= now_s)
    bad_type = cols.type_codes < 0
    bad = bad_value | bad_conf | bad_ttl | bad_type | bad_ts_range | future
    # Known ids (row >= 0) were validated when first seen; only new ones pay for the regex.
    ids = cols.agent_ids
    unknown = range(n) if known_rows is None else np.flatnonzero(known_rows < 0).tolist()
    bad_id_idx = [i for i in unknown if not is_agent_id(ids[i])]
    if bad_id_idx:
        bad[bad_id_idx] = True
    if cols.structural:
        bad[list(cols.structural)] = True

    rejected: list[RejectedItem] = []
    reasons: dict[str, int] = {}
    if bad.any():
        bad_ids = set(bad_id_idx)
        for i in np.flatnonzero(bad).tolist():
            fld, why, reason = _first_failure(
                i,
                cols,
                bad_ids,
                bad_value,
                bad_conf,
                bad_ttl,
                bad_type,
                bad_ts_range,
                future,
                max_ttl_s,
                max_future_skew_s,
            )
            rejected.append(RejectedItem(index=i, field=fld, error=f"{fld}: {why}" if fld else why))
            reasons[reason] = reasons.get(reason, 0) + 1
    return ValidatedBatch(
        index=np.flatnonzero(~bad) if n else np.empty(0, np.int64),
        rejected=rejected,
        effective_ts_s=eff_ts,
        reasons=reasons,
        live=live,
    )


def _first_failure(
    i: int,
    cols: SignalColumns,
    bad_ids: set[int],
    bad_value: np.ndarray,
    bad_conf: np.ndarray,
    bad_ttl: np.ndarray,
    bad_type: np.ndarray,
    bad_ts_range: np.ndarray,
    future: np.ndarray,
    max_ttl_s: float,
    max_skew_s: float,
) -> tuple[str, str, str]:
    """(field, human reason, metric reason label) for the first rule item ``i`` breaks."""
    if i in cols.structural:
        fld, why = cols.structural[i]
        return fld, why, "malformed"
    if i in bad_ids:
        return "agent_id", agent_id_problem(cols.agent_ids[i]), "invalid_agent_id"
    if bad_type[i]:
        return "signal_type", f"must be one of {', '.join(TYPE_CODE)}", "invalid_signal_type"
    if bad_value[i]:
        return (
            "value",
            f"must be a finite number in [0, 1], got {_show(cols.values[i])}",
            "value_out_of_range",
        )
    if bad_conf[i]:
        return (
            "confidence",
            f"must be a finite number in [0, 1], got {_show(cols.confidences[i])}",
            "confidence_out_of_range",
        )
    if bad_ttl[i]:
        return (
            "ttl_s",
            f"must be in (0, {max_ttl_s:g}], got {_show(cols.ttls_s[i])}",
            "ttl_out_of_range",
        )
    if bad_ts_range[i]:
        return "timestamp", "must be a finite, non-negative unix time", "invalid_timestamp"
    if future[i]:
        return "timestamp", f"is more than {max_skew_s:g} s in the future", "timestamp_in_future"
    return "", "invalid signal", "malformed"


def _show(x: float) -> str:
    return repr(float(x)) if math.isfinite(x) else str(x)
