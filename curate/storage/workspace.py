"""Workspace: a curation session on disk.

Layout of a workspace directory::

    manifest.json            sources loaded, row counts, formats
    pool/                    the pool, a ``datasets`` Arrow folder (id, conversation, format, originals)
    staging/<uuid>/          a source being read into Arrow parts by a load, outside the lock (with <uuid>.lock)
    columns/<name>.arrow     one derived column: Arrow IPC file (id, value, fingerprint); provenance in its schema metadata
    embeddings/<name>.json   provenance + the file name of the float32 matrix <name>-<token>.npy beside it
    selections/<name>.arrow  one selection: id, decision, reason code, detail (JSON), rank; provenance in schema metadata
    labels/<name>/           a label set (datasets folder) + provenance.json + side files
    artifacts/<name>.json    JSON documents owned by steps (e.g. an InsTag normaliser's mapping)
    cache/                   the LLM response cache and other caches owned by their modules
    rejects.jsonl            records left out by ``load(on_error="skip")``
    .lock                    the workspace lock (see below); .lock.holder: its holder's pid and command, while held
    locks/                   named locks, e.g. ``column-<name>.lock`` held while a judge scores that column

Every write is atomic (a temporary file renamed into place) and every mutation holds the workspace lock
(``ws.lock()``, a file lock), so a crash never leaves half a file and processes sharing a workspace lose
nothing; what a killed writer left is removed on the next open. Columns are keyed by row id.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

import numpy as np

from curate.codes import Decision, Failure, Reason
from curate.defaults import JUDGE, POOL
from curate.rows import Turn, turns
from curate.storage import blobs, columns, creation, export, pool
from curate.storage.apply import ApplyResult, apply_step, merge_column
from curate.storage.damage import DamagedFile, sort_out
from curate.storage.failures import read_failures
from curate.storage.files import (
    MANIFEST,
    atomic_write_bytes,
    check_name,
    check_new_name,
    is_name,
    named_files,
    now,
    operation,
    read_arrow,
    read_json,
    remove,
    schema_meta,
    take_values,
    write_arrow,
)
from curate.storage.manifest import no_selection, no_step_input, no_workspace, not_a_workspace
from curate.storage.selection import Selection, selection_meta, selection_table, stored_as
from curate.storage.step import RowInput
from curate.storage.view import ThreadView


class Workspace(ThreadView, blobs.Blobs):
    """A curation session stored in a directory; reopen it from any process or notebook."""

    def __init__(self, path: str | os.PathLike, create: bool = True):
        """Open the workspace at ``path``; writes nothing. Where there is none, ``create``: a new workspace whose
        folder its first write makes (``ws.load``), its reads an error saying there is no workspace there (False:
        that error at once)."""
        self.path = Path(path)
        self._view = threading.local()  # this thread's pool, its stamp, ids and index (storage.view)
        self._reads = threading.local()  # .memo: this thread's memoised column reads inside ``reading()``
        self._pool_dir = str(self.path / "pool")
        self._operations = threading.local()  # .n: operations under way in this thread (see ``operation``)
        self._new = not (self.path / MANIFEST).exists()  # not on disk yet: its first write makes it (see lock)
        if self._new:
            if not create:
                raise not_a_workspace(self.path)
            creation.refuse_foreign(self, include_hidden=False)  # a file, or a folder of other things: said now
            return
        pool.check_manifest(self)
        pool.remove_leftovers(self)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Self:
        """Open an existing workspace (error if ``path`` is not one)."""
        return cls(path, create=False)

    @property
    def exists(self) -> bool:
        """Whether the workspace is on disk (False: a new one, or one removed since; its first write makes it)."""
        return self._on_disk()

    def _require(self) -> None:
        """A read of a new workspace not made yet (or removed since): ``no workspace at PATH (did you mean ...?)``."""
        if not self.exists:
            raise no_workspace(self.path)

    # -- locks ----------------------------------------------------------------------------------
    def lock(self, on_wait: Callable[[], None] | None = None):
        """Context manager holding the workspace lock (``WS/.lock``); every mutation takes it. Re-entrant within a
        thread (across Workspace objects on one path); other threads and processes wait. ``on_wait`` is called once
        if the lock is busy, before waiting; without it, a long wait is logged naming the holder (pid, command)."""
        self._make()  # a new workspace: its first write makes it
        return columns.workspace_lock(self, on_wait)

    def _make(self) -> creation.Made | None:
        """Make a new workspace (its first write): what was made (None: nothing, it was there or another made it)."""
        made = None if self.exists else creation.create(self)
        self._new = False
        return made

    def column_lock(self, column: str, on_wait: Callable[[], None] | None = None):
        """Context manager holding ``WS/locks/column-<column>.lock`` for a whole scoring run. A second process
        scoring the same column waits, then finds every response in the response cache. Without ``on_wait`` a
        warning is logged (logger ``curate``) saying what it waits for."""
        self._make()  # a write's lock: a new workspace is made
        return columns.column_lock(self, column, on_wait)

    # -- manifest -------------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        """The workspace's ``manifest.json``: sources loaded, row counts, formats (a fresh read each time)."""
        self._require()
        return read_json(self.path / MANIFEST)

    def update_manifest(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read the manifest, apply ``change`` (which edits it in place) and write it back, under the lock."""
        with self.lock():
            manifest = self.manifest
            change(manifest)
            atomic_write_bytes(self.path / MANIFEST, json.dumps(manifest, indent=2).encode())
            return manifest

    @property
    def cache_dir(self) -> Path:
        """Folder for caches owned by other modules (LLM responses, embeddings)."""
        return self.path / "cache"

    # -- pool -----------------------------------------------------------------------------------
    @operation
    def load(self, source: str | os.PathLike | Any, *, format: str = POOL.format, mapping: dict[str, str] | None = None,
             on_error: str = POOL.on_error, max_field_chars: int | None = None,
             keep_only_source: bool = False) -> dict[str, Any]:
        """Read ``source`` (a path or a pool in memory, as ``curate.pools.read`` takes; a ``ReadResult``; a
        ``pools.RowStream``) into the pool, outside the lock, as Arrow parts on disk (one part in memory at a time);
        rows already present, by id, are not added twice; ``keep_only_source``: rows the source lacks leave the pool.
        A source without one readable record raises. Returns a summary: rows read, added, already present (and
        removed), formats, rejects and the rejects file; ``rows_gone_from_source``: at least how many rows the last
        load of this source read that it no longer holds (they stay in the pool), when any."""
        from curate import pools

        options = {"format": format, "mapping": mapping, "on_error": on_error, "max_field_chars": max_field_chars}
        with creation.loading(self, pool.staging) as folder:  # a workspace it made is taken back if it fails
            if isinstance(source, pools.ReadResult | pools.RowStream):
                pools.check_no_read_options(source, **options)
                staged = pools.stage_rows(source.source, itertools.chain(source.rows, source.rejects), folder,
                                          turn_fields=source.turn_fields)
            else:  # None: the reader's own default (max_field_chars)
                staged = pools.stage(source, folder, **{k: v for k, v in options.items() if v is not None})
            pools.require_rows(staged)
            with self.lock():
                return pool.add_rows(self, staged, keep_only_source)

    @operation
    def keep_rows(self, ids: Iterable[str]) -> int:
        """Remove from the pool every row not in ``ids`` (rows a re-run's source no longer has); how many went.
        Their column values and cached work stay until overwritten, so a row that comes back costs nothing."""
        return pool.keep_rows(self, set(ids))

    @property
    def has_pool(self) -> bool:
        """Whether rows were ever loaded (the pool folder exists)."""
        return (self.path / "pool").exists()

    @property
    def pool(self):
        """The pool as a memory-mapped ``datasets.Dataset`` (read again when another process changed it, except
        inside an operation); each thread has its own view (:mod:`curate.storage.view`)."""
        self._current()
        if self._pool is None:
            self._require()
            self._pool, self._pool_stamp = pool.open_pool(self)
        return self._pool

    def __len__(self) -> int:
        return len(self.pool) if self.has_pool else 0

    @property
    def ids(self) -> list[str]:
        """Row ids in pool order."""
        self._current()
        if self._ids is None:
            self._ids = self.pool.data.table.column("id").to_pylist()
        return self._ids

    @property
    def index(self) -> dict[str, int]:
        """Row id -> position in the pool."""
        self._current()
        if self._index is None:
            self._index = {rid: i for i, rid in enumerate(self._ids if self._ids is not None else self.ids)}
        return self._index

    @operation
    def conversations(self, ids: list[str] | None = None) -> list[list[dict[str, str]]]:
        """Conversations of ``ids`` (default: every row, in pool order)."""
        column = self.pool.data.table.column("conversation")
        if ids is None:
            return column.to_pylist()
        if not ids:
            return []
        index = self.index
        return take_values(column, [index[i] for i in ids])

    @operation
    def turns(self, ids: list[str] | None = None) -> list[list[Turn]]:
        """Each row's turns (see :mod:`curate.rows`)."""
        return [turns(c) for c in self.conversations(ids)]

    @operation
    def row_inputs(self, ids: list[str], inputs: tuple[str, ...] | list[str] = ()) -> list[RowInput]:
        """What a step sees of ``ids``: conversation, turns and the extra columns it declared."""
        for name in inputs:
            if not self.has_column(name) and name not in self.pool.column_names:
                raise no_step_input(self.path, name)
        extra = {name: self.column(name, ids) for name in inputs}
        return [RowInput(rid, conv, turns(conv), {name: extra[name][k] for name in inputs})
                for k, (rid, conv) in enumerate(zip(ids, self.conversations(ids), strict=True))]

    # -- derived columns ------------------------------------------------------------------------
    def _column_path(self, name: str) -> Path:  # a name no column may have (a pool field's): never a path outside
        return self.path / "columns" / (f"{name}.arrow" if is_name(name) else ".no-such-column")

    @operation
    def add_column(self, name: str, values: list[Any] | np.ndarray, provenance: dict[str, Any],
                   ids: list[str] | None = None, fingerprints: list[str | None] | None = None,
                   value_type: Any = None) -> None:
        """Store (replace) a derived column atomically; ``values`` align with ``ids`` (default: pool order).

        ``provenance`` says what produced it; ``fingerprints`` (per row) say under which step fingerprint
        each value was computed, so ``apply`` can skip rows already done. ``value_type``: their Arrow type, where
        it must not depend on the rows (a failure column with no failure yet is not of type null)."""
        columns.add_column(self, name, values, provenance, ids, fingerprints, value_type)

    @operation
    def merge_column(self, name: str, ids: list[str], values: list[Any], provenance: dict[str, Any],
                     fingerprint: str | None, value_type: Any = None) -> None:
        """Write ``values`` for ``ids`` into column ``name``, keeping every other row's value (pool order)."""
        with self.lock():
            self.refresh()
            merge_column(self, name, ids, values, provenance, fingerprint, value_type)

    def has_column(self, name: str) -> bool:
        """Whether derived column ``name`` exists (pool fields are not derived columns)."""
        return self._column_path(name).exists()

    @property
    def columns(self) -> dict[str, dict[str, Any]]:
        """Derived columns: name -> provenance (a damaged column's file is in ``damaged`` instead)."""
        self._require()
        return sort_out(named_files(self.path / "columns", ".arrow"), schema_meta)[0]

    @property
    def damaged(self) -> list[DamagedFile]:
        """Column and selection files, label sets that cannot be read (:mod:`curate.storage.damage`), with fixes."""
        files = (("columns", schema_meta), ("selections", selection_meta))
        return [*(d for folder, meta in files for d in sort_out(named_files(self.path / folder, ".arrow"), meta)[1]),
                *blobs.label_set_listing(self.path / "labels")[1]]

    @operation
    def column(self, name: str, ids: list[str] | None = None) -> list[Any]:
        """A column's values aligned to ``ids`` (default: pool order; None where a row lacks one); pool fields too."""
        return columns.column(self, name, ids)

    @operation
    def column_values_array(self, name: str) -> Any:
        """A derived column's stored values as an Arrow ``ChunkedArray``, in the file's row order (memory-mapped)."""
        return read_arrow(self._column_path(name)).column("value")

    def reading(self):
        """Context manager: a stretch of reads (a report) in which each column is read from disk once, unless it
        changes meanwhile (:mod:`curate.storage.columns`)."""
        return columns.reading(self)

    def column_ids(self, name: str) -> list[str]:
        """Ids a derived column covers."""
        return read_arrow(self._column_path(name)).column("id").to_pylist()

    def column_fingerprints(self, name: str) -> dict[str, str | None]:
        """Row id -> the step fingerprint its value was computed under (None: stored without one)."""
        return columns.fingerprints(read_arrow(self._column_path(name)))

    def column_provenance(self, name: str) -> dict[str, Any]:
        """How derived column ``name`` was made: kind, model, prompt, fingerprint, runs (its stored metadata)."""
        return schema_meta(self._column_path(name))

    @operation
    def turn_values(self, name: str, ids: list[str] | None = None) -> list[list[Any] | None]:
        """A column as per-turn lists for every row (a scalar becomes a one-turn list; missing stays None)."""
        return [v if v is None or isinstance(v, list) else [v] for v in self.column(name, ids)]

    def reducer(self, name: str) -> str | None:
        """The reducer a column declared (how its turns make one row value)."""
        return self.column_provenance(name).get("reducer") if self.has_column(name) else None

    @operation
    def row_values(self, name: str, ids: list[str] | None = None) -> list[Any]:
        """One value per row: per-turn values reduced with the column's declared reducer (None if any
        turn has none). Selection, plots, the report and training all read scores through this."""
        return columns.row_values(self, name, ids)

    @operation
    def column_array(self, name: str, ids: list[str] | None = None) -> np.ndarray:
        """``row_values`` as float64, NaN where missing."""
        return np.array([np.nan if v is None else v for v in self.row_values(name, ids)], dtype=np.float64)

    @operation
    def failures(self, name: str, ids: list[str] | None = None) -> list[list[Failure]]:
        """Each row's failures for step column ``name`` (empty list when it has a value)."""
        return read_failures(self, name, ids)

    @operation
    def apply(self, step: Any, ids: list[str] | None = None, *, force: bool = False,
              retry_failed: bool = JUDGE.retry_failed, progress: bool = True) -> ApplyResult:
        """Run a Step (judge, scorer, tagger, signal...) on the rows that need it; see ``storage.apply``. Rows whose
        last failure was transient (429, 5xx, timeout, max_cost) are sent again unless ``retry_failed=False``."""
        return apply_step(self, step, ids, force=force, retry_failed=retry_failed, progress=progress)

    # -- selections -----------------------------------------------------------------------------
    @operation
    def add_selection(self, name: str, ids: list[str], decisions: list[Decision | str],
                      reasons: list[Reason | str], details: list[dict[str, Any] | None], provenance: dict[str, Any],
                      ranks: list[int] | None = None) -> Selection:
        """Store a selection: each considered row's decision, reason code and details, in rank order; the same one
        stored already is left untouched (``storage.selection.stored_as``)."""
        check_name(name) if self.has_selection(name) else check_new_name(name)
        prov = {"name": name, "created": now(), **provenance}
        table = selection_table(ids, decisions, reasons, details, ranks, prov)
        with self.lock():
            if (same := stored_as(path := self.path / "selections" / f"{name}.arrow", name, table)) is not None:
                return same
            write_arrow(path, table)
        return Selection(name, table, prov)

    def remove_selection(self, name: str) -> None:
        """Delete a stored selection (e.g. a step of an earlier, longer chain of the same name)."""
        if self.exists:  # else nothing is stored, and its lock would make a typo'd path a workspace
            with self.lock():
                remove(self.path / "selections" / f"{check_name(name)}.arrow")

    @property
    def selections(self) -> dict[str, dict[str, Any]]:
        """Stored selections: name -> provenance (method, params, input selection, candidates...); a damaged
        selection's file is in ``damaged`` instead."""
        self._require()
        return sort_out(named_files(self.path / "selections", ".arrow"), selection_meta)[0]

    def has_selection(self, name: str) -> bool:
        """Whether selection ``name`` is stored (damaged or not: reading a damaged one says so)."""
        return (self.path / "selections" / f"{check_name(name)}.arrow").exists()

    def selection(self, name: str) -> Selection:
        self._require()
        if not (path := self.path / "selections" / f"{check_name(name)}.arrow").exists():  # not ../outside/sel
            raise no_selection(self.path, name, self.selections)
        return Selection.from_table(name, read_arrow(path), path)

    # -- views and export -----------------------------------------------------------------------
    @operation
    def to_dataset(self, columns: str | list[str] | None = None, selection: str | None = None):
        """The pool with derived columns joined on (all by default), optionally only a selection's rows."""
        return export.to_dataset(self, columns, selection)

    @operation
    def export(self, out: str | os.PathLike, selection: str | None = None, columns: str | list[str] | None = None,
               format: str | None = None) -> Path:
        """Rows (a selection's, or all) to .jsonl/.json (JSON Lines), .parquet or a datasets folder: ``export.export``."""
        return export.export(self, out, selection, columns, format)

    @operation
    def info(self) -> dict[str, Any]:
        """Rows, formats, sources, and every derived column, embedding set and selection with provenance; the
        damaged files (``damaged``: kind, name, path, code, problem, fix) beside them."""
        self._require()
        return pool.info(self)

    def __getstate__(self) -> dict[str, Any]:  # pickled (multiprocessing, joblib) or deep-copied as its path
        return {"path": self.path, "new": not self.exists}  # a new one's copy is new too (not 'no workspace')

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], create=state.get("new", False))  # type: ignore[misc]

    def __repr__(self) -> str:
        if not self.exists:
            return f"Workspace({str(self.path)!r}, new: its first write, e.g. ws.load(SOURCE), makes it)"
        return f"Workspace({str(self.path)!r}, rows={len(self):,}, columns={list(self.columns)})"
