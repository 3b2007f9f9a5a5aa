"""curate: a workbench for curating instruction-tuning data with LLM judges."""

from curate.errors import CurateError, InputError, WorkspaceError
from curate.pools import load
from curate.scorers import Scorer, distil, score_workspace
from curate.workspace import Selection, Workspace

__version__ = "0.1.0"

__all__ = ["CurateError", "InputError", "Selection", "Workspace", "WorkspaceError", "load", "Scorer", "distil", "score_workspace", "__version__"]
