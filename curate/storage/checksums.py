"""Checksums of the workspace's Arrow files (derived columns, selections): a file overwritten in place keeps its size
and often still parses (4 KB of zeros in a score column read as rows of score 0.0, outside the judge's scale, and
changed the selection); its record batches' CRC-32, kept in its schema metadata, finds it.

The schema cannot hold a checksum of the whole file it is part of: the checksum covers the bytes between the schema
message and the footer (the record batches and dictionaries), which do not depend on the schema's metadata. A file
is checked the first time a process reads it (the verdict is kept by the file's identity and the checksum it records); a file
written before (2026-12) carries no checksum and is read as it was."""

from __future__ import annotations

import os
import struct
import zlib
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


def check_written(path: Path, schema: Any, source: Any) -> None:
    """Raise :class:`DamagedFileError` naming ``path`` when its record batches are not those written (the checksum
    in ``schema``, its schema, differs); a file without a checksum passes. ``source``: the pyarrow memory map the
    schema was read from, whose bytes are checked (not the path opened again: a writer may have replaced the file
    since, and its new bytes are no match for the old schema's checksum)."""
    recorded = (schema.metadata or {}).get(CHECKSUM_KEY)
    if recorded is None:
        return
    written = recorded.decode(errors="replace")
    stat = os.fstat(source.fileno())
    # the file's identity and the checksum it records: a file rewritten within one tick of the clock, at the same
    # size and even the same inode number, records another checksum unless its batches are the same bytes
    identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, written)
    found = _verdicts.get(identity)
    if found is None:
        try:
            found = batches_crc(source.read_at(source.size(), 0))
        except ValueError as exc:
            found = f"unreadable ({exc})"
        if len(_verdicts) >= _MAX_VERDICTS:
            _verdicts.clear()
        _verdicts[identity] = found
    if found != written:
        raise DamagedFileError(DamagedFile(Path(path), DamageCode.NOT_WRITTEN, f"checksum {found}, written {written}"))


_MAX_VERDICTS = 4096
_verdicts: dict[tuple, str] = {}  # a file's identity -> the checksum its batches had, once a process
