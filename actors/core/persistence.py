"""Snapshot format of one shard: versioned, numpy ``.npz`` (no pickle), checked on load.

A snapshot holds every per-row array of the agent table, the ids, the in-flight records,
the labels, the metrics counters and a JSON header. ``load`` trusts nothing: a missing
array, a wrong shape or dtype, duplicate ids or a malformed header is an ``InvalidInput``
naming what is wrong, never a numpy or zipfile error deep inside the restore: a bad CRC,
a truncated archive, a flipped byte in a header or an empty file alike.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.core.errors import InvalidInput
from actors.core.models import DIMENSIONS
from actors.core.table import AgentTable

SNAPSHOT_VERSION = 3
# Per-row arrays added after version 3 was first written (what outcomes teach, and the
# in-flight mirrors rebuilt from the records): a snapshot without them still loads.
ADDED_ARRAYS = frozenset(
    {"ok_rate", "outcomes", "fail_run", "health", "ejected_until", "ejections"}
    | {"work_s", "work_n", "parallel", "par_num", "par_den", "open_n", "completes"}
    | {"arrive_fast", "arrive_slow", "arrive_at"}
    | {"hrw"}  # an agent's rendezvous hash (affinity), recomputed when absent
)
_META = "__meta__"


@dataclass
class SnapshotData:
    history_size: int
    ids: list[str]
    arrays: dict[str, np.ndarray]
    inflight: list[list[Any]]
    labels: dict[str, dict[str, str]]
    taken_at_s: float
    metrics: dict[str, Any]
    speed: dict[str, Any] = field(default_factory=dict)  # absent before it was kept


def parts(
    table: AgentTable, history_size: int, extra: dict[str, Any], taken_at_s: float
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays (views of the first n rows, not copies) and the header of a snapshot."""
    n = table.n
    meta = {
        "version": SNAPSHOT_VERSION,
        "history_size": history_size,
        "dimensions": list(DIMENSIONS),
        "ids": list(table.ids),
        "taken_at": taken_at_s,
        **extra,
    }
    return {name: a[..., :n] for name, a in table.arrays.items()}, meta


# Array bytes go out in pieces of this size: zlib's CRC and the file write release the
# GIL for each, so a snapshot written from a thread never holds it for long (np.savez
# copies 16 MB at a time with the GIL held, which a selection on the loop would feel).
WRITE_PIECE_BYTES = 1 << 20


def write(arrays: dict[str, np.ndarray], meta: dict[str, Any], out: Any) -> None:
    """The snapshot archive into a binary file object: the same ``.npz`` layout that
    ``np.savez`` writes (stored, not compressed), which ``np.load`` reads."""
    header = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with zipfile.ZipFile(out, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in {**arrays, _META: header}.items():
            a = np.ascontiguousarray(arr)
            with zf.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array_header_2_0(
                    member, np.lib.format.header_data_from_array_1_0(a)
                )
                data = a.reshape(-1).view(np.uint8)
                for start in range(0, len(data), WRITE_PIECE_BYTES):
                    member.write(data[start : start + WRITE_PIECE_BYTES].data)


def dump(table: AgentTable, history_size: int, extra: dict[str, Any], taken_at_s: float) -> bytes:
    arrays, meta = parts(table, history_size, extra, taken_at_s)
    buf = io.BytesIO()
    write(arrays, meta, buf)
    return buf.getvalue()


def _bad(field: str, reason: str) -> InvalidInput:
    return InvalidInput("corrupt or incompatible snapshot", [{"field": field, "reason": reason}])


# What a damaged archive can raise from zipfile, numpy's header parser or json: a bad
# CRC, a truncated member, a garbled header. Each becomes the project's error.
_DECODE_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    EOFError,
    OSError,
    OverflowError,
    SyntaxError,
    MemoryError,
    NotImplementedError,
    zlib.error,
    struct.error,
)


@contextlib.contextmanager
def _decoding(field: str) -> Iterator[None]:
    try:
        yield
    except InvalidInput:
        raise
    except _DECODE_ERRORS as exc:
        raise _bad(field, f"{type(exc).__name__}: {exc}") from exc


def _open(data: bytes | Any) -> zipfile.ZipFile:
    with _decoding("snapshot"):
        return zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)


def _member(z: zipfile.ZipFile, name: str, shape: tuple[int, ...] | None) -> np.ndarray:
    """One ``.npy`` member, its shape checked before its data is read (a flipped byte in
    a header must not allocate gigabytes), its CRC checked by reading to the end."""
    if f"{name}.npy" not in z.namelist():
        raise _bad(name, "array missing")
    with _decoding(name), z.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            got, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            got, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise _bad(name, f"npy format {version}")
        if shape is not None and tuple(got) != shape:
            raise _bad(name, f"shape {tuple(got)}, expected {shape}")
        if dtype.hasobject or fortran:
            raise _bad(name, f"unexpected layout ({dtype}, fortran={fortran})")
        nbytes = int(np.prod(got, dtype=np.int64)) * dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes or f.read(1):  # the read past the end checks the CRC
            raise _bad(name, f"{len(raw)} bytes of data, expected {nbytes}")
        return np.frombuffer(raw, dtype).reshape(got)


