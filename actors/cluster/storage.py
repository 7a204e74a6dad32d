"""Where a shard's snapshots live: a local directory, or a URI on shared storage.

A local path (or ``file://``) is a directory on this node's disk (or a shared mount); a
URI with another scheme (``s3://bucket/prefix``, ``gs://…``) goes through ``pyarrow.fs``,
the filesystem layer Ray users know from Ray Train's ``storage_path``. S3 options ride in
the URI's query, as pyarrow reads them: ``s3://bucket/prefix?endpoint_override=
http://127.0.0.1:9000&scheme=http`` for a server of one's own; credentials come from the
usual ``AWS_*`` environment of the shard processes, or the URI
(``s3://key:secret@bucket/prefix``; never shown back). Every put is atomic: a temporary
name then a rename on a directory, a single object put on an object store.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

# Where damaged files go, beside the others: kept for an operator, never pruned.
QUARANTINE = "quarantine"


class Storage(Protocol):
    where: str

    def put(self, name: str, write: Callable[[BinaryIO], None]) -> int: ...
    def get(self, name: str) -> bytes: ...
    def open_read(self, name: str) -> Any: ...  # a seekable binary file, a context manager
    def names(self) -> list[str]: ...
    def delete(self, name: str) -> None: ...
    def set_aside(self, name: str) -> str: ...


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


class LocalStorage:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(str(root).removeprefix("file://"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.where = str(self.root)

    def put(self, name: str, write: Callable[[BinaryIO], None]) -> int:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
                size = fh.tell()
            os.replace(tmp, self.root / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # The rename itself is durable only once the directory is.
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return size

    def get(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def open_read(self, name: str) -> Any:
        return open(self.root / name, "rb")

    def names(self) -> list[str]:
        return sorted(
            p.name for p in self.root.iterdir() if not p.name.startswith(".") and p.is_file()
        )

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def set_aside(self, name: str) -> str:
        """Move a damaged file into ``quarantine/`` for an operator; never deleted."""
        aside = self.root / QUARANTINE / name
        aside.parent.mkdir(exist_ok=True)
        os.replace(self.root / name, aside)
        return str(aside)


class ArrowStorage:
    """Any filesystem ``pyarrow.fs`` opens from a URI (S3, GCS, HDFS…)."""

    def __init__(self, uri: str) -> None:
        try:
            from pyarrow import fs
        except ImportError as exc:  # an optional dependency: say which
            raise RuntimeError(
                f"storage {uri!r} needs pyarrow: pip install 'ripple-coordination[s3]'"
            ) from exc
        self._fs_mod = fs
        self.fs, self.base = fs.FileSystem.from_uri(uri)
        self.base = self.base.rstrip("/")
        # Shown in /v1/stats: never the credentials a URI may carry (s3://key:secret@…).
        self.where = re.sub(r"//[^/@]*@", "//", uri.split("?", 1)[0])
        self.fs.create_dir(self.base, recursive=True)

    def _path(self, name: str) -> str:
        return f"{self.base}/{name}"

    def put(self, name: str, write: Callable[[BinaryIO], None]) -> int:
        # An object store makes a put visible whole or not at all.
        with self.fs.open_output_stream(self._path(name)) as out:
            stream: Any = out
            write(stream)
            return int(stream.tell())

    def get(self, name: str) -> bytes:
        with self.fs.open_input_stream(self._path(name)) as src:
            return bytes(src.readall())

    def open_read(self, name: str) -> Any:
        return self.fs.open_input_file(self._path(name))  # random access: zip reads its end

    def names(self) -> list[str]:
        selector = self._fs_mod.FileSelector(self.base, allow_not_found=True)
        return sorted(
            info.base_name
            for info in self.fs.get_file_info(selector)
            if info.type == self._fs_mod.FileType.File
        )

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self._path(name))

    def set_aside(self, name: str) -> str:
        aside = self._path(f"{QUARANTINE}/{name}")
        self.fs.create_dir(self._path(QUARANTINE), recursive=True)
        self.fs.move(self._path(name), aside)
        return aside


def open_storage(path: str, shard_index: int) -> Storage:
    """This shard's folder (``shard-<index>``) under ``path``."""
    if is_uri(path):
        base, _, query = path.partition("?")
        uri = f"{base.rstrip('/')}/shard-{shard_index}" + (f"?{query}" if query else "")
        return ArrowStorage(uri)
    return LocalStorage(Path(path.removeprefix("file://")) / f"shard-{shard_index}")
