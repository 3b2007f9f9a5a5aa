"""User-named output files (an export, a report): where they are written through rather than renamed into place.

A pipe, a device or a link to one (/dev/null, a FIFO) has nothing beside it to write to and must not be renamed over
(as root, /dev/null would become a regular file for every user of the machine); a path naming an open descriptor
(/dev/stdout, /dev/fd/N, /proc/self/fd/N) is written through that descriptor, so ``>> log`` appends and ``> file``
keeps the shell's file, where opening the path again truncated it or a rename replaced it.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any, BinaryIO

from curate.errors import OutPathError
from curate.storage.files import atomic_write_bytes, remove_stale_leftovers, writing

_DESCRIPTOR = re.compile(r"/(?:dev|proc/self)/fd/(\d+)")
_STANDARD = {"/dev/stdout": 1, "/dev/stderr": 2}


def descriptor(out: Path) -> int | None:
    """The open file descriptor of this process that ``out`` names, or None."""
    text = str(out)
    if text in _STANDARD:
        return _STANDARD[text]
    return int(match.group(1)) if (match := _DESCRIPTOR.fullmatch(text)) else None


def written_through(out: Path) -> bool:
    """Whether ``out`` is written through (a descriptor, a pipe, a device, a link to one), not renamed into place."""
    return descriptor(out) is not None or (out.exists() and not out.is_file() and not out.is_dir())


def open_through(out: Path) -> BinaryIO:
    """``out`` opened for writing through: a descriptor's own open file (a copy of it, its offset and append mode
    kept, so a shell's ``>>`` appends), else the path (a pipe, a device)."""
    fd = descriptor(out)
    return os.fdopen(os.dup(fd), "wb") if fd is not None else open(out, "wb")


def write_all(fh: BinaryIO, data: bytes) -> None:
    """All of ``data`` into ``fh``. An unbuffered file (``sys.stdout.buffer`` under ``python -u`` or PYTHONUNBUFFERED
    is the raw FileIO) may take only part of it, a pipe whose reader left or a disk that filled, and says so by the
    count it returns alone: what it did not take was lost in silence, the export saying it wrote every row."""
    view = memoryview(data)
    while view:
        written = fh.write(view)
        if written is None:  # a non-blocking descriptor that is full
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        view = view[written:]


def write_output_file(out: Path, data: bytes) -> Path:
    """``data`` as the user-named file ``out`` (a report): written through (:func:`written_through`); into a link's
    target, the link kept; otherwise to a temporary file renamed into place, keeping the permissions of the file it
    replaces."""
    if written_through(out):
        with writing(out), open_through(out) as fh:
            fh.write(data)
        return out
    target = Path(os.path.realpath(out)) if out.is_symlink() else out
    remove_stale_leftovers(target)
    mode = target.stat().st_mode if target.is_file() else None
    atomic_write_bytes(target, data, mode=mode)
    return out


def check_outside_workspace(ws: Any, out: Path, what: str) -> None:
    """Refuse a path inside the workspace: ``what`` (an export, a report) named like its manifest or a folder of it
    would replace the workspace's own files."""
    target, home = Path(out).resolve(), ws.path.resolve()
    if target == home or home in target.parents:
        raise OutPathError(f"{out}: inside the workspace {ws.path}, whose files {what} must not replace; "
                           "write it outside")
