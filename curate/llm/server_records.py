"""A record of each vLLM server curate starts, so that one whose owner was killed is stopped later.

A server runs in its own session (so that stopping it takes its engine processes along), so a SIGKILL of the
process that started it leaves it running, 1.7 GB and a core, on a port nothing uses. ``LocalServer.launch``
writes ``$CURATE_HOME/servers/<pid>.json`` (server PID, owner PID, temporary folder) and ``stop`` removes it;
:func:`stop_orphans`, run before each launch and when a ``curate serve-local`` announcement is read, stops the
servers whose owner is gone and removes their temporary folders. (Not ``PR_SET_PDEATHSIG``: it fires when the
*thread* that started the server ends, and the lazy backend starts it from a worker thread.)
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

from curate.storage.processes import alive, machine

SERVERS_DIR = "servers"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def record(home: Path, pid: int, tmpdir: str | None) -> Path:
    """Note a server this process started (written before it can answer a request)."""
    folder = Path(home) / SERVERS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pid}.json"
    tmp = folder / f".{pid}.json.tmp"
    tmp.write_text(json.dumps({"pid": pid, "owner_pid": os.getpid(), "tmpdir": tmpdir, "started": _started(pid),
                               "machine": machine()}))
    os.replace(tmp, path)
    return path


def forget(home: Path, pid: int | None) -> None:
    """Remove the record of a server that was stopped."""
    if pid is not None:
        (Path(home) / SERVERS_DIR / f"{pid}.json").unlink(missing_ok=True)


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot; None off Linux): a PID with another start time is
    another process."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def is_server(pid: int, started: int | None) -> bool:
    """``pid`` is the vLLM server recorded (so a PID the system gave to another program since, another curate's
    server included, is never signalled)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return SERVER_MODULE in command and started is not None and _started(pid) == started


def stop_orphans(home: Path, timeout: float = 20.0) -> list[int]:
    """Stop every recorded server whose owner process is gone (SIGTERM to its process group, SIGKILL after
    ``timeout`` seconds), remove its temporary folder and its record; the PIDs stopped."""
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
        if info.get("machine", here) != here or alive(owner):  # another machine's (a record before them: judged)
            continue
        if is_server(pid, info.get("started")):
            _stop_group(pid, timeout)
            stopped.append(pid)
        if info.get("tmpdir"):
            shutil.rmtree(info["tmpdir"], ignore_errors=True)
        with contextlib.suppress(OSError):  # a read-only CURATE_HOME: the record stays, the server is stopped
            path.unlink(missing_ok=True)
    return stopped


def _stop_group(pid: int, timeout: float) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while alive(pid) and time.monotonic() < deadline:  # not our child: init reaps it
            time.sleep(0.2)
        if not alive(pid):
            return
