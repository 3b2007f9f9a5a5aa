"""The workspace cache of a fine-tuned scorer's forward passes: one raw value per row text, kept as a pass goes.

A pass scores the rows the cache lacks (each distinct row once) in chunks of a fixed plan (:func:`chunk_plan`):
the rows in one canonical order, by (length, key), cut into chunks of one batch first, doubling up to
``CHUNK_ROWS`` rows and ``CHUNK_CHARS`` characters; the finished chunks are kept every ``PART_EVERY_S`` seconds and
at the end, so a killed pass loses at most those seconds and its running chunk; a re-run scores only the rest.
Chunks of a fixed 512 rows kept nothing of a pool under 512 rows. The plan depends on the set of rows alone, never on their order or the
machine's load: a row's value depends in its last digits (~1e-6) on the rows padded into its batch, so chunks sized
by time (until this version) gave two fresh runs on the same rows different values. Rows are found by their texts'
hash, not their position: a re-run's chunks need not line up (a resumed pass, whose rows left to score differ, may
differ from a fresh one in those last digits).

Layout: ``<cache_dir>/scorer_ce/<scorer fingerprint>/``, a :class:`~curate.storage.vector_shards.VectorStore` of
one-value vectors (the embedding cache's store: shards written whole, merged by size, read without a lock).

Earlier layouts are moved in by the first pass over each store in a process (:func:`move_legacy`; no version writes
them any more, so later passes need not look again): ``scorer_ce/<hash>.npy``, one file of raw values per whole
512-row chunk, named by the hash of the scorer's fingerprint and the chunk's texts (before per-row keys), and
``scorer_ce/<scorer fingerprint>/<uuid>.npz`` (``keys`` and ``values``, before the shard store).
"""

from __future__ import annotations

import hashlib
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curate.embed.cache import PART_EVERY_S
from curate.storage.vector_shards import KEY_DTYPE, VectorStore

CHUNK_ROWS = 256       # rows per kept chunk at most: a kill loses at most one (seconds on a CPU)
CHUNK_CHARS = 128 * 1024  # and characters (a row counts at most ROW_CHARS): 64 long rows, not 256 (a minute)
ROW_CHARS = 2048       # (about what a 512-token reader reads)
KEY_CHARS = 32         # hex characters of a row key (128 bits of SHA-256)
LEGACY_CHUNK = 512     # rows per file of the layout before per-row keys
_MOVED_IN: set[Path] = set()  # the stores this process has moved the earlier layouts into (or found none for)


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


@dataclass
class LegacyMove:
    """What :func:`move_legacy` did with the files of the earlier layouts."""
    rows_moved: int = 0                                       # values now in the store
    files_moved: list[Path] = field(default_factory=list)     # read into the store, then removed
    files_removed: list[Path] = field(default_factory=list)   # removed unread: no pass can match them now
    damaged: list[Path] = field(default_factory=list)         # unreadable, removed (their rows are scored again)


def legacy_chunk_file(cache_dir: str | os.PathLike, fingerprint: str, instructions: Sequence[str],
                      responses: Sequence[str] | None) -> Path:
    """The file the layout before per-row keys kept one chunk's raw values in (curate up to commit 55c98a7)."""
    h = hashlib.sha256(fingerprint.encode())
    for i, text in enumerate(instructions):
        h.update(hashlib.sha256(text.encode()).digest())
        if responses is not None:
            h.update(hashlib.sha256(responses[i].encode()).digest())
    return Path(cache_dir) / "scorer_ce" / f"{h.hexdigest()[:32]}.npy"


