"""curate: a workbench for curating instruction-tuning data with LLM judges."""

from curate.errors import CurateError, InputError, WorkspaceError
from curate.evol import build_labels, load_labels, run_evol
from curate.pools import load
from curate.workspace import Selection, Workspace

__version__ = "0.1.0"

__all__ = ["build_labels", "load_labels", "run_evol", "CurateError", "InputError", "Selection", "Workspace", "WorkspaceError", "load", "__version__"]
