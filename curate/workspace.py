"""Workspace: a curation session on disk.

Layout of a workspace directory::

    manifest.json            sources loaded, row counts, formats
    pool/                    the pool, a ``datasets`` Arrow folder (id, conversation, format, originals)
    columns/<name>.arrow     one derived column: Arrow IPC file (id, value); provenance in its schema metadata
    embeddings/<name>.json   provenance + the file name of the float32 matrix <name>-<token>.npy beside it
    selections/<name>.arrow  one selection: id, decision, reason, rank; provenance in schema metadata
    cache/                   the LLM response cache and other caches owned by their modules
    rejects.jsonl            records left out by ``load(on_error="skip")``

Every write goes to a temporary file first and is renamed into place (``os.replace``), so a crash
never leaves a half-written column. Derived columns are keyed by row id and aligned to the pool on read.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import WorkspaceError

MANIFEST = "manifest.json"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_arrow(path: Path, table) -> None:
    import pyarrow as pa

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
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
        if not (self.path / MANIFEST).exists():
            if not create:
                raise WorkspaceError(f"{self.path}: not a curate workspace (no {MANIFEST})")
            if self.path.exists() and any(self.path.iterdir()):
                raise WorkspaceError(f"{self.path}: exists, is not empty, and is not a curate workspace")
            for sub in ("columns", "embeddings", "selections", "cache"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            self._write_manifest({"version": 1, "created": _now(), "sources": []})
        self._pool = None
        self._ids: list[str] | None = None
        self._index: dict[str, int] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> Workspace:
        """Open an existing workspace (error if ``path`` is not one)."""
        return cls(path, create=False)

    # -- manifest -------------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        _atomic_write_bytes(self.path / MANIFEST, json.dumps(manifest, indent=2).encode())

    @property
    def cache_dir(self) -> Path:
        """Folder for caches owned by other modules (LLM responses, embeddings)."""
        return self.path / "cache"

    # -- pool -----------------------------------------------------------------------------------
    def load(self, source: str | os.PathLike, *, format: str = "auto", mapping: dict[str, str] | None = None,
             on_error: str = "raise", max_field_chars: int | None = None) -> dict[str, Any]:
        """Read ``source`` into the pool (rows already present, by id, are not added twice).

        Returns a summary: rows added, rows already present, formats, rejects and the rejects file.
        """
        import datasets
        import pyarrow as pa

        from curate import pools

        kwargs = {} if max_field_chars is None else {"max_field_chars": max_field_chars}
        result = pools.read(source, format=format, mapping=mapping, on_error=on_error, **kwargs)  # type: ignore[arg-type]
        rejects_file = None
        if result.rejects:
            rejects_file = self.path / "rejects.jsonl"
            pools.write_rejects(result.rejects, rejects_file, append=True)
        existing = set(self.ids) if self.has_pool else set()
        pools.assign_ids(result.rows)
        new_rows = [r for r in result.rows if r["id"] not in existing]
        as_json: list[str] = []
        if new_rows:
            table, as_json = pools.to_table(new_rows)
            if self.has_pool:
                old = self.pool.data.table
                table = pa.concat_tables([old, table], promote_options="permissive")
            tmp = self.path / f".pool.{uuid.uuid4().hex}.tmp"
            with _quiet_datasets():
                datasets.Dataset(table).save_to_disk(str(tmp))
            old_dir = self.path / "pool"
            trash = self.path / f".pool.old.{uuid.uuid4().hex}"
            self._pool = None
            if old_dir.exists():
                os.replace(old_dir, trash)
            os.replace(tmp, old_dir)
            if trash.exists():
                import shutil

                shutil.rmtree(trash, ignore_errors=True)
            self._ids = self._index = None
        summary = {
            "source": str(source), "loaded_at": _now(), "rows_read": len(result.rows), "rows_added": len(new_rows),
            "already_present": len(result.rows) - len(new_rows), "formats": dict(result.formats),
            "empty_responses": result.empty_responses, "rejects": len(result.rejects), "rejects_file": str(rejects_file) if rejects_file else None,
            "columns_kept_as_json": as_json,
        }
        manifest = self.manifest
        manifest["sources"].append(summary)
        self._write_manifest(manifest)
        return summary

    @property
    def has_pool(self) -> bool:
        return (self.path / "pool").exists()

    @property
    def pool(self):
        """The pool as a memory-mapped ``datasets.Dataset``."""
        if self._pool is None:
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
        token = uuid.uuid4().hex[:12]
        npy = folder / f"{name}-{token}.npy"
        tmp = folder / f".{npy.name}.tmp"
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
        out.parent.mkdir(parents=True, exist_ok=True)
        suffix = out.suffix.lower()
        with _quiet_datasets():
            return self._write(ds, out, suffix)

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
