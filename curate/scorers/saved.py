"""The on-disk format of a saved scorer folder: ``scorer.json`` (format version, config, metadata, metrics)
beside one safetensors file of weights. Every kind reads and writes its folder through these functions, so
a damaged, hand-edited or newer-format folder gives one :class:`~curate.errors.ScorerError` naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import ScorerError

FORMAT_VERSION = 1


def json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_scorer_json(out: Path, config: dict[str, Any], metadata: dict[str, Any], metrics: dict[str, Any]) -> None:
    """``out/scorer.json``: the format version, the curate version, a scorer's config, metadata and metrics."""
    from curate import __version__

    doc = {"format_version": FORMAT_VERSION, "curate_version": __version__, **config, "metadata": metadata,
           "metrics": metrics}
    (out / "scorer.json").write_text(json.dumps(doc, indent=2, default=json_default) + "\n")


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


def read_tensors(file: Path) -> dict[str, np.ndarray]:
    """A safetensors file as numpy arrays; a damaged or truncated file is a :class:`ScorerError` naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(file)))
    except (OSError, ValueError, SafetensorError) as exc:
        raise ScorerError(f"{file}: not readable weights ({type(exc).__name__}: {exc})") from None
