"""The `curate` command line: mirrors the Python API, one command per step."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from curate.errors import CurateError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Curate instruction-tuning data with LLM judges, tags and diverse selection.")
console = Console()
err_console = Console(stderr=True)

SAMPLE = Path(__file__).parent / "data" / "sample.jsonl"


def sample_path() -> Path:
    """The small pool that ships with the package (hand-written, mixed shapes)."""
    return SAMPLE


@app.command()
def load(
    source: str = typer.Argument(..., help="JSONL/JSON/Parquet/CSV file, datasets folder, Hub name, or 'sample'."),
    workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace directory (created if new)."),
    format: str = typer.Option("auto", help="auto|alpaca|sharegpt|messages|prompt_completion|qa"),
    on_error: str = typer.Option("raise", "--on-error", help="raise: stop at the first bad record; "
                                 "skip: leave it out and list it in WORKSPACE/rejects.jsonl"),
    mapping: str | None = typer.Option(None, help='JSON field mapping, e.g. \'{"instruction": "query"}\''),
) -> None:
    """Load a pool into a workspace."""
    from curate.workspace import Workspace

    src = str(sample_path()) if source == "sample" else source
    ws = Workspace(workspace)
    summary = ws.load(src, format=format, on_error=on_error, mapping=json.loads(mapping) if mapping else None)
    fmts = ", ".join(f"{k} {v:,}" for k, v in summary["formats"].items())
    console.print(f"loaded {summary['rows_added']:,} rows from {source} ({fmts}); "
                  f"{summary['already_present']:,} already present")
    if summary["empty_responses"]:
        console.print(f"[yellow]{summary['empty_responses']:,} row(s) have an empty response[/]")
    if summary["rejects"]:
        console.print(f"[yellow]{summary['rejects']} record(s) left out; reasons in {summary['rejects_file']}[/]")


@app.command()
def info(workspace: Path = typer.Argument(..., help="Workspace directory.")) -> None:
    """Show rows, formats, sources, and derived columns with their provenance."""
    from curate.report import print_info
    from curate.workspace import Workspace

    print_info(Workspace.open(workspace), console)


@app.command()
def export(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    out: Path = typer.Option(..., "--out", "-o", help=".jsonl, .parquet, or a folder (datasets save_to_disk)."),
    selection: str | None = typer.Option(None, help="Export only this selection's kept rows."),
) -> None:
    """Export the pool (or a selection) with its derived columns."""
    from curate.workspace import Workspace

    ws = Workspace.open(workspace)
    path = ws.export(out, selection=selection)
    n = len(ws.selection(selection)) if selection else len(ws)
    console.print(f"wrote {n:,} rows to {path}")


@app.command()
def run(
    source: str = typer.Argument("sample", help="Pool to curate ('sample' = the bundled sample)."),
    out: Path = typer.Option(Path("curate-run"), "--out", "-o", help="Output directory (workspace + exports)."),
    budget: int = typer.Option(20, help="Rows to select."),
) -> None:
    """The main job, end to end: load -> ... -> export."""
    from curate.pipeline import run_pipeline

    run_pipeline(str(sample_path()) if source == "sample" else source, out=out, budget=budget, console=console)


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


@app.command("score-scorer")
def score_scorer(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    scorer: str = typer.Option("default", "--scorer", help="Saved scorer folder, or 'default' for the shipped "
                               "complexity and quality scorers (offline, DEITA 1-6 scale)."),
    column: str | None = typer.Option(None, help="Column to write (default: the scorer's name)."),
) -> None:
    """Score rows with a trained scorer instead of an LLM judge (writes <column> and <column>_failure)."""
    from curate.scorers import score_with_scorer_cli

    score_with_scorer_cli(workspace, scorer, column=column, console=console)


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


def main() -> None:
    """Entry point: CurateError becomes one clean line on stderr and exit code 1, never a traceback."""
    try:
        app(standalone_mode=False)
    except CurateError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished work is saved in the workspace and cache")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click's own usage errors arrive here too
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
