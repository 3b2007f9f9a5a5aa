"""Which derived columns and embedding sets a selection read, and whether they were rewritten since.

``ws.select`` runs its selectors inside :func:`curate.storage.read_log.recording_reads`; the column and embedding
reads of its thread are noted and stored in the selection's provenance as ``read``: each input's version, the
``created`` time its writer stamps on every write (a column's metadata, an embedding set's JSON; a re-run that
reuses every value leaves it as it was). :func:`inputs_rewritten` names those whose version differs now; a
selection made before this was recorded has no ``read`` and is never called out of date for it.
"""

from __future__ import annotations

from typing import Any

from curate.storage.pool import out_of_date
from curate.storage.read_log import KINDS

Workspace = Any  # curate.storage.workspace.Workspace (not imported: it imports pool, which this module imports)


def _versions(ws: Workspace, kind: str) -> dict[str, Any]:
    """Each stored input of ``kind``'s version: name -> its ``created`` stamp."""
    found = ws.embedding_sets if kind == "embeddings" else ws.columns
    return {name: meta.get("created") for name, meta in found.items() if isinstance(meta, dict)}


def input_versions(ws: Workspace, noted: dict[str, set[str]]) -> dict[str, dict[str, Any]]:
    """What the provenance records of the inputs ``noted`` read: kind -> name -> version. A column's side column
    (``quality_failure``) is left out when its column was read too: they are written together."""
    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        stored = _versions(ws, kind)
        read = {name: stored[name] for name in sorted(noted[kind]) if name in stored}
        if kind == "columns":
            read = {name: v for name, v in read.items() if ws.columns[name].get("of") not in read}
        if read:
            out[kind] = read
    return out


def inputs_rewritten(ws: Workspace, provenance: dict[str, Any]) -> list[str]:
    """The inputs a selection read (its provenance's ``read``) stored under another version now, or gone, each named
    ('embeddings default' for a set); none for a selection that recorded no ``read``."""
    read = provenance.get("read")
    if not isinstance(read, dict):
        return []
    changed = []
    for kind in KINDS:
        then = read.get(kind) or {}
        now = _versions(ws, kind) if then else {}
        changed += [(name if kind == "columns" else f"embeddings {name}")
                    + (" rewritten" if name in now else " removed") for name, version in then.items()
                    if now.get(name) != version]
    return changed


def stale_note(ws: Workspace, sel: Any) -> str:
    """What ``info``, the report and the notebook say of selection ``sel`` (a
    :class:`~curate.storage.selection.Selection`) when it is out of date: kept rows gone from the pool
    (:func:`~curate.storage.pool.out_of_date`'s words), inputs rewritten since, or both ('' when neither)."""
    index = ws.index
    gone = out_of_date(sum(1 for rid in sel.ids if rid not in index))
    changed = inputs_rewritten(ws, sel.provenance)
    if not changed:
        return gone
    again = "; make the selection again"
    return (gone.removesuffix(again) + "; " if gone else "out of date: ") + \
        f"{', '.join(changed)} since this selection was made{again}"
