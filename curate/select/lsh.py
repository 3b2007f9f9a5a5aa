"""The ``minhash`` selector's LSH index: kept rows' MinHash signatures in one matrix, their band keys in sorted
arrays, so a kept row costs its signature and 12 bytes per band.

Why not datasketch's ``MinHashLSH`` (whose band layout :func:`curate.select.dedup.lsh_index` still computes):
it keeps, per inserted row, a list of its bands as ``bytes`` and a Python ``set`` per bucket (~5 KB a row at 16
bands, beside the row's own signature), so a pool of a few million kept rows did not fit in 24 GB. Here a band's key
is a 64-bit hash of its values; the (key, row) pairs of recent rows sit in a dict, and are flushed into sorted numpy
arrays merged by size (each level about twice the one after it), so a query is a dict lookup plus two binary
searches per level. Candidates are the rows sharing a band key with the query, as datasketch's; a 64-bit collision
only adds a candidate, which the caller's Jaccard check then weighs like any other.
"""

from __future__ import annotations

import numpy as np

FLUSH_ENTRIES = 1 << 16  # (band key, row) pairs held in the dict before they are flushed into a sorted level


class BandIndex:
    """LSH buckets of MinHash signatures over the bands ``ranges`` (``(start, end)`` of each, datasketch's
    ``hashranges``); rows are numbered 0, 1, ... in the order :meth:`insert` is called."""

    def __init__(self, ranges: list[tuple[int, int]], num_perm: int, dtype: np.dtype | type = np.uint32):
        self.ranges = [(int(a), int(b)) for a, b in ranges]
        self._multipliers = np.random.default_rng(0x5EED).integers(1, 2**63, size=num_perm, dtype=np.uint64) | 1
        if any(a != i * (self.ranges[0][1]) for i, (a, _) in enumerate(self.ranges)):
            raise ValueError(f"bands must be contiguous from 0 and of one width: {self.ranges}")
        self._salt = (np.arange(len(self.ranges), dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        self.signatures = np.empty((1024, num_perm), dtype=dtype)
        self.rows = 0
        self._recent: dict[int, list[int]] = {}
        self._recent_entries = 0
        self._levels: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted keys, rows), largest first

    def band_keys(self, signature: np.ndarray) -> np.ndarray:
        """One 64-bit key per band: a multiply-add hash of the band's values (wrapping), salted by the band."""
        end = self.ranges[-1][1] if self.ranges else 0  # values past the last band are in none
        products = signature[:end].astype(np.uint64) * self._multipliers[:end]  # wraps modulo 2**64
        keys = np.add.reduceat(products, [a for a, _ in self.ranges]) if self.ranges else products
        return keys ^ self._salt

    def query(self, keys: np.ndarray) -> list[int]:
        """The rows sharing a band key with ``keys`` (:meth:`band_keys` of the query), each once, in row order."""
        found: set[int] = set()
        for key in keys.tolist():
            found.update(self._recent.get(key, ()))
        for sorted_keys, rows in self._levels:
            lo = np.searchsorted(sorted_keys, keys, side="left")
            hi = np.searchsorted(sorted_keys, keys, side="right")
            for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
                if b > a:
                    found.update(rows[a:b].tolist())
        return sorted(found)

    def insert(self, signature: np.ndarray, keys: np.ndarray) -> int:
        """Keep ``signature`` (with its :meth:`band_keys`) as the next row; returns its number."""
        row = self.rows
        if row == len(self.signatures):
            grown = np.empty((2 * row, self.signatures.shape[1]), dtype=self.signatures.dtype)
            grown[:row] = self.signatures
            self.signatures = grown
        self.signatures[row] = signature
        self.rows += 1
        for key in keys.tolist():
            self._recent.setdefault(key, []).append(row)
        self._recent_entries += len(keys)
        if self._recent_entries >= FLUSH_ENTRIES:
            self._flush()
        return row

    def similarity(self, signature: np.ndarray, rows: list[int]) -> np.ndarray:
        """The estimated Jaccard similarity of ``signature`` to each of ``rows`` (the share of equal values)."""
        return (self.signatures[rows] == signature).mean(axis=1)

    def _flush(self) -> None:
        keys = np.fromiter((k for k, rows in self._recent.items() for _ in rows), dtype=np.uint64,
                           count=self._recent_entries)
        rows = np.fromiter((r for found in self._recent.values() for r in found), dtype=np.int64,
                           count=self._recent_entries)
        self._recent, self._recent_entries = {}, 0
        level = _sorted(keys, rows)
        while self._levels and len(self._levels[-1][0]) <= 2 * len(level[0]):  # merge levels of like size
            keys, rows = self._levels.pop()
            level = _sorted(np.concatenate([keys, level[0]]), np.concatenate([rows, level[1]]))
        self._levels.append(level)

    def nbytes(self) -> int:
        """The index's arrays, in bytes (the recent dict not counted)."""
        return self.signatures[:self.rows].nbytes + sum(k.nbytes + r.nbytes for k, r in self._levels)


def _sorted(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys, kind="stable")
    return keys[order], rows[order].astype(np.uint32 if len(rows) and rows.max() < 2**32 else np.int64)
