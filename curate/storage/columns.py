"""Reading derived columns: ``Workspace.column`` and ``Workspace.row_values``, and ``Workspace.reading()``, a stretch
of reads (the report) in which each column is read from disk once, unless it changes meanwhile.

A column file holds (id, value, fingerprint) rows; a read aligns the values to the ids asked for (default: pool
order). Inside ``reading()`` the pool-order values of a column, and its reduced row values, are kept until the
stretch ends, keyed by the column file's identity (inode, size, modification time) and the pool's, so a column
another process rewrote is read again. Each caller gets a list of its own; per-turn lists inside are shared, to
read, not to change. A stretch belongs to its thread: threads sharing one Workspace
each have their own (one thread's stretch ending never ends another's), and a thread outside one reads from disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from curate.defaults import WORKSPACE
from curate.errors import WorkspaceError
from curate.storage.files import (
    LOCK_FILE,
    LOCKS_DIR,
    LockFolderGone,
    check_name,
    held,
    now,
    read_arrow,
    write_arrow,
)
from curate.storage.lock_holders import describe_holder
from curate.storage.manifest import workspace_gone
from curate.storage.read_log import note_read
from curate.storage.step import reduce_turns

log = logging.getLogger("curate")
Workspace = Any  # curate.storage.workspace.Workspace (not imported: it imports this module)


def column_names(columns: str | Iterable[str] | None) -> list[str] | None:
    """The column names a public ``columns=`` argument gives: one name as a str, or names; None stays None."""
    if columns is None:
        return None
    return [columns] if isinstance(columns, str) else list(columns)


@contextlib.contextmanager
def reading(ws: Workspace) -> Iterator[Workspace]:
    """``Workspace.reading``'s body: memoised column reads until this thread's outermost stretch ends."""
    if _memo(ws) is not None:  # nested: the outer stretch keeps what is read
        yield ws
        return
    ws._reads.memo = {}
    try:
        yield ws
    finally:
        ws._reads.memo = None


def _memo(ws: Workspace) -> dict | None:
    """This thread's memo of column reads (None: outside a ``reading()`` stretch)."""
    return getattr(ws._reads, "memo", None)


def fingerprints(table: Any) -> dict[str, str | None]:
    """``Workspace.column_fingerprints``'s body: a column file's row id -> step fingerprint (None: stored without)."""
    fps = table.column("fingerprint").to_pylist() if "fingerprint" in table.column_names else None
    ids = table.column("id").to_pylist()
    return dict(zip(ids, fps, strict=True)) if fps is not None else dict.fromkeys(ids)


def column_lock(ws: Workspace, column: str, on_wait: Callable[[], None] | None) -> Any:
    """``Workspace.column_lock``'s body: ``WS/locks/column-<column>.lock``, a warning when it waits by default."""
    check_name(column)
    if not ws.path.is_dir():
        raise workspace_gone(ws.path)
    folder = ws.path / LOCKS_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"column-{column}.lock"
    if on_wait is None:
        def on_wait() -> None:
            log.warning("waiting for another process or thread writing column %r in %s (%s), held by %s", column,
                        ws.path, path, describe_holder(path))
    return _gone_if_moved(ws, held(path, on_wait))


def workspace_lock(ws: Workspace, on_wait: Callable[[], None] | None) -> Any:
    """``Workspace.lock``'s body: ``WS/.lock``; ``on_wait`` at once when busy, or by default a warning (logger
    ``curate``) naming the holder once the wait passes ``WORKSPACE.lock_notice_s``, the turn-taking of writes
    staying quiet."""
    path = ws.path / LOCK_FILE
    if not ws.path.is_dir():  # removed under a running command: filelock would make the folder and .lock anew
        raise workspace_gone(ws.path)
    if on_wait is not None:
        return _gone_if_moved(ws, held(path, on_wait))

    def notice() -> None:
        log.warning("waiting for the workspace lock on %s, held by %s", path, describe_holder(path))
    return _gone_if_moved(ws, held(path, notice, patience_s=WORKSPACE.lock_notice_s))


@contextlib.contextmanager
def _gone_if_moved(ws: Workspace, lock: Any) -> Iterator[None]:
    """``lock`` held; ``workspace_gone`` when the workspace's folder was moved or removed while this process waited
    for it (a failed first load's take-back renames the folder aside, its lock file in it): the lock of the file moved
    with it, or of one filelock made anew in a folder it made anew at the path (it makes a lock file's folders), is
    no lock of this workspace, and nothing is written there."""
    try:
        folder = os.stat(ws.path)
    except FileNotFoundError:
        raise workspace_gone(ws.path) from None
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(lock)
            same = os.path.samestat(os.stat(ws.path), folder)
        except (LockFolderGone, FileNotFoundError):
            same = False
        if not same:
            stack.close()  # let go of it first
            raise workspace_gone(ws.path) from None
        yield


