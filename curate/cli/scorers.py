"""Trained scorers: train-scorer, distil."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.cli.common import (
    app,
    console,
)


@app.command("train-scorer")
def train_scorer(
    workspace: Path = typer.Argument(..., help="Workspace directory holding the labels."),
    target: str = typer.Option(..., "--target", help="Numeric column with judge labels to imitate."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the scorer in (scorer.json + head.safetensors)."),
    kind: str = typer.Option("embedding", help="Scorer kind: embedding (MiniLM + linear head)."),
    head: str = typer.Option("ridge", help="ridge (regression) or ordinal (expected label of a multinomial head)."),
    inputs: str | None = typer.Option(None, help="Comma-separated texts to read: instruction[,response]. "
                                      "Default: instruction+response when the target name contains 'quality'."),
    folds: int = typer.Option(5, "--folds", "-k", help="K for K-fold agreement on the training part."),
    holdout: float = typer.Option(0.2, help="Share of rows held out (split before any fitting)."),
    seed: int = typer.Option(0, help="Seed for the splits."),
) -> None:
    """Train a small scorer on a judge's labels; print K-fold and held-out agreement beside baselines."""
    from curate.scorers import train_scorer_cli

    train_scorer_cli(workspace, target, out, kind=kind, head=head, k=folds, holdout=holdout, seed=seed,
                     inputs=inputs.split(",") if inputs else None, console=console)


@app.command("distil")
def distil_command(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    label_column: str = typer.Option(..., "--label-column", help="Existing judge column used as the labeller "
                                     "(the loop reads only the rows it asks for, and counts them)."),
    n: int = typer.Option(200, "-n", help="Random rows labelled before the first fit."),
    rounds: int = typer.Option(1, help="Rounds of labelling the least-certain rows."),
    uncertain_k: int = typer.Option(50, "--uncertain-k", help="Rows labelled per round (largest bootstrap disagreement)."),
    holdout_n: int = typer.Option(100, "--holdout-n", help="Random labelled rows kept out of training, for agreement."),
    column: str | None = typer.Option(None, help="Column for the scorer's predictions (default LABEL_distilled)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also save the distilled scorer here."),
) -> None:
    """Distil a judge column into a small scorer; report labels spent and held-out agreement."""
    from curate.scorers import distil_cli

    distil_cli(workspace, label_column, n=n, rounds=rounds, uncertain_k=uncertain_k, holdout_n=holdout_n,
               column=column, out=out, console=console)

