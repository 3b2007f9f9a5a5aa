"""Workspace: a curation session on disk.

Layout of a workspace directory::

    manifest.json            sources loaded, row counts, formats
    pool/                    the pool, a ``datasets`` Arrow folder (id, conversation, format, originals)
    columns/<name>.arrow     one derived column: Arrow IPC file (id, value); provenance in its schema metadata
    embeddings/<name>.json   provenance + the file name of the float32 matrix <name>-<token>.npy beside it
    selections/<name>.arrow  one selection: id, decision, reason, rank; provenance in schema metadata
    cache/                   the LLM response cache and other caches owned by their modules
    rejects.jsonl            records left out by ``load(on_error="skip")``
    .lock                    the workspace lock (see below)
    locks/                   named locks, e.g. ``column-<name>.lock`` held while a judge scores that column

Every write goes to a temporary file first and is renamed into place (``os.replace``), so a crash
never leaves a half-written column. Derived columns are keyed by row id and aligned to the pool on read.

Every mutation (load, columns, embeddings, selections, the manifest) holds the workspace lock
(``ws.lock()``, a file lock) around its read-modify-write, so processes sharing a workspace serialise
and lose nothing. Temporary files a killed process left behind are removed the next time the workspace
is opened while no process holds the lock.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from curate.errors import WorkspaceError

MANIFEST = "manifest.json"
LOCK_FILE = ".lock"
LOCKS_DIR = "locks"
# Folders whose writes all happen under the workspace lock: leftovers there are stale whenever the lock is free.
_LOCKED_SUBDIRS = ("columns", "embeddings", "selections")
_SUBDIRS = (*_LOCKED_SUBDIRS, "cache")
# Label sets (curate.evol) may be written without the workspace lock: only leftovers this old are removed.
STALE_TMP_SECONDS = 60.0


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def writing(path: str | os.PathLike, tmp: str | os.PathLike | None = None) -> Iterator[None]:
    """Name ``path`` in an OS error raised while writing it (a full disk reports no file name), and remove
    the temporary ``tmp`` (file or folder) if the write fails."""
    try:
        yield
    except OSError as exc:
        if tmp is not None:
            _remove(Path(tmp))
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        if tmp is not None:
            _remove(Path(tmp))
        raise


def _modified_before(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    """Delete a file or folder, whichever it is (no error if it is gone)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def prepare_output(out: str | os.PathLike, *, folder: bool = False) -> Path:
    """Create the folders ``out`` needs (``out`` itself too with ``folder``); a regular file in the way is
    a ``NotADirectoryError`` naming it (even for root, whom permissions do not stop)."""
    out = Path(out)
    needed = out if folder else out.parent
    ancestor = needed
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{os.strerror(errno.ENOTDIR)} (a file, not a folder; cannot write {out})",
                                 str(ancestor))
    needed.mkdir(parents=True, exist_ok=True)
    return out


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with writing(path, tmp):
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def _write_arrow(path: Path, table) -> None:
    import pyarrow as pa

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with writing(path, tmp):
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)


def _read_arrow(path: Path):
    import pyarrow as pa

    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()


def _schema_meta(path: Path) -> dict[str, Any]:
    import pyarrow as pa

    with pa.memory_map(str(path), "r") as source:
        meta = pa.ipc.open_file(source).schema.metadata or {}
    raw = meta.get(b"curate")
    return json.loads(raw) if raw else {}


class Selection:
    """A named selection: every considered row's decision and reason, in rank order."""

    def __init__(self, name: str, table, provenance: dict[str, Any]):
        self.name = name
        self.table = table
        self.provenance = provenance

    @property
    def ids(self) -> list[str]:
        """Ids of the kept rows, in selection order."""
        import pyarrow.compute as pc

        kept = self.table.filter(pc.equal(self.table["decision"], "kept"))
        return kept["id"].to_pylist()

    def __len__(self) -> int:
        return len(self.ids)

    def decisions(self) -> Counter:
        return Counter(self.table["decision"].to_pylist())

    def _repr_html_(self) -> str:
        from curate.report import selection_html

        return selection_html(self)

    def __repr__(self) -> str:
        return f"Selection({self.name!r}, kept={len(self):,}, {dict(self.decisions())})"