def check_ids_in_pool(ws: Workspace, ids: list[str]) -> None:
    """A WorkspaceError when some of ``ids`` are not rows of the pool (a typo, or rows a refresh removed)."""
    if not ids or ids is ws.ids:  # nothing asked (not even the pool is read), or the pool's own list
        return
    index = ws.index
    unknown = [i for i in dict.fromkeys(ids) if i not in index]
    if unknown:
        raise WorkspaceError(f"{ws.path}: {len(unknown)} of the ids asked for are not in the pool "
                             f"(first: {', '.join(map(repr, unknown[:3]))})")


def column(ws: Workspace, name: str, ids: list[str] | None = None) -> list[Any]:
    """``Workspace.column``'s body: a column's values aligned to ``ids`` (default: pool order; None where a row lacks
    one); pool fields too. An id that is not in the pool is an error, not None."""
    if ids is not None:
        check_ids_in_pool(ws, ids)
    path = ws._column_path(name)
    if not path.exists():
        return _pool_field(ws, name, ids)
    note_read(ws, "columns", name)
    if _memo(ws) is None:
        return _aligned(ws, path, ws.ids if ids is None else ids)
    values = _remembered(ws, ("column", name), path, lambda: _aligned(ws, path, ws.ids))
    if ids is None:
        return list(values)
    index = ws.index
    return [values[index[i]] for i in ids]


def row_values(ws: Workspace, name: str, ids: list[str] | None = None) -> list[Any]:
    """``Workspace.row_values``'s body: per-turn values reduced with the column's declared reducer; a column of
    row granularity (``tags``: a list of tags per row) as it is."""
    path = ws._column_path(name)
    provenance = ws.column_provenance(name) if path.exists() else {}
    if provenance:  # read from a memo below, the column is read all the same
        note_read(ws, "columns", name)
    if provenance.get("granularity") == "row":
        return column(ws, name, ids)
    reducer = provenance.get("reducer")

    def reduced(values: list[Any]) -> list[Any]:
        try:
            return [reduce_turns(v, reducer) for v in values]
        except ValueError as exc:  # per-turn values no reducer makes one of (tags_raw: each turn's tags)
            raise WorkspaceError(f"{ws.path}: column {name!r} has per-turn values and declares no way to make one "
                                 f"value of a row's turns ({exc}); read ws.column({name!r}) for the per-turn values"
                                 ) from None

    if _memo(ws) is None or not path.exists() or ids is not None:
        return reduced(column(ws, name, ids))
    return list(_remembered(ws, ("rows", name), path, lambda: reduced(column(ws, name))))


def _remembered(ws: Workspace, key: tuple[str, str], path: Any, read: Callable[[], list[Any]]) -> list[Any]:
    ws.pool  # noqa: B018 (opens the pool if it was not: the stamp below is the one the values align to)
    stat = os.stat(path)
    stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns, ws._pool_stamp)
    memo = _memo(ws)  # this thread's: another thread's stretch ending cannot take it away meanwhile
    held = memo.get(key)
    if held is None or held[0] != stamp:
        held = memo[key] = (stamp, read())
    return held[1]


def _aligned(ws: Workspace, path: Any, want: list[str]) -> list[Any]:
    table = read_arrow(path)
    col_ids = table.column("id").to_pylist()
    values = table.column("value").to_pylist()
    if col_ids == want:
        return values
    pos = dict(zip(col_ids, values, strict=True))
    return [pos.get(i) for i in want]


def _pool_field(ws: Workspace, name: str, ids: list[str] | None) -> list[Any]:
    from curate.errors import NotInWorkspaceError

    if ws.has_pool and name in ws.pool.column_names:
        values = ws.pool.data.table.column(name).to_pylist()
        index = ws.index
        return values if ids is None else [values[index[i]] for i in ids]
    pool = [c for c in ws.pool.column_names if c not in ("id", "conversation")] if ws.has_pool else []
    raise NotInWorkspaceError(f"{ws.path}: no column {name!r}; derived columns {sorted(ws.columns)}, pool fields {pool}")


def add_column(ws: Workspace, name: str, values: Any, provenance: dict[str, Any], ids: Any,
               fingerprints: Any, value_type: Any) -> None:
    """``Workspace.add_column``'s body: the column file written whole, atomically, under the workspace lock."""
    import pyarrow as pa

    check_name(name)  # not check_new_name: a step's side columns (<column>_failure) are longer than its column
    arrow = (pa.Array, pa.ChunkedArray)  # merge_column passes Arrow columns through
    ids = ws.ids if ids is None else ids if isinstance(ids, arrow) else list(ids)
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if len(values) != len(ids):
        from curate.errors import OptionError

        raise OptionError(f"column {name!r}: {len(values)} values for {len(ids)} ids")
    prov = {"name": name, "created": now(), **provenance}
    data = {"id": ids if isinstance(ids, arrow) else pa.array(ids, pa.string()),
            "value": (values if value_type is None else values.cast(value_type)) if isinstance(values, arrow)
            else pa.array(values, type=value_type)}
    if fingerprints is not None:
        data["fingerprint"] = fingerprints if isinstance(fingerprints, arrow) else pa.array(fingerprints, pa.string())
    table = pa.table(data).replace_schema_metadata({b"curate": json.dumps(prov, default=str).encode()})
    with ws.lock():
        write_arrow(ws._column_path(name), table)
