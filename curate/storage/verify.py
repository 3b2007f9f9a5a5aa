"""``ws.info()``'s listing of column and selection files, each checked against the CRC-32 of its record batches
(:mod:`curate.storage.checksums`), as its first read in a process checks it: a file overwritten in place, its size
kept, is listed as damaged (code ``not_written``) with its fix, where the schema-only listings (``ws.columns``,
``ws.selections``) still list it. A 1M-row float column (28 MB with its ids) costs 44-78 ms once a process (a loaded
2-core machine; the schema-only listing: 7 ms); the verdict is kept by the file's identity, so a later read costs no more."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from curate.storage.blobs import label_set_listing
from curate.storage.checksums import check_written
from curate.storage.damage import DamagedFile, named_damage, sort_out
from curate.storage.files import named_files, schema_meta
from curate.storage.selection import selection_meta

# ``ws`` below is a curate.storage.workspace.Workspace (not imported: it imports this module).
Workspace = Any


def verify_checksum(path: Any) -> None:
    """Raise :class:`~curate.storage.damage.DamagedFileError` naming ``path`` when its record batches are not the
    bytes curate wrote (or it is no Arrow file); a file written before checksums passes."""
    import pyarrow as pa

    with named_damage(path), pa.memory_map(str(path), "r") as source:
        check_written(path, pa.ipc.open_file(source).schema, source)


def _verified(read: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    def verified(path: Any) -> dict[str, Any]:
        verify_checksum(path)
        return read(path)
    return verified


def verified_listing(ws: Workspace) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[DamagedFile]]:
    """(columns, selections, label sets: name -> provenance; the damaged files of all three), every column and
    selection file checked against its checksum; the label sets listed once (``ws.label_sets`` lists them again)."""
    columns, bad_columns = sort_out(named_files(ws.path / "columns", ".arrow"), _verified(schema_meta))
    selections, bad_selections = sort_out(named_files(ws.path / "selections", ".arrow"), _verified(selection_meta))
    label_sets, bad_label_sets = label_set_listing(ws.path / "labels")
    return columns, selections, label_sets, [*bad_columns, *bad_selections, *bad_label_sets]
