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


@app.command()
def embed(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    model: str | None = typer.Option(None, help="sentence-transformers model name or folder (default: the packaged all-MiniLM-L6-v2)."),
    text: str = typer.Option("instruction", help="What to embed: instruction (user turns), conversation, or response."),
    name: str = typer.Option("default", help="Name of the embedding set in the workspace."),
    batch_size: int = typer.Option(64, "--batch-size", help="Texts per forward pass."),
    device: str | None = typer.Option(None, help="cpu, cuda, ... (default: cuda when present)."),
) -> None:
    """Embed every row; rows embedded before with the same model and text come from the cache."""
    from curate.workspace import Workspace

    summary = Workspace.open(workspace).embed(model=model, text=text, name=name, batch_size=batch_size, device=device)
    console.print(f"embeddings {summary['name']!r}: {summary['rows']:,} rows, {summary['encoded']:,} encoded, "
                  f"{summary['reused']:,} from the cache ({summary['model']}, {summary['text']}, {summary['device']})")


@app.command("select")
def select_cmd(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    method: str = typer.Option("deita", help="deita, top_k, threshold, kcenter, kmeans, lift, random, dsir, exact, "
                                             "minhash, semantic (or any registered selector)."),
    name: str = typer.Option(..., help="Name of the selection to write."),
    budget: int | None = typer.Option(None, help="Rows to keep (deita, top_k, kcenter, kmeans, lift, random, dsir)."),
    max_cosine_similarity: float | None = typer.Option(None, "--max-cosine-similarity",
                                                       help="deita: admit a row iff its similarity to every admitted row is <= this (default 0.9); semantic: duplicate above this (default 0.95)."),
    sort_by: str | None = typer.Option(None, "--sort-by", help="Column or expression, e.g. 'complexity*quality' (the default)."),
    min_score: float | None = typer.Option(None, "--min-score", help="threshold: keep rows scoring at least this."),
    target: Path | None = typer.Option(None, help="dsir: file of target texts, one per line."),
    from_selection: str | None = typer.Option(None, "--from", help="Choose among this selection's kept rows."),
    param: list[str] = typer.Option([], "--param", help="Other selector parameters as KEY=VALUE (VALUE parsed as JSON when it can be)."),
) -> None:
    """Select rows with one method and store every row's decision and reason as a named selection."""
    from curate.workspace import Workspace

    params: dict = {}
    for item in param:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--param {item!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    for key, value in (("budget", budget), ("max_cosine_similarity", max_cosine_similarity), ("sort_by", sort_by),
                       ("min_score", min_score), ("target", str(target) if target else None)):
        if value is not None:
            params[key] = value
    ws = Workspace.open(workspace)
    sel = ws.select(method=method, name=name, input_selection=from_selection, **params)
    counts = ", ".join(f"{k} {v:,}" for k, v in sel.decisions().items())
    console.print(f"selection {name!r} ({method}): {len(sel):,} kept; {counts}")


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
