"""Response cache: SQLite in WAL mode, keyed by what is actually sent.

``response_cache(cache_dir)`` opens ``<cache_dir>/responses.sqlite`` (a workspace passes ``ws.cache_dir``).

Key = sha256(model name as sent, generation parameters incl. response format, rendered messages):
the request body, nothing else. Not the backend kind (the same server reached as ``--backend local``
or through ``--base-url`` shares its answers; an OpenAI batch and an online call of the same request
too), not the prompt file's fingerprint (a template edit that changes 6 requests of 30 re-sends 6),
never the API key or the base URL's credentials. A response is committed before the caller sees it,
so a run killed at any moment resumes without re-sending any request that finished. Two processes
may share one cache file (SQLite's file locks + a busy timeout), and neither pays for a request the other is
sending: a sender lists its keys in ``sending`` (machine, pid, start time) until it stores their answers or gives
up; another process of this machine waits for a key a live process lists (:mod:`curate.llm.sending`) while the sender
refreshes that claim (:mod:`curate.llm.cache_claims`). A claim of another machine (a workspace shared over NFS) cannot
be checked for life and is not waited for.

Keys before version 2 also hashed the backend kind and the prompt fingerprint. Those entries stay
readable through their aliases (a hash of the prompt, backend and row variables, unchanged), so an
identical re-run still sends nothing; any other request is sent once and stored under its new key.

Spending is never lost either: every response stored by a send is also listed as *unrecorded* (paid, but in no
run's record yet) until the step that sent it has stored its run record (``mark_recorded``). A run killed before
that leaves them listed, and the run that resumes it counts them as paid by it, not as cached answers for free; not
while the process that paid for them is alive (``payers``): its run goes on and records them, and another process
running beside it reads them as cached answers (it counted them as its own as well).

``synchronous=NORMAL`` in WAL mode: a commit survives the process being killed (kill -9); only an
OS crash / power loss may drop the last transactions, which are then simply re-sent.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from curate.errors import CurateError, RetryLaterError
from curate.llm import cache_claims as claims
from curate.llm.cache_claims import LOOKUP_CHUNK as _LOOKUP_CHUNK
from curate.llm.cache_claims import SendingClaims, SendingHolder
from curate.llm.cache_read import connect_read_only, file_state
from curate.storage.write_errors import sqlite_errors

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    alias TEXT PRIMARY KEY,
    key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unrecorded (
    key TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS sending (
    key TEXT PRIMARY KEY,
    machine TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started INTEGER,
    since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS payers (
    key TEXT PRIMARY KEY,
    machine TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started INTEGER
);
"""
READ_ATTEMPTS = 3  # reads of a dry run's lookup, each after a writer moved answers into the file (a checkpoint)


KEY_VERSION = 2  # 2: the request as sent (model, params, messages); 1 also hashed backend kind and prompt


def key_header(*, model: str, params: dict[str, Any]) -> bytes:
    """The part of a cache key shared by every request of one call (compute once, reuse per row): the model
    name as sent and the generation parameters (response format included)."""
    return orjson.dumps({"v": KEY_VERSION, "model": model, "params": params}, option=orjson.OPT_SORT_KEYS,
                        default=str)


def alias_header(*, backend_kind: str, model: str, prompt_fingerprint: str | None, params: dict[str, Any]) -> bytes:
    """The header of a call's variable aliases (unchanged since key version 1, so old aliases still resolve)."""
    return orjson.dumps({"backend": backend_kind, "model": model, "prompt": prompt_fingerprint, "params": params},
                        option=orjson.OPT_SORT_KEYS, default=str)


def key_from_header(header: bytes, messages: list[dict[str, Any]]) -> str:
    """sha256 over the header and each message as length-prefixed role and content (unambiguous)."""
    parts = []
    for m in messages:
        role, content = str(m.get("role", "")), m.get("content")
        if not isinstance(content, str):
            content = orjson.dumps(content, option=orjson.OPT_SORT_KEYS, default=str).decode()
        parts.append(f"{len(role)}:{role}{len(content)}:{content}")
        if len(m) > 2:
            extra = {k: v for k, v in m.items() if k not in ("role", "content")}
            parts.append(orjson.dumps(extra, option=orjson.OPT_SORT_KEYS, default=str).decode())
        parts.append("|")
    h = hashlib.sha256(header)
    h.update("".join(parts).encode())
    return h.hexdigest()


