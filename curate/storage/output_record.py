"""What `curate run` last wrote outside its workspace (the exports, the report) and what from: a re-run whose inputs
and files are as recorded leaves the files as they are (a no-op re-run rebuilt the report and rewrote every export).

The record, ``WS/outputs.json``, holds per group of output files the digest of their inputs (every workspace file's
name, size, mtime and inode, the curate code drawing them, the step's own arguments) and each file's size, mtime and
inode as written. A changed input, a file edited, replaced or removed, or a file added to an exported folder: written
again. Workspace files are replaced by renames (a new inode), so a rewrite is seen even within one mtime tick.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from curate.errors import WorkspaceError
from curate.storage.files import (
    CACHE_DIR,
    LOCK_FILE,
    LOCKS_DIR,
    OUTPUTS_LOCK,
    STAGING_DIR,
    atomic_write_bytes,
    file_lock,
    read_json,
)

OUTPUTS_RECORD = "outputs.json"
log = logging.getLogger("curate")
# not inputs of an output: locks, sources being staged, caches (a report or export reads none), the record itself
_NOT_INPUTS = {LOCKS_DIR, STAGING_DIR, CACHE_DIR, OUTPUTS_RECORD}

Workspace = Any  # curate.storage.workspace.Workspace (it imports curate.storage modules)


@dataclass
class Written:
    """What an output step of a run did: its files, and whether it left them as they were (``unchanged``)."""

    files: dict[str, Path]
    unchanged: bool


def _stats(root: Path, skip: set[str] = frozenset(), skip_everywhere: set[str] = frozenset()) -> dict[str, list[int]]:
    """Every file under ``root`` (not those under a top-level name in ``skip`` or a folder of any level in
    ``skip_everywhere``, nor lock files): relative path -> [size, mtime_ns, inode]."""
    found: dict[str, list[int]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip_everywhere and (folder != str(root) or d not in skip)]
        for name in files:
            if (folder == str(root) and name in skip) or name.startswith(LOCK_FILE) or name.endswith(".lock") \
                    or (skip_everywhere and name.endswith(".pyc")):
                continue
            path = os.path.join(folder, name)
            with contextlib.suppress(FileNotFoundError):  # removed while walking: not an input any more
                st = os.stat(path)
                found[os.path.relpath(path, root)] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return dict(sorted(found.items()))


# the libraries an export or the report is drawn with: another version may write other files
_DRAWN_WITH = ("datasets", "pyarrow", "matplotlib")


@cache
def _code_state() -> str:
    """Digest of the curate package's files (its code and the report's stylesheet; not the bytecode Python writes
    when it first imports a module, at any level) and of the versions of the libraries it draws with."""
    from importlib.metadata import PackageNotFoundError, version

    package = Path(__file__).resolve().parents[1]
    versions = {}
    for name in _DRAWN_WITH:
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    return _digest([_stats(package, skip_everywhere={"__pycache__"}), versions])


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def inputs_digest(ws: Workspace, **arguments: Any) -> str:
    """Digest of what an output is made from: the workspace's files and place, curate's code, the step's arguments."""
    return _digest([_stats(ws.path, _NOT_INPUTS), _code_state(), str(ws.path.resolve()), arguments])


def files_state(outs: list[Path]) -> dict[str, Any] | None:
    """Each output's [size, mtime_ns, inode], or its files' for a folder; None if one is missing or not a regular
    file or folder (a pipe, a device: written through every time)."""
    state: dict[str, Any] = {}
    for out in outs:
        try:
            mode = os.stat(out).st_mode
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(mode):
            state[str(out)] = _stats(out)
        elif stat.S_ISREG(mode):
            st = os.stat(out)
            state[str(out)] = [st.st_size, st.st_mtime_ns, st.st_ino]
        else:
            return None
    return state


def _key(outs: list[Path]) -> str:
    return " ".join(str(Path(out).absolute()) for out in outs)


def _record(ws: Workspace) -> dict[str, Any]:
    """The record; a damaged one (cut short, edited) as none, with a warning naming it (logger ``curate``): it only
    costs writing the outputs again, and is then written whole. A file that cannot be read is an error."""
    path = ws.path / OUTPUTS_RECORD
    try:
        record = read_json(path) if path.is_file() else {}
    except (WorkspaceError, UnicodeDecodeError) as exc:
        log.warning("%s: damaged, the outputs are written again (%s)", path, exc)
        return {}
    if not isinstance(record, dict):
        log.warning("%s: damaged (not a JSON object), the outputs are written again", path)
        return {}
    return record


def written_unless_current(ws: Workspace, outs: list[Path], write: Callable[[], Any], **arguments: Any) -> bool:
    """Call ``write()`` to write ``outs`` unless the record says they were written from the same inputs (the
    workspace, the code, ``arguments``) and they are on disk as written; record them after writing. Returns whether
    they were left as they were. Two runs writing into one folder take turns."""
    (ws.path / LOCKS_DIR).mkdir(exist_ok=True)
    with file_lock(ws.path / LOCKS_DIR / OUTPUTS_LOCK):
        inputs, key = inputs_digest(ws, **arguments), _key(outs)
        entry, current = _record(ws).get(key), files_state(outs)
        if isinstance(entry, dict) and current is not None and entry.get("inputs") == inputs \
                and entry.get("files") == json.loads(json.dumps(current)):
            return True
        write()
        record, current = _record(ws), files_state(outs)
        if current is None:  # written through (a pipe): nothing to compare next time
            record.pop(key, None)
        else:
            record[key] = {"inputs": inputs, "files": current}
        atomic_write_bytes(ws.path / OUTPUTS_RECORD, json.dumps(record, indent=1).encode())
        return False
