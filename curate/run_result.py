"""``RunResult``: what `curate run` (``curate.pipeline.run_pipeline``) produced, shown in a notebook and a REPL."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.session import Workspace


@dataclass
class RunResult:
    """What `curate run` produced: the workspace, the selection, the files, each step's result and time."""

    workspace: Workspace
    selection: str
    outputs: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)  # what OUT/run.json holds (curate.run_record)

    def _repr_html_(self) -> str:
        from curate.report.views import run_result_html

        return run_result_html(len(self.workspace.selection(self.selection)), self.outputs, self.timings)

    def __repr__(self) -> str:  # the dataclass's dumped every step's result and 16-digit timings (2.6 KB)
        from curate.report.views import run_result_text

        return run_result_text(self.workspace.path, self.selection, len(self.workspace.selection(self.selection)),
                               self.outputs, self.timings)
