"""Where the openai-batch backend remembers its submissions: the workspace's artifacts ``llm-batches`` (the index)
and ``llm-batch-<id>`` (each submission's request keys), and who owns a submission not yet turned into a batch.

A submission records its owner (pid, machine, call) when it is created; another run leaves one whose owner still
runs alone (the owner creates its batch) and takes over one whose owner is gone, atomically under the workspace
lock; one of another machine (a workspace shared over NFS), whose PID means nothing here, holds it while it beats
(its calls rewrite their claims' ``beat`` every quarter of ``claim_expiry_s``, from a thread:
``curate.llm.batch_claims``): a claim whose beat a waiting run has
seen unchanged for ``claim_expiry_s`` (its own clock: the machines' clocks may differ) is taken over, the entry
recording it (``taken_over``). A finished batch is collected, and a batch the server forgot resubmitted, by one run at a time the same way
(its ``collector``, which marks ``delivering`` with its claim: a later collect, after a kill or by a run that
waited, delivers again none of the answers the cache holds that its call did not ask for, so their cost and tokens
count once). Each collect lists, under the lock, the keys it delivers to its own call (``llm-batch-<id>-billed``): a
later collect takes those whose answers the cache holds as cache hits, not spending of its own, while the run that
counted them may still store its record or has (its process lives, or they are recorded). The run that waited polls the retry batches the first one made, down a chain of lost ones. A settled
submission (collected, lost) never changes status again, and keeps its first collect's record.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curate.defaults import BATCH
from curate.errors import CurateError, OptionError
from curate.llm.endpoint import used_base_url
from curate.storage.processes import alive, machine

INDEX = "llm-batches"
SETTLED = ("collected", "lost")  # a submission's own states once nothing more comes of it
Owner = dict[str, Any]
_RUNNING: set[str] = set()  # the calls of this process now running (their ids)


def normal_url(base_url: str | None) -> str:
    """A base URL as the client uses it: None is $OPENAI_BASE_URL or OpenAI's own, without trailing slashes."""
    return used_base_url(base_url).rstrip("/")


def same_url(recorded: str | None, base_url: str | None) -> bool:
    """A recorded submission's URL (older records hold it as given) is this one, however either was written."""
    return normal_url(recorded) == normal_url(base_url)


def new_owner() -> Owner:
    """This process and a fresh call id: the owner a call records on its submissions."""
    return {"pid": os.getpid(), "machine": machine(), "call": uuid.uuid4().hex[:12]}


def running_calls() -> set[str]:
    """The ids of this process's running calls (a call adds itself while it runs)."""
    return _RUNNING


def owned_elsewhere(owner: Owner | None, me: Owner) -> bool:
    """True while another run that may still create the batch owns a submission: a live process of this machine (or
    a running call of this one); one of another machine, whose PID means nothing here, is left alone too."""
    if not owner or owner.get("call") == me["call"]:
        return False  # older records name no owner: taken over as before
    if owner.get("machine") != me["machine"]:
        return True
    if owner.get("pid") == me["pid"]:
        return owner.get("call") in _RUNNING
    return alive(int(owner.get("pid") or 0)) if owner.get("pid") else False


def process_lives(owner: Owner | None, me: Owner) -> bool:
    """True while the process of ``owner`` may still store its run record: this one, a live one of this machine, or one
    of another machine (whose PID means nothing here)."""
    if not owner:
        return False
    if owner.get("machine") != me["machine"] or owner.get("pid") == me["pid"]:
        return True
    return alive(int(owner.get("pid") or 0)) if owner.get("pid") else False


