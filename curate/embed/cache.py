"""The on-disk embedding cache: vectors keyed by (model, backend, sha256 of the text), one ``.npz`` file per
model and backend (the ``torch`` backend keeps the file name it had before backends existed).

Embedding steps and trained scorers share it, so a text is encoded once per model. Two processes adding to
one cache file serialise on a file lock (``<file>.lock``) around read-merge-write: the second re-reads the
file under the lock and encodes only what the first did not, so neither drops the other's entries.

Nothing encoded is lost to a kill: while encoding, the vectors done so far are written every
``PART_EVERY_S`` seconds as a part (``<file>.parts/part-*.npz``, only the new vectors, so a long pass writes
each vector once); reads take the file and its parts, and a pass that finishes merges them into the file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
from filelock import FileLock

from curate.defaults import EMBED
from curate.embed.encoder import encode, model_id, resolve_backend
from curate.storage.files import folder_fingerprint

KEY_DTYPE = "S32"
PART_EVERY_S = 30.0  # while encoding, the vectors done so far are kept on disk at least this often


def cache_id(model: str | None, backend: str = "torch") -> str:
    """The name vectors are cached under: the model id, plus ``#<hash of its files>`` for a model folder other than
    the packaged default (weights saved again into the same folder are another model), plus ``@<backend>`` for
    backends other than torch."""
    mid = model_id(model)
    if mid != EMBED.model and os.path.isdir(mid):
        mid = f"{mid}#{folder_fingerprint(Path(mid))}"
    return mid if backend == "torch" else f"{mid}@{backend}"


def cache_file(cache_dir: str | os.PathLike, model: str | None, backend: str = "torch") -> Path:
    """The cache file of ``model`` and ``backend`` under ``cache_dir`` (``embeddings/<name>-<hash>.npz``)."""
    mid = cache_id(model, backend)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in mid.rstrip("/").split("/")[-1])[:60]
    digest = hashlib.sha256(mid.encode()).hexdigest()[:10]
    return Path(cache_dir) / "embeddings" / f"{safe}-{digest}.npz"


def text_key(text: str) -> bytes:
    # Hex, not raw digest bytes: numpy's fixed-width bytes dtype drops trailing NULs, which broke lookups.
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32].encode("ascii")


def _parts(cache: Path) -> Path:
    return cache.with_name(cache.name + ".parts")


def _read(cache: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(keys, vectors) stored in ``cache`` and its parts; none: no keys and None."""
    keys, vectors = [], []
    for path in ([cache] if cache.exists() else []) + sorted(_parts(cache).glob("part-*.npz")):
        with np.load(path) as z:
            keys.append(z["keys"])
            vectors.append(z["vectors"])
    if not keys:
        return np.empty(0, dtype=KEY_DTYPE), None
    if len(keys) == 1:
        return keys[0], vectors[0]
    # a key twice (a kill between merging the parts into the file and removing them): keep one copy
    _, first = np.unique(np.concatenate(keys), return_index=True)
    first.sort()
    return np.concatenate(keys)[first], np.concatenate(vectors)[first]


def _write(path: Path, keys: np.ndarray, vectors: np.ndarray) -> None:
    """``path`` atomically (a temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp.npz")
    try:
        np.savez(tmp, keys=keys, vectors=vectors)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _PartWriter:
    """``encode``'s ``on_chunk``: keeps the chunks done so far as parts of the cache, at most every
    ``PART_EVERY_S`` seconds (the caller holds the cache's lock)."""

    def __init__(self, cache: Path, keys: list[bytes]):
        self.folder, self.keys = _parts(cache), keys
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.last = time.monotonic()

    def __call__(self, positions: np.ndarray, vectors: np.ndarray) -> None:
        self.pending.append((positions, vectors.copy()))
        if time.monotonic() - self.last >= PART_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.folder.mkdir(exist_ok=True)
            positions = np.concatenate([p for p, _ in self.pending])
            keys = np.array([self.keys[i] for i in positions.tolist()], dtype=KEY_DTYPE)
            _write(self.folder / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz", keys,
                   np.concatenate([v for _, v in self.pending]))
            self.pending = []
        self.last = time.monotonic()


def _missing(keys: list[bytes], texts: list[str], known: dict[bytes, int]) -> dict[bytes, str]:
    """Texts (first occurrence, in input order) whose key the cache lacks."""
    missing: dict[bytes, str] = {}
    for k, t in zip(keys, texts, strict=True):
        if k not in known and k not in missing:
            missing[k] = t
    return missing


def encode_cached(texts: list[str], cache_dir: str | os.PathLike, model: str | None = None,
                  batch_size: int = EMBED.batch_size, progress: bool = False,
                  device: str | None = None, backend: str | None = None) -> tuple[np.ndarray, int, Path]:
    """``encode`` through the on-disk cache keyed by (model, backend, sha256 of the text).

    Returns the matrix (one row per text), how many texts were newly encoded, and the cache file.
    """
    mid = model_id(model)
    backend = resolve_backend(backend, device, env=False)
    keys = [text_key(t) for t in texts]
    cache = cache_file(cache_dir, mid, backend)
    cached_keys, cached_vecs = _read(cache)
    known = {k: i for i, k in enumerate(cached_keys.tolist())}
    missing = _missing(keys, texts, known)
    if missing:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache.with_name(cache.name + ".lock"))):
            cached_keys, cached_vecs = _read(cache)  # another process may have added some while we waited
            known = {k: i for i, k in enumerate(cached_keys.tolist())}
            missing = _missing(keys, texts, known)
            if missing:
                parts = _PartWriter(cache, list(missing))
                try:
                    fresh = encode(list(missing.values()), model=mid, batch_size=batch_size, progress=progress,
                                   device=device, backend=backend, on_chunk=parts)
                except BaseException:  # Ctrl-C or an error mid-pass: keep the chunks encoded since the last part
                    parts.flush()
                    raise
                cached_vecs = fresh if cached_vecs is None else np.concatenate((cached_vecs, fresh))
                cached_keys = np.concatenate((cached_keys, np.array(list(missing), dtype=KEY_DTYPE)))
                known = {k: i for i, k in enumerate(cached_keys.tolist())}
            if missing or _parts(cache).exists():  # one file again: the parts' vectors are in it now
                _write(cache, cached_keys, cached_vecs)
                shutil.rmtree(_parts(cache), ignore_errors=True)
    if cached_vecs is None:
        return np.empty((0, 0), dtype=np.float32), 0, cache
    return cached_vecs[[known[k] for k in keys]], len(missing), cache
