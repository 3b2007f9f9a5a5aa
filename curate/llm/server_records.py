"""A record of each vLLM process group curate starts (a server, a batch runner), so that one whose owner was
killed is stopped.

A vLLM process runs in its own session (so that stopping it takes its engine processes along), so a SIGKILL of the
process that started it leaves it running, 1.7 GB and a core. ``launch_guarded`` (curate.llm.guarded_group) writes
``$CURATE_HOME/servers/<pid>.json`` (its PID and start time, the owner's PID and start time, its temporary folder,
the start of its command line) and starts a watchdog (curate.llm.watchdog) that stops the group within seconds of
its owner's death; ``stop`` removes the record. :func:`stop_orphans`, run before each launch and when a
``curate serve-local`` announcement is read, is the second line: it stops what a killed watchdog left.
(Not ``PR_SET_PDEATHSIG``: it fires when the *thread* that started the server ends, and the lazy backend starts it
from a worker thread.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from curate.defaults import BACKEND
from curate.storage.processes import alive, group_alive, group_members, machine, same_process, start_time  # noqa: F401 (alive: re-exported)

SERVERS_DIR = "servers"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"  # what a record written before "command" names


def command_start(command: list[str]) -> str:
    """The part of a command line a record keeps to tell its process: interpreter and ``-m module`` (or ``-c``
    script), as ``/proc/<pid>/cmdline`` spells them."""
    return "\0".join(command[:3])


def record(home: Path, pid: int, tmpdir: str | None, command: list[str] | None = None) -> Path:
    """Note a process group this process started (written before it can answer a request)."""
    folder = Path(home) / SERVERS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pid}.json"
    tmp = folder / f".{pid}.json.tmp"
    tmp.write_text(json.dumps({"pid": pid, "owner_pid": os.getpid(), "owner_started": start_time(os.getpid()),
                               "tmpdir": tmpdir, "started": start_time(pid), "machine": machine(),
                               "command": command_start(command or [SERVER_MODULE])}))
    os.replace(tmp, path)
    return path


def forget(home: Path, pid: int | None) -> None:
    """Remove the record of a server that was stopped."""
    if pid is not None:
        (Path(home) / SERVERS_DIR / f"{pid}.json").unlink(missing_ok=True)


def is_server(pid: int, started: int | None, command: str = SERVER_MODULE) -> bool:
    """``pid`` is the process recorded: its start time and the start of its command line (``command``) are the
    record's (so a PID the system gave to another program since, another curate's server included, is never
    signalled)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return command in cmdline and started is not None and start_time(pid) == started


def stop_orphans(home: Path, timeout: float = BACKEND.server_stop_grace_s) -> list[int]:
    """Stop every recorded process group whose owner process is gone (SIGTERM to its process group, SIGKILL after
    ``timeout`` seconds), remove its temporary folder and its record; the PIDs stopped. An owner whose PID now
    names another process (its start time differs) is gone."""
    stopped: list[int] = []
    if not Path("/proc/self").exists():  # no way to tell a recorded server from a process that took its PID since:
        return stopped  # the records stay (their servers, if alive, stop with their owner as before)
    here = machine()
    for path in sorted((Path(home) / SERVERS_DIR).glob("*.json")):
        try:
            info: dict[str, Any] = json.loads(path.read_text())
            pid, owner = int(info["pid"]), int(info["owner_pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours to judge
        if info.get("machine", here) != here or same_process(owner, info.get("owner_started")):
            continue  # another machine's (a record before them: judged), or its owner runs
        command = info.get("command", SERVER_MODULE)
        if is_server(pid, info.get("started"), command) or leader_gone_group_left(pid, info.get("started"), command):
            stop_group(pid, timeout)
            stopped.append(pid)
        remove_leftovers(home, pid, info.get("tmpdir"), path)
    return stopped


def leader_gone_group_left(pgid: int, started: int | None, command: str) -> bool:
    """The recorded group's leader has exited while processes of its group run on (vLLM's engine processes, when
    the server died and its watchdog was killed). The system gives no PID to a new process while a group of that ID
    exists, so the members are the recorded group's if they started after its leader and run the interpreter the
    record names (a group of a PID given again since, by another program, fails that). The executable, not the
    command line: vLLM retitles its engine processes ("VLLM::EngineCore")."""
    if started is None or alive(pgid):
        return False
    interpreter = os.path.realpath(command.split("\0", 1)[0])
    members = group_members(pgid)
    for pid in members:
        try:
            executable = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return False
        begun = start_time(pid)
        if executable != interpreter or begun is None or begun < started:
            return False
    return bool(members)


def remove_leftovers(home: Path, pid: int, tmpdir: str | None, path: Path | None = None) -> None:
    """Remove a stopped group's temporary folder and its record (``path``, else the one ``pid`` names)."""
    if tmpdir:
        shutil.rmtree(tmpdir, ignore_errors=True)
    with contextlib.suppress(OSError):  # a read-only CURATE_HOME: the record stays, the server is stopped
        (path or Path(home) / SERVERS_DIR / f"{pid}.json").unlink(missing_ok=True)


def stop_group(pgid: int, timeout: float = BACKEND.server_stop_grace_s) -> None:
    """SIGTERM process group ``pgid`` (not a child of ours: init reaps it), wait up to ``timeout`` seconds for every
    process of it to end, then SIGKILL what is left and wait up to 10 s more."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not group_alive(pgid):
            return