class BatchState:
    """Submissions of one workspace (artifacts): an index, and each submission's request keys."""

    def __init__(self, workspace: Any, claim_expiry_s: float = BATCH.claim_expiry_s):
        if workspace is None:
            raise CurateError("the batch backend needs a workspace to remember its batches in (workspace=ws)")
        if not (isinstance(claim_expiry_s, int | float) and math.isfinite(claim_expiry_s) and claim_expiry_s > 0):
            raise OptionError(f"claim_expiry_s= must be a finite number of seconds > 0 (got {claim_expiry_s!r})")
        self._ws = workspace
        self.claim_expiry_s = float(claim_expiry_s)
        self._seen: dict[tuple[str, str], tuple[Any, float]] = {}  # (sid, role) -> (another machine's beat, first seen)

    @property
    def ws(self) -> Any:
        """The workspace (opened on first use when given as a path: ``curate run`` creates it in its load step)."""
        if isinstance(self._ws, (str, os.PathLike)):
            from curate.storage.workspace import Workspace

            self._ws = Workspace.open(self._ws)
        return self._ws

    def submissions(self) -> dict[str, dict[str, Any]]:
        return dict((self.ws.artifact(INDEX) or {}).get("submissions") or {})

    def open_keys(self, mine: Callable[[dict[str, Any]], bool], settled: tuple[str, ...]) -> set[str]:
        """The request keys of the submissions ``mine`` accepts that are not ``settled``: sent, or being sent, in a batch
        that may still answer them (a workspace not created yet has none)."""
        if isinstance(self._ws, (str, os.PathLike)) and not Path(self._ws).exists():
            return set()
        return {key for sid, entry in self.submissions().items() if mine(entry) and entry.get("status") not in settled
                for key in self.keys(sid)}

    def keys(self, sid: str) -> list[str]:
        return list((self.ws.artifact(f"llm-batch-{sid}") or {}).get("keys") or [])

    def taken_up(self, sid: str, entry: dict[str, Any], keys: list[str], requests_here: Any, me: Owner) -> bool:
        """Whether ``me``, a run asking ``requests_here`` (by key), takes up open submission ``sid`` (``entry``, of
        ``keys``): not one a kill cut short in its upload (no input file, no batch, no live owner) none of whose
        requests it holds, which it would upload as an empty file (the batch API refuses one, and every run of other
        requests with that model failed so); a run holding them does. A live other run's is waited for and
        collected (its answers cached), as before."""
        return (bool(entry.get("batch_id") or entry.get("input_file_id")) or not set(keys).isdisjoint(requests_here)
                or self._held(sid, "owner", entry.get("owner"), me))

    def record(self, sid: str, keys: list[str] | None = None, **fields: Any) -> dict[str, Any]:
        """Update submission ``sid`` (keys stored once, in their own artifact), under the workspace lock."""
        with self.ws.lock():
            if keys is not None:
                self.ws.add_artifact(f"llm-batch-{sid}", {"keys": keys})
            index = self.ws.artifact(INDEX) or {"submissions": {}}
            entry = index["submissions"].get(sid, {"id": sid})
            if entry.get("status") in SETTLED:
                fields.pop("status", None)  # another run settled it meanwhile: nothing reopens or re-settles it
            entry = {**entry, **fields, "updated": time.time()}
            index["submissions"][sid] = entry
            self.ws.add_artifact(INDEX, index)
        return entry

    def claim(self, sid: str, me: Owner) -> tuple[dict[str, Any], bool]:
        """(entry, mine) of submission ``sid``: ``me`` becomes its owner unless it has a batch already or a live other
        run owns it (``mine`` False then); atomic under the workspace lock, so two runs never both take it over."""
        with self.ws.lock():
            index = self.ws.artifact(INDEX) or {"submissions": {}}
            entry = index["submissions"].get(sid, {"id": sid})
            if entry.get("batch_id") or self._held(sid, "owner", entry.get("owner"), me):
                return entry, False
            entry = index["submissions"][sid] = {**entry, **self._taking(sid, "owner", entry.get("owner"), me),
                                                 "owner": {**me, "beat": time.time()}, "updated": time.time()}
            self.ws.add_artifact(INDEX, index)
        return entry, True

    def claim_collect(self, sid: str, me: Owner, **marks: Any) -> dict[str, Any] | None:
        """Submission ``sid``'s entry as read under the workspace lock if ``me`` may collect (or mark lost) its batch now,
        else None: not while a live other run does (until that one has settled it). An open one records ``me`` as its
        collector and each of ``marks`` it lacks (``delivering``: a collect began), atomically; a settled one is
        returned unchanged (its record is its first collect's)."""
        with self.ws.lock():
            index = self.ws.artifact(INDEX) or {"submissions": {}}
            entry = index["submissions"].get(sid, {"id": sid})
            if entry.get("status") in SETTLED:
                return entry
            if self._held(sid, "collector", entry.get("collector"), me):
                return None
            entry = {**entry, **self._taking(sid, "collector", entry.get("collector"), me)}
            index["submissions"][sid] = {**marks, **entry, "collector": {**me, "beat": time.time()},
                                         "updated": time.time()}
            self.ws.add_artifact(INDEX, index)
        return entry

    def _held(self, sid: str, role: str, owner: Owner | None, me: Owner) -> bool:
        """``owned_elsewhere``, but a claim of another machine only until this run has seen its beat unchanged for
        ``claim_expiry_s``."""
        if not owned_elsewhere(owner, me):
            return False
        if owner is None or owner.get("machine") == me["machine"]:
            return True
        beat, now = (owner.get("call"), owner.get("beat")), time.monotonic()
        seen = self._seen.get((sid, role))
        if seen is None or seen[0] != beat:
            self._seen[(sid, role)] = (beat, now)
            return True
        return now - seen[1] < self.claim_expiry_s

    def _taking(self, sid: str, role: str, owner: Owner | None, me: Owner) -> dict[str, Any]:
        """The ``taken_over`` record of a claim of another machine ``me`` takes over (its beat expired), else {}."""
        if not owner or owner.get("machine") == me["machine"] or owner.get("call") == me["call"]:
            return {}
        return {"taken_over": {"role": role, "from": owner, "by": me, "at": time.time(),
                               "reason": f"{role} on machine {str(owner.get('machine')).split()[0]} sent no heartbeat "
                                         f"for {self.claim_expiry_s:g} s (pid {owner.get('pid')}: stopped, or cut off)"}}

    def beat(self, me: Owner, ended: Callable[[], bool] = lambda: False) -> None:
        """Refresh the heartbeat of ``me``'s claims (the submissions it owns without a batch, the open ones it
        collects), under the workspace lock: runs of other machines leave them alone while it changes. Nothing when
        ``ended()`` says, once the lock is taken, that the call has ended (a beat waiting on the lock meanwhile)."""
        with self.ws.lock():
            if ended():
                return
            index = self.ws.artifact(INDEX) or {"submissions": {}}
            changed = False
            for entry in index["submissions"].values():
                for role in ("owner", "collector"):
                    held = entry.get(role) or {}
                    if held.get("call") == me["call"] and entry.get("status") not in SETTLED and not (
                            role == "owner" and entry.get("batch_id")):
                        entry[role] = {**held, "beat": time.time()}
                        changed = True
            if changed:
                self.ws.add_artifact(INDEX, index)

    def taken_over_notice(self, entry: dict[str, Any], me: Owner) -> str | None:
        """What to tell the user when ``me`` took submission ``entry``'s claim over from a run of another machine."""
        taken = entry.get("taken_over") or {}
        if (taken.get("by") or {}).get("call") != me["call"]:
            return None
        return f"submission {entry.get('id')}: taking it over: its {taken['reason']}"

    def confirm(self, sid: str, role: str, me: Owner, **fields: Any) -> tuple[dict[str, Any], bool]:
        """(entry, mine) of submission ``sid``: ``mine`` if ``me`` still holds its ``role`` claim ("owner": no batch yet;
        "collector": not settled), its beat refreshed and ``fields`` recorded, under the workspace lock; not if a run of
        another machine took it over meanwhile (``me`` stalled past ``claim_expiry_s``) or it was settled (nothing
        recorded then: the entry is the other run's). Written by ``record``, within the same hold of the lock (it
        re-enters): every write of a submission's fields goes through it."""
        with self.ws.lock():
            entry = self.submissions().get(sid, {"id": sid})
            held = entry.get(role) or {}
            if held.get("call") != me["call"] or entry.get("status") in SETTLED or (
                    role == "owner" and entry.get("batch_id")):
                return entry, False
            return self.record(sid, **fields, **{role: {**held, "beat": time.time()}}), True

    def bill(self, sid: str, me: Owner, asked: set[str]) -> dict[str, Owner]:
        """{key: the owner of the earlier call that counts it} for the keys of ``asked`` (this call's, of submission
        ``sid``'s batch) an earlier collect delivered to its own call; the rest are listed as ``me``'s, atomically."""
        with self.ws.lock():
            billed = self.ws.artifact(f"llm-batch-{sid}-billed") or {}
            earlier = {key: entry["owner"] for call, entry in billed.items() if call != me["call"]
                       for key in entry["keys"] if key in asked}
            mine = sorted(asked - set(earlier))
            if mine:
                billed[me["call"]] = {"owner": me, "keys": sorted({*billed.get(me["call"], {}).get("keys", []), *mine})}
                self.ws.add_artifact(f"llm-batch-{sid}-billed", billed)
        return earlier

    def paid_elsewhere(self, sid: str, me: Owner, keys: set[str], cache: Any) -> set[str]:
        """Of ``keys`` (``me``'s call's, of submission ``sid``'s batch), those whose answers another run's record counts:
        an earlier collect delivered them to its own call (``bill``) and ``cache`` holds them, recorded or with that
        run's process alive to record them (not one whose claim was taken over: it stopped beating). The others ``me`` counts (e.g. paid by a run killed before its record)."""
        earlier = self.bill(sid, me, keys)
        held = set(cache.get_many(sorted(earlier))) if earlier else set()
        unrecorded = cache.unrecorded(sorted(held)) if held else set()
        expired = ((self.submissions().get(sid, {}).get("taken_over") or {}).get("from") or {}).get("call")
        return {k for k in held if k not in unrecorded or (
            process_lives(earlier[k], me) and earlier[k].get("call") != expired)}  # a claim taken over: gone

    def covering(self, sid: str, keys: set[str]) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """({submission: entry} of the batches that resubmitted ``keys`` of submission ``sid`` and may still answer
        them, the keys none does): a lost retry batch's share is followed into the batches that resubmitted it."""
        adopt: dict[str, dict[str, Any]] = {}
        for child, entry in self.children(sid).items():
            mine = set(self.keys(child)) & keys
            if not mine:
                continue
            keys = keys - mine
            if entry.get("status") == "lost":
                found, left = self.covering(child, mine)
                adopt.update(found)
                keys |= left
            else:
                adopt[child] = entry
        return adopt, keys

    def children(self, sid: str) -> dict[str, dict[str, Any]]:
        """The submissions that resubmitted part of submission ``sid`` (its ``parent``), by id."""
        return {child: entry for child, entry in self.submissions().items() if entry.get("parent") == sid}
