"""Which derived columns and embedding sets a selection read, and whether they were rewritten since.

``ws.select`` runs its selectors inside :func:`curate.storage.read_log.recording_reads`; the column and embedding
reads of its thread are noted and stored in the selection's provenance as ``read``: each input's version, the
``created`` time its writer stamps on every write (a column's metadata, an embedding set's JSON; a re-run that
reuses every value leaves it as it was). :func:`inputs_rewritten` names those whose version differs now; a
selection made before this was recorded has no ``read`` and is never called out of date for it.
"""

from __future__ import annotations

from datetime import UTC, datetime
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


LATEST = datetime.max.replace(tzinfo=UTC)


def rows_loaded_since(ws: Workspace, provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The rows loaded into the pool since a selection's candidates were fixed, which it never considered: since the
    oldest selection of its ``input_selection`` chain (as stored now) was made, by the manifest's loads. ``{"rows",
    "sources", "since"}`` (``since``: the selection of that chain they are newer than), or None when no row came since.
    Rows gone are :func:`~curate.storage.pool.out_of_date`'s; this is the other way a pool moves on under a selection:
    `curate select --from dedup` after `curate load more.jsonl` chose among dedup's rows alone, and said nothing."""
    adding = [load for load in ws.manifest.get("sources", []) if isinstance(load, dict) and load.get("rows_added")]
    if len(adding) < 2:  # one load made the pool, before any selection (a selection needs rows): none came since
        return None
    stored, seen = ws.selections if provenance.get("input_selection") else {}, set()
    oldest, name, prov = provenance.get("created"), provenance.get("name"), provenance
    while isinstance(prov, dict) and (source := prov.get("input_selection")) in stored and source not in seen:
        seen.add(source)
        prov = stored[source]
        if _time(prov.get("created")) < _time(oldest):
            oldest, name = prov.get("created"), source
    if _time(oldest) == LATEST:  # no time recorded: nothing to compare
        return None
    loads = [load for load in adding if _time(load.get("loaded_at")) > _time(oldest)]
    if not loads:
        return None
    return {"rows": sum(int(load["rows_added"]) for load in loads), "since": name,
            "sources": list(dict.fromkeys(str(load.get("source")) for load in loads))}


def _time(stamp: Any) -> datetime:
    """A stored ``created`` / ``loaded_at`` stamp (UTC, :func:`curate.storage.files.now`) as a time; one missing or
    unreadable is the latest possible."""
    try:
        when = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return LATEST
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def loaded_since_text(new: dict[str, Any], name: str) -> str:
    """'10 row(s) loaded since selection 'dedup' was made (more.jsonl) are not among the candidates of 'kc3'; make
    'dedup' again to consider them' (of :func:`rows_loaded_since`'s ``new``, for selection ``name``)."""
    own = new["since"] == name
    return (f"{new['rows']:,} row(s) loaded since selection {new['since']!r} was made ({', '.join(new['sources'])}) "
            f"are not among {'its' if own else 'the'} candidates{'' if own else f' of {name!r}'}; make "
            f"{'it' if own else repr(new['since'])} again to consider them")


def stale_note(ws: Workspace, sel: Any) -> str:
    """What ``info``, the report and the notebook say of selection ``sel`` (a
    :class:`~curate.storage.selection.Selection`) when it is out of date: kept rows gone from the pool
    (:func:`~curate.storage.pool.out_of_date`'s words), inputs rewritten since, or both ('' when neither)."""
    index = ws.index
    gone = out_of_date(sum(1 for rid in sel.ids if rid not in index))
    changed = inputs_rewritten(ws, sel.provenance)
    if new := rows_loaded_since(ws, {**sel.provenance, "name": sel.name}):  # said first: the others' words end it
        gone = "out of date: " + loaded_since_text(new, sel.name) + (f"; {gone.removeprefix('out of date: ')}"
                                                                      if gone else "")
        if not changed:
            return gone
    if not changed:
        return gone
    again = "; make the selection again"
    return (gone.removesuffix(again) + "; " if gone else "out of date: ") + \
        f"{', '.join(changed)} since this selection was made{again}"
