"""Workspace contents that are not columns: embedding matrices, label sets, JSON artifacts.

Functions over a Workspace (its methods delegate here); every write holds the workspace lock and lands
atomically (temporary name, then ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from curate.errors import NotInWorkspaceError, OptionError, WorkspaceError
from curate.quiet import quiet_datasets
from curate.storage.damage import named_damage
from curate.storage.files import (
    atomic_write_bytes,
    check_name,
    check_new_name,
    is_name,
    named_files,
    now,
    operation,
    read_json,
    remove,
    writing,
)
from curate.storage.label_sets import data_files, label_set_listing, label_set_meta
from curate.storage.read_log import note_read

if TYPE_CHECKING:
    import datasets

# ``ws`` below is a curate.storage.workspace.Workspace (not imported: it imports this module).
Workspace = Any


def add_embeddings(ws: Workspace, name: str, array: np.ndarray, provenance: dict[str, Any],
                   ids: list[str] | None = None) -> bool:
    """Store a float32 matrix (one row per id, default pool order) as an .npy file, atomically. Whether it was
    written: a set already stored with the same ids, vectors and provenance (``SET_HISTORY`` aside) is left as it
    is, its files and ``created`` time untouched, and False returned (a no-op re-run rewrote it each time)."""
    check_name(name) if (ws.path / "embeddings" / f"{name}.json").exists() else check_new_name(name)
    if name.lower().endswith(".ids"):  # <name>.json would be another set's <set>-<token>.ids.json
        raise WorkspaceError(f"embeddings {name!r}: a name ending in .ids is the name of a set's ids file")
    ids = ws.ids if ids is None else list(ids)
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != len(ids):
        raise OptionError(f"embeddings {name!r}: shape {array.shape} for {len(ids)} ids")
    if len(set(ids)) < len(ids):  # a row read by id took the last of its vectors: the others were dropped in silence
        seen: dict[str, int] = {}
        twice = next((seen[i], k) for k, i in enumerate(ids) if seen.setdefault(i, k) != k)
        raise OptionError(f"embeddings {name!r}: id {ids[twice[1]]} is given twice (rows {twice[0]} and {twice[1]}); "
                          "one vector per row id")
    bad = bad_rows(array)
    if bad.size:  # a NaN row would be admitted by every similarity test (NaN > tau is false) or break K-means; an
        # all-zero row has no direction (no cosine): admission refused it by its candidate index, k-center took it
        raise ValueError(f"embeddings {name!r}: {bad.size} row(s) hold NaN or infinity or only zeros, e.g. row "
                         f"{int(bad[0])} (id {ids[int(bad[0])]})")
    folder = ws.path / "embeddings"
    ids_bytes = json.dumps(ids).encode()
    ids_sha256 = hashlib.sha256(ids_bytes).hexdigest()  # once: the no-op check and the metadata both need it
    with ws.lock():
        meta_path = folder / f"{name}.json"
        old = read_json(meta_path) if meta_path.exists() else None
        if old and _stored_as(folder, meta_path, old, array, ids_bytes, ids_sha256, {"name": name, **provenance}):
            return False
        token = uuid.uuid4().hex[:12]
        npy = folder / f"{name}-{token}.npy"
        tmp = folder / f".{npy.name}.tmp"
        with writing(npy, tmp):
            with open(tmp, "wb") as fh:
                np.save(fh, array)
            os.replace(tmp, npy)
        ids_file = folder / f"{name}-{token}.ids.json"
        atomic_write_bytes(ids_file, ids_bytes)
        meta = {"name": name, "created": now(), "file": npy.name, "ids_file": ids_file.name,
                "shape": list(array.shape), "ids_sha256": ids_sha256, **provenance}
        atomic_write_bytes(meta_path, json.dumps(meta, indent=2, default=str).encode())
        if old:  # the old matrix and its ids are unreachable now
            (_member(folder, meta_path, old["file"])).unlink(missing_ok=True)
            (_member(folder, meta_path, old["ids_file"])).unlink(missing_ok=True)
    return True


# what a set's metadata records of the run that wrote it, not of the set: a re-run taking every vector from the
# cache (encoded 0) makes the same set
SET_HISTORY = ("created", "file", "ids_file", "encoded")
# measurements of the texts a later release added to the metadata: a set stored without one is still the same set
# (an upgrade's first re-run rewrote every embedding set, the same vectors under a new token)
SET_MEASURES_ADDED = ("unknown_token_share",)


def _stored_as(folder: Path, meta_path: Path, old: Any, array: np.ndarray, ids_bytes: bytes, ids_sha256: str,
               provenance: dict[str, Any]) -> bool:
    """Whether the set ``old`` (its metadata) holds these ids and vectors under this provenance (``SET_HISTORY``
    aside); a damaged or unreadable stored set is not the same (it is written again)."""
    if not isinstance(old, dict) or old.get("ids_sha256") != ids_sha256:
        return False
    new = json.loads(json.dumps(provenance, default=str))  # as the metadata file holds it
    new = {k: v for k, v in new.items() if k not in SET_HISTORY and (k in old or k not in SET_MEASURES_ADDED)}
    if {k: v for k, v in old.items() if k not in (*SET_HISTORY, "shape", "ids_sha256")} != new \
            or old.get("shape") != list(array.shape):
        return False
    try:
        if _member(folder, meta_path, old.get("ids_file")).read_bytes() != ids_bytes:
            return False
        stored = np.load(_member(folder, meta_path, old.get("file")), mmap_mode="r", allow_pickle=False)
        # 65,536 rows at a time: a whole 1M x 384 comparison held a 384 MB mask, and went on past a first difference
        return stored.dtype == array.dtype and stored.shape == array.shape and all(
            np.array_equal(stored[i:i + 65_536], array[i:i + 65_536]) for i in range(0, len(array), 65_536))
    except (OSError, ValueError, EOFError, WorkspaceError, zipfile.BadZipFile):
        return False


def bad_rows(array: np.ndarray) -> np.ndarray:
    """Indices of the rows holding NaN or infinity or only zeros (read 65,536 rows at a time)."""
    return np.concatenate([start + np.flatnonzero(~np.isfinite(part).all(axis=1) | ~part.any(axis=1))
                           for start in range(0, len(array), 65_536) if (part := array[start:start + 65_536]).size]
                          or [np.empty(0, np.int64)])


def embedding_sets(ws: Workspace) -> dict[str, dict[str, Any]]:
    """Stored embedding matrices: name -> provenance."""
    return {p.stem: read_json(p) for p in named_files(ws.path / "embeddings", ".json")
            if not p.name.endswith(".ids.json")}


def embed_command(ws: Workspace, name: str) -> str:
    """The command that makes (or completes) embedding set ``name``."""
    from curate.defaults import EMBED

    return f"curate embed {ws.path}" + ("" if name == EMBED.name else f" --name {name}")


def missing_embeddings(ws: Workspace, name: str) -> str:
    """Why embedding set ``name`` cannot be read, and the command that makes it (``--name`` unless the default)."""
    have = sorted(embedding_sets(ws)) if (ws.path / "embeddings").is_dir() else []
    return (f"{ws.path}: no embeddings {name!r} (the workspace has {', '.join(map(repr, have)) or 'none'}); "
            f"run `{embed_command(ws, name)}`")


def add_missing_ids_digests(ws: Workspace) -> list[str]:
    """Give each embedding set written before curate kept its ids digest (``ids_sha256``) one, so that an ids file
    edited by hand from now on is noticed as in a newer set; the names of the sets given one. The caller holds the
    workspace lock (:func:`~curate.storage.pool.remove_leftovers`, on opening); an ids file that does not read as the
    set's ids (damaged, the wrong length) is left without, for its read to name."""
    folder, given = ws.path / "embeddings", []
    for meta_path in sorted(p for p in folder.glob("*.json") if not p.name.endswith(".ids.json")):
        try:
            meta = read_json(meta_path)
            if not isinstance(meta, dict) or "ids_sha256" in meta or "ids_file" not in meta:
                continue
            ids_bytes = _member(folder, meta_path, meta["ids_file"]).read_bytes()
            ids = json.loads(ids_bytes)
        except (OSError, ValueError, WorkspaceError):  # unreadable: the set's own read names the file
            continue
        shape = meta.get("shape")
        rows = shape[0] if isinstance(shape, list) and shape else None
        if isinstance(ids, list) and all(isinstance(i, str) for i in ids) and rows == len(ids):
            meta["ids_sha256"] = hashlib.sha256(ids_bytes).hexdigest()
            try:
                atomic_write_bytes(meta_path, json.dumps(meta, indent=2, default=str).encode())
            except OSError:  # a full disk, a read-only folder: the set reads as before, the next opening tries again
                continue
            given.append(meta_path.stem)
    return given


