"""The pool's heavy lifting, as functions over a Workspace: adding read rows, export, and removing
what a killed writer left behind."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import Timeout

from curate.errors import NotInWorkspaceError, WorkspaceError, warn
from curate.quiet import quiet_datasets
from curate.storage.blobs import add_missing_ids_digests
from curate.storage.files import (
    LOCK_FILE,
    LOCKED_SUBDIRS,
    MANIFEST,
    STAGING_DIR,
    file_lock,
    now,
    remove,
    writing,
)
from curate.storage.last_run import last_run
from curate.storage.lock_holders import locks_file_at
from curate.storage.manifest import (  # noqa: F401  (Workspace calls pool.check_manifest)
    check_manifest,
    damaged_pool,
    no_workspace,
    note_rows_removed,
    record_load,
    repeats_a_load,
    workspace_gone,
)
from curate.storage.summary import load_summary
from curate.storage.verify import verified_listing

# ``ws`` below is a curate.storage.workspace.Workspace (not imported: it imports this module).
Workspace = Any


def pool_stamp(ws: Workspace) -> tuple[int, int] | None:
    """Which pool is on disk: a load swaps in a new folder (another inode)."""
    with contextlib.suppress(OSError):
        st = (ws.path / "pool").stat()
        return st.st_ino, st.st_mtime_ns
    return None


def open_pool(ws: Workspace):
    """(the pool as a memory-mapped ``datasets.Dataset``, its stamp); a load in another process may be swapping
    the folder: then it is read under the workspace lock."""
    import datasets

    if not ws.has_pool:
        with contextlib.suppress(OSError), ws.lock():
            pass
    if not ws.has_pool:
        raise no_pool_loaded(ws)
    try:
        stamp = pool_stamp(ws)  # before reading: a swap during the read makes the view stale, never current
        with damaged_pool(ws, retry=True):
            return datasets.load_from_disk(str(ws.path / "pool")), stamp
    except FileNotFoundError:  # swapped as it was read
        with ws.lock(), damaged_pool(ws, retry=False):  # no load swaps it while this is held
            return datasets.load_from_disk(str(ws.path / "pool")), pool_stamp(ws)


def _swap_pool(ws: Workspace, table) -> None:
    """Write ``table`` as the pool: saved beside it, then renamed into place (caller holds the lock)."""
    import datasets

    tmp = ws.path / f".pool.{uuid.uuid4().hex}.tmp"
    pool_dir = ws.path / "pool"
    with writing(pool_dir, tmp), quiet_datasets():
        # a fingerprint of our own: without one, datasets hashes the whole table (a pickled copy of the pool in memory)
        # an empty table: one shard of no rows (datasets wrote none, and then failed to load the pool it saved)
        datasets.Dataset(table, fingerprint=uuid.uuid4().hex).save_to_disk(str(tmp), num_shards=None if len(table)
                                                                                 else 1)
    trash = ws.path / f".pool.old.{uuid.uuid4().hex}"
    ws._pool = None
    if pool_dir.exists():
        os.replace(pool_dir, trash)
    os.replace(tmp, pool_dir)
    remove(trash)
    ws._ids = ws._index = None


def among(table, ids) -> tuple[Any, int]:
    """(a mask of ``table``'s rows whose id is among ``ids``: ids, or an Arrow array of them; how many are not)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = ids if isinstance(ids, pa.Array | pa.ChunkedArray) else pa.array(list(ids), pa.string())
    mask = pc.is_in(table.column("id"), value_set=ids)
    return mask, (len(table) - pc.sum(mask).as_py()) if len(table) else 0


def keep_rows(ws: Workspace, ids) -> int:
    """``Workspace.keep_rows``: remove every row whose id is not in ``ids`` from the pool, under the lock; how many
    went. Columns keep their values for them (keyed by id) until their next write, and caches keep everything. At a
    path holding no workspace: 0, and none is made (the lock's first write would make a typo'd path one)."""
    if not ws.exists:
        return 0
    with ws.lock():
        ws._pool = ws._ids = ws._index = None  # another process may have changed the pool
        if not ws.has_pool:
            return 0
        table = ws.pool.data.table
        mask, dropped = among(table, ids)
        if dropped:
            _swap_pool(ws, table.filter(mask))
            ws.update_manifest(note_rows_removed)
        return dropped


def no_pool_loaded(ws: Workspace) -> NotInWorkspaceError:
    """The error for a step that needs rows in a workspace none were loaded into (a new one, or a typo's: not on disk,
    ``no workspace at PATH``)."""
    if not (ws.path / MANIFEST).exists():
        return no_workspace(ws.path)
    return NotInWorkspaceError(f"{ws.path}: no pool loaded here (a new workspace): ws.load(SOURCE) first (CLI: "
                               f"curate load SOURCE --workspace {ws.path})")


@contextlib.contextmanager
def staging(ws: Workspace) -> Iterator[Path]:
    """A folder under ``staging/`` for a source being read outside the workspace lock, removed afterwards; its own
    lock tells :func:`remove_leftovers` that it is live (a killed reader's folder is removed by the next open)."""
    folder = ws.path / STAGING_DIR / uuid.uuid4().hex
    lock = file_lock(folder.with_suffix(".lock"))
    with ws.lock():  # made under the lock: a failed first load's take-back checks staging/ under it, and keeps it
        if not (ws.path / MANIFEST).exists():  # taken back, its folder kept (one that was there, emptied) before
            raise workspace_gone(ws.path)      # the lock came: no workspace to stage in (the load makes it anew)
        try:
            folder.parent.mkdir(exist_ok=True)
        except FileNotFoundError:  # a failed first load in another process took the new workspace back
            raise workspace_gone(ws.path) from None
        lock.acquire()
    try:
        try:
            yield folder
        finally:
            try:
                remove(folder)
            finally:
                lock.release()
    finally:  # a failed load's too: its lock file stayed until the next open
        remove(folder.with_suffix(".lock"))


def add_rows(ws: Workspace, staged, keep_only_source: bool = False) -> dict[str, Any]:
    """Add a staged source's rows (a ``curate.pools.StagedPool``) that the pool lacks, by id, and record the source
    in the manifest (caller holds the lock); with ``keep_only_source``, rows the source lacks leave the pool
    (``rows_removed``) and the rows it holds take its fields as they are now (``fields_refreshed``). The pool is written from memory-mapped parts, never held whole in memory."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ws._pool = ws._ids = ws._index = None  # another process may have changed the pool
    rejects_file = None
    if staged.rejects:
        rejects_file = ws.path / "rejects.jsonl"
        with writing(rejects_file):
            append_new_lines(staged.rejects_file, rejects_file)
    old = ws.pool.data.table if ws.has_pool else None
    new_parts, rows_added, rows_removed = [], 0, 0
    for table in staged.tables():
        if old is not None:
            table = table.filter(pc.invert(pc.is_in(table.column("id"), value_set=old.column("id"))))
        if len(table):
            new_parts.append(table)
            rows_added += len(table)
    if old is not None and keep_only_source:
        kept, rows_removed = among(old, staged.ids())
        old = old.filter(kept) if rows_removed else old
    kept_as_json = list(staged.columns_kept_as_json)
    if old is not None and new_parts:  # a field JSON text on one side and typed on the other: JSON text on both
        from curate.pools.table import uneven_struct_types

        pool_json, new_json = json_text_columns(ws), set(kept_as_json)
        shared = set(old.column_names) & set(new_parts[0].column_names)
        # objects of other keys than the pool's: one struct of both would give every row keys it never had
        uneven = {c for c in shared - pool_json - new_json
                  if uneven_struct_types([old.schema.field(c).type, new_parts[0].schema.field(c).type])}
        if to_old := ((new_json - pool_json) & shared) | uneven:
            old = _as_json_text(old, to_old)
        if to_new := ((pool_json - new_json) & shared) | uneven:
            new_parts = [_as_json_text(t, to_new) for t in new_parts]
            kept_as_json += sorted(to_new)
    table = None
    if new_parts or rows_removed:
        tables = [old, *new_parts] if old is not None else new_parts
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            if old is None or not new_parts:
                raise
            # a number in the pool, text in this load: mixed types, held as JSON text on both sides
            held, new = old.schema, new_parts[0].schema
            # only the fields no promotion joins (int beside text), not int beside double or text beside nulls
            clash = {f.name for f in new if f.name in held.names and not _promotable(held.field(f.name), f)}
            old, new_parts = _as_json_text(old, clash), [_as_json_text(t, clash) for t in new_parts]
            kept_as_json += sorted(clash - set(kept_as_json))
            table = _concat_or_refuse(staged.source, [old, *new_parts])
    fields_refreshed = False
    if keep_only_source and old is not None:  # the source's fields of the rows the pool held, as they are now
        from curate.storage.refresh import source_as_now

        json_columns = (json_text_columns(ws) | set(kept_as_json)) - set(staged.columns_kept_as_json)
        fresh = source_as_now(table if table is not None else old, list(staged.tables()), json_columns)
        if fresh is not None:
            table, fields_refreshed = fresh, True
            kept_as_json += sorted(json_columns & set(fresh.column_names) - set(kept_as_json))
    if table is not None:
        _swap_pool(ws, table)
    summary = {
        "source": staged.source, "loaded_at": now(), "rows_read": staged.rows_read, "rows_added": rows_added,
        "already_present": staged.rows_read - rows_added, "formats": dict(staged.formats),
        "empty_responses": staged.empty_responses, "instruction_only": staged.instruction_only,
        "without_reply_text": staged.without_reply_text, "rejects": staged.rejects, "rejects_file": str(rejects_file) if rejects_file else None,
        "columns_kept_as_json": kept_as_json, "turn_keys_not_kept": dict(staged.turn_keys_not_kept),
        "turn_fields": staged.turn_fields,
    }
    # a load of a source read so before that changed nothing adds no entry (a re-run's made the report out of date)
    unchanged = table is None and repeats_a_load(ws.manifest["sources"], summary)
    gone = record_load(ws, summary, unchanged=unchanged, rows_removed=rows_removed, keep_only_source=keep_only_source)
    if staged.rejects:  # on_error="skip": a notebook's load returned without a word of what it left out
        warn(f"{staged.source}: {staged.rejects:,} record(s) left out (on_error='skip'); each with its line and reason "
             f"in {rejects_file}")
    done = {**summary, "unchanged": unchanged, **gone}
    return load_summary({**done, "rows_removed": rows_removed, "fields_refreshed": fields_refreshed}
                        if keep_only_source else done)


def json_text_columns(ws: Workspace) -> set[str]:
    """Pool fields held as JSON text, every row of them: a load keeps a field whose values mix types so, and a
    later load conforms to it (either way), so a value reads back unambiguously (``curate export`` to JSON Lines
    writes the values themselves)."""
    return {c for s in ws.manifest["sources"] for c in (s.get("columns_kept_as_json") or [])}


def _promotable(a: Any, b: Any) -> bool:
    """Whether two Arrow fields of one name join into one type, as ``concat_tables(promote_options="permissive")``
    joins them."""
    import pyarrow as pa

    try:
        pa.unify_schemas([pa.schema([a]), pa.schema([b])], promote_options="permissive")
        return True
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return False


def _concat_or_refuse(source: str, tables: list[Any]) -> Any:
    import pyarrow as pa

    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        held, new = tables[0].schema, tables[1].schema
        clash = [f.name for f in new if f.name in held.names and not held.field(f.name).type.equals(f.type)]
        raise WorkspaceError(
            f"{source}: column(s) {', '.join(clash) or '?'} hold a different type than in the "
            f"pool ({exc}); make the field one type in the source, or load it into another workspace") from None


def _as_json_text(table: Any, names: set[str]) -> Any:
    from curate.pools.table import json_text

    for name in sorted(names):
        table = table.set_column(table.schema.get_field_index(name), name, json_text(table.column(name).to_pylist()))
    return table


def append_new_lines(source: Path, target: Path) -> None:
    """Append to ``target`` the lines of ``source`` it does not hold yet (a source loaded again, or ``curate run``
    re-run, rejects the same records again)."""
    held: set[str] = set()
    if target.exists():
        with open(target, encoding="utf-8") as fh:
            held = set(fh)
    with open(source, encoding="utf-8") as src, open(target, "a", encoding="utf-8") as out:
        out.writelines(line for line in src if line not in held)


def remove_leftovers(ws: Workspace) -> None:
    """Delete what a killed writer left (``.*.tmp``, ``.pool.old.*``, unreferenced embedding files), and give the
    embedding sets from before the ids digest one (:func:`~curate.storage.blobs.add_missing_ids_digests`), only while
    no process (and not this thread) holds the workspace lock."""
    path = ws.path / LOCK_FILE
    lock = file_lock(path)
    if lock.is_locked or not path.exists():  # this thread is mid-write (its temporary files are live), or no lock
        return                               # file to take (gone: filelock would make the folder anew)
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):  # a writer is active, or the folder is read-only: leave everything
        return
    try:
        if not locks_file_at(lock, path):  # moved aside (a take-back) or replaced after it was opened, before it was
            return  # locked: the files at the path now may be a new workspace's, whose writers hold the lock there
        restore_moved_aside(ws)
        stray = [*ws.path.glob(".*.tmp"), *ws.path.glob(".pool.old.*")]
        for sub in LOCKED_SUBDIRS:
            stray += (ws.path / sub).glob(".*.tmp")
        stray += orphan_embedding_files(ws)
        stray += (ws.path / "labels").glob(".*.old.*")
        stray += unlocked_staging(ws)
        for path in stray:
            remove(path)
        add_missing_ids_digests(ws)  # sets from before the digest: a hand-edited ids file is noticed from now on
    finally:
        lock.release()

def restore_moved_aside(ws: Workspace) -> None:
    """Undo a swap a killed writer left half done: the old pool (or label set) moved aside to ``.<name>.old.*``
    and the new one not yet renamed in. The old copy goes back (the newest, if several); the new one, never
    finished, is a leftover. Without this, removing leftovers deleted the only copy of the pool."""
    moved = [*ws.path.glob(".pool.old.*"), *(ws.path / "labels").glob(".*.old.*")]
    for old in sorted(moved, key=lambda path: path.stat().st_mtime, reverse=True):
        final = old.parent / old.name[1:].rsplit(".old.", 1)[0]
        if not final.exists():
            os.replace(old, final)


def unlocked_staging(ws: Workspace) -> list[Path]:
    """Staging folders (and their locks) of readers that are gone: no process holds their lock."""
    stray, folder = [], ws.path / STAGING_DIR
    for name in {p.name.removesuffix(".lock") for p in folder.glob("*")}:
        lock = file_lock(folder / f"{name}.lock")
        if lock.is_locked:
            continue
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):
            continue
        lock.release()
        stray += [folder / name, folder / f"{name}.lock"]
    return stray


def orphan_embedding_files(ws: Workspace) -> list[Path]:
    """Matrices and id lists that no embeddings/<name>.json points at (a writer died in between)."""
    folder = ws.path / "embeddings"
    metas = [p for p in folder.glob("*.json") if not p.name.endswith(".ids.json")]
    used: set[str] = set()
    for meta_path in metas:
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return []  # unreadable metadata: keep every file rather than guess
        used.update((meta.get("file", ""), meta.get("ids_file", "")))
    return [p for p in (*folder.glob("*.npy"), *folder.glob("*.ids.json")) if p.name not in used]


def kept_rows_gone(ws: Workspace, name: str) -> list[str]:
    """Ids selection ``name`` keeps that have left the pool since it was made (a re-run on an edited source,
    ``keep_rows``): any, and the selection no longer describes this pool."""
    index = ws.index
    return [rid for rid in ws.selection(name).ids if rid not in index]


def out_of_date(gone: int) -> str:
    """What ``info``, the report and the notebook say of a selection that keeps ``gone`` rows no longer in the pool."""
    return (f"out of date: {gone:,} of its kept rows are no longer in the pool; make the selection again"
            if gone else "")


def selection_positions(ws: Workspace, name: str) -> tuple[list[str], list[int]]:
    """Selection ``name``'s kept ids and their pool positions; an error if some have left the pool since it was
    made: the selection no longer describes this pool."""
    gone = kept_rows_gone(ws, name)
    if gone:
        raise WorkspaceError(f"{ws.path}: selection {name!r} keeps {len(gone):,} rows that are no longer in the pool "
                             f"(first: {gone[0]!r}); make the selection again on the pool as it is now")
    kept = ws.selection(name).ids
    index = ws.index
    return kept, [index[rid] for rid in kept]


def info(ws: Workspace) -> dict[str, Any]:
    """``Workspace.info``: rows, formats, sources, and every derived column, embedding set, selection and label set
    (by name, its provenance), the damaged files, the last run (:func:`curate.storage.last_run.last_run`)."""
    formats: Counter = Counter()
    columns, selections, label_sets, damaged = verified_listing(ws)
    if ws.has_pool:
        formats.update(ws.pool.data.table.column("format").to_pylist())
    return {
        "path": str(ws.path), "rows": len(ws), "formats": dict(formats), "sources": ws.manifest["sources"],
        "pool_columns": ws.pool.column_names if ws.has_pool else [],
        "columns": columns, "embeddings": ws.embedding_sets, "selections": selections,
        "damaged": [d.to_dict() for d in damaged],  # checksums checked: bytes overwritten in place too
        "label_sets": label_sets,
        "last_run": last_run(ws.path),  # OUT/run.json of the run whose workspace this is (None: none)
    }
