"""The workspace cache of a fine-tuned scorer's forward passes: one raw value per row text, kept as each chunk ends.

A pass scores the rows the cache lacks in chunks sized by time (one batch first, growing while each takes under
``CHUNK_SECONDS``), and each finished chunk is kept at once, so a killed pass keeps every chunk it finished and loses
at most a few seconds of work; a re-run scores only the rest. Chunks of a fixed 512 rows kept nothing of a pool
under 512 rows. Rows are found by their texts' hash, not their position: a re-run's chunks need not line up.

Layout: ``<cache_dir>/scorer_ce/<scorer fingerprint>/``, a :class:`~curate.storage.vector_shards.VectorStore` of
one-value vectors (the embedding cache's store: shards written whole, merged by size, read without a lock).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from curate.storage.vector_shards import KEY_DTYPE, VectorStore

CHUNK_SECONDS = 5.0    # a chunk grows while each takes under this: a kill loses at most about this much work
MAX_CHUNK_ROWS = 4096  # and stays under this many rows (fewer, larger shards for a large pool)
KEY_CHARS = 32         # hex characters of a row key (128 bits of SHA-256)


def cache_folder(cache_dir: str | os.PathLike, fingerprint: str) -> Path:
    """Where the forward passes of the scorer with ``fingerprint`` are kept."""
    return Path(cache_dir) / "scorer_ce" / hashlib.sha256(fingerprint.encode()).hexdigest()[:KEY_CHARS]


def row_keys(instructions: Sequence[str], responses: Sequence[str] | None) -> list[bytes]:
    """One key per row: the hash of what the scorer reads of it."""
    keys = []
    for i, text in enumerate(instructions):
        h = hashlib.sha256(text.encode())
        if responses is not None:
            h.update(b"\0response\0" + responses[i].encode())
        keys.append(h.hexdigest()[:KEY_CHARS].encode())
    return keys


def store(folder: Path, keys: Sequence[bytes], values: np.ndarray) -> Path | None:
    """Keep one finished chunk (a shard of the store, written whole)."""
    shards = VectorStore(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with shards.lock():
        return shards.add(np.asarray(keys, dtype=KEY_DTYPE), np.asarray(values, dtype=np.float32)[:, None])


def predict_cached(predict: Callable[[list[int]], np.ndarray], keys: list[bytes], folder: Path, *, first_rows: int,
                   on_rows: Callable[[int], object] | None = None) -> np.ndarray:
    """Raw values of every row: the kept ones read back, the others from ``predict(positions)`` in chunks of
    ``first_rows`` rows first, then sized by time; each chunk kept as it ends."""
    shards = VectorStore(folder)
    kept, found = shards.get(np.asarray(keys, dtype=KEY_DTYPE))
    out = np.zeros(len(keys), dtype=np.float32)
    if kept is not None:
        out[found] = kept[found, 0]
    todo = np.flatnonzero(~found).tolist()
    if on_rows is not None and len(keys) > len(todo):
        on_rows(len(keys) - len(todo))
    rows, start = max(1, first_rows), 0
    while start < len(todo):
        part = todo[start:start + rows]
        began = time.monotonic()
        values = np.asarray(predict(part), dtype=np.float32)
        seconds = time.monotonic() - began
        store(folder, [keys[i] for i in part], values)
        out[part] = values
        start += len(part)
        rows = max(1, min(MAX_CHUNK_ROWS, 2 * rows, int(rows * CHUNK_SECONDS / max(seconds, 1e-6))))
    if todo:
        with shards.lock():
            shards.compact()
    return out
