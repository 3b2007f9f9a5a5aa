"""The on-disk format of a saved scorer folder: ``scorer.json`` (format version, config, metadata, metrics)
beside one safetensors file of weights. Every kind reads and writes its folder through these functions, so
a damaged, hand-edited or newer-format folder gives one :class:`~curate.errors.ScorerError` naming it."""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from curate.errors import ScorerError, ScorerFolderError

FORMAT_VERSION = 1
SAVE_ID = "save_id"  # in scorer.json and in its weights' metadata: the two files of one save
LOAD_ATTEMPTS = 5    # reads of a folder that saves keep replacing before a load gives up


class ReadDuringSave(ScorerError):
    """scorer.json and the weights beside it were written by two saves: the folder was saved again while read."""


def json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float (a figure that could not be computed) as None, numpy scalars and
    arrays as Python ones: JSON has no NaN, and a strict parser refuses Python's bare ``NaN`` token."""
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [finite_or_null(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


SCORER_FILES = re.compile(r"scorer\.json|[\w.-]+\.safetensors")  # what a saved scorer's folder holds


def check_scorer_folder(out: str | os.PathLike) -> None:
    """Refuse a folder a scorer cannot be saved to: a file, a folder holding other files than a saved scorer's
    (saving replaces the folder whole), or one on a read-only disk (an OSError naming it). Checked before a fit, so no
    training is lost to a bad ``--out``."""
    from curate.storage.write_errors import check_writable

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ScorerFolderError(f"{out}: a file, where a scorer's folder is to be written")
    other = sorted(p.name for p in out.iterdir() if not SCORER_FILES.fullmatch(p.name)) if out.is_dir() else []
    if other:
        raise ScorerFolderError(f"{out}: holds other files than a saved scorer ({', '.join(other[:3])}"
                          f"{', ...' if len(other) > 3 else ''}); a scorer replaces its folder whole: name a new or "
                          "empty folder, or an earlier scorer's")
    check_writable(out)


def save_scorer_folder(out: str | os.PathLike, weights_file: str, weights: dict[str, np.ndarray],
                       config: dict[str, Any], metadata: dict[str, Any], metrics: dict[str, Any]) -> Path:
    """Write a scorer's folder whole: ``weights_file`` and ``scorer.json`` into a temporary sibling, then swapped in.
    Written in place, a kill between the two files left the new weights beside the old ``scorer.json``: neither
    scorer. Saves to one folder, from any threads or processes, take turns (under a lock beside it, removed after)."""
    from safetensors.numpy import save_file

    from curate.storage.files import passing_lock
    from curate.storage.folders import folder_written_whole

    out = Path(out).resolve()  # "--out ." is the folder by its name, and its lock beside it, never inside
    out.parent.mkdir(parents=True, exist_ok=True)
    with passing_lock(out.parent / f".{out.name}.save.lock"):  # removed after: none left in the user's folder
        check_scorer_folder(out)
        with folder_written_whole(out, last="scorer.json") as tmp:
            save_id = uuid.uuid4().hex
            save_file(weights, str(tmp / weights_file), metadata={SAVE_ID: save_id})
            write_scorer_json(tmp, {**config, SAVE_ID: save_id}, metadata, metrics)
    return out


Read = TypeVar("Read")


def read_whole_save(directory: Path, read: Callable[[Path], Read]) -> Read:
    """``read(folder)`` of the saved folder ``directory`` (or the earlier folder a killed save left aside), read again
    when a save replaced it meanwhile: scorer.json of one save with the weights of the next was a scorer no save
    wrote (a load beside a loop of saves got one in ~80). The weights' save id tells (:func:`read_tensors`); for a
    folder saved before ids, a folder replaced (another inode) or removed while read does."""
    from curate.storage.folders import folder_identity, whole_folder

    for attempt in range(LOAD_ATTEMPTS):
        path = whole_folder(directory)  # a save killed between its two renames left it aside, whole
        before = folder_identity(path)
        try:
            return read(path)
        except ReadDuringSave as exc:
            mixed = exc
        except (OSError, ScorerError):
            if attempt + 1 < LOAD_ATTEMPTS and folder_identity(directory) != before:
                continue  # replaced, moved aside by a save or removed while read (or read aside): read again
            raise
    raise ScorerError(f"{mixed}: {LOAD_ATTEMPTS} reads found the two files of different saves (one copied in from "
                      "another folder by hand?); save the scorer again")


def write_scorer_json(out: Path, config: dict[str, Any], metadata: dict[str, Any], metrics: dict[str, Any]) -> None:
    """``out/scorer.json``: the format version, the curate version, a scorer's config, metadata and metrics."""
    from curate import __version__

    doc = {"format_version": FORMAT_VERSION, "curate_version": __version__, **config, "metadata": metadata,
           "metrics": metrics}
    (out / "scorer.json").write_text(json.dumps(finite_or_null(doc), indent=2, default=json_default, allow_nan=False)
                                     + "\n")


def read_scorer_json(path: Path) -> dict[str, Any]:
    """``path/scorer.json`` as a dict, refused unless it is a JSON object of this format version."""
    try:
        doc = json.loads((path / "scorer.json").read_text())
    except (OSError, ValueError) as exc:
        raise ScorerError(f"{path}: scorer.json is not a scorer's JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict):
        raise ScorerError(f"{path}: scorer.json is not a scorer's JSON (a {type(doc).__name__}, not an object)")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ScorerError(f"{path}: scorer format {doc.get('format_version')!r} not supported (want {FORMAT_VERSION}); "
                          "a newer curate saved it, or the file was edited")
    return doc


def read_tensors(file: Path, save_id: str | None = None) -> dict[str, np.ndarray]:
    """A safetensors file as numpy arrays; a damaged or truncated file is a :class:`ScorerError` naming it.
    ``save_id``: scorer.json's; weights of another save raise :class:`ReadDuringSave`."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="numpy") as weights:
            theirs = (weights.metadata() or {}).get(SAVE_ID)
            tensors = {name: weights.get_tensor(name) for name in weights.keys()}  # noqa: SIM118 (no __iter__)
    except (OSError, ValueError, SafetensorError) as exc:
        raise ScorerError(f"{file}: not readable weights ({type(exc).__name__}: {exc})") from None
    if save_id is not None and theirs is not None and theirs != save_id:
        raise ReadDuringSave(f"{file}: weights of another save than scorer.json's (saved again while read)")
    return tensors


KINDS: dict[str, Any] = {}  # scorer.json "kind" -> the Scorer subclass reading it (each fine-tuned kind adds itself)


def load_folder(path: Path, cls: type, ridge: type) -> Any:
    """The scorer saved in folder ``path``, read by the class of its ``kind`` (``ridge``: the embedding head's, for
    none), which must be ``cls`` or a subclass; a damaged or hand-edited ``scorer.json`` is a ScorerError naming it."""
    if not (path / "scorer.json").is_file():
        from curate.scorers.defaults import WEIGHTS_DIR

        shipped = ", ".join(sorted(p.parent.name for p in WEIGHTS_DIR.glob("*/scorer.json")))
        if path.name == "scorer.json" and path.is_file():  # the file inside a scorer folder
            raise ScorerError(f"{path}: the file inside a scorer folder: pass the folder holding scorer.json, "
                              f"{path.parent}")
        if path.is_file():
            raise ScorerError(f"{path}: a file, not a scorer folder (a folder holding scorer.json); shipped: {shipped}")
        raise ScorerError(f"{path}: not a saved scorer (no scorer.json); shipped: {shipped}")
    doc = read_scorer_json(path)
    kind = doc.get("kind")  # absent: the ridge/ordinal head on embeddings
    if kind == "embedding":  # what scorers saved before the fine-tuned kinds (2026-12) called the ridge kind
        kind = None
    if kind is not None and kind not in KINDS:
        raise ScorerError(f"{path}: scorer kind {kind!r} unknown to this curate (it reads {sorted(KINDS)} and ridge)")
    reader = KINDS[kind] if kind is not None else ridge
    if not issubclass(reader, cls):
        raise ScorerError(f"{path}: a saved {kind or 'ridge'} scorer, not a {getattr(cls, 'kind', 'ridge')} one")
    try:
        return reader._from_saved(path, doc)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a hand-edited or damaged scorer.json
        raise ScorerError(f"{path}: not a readable scorer ({type(exc).__name__}: {exc})") from None
    except ScorerError as exc:  # a saved setting the constructor refuses
        raise exc if str(path) in str(exc) else ScorerError(f"{path}: {exc}") from None
