"""The on-disk embedding cache: vectors keyed by (model, backend, sha256 of the text), one shard store per model and
backend (:mod:`curate.storage.vector_shards`; the ``torch`` backend keeps the name it had before backends existed).

Embedding steps and trained scorers share it, so a text is encoded once per model. A pass that has texts to encode
holds the store's lock while it encodes: a second process re-reads the store under the lock and encodes only what the
first did not, so neither drops the other's vectors nor encodes them twice. Adding vectors writes new shards and
never rewrites the stored ones, so a call costs what it encodes and reads, not the size of the cache.

Nothing encoded is lost to a kill: while encoding, the vectors done so far are written as a shard every
``PART_EVERY_S`` seconds. A cache in the layout before shards (``<name>.npz`` and its ``.npz.parts/``) is read and
moved into the store by the first call that finds it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np

from curate.defaults import EMBED
from curate.embed.encoder import encode, model_id, resolve_backend
from curate.errors import WorkspaceError
from curate.storage.blobs import bad_rows
from curate.storage.files import folder_fingerprint
from curate.storage.vector_shards import KEY_DTYPE, VectorStore

# While encoding, the vectors done so far are kept on disk at least this often: at 30 s a kill 32 s into a 50 s pass
# kept nothing (the first shard comes due a chunk after 30 s); a shard costs a write and an fsync, merged past 32.
PART_EVERY_S = 10.0
MERGE_PAST_SHARDS = 32  # a long pass merges its shards once it has written more (lookups and adds read them all)


def cache_id(model: str | None, backend: str = "torch") -> str:
    """The name vectors are cached under: the model id, plus ``#<hash of its files>`` for a model folder other than
    the packaged default (weights saved again into the same folder are another model), plus ``@<backend>`` for
    backends other than torch."""
    mid = model_id(model)
    if mid != EMBED.model and os.path.isdir(mid):
        mid = f"{mid}#{folder_fingerprint(Path(mid))}"
    return mid if backend == "torch" else f"{mid}@{backend}"


def cache_folder(cache_dir: str | os.PathLike, model: str | None, backend: str = "torch") -> Path:
    """The store of ``model`` and ``backend`` under ``cache_dir`` (``embeddings/<name>-<hash>/``)."""
    mid = cache_id(model, backend)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in mid.rstrip("/").split("/")[-1])[:60]
    digest = hashlib.sha256(mid.encode()).hexdigest()[:10]
    return Path(cache_dir) / "embeddings" / f"{safe}-{digest}"


def text_key(text: str) -> bytes:
    # Hex, not raw digest bytes: numpy's fixed-width bytes dtype drops trailing NULs, which broke lookups.
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32].encode("ascii")


def legacy_files(store: VectorStore) -> list[Path]:
    """The files of the layout before shards: ``<name>.npz`` and the parts in ``<name>.npz.parts/``."""
    single = store.folder.with_name(store.folder.name + ".npz")
    parts = single.with_name(single.name + ".parts")
    return ([single] if single.exists() else []) + (sorted(parts.glob("part-*.npz")) if parts.is_dir() else [])


def _read_legacy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(keys, vectors) of one file of the old layout; a damaged one is named."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["keys"], z["vectors"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise WorkspaceError(f"{path}: a damaged file of the embedding cache ({exc}); remove it: its texts are "
                             "encoded again when next asked for") from None


def _with_legacy(store: VectorStore, keys: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """``store.get(keys)``, the keys it lacks looked up in the old layout's files, read in place (no lock, no
    write: a read-only workspace whose cache is whole reads it as before)."""
    vectors, found = store.get(keys)
    for path in legacy_files(store):
        todo = np.flatnonzero(~found)
        if not len(todo):
            break
        old_keys, old_vectors = _read_legacy(path)
        if not len(old_keys):
            continue
        order = np.argsort(old_keys)
        pos = np.searchsorted(old_keys[order], keys[todo]).clip(max=len(old_keys) - 1)
        hit = old_keys[order][pos] == keys[todo]
        if vectors is None:
            vectors = np.zeros((len(keys), old_vectors.shape[1]), dtype=old_vectors.dtype)
        vectors[todo[hit]] = old_vectors[order[pos[hit]]]
        found[todo[hit]] = True
    return vectors, found


def move_legacy(store: VectorStore) -> None:
    """Move the old layout's vectors into the store, one file at a time, and merge them (caller holds the lock;
    nothing to do without them)."""
    moved = legacy_files(store)
    for path in moved:
        store.add(*_read_legacy(path))
        path.unlink()
    parts = store.folder.with_name(store.folder.name + ".npz.parts")
    if parts.is_dir():
        shutil.rmtree(parts, ignore_errors=True)
    if moved:
        store.compact()


class _PartWriter:
    """``encode``'s ``on_chunk``: keeps the chunks done so far as shards of the store, at most every
    ``PART_EVERY_S`` seconds (the caller holds the store's lock)."""

    def __init__(self, store: VectorStore, keys: list[bytes]):
        self.store, self.keys = store, keys
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.last = time.monotonic()

    def __call__(self, positions: np.ndarray, vectors: np.ndarray) -> None:
        self.pending.append((positions, vectors.copy()))
        if time.monotonic() - self.last >= PART_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            positions = np.concatenate([p for p, _ in self.pending])
            keys = np.array([self.keys[i] for i in positions.tolist()], dtype=KEY_DTYPE)
            self.store.add(keys, np.concatenate([v for _, v in self.pending]))
            self.pending = []
            if len(self.store.shards()) > MERGE_PAST_SHARDS:
                self.store.compact()
        self.last = time.monotonic()


def _checked(store: VectorStore, keys: np.ndarray, vectors: np.ndarray | None, found: np.ndarray) -> None:
    """Refuse vectors read from the store that hold NaN, infinity or only zeros (a shard whose bytes rotted or were
    zeroed): a NaN vector passed every similarity test, and the set it went into was refused for it on every run,
    naming rows, never the shard."""
    if vectors is None or not found.any():
        return
    bad = bad_rows(vectors[found])
    if bad.size:
        key = keys[np.flatnonzero(found)[int(bad[0])]]
        shard = store.shard_of(key) or store.folder
        raise WorkspaceError(f"{shard}: a damaged shard of the embedding cache: {bad.size} vector(s) read from the "
                             "cache hold NaN or infinity or only zeros; remove this folder: its vectors are encoded "
                             "again")


def get_checked(store: VectorStore, keys: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """``store.get(keys)``, refused with a WorkspaceError naming the shard where a vector read is damaged (as
    :func:`lookup_or_encode` refuses it)."""
    vectors, found = store.get(keys)
    _checked(store, keys, vectors, found)
    return vectors, found


def lookup_or_encode(store: VectorStore, texts: list[str], encode_texts) -> tuple[np.ndarray | None, int]:
    """(vectors of ``texts``, how many were encoded) from ``store``, encoding what it lacks with
    ``encode_texts(texts, on_chunk)`` under the store's lock; vectors None when ``texts`` is empty."""
    keys = np.array([text_key(t) for t in texts], dtype=KEY_DTYPE)
    if legacy_files(store):
        try:
            store.folder.parent.mkdir(parents=True, exist_ok=True)
            with store.lock():
                move_legacy(store)
        except OSError as exc:  # a read-only workspace: its old cache is read where it is, as before shards
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            vectors, found = _with_legacy(store, keys)
            if found.all():
                return vectors, 0
            raise
    if store.contains(keys).all():  # keys first: a pass that encodes reads vectors once
        vectors, found = store.get(keys)
        _checked(store, keys, vectors, found)
        if found.all():  # else the folder lost shards since (removed by hand): encode them again below
            return vectors, 0
    store.folder.parent.mkdir(parents=True, exist_ok=True)
    with store.lock():
        move_legacy(store)
        vectors, found = store.get(keys)  # another process may have added some while we waited
        _checked(store, keys, vectors, found)
        missing: dict[bytes, str] = {}  # first occurrence of each key the store lacks, in input order
        for i in np.flatnonzero(~found).tolist():
            missing.setdefault(keys[i].tobytes(), texts[i])
        if not missing:
            return vectors, 0
        parts = _PartWriter(store, list(missing))
        try:
            fresh = encode_texts(list(missing.values()), parts)
        except BaseException:  # Ctrl-C or an error mid-pass: keep the chunks encoded since the last part
            parts.flush()
            raise
        parts.flush()
        store.compact()
    if vectors is None:
        vectors = np.zeros((len(texts), fresh.shape[1]), dtype=fresh.dtype)
    row_of = {k: j for j, k in enumerate(missing)}
    todo = np.flatnonzero(~found)
    vectors[todo] = fresh[[row_of[keys[i].tobytes()] for i in todo.tolist()]]
    return vectors, len(missing)


def encode_cached(texts: list[str], cache_dir: str | os.PathLike, model: str | None = None,
                  batch_size: int = EMBED.batch_size, progress: bool = False,
                  device: str | None = None, backend: str | None = None) -> tuple[np.ndarray, int, Path]:
    """``encode`` through the on-disk cache keyed by (model, backend, sha256 of the text).

    Returns the matrix (one row per text), how many texts were newly encoded, and the cache's folder.
    """
    mid = model_id(model)
    backend = resolve_backend(backend, device, env=False)
    store = VectorStore(cache_folder(cache_dir, mid, backend))
    vectors, encoded = lookup_or_encode(store, texts, lambda missing, on_chunk: encode(
        missing, model=mid, batch_size=batch_size, progress=progress, device=device, backend=backend,
        on_chunk=on_chunk))
    if vectors is None:
        return np.empty((0, 0), dtype=np.float32), 0, store.folder
    return vectors, encoded, store.folder
