"""curate: a workbench for curating instruction-tuning data with LLM judges."""

from curate.llm.backends import OpenAIBackend, VLLMBackend
from curate.errors import CurateError, InputError, WorkspaceError
from curate.evol import build_labels, load_labels, run_evol
from curate.llm.judges import Judge, run_prompt
from curate.llm.local import LocalServer
from curate.pools import load
from curate.report.views import build_report
from curate.scorers import Scorer, distil, score_workspace
from curate.select import SELECTORS, admit
from curate.tags import Normalizer, TagClassifier
from curate.session import Workspace
from curate.storage.selection import Selection

__version__ = "0.1.0"

__all__ = ["SELECTORS", "CurateError", "InputError", "Judge", "LocalServer", "Normalizer", "OpenAIBackend", "Scorer",
           "Selection", "TagClassifier", "VLLMBackend", "Workspace", "WorkspaceError", "admit", "build_labels",
           "build_report", "distil", "load", "load_labels", "run_evol", "run_prompt", "score_workspace", "__version__"]
