"""Making a workspace's folder, and taking back one a failed first load made.

Opening a workspace writes nothing: ``Workspace(path)`` at a path that holds none is a new workspace whose folder
its first write makes (``ws.load``; any write under the workspace lock), so a typo'd path leaves nothing on disk and
its reads say ``no workspace at PATH`` (:func:`curate.storage.manifest.no_workspace`). Two processes making one
workspace at once end up in the same, single workspace; a first load that fails takes back the folder it made
unless another process has put something there meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.errors import NotInWorkspaceError
from curate.storage.columns import workspace_lock
from curate.storage.files import (
    LOCK_FILE,
    LOCKS_DIR,
    MANIFEST,
    STAGING_DIR,
    SUBDIRS,
    atomic_write_bytes,
    now,
    prepare_output,
)
from curate.storage.lock_holders import holder_path
from curate.storage.manifest import MANIFEST_VERSION

# ``ws`` below is a curate.storage.workspace.Workspace (not imported: it imports this module).
Workspace = Any
_OURS = {*SUBDIRS, LOCK_FILE, holder_path(Path(LOCK_FILE)).name, LOCKS_DIR, MANIFEST}


@dataclass(frozen=True)
class Made:
    """A workspace :func:`create` made: in folders it made too (``top``: the outermost), or in an empty folder that
    was there (``top`` None), which a take-back empties and keeps."""

    top: Path | None


def create(ws: Workspace) -> Made | None:
    """Make the folders and an empty manifest, under the lock: two processes creating one workspace at once both
    end up in the same, single workspace. What this call made; None when another process made the workspace first."""
    # Without the lock only visible names count: a process creating it right now writes hidden temporaries.
    refuse_foreign(ws, include_hidden=False)
    top = next((p for p in reversed([ws.path, *ws.path.parents]) if not p.exists()), None)
    prepare_output(ws.path, folder=True)
    with workspace_lock(ws, None):  # not ws.lock(): that one makes a new workspace first, i.e. calls this
        if (ws.path / MANIFEST).exists():  # another process created it while we waited
            return None
        refuse_foreign(ws, include_hidden=True)
        for sub in SUBDIRS:
            (ws.path / sub).mkdir(exist_ok=True)
        atomic_write_bytes(ws.path / MANIFEST, json.dumps({"version": MANIFEST_VERSION, "created": now(),
                                                           "sources": []}).encode())
        return Made(top)


def refuse_foreign(ws: Workspace, include_hidden: bool) -> None:
    """Refuse a folder holding anything a workspace being created would not (or a crashed creation left)."""
    if ws.path.exists() and not ws.path.is_dir():  # the OSError said "Not a directory": exit 1, as a full disk
        raise NotInWorkspaceError(f"{ws.path}: a file, not a curate workspace; name a new or empty folder")
    if not ws.path.is_dir():
        return
    foreign = [p.name for p in ws.path.iterdir() if p.name not in _OURS and not p.name.endswith(".tmp")
               and (include_hidden or not p.name.startswith("."))]
    if foreign:
        raise NotInWorkspaceError(f"{ws.path}: exists, is not empty, and is not a curate workspace "
                                  f"(holds {foreign[0]!r}); name a new or empty folder")


@contextlib.contextmanager
def taken_back_on_failure(ws: Workspace, made: Made | None) -> Iterator[None]:
    """If the block raises and this process ``made`` the workspace for it (:func:`create`), take it back when nothing
    was put in it since (:func:`remove_unused`), with the parent folders made for it: a first load of a missing
    source leaves no folder (an empty folder that was there stays, emptied), and one that fails while another
    process loads into the same new workspace leaves that load's rows alone."""
    try:
        yield
    except BaseException:
        if made is not None:
            with contextlib.suppress(OSError):  # the load's own error is the one to report
                if removed := remove_unused(ws, keep_folder=made.top is None):
                    ws._new = True  # new again: its next write makes it anew
                if removed and made.top is not None and made.top != ws.path:
                    for parent in ws.path.parents:  # made for it, so empty (os.rmdir refuses one that is not)
                        parent.rmdir()
                        if parent == made.top:
                            break
        raise


def remove_unused(ws: Workspace, keep_folder: bool = False) -> bool:
    """Remove the workspace if it holds nothing but a new one's empty folders (no source loaded, no file written, no
    other load reading a source into ``staging/``); whether it did. It is renamed aside under the lock, then
    deleted: a process that opens it meanwhile finds either all of it or nothing. ``keep_folder``: its folder (one
    that was there, empty, before the workspace was made in it) stays, emptied."""
    aside = ws.path.with_name(f".{ws.path.name}.{uuid.uuid4().hex}.old")
    with workspace_lock(ws, None):
        if not _unused(ws.path):
            return False
        if keep_folder:  # the manifest first: from then on it is no workspace
            for entry in sorted(ws.path.iterdir(), key=lambda entry: entry.name != MANIFEST):
                if entry.name != LOCK_FILE:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        else:
            ws.path.rename(aside)
    if keep_folder:
        (ws.path / LOCK_FILE).unlink(missing_ok=True)
    shutil.rmtree(aside, ignore_errors=True)
    return True


def _unused(path: Path) -> bool:
    """Whether the workspace at ``path`` is as :func:`create` left it (its lock files aside)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("sources"):
        return False
    for entry in path.iterdir():
        if entry.name in (LOCK_FILE, holder_path(Path(LOCK_FILE)).name, MANIFEST):
            continue
        if entry.name not in {*SUBDIRS, LOCKS_DIR, STAGING_DIR} or not entry.is_dir() or any(entry.iterdir()):
            return False
    return True
