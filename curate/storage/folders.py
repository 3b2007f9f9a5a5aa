"""A folder written whole (a saved scorer, an exported model): written beside its place and swapped in, so a reader
or a kill never meets it half-written or half-deleted."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from curate.storage.write_errors import remove, writing


@contextlib.contextmanager
def folder_written_whole(out: Path, last: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of folder ``out`` (a symlink is followed) to write; when the block ends, swap it in
    for ``out`` (an earlier ``out`` moves aside first: a folder cannot be replaced by a rename), so a reader or a
    kill never meets a folder half-written or half-deleted. On an error, nothing of it stays. A folder that cannot
    be moved (a mount point), or must not be (the current folder: moved away, it would leave this process and the
    shell it runs from in a deleted folder), gets the new files renamed in one by one, ``last`` last (the file naming
    the others), and loses the files the new folder lacks. On Linux the two folders are exchanged in one step
    (:func:`_exchanged`); elsewhere a kill between the two renames leaves ``out`` missing and the earlier folder
    whole as ``.NAME.*.old``: :func:`whole_folder` reads it, and the next write puts it back before it starts. An OS error (a full disk, safetensors' too: :func:`writing`) names ``out``. The caller keeps
    other writers of ``out`` out."""
    out = Path(out).resolve()
    if not out.exists() and (earlier := whole_folder(out)) != out:
        os.replace(earlier, out)
    here = Path.cwd().resolve()
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
    try:
        with writing(out, tmp):
            tmp.mkdir()
            yield tmp
            _umask_modes(tmp)
            if out.exists() and (out == here or out in here.parents):
                _rename_in(tmp, out, last)
                return
            if out.exists():
                try:
                    if _exchanged(tmp, out):
                        return  # tmp now holds the earlier folder: removed below
                    os.replace(out, old)
                except OSError as exc:
                    if exc.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM, errno.EACCES):
                        raise
                    _rename_in(tmp, out, last)
                    return
            os.replace(tmp, out)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def _exchanged(new: Path, out: Path) -> bool:
    """Swap folders ``new`` and ``out`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``, which :mod:`os` does not
    offer), True when done. Two renames left a moment with no ``out``: a save killed there (one in ~100 kills in a
    loop of saves) left the folder missing until the next save. False where the system or the file system has no
    exchange (the caller then renames twice)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(out), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system without exchange (or an old kernel)
        return False
    raise OSError(err, os.strerror(err), str(out))


def _umask_modes(folder: Path) -> None:
    """Give the files under ``folder`` the mode a file created here has (the umask's): safetensors writes its files
    0600, so a scorer or model saved to a shared folder could not be read by the rest of the team."""
    probe = folder / ".mode-probe"
    probe.touch()
    mode = probe.stat().st_mode & 0o777
    probe.unlink()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and (have := path.stat().st_mode & 0o777) | mode != have:
            path.chmod(have | mode)


def folder_identity(path: Path) -> tuple[int, int] | None:
    """The folder at ``path`` as (device, inode), None when absent: :func:`folder_written_whole` swaps in a new
    folder, so a reader comparing it before and after sees whether what it read was one folder."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def whole_folder(path: Path) -> Path:
    """``path``, or where it is while a swap of :func:`folder_written_whole` was cut between its two renames (the
    earlier folder, moved aside whole): the newest ``.NAME.*.old`` beside it."""
    path = Path(path)
    if path.exists():
        return path
    moved = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.old")  # not ``.sc.v2.*.old`` for ``sc``
    aside = []
    for found in path.parent.glob(f".{glob.escape(path.name)}.*.old"):
        if moved.fullmatch(found.name):
            with contextlib.suppress(FileNotFoundError):  # removed by the swap that finished meanwhile, a dead link
                aside.append((found.stat().st_mtime_ns, found))
    return max(aside)[1] if aside else path


def _rename_in(tmp: Path, out: Path, last: str | None) -> None:
    """The files of ``tmp`` renamed into the folder ``out`` (``last`` last), then ``out``'s other files removed."""
    names = sorted(p.name for p in tmp.iterdir())
    for name in sorted(names, key=lambda n: n == last):
        os.replace(tmp / name, out / name)
    for gone in (p for p in out.iterdir() if p.name not in names):
        remove(gone)
