"""The main job, `curate run`: every step of a curation session in order, resumable."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from curate.report import print_info
from curate.workspace import Workspace


def run_pipeline(source: str, out: Path, budget: int, console: Console | None = None) -> Workspace:
    """Load ``source`` into ``out/workspace`` and run the curation steps (grown issue by issue)."""
    console = console or Console()
    ws = Workspace(Path(out) / "workspace")
    summary = ws.load(source, on_error="skip")
    console.print(f"loaded {summary['rows_added']:,} new rows ({summary['already_present']:,} already present)")
    print_info(ws, console)
    return ws
