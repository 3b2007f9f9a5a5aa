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
def score(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    judge: str = typer.Option(..., "--judge", "-j", help="Built-in judge (complexity, quality, alpagasus), "
                              "a prompt name found in --prompt-dir, or a prompt file path."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint, e.g. "
                                        "https://api.openai.com/v1 or http://127.0.0.1:8000/v1."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model name (openai) or model folder (vllm)."),
    backend: str | None = typer.Option(None, "--backend", help="openai | vllm | local (default: openai with "
                                       "--base-url, else local = SmolLM2 on an embedded vLLM server)."),
    concurrency: int = typer.Option(16, help="Requests in flight at once."),
    rpm: int | None = typer.Option(None, "--rpm", help="Requests-per-minute limit."),
    tpm: int | None = typer.Option(None, "--tpm", help="Tokens-per-minute limit (estimated before sending)."),
    max_cost: float | None = typer.Option(None, "--max-cost", help="Hard cap in USD: stop before exceeding it."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the key."),
    timeout: float = typer.Option(60.0, help="Per-request timeout in seconds."),
    max_retries: int = typer.Option(6, "--max-retries", help="Retries on 429/5xx/timeouts/bad bodies."),
    prompt_dir: list[Path] = typer.Option([], "--prompt-dir", help="Folder of prompt files that override built-ins."),
    min_digit_mass: float = typer.Option(0.5, "--min-digit-mass", help="Digit probability mass needed to "
                                         "renormalise when some score digits are missing from the logprobs."),
    column: str | None = typer.Option(None, "--column", help="Column name (default: the prompt's name)."),
    limit: int | None = typer.Option(None, "--limit", help="Score only the first N rows of the pool."),
) -> None:
    """Score rows with an LLM judge; writes <judge>, <judge>_failure and provenance. Cached and resumable."""
    from curate.judges import Judge, missing_report
    from curate.judges import score as run_score
    from curate.workspace import Workspace

    ws = Workspace.open(workspace)
    ids = ws.ids[:limit] if limit else None
    the_judge = Judge(judge, column=column, prompt_dirs=[str(d) for d in prompt_dir], min_digit_mass=min_digit_mass)
    kind = backend or ("openai" if base_url else "local")
    if kind == "local":
        from curate.local import LocalServer

        err_console.print("starting the local vLLM server (SmolLM2-135M-Instruct) ...")
        with LocalServer() as server:
            summary = run_score(ws, the_judge, server.backend(concurrency=concurrency, timeout=timeout,
                                                             max_retries=max_retries), ids=ids)
    elif kind == "vllm":
        from curate.backends import VLLMBackend

        engine = VLLMBackend(model)
        try:
            summary = run_score(ws, the_judge, engine, ids=ids)
        finally:
            engine.close()
    elif kind == "openai":
        from curate.backends import OpenAIBackend

        if not base_url and not model:
            raise typer.BadParameter("--backend openai needs --model (and --base-url for non-OpenAI servers)")
        client = OpenAIBackend(base_url, model or "", api_key_env=api_key_env, concurrency=concurrency, rpm=rpm,
                               tpm=tpm, timeout=timeout, max_retries=max_retries, max_cost=max_cost)
        summary = run_score(ws, the_judge, client, ids=ids)
    else:
        raise typer.BadParameter(f"--backend {kind!r}: use openai, vllm or local")
    report = missing_report(ws, the_judge.column)
    console.print(f"{the_judge.column}: {summary['scored_rows']:,} rows scored, {summary['failed_rows']:,} failed "
                  f"(every failure has a reason; unexplained missing: {report['unexplained']}); "
                  f"{summary['cached_requests']:,} cached requests; tokens {summary['tokens']['prompt']:,} in / "
                  f"{summary['tokens']['completion']:,} out; cost ${summary['cost_usd']:.4f}; {summary['seconds']}s")
    reasons = [r for r in ws.column(f"{the_judge.column}_failure", ids) if r]
    if reasons:
        from collections import Counter

        for reason, n in Counter(r[:120] for r in reasons).most_common(3):
            console.print(f"  [yellow]{n} x[/] {escape(reason)}")


@app.command("serve-local")
def serve_local(
    port: int | None = typer.Option(None, help="Port on 127.0.0.1 (default: a free one)."),
) -> None:
    """Serve SmolLM2-135M-Instruct with vLLM on 127.0.0.1 (OpenAI-compatible) until Ctrl-C or SIGTERM."""
    import signal
    import time

    from curate.local import LocalServer

    # SIGTERM (and SIGINT, even where a parent shell ignored it) unwind the `with`, which stops the server by PID
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with LocalServer(port=port) as server:
        console.print(f"serving {server.model} at {server.base_url} (pid {server.pid}); Ctrl-C stops it")
        console.print(f"  curate score WS --judge quality --base-url {server.base_url} --model {server.model}")
        try:
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


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
