"""Snapshot format of one shard: versioned, numpy ``.npz`` (no pickle), checked on load.

A snapshot holds every per-row array of the agent table, the ids, the in-flight records,
the labels, the metrics counters and a JSON header. ``load`` trusts nothing: a missing
array, a wrong shape or dtype, duplicate ids or a malformed header is an ``InvalidInput``
naming what is wrong, never a numpy error deep inside the restore.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.core.errors import InvalidInput
from actors.core.models import DIMENSIONS
from actors.core.table import AgentTable

SNAPSHOT_VERSION = 3
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


def _open(data: bytes) -> Any:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise _bad("snapshot", f"not a snapshot archive: {exc}") from exc


def _header(z: Any) -> dict[str, Any]:
    if _META not in z.files:
        raise _bad(_META, "header missing")
    try:
        meta = json.loads(z[_META].tobytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(_META, f"header is not JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise _bad(_META, "header is not an object")
    return meta


def history_size(data: bytes) -> Any:
    """The history size a snapshot was taken with (read before building the state)."""
    with _open(data) as z:
        return _header(z).get("history_size")


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
        for name, spec in table.specs.items():
            if name not in z.files:
                raise _bad(name, "array missing")
            arr = z[name]
            if arr.shape != (*spec.lead, n):
                raise _bad(name, f"shape {arr.shape}, expected {(*spec.lead, n)}")
            if not np.can_cast(arr.dtype, spec.dtype, casting="same_kind"):
                raise _bad(name, f"dtype {arr.dtype}, expected {spec.dtype}")
            arrays[name] = arr
        inflight, labels = meta.get("inflight", []), meta.get("labels", {})
        known = set(ids)
        if not isinstance(inflight, list) or not all(
            isinstance(r, list) and len(r) == 8 and r[0] in known for r in inflight
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
    return SnapshotData(H, ids, arrays, inflight, labels, float(meta.get("taken_at", 0.0)), metrics)
