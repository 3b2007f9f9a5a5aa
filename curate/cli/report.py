"""Looking at a workspace: `curate info` and `curate report`."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.cli.common import (
    app,
    console,
)


@app.command()
def info(workspace: Path = typer.Argument(..., help="Workspace directory.")) -> None:
    """Show rows, formats, sources, and derived columns with their provenance."""
    from curate.report.views import print_info
    from curate.session import Workspace

    print_info(Workspace.open(workspace), console)


@app.command()
def report(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write (self-contained)."),
    selection: str | None = typer.Option(None, help="Selection to highlight in plots and samples "
                                         "(default: the most recent)."),
    samples: int = typer.Option(3, help="Rows kept and rows dropped to show."),
) -> None:
    """Write the curation report: one self-contained HTML page (pool, judges and cost, failures, selections, plots)."""
    from curate.report.views import build_report
    from curate.session import Workspace
    from curate.storage.files import writing

    with writing(out):  # a full disk names the file
        path = build_report(Workspace.open(workspace), out, selection=selection, samples=samples)
    console.print(f"wrote {path} ({path.stat().st_size / 1024:,.0f} KiB)")
