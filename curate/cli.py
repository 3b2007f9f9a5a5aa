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


def _judge_backend(backend: str, base_url: str | None, model: str | None, concurrency: int):
    """A judge backend from CLI options (a context manager yielding the backend)."""
    import contextlib

    if backend == "openai":
        if not (base_url and model):
            raise typer.BadParameter("--backend openai needs --base-url and --model")
        from curate.backends import OpenAIBackend

        return contextlib.nullcontext(OpenAIBackend(base_url, model, concurrency=concurrency))
    if backend == "vllm":
        if not model:
            raise typer.BadParameter("--backend vllm needs --model (a local model folder)")
        from curate.backends import VLLMBackend

        return contextlib.nullcontext(VLLMBackend(model))
    if backend == "local":
        from curate.local import LocalServer

        @contextlib.contextmanager
        def served():
            with LocalServer() as server:
                yield server.backend()

        return served()
    raise typer.BadParameter(f"--backend must be openai, vllm or local, not {backend!r}")


@app.command("tag")
def tag_cmd(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    backend: str = typer.Option("openai", help="openai: any OpenAI-compatible server (--base-url, --model); "
                                "vllm: offline vLLM on a local model folder (--model); local: the bundled SmolLM2 server."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible base URL (backend openai)."),
    model: str | None = typer.Option(None, help="Model name (openai) or model folder (vllm)."),
    prompt: str = typer.Option("instag", help="Prompt name or path (default prompts/instag.md)."),
    concurrency: int = typer.Option(16, help="Concurrent requests (backend openai)."),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="Normalise tags_raw into column tags afterwards."),
) -> None:
    """Tag every user turn with intent tags (InsTag); write tags_raw, tags_raw_failure, and tags."""
    from curate import tags as instag
    from curate.workspace import Workspace

    ws = Workspace.open(workspace)
    with _judge_backend(backend, base_url, model, concurrency) as judge_backend:
        summary = instag.tag(ws, judge_backend, prompt=prompt)
    console.print(f"tagged {summary['rows']:,} rows ({summary['turns']:,} user turns, {summary['cached_calls']:,} cached); "
                  f"{summary['failed_rows']:,} row(s) failed (see column tags_raw_failure); cost ${summary['cost_usd']:.4f}")
    if normalize:
        norm = instag.normalize(ws)
        for line in norm.report_lines():
            console.print(f"  {escape(line)}")


@app.command("tags")
def tags_cmd(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    column: str = typer.Option("tags", help="Tag column to report on."),
    top: int = typer.Option(25, help="Rows of the frequency table."),
    seeds: int = typer.Option(10, help="Random selections to compare each selection against."),
    renormalize: bool = typer.Option(False, "--normalize", help="(Re)fit the normaliser on tags_raw first."),
    min_frequency: int = typer.Option(20, help="Normaliser: drop tags in fewer rows (scaled down below 10,000 rows)."),
    eps: float = typer.Option(0.05, help="Normaliser: DBSCAN cosine eps for semantic aggregation (0 = skip)."),
    min_support: int = typer.Option(40, help="Normaliser: FP-Growth min support in rows (0 = skip association)."),
) -> None:
    """Tag frequency table, tags per query, and each selection's tag coverage vs random selections."""
    from rich.table import Table

    from curate import tags as instag
    from curate.workspace import Workspace

    ws = Workspace.open(workspace)
    if renormalize:
        norm = instag.Normalizer(min_frequency=min_frequency or None, semantic=eps > 0, eps=eps or 0.05,
                                 association=min_support > 0, min_support=min_support or 40)
        instag.normalize(ws, norm, column=column)
        for line in norm.report_lines():
            console.print(f"  {escape(line)}")
    rows = ws.column(column)
    freq = instag.tag_frequency(rows)
    tagged = sum(1 for r in rows if r)
    console.print(f"{column}: {len(freq):,} distinct tags; {tagged:,} of {len(rows):,} rows tagged; "
                  f"{instag.tags_per_query(rows):.2f} tags per query")
    table = Table("tag", "rows", "share")
    for name, count in freq[:top]:
        table.add_row(escape(name), f"{count:,}", f"{count / max(tagged, 1):.1%}")
    console.print(table)
    for name in ws.selections:
        rep = instag.coverage_report(ws, name, tags_column=column, seeds=seeds)
        console.print(f"selection {escape(name)} ({rep['rows']:,} rows): coverage {rep['coverage']:.3f} vs random "
                      f"{rep['random_coverage_mean']:.3f} ± {rep['random_coverage_std']:.3f} ({seeds} seeds); "
                      f"{rep['tags_per_query']:.2f} tags per query")


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
