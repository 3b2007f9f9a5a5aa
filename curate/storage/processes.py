"""Which processes a record written beside a workspace or in curate's home names: alive here, and this machine.

A record (a vLLM server's, a lock holder's) names a PID; the PID means something only on the machine (host and PID
namespace) that wrote it, and a killed process of it may linger as a zombie where nothing reaps it.
"""

from __future__ import annotations

import itertools
import os
import shlex
import socket
import sys
from pathlib import Path


def alive(pid: int) -> bool:
    """A process of this PID runs (signal 0 sends nothing; a process of another user runs too). A zombie does not:
    in a container whose first process reaps nothing, a dead orphan stays one."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def machine() -> str:
    """This host and PID namespace: a record written on another (a CURATE_HOME shared over NFS, containers sharing
    one cache) names PIDs that mean nothing here."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()} {namespace}"


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot; None off Linux or when it is gone): a PID with another
    start time is another process (the system gave the PID again)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def same_process(pid: int, started: int | None) -> bool:
    """``pid`` is alive and is the process that started at ``started`` (when the start time is unknown, being alive
    is all that can be told)."""
    return alive(pid) and (started is None or start_time(pid) in (started, None))


def group_alive(pgid: int) -> bool:
    """A process of process group ``pgid`` runs (its leader may have exited while the processes it started run on;
    zombies do not count). Off Linux: the group can be signalled."""
    if not Path("/proc/self/stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # the leader first: while it runs, no scan of every process (the glob is lazy)
    stats = itertools.chain([Path(f"/proc/{pgid}/stat")], Path("/proc").glob("[0-9]*/stat"))
    return any(_live_group(stat) == pgid for stat in stats)


def _live_group(stat: Path) -> int | None:
    """The process group of the process whose ``/proc/<pid>/stat`` is ``stat``; None for a zombie or one gone."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # not there, or exited while we looked
    return int(fields[2]) if fields[0] != "Z" else None


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid`` (Linux; empty elsewhere)."""
    return [int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat") if _live_group(stat) == pgid]


def command_line() -> str:
    """The command that runs this process, as a record names it (``curate run pool.jsonl --out OUT``: the console
    script by its name, not its install path); '' where there is none (an embedded interpreter)."""
    if not sys.argv or not sys.argv[0]:
        return ""
    return shlex.join(["curate" if Path(sys.argv[0]).name == "curate" else sys.argv[0], *sys.argv[1:]])
