"""Vectors keyed by fixed-width byte keys, kept on disk as immutable shards (the embedding cache's store, and the
fine-tuned scorers' prediction cache's).

A shard is a folder ``shard-<time>-<id>/`` holding ``keys.npy`` (sorted, unique) and ``vectors.npy`` (the rows in key
order). It is written under a temporary name, flushed to the disk (its files, then the folder after the rename) and
renamed into place, so neither a kill nor a power loss leaves half a shard, and it is never changed afterwards:
adding vectors writes a new shard instead of rewriting the store (a single ``.npz`` read and rewritten whole on every
call cost seconds and twice its size in memory past a few hundred thousand vectors).
Lookups memory-map the shards and read only the rows asked for.

Shards of one size tier (``MERGE_FANIN`` ** k rows) are merged once the tier holds ``MERGE_FANIN`` of them, streamed
chunk by chunk, so a store of n vectors keeps O(log n) shards. Writers (``add``, ``compact``) must hold ``lock()``;
readers need no lock: a shard a merge removes between listing and reading is listed again.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
import uuid
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from filelock import FileLock

from curate.errors import WorkspaceError
from curate.storage.write_errors import fsync_path, writing

KEY_DTYPE = "S32"
MERGE_FANIN = 4  # a size tier holding this many shards is merged into one
MERGE_CHUNK_ROWS = 65_536  # rows copied at a time by a merge or a lookup (their memory beside the keys)
_READ_ATTEMPTS = 20  # a reader racing a writer that merges shards again and again (the suite, loaded) lost 5 in a row


class VectorStore:
    """Shards of (key, vector) rows in ``folder``; see the module docstring."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def lock(self) -> FileLock:
        """The lock writers hold (``<folder>.lock`` beside the folder)."""
        return FileLock(str(self.folder.with_name(self.folder.name + ".lock")))

    def shards(self) -> list[Path]:
        """The store's shards, oldest first (names only: one a merge renames away after this lists it is found
        missing when read, and the read lists again)."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.name.startswith("shard-"))

    def __len__(self) -> int:
        """Rows over all shards (a key stored twice, after a kill mid-merge, counts twice until the next merge)."""
        return sum(_rows(s) for s in self.shards())

    def get(self, keys: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(vectors, found) for ``keys``: one row per key, zeros where ``found`` is False; None when no key is
        stored."""
        return self._retry(keys, read_vectors=True)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Whether each of ``keys`` is stored (reads the shards' keys only)."""
        return self._retry(keys, read_vectors=False)[1]

    def shard_of(self, key: bytes) -> Path | None:
        """The newest shard holding ``key`` (the one ``get`` reads it from), None if none does."""
        for shard in reversed(self.shards()):
            stored = _load(shard / "keys.npy")
            if len(stored) and stored[min(int(np.searchsorted(stored, key)), len(stored) - 1)] == key:
                return shard
        return None

    def _retry(self, keys: np.ndarray, read_vectors: bool) -> tuple[np.ndarray | None, np.ndarray]:
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        for attempt in range(_READ_ATTEMPTS):
            try:
                return self._find(keys, read_vectors)
            except FileNotFoundError:  # a merge removed a listed shard: its rows are in the merged one now
                if attempt == _READ_ATTEMPTS - 1:
                    raise
                time.sleep(min(0.05, 0.002 * attempt))  # let the merge that removed it finish its rename
        raise AssertionError("unreachable")

    def _find(self, keys: np.ndarray, read_vectors: bool) -> tuple[np.ndarray | None, np.ndarray]:
        order = np.argsort(keys, kind="stable")
        wanted = keys[order]  # sorted, so each shard's rows are read in increasing order
        found = np.zeros(len(keys), dtype=bool)  # by position in ``wanted``
        out: np.ndarray | None = None
        for shard in reversed(self.shards()):  # newest first: small shards answer a fresh pass's keys
            todo = np.flatnonzero(~found)
            if not len(todo):
                break
            stored = _load(shard / "keys.npy")
            if not len(stored):
                continue
            pos = np.searchsorted(stored, wanted[todo]).clip(max=len(stored) - 1)
            hit = np.asarray(stored[pos]) == wanted[todo]
            if not hit.any():
                continue
            if read_vectors:
                vectors = _load(shard / "vectors.npy")
                if out is None:
                    out = np.zeros((len(keys), vectors.shape[1]), dtype=vectors.dtype)
                into, rows = order[todo[hit]], pos[hit]
                for start in range(0, len(rows), MERGE_CHUNK_ROWS):  # a chunk at a time: no second whole matrix
                    part = slice(start, start + MERGE_CHUNK_ROWS)
                    out[into[part]] = vectors[rows[part]]  # the memory map reads only those rows
            found[todo[hit]] = True
        by_key = np.empty_like(found)
        by_key[order] = found
        return out, by_key

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> Path | None:
        """Write ``keys``/``vectors`` as one new shard (caller holds ``lock()``); returns it, None when every key
        is stored already. First write wins: a key stored before, or a second time in ``keys``, keeps its first
        vector (a store never holds two vectors for a key)."""
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        if not len(keys):
            return None
        keep = ~self.contains(keys)  # first write wins: a key keeps the vector it was first stored with
        keys, vectors = keys[keep], np.asarray(vectors)[keep]
        if not len(keys):
            return None
        unique, first = np.unique(keys, return_index=True)
        return self._write_shard(unique, vectors[first])

    def compact(self) -> None:
        """Merge each size tier that holds ``MERGE_FANIN`` shards (caller holds ``lock()``); also removes what
        killed writers left (a writer works only under the lock, so a temporary folder seen here is stale)."""
        if self.folder.is_dir():
            for stale in self.folder.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        while True:
            tiers: dict[int, list[Path]] = defaultdict(list)
            for shard in self.shards():
                tiers[_tier(_rows(shard))].append(shard)
            full = sorted(t for t, shards in tiers.items() if len(shards) >= MERGE_FANIN)
            if not full:
                return
            self._merge(tiers[full[0]])

    def _merge(self, shards: list[Path]) -> None:
        """One shard in place of ``shards``, streamed: the merged keys in memory, vectors a chunk at a time. A key in
        two of them (a kill after a merge wrote its shard, before it removed the merged ones) has one vector in both:
        one copy is kept."""
        keys = [np.array(_load(s / "keys.npy")) for s in shards]
        vectors = [_load(s / "vectors.npy") for s in shards]
        offsets = np.cumsum([0] + [len(k) for k in keys])
        unique, first = np.unique(np.concatenate(keys), return_index=True)
        del keys
        dim, dtype = vectors[0].shape[1], vectors[0].dtype

        def fill(out: np.ndarray) -> None:
            for start in range(0, len(unique), MERGE_CHUNK_ROWS):
                rows = first[start:start + MERGE_CHUNK_ROWS]
                source = np.searchsorted(offsets, rows, side="right") - 1
                block = np.empty((len(rows), dim), dtype=dtype)
                for i, shard_vectors in enumerate(vectors):
                    mine = source == i
                    if mine.any():
                        block[mine] = shard_vectors[rows[mine] - offsets[i]]
                out[start:start + len(rows)] = block

        self._write_shard(unique, None, fill=fill, shape=(len(unique), dim), dtype=dtype)
        for shard in shards:  # a kill before this leaves keys twice (the same vectors): the next merge keeps one
            gone = self.folder / f".tmp-{uuid.uuid4().hex}"
            os.rename(shard, gone)  # whole: a reader never meets a shard-* folder half removed
            shutil.rmtree(gone, ignore_errors=True)

    def _write_shard(self, keys: np.ndarray, vectors: np.ndarray | None, fill=None, shape=None,
                     dtype=None) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            with writing(self.folder, tmp):  # a full disk names the store (numpy's short write names no file)
                np.save(tmp / "keys.npy", keys)
                if vectors is not None:
                    np.save(tmp / "vectors.npy", vectors)
                else:
                    out = np.lib.format.open_memmap(tmp / "vectors.npy", mode="w+", dtype=dtype, shape=shape)
                    _allocate(tmp / "vectors.npy")
                    fill(out)
                    out.flush()
                    del out
                for name in ("keys.npy", "vectors.npy"):
                    fsync_path(tmp / name)
                fsync_path(tmp)  # the files' names in it
                shard = self.folder / f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
                os.rename(tmp, shard)  # a folder renamed whole: readers see all of a shard or none of it
            fsync_path(self.folder)  # the rename itself
            return shard
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _allocate(path: Path) -> None:
    """Give the file ``path`` its disk blocks now: a memory-mapped file is sparse, and writing into it on a full
    disk killed the process with SIGBUS (no word, no cleanup); this fails with ENOSPC, an error ``writing`` names."""
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # a file system that cannot: written as before
            raise
    finally:
        os.close(fd)


def _load(path: Path) -> np.ndarray:
    """``path`` memory-mapped; a damaged file is named (numpy's own message names none, or speaks of pickles)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise WorkspaceError(f"{path}: a damaged shard of a cache ({exc}); remove its folder {path.parent}: what "
                             "it held is computed again when next asked for") from None
    dims = 1 if path.name == "keys.npy" else 2
    if not isinstance(array, np.ndarray) or array.ndim != dims:
        raise WorkspaceError(f"{path}: a damaged shard of a cache (not a {dims}-d array); remove its folder "
                             f"{path.parent}: what it held is computed again when next asked for")
    return array


def _rows(shard: Path) -> int:
    try:
        return int(_load(shard / "keys.npy").shape[0])
    except FileNotFoundError:  # removed by a merge since it was listed
        return 0


def _tier(rows: int) -> int:
    """k for a shard of ``MERGE_FANIN`` ** k to ``MERGE_FANIN`` ** (k + 1) - 1 rows."""
    tier = 0
    while rows >= MERGE_FANIN:
        rows //= MERGE_FANIN
        tier += 1
    return tier
