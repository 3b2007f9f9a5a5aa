"""Sending a call's requests: the response cache first, then the backend, one request in flight per key.

Calls of one process running at once (two judge columns asking the same prompt, a notebook's threads) share one
cache file; without care each would miss the cache and pay for the same request. :data:`IN_FLIGHT` lists the keys
being sent, per cache file: a call sends only the keys it claimed and, once its own are done, waits for the keys
another call is sending and reads their responses from the cache (cached for it: the sender paid). A key whose
sender failed (failures are not cached) is claimed again and sent by one of the waiters, which records its own
result: no call is ever handed another's failure or a default. Processes of one machine do the same through the
cache file (``ResponseCache.claim_sending``): a key a live process is sending is waited for and read from the cache
(two processes scoring one prompt into two columns paid for every request twice), while its sender refreshes the claim
(``SendingBeat``: one stopped, or gone on without releasing it, is taken over after ``SENDING_CLAIM_EXPIRY_S``,
``BACKEND.sending_claim_expiry_s``); a second process scoring the
same column waits on the column lock first (``Workspace.column_lock``). A batch backend keeps its own claims: an
answer of a batch two processes asked comes back to the one that did not pay for it as a hit
(``on_done(..., cached=True)``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from curate.llm import cache_claims
from curate.llm.base import Backend, Request, run_sync
from curate.llm.cache import ResponseCache
from curate.llm.cache_claims import SendingHolder


class Counts(Protocol):
    """What a call counts as requests settle (``runner._Progress``)."""

    def note(self, *, tokens: int = 0, cost: float | None = 0.0, cached: int = 0, resumed: int = 0) -> None: ...


class InFlight:
    """Keys being sent by this process, per cache file (its resolved path, ``where``): ``claim`` splits keys into
    those the caller now claims and those other calls are sending. A claim is its event: only the caller that made it settles it, so a sender settling late
    (its ``finally`` after a key failed and a waiter claimed it again) cannot release the waiter's claim."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sending: dict[tuple[str, str], threading.Event] = {}

    def claim(self, where: str, keys: list[str]
              ) -> tuple[dict[str, threading.Event], dict[str, threading.Event]]:
        """(this caller's claims: an event per key now its to send; an event per key another caller is sending,
        set when that one settles)."""
        claimed, sent_by_others = {}, {}
        with self._lock:
            for key in keys:
                event = self._sending.get((where, key))
                if event is None:
                    claimed[key] = self._sending[(where, key)] = threading.Event()
                else:
                    sent_by_others[key] = event
        return claimed, sent_by_others

    def settle(self, where: str, claims: dict[str, threading.Event]) -> None:
        """These claims are no longer in flight (answered and stored, failed, or never sent); a claim settled
        already, or since claimed by another caller, is left as it is."""
        with self._lock:
            for key, event in claims.items():
                if self._sending.get((where, key)) is event:
                    del self._sending[(where, key)]
        for event in claims.values():
            event.set()


log = logging.getLogger("curate")
IN_FLIGHT = InFlight()
WAIT_POLL_S = 0.5  # a wait for another call's request wakes this often (Ctrl-C is handled between waits)


def note_paid(progress: Counts, response: dict[str, Any]) -> None:
    """Count a response this run pays for (sent now, or paid by a stopped run): its tokens and price."""
    usage = response.get("usage") or {}
    progress.note(tokens=usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0),
                  cost=response.get("cost_usd"))  # None: price unknown


