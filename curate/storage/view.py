"""A Workspace object's view of the pool, kept per thread.

The pool a Workspace object read (the memory-mapped ``datasets.Dataset``), its stamp, its ids and their index are
this thread's: threads sharing one object each see the pool as their own operations pin it
(:func:`curate.storage.files.operation`), so a load in one thread, or a read outside an operation that finds a new
pool on disk, never swaps the pool under another thread's operation (an embedding set paired the new pool's ids
with the old pool's vectors). Each thread that reads the pool opens it once (memory-mapped) and holds its own ids,
as one object per thread would.
"""

from __future__ import annotations

import os
import threading
from typing import Any


def _per_thread(name: str, doc: str) -> property:
    def get(self: Any) -> Any:
        return getattr(self._view, name, None)

    def put(self: Any, value: Any) -> None:
        setattr(self._view, name, value)

    return property(get, put, doc=doc)


class ThreadView:
    """The Workspace attributes that are per thread (None in a thread that has not read the pool)."""

    _view: threading.local  # set by Workspace.__init__
    _operations: threading.local
    _pool_dir: str
    _new: bool  # no workspace on disk: its first write makes it
    path: Any
    _pool = _per_thread("pool", "This thread's pool (None: read it again).")
    _pool_stamp = _per_thread("pool_stamp", "The stamp (inode, mtime) of the pool on disk when it was read.")
    _ids = _per_thread("ids", "Row ids of this thread's pool, in pool order (None: not read yet).")
    _index = _per_thread("index", "Row id -> position in this thread's pool (None: not built yet).")

    def refresh(self) -> None:
        """Read the pool again if another process (or object) loaded rows since this one read it: a notebook's
        workspace stays current, and a write keyed by pool order covers every row on disk."""
        from curate.storage.pool import pool_stamp

        self._on_disk()
        if self._pool is not None and pool_stamp(self) != self._pool_stamp:
            self._pool, self._ids, self._index = None, None, None

    def _on_disk(self) -> bool:
        """``exists``: a new workspace made since (by this object's write, or another process) is new no more; outside
        an operation, one removed or moved since this object saw it is new again, as one opened at a path holding
        none: its reads say ``no workspace at PATH`` (not 'no column', 'row 0 is outside the pool' or a
        FileNotFoundError), its next load makes it anew. Inside one, its writes say it went during the run."""
        from curate.storage.files import MANIFEST

        there = os.path.exists(self.path / MANIFEST)
        if self._new and there:
            self._new = False
        elif not self._new and not there and not getattr(self._operations, "n", 0):
            self._new = True
        return not self._new

    def _current(self) -> None:
        """Outside an operation, a read of the pool or its ids sees the pool on disk now (one stat, ~2 us)."""
        if self._pool is not None and not getattr(self._operations, "n", 0):
            try:
                st = os.stat(self._pool_dir)
                stamp: tuple[int, int] | None = (st.st_ino, st.st_mtime_ns)  # as pool.pool_stamp
            except OSError:
                stamp = None
            if stamp != self._pool_stamp:
                self._pool, self._ids, self._index = None, None, None
