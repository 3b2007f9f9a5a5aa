"""The on-disk embedding cache: vectors keyed by (model, backend, sha256 of the text), one ``.npz`` file per
model and backend (the ``torch`` backend keeps the file name it had before backends existed).

Embedding steps and trained scorers share it, so a text is encoded once per model. Two processes adding to
one cache file serialise on a file lock (``<file>.lock``) around read-merge-write: the second re-reads the
file under the lock and encodes only what the first did not, so neither drops the other's entries.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import numpy as np
from filelock import FileLock

from curate.defaults import EMBED
from curate.embed.encoder import encode, model_id, resolve_backend

KEY_DTYPE = "S32"


def cache_id(model: str | None, backend: str = "torch") -> str:
    """The name vectors are cached under: the model id, plus ``@<backend>`` for backends other than torch."""
    mid = model_id(model)
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


def _read(cache: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(keys, vectors) stored in ``cache``; no file: no keys and None."""
    if not cache.exists():
        return np.empty(0, dtype=KEY_DTYPE), None
    with np.load(cache) as z:
        return z["keys"], z["vectors"]


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
                fresh = encode(list(missing.values()), model=mid, batch_size=batch_size, progress=progress,
                               device=device, backend=backend)
                cached_vecs = fresh if cached_vecs is None else np.concatenate((cached_vecs, fresh))
                cached_keys = np.concatenate((cached_keys, np.array(list(missing), dtype=KEY_DTYPE)))
                known = {k: i for i, k in enumerate(cached_keys.tolist())}
                tmp = cache.with_name(f".{cache.name}.{uuid.uuid4().hex}.tmp.npz")
                try:
                    np.savez(tmp, keys=cached_keys, vectors=cached_vecs)
                    os.replace(tmp, cache)
                finally:
                    tmp.unlink(missing_ok=True)
    if cached_vecs is None:
        return np.empty((0, 0), dtype=np.float32), 0, cache
    return cached_vecs[[known[k] for k in keys]], len(missing), cache
