"""Who holds a file lock (and whether the file a lock holds is still the one at its path): the holder writes ``<lock>.holder`` (pid, host, command line) once it holds the lock and
removes it before letting go, so a process waiting for the lock can say whom it waits for.

The record is advisory: a folder it cannot be written to leaves none (the lock itself still works), and a waiter
then says the holder did not record itself (also what a curate from before these records says, and one whose
record names a process of this host that is gone: killed while it held the lock).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import weakref
from pathlib import Path
from typing import Any

from filelock import FileLock

from curate.storage.processes import alive, command_line, machine

HOLDER_SUFFIX = ".holder"
COMMAND_CHARS = 200  # the recorded command line is cut to this many characters


def holder_path(lock: Path) -> Path:
    """The holder record beside the lock file ``lock``."""
    return lock.with_name(lock.name + HOLDER_SUFFIX)


def record_holder(lock: Path) -> None:
    """Record this process as the holder of ``lock`` (the caller has just taken it)."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "machine": machine(),
              "command": command_line()[:COMMAND_CHARS]}
    path = holder_path(lock)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:  # advisory (see the module's docstring); files.py's writers take this module's locks, so not theirs
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def forget_holder(lock: Path) -> None:
    """Remove the holder record of ``lock`` (the caller is about to let go of it)."""
    with contextlib.suppress(OSError):
        holder_path(lock).unlink(missing_ok=True)


def describe_holder(lock: Path) -> str:
    """Whom ``lock`` is held by, as its record says: ``pid N (command)``, with the host when it is another."""
    try:
        record = json.loads(holder_path(lock).read_text())
        pid = int(record["pid"])
    except (OSError, ValueError, TypeError, KeyError):
        return "a process that did not record itself"
    host = str(record.get("host", ""))
    here = record["machine"] == machine() if "machine" in record else host == socket.gethostname()
    if here and not alive(pid):  # killed while it held the lock: someone else holds it
        return f"a process that did not record itself (the last record names pid {pid}, no longer running)"
    if pid == os.getpid() and host == socket.gethostname():
        return f"another thread of this process (pid {pid})"
    where = f" on host {host}" if host and host != socket.gethostname() else ""
    command = str(record.get("command") or "")
    return f"pid {pid}{where}" + (f" ({command})" if command else "")


class LockFolderGone(FileNotFoundError):
    """The folder of a lock file was removed or moved while this process waited for the lock."""

    def __init__(self, path: Path):
        super().__init__(2, "the lock's folder was removed or moved while waiting for it", str(path))


class AcquiredFile:
    """filelock's public ``on_acquired`` hook (filelock >= 3.30) of one lock path: on each physical acquisition it
    notes, for the thread that took it, which file (device, inode) the lock holds; :func:`locks_file_at` reads it.
    (Read before from filelock's private ``_context.lock_file_fd``.)"""

    def __init__(self) -> None:
        self.local = threading.local()

    def __call__(self, fd: int) -> None:
        st = os.fstat(fd)
        self.local.file = (st.st_dev, st.st_ino)


_HOOKS: weakref.WeakValueDictionary[str, AcquiredFile] = weakref.WeakValueDictionary()
_HOOKS_LOCK = threading.Lock()


def acquired_hook(path: Path) -> AcquiredFile:
    """The one hook of the lock at ``path`` in this process: filelock makes one lock object per path (its folder
    resolved, as here) and refuses a second construction with another hook. It lives as long as the lock object."""
    parent, name = os.path.split(os.fspath(path))
    key = os.path.join(os.path.realpath(parent or os.curdir), name)
    with _HOOKS_LOCK:
        hook = _HOOKS.get(key)
        if hook is None:
            hook = _HOOKS[key] = AcquiredFile()
        return hook


def file_lock(path: Path) -> FileLock:
    """One lock object per path in this process (re-entrant per thread; other threads and processes wait), which
    notes the file each hold locks (:func:`locks_file_at`)."""
    return FileLock(str(path), is_singleton=True, on_acquired=acquired_hook(path))


def locks_file_at(lock: Any, path: Path) -> bool:
    """Whether the file ``lock`` (held by this thread) holds is the one at ``path`` now (not one moved or removed
    while it was waited on). A lock without the hook of :func:`acquired_hook` is taken at its word."""
    held = getattr(getattr(getattr(lock, "on_acquired", None), "local", None), "file", None)
    if held is None:
        return True
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    return held == (now.st_dev, now.st_ino)


def flock_file_at(path: Path, open_flags: int, operation: int) -> int | None:
    """An open descriptor of the file at ``path`` holding ``fcntl.flock(operation)`` (``LOCK_EX``, ``LOCK_SH``), kept
    only if that file is still the one at ``path`` once locked (one removed or moved aside while this waited excludes
    no one: the one there now is taken); None when there is no file to open (``open_flags`` without ``O_CREAT``).
    Closing the descriptor lets go. Unix only."""
    import fcntl

    while True:
        try:
            fd = os.open(path, open_flags, 0o666)
        except FileNotFoundError:
            if open_flags & os.O_CREAT:
                raise
            return None
        try:
            fcntl.flock(fd, operation)
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:  # removed while this waited
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
