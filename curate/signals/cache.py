"""On-disk cache of per-token log-likelihoods, and model fingerprints.

One SQLite file (``<cache_dir>/signals/logprobs.sqlite``) maps the hash of (model fingerprint, exact
context token ids, exact target token ids) to the float32 log-probabilities of the target tokens. A
batch is written (and committed) before its values are used, so a killed run resumes where it stopped
and a re-run costs no forward pass. Several processes may share the file (SQLite's own locking).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from curate.storage.write_errors import sqlite_errors

CACHE_FILE = "logprobs.sqlite"


def request_key(model_fingerprint: str, context: Sequence[int], target: Sequence[int]) -> str:
    """The cache key of one scoring request: hash of the model and the exact token ids."""
    h = hashlib.sha256(model_fingerprint.encode())
    h.update(b"|c")
    h.update(np.asarray(context, dtype=np.int64).tobytes())
    h.update(b"|t")
    h.update(np.asarray(target, dtype=np.int64).tobytes())
    return h.hexdigest()


def json_fingerprint(obj: object) -> str:
    """A short stable hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


class LogprobCache:
    """``key -> float32 array`` in SQLite; ``get_many`` / ``put_many`` (one transaction per batch)."""

    @sqlite_errors
    def __init__(self, cache_dir: Path):
        folder = Path(cache_dir) / "signals"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / CACHE_FILE
        self._db = sqlite3.connect(self.path, timeout=120, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS logprobs (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
                         "n INTEGER NOT NULL, value BLOB NOT NULL)")
        self._db.commit()

    @sqlite_errors
    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """The cached arrays of ``keys`` (absent keys are left out)."""
        keys = list(keys)
        out: dict[str, np.ndarray] = {}
        step = 500
        for i in range(0, len(keys), step):
            part = keys[i:i + step]
            marks = ",".join("?" * len(part))
            for key, n, blob in self._db.execute(f"SELECT key, n, value FROM logprobs WHERE key IN ({marks})", part):
                arr = np.frombuffer(blob, dtype=np.float32)
                if len(arr) == n:
                    out[key] = arr
        return out

    @sqlite_errors
    def put_many(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        """Store arrays under their keys, committed before returning."""
        rows = [(k, model, len(v), np.asarray(v, dtype=np.float32).tobytes()) for k, v in items]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO logprobs (key, model, n, value) VALUES (?, ?, ?, ?)", rows)

    @sqlite_errors
    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM logprobs").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> LogprobCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