class Workspace:
    """A curation session stored in a directory; reopen it from any process or notebook."""

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path)
        self._pool = None
        self._ids: list[str] | None = None
        self._index: dict[str, int] | None = None
        if not (self.path / MANIFEST).exists():
            if not create:
                raise WorkspaceError(f"{self.path}: not a curate workspace (no {MANIFEST})")
            self._create()
        self._remove_leftovers()

    def _create(self) -> None:
        """Make the folders and an empty manifest, under the lock: two processes creating one workspace
        at once both end up in the same, single workspace."""
        # Without the lock only visible names count: a process creating it right now writes hidden temporaries.
        self._refuse_foreign(include_hidden=False)
        prepare_output(self.path, folder=True)
        with self.lock():
            if (self.path / MANIFEST).exists():  # another process created it while we waited
                return
            self._refuse_foreign(include_hidden=True)
            for sub in _SUBDIRS:
                (self.path / sub).mkdir(exist_ok=True)
            self._write_manifest({"version": 1, "created": _now(), "sources": []})

    def _refuse_foreign(self, include_hidden: bool) -> None:
        """Refuse a folder holding anything a workspace being created would not (or a crashed creation left)."""
        ours = {*_SUBDIRS, LOCK_FILE, LOCKS_DIR, MANIFEST}
        if not self.path.is_dir():
            return
        foreign = [p.name for p in self.path.iterdir() if p.name not in ours and not p.name.endswith(".tmp")
                   and (include_hidden or not p.name.startswith("."))]
        if foreign:
            raise WorkspaceError(f"{self.path}: exists, is not empty, and is not a curate workspace "
                                 f"(holds {foreign[0]!r})")

    @classmethod
    def open(cls, path: str | os.PathLike) -> Workspace:
        """Open an existing workspace (error if ``path`` is not one)."""
        return cls(path, create=False)

    # -- locks ----------------------------------------------------------------------------------
    def lock(self, on_wait: Callable[[], None] | None = None):
        """Context manager holding the workspace lock (``WS/.lock``); every mutation takes it.

        Re-entrant within a thread (across Workspace objects on one path); other threads and processes
        wait. ``on_wait`` is called once if the lock is busy, before waiting.
        """
        return _held(self.path / LOCK_FILE, on_wait)

    def column_lock(self, column: str, on_wait: Callable[[], None] | None = None):
        """Context manager holding ``WS/locks/column-<column>.lock`` for a whole scoring run.

        A second process scoring the same column waits, then finds every response in the response
        cache. Without ``on_wait`` a line on stderr says what it waits for.
        """
        _check_name(column)
        folder = self.path / LOCKS_DIR
        folder.mkdir(exist_ok=True)
        path = folder / f"column-{column}.lock"
        if on_wait is None:
            def on_wait() -> None:
                print(f"waiting for another process scoring column {column!r} in {self.path} ({path})",
                      file=sys.stderr, flush=True)
        return _held(path, on_wait)

    def _remove_leftovers(self) -> None:
        """Delete what a killed writer left (``.*.tmp``, ``.pool.old.*``, unreferenced embedding files),
        only while no process (and not this thread) holds the workspace lock."""
        lock = _file_lock(self.path / LOCK_FILE)
        if lock.is_locked:  # this thread is mid-write: its temporary files are live
            return
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):  # a writer is active, or the folder is read-only: leave everything
            return
        try:
            stray = [*self.path.glob(".*.tmp"), *self.path.glob(".pool.old.*")]
            for sub in _LOCKED_SUBDIRS:
                stray += (self.path / sub).glob(".*.tmp")
            stray += self._orphan_embedding_files()
            labels = self.path / "labels"
            cutoff = time.time() - STALE_TMP_SECONDS
            stray += [p for p in (*labels.glob(".*.tmp"), *labels.glob(".*.old.*")) if _modified_before(p, cutoff)]
            for path in stray:
                _remove(path)
        finally:
            lock.release()

    def _orphan_embedding_files(self) -> list[Path]:
        """Matrices and id lists that no embeddings/<name>.json points at (a writer died in between)."""
        folder = self.path / "embeddings"
        metas = [p for p in folder.glob("*.json") if not p.name.endswith(".ids.json")]
        used: set[str] = set()
        for meta_path in metas:
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                return []  # unreadable metadata: keep every file rather than guess
            used.update((meta.get("file", ""), meta.get("ids_file", "")))
        return [p for p in (*folder.glob("*.npy"), *folder.glob("*.ids.json")) if p.name not in used]

    # -- manifest -------------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        with self.lock():
            _atomic_write_bytes(self.path / MANIFEST, json.dumps(manifest, indent=2).encode())

    def update_manifest(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read the manifest, apply ``change`` (which edits it in place) and write it back, under the lock."""
        with self.lock():
            manifest = self.manifest
            change(manifest)
            self._write_manifest(manifest)
            return manifest

    @property
    def cache_dir(self) -> Path:
        """Folder for caches owned by other modules (LLM responses, embeddings)."""
        return self.path / "cache"

    # -- pool -----------------------------------------------------------------------------------
    def load(self, source: str | os.PathLike | Any, *, format: str = "auto", mapping: dict[str, str] | None = None,
             on_error: str = "raise", max_field_chars: int | None = None) -> dict[str, Any]:
        """Read ``source`` into the pool (rows already present, by id, are not added twice).

        ``source`` may also be a ``curate.pools.ReadResult`` already read (``pools.read``), e.g. to check a
        source before creating anything. The source is read outside the lock; adding its rows and the
        manifest entry happen under it. Returns a summary: rows added, rows already present, formats,
        rejects and the rejects file.
        """
        from curate import pools

        if isinstance(source, pools.ReadResult):
            result = source
        else:
            kwargs = {} if max_field_chars is None else {"max_field_chars": max_field_chars}
            result = pools.read(source, format=format, mapping=mapping, on_error=on_error, **kwargs)  # type: ignore[arg-type]
        pools.assign_ids(result.rows)
        with self.lock():
            return self._add_rows(result)

    def _add_rows(self, result) -> dict[str, Any]:
        """Merge a read source into the pool and record it in the manifest (caller holds the lock)."""
        import datasets
        import pyarrow as pa

        from curate import pools

        self._pool = self._ids = self._index = None  # another process may have changed the pool
        rejects_file = None
        if result.rejects:
            rejects_file = self.path / "rejects.jsonl"
            with writing(rejects_file):
                pools.write_rejects(result.rejects, rejects_file, append=True)
        existing = set(self.ids) if self.has_pool else set()
        new_rows = [r for r in result.rows if r["id"] not in existing]
        as_json: list[str] = []
        if new_rows:
            table, as_json = pools.to_table(new_rows)
            if self.has_pool:
                old = self.pool.data.table
                try:
                    table = pa.concat_tables([old, table], promote_options="permissive")
                except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
                    clash = [f.name for f in table.schema if f.name in old.schema.names
                             and not old.schema.field(f.name).type.equals(f.type)]
                    raise WorkspaceError(
                        f"{result.source}: column(s) {', '.join(clash) or '?'} hold a different type than in the "
                        f"pool ({exc}); load it into another workspace or pass mapping= to rename them") from None
            tmp = self.path / f".pool.{uuid.uuid4().hex}.tmp"
            pool_dir = self.path / "pool"
            with writing(pool_dir, tmp), _quiet_datasets():
                datasets.Dataset(table).save_to_disk(str(tmp))
            trash = self.path / f".pool.old.{uuid.uuid4().hex}"
            self._pool = None
            if pool_dir.exists():
                os.replace(pool_dir, trash)
            os.replace(tmp, pool_dir)
            _remove(trash)
            self._ids = self._index = None
        summary = {
            "source": result.source, "loaded_at": _now(), "rows_read": len(result.rows), "rows_added": len(new_rows),
            "already_present": len(result.rows) - len(new_rows), "formats": dict(result.formats),
            "empty_responses": result.empty_responses, "instruction_only": result.instruction_only,
            "rejects": len(result.rejects), "rejects_file": str(rejects_file) if rejects_file else None,
            "columns_kept_as_json": as_json,
        }
        self.update_manifest(lambda manifest: manifest["sources"].append(summary))
        return summary

    @property
    def has_pool(self) -> bool:
        return (self.path / "pool").exists()

    @property
    def pool(self):
        """The pool as a memory-mapped ``datasets.Dataset``."""
        if self._pool is None:
            if not self.has_pool:
                with contextlib.suppress(OSError), self.lock():  # a load in another process may be swapping it
                    pass
            if not self.has_pool:
                raise WorkspaceError(f"{self.path}: no pool yet; run `curate load SOURCE --workspace {self.path}`")
            import datasets

            self._pool = datasets.load_from_disk(str(self.path / "pool"))
        return self._pool

    def __len__(self) -> int:
        return len(self.pool) if self.has_pool else 0

    @property
    def ids(self) -> list[str]:
        """Row ids in pool order."""
        if self._ids is None:
            self._ids = self.pool.data.table.column("id").to_pylist()
        return self._ids

    @property
    def index(self) -> dict[str, int]:
        """Row id -> position in the pool."""
        if self._index is None:
            self._index = {rid: i for i, rid in enumerate(self.ids)}
        return self._index

    def conversations(self) -> list[list[dict[str, str]]]:
        """Every row's conversation, in pool order."""
        return self.pool.data.table.column("conversation").to_pylist()

    # -- derived columns ------------------------------------------------------------------------
    def add_column(self, name: str, values: list[Any] | np.ndarray, provenance: dict[str, Any],
                   ids: list[str] | None = None) -> None:
        """Store a derived column atomically; ``values`` align with ``ids`` (default: pool order).

        ``provenance`` says what produced it (judge, prompt fingerprint, model, parameters, cost ...).
        """
        import pyarrow as pa

        _check_name(name)
        ids = self.ids if ids is None else list(ids)
        if isinstance(values, np.ndarray):
            values = values.tolist()
        if len(values) != len(ids):
            raise ValueError(f"column {name!r}: {len(values)} values for {len(ids)} ids")
        prov = {"name": name, "created": _now(), **provenance}
        table = pa.table({"id": pa.array(ids, pa.string()), "value": pa.array(values)})
        table = table.replace_schema_metadata({b"curate": json.dumps(prov, default=str).encode()})
        with self.lock():
            _write_arrow(self.path / "columns" / f"{name}.arrow", table)

    def has_column(self, name: str) -> bool:
        return (self.path / "columns" / f"{name}.arrow").exists()

    @property
    def columns(self) -> dict[str, dict[str, Any]]:
        """Derived columns: name -> provenance."""
        return {p.stem: _schema_meta(p) for p in sorted((self.path / "columns").glob("*.arrow"))}

    def column(self, name: str, ids: list[str] | None = None) -> list[Any]:
        """A derived column's values aligned to ``ids`` (default: pool order); rows it lacks are None."""
        path = self.path / "columns" / f"{name}.arrow"
        if not path.exists():
            if name in self.pool.column_names:
                values = self.pool.data.table.column(name).to_pylist()
                return values if ids is None else [values[self.index[i]] for i in ids]
            raise WorkspaceError(f"{self.path}: no column {name!r}; have {sorted(self.columns)}")
        table = _read_arrow(path)
        col_ids = table.column("id").to_pylist()
        values = table.column("value").to_pylist()
        want = self.ids if ids is None else ids
        if col_ids == want:
            return values
        pos = dict(zip(col_ids, values, strict=True))
        return [pos.get(i) for i in want]

    def column_array(self, name: str, ids: list[str] | None = None) -> np.ndarray:
        """A numeric column as float64, NaN where missing (lists, per turn, are left to the caller)."""
        return np.array([np.nan if v is None else v for v in self.column(name, ids)], dtype=np.float64)

    def column_provenance(self, name: str) -> dict[str, Any]:
        return _schema_meta(self.path / "columns" / f"{name}.arrow")

    def drop_column(self, name: str) -> None:
        with self.lock():
            (self.path / "columns" / f"{name}.arrow").unlink(missing_ok=True)

    # -- embeddings -----------------------------------------------------------------------------
    def add_embeddings(self, name: str, array: np.ndarray, provenance: dict[str, Any],
                       ids: list[str] | None = None) -> None:
        """Store a float32 matrix (one row per id, default pool order) as an .npy file, atomically."""
        _check_name(name)
        ids = self.ids if ids is None else list(ids)
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] != len(ids):
            raise ValueError(f"embeddings {name!r}: shape {array.shape} for {len(ids)} ids")
        folder = self.path / "embeddings"
        with self.lock():
            token = uuid.uuid4().hex[:12]
            npy = folder / f"{name}-{token}.npy"
            tmp = folder / f".{npy.name}.tmp"
            with writing(npy, tmp):
                with open(tmp, "wb") as fh:
                    np.save(fh, array)
                os.replace(tmp, npy)
            ids_file = folder / f"{name}-{token}.ids.json"
            _atomic_write_bytes(ids_file, json.dumps(ids).encode())
            meta_path = folder / f"{name}.json"
            old = json.loads(meta_path.read_text()) if meta_path.exists() else None
            meta = {"name": name, "created": _now(), "file": npy.name, "ids_file": ids_file.name,
                    "shape": list(array.shape), **provenance}
            _atomic_write_bytes(meta_path, json.dumps(meta, indent=2, default=str).encode())
            if old:  # the old matrix and its ids are unreachable now
                (folder / old["file"]).unlink(missing_ok=True)
                (folder / old["ids_file"]).unlink(missing_ok=True)

    @property
    def embedding_sets(self) -> dict[str, dict[str, Any]]:
        """Stored embedding matrices: name -> provenance."""
        return {p.stem: json.loads(p.read_text()) for p in sorted((self.path / "embeddings").glob("*.json"))
                if not p.name.endswith(".ids.json")}

    def embeddings(self, name: str = "default", ids: list[str] | None = None) -> np.ndarray:
        """A stored embedding matrix (memory-mapped when it already matches ``ids``/pool order)."""
        folder = self.path / "embeddings"
        meta_path = folder / f"{name}.json"
        if not meta_path.exists():
            raise WorkspaceError(f"{self.path}: no embeddings {name!r}; run `curate embed {self.path}`")
        meta = json.loads(meta_path.read_text())
        array = np.load(folder / meta["file"], mmap_mode="r")
        stored_ids = json.loads((folder / meta["ids_file"]).read_text())
        want = self.ids if ids is None else ids
        if stored_ids == want:
            return array
        pos = {rid: i for i, rid in enumerate(stored_ids)}
        missing = [i for i in want if i not in pos]
        if missing:
            raise WorkspaceError(f"embeddings {name!r} lack {len(missing)} row(s), e.g. {missing[0]}; embed again")
        return np.asarray(array[[pos[i] for i in want]])

    # -- selections -----------------------------------------------------------------------------
    def add_selection(self, name: str, ids: list[str], decisions: list[str], reasons: list[str | None],
                      provenance: dict[str, Any], ranks: list[int] | None = None) -> Selection:
        """Store a selection: each considered row's decision (``kept``/``rejected``/...) and reason."""
        import pyarrow as pa

        _check_name(name)
        if not (len(ids) == len(decisions) == len(reasons)):
            raise ValueError("ids, decisions and reasons must have the same length")
        ranks = list(range(len(ids))) if ranks is None else ranks
        prov = {"name": name, "created": _now(), **provenance}
        table = pa.table({"id": pa.array(ids, pa.string()), "decision": pa.array(decisions, pa.string()),
                          "reason": pa.array(reasons, pa.string()), "rank": pa.array(ranks, pa.int64())})
        table = table.replace_schema_metadata({b"curate": json.dumps(prov, default=str).encode()})
        with self.lock():
            _write_arrow(self.path / "selections" / f"{name}.arrow", table)
        return Selection(name, table, prov)

    @property
    def selections(self) -> dict[str, dict[str, Any]]:
        return {p.stem: _schema_meta(p) for p in sorted((self.path / "selections").glob("*.arrow"))}

    def selection(self, name: str) -> Selection:
        path = self.path / "selections" / f"{name}.arrow"
        if not path.exists():
            raise WorkspaceError(f"{self.path}: no selection {name!r}; have {sorted(self.selections)}")
        table = _read_arrow(path)
        return Selection(name, table, json.loads((table.schema.metadata or {}).get(b"curate", b"{}")))

    # -- judges ---------------------------------------------------------------------------------
    def score(self, judge, backend=None, **kwargs: Any) -> dict[str, Any]:
        """Score the rows with an LLM judge and a backend (``curate.judges.score``), or with a trained
        ``Scorer`` in its place (``curate.scorers.score_workspace``); both write <column>, <column>_failure.
        """
        from curate.scorers import Scorer, score_workspace

        if isinstance(judge, Scorer):
            if backend is not None:
                raise ValueError("a trained Scorer needs no backend")
            return score_workspace(self, judge, **kwargs)
        if backend is None:
            raise ValueError("an LLM judge needs a backend (OpenAIBackend, VLLMBackend, LocalServer().backend())")
        from curate.judges import score

        return score(self, judge, backend, **kwargs)

    def select(self, method: str | None = None, name: str | None = None, input_selection: str | None = None,
               steps: list[dict[str, Any]] | None = None, **params: Any) -> Selection:
        """Run a selector (see :mod:`curate.select`) and store its decisions as selection ``name``."""
        from curate.select import select

        return select(self, method=method, name=name, input_selection=input_selection, steps=steps, **params)

    def embed(self, model: str | None = None, text: str = "instruction", name: str = "default", **kwargs: Any) -> dict:
        """Embed every row (see :func:`curate.embed.embed`); unchanged rows come from the cache."""
        from curate.embed import embed

        return embed(self, model=model, text=text, name=name, **kwargs)

    # -- views and export -----------------------------------------------------------------------
    def to_dataset(self, columns: list[str] | None = None, selection: str | None = None):
        """The pool with derived columns joined on (all by default), optionally only a selection's rows."""
        import datasets

        ds = self.pool
        names = list(self.columns) if columns is None else columns
        if selection is not None:
            keep = self.selection(selection).ids
            ds = ds.select([self.index[i] for i in keep])
            ids = keep
        else:
            ids = self.ids
        for name in names:
            if name in ds.column_names:
                continue
            ds = ds.add_column(name, self.column(name, ids))
        return datasets.Dataset(ds.data.table) if selection is None else ds

    def export(self, out: str | os.PathLike, selection: str | None = None, columns: list[str] | None = None) -> Path:
        """Write rows (a selection's, or all) to .jsonl, .parquet, or a datasets folder (no suffix)."""
        out = Path(out)
        ds = self.to_dataset(columns=columns, selection=selection)
        prepare_output(out)
        with writing(out), _quiet_datasets():
            return self._write(ds, out, out.suffix.lower())

    @staticmethod
    def _write(ds, out: Path, suffix: str) -> Path:
        if suffix in (".jsonl", ".json"):
            ds.to_json(str(out), lines=True, force_ascii=False)
        elif suffix == ".parquet":
            ds.to_parquet(str(out))
        elif suffix == "":
            ds.save_to_disk(str(out))
        else:
            raise WorkspaceError(f"{out}: export to .jsonl, .parquet, or a folder (no suffix) for a datasets folder")
        return out

    def info(self) -> dict[str, Any]:
        """Rows, formats, sources, and every derived column, embedding set and selection with provenance."""
        manifest = self.manifest
        formats: Counter = Counter()
        if self.has_pool:
            formats.update(self.pool.data.table.column("format").to_pylist())
        return {
            "path": str(self.path), "rows": len(self), "formats": dict(formats), "sources": manifest["sources"],
            "pool_columns": self.pool.column_names if self.has_pool else [],
            "columns": self.columns, "embeddings": self.embedding_sets, "selections": self.selections,
        }

    def show(self, rows: Any, columns: list[str] | None = None, limit: int = 20):
        """Rows rendered readably (HTML in Jupyter, text elsewhere): ids, pool positions, or a selection name."""
        from curate.report import show_rows

        return show_rows(self, rows, columns=columns, limit=limit)

    def report(self, out: str | os.PathLike = "report.html", selection: str | None = None) -> Path:
        """Write the self-contained HTML curation report (see :func:`curate.report.build_report`)."""
        from curate.report import build_report

        return build_report(self, out, selection=selection)

    def _repr_html_(self) -> str:
        from curate.report import workspace_html

        return workspace_html(self)

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r}, rows={len(self):,}, columns={list(self.columns)})"


def _file_lock(path: Path) -> FileLock:
    """One lock object per path in this process (re-entrant per thread; other threads and processes wait)."""
    return FileLock(str(path), is_singleton=True)


@contextlib.contextmanager
def _held(path: Path, on_wait: Callable[[], None] | None) -> Iterator[None]:
    """Hold the file lock at ``path``; call ``on_wait`` first if someone else holds it."""
    lock = _file_lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _quiet_datasets():
    """Hide datasets' own per-call progress bars (our steps show their own)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _provenance_line(prov: dict[str, Any]) -> str:
    keys = ("kind", "judge", "prompt", "prompt_fingerprint", "model", "backend", "method", "cost_usd", "created")
    return ", ".join(f"{k}={prov[k]}" for k in keys if prov.get(k) not in (None, ""))


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "_-." for c in name) or name.startswith("."):
        raise ValueError(f"bad name {name!r}: use letters, digits, '_', '-', '.'")
