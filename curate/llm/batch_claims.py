"""A call's claims on its submissions (``curate.llm.batch``): kept beating, and checked before each step that pays.

The heartbeat (``ClaimBeat``) beats from a daemon thread, so a call whose event loop is busy (e.g. delivering 50K
answers into SQLite for longer than ``claim_expiry_s``) keeps its claims; a failed beat is retried a few times, then
said once (``news``) and tried again at the next beat: it never ends the beating, nor the call. A run of another
machine takes a claim over only after its beat stood still for ``claim_expiry_s`` (a whole process stopped or cut
off); so before creating a batch, delivering a collect, resubmitting its share or recording it settled, a call
confirms, under the lock, that it still holds the claim (``_CallClaims.confirmed``). One taken over meanwhile is
left to the run that took it: this call says so and waits for that run's batch or collect, as for any live other
run's claim. Those two (a failed
beat, a claim taken over) go to ``on_event`` where one is set (the CLI prints them), else they are warned
(``BatchClaimWarning``): a Python API or notebook user learns of them too.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

from curate.defaults import BATCH
from curate.errors import BatchClaimWarning
from curate.llm.batch_state import BatchState, Owner


class ClaimBeat:
    """``with ClaimBeat(state, me):`` beats ``me``'s claims every quarter of ``state.claim_expiry_s`` from a daemon
    thread, stopped on exit (waiting ``stop_wait_s`` at most for a beat under way). ``failures``: one line for each
    streak of beats whose tries all failed."""

    def __init__(self, state: BatchState, me: Owner, retries: int = BATCH.beat_retries,
                 stop_wait_s: float = BATCH.beat_stop_wait_s):
        self.state, self.me, self.retries, self.stop_wait_s = state, me, int(retries), float(stop_wait_s)
        self.interval = state.claim_expiry_s / 4
        self.failures: list[str] = []
        self._said = 0
        self._failing = False  # the last beat's tries all failed (said once a streak)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"batch-claims-{me['call']}", daemon=True)

    def __enter__(self) -> ClaimBeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(self.stop_wait_s)  # a beat blocked on the lock (another process's long write) or a slow
        # disk ends on its own (a daemon thread, beating no more): the call returns (a Ctrl-C within cancel_wait_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat_once()

    def beat_once(self) -> bool:
        """One beat, its failures retried ``retries`` times a short pause apart (all within a quarter of the expiry);
        True if it was written. The first beat of a failing streak whose tries all failed is recorded."""
        for tries in range(self.retries + 1):
            if tries and self._stop.wait(self.interval / (self.retries + 2)):
                return False
            try:
                self.state.beat(self.me, ended=self._stop.is_set)  # a beat that waited out the call's end: none
                self._failing = False
                return True
            except Exception as exc:  # noqa: BLE001 - any failure is the beat's: recorded, said, tried again later
                failed = f"{type(exc).__name__}: {exc}"
        if not self._failing:
            self._failing = True
            self.failures.append(
                f"the heartbeat of this run's batch claims failed {self.retries + 1} times in a row ({failed}); runs "
                f"of other machines may take them over after {self.state.claim_expiry_s:g} s without a beat: it is "
                f"tried again every {self.interval:g} s, and each claim is checked before this run creates, collects "
                "or resubmits a batch under it")
        return False

    def news(self) -> str | None:
        """The failures not said yet, as one line (None when none)."""
        new, self._said = self.failures[self._said:], len(self.failures)
        return "; ".join(new) or None


class _CallClaims:
    """What ``curate.llm.batch._Call`` does with its claims (it holds ``b``, ``me``, ``open`` and the waiting sets)."""

    b: Any
    me: Owner
    open: dict[str, dict[str, Any]]
    waiting: set[str]
    waiting_collect: set[str]

    def alert(self, text: str | None, during: BaseException | None = None) -> None:
        """Say that something went wrong with this call's claims: to the backend's ``on_event``, or, with none (a
        Python API or notebook user), as a ``BatchClaimWarning`` (None: nothing to say). ``during``: an exception
        propagating meanwhile (a Ctrl-C, an API error), which a warning made an error (``-W error``) would replace: the
        text becomes a note of it instead."""
        if text and self.b.on_event is None:
            try:
                warnings.warn(text, BatchClaimWarning, stacklevel=2)
            except BatchClaimWarning:
                if during is None:
                    raise
                during.add_note(f"BatchClaimWarning: {text}")
        else:
            self.b._say(text)

    def notice_takeover(self, entry: dict[str, Any] | None, mine: bool) -> None:
        if mine and entry and (notice := self.b.state.taken_over_notice(entry, self.me)):
            self.b._say(notice)

    def wait_for_owner(self, sid: str, entry: dict[str, Any]) -> None:
        """A live other run owns submission ``sid`` (no batch yet): say once that this call waits for its batch."""
        if not entry.get("batch_id") and sid not in self.waiting:
            self.waiting.add(sid)
            owner = entry.get("owner") or {}
            self.b._say(f"submission {sid} is being sent by a run still going (pid {owner.get('pid')} on "
                        f"{str(owner.get('machine')).split()[0]}): waiting for its batch, sending nothing")

    def confirmed(self, sid: str, role: str, **fields: Any) -> dict[str, Any] | None:
        """Submission ``sid``'s entry if this call still holds its ``role`` claim ("owner", "collector") on it (its beat
        refreshed, ``fields`` recorded, atomically). Else None: the run that took it over meanwhile has it, its
        record left as it is; the entry is kept open here, to wait for."""
        entry, mine = self.b.state.confirm(sid, role, self.me, **fields)
        if mine:
            return entry
        self.open[sid] = entry
        taker = entry.get(role) or {}
        self.alert(f"submission {sid}: this run's {role} claim was taken over meanwhile by a run on "
                    f"{str(taker.get('machine')).split()[0]} (pid {taker.get('pid')}): leaving it to that run, "
                    f"{'waiting for its batch' if role == 'owner' else 'waiting for its collect'}, sending nothing")
        (self.waiting if role == "owner" else self.waiting_collect).add(sid)
        return None
