"""curate: a workbench for curating instruction-tuning data with LLM judges.

The names a notebook user types; everything else is namespaced (``curate.select``, ``curate.scorers``,
``curate.tags``, ``curate.evol``, ``curate.report``...). Names and subpackages are imported on first use
(``curate.scorers`` after a bare ``import curate`` too), so ``import curate`` is fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from curate.errors import CurateError, CurateWarning, InputError, WorkspaceError

__version__ = "0.2.0"

# name -> module that defines it (imported on first access)
_LAZY = {
    "Workspace": "curate.session",
    "Selection": "curate.storage.selection",
    "Judge": "curate.llm.judges",
    "Scorer": "curate.scorers",
    "OpenAIBackend": "curate.llm.backends",
    "VLLMBackend": "curate.llm.backends",
    "LocalServer": "curate.llm.local",
    "load": "curate.pools",
    "run_pipeline": "curate.pipeline",
}

# subpackages, imported on first access as ``curate.<name>``
SUBPACKAGES = ("cli", "embed", "evol", "llm", "pools", "report", "scale", "scorers", "select", "signals", "storage",
               "tags", "train")

__all__ = ["CurateError", "CurateWarning", "InputError", "Judge", "LocalServer", "OpenAIBackend", "Scorer", "Selection",
           "VLLMBackend", "Workspace", "WorkspaceError", "__version__", "load", "run_pipeline"]

if TYPE_CHECKING:
    from curate.llm.backends import OpenAIBackend, VLLMBackend
    from curate.llm.judges import Judge
    from curate.llm.local import LocalServer
    from curate.pipeline import run_pipeline
    from curate.pools import load
    from curate.scorers import Scorer
    from curate.session import Workspace
    from curate.storage.selection import Selection


def __getattr__(name: str) -> Any:
    if name in SUBPACKAGES:
        return importlib.import_module(f"curate.{name}")  # the import sets it on this module too
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'curate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, *SUBPACKAGES])
