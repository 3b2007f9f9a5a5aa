"""Files on the ground floor: atomic writes, Arrow files with provenance, file locks, output checks.

Every write goes to a temporary file first and is renamed into place (``os.replace``), so a crash never
leaves half a file; an OS error names the path it was writing (a full disk reports none by itself: see
:mod:`curate.storage.write_errors`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import glob
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from curate.codes import DamageCode
from curate.errors import OptionError, WorkspaceError
from curate.storage.checksums import check_written, with_checksum
from curate.storage.damage import DamagedFile, DamagedFileError, named_damage
from curate.storage.lock_holders import (
    LockFolderGone,
    file_lock,
    flock_file_at,
    forget_holder,
    locks_file_at,
    record_holder,
)
from curate.storage.write_errors import check_parent_folders, remove, writing

# The workspace layout's fixed names (see storage/workspace.py).
MANIFEST = "manifest.json"
LOCK_FILE = ".lock"
LOCKS_DIR = "locks"
# Folders whose writes all happen under the workspace lock: leftovers there are stale whenever the lock is free.
LOCKED_SUBDIRS = ("columns", "embeddings", "selections", "labels", "artifacts")
CACHE_DIR = "cache"  # a workspace's caches (LLM answers, embeddings, signals)
SUBDIRS = (*LOCKED_SUBDIRS, CACHE_DIR)
OUTPUTS_LOCK = "outputs.lock"  # in LOCKS_DIR: two runs writing a run's exports and report take turns
STAGING_DIR = "staging"  # sources being read into Arrow parts, outside the workspace lock (storage.pool.staging)


def now() -> str:
    """The time now in UTC, to the microsecond: two selections made in one second still order by when they were
    made (the report highlights the newest)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


@contextlib.contextmanager
def removed_on_failure(*paths: str | os.PathLike, made_by_caller: bool = False) -> Iterator[None]:
    """Remove each of ``paths`` (outermost first) that did not exist before the block (``made_by_caller``: each, the
    caller made them for it), if the block raises: a load that fails leaves no folder it made (a run's ``out``, its
    workspace)."""
    made = [Path(p) for p in paths if made_by_caller or not os.path.exists(p)]
    try:
        yield
    except BaseException:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
        raise


