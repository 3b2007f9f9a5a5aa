"""Which processes a record written beside a workspace or in curate's home names: alive here, and this machine.

A record (a vLLM server's, a lock holder's) names a PID; the PID means something only on the machine (host and PID
namespace) that wrote it, and a killed process of it may linger as a zombie where nothing reaps it.
"""

from __future__ import annotations

import os
import socket
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
