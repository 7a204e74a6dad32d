"""The write-ahead log of one shard: record format, checksums and replay (no I/O here).

Every change to a shard's state is one record: an ingest batch (only the items that were
applied, with their effective timestamps, so a replay does not depend on when it runs),
assignments with the ids that were handed out, completions, metadata, deletes and expiry
sweeps. Each carries the shard's clock at the time, and a replay (``ShardState.replay``) runs the
same verbs with the clock set to it, so the state after a replay is the state the
records produced.

A segment starts with ``SEGMENT_HEADER`` (the format version). A record is
``u32 length | u32 crc32(body) | body``; the body is a JSON header (op, time, arguments,
and the dtype and length of each array) then the raw bytes of the arrays. A record that
runs past the end of the data or fails its checksum ends the segment: it is the torn tail
of a write a crash interrupted, and ``decode`` reports it so the caller can log it.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.core.columns import SignalColumns

SEGMENT_HEADER = b"RIPPLE-WAL/1\n"
_FRAME = struct.Struct("<II")
_HEADER_LEN = struct.Struct("<I")
# Agent ids are validated ([A-Za-z0-9._:@-]), so the unit separator never occurs in one.
_ID_SEP = "\x1f"


@dataclass
class Record:
    op: str
    t: float
    args: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def encode(
    op: str,
    t: float,
    args: dict[str, Any] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
) -> bytes:
    arrays = arrays or {}
    header = {
        "op": op,
        "t": t,
        "args": args or {},
        "arrays": [[k, a.dtype.str, int(a.size)] for k, a in arrays.items()],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    body = b"".join(
        [
            _HEADER_LEN.pack(len(head)),
            head,
            *(np.ascontiguousarray(a).tobytes() for a in arrays.values()),
        ]
    )
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def encode_ingest(t: float, cols: SignalColumns) -> bytes:
    """An applied ingest batch (ids valid, timestamps effective)."""
    ids = np.frombuffer(_ID_SEP.join(cols.agent_ids).encode(), np.uint8)
    return encode(
        "ingest",
        t,
        arrays={
            "ids": ids,
            "codes": cols.type_codes.astype(np.int8),
            "values": cols.values,
            "confidences": cols.confidences,
            "ttls": cols.ttls_s,
            "ts": cols.timestamps_s,
        },
    )


def _decode_body(body: bytes) -> Record:
    (head_len,) = _HEADER_LEN.unpack_from(body)
    header = json.loads(body[4 : 4 + head_len])
    pos = 4 + head_len
    arrays: dict[str, np.ndarray] = {}
    for name, dtype, size in header["arrays"]:
        dt = np.dtype(dtype)
        arrays[name] = np.frombuffer(body, dt, size, pos)
        pos += dt.itemsize * size
    return Record(header["op"], float(header["t"]), header["args"], arrays)


@dataclass
class Decoded:
    records: list[Record]
    good_bytes: int  # length of the valid prefix (header included)
    torn: str | None  # why decoding stopped early, or None


def decode(data: bytes) -> Decoded:
    """Every whole, checksummed record of a segment; stops at the first bad one."""
    if not data.startswith(SEGMENT_HEADER):
        return Decoded([], 0, "not a WAL segment (header missing or of another version)")
    pos = len(SEGMENT_HEADER)
    records: list[Record] = []
    while pos < len(data):
        if pos + _FRAME.size > len(data):
            return Decoded(records, pos, f"torn frame header at byte {pos}")
        length, crc = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length
        if end > len(data):
            return Decoded(records, pos, f"torn record at byte {pos} ({length} bytes announced)")
        body = data[pos + _FRAME.size : end]
        if zlib.crc32(body) != crc:
            return Decoded(records, pos, f"checksum mismatch at byte {pos}")
        try:
            records.append(_decode_body(body))
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            return Decoded(records, pos, f"malformed record at byte {pos}: {exc}")
        pos = end
    return Decoded(records, pos, None)


def ingest_columns(rec: Record) -> SignalColumns:
    """The applied batch an ``ingest`` record holds."""
    a = rec.arrays
    raw = a["ids"].tobytes().decode()
    ids = raw.split(_ID_SEP) if raw else []
    return SignalColumns(
        agent_ids=ids,
        type_codes=a["codes"].astype(np.int64),
        values=a["values"].copy(),
        confidences=a["confidences"].copy(),
        ttls_s=a["ttls"].copy(),
        timestamps_s=a["ts"].copy(),
    )