def request_key(*, model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """The cache key of one request (hex sha256): the model name as sent, the messages, the parameters."""
    return key_from_header(key_header(model=model, params=params), messages)


def _wal(conn: sqlite3.Connection, wait_s: float = 60.0) -> None:
    """Switch a connection to WAL, waiting for others doing the same: on a new file, SQLite answers "database is
    locked" at once (no busy wait) while another connection switches it, so six threads opening one new cache
    failed one time in 25, with an error about a process that held it "past the wait"."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class ResponseCache(SendingClaims):
    """A SQLite response store: ``get_many(keys)`` (batched), ``put(key, response)`` (committed at once)."""

    @sqlite_errors
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None, check_same_thread=False)
            _wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Stored responses for ``keys`` (missing keys absent), in a few batched queries."""
        return self._lookup("SELECT key, response FROM responses WHERE key IN ({marks})", keys)

    def get_aliased(self, aliases: list[str]) -> dict[str, dict[str, Any]]:
        """Stored responses by alias (a hash of a call's variables that maps to a request key), batched.

        Lets a re-run find its responses without rendering every prompt; the alias is only ever
        written next to the response of the request that the variables rendered to.
        """
        return self._lookup("SELECT a.alias, r.response FROM aliases a JOIN responses r ON r.key = a.key "
                            "WHERE a.alias IN ({marks})", aliases)

    def _lookup(self, sql: str, names: list[str]) -> dict[str, dict[str, Any]]:
        """Run ``sql`` (selecting name, response; ``{marks}`` = placeholders) over ``names`` in chunks."""
        return {name: orjson.loads(response) for name, response in self._lookup_pairs(sql, names).items()}

    @sqlite_errors
    def _lookup_pairs(self, sql: str, names: list[str]) -> dict[str, Any]:
        """Run ``sql`` (selecting two columns; ``{marks}`` = placeholders) over ``names`` in chunks: first -> second."""
        conn = self._conn()
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(names))
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start:start + _LOOKUP_CHUNK]
            found.update(conn.execute(sql.format(marks=",".join("?" * len(chunk))), chunk))
        return found

    @sqlite_errors
    def add_aliases(self, pairs: list[tuple[str, str]]) -> None:
        """Record (alias, key) pairs for responses already stored."""
        if pairs:
            conn = self._conn()
            with conn:
                conn.execute("BEGIN")
                conn.executemany("INSERT OR REPLACE INTO aliases (alias, key) VALUES (?, ?)", pairs)

    @sqlite_errors
    def put(self, key: str, response: dict[str, Any], aliases: list[str] | tuple[str, ...] = ()) -> None:
        """Store one response just paid for (and its aliases) in one transaction, committed before returning; it is
        listed as unrecorded until :meth:`mark_recorded`."""
        data = orjson.dumps(response).decode()
        conn = self._conn()
        with conn:
            conn.execute("BEGIN")
            conn.execute("INSERT OR REPLACE INTO responses (key, response, created) VALUES (?, ?, ?)",
                         (key, data, time.time()))
            conn.execute("INSERT OR IGNORE INTO unrecorded (key) VALUES (?)", (key,))
            conn.execute("INSERT OR REPLACE INTO payers (key, machine, pid, started) VALUES (?, ?, ?, ?)", (key, *claims.THIS_PROCESS))
            conn.execute("DELETE FROM sending WHERE key = ? AND machine = ? AND pid = ?", (key, *claims.THIS_PROCESS[:2]))
            if aliases:
                conn.executemany("INSERT OR REPLACE INTO aliases (alias, key) VALUES (?, ?)",
                                 [(a, key) for a in aliases])

    def unrecorded(self, keys: list[str]) -> set[str]:
        """The keys among ``keys`` whose responses were paid by a run that stopped before recording them: not those a
        live process of this machine paid for (its run goes on, and records them; another process counted them too)."""
        found = set(self._lookup_pairs("SELECT key, key FROM unrecorded WHERE key IN ({marks})", keys))
        return found - self._paid_elsewhere(found)

    def unrecorded_aliases(self, aliases: list[str]) -> dict[str, str]:
        """alias -> key for the aliases among ``aliases`` whose responses are unrecorded (see :meth:`unrecorded`)."""
        found = self._lookup_pairs("SELECT a.alias, a.key FROM aliases a JOIN unrecorded u ON u.key = a.key "
                                   "WHERE a.alias IN ({marks})", aliases)
        live = self._paid_elsewhere(set(found.values()))
        return {alias: key for alias, key in found.items() if key not in live}

    @sqlite_errors
    def _paid_elsewhere(self, keys: set[str]) -> set[str]:
        return set(self._live_claims(self._conn(), sorted(keys), "payers")) if keys else set()

    @sqlite_errors
    def mark_recorded(self, keys: list[str]) -> None:
        """These responses' costs are now in a stored run record: a later cache hit is free, not spending."""
        unique = list(dict.fromkeys(keys))
        conn = self._conn()
        with conn:
            conn.execute("BEGIN")
            for start in range(0, len(unique), _LOOKUP_CHUNK):
                chunk = unique[start:start + _LOOKUP_CHUNK]
                conn.execute(f"DELETE FROM unrecorded WHERE key IN ({','.join('?' * len(chunk))})", chunk)
                conn.execute(f"DELETE FROM payers WHERE key IN ({','.join('?' * len(chunk))})", chunk)

    @sqlite_errors
    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"


