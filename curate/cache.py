"""Response cache: SQLite in WAL mode, keyed by a fingerprint of everything that shapes a response.

Key = sha256(backend kind, model, prompt fingerprint, rendered messages, generation parameters,
response format). Never the API key or the base URL's credentials. A response is committed
before the caller sees it, so a run killed at any moment resumes without re-sending any request
that finished. Two processes may share one cache file (SQLite's file locks + a busy timeout).

``synchronous=NORMAL`` in WAL mode: a commit survives the process being killed (kill -9); only an
OS crash / power loss may drop the last transactions, which are then simply re-sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    created REAL NOT NULL
)
"""
_LOOKUP_CHUNK = 900  # below SQLite's default limit of 999 host parameters


def request_key(*, backend_kind: str, model: str, prompt_fingerprint: str | None, messages: list[dict[str, Any]],
                params: dict[str, Any]) -> str:
    """The cache key of one request (hex sha256)."""
    blob = json.dumps({"backend": backend_kind, "model": model, "prompt": prompt_fingerprint,
                       "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """A SQLite response store: ``get_many(keys)`` (batched), ``put(key, response)`` (committed at once)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as conn:
            conn.execute(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Stored responses for ``keys`` (missing keys absent), in a few batched queries."""
        conn = self._conn()
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start:start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, response in conn.execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", chunk):
                found[key] = json.loads(response)
        return found

    def put(self, key: str, response: dict[str, Any]) -> None:
        """Store one response and commit before returning."""
        data = json.dumps(response, ensure_ascii=False, separators=(",", ":"))
        conn = self._conn()
        conn.execute("INSERT OR REPLACE INTO responses (key, response, created) VALUES (?, ?, ?)",
                     (key, data, time.time()))

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"
