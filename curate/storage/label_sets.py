"""Label sets as the workspace lists them, without loading their rows.

A label set is a folder ``labels/<name>`` (a ``datasets`` folder, ``provenance.json``, side files; see
:func:`curate.storage.blobs.add_labels`). :func:`label_set_listing` lists them as the other listings do: a folder not
named as curate names them (``mine (1)``, a file manager's copy) is left out with a warning, and one whose
``provenance.json`` or ``state.json`` is not JSON or whose data files are gone is a
:class:`~curate.storage.damage.DamagedFile` instead of stopping the listing. :func:`label_rows` counts a set's rows
from its provenance (``add_labels`` records ``rows``; Evol's ``labels``) or, for a set stored before, from its
Arrow files' record batches (memory-mapped: their headers, not their rows).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curate.codes import DamageCode
from curate.storage.damage import DamagedFile, DamagedFileError, named_damage, sort_out
from curate.storage.files import well_named


def label_folders(labels: Path) -> list[Path]:
    """The label-set folders of ``labels`` (those holding a ``provenance.json``) whose name is one a workspace gives,
    sorted; the others are left out with one warning each (logger ``curate``), as :func:`~curate.storage.files.
    named_files` does for files."""
    found = sorted(p.parent for p in labels.glob("*/provenance.json") if not p.parent.name.startswith("."))
    return well_named(found, [p.name for p in found], labels, "label sets")


def _json(folder: Path, file: str) -> dict[str, Any]:
    """``folder/file`` as a JSON object, or a DamagedFileError (BAD_METADATA) naming the label set."""
    try:
        data = json.loads((folder / file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedFileError(DamagedFile(folder, DamageCode.MISSING_FILES, file)) from None
    except ValueError:  # not JSON, not UTF-8
        data = None
    if not isinstance(data, dict):
        raise DamagedFileError(DamagedFile(folder, DamageCode.BAD_METADATA, file))
    return data


def data_files(folder: Path) -> list[Path]:
    """The Arrow files of label set ``folder`` (``state.json`` names them; none for a set of no rows), or a
    DamagedFileError naming the set when ``state.json`` cannot be read or one of them is gone."""
    named = _json(folder, "state.json").get("_data_files")
    files = [folder / str(f.get("filename")) if isinstance(f, dict) else folder / str(f) for f in named or []]
    if gone := [f.name for f in files if not f.is_file()]:
        raise DamagedFileError(DamagedFile(folder, DamageCode.MISSING_FILES, ", ".join(gone)))
    return files


def label_set_meta(folder: Path) -> dict[str, Any]:
    """A label set's provenance, once its provenance and data files are there (their rows unread)."""
    provenance = _json(folder, "provenance.json")
    data_files(folder)
    return provenance


def stored_provenance(folder: Path) -> dict[str, Any] | None:
    """A label set's ``provenance.json`` when it reads, whatever its data files (a set made again over a damaged one
    keeps what its earlier runs paid); None when there is none or it is not JSON."""
    try:
        return _json(folder, "provenance.json")
    except DamagedFileError:
        return None


def label_set_listing(labels: Path) -> tuple[dict[str, dict[str, Any]], list[DamagedFile]]:
    """(name -> provenance of each label set that reads; the damaged ones)."""
    return sort_out(label_folders(labels), label_set_meta, folders=True)


def label_rows(folder: Path, provenance: dict[str, Any]) -> int:
    """How many rows label set ``folder`` holds: recorded in its provenance, else counted from its Arrow files'
    record batches (a DamagedFileError naming the set when one is not an Arrow stream)."""
    import pyarrow as pa

    for key in ("rows", "labels"):  # add_labels records rows; an Evol set stored before it did, its labels
        if isinstance(provenance.get(key), int) and not isinstance(provenance.get(key), bool):
            return provenance[key]
    rows = 0
    for file in data_files(folder):
        with named_damage(folder), pa.memory_map(str(file)) as source:
            rows += sum(batch.num_rows for batch in pa.ipc.open_stream(source))
    return rows