def _member(folder: Path, meta_path: Path, name: Any) -> Path:
    """A file an embedding set's metadata names, which must be a file of the embeddings folder: an edited
    ``"file": "../../x"`` was read, and deleted when the set was next written."""
    if not isinstance(name, str) or not is_name(name):
        raise WorkspaceError(f"{meta_path}: names {name!r}, not a file of the embeddings folder")
    return folder / name


def _read_embeddings(ws: Workspace, name: str, meta_path: Path) -> tuple[np.ndarray, list[str], Path]:
    """(the matrix memory-mapped, its ids, its file); a damaged matrix or ids file, or one that does not match the
    other or the metadata's shape and ids digest (a hand-shuffled ids file), is named with the command that makes
    the set again: numpy's own messages named no file (an emptied one said nothing at all)."""
    folder = ws.path / "embeddings"
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or "file" not in meta or "ids_file" not in meta:
        raise WorkspaceError(f"{meta_path}: damaged, not an embedding set's metadata; run `{embed_command(ws, name)}`")
    npy, ids_path = _member(folder, meta_path, meta["file"]), _member(folder, meta_path, meta["ids_file"])
    fix = f"run `{embed_command(ws, name)}` to make it again"
    try:
        array = np.load(npy, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # numpy's text names no file, or advises unpickling
        raise WorkspaceError(f"{npy}: damaged, not a readable embedding matrix; {fix}") from None
    if not isinstance(array, np.memmap) or array.ndim != 2 or array.dtype.kind != "f":
        raise WorkspaceError(f"{npy}: damaged, not a 2-d float matrix; {fix}")
    ids_bytes = ids_path.read_bytes()
    try:
        stored_ids = json.loads(ids_bytes)
    except ValueError:
        stored_ids = None
    if not isinstance(stored_ids, list) or not all(isinstance(i, str) for i in stored_ids):
        raise WorkspaceError(f"{ids_path}: damaged, not a JSON list of row ids; {fix}")
    if array.shape[0] != len(stored_ids) or meta.get("shape", list(array.shape)) != list(array.shape):
        raise WorkspaceError(f"{npy}: damaged: a {array.shape[0]} x {array.shape[1]} matrix for {len(stored_ids)} "
                             f"ids (its metadata says {meta.get('shape')}); {fix}")
    if "ids_sha256" in meta and hashlib.sha256(ids_bytes).hexdigest() != meta["ids_sha256"]:
        raise WorkspaceError(f"{ids_path}: changed since the matrix was written (its rows would pair with other "
                             f"rows' vectors); {fix}")
    return array, stored_ids, npy


def embeddings(ws: Workspace, name: str = "default", ids: list[str] | None = None) -> np.ndarray:
    """A stored embedding matrix (memory-mapped when it already matches ``ids``/pool order)."""
    check_name(name)
    meta_path = ws.path / "embeddings" / f"{name}.json"
    if not meta_path.exists():
        raise NotInWorkspaceError(missing_embeddings(ws, name))
    note_read(ws, "embeddings", name)
    try:
        array, stored_ids, npy = _read_embeddings(ws, name, meta_path)
    except FileNotFoundError:  # replaced by a writer between reading the metadata and the file: read under its lock
        with ws.lock():
            array, stored_ids, npy = _read_embeddings(ws, name, meta_path)
    want = ws.ids if ids is None else ids
    if stored_ids != want:
        pos = {rid: i for i, rid in enumerate(stored_ids)}
        missing = [i for i in want if i not in pos]
        if missing:
            raise WorkspaceError(f"{ws.path}: embeddings {name!r} lack {len(missing)} row(s) loaded since they were "
                                 f"made, e.g. {missing[0]}; run `{embed_command(ws, name)}` (rows embedded before come "
                                 "from its cache)")
        return check_read_rows(ws, name, np.asarray(array[[pos[i] for i in want]]), npy)  # in memory: checked
    return array  # memory-mapped: the caller checks the rows it reads (DEITA reads a few of a million)


def check_read_rows(ws: Workspace, name: str, rows: np.ndarray, file: Path | str | None = None) -> np.ndarray:
    """``rows`` read from embedding set ``name``, refused as a write refuses them (NaN, infinity, all zeros), naming
    the file: bytes rotted on disk read as NaN vectors that k-center selected and DEITA only warned about."""
    bad = bad_rows(rows)
    if bad.size:
        where = file or getattr(rows, "filename", None) or ws.path / "embeddings" / f"{name}.json"
        raise WorkspaceError(f"{where}: damaged: {bad.size} row(s) read hold NaN or infinity or only zeros; run "
                             f"`{embed_command(ws, name)}` to make it again")
    return rows


def add_labels(ws: Workspace, name: str, rows: list[dict[str, Any]], provenance: dict[str, Any],
               files: dict[str, bytes] | None = None) -> Path:
    """Store a label set at ``labels/<name>``: a datasets folder, ``provenance.json`` and side files."""
    import datasets

    check_name(name) if (ws.path / "labels" / name).exists() else check_new_name(name)
    folder = ws.path / "labels"
    final = folder / name
    with ws.lock():
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{name}.{uuid.uuid4().hex}.tmp"
        with writing(final, tmp), quiet_datasets():
            datasets.Dataset.from_list(rows).save_to_disk(str(tmp))
            (tmp / "provenance.json").write_text(json.dumps({"name": name, "created": now(), **provenance,
                                                             "rows": len(rows)},  # counted without loading the set
                                                            indent=2, default=str))
            for file, data in (files or {}).items():
                check_name(file)
                (tmp / file).write_bytes(data)
            trash = folder / f".{name}.old.{uuid.uuid4().hex}"
            if final.exists():
                os.replace(final, trash)
            os.replace(tmp, final)
            remove(trash)
    return final


def labels(ws: Workspace, name: str) -> datasets.Dataset:
    import datasets

    check_name(name)
    folder = ws.path / "labels" / name
    if not (folder / "provenance.json").exists():
        raise NotInWorkspaceError(f"{ws.path}: no label set {name!r}; have {sorted(label_sets(ws))} (`curate evol` "
                                  "makes one)")
    label_set_meta(folder)  # a DamagedFileError naming the set when its provenance, state or data files are not there
    if not data_files(folder):
        return datasets.Dataset.from_list([])  # a run that kept no label: datasets saves it but cannot load it back
    with named_damage(folder):
        return datasets.load_from_disk(str(folder))


def label_sets(ws: Workspace) -> dict[str, dict[str, Any]]:
    """name -> provenance; a damaged label set is in ``ws.damaged`` instead (:mod:`curate.storage.label_sets`)."""
    return label_set_listing(ws.path / "labels")[0]


def label_file(ws: Workspace, name: str, file: str) -> Path:
    check_name(name)
    check_name(file)
    path = ws.path / "labels" / name / file
    if not path.exists():
        raise WorkspaceError(f"{ws.path}: label set {name!r} has no file {file!r}")
    return path


def add_artifact(ws: Workspace, name: str, obj: Any) -> None:
    check_name(name)
    folder = ws.path / "artifacts"
    with ws.lock():
        folder.mkdir(exist_ok=True)
        atomic_write_bytes(folder / f"{name}.json", json.dumps(obj, indent=2, default=str).encode())


def artifact(ws: Workspace, name: str) -> Any:
    check_name(name)
    path = ws.path / "artifacts" / f"{name}.json"
    return read_json(path) if path.exists() else None


class Blobs:
    """The Workspace methods for embeddings, label sets and artifacts (each delegates to this module)."""

    @operation
    def add_embeddings(self, name: str, array: np.ndarray, provenance: dict[str, Any],
                       ids: list[str] | None = None) -> bool:
        """Store a float32 matrix (one row per id, default pool order) as an .npy file, atomically; False: the
        same set was stored already and is left untouched (:func:`add_embeddings`)."""
        return add_embeddings(self, name, array, provenance, ids)

    @property
    def embedding_sets(self) -> dict[str, dict[str, Any]]:
        """Stored embedding matrices: name -> provenance."""
        return embedding_sets(self)

    @operation
    def embeddings(self, name: str = "default", ids: list[str] | None = None) -> np.ndarray:
        """A stored embedding matrix aligned to ``ids`` (memory-mapped when it already matches)."""
        return embeddings(self, name, ids)

    def add_labels(self, name: str, rows: list[dict], provenance: dict, files: dict[str, bytes] | None = None) -> Path:
        """Store a label set (rows of text + score, e.g. Evol labels) with provenance and side files."""
        return add_labels(self, name, rows, provenance, files)

    def labels(self, name: str) -> datasets.Dataset:
        """A stored label set as a ``datasets.Dataset`` (``.info.description`` holds nothing; see label_sets)."""
        return labels(self, name)

    @property
    def label_sets(self) -> dict[str, dict[str, Any]]:
        """Stored label sets: name -> provenance."""
        return label_sets(self)

    def label_file(self, name: str, file: str) -> Path:
        """A side file stored with a label set (e.g. ``sets.jsonl``)."""
        return label_file(self, name, file)

    def add_artifact(self, name: str, obj: Any) -> None:
        """Store a JSON document owned by a step (e.g. an InsTag normaliser's mapping), atomically."""
        add_artifact(self, name, obj)

    def artifact(self, name: str) -> Any:
        """A stored JSON artifact (None if absent)."""
        return artifact(self, name)
