"""LLM judges and trained scorers as columns: `curate score`; the local judge server."""

from __future__ import annotations

import copy
import sys
from collections import Counter
from pathlib import Path
from typing import Any

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
from curate.codes import FailureCode
from curate.defaults import BACKEND, JUDGE
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
    timeout: float = typer.Option(BACKEND.timeout_s, help="Per-request timeout in seconds."),
    max_retries: int = typer.Option(BACKEND.max_retries, "--max-retries", help="Retries on 429/5xx/timeouts/bad bodies."),
    prompt_dir: list[Path] = typer.Option([], "--prompt-dir", help="Folder of prompt files that override built-ins."),
    min_digit_mass: float = typer.Option(JUDGE.min_digit_mass, "--min-digit-mass", help="Digit probability mass "
                                         "needed to renormalise when some score digits are missing from the logprobs."),
    column: str | None = typer.Option(None, "--column", help="Column name (default: the prompt's or scorer's name)."),
    limit: int | None = typer.Option(None, "--limit", help="Score only the first N rows of the pool."),
    retry_failed: bool = typer.Option(True, "--retry-failed/--keep-failed", help="Send again the turns an earlier "
                                      "run left without a score for a transient reason (429/5xx/timeouts, max_cost)."),
) -> None:
    """Score rows with an LLM judge or a trained scorer (--scorer); writes <column>, <column>_failure and provenance.

    Rows already scored under the same judge, model and parameters are reused; judge calls are cached and
    resumable, so a killed run re-sends no finished request.
    """
    if (judge is None) == (scorer is None):
        raise typer.BadParameter("give exactly one of --judge NAME|PATH and --scorer DIR|default")
    if limit is not None and limit < 1:
        raise typer.BadParameter(f"must be >= 1 (got {limit}); --limit N scores the first N rows",
                                 param_hint="'--limit'")
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    ids = ws.ids[:limit] if limit is not None else None
    if scorer is not None:
        for step in _scorers(scorer, column):
            _print_result(ws, ws.apply(step, ids, retry_failed=retry_failed), ids)
        return
    from curate.llm.backends import format_usd
    from curate.llm.judges import Judge

    the_judge = Judge(judge, column=column, prompt_dirs=[str(d) for d in prompt_dir], min_digit_mass=min_digit_mass)
    with _judge_backend(backend, base_url, model, concurrency=concurrency, api_key_env=api_key_env, rpm=rpm, tpm=tpm,
                        max_cost=max_cost, timeout=timeout, max_retries=max_retries) as llm:
        result = ws.apply(the_judge.with_backend(llm), ids, retry_failed=retry_failed)
        spent = getattr(llm, "spent_usd", 0.0)
    failures = _print_result(ws, result, ids)
    unsent = sum(any(f.code is FailureCode.BUDGET for f in fails) for fails in failures)
    if unsent:  # the scored rows are saved; the unsent ones must not pass silently
        raise CurateError(f"{unsent:,} rows not sent: max_cost {format_usd(max_cost or 0.0)} reached (spent "
                          f"{format_usd(spent)}); re-run with a larger --max-cost to score them (answered requests "
                          f"come from the cache)")


def _scorers(spec: str, column: str | None) -> list[Any]:
    """The trained scorers ``--scorer`` names: ``default`` (complexity and quality) or a saved folder."""
    from curate.scorers import Scorer, load_default

    if spec != "default":
        step = Scorer.load(spec)
        if column:
            if hasattr(step, "with_column"):
                return [step.with_column(column)]
            step = copy.copy(step)
            step.name = column  # a Scorer writes the column of its name
        return [step]
    if column:
        raise CurateError("--column names one column; with --scorer default both complexity and quality are written")
    return [load_default(name) for name in ("complexity", "quality")]


def _print_result(ws, result, ids: list[str] | None) -> list[list[Any]]:
    """One summary line of an ApplyResult (+ the run's tokens and cost for a judge), then the commonest
    failures; returns the failures of the rows asked for."""
    line = (f"{result.column}: {result.rows:,} rows — computed {result.computed:,}, reused {result.skipped:,}, "
            f"failed {result.failed:,}")
    prov = result.provenance
    if result.computed and prov.get("kind") == "judge":
        from curate.llm.backends import format_usd

        cost = prov.get("cost_usd")
        cost_text = "cost unknown (no price for this model)" if cost is None else f"cost {format_usd(cost)}"
        tokens = prov.get("tokens") or {}
        line += (f"; {prov.get('cached_requests', 0):,} cached requests; tokens {tokens.get('prompt', 0):,} in / "
                 f"{tokens.get('completion', 0):,} out; {cost_text}")
    console.print(f"{line}; {result.seconds}s", soft_wrap=True, highlight=False)
    failures = ws.failures(result.column, ids)
    common = Counter((f.code.value, f.message[:120]) for fails in failures for f in fails)
    for (code, message), n in common.most_common(3):
        console.print(f"  [yellow]{n} x[/] {code}: {escape(message)}", soft_wrap=True, highlight=False)
    return failures


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