def _header(z: zipfile.ZipFile) -> dict[str, Any]:
    raw = _member(z, _META, None)
    with _decoding(_META):
        meta = json.loads(raw.tobytes())
    if not isinstance(meta, dict):
        raise _bad(_META, "header is not an object")
    return meta


def history_size(data: bytes) -> Any:
    """The history size a snapshot was taken with (read before building the state)."""
    with _open(data) as z:
        return _header(z).get("history_size")


# A snapshot is checked back in pieces of this size, read into one reused buffer: the
# read and the CRC release the GIL, so a host's event loop barely notices the check.
VERIFY_PIECE_BYTES = 4 << 20
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # a zip member's local file header


def verify(data: bytes | Any) -> None:
    """Check a snapshot as written (every member's CRC and the header) without building
    a state: a host reads each snapshot back before it lets the WAL before it go.
    ``data``: the bytes, or a seekable binary file (read in pieces, never whole)."""
    with _open(data) as z:
        _header(z)
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        buf = bytearray(VERIFY_PIECE_BYTES)
        for info in z.infolist():
            with _decoding(info.filename):
                _check_member(source, info, memoryview(buf))


def _check_member(source: Any, info: zipfile.ZipInfo, buf: memoryview) -> None:
    if info.compress_type != zipfile.ZIP_STORED:
        raise _bad(info.filename, "compressed member (snapshots are stored)")
    source.seek(info.header_offset)
    head = source.read(_LOCAL_HEADER.size)
    if len(head) != _LOCAL_HEADER.size or head[:4] != b"PK\x03\x04":
        raise _bad(info.filename, "local header damaged")
    name_len, extra_len = _LOCAL_HEADER.unpack(head)[-2:]
    source.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
    crc, left = 0, info.compress_size
    while left:
        got = source.readinto(buf[: min(left, len(buf))])
        if not got:
            raise _bad(info.filename, f"truncated: {left} bytes missing")
        crc = zlib.crc32(buf[:got], crc)
        left -= got
    if crc != info.CRC:
        raise _bad(info.filename, "CRC mismatch")


def load(data: bytes, table: AgentTable) -> SnapshotData:
    """Read and check a snapshot against the arrays ``table`` has registered."""
    with _open(data) as z:
        meta = _header(z)
        if meta.get("version") != SNAPSHOT_VERSION:
            raise InvalidInput(
                "unsupported snapshot version",
                [{"field": "version", "reason": f"got {meta.get('version')!r}"}],
            )
        if meta.get("dimensions") != list(DIMENSIONS):
            raise _bad("dimensions", f"expected {list(DIMENSIONS)}")
        ids, H = meta.get("ids"), meta.get("history_size")
        if not isinstance(H, int) or H < 1:
            raise _bad("history_size", f"got {H!r}")
        if not isinstance(ids, list) or not all(isinstance(a, str) for a in ids):
            raise _bad("ids", "must be a list of strings")
        if len(set(ids)) != len(ids):
            raise _bad("ids", "duplicate agent ids")
        n = len(ids)
        arrays: dict[str, np.ndarray] = {}
        members = set(z.namelist())
        for name, spec in table.specs.items():
            if name in ADDED_ARRAYS and f"{name}.npy" not in members:
                # Written before this figure was kept: every agent starts it afresh.
                arrays[name] = np.full((*spec.lead, n), spec.fill, spec.dtype)
                continue
            arr = _member(z, name, (*spec.lead, n))
            if not np.can_cast(arr.dtype, spec.dtype, casting="same_kind"):
                raise _bad(name, f"dtype {arr.dtype}, expected {spec.dtype}")
            arrays[name] = arr
        inflight, labels = meta.get("inflight", []), meta.get("labels", {})
        known = set(ids)
        if not isinstance(inflight, list) or not all(
            isinstance(r, list) and len(r) in (8, 9) and r[0] in known for r in inflight
        ):
            raise _bad("inflight", "malformed in-flight records")
        if not isinstance(labels, dict) or not all(
            a in known and isinstance(m, dict) and all(isinstance(v, str) for v in m.values())
            for a, m in labels.items()
        ):
            raise _bad("labels", "malformed labels")
        metrics = meta.get("metrics", {})
        if not isinstance(metrics, dict):
            raise _bad("metrics", "must be an object")
        with _decoding("taken_at"):
            taken_at = float(meta.get("taken_at", 0.0))
        speed = meta.get("speed", {})
        if not isinstance(speed, dict):
            raise _bad("speed", "must be an object")
    return SnapshotData(H, ids, arrays, inflight, labels, taken_at, metrics, speed)
