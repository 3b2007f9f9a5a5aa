"""Checksums of the workspace's Arrow files (derived columns, selections): a file overwritten in place keeps its size
and often still parses (4 KB of zeros in a score column read as rows of score 0.0, outside the judge's scale, and
changed the selection); its record batches' CRC-32, kept in its schema metadata, finds it.

The schema cannot hold a checksum of the whole file it is part of: the checksum covers the bytes between the schema
message and the footer (the record batches and dictionaries), which do not depend on the schema's metadata. A file
is checked the first time a process reads it (the verdict is kept by path, size and modification time); a file
written before (2026-12) carries no checksum and is read as it was."""

from __future__ import annotations

import mmap
import struct
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from curate.codes import DamageCode
from curate.storage.damage import DamagedFile, DamagedFileError

CHECKSUM_KEY = b"curate_batches_crc32"  # schema metadata key: hex CRC-32 of the file's record batches
_MAGIC = b"ARROW1"


def batches_span(data: Any) -> tuple[int, int]:
    """(start, end) of the record batches in the bytes of an Arrow IPC file: after the magic and the schema message
    (continuation marker, length, flatbuffer), before the footer (its length and the magic end the file)."""
    view = memoryview(data)
    if len(view) < 26 or bytes(view[:6]) != _MAGIC or bytes(view[-6:]) != _MAGIC:
        raise ValueError("no Arrow file magic at its start and end")
    marker, schema_len = struct.unpack_from("<Ii", view, 8)
    (footer_len,) = struct.unpack_from("<i", view, len(view) - 10)
    start, end = 16 + schema_len, len(view) - 10 - footer_len
    if marker != 0xFFFFFFFF or not 16 <= start <= end:
        raise ValueError("its schema message or footer length is not an Arrow file's")
    return start, end


def batches_crc(data: Any) -> str:
    """The hex CRC-32 of an Arrow IPC file's record batches (``data``: its bytes)."""
    start, end = batches_span(data)
    return f"{zlib.crc32(memoryview(data)[start:end]):08x}"


def with_checksum(table: Any) -> Any:
    """``table`` with the checksum of its record batches in its schema metadata (serialized once in memory to
    compute it: the batches' bytes are the same under any schema metadata)."""
    import pyarrow as pa

    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != CHECKSUM_KEY}
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return table.replace_schema_metadata({**meta, CHECKSUM_KEY: batches_crc(sink.getvalue()).encode()})


def check_written(path: Path, schema: Any) -> None:
    """Raise :class:`DamagedFileError` naming ``path`` when its record batches are not those written (the checksum
    in ``schema``, its schema, differs); a file without a checksum passes."""
    recorded = (schema.metadata or {}).get(CHECKSUM_KEY)
    if recorded is None:
        return
    stat = Path(path).stat()
    found = _file_crc(str(path), stat.st_size, stat.st_mtime_ns)
    if found != recorded.decode(errors="replace"):
        raise DamagedFileError(DamagedFile(Path(path), DamageCode.NOT_WRITTEN,
                                           f"checksum {found}, written {recorded.decode(errors='replace')}"))


@lru_cache(maxsize=1024)
def _file_crc(path: str, size: int, mtime_ns: int) -> str:
    """The file's batches' checksum, once per (path, size, modification time) a process."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            return batches_crc(data)
        except ValueError as exc:
            return f"unreadable ({exc})"
