"""How a dry run reads the response cache where it is, changing nothing beside it (no copy).

SQLite opening a WAL database the usual way, read-only (``mode=ro``) too, creates its ``-wal`` and ``-shm`` files
beside it where none are (``mode=ro`` then leaves them behind; a read-write open removes them, changing the folder's
mtime). So:

* a ``-wal`` beside the file (a writer has the cache open, or a killed one left answers in it): ``mode=ro``, which
  reads through the writer's WAL index and creates nothing; SQLite's locks keep each read a consistent snapshot,
  answers committed in the WAL included, a writer's open transaction not;
* no ``-wal`` (no writer: its last connection moved every answer into the file and removed it): ``immutable=1``,
  which opens no other file and takes no lock; the file's (inode, size, mtime) before and after each read tell
  whether a writer that started meanwhile moved answers into it (a checkpoint), and that read is done again.

Measured on a 985 MB cache (250,000 answers): nothing to do before the first lookup, where the copy it replaced took
2.1-4.0 s and 985 MB of temporary disk per dry run, a backup into a temporary file 2.7 s and as much disk, a backup
into memory 2.7 s and 1.07 GiB of memory; 10,000 lookups cost the same either way (0.1 s for the keys, 1.5 s with
their 4 KB answers).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

FileState = tuple[int, int, int]


def file_state(path: Path) -> FileState | None:
    """(inode, size, mtime in ns) of ``path``: a write or a replacement changes it; None for no file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def connect_read_only(path: Path) -> tuple[sqlite3.Connection, FileState | None]:
    """A connection that reads the cache file ``path`` and writes nothing beside it, and the file's state to compare
    after each read (None where SQLite's locks keep the reads consistent: a ``-wal`` is there)."""
    uri = path.resolve().as_uri()
    if Path(f"{path}-wal").exists():
        return sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60.0, isolation_level=None,
                               check_same_thread=False), None
    state = file_state(path)
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False), state
