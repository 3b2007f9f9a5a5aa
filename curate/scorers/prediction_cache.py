"""The workspace cache of a fine-tuned scorer's forward passes: one raw value per row text, kept as each chunk ends.

A pass scores the rows the cache lacks in chunks sized by time (one batch first, growing while each takes under
``CHUNK_SECONDS``), and each finished chunk is one file, so a killed pass keeps every chunk it finished and loses
at most a few seconds of work; a re-run scores only the rest. Chunks of a fixed 512 rows kept nothing of a pool
under 512 rows. Rows are found by their texts' hash, not their position: a re-run's chunks need not line up.

Layout: ``<cache_dir>/scorer_ce/<scorer fingerprint>/<uuid>.npz`` holding ``keys`` (hex digests) and ``values``;
each written under a temporary name of its own and renamed into place, so writers never share a file.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from curate.errors import ScorerError

CHUNK_SECONDS = 5.0    # a chunk grows while each takes under this: a kill loses at most about this much work
MAX_CHUNK_ROWS = 4096  # and stays under this many rows (fewer, larger files for a large pool)
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


def cached_values(folder: Path) -> dict[bytes, float]:
    """Every value kept in ``folder``, by row key; a damaged file is one :class:`ScorerError` naming it."""
    known: dict[bytes, float] = {}
    for file in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        try:
            with np.load(file, allow_pickle=False) as data:
                keys, values = data["keys"], data["values"]
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise ScorerError(f"{file}: a damaged file of the scorer's prediction cache ({type(exc).__name__}: "
                              f"{exc}); remove it (its rows are scored again)") from None
        known.update(zip(keys.tolist(), values.tolist(), strict=True))
    return known


def store(folder: Path, keys: Sequence[bytes], values: np.ndarray) -> Path:
    """Keep one finished chunk: written under a name of its own, then renamed into place whole."""
    folder.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    tmp, path = folder / f".{name}.tmp", folder / f"{name}.npz"
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=np.asarray(keys, dtype=f"S{KEY_CHARS}"), values=np.asarray(values, dtype=np.float32))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def predict_cached(predict: Callable[[list[int]], np.ndarray], keys: list[bytes], folder: Path, *, first_rows: int,
                   on_rows: Callable[[int], object] | None = None) -> np.ndarray:
    """Raw values of every row: the kept ones read back, the others from ``predict(positions)`` in chunks of
    ``first_rows`` rows first, then sized by time; each chunk kept as it ends."""
    out = np.zeros(len(keys), dtype=np.float32)
    known = cached_values(folder)
    todo = []
    for i, key in enumerate(keys):
        if key in known:
            out[i] = known[key]
        else:
            todo.append(i)
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
    return out
