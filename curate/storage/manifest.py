"""The workspace's manifest and what a damaged pool folder is: checks that name the file and the fix."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from curate.errors import NotInWorkspaceError, WorkspaceError, WorkspaceGoneError
from curate.storage.files import MANIFEST, now

# ``ws`` below is a curate.storage.workspace.Workspace (not imported: it imports this module).
Workspace = Any

MANIFEST_VERSION = 1  # the workspace layout; bump when an older curate could not read what a newer one writes
ROWS_REMOVED_AT = "rows_removed_at"  # the manifest's key: when rows last left the pool (see rows_gone_from_source)


def check_manifest(ws: Workspace) -> None:
    """The manifest is one this curate reads: JSON, its version, its sources list; else an error naming it and
    what to do (a newer curate's workspace must not be written by an older one, a broken file must not be guessed at)."""
    path = ws.path / MANIFEST
    fix = (f"restore it from a backup, or mend it by hand: a JSON object {{\"version\": {MANIFEST_VERSION}, \"sources\": "
           "[...]} (one entry per `curate load`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise WorkspaceError(f"{path}: not a readable manifest ({exc}); {fix}") from None
    if not isinstance(manifest, dict):
        raise WorkspaceError(f"{path}: not a manifest (a JSON {type(manifest).__name__}, not an object); {fix}")
    version = manifest.get("version")
    if isinstance(version, str | bool):
        raise WorkspaceError(f"{path}: damaged: its \"version\" is {json.dumps(version)}, "
                             f"{'text' if isinstance(version, str) else 'a true/false value'} where a number belongs; "
                             f"write {MANIFEST_VERSION} (no quotes), the version this curate reads")
    if version != MANIFEST_VERSION:
        newer = isinstance(version, int) and version > MANIFEST_VERSION
        raise WorkspaceError(f"{path}: workspace format version {version!r}; this curate reads version "
                             f"{MANIFEST_VERSION}" + ("; upgrade curate to use it" if newer else f"; {fix}"))
    if not isinstance(manifest.get("sources"), list):
        raise WorkspaceError(f"{path}: the manifest has no 'sources' list; {fix}")


@contextlib.contextmanager
def damaged_pool(ws: Workspace, retry: bool) -> Iterator[None]:
    """A pool folder datasets cannot read (an Arrow file cut short, its JSON files edited or gone) is named with the
    fix: datasets' and Arrow's own messages named no file, or were a TypeError's traceback. ``retry``: a missing
    file passes (a load may be swapping the folder; the caller reads again under the lock)."""
    try:
        yield
    except FileNotFoundError:
        if retry:
            raise
        raise WorkspaceError(damaged_pool_line(ws, "a file of it is missing")) from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:  # pyarrow's errors are among these
        raise WorkspaceError(damaged_pool_line(ws, f"{type(exc).__name__}: {exc}")) from None


def damaged_pool_line(ws: Workspace, why: str) -> str:
    """What a damaged pool folder is, and how to make it again (columns and selections are kept by row id)."""
    pool = ws.path / "pool"
    try:
        sources = list(dict.fromkeys(str(s["source"]) for s in json.loads((ws.path / MANIFEST).read_text())["sources"]))
    except (OSError, ValueError, TypeError, KeyError):
        sources = []
    loads = "; ".join(f"`curate load {s} --workspace {ws.path}`" for s in sources) or \
        f"`curate load SOURCE --workspace {ws.path}` for each source it held"
    return (f"{pool}: damaged ({why}); remove the folder {pool} and load its rows again: {loads} (derived columns "
            "and selections are kept by row id)")


def repeats_a_load(sources: list[dict[str, Any]], summary: dict[str, Any]) -> bool:
    """Whether load ``summary``, which added no row, read its source as the manifest's last load of that source did
    (rows read, formats, rejects, fields): the same source again, whatever that load added."""
    def read_as(load: dict[str, Any]) -> dict[str, Any]:  # as stored: JSON (tuples as lists)
        own = ("loaded_at", "rows_added", "already_present")
        return json.loads(json.dumps({k: v for k, v in load.items() if k not in own}))

    same_source = [load for load in sources if load.get("source") == summary["source"]]
    return bool(same_source) and read_as(same_source[-1]) == read_as(summary)


def rows_gone_from_source(manifest: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """``{"rows_gone_from_source": N, "earlier_load_at": T}`` when the last load of this source (in ``manifest``'s
    ``sources``) read rows that this read of it (``summary``) does not hold (an edited file: a row changed or
    deleted; or other options), which stay in the pool; else ``{}``. N is at least that many: the earlier load read
    ``rows_read`` distinct rows, all in the pool, of which this read found ``already_present`` at most. Rows removed
    from the pool since that load (``keep_rows``, another source's ``keep_only_source`` load: the manifest's
    ``rows_removed_at``) void the count: the rows added again were the pool's loss, not the source's change."""
    earlier = [load for load in manifest["sources"] if load.get("source") == summary["source"]]
    if not earlier or earlier[-1]["loaded_at"] < manifest.get(ROWS_REMOVED_AT, ""):
        return {}
    gone = earlier[-1]["rows_read"] - summary["already_present"]
    return {"rows_gone_from_source": gone, "earlier_load_at": earlier[-1]["loaded_at"]} if gone > 0 else {}


def record_load(ws: Workspace, summary: dict[str, Any], *, unchanged: bool, rows_removed: int,
                keep_only_source: bool) -> dict[str, Any]:
    """Record load ``summary`` in ``ws``'s manifest (not an ``unchanged`` one's), and when rows left the pool
    (``rows_removed``); returns :func:`rows_gone_from_source` of it (``{}`` for a ``keep_only_source`` load)."""
    gone = {} if keep_only_source else rows_gone_from_source(ws.manifest, summary)

    def record(manifest: dict[str, Any]) -> None:
        if not unchanged:
            manifest["sources"].append(summary)
        if rows_removed:
            note_rows_removed(manifest, summary["loaded_at"])
    if rows_removed or not unchanged:
        ws.update_manifest(record)
    return gone


def note_rows_removed(manifest: dict[str, Any], at: str | None = None) -> None:
    """Note in ``manifest`` that rows left the pool ``at`` (default: now): the rows a load read before may be gone
    from the pool since, not from its source (see :func:`rows_gone_from_source`)."""
    manifest[ROWS_REMOVED_AT] = at or now()


def not_a_workspace(path: Path) -> NotInWorkspaceError:
    """The error for a path holding no workspace, with the command that makes one there (none where a file is), and
    the workspaces beside it of a close name (a typo's)."""
    if path.is_file():
        return NotInWorkspaceError(f"{path}: a file, not a curate workspace (a folder holding {MANIFEST})"
                                   f"{did_you_mean(path)}")
    if (path / "workspace" / MANIFEST).is_file():  # `curate info OUT` of a run: its workspace is OUT/workspace
        return NotInWorkspaceError(f"{path}: a run's out folder, not a workspace; its workspace is "
                                   f"{path / 'workspace'} (e.g. curate info {path / 'workspace'})")
    return NotInWorkspaceError(f"{path}: not a curate workspace (no {MANIFEST}){did_you_mean(path)}; make one: "
                               f"curate load SOURCE --workspace {path}")


def no_workspace(path: Path) -> NotInWorkspaceError:
    """The error for a read of a new workspace (``Workspace(path)`` at a path holding none, not made yet): it names
    the workspaces beside it of a close name and how to make this one."""
    return NotInWorkspaceError(f"no workspace at {path}{did_you_mean(path)}; opening writes nothing: the first "
                               f"write makes it, e.g. ws.load(SOURCE) (CLI: curate load SOURCE --workspace {path})")


def did_you_mean(path: Path, limit: int = 5000) -> str:
    """`` (did you mean 'ws-1', 'ws'?)``: the workspaces (folders holding a manifest) beside ``path`` whose names are
    close to its name ('' when none; at most ``limit`` entries of the folder are looked at)."""
    import difflib
    import itertools

    if not path.name:  # "." or "/"
        return ""
    try:
        entries = [p for p in itertools.islice(path.absolute().parent.iterdir(), limit) if p.name != path.name]
        names = [p.name for p in entries if (p / MANIFEST).is_file()]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(str(path.with_name(n))) for n in close)}?)" if close else ""


def workspace_gone(path: Path) -> WorkspaceGoneError:
    """The error for a workspace removed (or moved) while this process used it: its lock is not taken, which
    made the folder anew (filelock creates the lock file's folders), and nothing more is written there."""
    return WorkspaceGoneError(f"{path}: the workspace disappeared during this run (removed or moved while curate used "
                          "it); nothing more was written there: restore it, or run the command again to start anew")


def no_selection(path: Path, name: str, have: Any) -> NotInWorkspaceError:
    """The error for a selection the workspace at ``path`` lacks, naming those it has (``have``)."""
    return NotInWorkspaceError(f"{path}: no selection {name!r} in this workspace; selections here: "
                               f"{', '.join(sorted(have)) or 'none yet (make one: curate select)'}")


def no_step_input(path: Path, name: str) -> NotInWorkspaceError:
    """The error for a column a step declares it reads that the workspace at ``path`` lacks."""
    return NotInWorkspaceError(f"{path}: a step reads column {name!r}, which is not in the pool or derived")
