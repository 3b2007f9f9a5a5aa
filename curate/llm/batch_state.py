"""Where the openai-batch backend remembers its submissions: the workspace's artifacts ``llm-batches`` (the index)
and ``llm-batch-<id>`` (each submission's request keys), and who owns a submission not yet turned into a batch.

A submission records its owner (pid, machine, call) when it is created; another run leaves one whose owner still
runs alone (the owner creates its batch) and takes over one whose owner is gone, atomically under the workspace
lock. A finished batch is collected, and a batch the server forgot resubmitted, by one run at a time the same way
(its ``collector``, which marks ``delivering`` with its claim: a later collect, after a kill or by a run that
waited, delivers again none of the answers the cache holds that its call did not ask for, so their cost and tokens
count once). Each collect lists, under the lock, the keys it delivers to its own call (``llm-batch-<id>-billed``): a
later collect takes those whose answers the cache holds as cache hits, not spending of its own, while the run that
counted them may still store its record or has (its process lives, or they are recorded). The run that waited polls the retry batches the first one made, down a chain of lost ones. A settled
submission (collected, lost) never changes status again, and keeps its first collect's record.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curate.errors import CurateError
from curate.storage.processes import alive, machine

INDEX = "llm-batches"
SETTLED = ("collected", "lost")  # a submission's own states once nothing more comes of it
Owner = dict[str, Any]
_RUNNING: set[str] = set()  # the calls of this process now running (their ids)
OPENAI_URL = "https://api.openai.com/v1"  # the openai client's own base URL, for base_url=None


def normal_url(base_url: str | None) -> str:
    """A base URL as the client uses it: None is $OPENAI_BASE_URL or OpenAI's own, without trailing slashes."""
    return (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")


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

    def __init__(self, workspace: Any):
        if workspace is None:
            raise CurateError("the batch backend needs a workspace to remember its batches in (workspace=ws)")
        self._ws = workspace

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
            if entry.get("batch_id") or owned_elsewhere(entry.get("owner"), me):
                return entry, False
            entry = index["submissions"][sid] = {**entry, "owner": me, "updated": time.time()}
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
            if owned_elsewhere(entry.get("collector"), me):
                return None
            index["submissions"][sid] = {**marks, **entry, "collector": me, "updated": time.time()}
            self.ws.add_artifact(INDEX, index)
        return entry

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
        run's process alive to record them. The others ``me`` counts (e.g. paid by a run killed before its record)."""
        earlier = self.bill(sid, me, keys)
        held = set(cache.get_many(sorted(earlier))) if earlier else set()
        unrecorded = cache.unrecorded(sorted(held)) if held else set()
        return {k for k in held if k not in unrecorded or process_lives(earlier[k], me)}

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
