"""`curate signal`: token-level model signals (perplexity, IFD, learnability) from a small causal LM."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.cli.common import app, console


@app.command("signal")
def signal_cmd(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    kind: str = typer.Option(..., "--kind", help="ifd | perplexity | learnability"),
    model: Path | None = typer.Option(None, "--model", help="A Hugging Face causal LM folder "
                                      "(default: the packaged SmolLM2-135M-Instruct)."),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: cuda when present)."),
    reference: str | None = typer.Option(None, "--reference", help="learnability: the selection whose kept rows "
                                         "the reference model is tuned on."),
) -> None:
    """Score every response turn with a small LM: perplexity, IFD (loss given the instruction / loss alone),
    or learnability (base loss minus a briefly tuned reference's). Cached and resumable."""
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    result = ws.signal(kind, model=model, device=device, reference_selection=reference)
    prov = result.provenance
    console.print(f"{result.column}: {result.computed:,} computed, {result.skipped:,} reused, "
                  f"{result.failed:,} failed ({result.seconds:.1f} s)")
    if kind == "ifd" and prov.get("rows_with_ifd_at_least_one") is not None:
        console.print(f"  rows with IFD >= 1 (the instruction does not help): {prov['rows_with_ifd_at_least_one']:,}")
