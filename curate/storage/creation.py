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
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.errors import NotInWorkspaceError, WorkspaceGoneError, warn
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
from curate.storage.manifest import MANIFEST_VERSION, workspace_gone

# ``ws`` below is a curate.storage.workspace.Workspace (not imported: it imports this module).
Workspace = Any
MAKE_TRIES = 10  # a workspace taken back under a load making or entering it is made anew, this many times at most
_OURS = {*SUBDIRS, LOCK_FILE, holder_path(Path(LOCK_FILE)).name, LOCKS_DIR, MANIFEST}


@dataclass(frozen=True)
class Made:
    """A workspace :func:`create` made: in folders it made too (``top``: the outermost), or in an empty folder that
    was there (``top`` None), which a take-back empties and keeps."""

    top: Path | None


def create(ws: Workspace) -> Made | None:
    """Make the folders and an empty manifest, under the lock: two processes creating one workspace at once both
    end up in the same, single workspace. What this call made; None when another process made the workspace first.
    A workspace a failed first load took back while this call waited for its lock is made anew."""
    for _ in range(MAKE_TRIES):
        # Without the lock only visible names count: a process creating it right now writes hidden temporaries.
        refuse_foreign(ws, include_hidden=False)
        top = next((p for p in reversed([ws.path, *ws.path.parents]) if not p.exists()), None)
        prepare_output(ws.path, folder=True)
        try:
            with workspace_lock(ws, None):  # not ws.lock(): that one makes a new workspace first, i.e. calls this
                if (ws.path / MANIFEST).exists():  # another process created it while we waited
                    return None
                refuse_foreign(ws, include_hidden=True)
                remove_taken_back(ws.path)
                for sub in SUBDIRS:
                    (ws.path / sub).mkdir(exist_ok=True)
                atomic_write_bytes(ws.path / MANIFEST, json.dumps({"version": MANIFEST_VERSION, "created": now(),
                                                                   "sources": []}).encode())
                return Made(top)
        except WorkspaceGoneError:  # taken back (moved aside) while this call waited for its lock: made anew
            continue
    raise workspace_gone(ws.path)


@contextlib.contextmanager
def loading(ws: Workspace, staging: Callable[[Workspace], contextlib.AbstractContextManager[Path]]) -> Iterator[Path]:
    """A first load's (or a later one's) workspace and its staging folder (``staging(ws)``, which registers the
    folder under the workspace lock): the workspace made if new, and taken back if the block raises and this call
    made it (:func:`taken_back_on_failure`). A workspace another process's failed first load took back before this
    load's folder was registered in it is made anew: that take-back, under the lock, sees the folder, and keeps it."""
    for _ in range(MAKE_TRIES):
        ws._new = not (ws.path / MANIFEST).exists()  # new again if taken back since (a failed first load's)
        entered = False
        try:
            with taken_back_on_failure(ws, ws._make()), staging(ws) as folder:
                entered = True
                yield folder
                return
        except WorkspaceGoneError:
            if entered:
                raise
    raise workspace_gone(ws.path)


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
    except BaseException as exc:
        if made is not None:
            try:  # the load's own error is the one to report
                removed = remove_unused(ws, keep_folder=made.top is None)
            except OSError as late:  # said, not kept quiet: what it left is named (the next creation removes it)
                removed = not (ws.path / MANIFEST).exists()  # no workspace, though a folder may be left
                exc.add_note(f"{ws.path}: taking back the workspace this load made failed: {late}")
            with contextlib.suppress(OSError):
                if removed:
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
            # removed while held, not after: a process that took the old file once it was let go would hold it while
            # a third made and locked a new one. A waiter on the removed file sees it is not the one at the path
            # (lock_holders.locks_file_at) and takes that one.
            (ws.path / LOCK_FILE).unlink(missing_ok=True)
        else:
            ws.path.rename(aside)
    if not keep_folder:
        _remove_tree(aside)  # a failure is raised: a hidden .NAME.<hex>.old left beside it in silence is not
    return True


def remove_taken_back(path: Path) -> None:
    """Remove what a take-back killed part way (or one whose removal failed) left beside the workspace at ``path``:
    the hidden ``.NAME.<32 hex>.old`` folders :func:`remove_unused` renames a workspace to before deleting it."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{32}}\.old")
    for aside in path.parent.iterdir():
        if pattern.fullmatch(aside.name) and aside.is_dir():
            try:
                _remove_tree(aside)
            except OSError as exc:  # no reason to refuse the new workspace: said, and tried again next time
                warn(f"{aside}: a failed first load's take-back left this folder, and it could not be removed: {exc}")


def _remove_tree(folder: Path) -> None:
    """``shutil.rmtree``, where another process removing the same folder at once is no error."""
    def gone_already(function, name, exc) -> None:  # noqa: ANN001
        if not isinstance(exc, FileNotFoundError):
            raise exc
    shutil.rmtree(folder, onexc=gone_already) if sys.version_info >= (3, 12) else \
        shutil.rmtree(folder, onerror=lambda f, n, info: gone_already(f, n, info[1]))


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
