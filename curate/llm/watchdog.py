"""The watchdog of a vLLM process group: it stops the group when the curate process that started it dies.

A vLLM server or batch runner runs in a session of its own (so that stopping it takes its engine processes along),
so a SIGKILL of the curate process that started it (its owner) left it running, 1.7 GB and a core, until a later
command swept it; with no later command, for good. ``python -m curate.llm.watchdog SPEC`` (started detached, beside
the group, by :func:`curate.llm.guarded_group.launch_guarded`) looks every ``poll_s`` seconds: while the owner (PID
and start time, so a PID given again is not taken for it) runs and the group has a process, it waits; when the group
is gone it exits (once the owner removed the record, or removes it and the folder itself if the owner dies
first); when the owner is gone it stops the group (SIGTERM, SIGKILL after ``grace_s``), removes the group's
temporary folder and record, and exits. Its own session: a signal to the owner's process group does not reach it.
Light imports only (no vLLM, no torch): it costs a few MB.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from curate.defaults import BACKEND
from curate.llm.server_records import SERVERS_DIR, remove_leftovers, stop_group
from curate.storage.processes import group_alive, same_process, start_time


def watchdog_spec(home: Path, pid: int, started: int | None, owner_pid: int, owner_started: int | None,
                  tmpdir: str | None, ready_fd: int | None = None, poll_s: float = BACKEND.guard_poll_s,
                  grace_s: float = BACKEND.server_stop_grace_s) -> dict[str, Any]:
    """What a watchdog is told: the group (its leader's PID and start time), the owner, the group's leftovers, the
    descriptor it writes a byte to once it watches (``ready_fd``)."""
    return {"home": str(home), "pid": pid, "started": started, "owner_pid": owner_pid, "owner_started": owner_started,
            "tmpdir": tmpdir, "poll_s": poll_s, "grace_s": grace_s, "ready_fd": ready_fd}


def watch(spec: dict[str, Any]) -> str:
    """Watch until the group is gone or the owner dies (then stop the group); what happened, in words."""
    pid, owner = int(spec["pid"]), int(spec["owner_pid"])
    if spec.get("started") is not None and start_time(pid) not in (spec["started"], None):
        return f"process {pid} is not the one to watch (its start time differs): nothing done"
    if spec.get("ready_fd") is not None:  # the launcher waits for this: it watches from here
        try:
            os.write(spec["ready_fd"], b"1")
        except OSError:  # the launcher died while it waited (EPIPE): all the more to watch
            pass
        os.close(spec["ready_fd"])
    while True:
        if not same_process(owner, spec.get("owner_started")):
            stopping = group_alive(pid)
            if stopping:
                stop_group(pid, float(spec["grace_s"]))
            remove_leftovers(Path(spec["home"]), pid, spec.get("tmpdir"))
            return f"owner {owner} gone: " + (f"stopped process group {pid}" if stopping else "its group had ended")
        if not group_alive(pid):
            return after_group_ended(spec)
        time.sleep(float(spec["poll_s"]))


def after_group_ended(spec: dict[str, Any]) -> str:
    """The group ended with its owner alive: the owner removes the record and folder next, unless it is killed first (a
    notebook kernel shut down while it stopped its server: the kill comes seconds after the shutdown request). For up
    to ``grace_s`` the watchdog removes them itself if the owner dies with the record still there."""
    pid, owner = int(spec["pid"]), int(spec["owner_pid"])
    record = Path(spec["home"]) / SERVERS_DIR / f"{pid}.json"
    deadline = time.monotonic() + float(spec["grace_s"])
    while record.exists() and time.monotonic() < deadline:
        if not same_process(owner, spec.get("owner_started")):
            remove_leftovers(Path(spec["home"]), pid, spec.get("tmpdir"))
            return f"owner {owner} gone after its process group {pid} ended: removed its record and folder"
        time.sleep(min(0.2, float(spec["poll_s"])))
    return f"process group {pid} ended; its owner {owner} runs"


def main(argv: list[str]) -> int:
    """``python -m curate.llm.watchdog SPEC_JSON``; a line to stderr (the group's log) when it stopped the group."""
    outcome = watch(json.loads(argv[0]))
    if outcome.startswith("owner"):
        print(f"curate watchdog: {outcome}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
