"""curate: a workbench for curating instruction-tuning data with LLM judges."""

from curate.errors import CurateError, InputError, WorkspaceError
from curate.pools import load
from curate.select import SELECTORS, admit, register
from curate.workspace import Selection, Workspace

__version__ = "0.1.0"

__all__ = ["CurateError", "InputError", "SELECTORS", "Selection", "Workspace", "WorkspaceError", "admit", "load", "register",
           "__version__"]