def execute(backend: Backend, cache: ResponseCache, requests: list[Request], progress: Counts,
            aliases: dict[str, set[str]] | None = None,
            on_keys: Callable[[dict[str, dict[str, Any]]], None] | None = None,
            ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], set[str]]:
    """Look every request up in the cache (batched); send the misses no other call of this process is sending;
    wait for those it is and read them from the cache; commit each response before use.

    ``aliases`` (key -> variable hashes) are stored with the responses; ``on_keys`` hears of keys as they settle,
    with their responses (a failure dict for a request that failed). ``progress`` counts hits as ``cached``, or
    ``resumed`` where a stopped run paid for them, and the tokens and cost of what this run pays for (sent now, or
    resumed); failures (per call, whatever their reason) are the caller's to count. Returns (responses by key,
    cached responses by key, the cached keys a stopped run paid and never recorded); failures are failure dicts.
    """
    aliases = aliases or {}
    where = str(cache.path.resolve())  # once: the same file under another path or a later working directory
    claims: dict[str, threading.Event] = {}  # this call's claims in flight
    by_key = {r.key: r for r in requests}
    out: dict[str, dict[str, Any]] = {}
    hits: dict[str, dict[str, Any]] = {}

    def found(responses: dict[str, dict[str, Any]], resumed: set[str] | frozenset[str] = frozenset()) -> None:
        if responses:
            out.update(responses)
            hits.update(responses)
            progress.note(cached=len(responses) - len(resumed), resumed=len(resumed))
            for key in resumed:  # this run's spending, as its summary counts it
                note_paid(progress, responses[key])
            cache.add_aliases([(a, k) for k in responses for a in aliases.get(k, ())])
            if on_keys is not None:
                on_keys(responses)

    first = cache.get_many(list(by_key))
    recovered = cache.unrecorded(list(first)) if first else set()  # only these: later hits are this process's
    found(first, recovered)

    def on_done(req: Request, result: dict[str, Any], cached: bool = False) -> None:
        if cached:  # another run paid for it and counts it (one batch both asked): in the cache, a hit here
            claim = claims.pop(req.key, None)
            found({req.key: result})
            if claim is not None:
                IN_FLIGHT.settle(where, {req.key: claim})
            return
        if "failure" not in result:
            cache.put(req.key, result, tuple(aliases.get(req.key, ())))  # committed before anyone reads it
            note_paid(progress, result)
        out[req.key] = result
        if (claim := claims.pop(req.key, None)) is not None:  # after the commit: a waiter reads it from the cache
            IN_FLIGHT.settle(where, {req.key: claim})
        if on_keys is not None:
            on_keys({req.key: result})

    # a batch backend keeps its own submission claims; others claim keys in the cache file, across processes
    claims_across_processes = not getattr(backend, "submits_batches", False)
    pending = [k for k in by_key if k not in first]
    while pending:
        claimed, other_calls_send = IN_FLIGHT.claim(where, pending)  # keys this call claimed, keys other calls send
        claims.update(claimed)
        to_send: list[str] = []  # claimed and not answered: sent by this call
        other_processes_send: list[str] = []  # keys a live process of this machine is sending
        try:
            found(cache.get_many(list(claimed)) if claimed else {})  # stored by a call that settled since the first look
            to_send = [k for k in claimed if k not in hits]
            if to_send and claims_across_processes:
                to_send, other_processes_send = cache.claim_sending(to_send)
            if to_send:
                with SendingBeat(cache, to_send if claims_across_processes else []):
                    run_sync(lambda send=[by_key[k] for k in to_send]: backend.run(send, on_done))
        finally:
            try:
                if to_send and claims_across_processes:
                    cache.release_sending(to_send)  # those never answered (failed, an error, Ctrl-C): a waiter claims them
            finally:
                left = {k: claim for k in claimed if (claim := claims.pop(k, None)) is not None}
                IN_FLIGHT.settle(where, left)  # also those never answered (an error, Ctrl-C): nobody waits forever
        for event in other_calls_send.values():
            while not event.wait(WAIT_POLL_S):
                pass
        if other_processes_send and (holders := cache.sent_elsewhere(other_processes_send)):
            log.warning("waiting for %d request(s) another process is sending to the same response cache (%s): %s; a "
                        "claim not refreshed for %g s is taken over", len(holders), cache.path, _holders(holders),
                        cache_claims.SENDING_CLAIM_EXPIRY_S)
            while cache.sent_elsewhere(other_processes_send):
                time.sleep(WAIT_POLL_S)
        waited = [*other_calls_send, *other_processes_send]
        found(cache.get_many(waited) if waited else {})
        # their sender failed, died or stopped refreshing its claims: claimed again, sent by one waiter
        pending = [k for k in waited if k not in hits]
    return out, hits, recovered


def _holders(holders: dict[str, SendingHolder]) -> str:
    """Who holds the claims waited for: 'pid 123 (2 request(s), claim refreshed 14:02:03)'."""
    by_pid: dict[int, list[SendingHolder]] = {}
    for holder in holders.values():
        by_pid.setdefault(holder.pid, []).append(holder)
    return ", ".join(
        f"pid {pid} ({len(held)} request(s), claim refreshed "
        f"{time.strftime('%H:%M:%S', time.localtime(max(h.refreshed or 0.0 for h in held)))})"
        for pid, held in sorted(by_pid.items()))


class SendingBeat:
    """``with SendingBeat(cache, keys):`` refreshes this process's claims on ``keys`` every quarter of
    ``SENDING_CLAIM_EXPIRY_S`` from a daemon thread while the requests are in flight: a waiting process takes over a
    claim left unrefreshed that long (its sender stopped, or went on without releasing it). A failed refresh is
    warned and tried again at the next beat."""

    def __init__(self, cache: ResponseCache, keys: list[str]):
        self.cache, self.keys = cache, keys
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sending-claims", daemon=True)

    def __enter__(self) -> SendingBeat:
        if self.keys:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()  # a refresh blocked on the cache's lock ends on its own (a daemon thread, refreshing no more)

    def _run(self) -> None:
        while not self._stop.wait(cache_claims.SENDING_CLAIM_EXPIRY_S / 4):
            try:
                self.cache.refresh_sending(self.keys)
            except Exception as exc:  # noqa: BLE001 - said, and tried again at the next beat
                log.warning("refreshing this process's claims on %d request(s) in %s failed (%s: %s); other processes "
                            "may send them too after %g s", len(self.keys), self.cache.path, type(exc).__name__, exc,
                            cache_claims.SENDING_CLAIM_EXPIRY_S)
