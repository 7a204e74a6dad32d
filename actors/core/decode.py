"""Batch bodies from JSON bytes straight into columns, for the common case of a clean batch.

``columns_from_json`` decodes ``{"signals": [...]}`` with msgspec into typed structs
(no dict per item, no pydantic) and builds the same ``SignalColumns`` that
``columns_from_dicts`` builds from the parsed JSON. It takes only what is exactly right:
every field of every item of the JSON type the strict model takes (a number for a number,
never a boolean or a numeric string), no unknown field, none missing, 1 to 10,000 items.
Anything else returns None and the caller takes the precise path, which reports each bad
item by index, field and reason; so the per-item error reports are exactly what they were.
Range and pattern checks (value in [0, 1], the id pattern, TTL bounds…) are not done here:
``validate`` in the shard applies them to both paths' columns alike.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import numpy as np

from actors.core.columns import SignalColumns, timestamp_column
from actors.core.models import DEFAULT_TTL_S, MAX_SIGNALS_PER_BATCH, MAX_TRACE_ID_LEN, TYPE_CODE
from actors.core.trace_links import distinct_traces


class _Item(msgspec.Struct, forbid_unknown_fields=True):
    agent_id: str
    signal_type: str
    value: float
    confidence: float = 1.0
    ttl_s: float = DEFAULT_TTL_S
    timestamp: float | str | None = None
    trace_id: Annotated[str, msgspec.Meta(max_length=MAX_TRACE_ID_LEN)] | None = None


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    signals: Annotated[list[_Item], msgspec.Meta(min_length=1, max_length=MAX_SIGNALS_PER_BATCH)]


_DECODER = msgspec.json.Decoder(_Batch)


def columns_from_json(raw: bytes) -> SignalColumns | None:
    """Columns of a clean batch body, or None: take the precise path."""
    try:
        items = _DECODER.decode(raw).signals
    except msgspec.MsgspecError:
        return None
    n = len(items)
    structural: dict[int, tuple[str, str]] = {}
    return SignalColumns(
        agent_ids=[it.agent_id for it in items],
        type_codes=np.fromiter((TYPE_CODE.get(it.signal_type, -1) for it in items), np.int64, n),
        values=np.fromiter((it.value for it in items), np.float64, n),
        confidences=np.fromiter((it.confidence for it in items), np.float64, n),
        ttls_s=np.fromiter((it.ttl_s for it in items), np.float64, n),
        timestamps_s=timestamp_column([it.timestamp for it in items], structural),
        structural=structural,
        trace_ids=distinct_traces(it.trace_id for it in items),
    )
