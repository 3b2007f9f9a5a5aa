"""A response cache's claims on the requests its processes are sending (the ``sending`` table), and who paid for
answers not yet in a run record (``payers``): a process of this machine waits for a key another live process claims
(:mod:`curate.llm.sending`) while that claim is refreshed; a sender refreshes its claims' ``since`` while its
requests are in flight (``refresh_sending``, from a thread: ``curate.llm.sending.SendingBeat``), so a sender stopped
(Ctrl-Z, a debugger) or gone on without releasing them (a notebook kernel after a failed release) holds them for
``SENDING_CLAIM_EXPIRY_S`` at most."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import NamedTuple

from curate.defaults import BACKEND
from curate.storage.processes import machine, same_process, start_time
from curate.storage.write_errors import sqlite_errors

SENDING_CLAIM_EXPIRY_S = BACKEND.sending_claim_expiry_s  # read at each look (a test's child process sets its own)
LOOKUP_CHUNK = 900  # below SQLite's default limit of 999 host parameters


class SendingHolder(NamedTuple):
    """The process sending a request another process waits for, and when it last refreshed its claim."""
    pid: int
    refreshed: float | None


class SendingClaims:
    """The claim methods of ``curate.llm.cache.ResponseCache`` (which gives ``_conn``)."""

    def _conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    @sqlite_errors
    def claim_sending(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """(keys this process now claims to send, keys answered or a live process of this machine is sending): one
        transaction, so two processes never both claim a key, nor claim one answered since it was looked up. A claim of
        a process that is gone (killed mid-request), of another machine (its life cannot be told from here), or not
        refreshed for ``SENDING_CLAIM_EXPIRY_S`` (its sender stopped, or went on without releasing it), is taken over."""
        unique = list(dict.fromkeys(keys))
        conn = self._conn()
        with conn:
            conn.execute("BEGIN IMMEDIATE")  # the write lock before the reads: no second claimant between them
            held = set(self._live_claims(conn, unique))
            for start in range(0, len(unique), LOOKUP_CHUNK):
                chunk = unique[start:start + LOOKUP_CHUNK]
                held.update(k for (k,) in conn.execute(f"SELECT key FROM responses WHERE key IN "
                                                       f"({','.join('?' * len(chunk))})", chunk))
            mine = [k for k in unique if k not in held]
            conn.executemany("INSERT OR REPLACE INTO sending (key, machine, pid, started, since) VALUES (?, ?, ?, ?, ?)",
                             [(k, *THIS_PROCESS, time.time()) for k in mine])
        return mine, [k for k in unique if k in held]

    @sqlite_errors
    def sent_elsewhere(self, keys: list[str]) -> dict[str, SendingHolder]:
        """The keys among ``keys`` a live process of this machine other than this one is still sending (its claim
        refreshed within ``SENDING_CLAIM_EXPIRY_S``), each with that process."""
        return self._live_claims(self._conn(), list(dict.fromkeys(keys)))

    def _live_claims(self, conn: sqlite3.Connection, keys: list[str], table: str = "sending"
                     ) -> dict[str, SendingHolder]:
        """The keys among ``keys`` that ``table`` (sending, payers) names a live process of this machine for, other
        than this one (for ``sending``: one that refreshed its claim within ``SENDING_CLAIM_EXPIRY_S``)."""
        live: dict[str, SendingHolder] = {}
        fresh_after = time.time() - SENDING_CLAIM_EXPIRY_S  # the holder's clock is this machine's
        since = "since" if table == "sending" else "NULL"
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start:start + LOOKUP_CHUNK]
            rows = conn.execute(f"SELECT key, machine, pid, started, {since} FROM {table} WHERE key IN "
                                f"({','.join('?' * len(chunk))})", chunk).fetchall()
            live.update((key, SendingHolder(pid, refreshed)) for key, machine, pid, started, refreshed in rows
                        if machine == THIS_PROCESS[0] and pid != THIS_PROCESS[1] and same_process(pid, started)
                        and (refreshed is None or refreshed > fresh_after))
        return live

    @sqlite_errors
    def refresh_sending(self, keys: list[str]) -> None:
        """This process still sends those of ``keys`` it claims: their claims' ``since`` is now (a waiter takes over
        a claim left unrefreshed for ``SENDING_CLAIM_EXPIRY_S``)."""
        unique, now = list(dict.fromkeys(keys)), time.time()
        conn = self._conn()
        with conn:
            conn.execute("BEGIN")
            for start in range(0, len(unique), LOOKUP_CHUNK):
                chunk = unique[start:start + LOOKUP_CHUNK]
                conn.execute(f"UPDATE sending SET since = ? WHERE machine = ? AND pid = ? AND key IN "
                             f"({','.join('?' * len(chunk))})", (now, *THIS_PROCESS[:2], *chunk))

    @sqlite_errors
    def release_sending(self, keys: list[str]) -> None:
        """This process no longer sends ``keys`` (answered and stored, failed, or never sent): a waiter claims them."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return
        conn = self._conn()
        with conn:
            conn.execute("BEGIN")
            for start in range(0, len(unique), LOOKUP_CHUNK):
                chunk = unique[start:start + LOOKUP_CHUNK]
                conn.execute(f"DELETE FROM sending WHERE machine = ? AND pid = ? AND key IN ({','.join('?' * len(chunk))})",
                             (*THIS_PROCESS[:2], *chunk))



def _this_process() -> tuple[str, int, int | None]:
    return machine(), os.getpid(), start_time(os.getpid())


THIS_PROCESS = _this_process()  # (machine, pid, start time) of a sending claim; a forked child sets its own (below):
# read it as ``cache_claims.THIS_PROCESS``, never imported by name
if hasattr(os, "register_at_fork"):
    def _forked() -> None:
        global THIS_PROCESS
        THIS_PROCESS = _this_process()

    os.register_at_fork(after_in_child=_forked)
