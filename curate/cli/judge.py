"""LLM judges and trained scorers as columns: `curate score`; the local judge server."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from curate.cli.common import (
    _api_key_env_opt,
    _backend_opt,
    _base_url_opt,
    _concurrency_opt,
    _judge_backend,
    _max_cost_opt,
    _model_opt,
    _rpm_opt,
    _tpm_opt,
    app,
    console,
)
from curate.errors import CurateError


@app.command()
def score(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    judge: str | None = typer.Option(None, "--judge", "-j", help="Built-in judge (complexity, quality, alpagasus), "
                                     "a prompt name found in --prompt-dir, or a prompt file path."),
    scorer: str | None = typer.Option(None, "--scorer", help="Instead of an LLM judge: a saved scorer folder, or "
                                      "'default' for the shipped complexity and quality scorers (offline)."),
    base_url: str | None = _base_url_opt(),
    model: str | None = _model_opt(),
    backend: str | None = _backend_opt(),
    concurrency: int = _concurrency_opt(),
    rpm: int | None = _rpm_opt(),
    tpm: int | None = _tpm_opt(),
    max_cost: float | None = _max_cost_opt(),
    api_key_env: str = _api_key_env_opt(),
    timeout: float = typer.Option(60.0, help="Per-request timeout in seconds."),
    max_retries: int = typer.Option(6, "--max-retries", help="Retries on 429/5xx/timeouts/bad bodies."),
    prompt_dir: list[Path] = typer.Option([], "--prompt-dir", help="Folder of prompt files that override built-ins."),
    min_digit_mass: float = typer.Option(0.5, "--min-digit-mass", help="Digit probability mass needed to "
                                         "renormalise when some score digits are missing from the logprobs."),
    column: str | None = typer.Option(None, "--column", help="Column name (default: the prompt's name)."),
    limit: int | None = typer.Option(None, "--limit", help="Score only the first N rows of the pool."),
) -> None:
    """Score rows with an LLM judge or a trained scorer (--scorer); writes <column>, <column>_failure and provenance.

    Judge calls are cached and resumable; a killed run re-sends no finished request.
    """
    if (judge is None) == (scorer is None):
        raise typer.BadParameter("give exactly one of --judge NAME|PATH and --scorer DIR|default")
    if scorer is not None:
        from curate.scorers import score_with_scorer_cli

        score_with_scorer_cli(workspace, scorer, column=column, console=console)
        return
    if limit is not None and limit < 1:
        raise typer.BadParameter(f"must be >= 1 (got {limit}); --limit N scores the first N rows",
                                 param_hint="'--limit'")
    from curate.llm.backends import format_usd
    from curate.llm.judges import Judge, missing_report
    from curate.llm.judges import score as run_score
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    ids = ws.ids[:limit] if limit is not None else None
    the_judge = Judge(judge, column=column, prompt_dirs=[str(d) for d in prompt_dir], min_digit_mass=min_digit_mass)
    with _judge_backend(backend, base_url, model, concurrency=concurrency, api_key_env=api_key_env, rpm=rpm, tpm=tpm,
                        max_cost=max_cost, timeout=timeout, max_retries=max_retries) as llm:
        summary = run_score(ws, the_judge, llm, ids=ids)
        spent = getattr(llm, "spent_usd", 0.0)
    report = missing_report(ws, the_judge.column)
    cost = "unknown (no price for this model)" if summary["cost_usd"] is None else format_usd(summary["cost_usd"])
    console.print(f"{the_judge.column}: {summary['scored_rows']:,} rows scored, {summary['failed_rows']:,} failed "
                  f"(every failure has a reason; unexplained missing: {report['unexplained']}); "
                  f"{summary['cached_requests']:,} cached requests; tokens {summary['tokens']['prompt']:,} in / "
                  f"{summary['tokens']['completion']:,} out; cost {cost}; {summary['seconds']}s")
    reasons = [r for r in ws.column(f"{the_judge.column}_failure", ids) if r]
    if reasons:
        from collections import Counter

        for reason, n in Counter(r[:120] for r in reasons).most_common(3):
            console.print(f"  [yellow]{n} x[/] {escape(reason)}")
    if summary["rows_not_sent_max_cost"]:  # the scored rows are saved; the unsent ones must not pass silently
        raise CurateError(f"{summary['rows_not_sent_max_cost']:,} rows not sent: max_cost {format_usd(max_cost)} "
                          f"reached (spent {format_usd(spent)}); re-run with a larger --max-cost "
                          f"to score them (answered requests come from the cache)")


@app.command("serve-local")
def serve_local(
    port: int | None = typer.Option(None, help="Port on 127.0.0.1 (default: a free one)."),
) -> None:
    """Serve SmolLM2-135M-Instruct with vLLM on 127.0.0.1 (OpenAI-compatible) until Ctrl-C or SIGTERM."""
    import signal
    import time

    from curate.llm.local import LocalServer

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