def _read_pairs(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(keys, values) of a file of the per-row layout; None when damaged."""
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, values = np.asarray(data["keys"], dtype=KEY_DTYPE), np.asarray(data["values"], dtype=np.float32)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return (keys, values) if values.ndim == 1 and len(values) == len(keys) else None


def _read_chunk(path: Path, rows: int) -> np.ndarray | None:
    """The ``rows`` values of a chunk file; None when damaged."""
    try:
        values = np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
    except (OSError, ValueError, EOFError):
        return None
    return values if values.ndim == 1 and len(values) == rows else None


def describe(moved: LegacyMove) -> str | None:
    """One line on the files :func:`move_legacy` removed without reading (None when it removed none)."""
    lost = len(moved.files_removed) + len(moved.damaged)
    if not lost:
        return None
    return (f"removed {lost} file(s) of the fine-tuned scorers' prediction cache in its layout before per-row keys "
            f"({len(moved.damaged)} unreadable; the others matched no pass of this scorer over these rows: a file of "
            f"that layout is found only by the pass that wrote it); their rows are scored again when asked for "
            f"({moved.rows_moved} rows of this pass were read from that layout)")


def move_legacy(cache_dir: str | os.PathLike, fingerprint: str, instructions: Sequence[str],
                responses: Sequence[str] | None) -> LegacyMove:
    """Move the earlier layouts' values for this scorer into its store, and remove their files (see the module doc).

    A chunk file is named by the texts of a whole chunk, so only a pass over the rows that wrote it, in the same
    order, can read it: those ``instructions`` / ``responses`` find theirs, and the chunk files no pass of this
    scorer matched are removed (another scorer's too: a file cannot say whose it is, and would stay for good).
    Once per store and process: a store moved into before is not looked at again (each cached pass globbed it)."""
    folder = cache_folder(cache_dir, fingerprint)
    if folder.absolute() in _MOVED_IN:
        return LegacyMove()
    moved = _move_legacy(cache_dir, fingerprint, folder, instructions, responses)
    _MOVED_IN.add(folder.absolute())  # not on an error: the next pass tries again
    return moved


def _move_legacy(cache_dir: str | os.PathLike, fingerprint: str, folder: Path, instructions: Sequence[str],
                 responses: Sequence[str] | None) -> LegacyMove:
    """:func:`move_legacy`'s work, for a store not moved into yet by this process."""
    moved = LegacyMove()
    root = Path(cache_dir) / "scorer_ce"
    per_row = sorted(folder.glob("*.npz")) + sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    chunks = sorted(root.glob("*.npy")) if root.is_dir() else []
    if not per_row and not chunks:
        return moved
    store_ = VectorStore(folder)
    with store_.lock():
        for path in per_row:
            pairs = None if path.suffix == ".tmp" else _read_pairs(path)  # .tmp: a killed writer's
            if pairs is not None and len(pairs[0]):
                store_.add(pairs[0], pairs[1][:, None])
                moved.rows_moved += len(pairs[0])
            (moved.files_moved if pairs is not None else moved.damaged).append(path)
            path.unlink(missing_ok=True)
        keys = np.asarray(row_keys(instructions, responses), dtype=KEY_DTYPE)
        for start in range(0, len(instructions), LEGACY_CHUNK):
            part = slice(start, start + LEGACY_CHUNK)
            path = legacy_chunk_file(cache_dir, fingerprint, instructions[part],
                                     None if responses is None else responses[part])
            if not path.exists():
                continue
            values = _read_chunk(path, len(keys[part]))
            if values is not None:
                store_.add(keys[part], values[:, None])
                moved.rows_moved += len(values)
            (moved.files_moved if values is not None else moved.damaged).append(path)
            path.unlink(missing_ok=True)
        for path in chunks:
            if path.exists() and path not in moved.files_moved and path not in moved.damaged:
                path.unlink(missing_ok=True)
                moved.files_removed.append(path)
        store_.compact()
    return moved


def chunk_plan(keys: Sequence[bytes], todo: Sequence[int], lengths: Sequence[int] | None, *, first_rows: int,
               chunk_rows: int = CHUNK_ROWS) -> list[list[int]]:
    """Positions of the distinct rows among ``todo`` (the first of each key), in chunks: sorted by (``lengths``,
    key), cut into ``first_rows`` rows, then twice as many each chunk up to ``chunk_rows`` rows and ``CHUNK_CHARS``
    characters of ``lengths``. Depends on the set of rows only (not their order, not the time a chunk takes), so the same rows are batched the same in every pass."""
    first: dict[bytes, int] = {}
    for i in todo:
        first.setdefault(keys[i], i)
    order = sorted(first.values(), key=lambda i: (0 if lengths is None else lengths[i], keys[i]))
    chunks, rows, start = [], max(1, first_rows), 0
    while start < len(order):
        end, chars = start, 0
        while end < min(len(order), start + rows) and (end == start or chars < CHUNK_CHARS):
            chars += min(ROW_CHARS, 0 if lengths is None else lengths[order[end]])
            end += 1
        chunks.append(order[start:end])
        start = end
        rows = max(1, min(chunk_rows, 2 * rows))
    return chunks


def predict_cached(predict: Callable[[list[int]], np.ndarray], keys: list[bytes], folder: Path | None, *,
                   first_rows: int, lengths: Sequence[int] | None = None,
                   on_rows: Callable[[int], object] | None = None) -> np.ndarray:
    """Raw values of every row: the kept ones read back, the others from ``predict(positions)`` in the chunks of
    :func:`chunk_plan` (``lengths``: what the rows are sorted by before their keys), the finished ones kept every
    ``PART_EVERY_S`` seconds and at the end (a kill loses at most those seconds and the running chunk); with
    ``folder`` None nothing is read or kept (the same chunks, so the same values)."""
    shards = VectorStore(folder) if folder is not None else None
    out = np.zeros(len(keys), dtype=np.float32)
    found = np.zeros(len(keys), dtype=bool)
    if shards is not None:
        kept, found = shards.get(np.asarray(keys, dtype=KEY_DTYPE))
        if kept is not None:
            out[found] = kept[found, 0]
    todo = np.flatnonzero(~found).tolist()
    if on_rows is not None and len(keys) > len(todo):
        on_rows(len(keys) - len(todo))
    value_of: dict[bytes, float] = {}
    chunks = chunk_plan(keys, todo, lengths, first_rows=first_rows)
    if on_rows is not None and len(todo) > sum(map(len, chunks)):
        on_rows(len(todo) - sum(map(len, chunks)))  # the repeats of a row scored once
    # Finished chunks are kept together at most every PART_EVERY_S seconds, and at the end (the chunks decide only
    # which rows share a batch, so the values; a shard per chunk made a GPU pass 5.6x slower, in its fsyncs)
    pending: list[int] = []
    last = time.monotonic()
    for n, part in enumerate(chunks, 1):
        values = np.asarray(predict(part), dtype=np.float32)
        value_of.update(zip((keys[i] for i in part), values.tolist(), strict=True))
        pending += part
        if folder is not None and (n == len(chunks) or time.monotonic() - last >= PART_EVERY_S):
            store(folder, [keys[i] for i in pending], np.asarray([value_of[keys[i]] for i in pending], np.float32))
            pending, last = [], time.monotonic()
    if todo:
        out[todo] = np.asarray([value_of[keys[i]] for i in todo], dtype=np.float32)
        if shards is not None:
            with shards.lock():
                shards.compact()
    return out