CACHE_FILE = "responses.sqlite"


def response_cache(where: str | os.PathLike | ResponseCache) -> ResponseCache:
    """The response cache in a folder (``<folder>/responses.sqlite``, e.g. a workspace's ``ws.cache_dir``),
    or at a ``.sqlite`` file path; a ResponseCache is returned as is. Every judge, tagger and Evol call
    of one workspace shares its cache."""
    if isinstance(where, ResponseCache):
        return where
    return ResponseCache(cache_file(where))


def cache_file(where: str | os.PathLike) -> Path:
    """The cache file of a folder (``<folder>/responses.sqlite``) or a ``.sqlite`` file path."""
    if where is None:
        raise TypeError("response_cache needs a folder or a file (e.g. ws.cache_dir); there is no global cache")
    path = Path(where)
    return path / CACHE_FILE if path.is_dir() or not path.suffix else path


class LookupOnlyCache(ResponseCache):
    """The response cache as a dry run reads it: looked up where it is, never written, and nothing created or changed
    beside it (:mod:`curate.llm.cache_read`: read-only through a writer's WAL, else the file as it is, read again where
    a writer moved answers into it meanwhile); a table the file lacks (a cache from before it existed) holds no
    entries; a missing file is an empty cache (not created); the aliases a lookup by key would store are not stored;
    storing a response is an error."""

    def __init__(self, where: str | os.PathLike | ResponseCache):
        path = where.path if isinstance(where, ResponseCache) else cache_file(where)
        self.path, self._local, self.found = path, threading.local(), path.is_file()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn, self._local.state = connect_read_only(self.path)
            conn.execute("PRAGMA busy_timeout=60000")
            stored = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for statement in _SCHEMA.split(";"):  # a table the file lacks: an empty one of this connection's own
                name = statement.split("(")[0].split()[-1] if statement.strip() else None
                if name and name not in stored:
                    conn.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE"))
            conn.execute("PRAGMA query_only=ON")
            conn.execute("BEGIN")  # one snapshot for every lookup of this connection, taken by its first read
            self._local.conn = conn
        return conn

    def _lookup_pairs(self, sql: str, names: list[str]) -> dict[str, Any]:
        if not self.found:
            return {}
        for _ in range(READ_ATTEMPTS):
            found = super()._lookup_pairs(sql, names)
            state = self._local.state
            if state is None or file_state(self.path) == state:  # no writer moved answers into the file meanwhile
                return found
            self.close()  # read again: through the WAL of the writer that changed it, or the file as it is now
        raise RetryLaterError(f"{self.path}: rewritten by a writer during each of {READ_ATTEMPTS} reads (a run "
                              "moving answers into it?): run the dry run again when it is done")

    def add_aliases(self, pairs: list[tuple[str, str]]) -> None:
        """Not stored: a dry run writes nothing (a real run stores them when it finds the same requests)."""

    def put(self, key: str, response: dict[str, Any], aliases: list[str] | tuple[str, ...] = ()) -> None:
        raise CurateError(f"{self.path}: a dry run stores no response (key {key})")

    def claim_sending(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """Every key is the dry run's own to "send" (to its backend that sends nothing); no claim is stored."""
        return list(dict.fromkeys(keys)), []

    def sent_elsewhere(self, keys: list[str]) -> dict[str, SendingHolder]:
        return {}

    def refresh_sending(self, keys: list[str]) -> None:
        """Nothing was claimed."""

    def release_sending(self, keys: list[str]) -> None:
        """Nothing was claimed."""

    def mark_recorded(self, keys: list[str]) -> None:
        raise CurateError(f"{self.path}: a dry run records no spending")

    def __len__(self) -> int:
        return super().__len__() if self.found else 0