def modified_before(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def prepare_output(out: str | os.PathLike, *, folder: bool = False) -> Path:
    """Create the folders ``out`` needs (``out`` itself too with ``folder``); a regular file in the way is
    an ``OutPathError`` naming it (see :func:`check_parent_folders`)."""
    out = Path(out)
    needed = out if folder else out.parent
    check_parent_folders(out, itself=folder)
    needed.mkdir(parents=True, exist_ok=True)
    return out


STALE_LEFTOVER_S = 3600  # a temporary file beside an output untouched this long is a killed writer's, not a live one's
LEFTOVER = re.compile(r"\..+\.[0-9a-f]{32}\.(tmp|old)")  # .<name>.<uuid4 hex>.tmp / .old, as the writers here name them


def remove_stale_leftovers(out: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (or folders) beside ``out`` that a writer killed outright (SIGKILL, a power cut)
    could not remove, once untouched for ``STALE_LEFTOVER_S``: a live writer touches its file as it writes. Inside a
    workspace the lock tells stale from live; beside an export or a report only their age does. Returns them."""
    out = Path(out)
    cutoff, removed = time.time() - STALE_LEFTOVER_S, []
    for path in out.parent.glob(f".{glob.escape(out.name)}.*"):
        if LEFTOVER.fullmatch(path.name) and newest_mtime(path) < cutoff:
            remove(path)
            removed.append(path)
    return removed


def newest_mtime(path: Path) -> float:
    """The newest modification time of a file, or of a folder and everything in it (now, if it was removed)."""
    try:
        return max([path.stat().st_mtime] + ([p.stat().st_mtime for p in path.rglob("*")] if path.is_dir() else []))
    except FileNotFoundError:  # removed meanwhile (its writer finished)
        return time.time()


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with writing(path, tmp):
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)


def atomic_write_with(path: Path, write: Callable[[Any], Any]) -> None:
    """``write(fh)`` into a temporary file renamed to ``path`` once whole (``np.savez``, ``torch.save``), as
    :func:`atomic_write_bytes` does, the data never held whole in memory: a failed write names ``path`` and leaves
    neither half a file under its name nor the temporary one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with writing(path, tmp):
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def torch_save(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` as ``path``, atomically (:func:`atomic_write_with`). torch reports a failed write (a full
    disk) as its own RuntimeError ("unexpected pos 704 vs 598"), the OS's error only its context: that error is
    raised instead, so it names ``path``."""
    import torch

    def write(fh: Any) -> None:
        try:
            torch.save(obj, fh)  # into the open file, not the path: torch's own writer loses the OS error
        except RuntimeError as exc:
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from None
            raise

    atomic_write_with(path, write)


def write_arrow(path: Path, table) -> None:
    """``table`` as an Arrow IPC file at ``path``, atomically, its record batches' checksum in its schema metadata
    (:mod:`curate.storage.checksums`): a file overwritten in place later is found damaged when read."""
    import pyarrow as pa

    table = with_checksum(table)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with writing(path, tmp):
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)


def read_arrow(path: Path):
    """An Arrow IPC file of the workspace; a damaged one (cut short, overwritten) is an error naming it."""
    import pyarrow as pa

    with named_damage(path), pa.memory_map(str(path), "r") as source:
        reader = pa.ipc.open_file(source)
        check_written(path, reader.schema, source)  # before its rows: zeroed offsets in them crashed pyarrow (SIGSEGV)
        return reader.read_all()


def arrow_schema(path: Path):
    """An Arrow IPC file's schema, read without its rows."""
    import pyarrow as pa

    with named_damage(path), pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).schema


def schema_meta(path: Path, schema: Any = None) -> dict[str, Any]:
    """The curate metadata (provenance) of an Arrow file, from its ``schema`` when read already."""
    meta = (arrow_schema(path) if schema is None else schema).metadata or {}
    raw = meta.get(b"curate")
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        raise DamagedFileError(DamagedFile(path, DamageCode.BAD_METADATA)) from None


@contextlib.contextmanager
def passing_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock at ``path`` and remove the file when done, for a lock beside a folder of the user's (a
    saved scorer's): ``file_lock`` leaves its file behind for good. Each taker locks the file it opened and keeps the
    lock only if that file is still the one at ``path`` (the holder removes it before letting go), so a waiter on a
    removed file tries again and two never hold it at once. Windows: filelock removes its file itself."""
    try:
        import fcntl
    except ImportError:  # Windows
        with FileLock(str(path)):
            yield
        return
    fd = flock_file_at(path, os.O_RDWR | os.O_CREAT, fcntl.LOCK_EX)  # a file removed by the holder waited for: again
    try:
        yield
    finally:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # lets go of the lock, after the file is gone


@contextlib.contextmanager
def held(path: Path, on_wait: Callable[[], None] | None, patience_s: float = 0.0) -> Iterator[None]:
    """Hold the file lock at ``path``, recorded as its holder (:mod:`~curate.storage.lock_holders`); call
    ``on_wait`` once if someone else still holds it after ``patience_s``, then wait on."""
    lock = file_lock(path)
    while True:
        try:
            try:
                lock.acquire(timeout=patience_s)
            except Timeout:
                if on_wait is not None:
                    on_wait()
                if not path.parent.is_dir():  # gone meanwhile: filelock would make it anew (see the loop's end)
                    raise LockFolderGone(path) from None
                lock.acquire()
        except FileNotFoundError:  # the folder went while this process waited (filelock's retry found no file)
            if path.parent.is_dir():
                raise
            raise LockFolderGone(path) from None
        on_wait, patience_s = None, -1  # said once; a second turn waits without a word
        if lock.lock_counter > 1 or locks_file_at(lock, path):
            break
        # the file this process waited on was moved away with its folder (a failed first load's take-back renames
        # the workspace aside) or removed: holding it excludes no one. Let go and take the one at ``path`` now,
        # unless its folder is gone too (filelock would make it anew): the caller says so
        lock.release()
        if not path.parent.is_dir():
            raise LockFolderGone(path)
    try:
        if lock.lock_counter == 1:  # this thread's outermost hold
            record_holder(path)
        yield
    finally:
        if lock.lock_counter == 1:
            forget_holder(path)
        lock.release()


# a file name may hold 255 bytes; the longest a workspace makes of a name adds about 80 (a chain step's
# ".<i>-<method>", ".provenance.json", a temporary copy's ".<32 hex>.tmp")
MAX_NAME_BYTES = 150


def is_name(name: str) -> bool:
    """Whether ``name`` may name a file of the workspace: letters, digits, '_', '-', '.', not leading."""
    return bool(name) and all(c.isalnum() or c in "_-." for c in name) and not name.startswith(".")


_WARNED: set[Path] = set()  # the odd files named_files has warned of (each once a process)


def named_files(folder: Path, suffix: str) -> list[Path]:
    """The files ``<name><suffix>`` of ``folder`` whose name is one a workspace gives (:func:`is_name`), sorted; the
    others (``quality (1).arrow``, a file manager's copy) are left out with a warning (logger ``curate``) naming
    them: listed, they locked info, export and the report out ("no column 'quality (1)'"). Each such file is named
    once a process, when first met: not on every read, and a copy made later in the session is named in its turn."""
    files = sorted(p for p in folder.glob(f"*{suffix}") if not p.name.startswith("."))
    return well_named(files, [p.name[:-len(suffix)] for p in files], folder, "files")


def well_named(paths: list[Path], names: list[str], where: Path, what: str) -> list[Path]:
    """``paths`` whose ``names`` are ones a workspace gives (:func:`is_name`); the others are left out with a warning
    (logger ``curate``) naming them, each once a process, when first met (:func:`named_files`)."""
    import logging

    odd = [p for p, name in zip(paths, names, strict=True) if not is_name(name)]
    if new := [p for p in odd if p.absolute() not in _WARNED]:
        _WARNED.update(p.absolute() for p in new)
        logging.getLogger("curate").warning(
            "%s: left out, not named as curate names its %s (letters, digits, '_', '-', '.'): %s; rename or remove "
            "them", where, what, ", ".join(p.name for p in new))
    return [p for p in paths if p not in odd]


def check_name(name: str) -> str:
    """``name``, or an OptionError (exit 78) when it may not name a file of the workspace (:func:`is_name`)."""
    if not is_name(name):
        raise OptionError(f"bad name {name!r}: use letters, digits, '_', '-', '.'")
    return name


def check_new_name(name: str) -> str:
    """:func:`check_name`, and short enough for every file made of it (:data:`MAX_NAME_BYTES`): checked before the
    work whose result it names, not by the OS's "File name too long" once that work is done. A file already named
    longer (none that curate names) is still read."""
    if is_name(name) and (size := len(name.encode("utf-8", "surrogatepass"))) > MAX_NAME_BYTES:
        raise OptionError(f"bad name {name[:40]!r}... ({size} bytes): a name may hold at most {MAX_NAME_BYTES} bytes")
    return check_name(name)


_CHUNK = 1 << 20


@lru_cache(maxsize=4096)  # a model folder of more files than this was hashed again on each check
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def folder_fingerprint(folder: Path) -> str:
    """Hash of every (non-hidden) file of a model folder: config, tokenizer, template and weights.

    File digests are memoised per (path, size, mtime) within the process.
    """
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        st = path.stat()
        h.update(str(path.relative_to(folder)).encode())
        h.update(_file_digest(str(path), st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()[:16]


EXPORTED_MODEL_FILE = "curate-model.json"  # in a model folder curate.train.export wrote: which run it holds


def read_json(path: Path) -> Any:
    """A JSON file of the workspace; a damaged one is an error naming it (json's "Expecting value: line 1 column 1"
    named no file)."""
    text = Path(path).read_text()
    try:
        return json.loads(text)
    except ValueError as exc:
        raise WorkspaceError(f"{path}: damaged, not JSON ({exc}); restore it, or remove what it describes and "
                             "compute it again") from None


def exported_model(folder: str | os.PathLike) -> dict[str, Any] | None:
    """What ``curate-model.json`` in a model folder says (run fingerprint, epoch, base), or None: not an export."""
    path = Path(folder) / EXPORTED_MODEL_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def take_values(column: Any, positions: Any) -> list[Any]:
    """``column[positions]`` (a ``pyarrow.ChunkedArray``; positions in any order) as Python values, taken chunk by
    chunk: ``ChunkedArray.take`` concatenates the chunks first, which fails past 2 GiB of text in one column
    ("offset overflow"), i.e. on a pool of a few million rows."""
    import numpy as np
    import pyarrow as pa

    positions = np.asarray(positions, dtype=np.int64)
    bounds = np.cumsum([0] + [len(chunk) for chunk in column.chunks])
    chunk_of = np.searchsorted(bounds, positions, side="right") - 1
    out: list[Any] = [None] * len(positions)
    for c in np.unique(chunk_of).tolist():
        where = np.flatnonzero(chunk_of == c)
        values = column.chunk(c).take(pa.array(positions[where] - bounds[c])).to_pylist()
        for i, value in zip(where.tolist(), values, strict=True):
            out[i] = value
    return out


def operation(method: Callable) -> Callable:
    """A public Workspace method that reads or writes by pool order: it starts on the pool on disk now (another
    process or object may have loaded or removed rows since this object read it) and keeps that one pool to its end,
    however many reads it makes (only the outermost operation looks)."""
    @functools.wraps(method)
    def current(self, *args: Any, **kwargs: Any) -> Any:
        depth = self._operations  # per thread: a worker thread's operation never pins another thread's view
        if not getattr(depth, "n", 0):
            self.refresh()
        depth.n = getattr(depth, "n", 0) + 1
        try:
            return method(self, *args, **kwargs)
        finally:
            depth.n -= 1
    return current
