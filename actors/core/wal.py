"""The write-ahead log of one shard: record format, checksums and replay (no I/O here).

Every change to a shard's state is one record: an ingest batch (only the items that were
applied, with their effective timestamps, so a replay does not depend on when it runs),
assignments with the ids that were handed out, completions, metadata, deletes and expiry
sweeps. Each carries the shard's clock at the time, and a replay (``recovery.replay``) runs the
same verbs with the clock set to it, so the state after a replay is the state the
records produced.

A segment starts with ``SEGMENT_HEADER`` (the format version). A record is
``u32 length | u32 crc32(body) | body``; the body is a JSON header (op, time, arguments,
and the dtype and length of each array) then the raw bytes of the arrays. A record that
runs past the end of the data or fails its checksum is damage: at the end, the torn tail
of a write a crash interrupted; in the middle, a flipped byte. ``decode`` skips it up to
the next record whose frame and checksum are whole (resynchronising on the header every
record starts with) and reports the byte ranges lost, so the caller can log them and keep
the damaged segment aside. A shard never appends behind a partial record (a failed append
is truncated away, or the log moves to a fresh segment), so a torn record is a crash's.
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
    good_bytes: int  # end of the last valid record (the header included)
    torn: str | None  # what the first damage was, or None for an intact segment
    # Byte ranges [start, end) skipped as damaged. A range that ends before the end of
    # the data is a corrupt record in the middle: the records after it were kept.
    lost: list[tuple[int, int]] = field(default_factory=list)

    @property
    def damaged_inside(self) -> bool:
        """Records were lost before intact ones, not just a torn tail."""
        return any(end < self.size for _, end in self.lost)

    size: int = 0


# Every record's JSON header starts so; resynchronising looks for it, then checks the
# frame before it (length and CRC), so random bytes cannot pass for a record.
_HEAD_MARK = b'{"op":"'
_MARK_OFFSET = _FRAME.size + _HEADER_LEN.size


def _record_at(data: bytes, pos: int) -> tuple[Record | None, int, str]:
    """The record framed at ``pos`` and where it ends, or None and why not."""
    if pos + _FRAME.size > len(data):
        return None, pos, f"torn frame header at byte {pos}"
    length, crc = _FRAME.unpack_from(data, pos)
    end = pos + _FRAME.size + length
    if end > len(data):
        return None, pos, f"torn record at byte {pos} ({length} bytes announced)"
    body = data[pos + _FRAME.size : end]
    if zlib.crc32(body) != crc:
        return None, pos, f"checksum mismatch at byte {pos}"
    try:
        return _decode_body(body), end, ""
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        return None, pos, f"malformed record at byte {pos}: {exc}"


def _resync(data: bytes, start: int) -> int | None:
    """The first position at or after ``start`` where a whole, checksummed record begins."""
    find = data.find(_HEAD_MARK, start + _MARK_OFFSET)
    while find >= 0:
        pos = find - _MARK_OFFSET
        if _record_at(data, pos)[0] is not None:
            return pos
        find = data.find(_HEAD_MARK, find + 1)
    return None


def decode(data: bytes) -> Decoded:
    """Every whole, checksummed record of a segment. A damaged stretch (a torn tail, a
    flipped byte, a garbled length) is skipped up to the next valid record and reported;
    a segment of another format version is not read at all."""
    if not data.startswith(SEGMENT_HEADER):
        if data.startswith(SEGMENT_HEADER[:7]) and b"\n" in data[: len(SEGMENT_HEADER)]:
            reason = "a WAL segment of another format version"
            return Decoded([], 0, reason, [(0, len(data))], len(data))
        first = _resync(data, 0)  # a damaged header: the records after it may be whole
        if first is None:
            reason = "not a WAL segment (header missing or damaged)"
            return Decoded([], 0, reason, [(0, len(data))] if data else [], len(data))
        out = Decoded([], 0, "segment header damaged", [(0, first)], len(data))
        pos = first
    else:
        out = Decoded([], len(SEGMENT_HEADER), None, [], len(data))
        pos = len(SEGMENT_HEADER)
    while pos < len(data):
        rec, end, why = _record_at(data, pos)
        if rec is not None:
            out.records.append(rec)
            pos = out.good_bytes = end
            continue
        out.torn = out.torn or why
        nxt = _resync(data, pos + 1)
        out.lost.append((pos, len(data) if nxt is None else nxt))
        if nxt is None:
            break
        pos = nxt
    return out


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
