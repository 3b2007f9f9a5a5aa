"""What a failed write says: the file it was writing and the reason, where the error itself names another file (the
temporary one written first), none (a full disk reports none), no reason (numpy's short write) or is no OSError at all
(safetensors' and tokenizers' errors carry the OS's reason in their text only).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from curate.errors import OutPathError, WorkspaceError

# numpy's ``ndarray.tofile`` (under ``np.save``) when the disk takes fewer bytes than asked (it counts items, not
# bytes): no errno, no file name
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")
# Rust's std::io::Error as a library written in Rust reports it, in its own exception type: safetensors'
# SafetensorError "Error while serializing: I/O error: No space left on device (os error 28)" (and 'at path "..."'
# where it names the file), tokenizers' Exception "File too large (os error 27)"
_RUST_OS_ERROR = re.compile(r"(?:^|: )(?P<reason>[^:]+?) \(os error (?P<code>\d+)\)(?: at path \"(?P<path>[^\"]+)\")?")


def remove(path: Path) -> None:
    """Delete a file or folder, whichever it is (no error if it is gone)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _inside(name: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``name`` is ``folder`` or a path inside it."""
    name, folder = os.path.abspath(name), os.path.abspath(folder)
    return name == folder or name.startswith(folder.rstrip(os.sep) + os.sep)


def named_write_error(exc: OSError, path: str | os.PathLike, tmp: str | os.PathLike | None = None) -> OSError | None:
    """``exc``, raised while writing ``path`` (by way of the temporary ``tmp``), as an OSError naming ``path``;
    None when it names another file already, or is no error of this write (one without an errno, e.g. pyarrow's about a
    damaged input read meanwhile): it passes unchanged."""
    if exc.filename is not None:
        if tmp is None or not _inside(exc.filename, tmp):  # it names the file it is about already
            return None
        # the temporary file is how ``path`` is written, not what the user asked for: ``path`` first, it after
        return OSError(exc.errno, f"{exc.strerror or exc} (writing its temporary {exc.filename})", str(path))
    if exc.errno is not None:  # the OS's own error (ENOSPC, EROFS): about this write
        return OSError(exc.errno, exc.strerror or str(exc), str(path))
    if short := _SHORT_WRITE.fullmatch(str(exc)):
        requested, written = short.groups()
        # no errno: the OS's reason is lost (ENOSPC or EDQUOT, EFBIG past a file size limit): none is made up
        return OSError(None, f"write cut short, {written} of {requested} array items written (likely no space "
                       "left on device, or a file size limit)", str(path))
    return None  # no errno: a library's error (pyarrow's "Expected to be able to read ...") about what was read


# what a failed write says (a full or read-only disk, a quota, a file size limit, the device, no permission): another
# error met in a write's body (a missing input file's ENOENT) is about something else and passes as it is
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM})


def carried_os_error(exc: BaseException) -> OSError | None:
    """The OS's write error that a library's own exception (no OSError) carries in its text only, as an OSError with
    that errno, reason and the file the text names (if any); None when its text holds none (no reason is made up) or
    one that is no write's (:data:`_WRITE_ERRNOS`)."""
    if isinstance(exc, OSError) or not isinstance(exc, Exception):
        return None
    found = _RUST_OS_ERROR.search(str(exc))
    if found is None or int(found["code"]) not in _WRITE_ERRNOS:
        return None
    return OSError(int(found["code"]), found["reason"], *([found["path"]] if found["path"] else []))


def _discard(tmp: str | os.PathLike | None) -> None:
    """Remove the temporary file or folder of a failed write, if it was made: on a read-only disk even unlinking a
    file that is not there fails (EROFS), which hid the write's own error."""
    if tmp is not None and os.path.lexists(tmp):
        remove(Path(tmp))


@contextlib.contextmanager
def writing(path: str | os.PathLike, tmp: str | os.PathLike | None = None) -> Iterator[None]:
    """Name ``path`` in an OS error raised while writing it (:func:`named_write_error`), a library's error carrying
    one in its text (:func:`carried_os_error`: safetensors' full disk) made that OSError first, and remove the
    temporary ``tmp`` (file or folder) if the write fails."""
    try:
        yield
    except OSError as exc:
        _discard(tmp)
        if (named := named_write_error(exc, path, tmp)) is not None:
            raise named from exc
        raise
    except Exception as exc:
        _discard(tmp)
        if (carried := carried_os_error(exc)) is not None:
            raise (named_write_error(carried, path, tmp) or carried) from exc
        raise
    except BaseException:
        _discard(tmp)
        raise


def check_parent_folders(out: str | os.PathLike, *, itself: bool = False) -> None:
    """Refuse an output path below a regular file (``notes.txt/e.jsonl``): no folder can be made there (even by root,
    whom permissions do not stop), and the OS's "Not a directory" names neither which part is the file nor that
    the path given is what to change (an ``OutPathError``: settings refused, exit 78). ``itself``: ``out`` is a
    folder to be made, so it must not be a file either."""
    path = Path(os.path.abspath(out))
    for parent in [path] * itself + list(path.parents):
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise OutPathError(f"{out}: {parent} is a file, where a folder goes (Not a directory); name a path "
                                   "below a folder")
            return


def check_writable(out: str | os.PathLike) -> None:
    """Fail now where writing ``out`` (a file, or a folder written beside itself and swapped in) would fail later (a
    read-only disk, no permission): a temporary file is created and removed in the folder that holds ``out``, or the
    nearest one that exists (the write creates the rest). Called before long work (a fit, a fine-tune) so none is
    lost to an ``--out`` that cannot be written; the error names ``out`` first, then the file tried."""
    target = Path(out).resolve()  # as the savers resolve it: "--out ." is the folder by its name
    check_parent_folders(out)
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    probe = folder / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"  # as the writers here name theirs: a stale one is removed
    with writing(out, probe):
        probe.touch(exist_ok=False)
        probe.unlink()


def sqlite_errors(method: Callable) -> Callable:
    """For methods of a cache whose ``path`` is an SQLite file: sqlite3's errors, which are no OSError and name no
    file, become what they are: a full or read-only disk an OSError naming the file (the CLI's one line, not a
    traceback), anything else (a damaged file) a WorkspaceError naming it."""
    import sqlite3

    @functools.wraps(method)
    def named(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            text = str(exc)
            for words, code in (("disk is full", errno.ENOSPC), ("readonly", errno.EROFS),
                                ("unable to open", errno.EACCES), ("disk I/O error", errno.EIO)):
                if words in text:
                    raise OSError(code, f"{os.strerror(code)} ({text})", str(self.path)) from exc
            if "locked" in text or "busy" in text:  # its answers are fine: never advise moving it aside
                raise WorkspaceError(f"{self.path}: {text}: another process held it past the wait; re-run when that "
                                     "process is done (nothing was lost)") from exc
            damaged = "not a database" in text or "malformed" in text
            raise WorkspaceError(f"{self.path}: {text}" + ("; the file is damaged: move it aside and re-run (what it "
                                 "held is asked for again)" if damaged else "")) from exc
    return named


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to the disk: a file renamed into place (a vector shard, a
    checkpoint) before its bytes reached the disk could be empty or garbage after a power loss. A folder is
    synced where the platform allows opening one (not Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):  # Windows: a folder cannot be opened; its rename is journalled
        if path.is_dir():
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:  # some network and FUSE mounts refuse fsync on a folder (EINVAL): its files were synced
        if not path.is_dir() or exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)
