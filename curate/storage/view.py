"""A Workspace object's view of the pool, kept per thread.

The pool a Workspace object read (the memory-mapped ``datasets.Dataset``), its stamp, its ids and their index are
this thread's: threads sharing one object each see the pool as their own operations pin it
(:func:`curate.storage.files.operation`), so a load in one thread, or a read outside an operation that finds a new
pool on disk, never swaps the pool under another thread's operation (an embedding set paired the new pool's ids
with the old pool's vectors). Each thread that reads the pool opens it once (memory-mapped) and holds its own ids,
as one object per thread would.
"""

from __future__ import annotations

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
    _pool = _per_thread("pool", "This thread's pool (None: read it again).")
    _pool_stamp = _per_thread("pool_stamp", "The stamp (inode, mtime) of the pool on disk when it was read.")
    _ids = _per_thread("ids", "Row ids of this thread's pool, in pool order (None: not read yet).")
    _index = _per_thread("index", "Row id -> position in this thread's pool (None: not built yet).")
