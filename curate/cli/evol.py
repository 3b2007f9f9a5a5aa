"""`curate evol`: Evol-Instruct / Evol-Quality labels."""

from __future__ import annotations

from pathlib import Path

import typer

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


@app.command()
def evol(
    workspace: Path = typer.Argument(..., help="Workspace directory (its pool gives the seeds)."),
    kind: str = typer.Option("complexity", "--kind", help="complexity: evolve instructions (Evol-Instruct); "
                             "quality: rewrite responses (Evol-Quality)."),
    seeds: int = typer.Option(20, "--seeds", help="Seed rows: a seeded random sample of the pool."),
    steps: int = typer.Option(5, "--steps", help="Evolution steps per seed (scores run 1..steps+1)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the sample, the operation choice and the shuffles."),
    base_url: str | None = _base_url_opt(),
    model: str | None = _model_opt(),
    backend: str | None = _backend_opt(),
    concurrency: int = _concurrency_opt(),
    rpm: int | None = _rpm_opt(),
    tpm: int | None = _tpm_opt(),
    max_cost: float | None = _max_cost_opt(),
    api_key_env: str = _api_key_env_opt(),
    prompt_dir: list[Path] = typer.Option([], "--prompt-dir", help="Folder with evol/<name>.md prompt overrides."),
    rewrite_max_tokens: int | None = typer.Option(None, "--rewrite-max-tokens",
                                                  help="Override max_tokens of the rewrite prompts."),
    rank_max_tokens: int | None = typer.Option(None, "--rank-max-tokens", help="Override max_tokens of the rank prompt."),
    name: str | None = typer.Option(None, "--name", help="Label set name (default evol_<kind>), in WS/labels/."),
) -> None:
    """Evol labels: evolve N seed rows M times, rank-and-score each variant set, store (text, score) labels."""
    from curate.evol import default_cache_path, print_run_summary, run_evol, sample_seeds, save_labels
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    rows = sample_seeds(ws, seeds, kind=kind, seed=seed)
    options = dict(kind=kind, steps=steps, seed=seed, cache_path=default_cache_path(ws), progress=True,
                   prompt_dirs=[str(d) for d in prompt_dir] or None,
                   rewrite_params={"max_tokens": rewrite_max_tokens} if rewrite_max_tokens else None,
                   rank_params={"max_tokens": rank_max_tokens} if rank_max_tokens else None)
    with _judge_backend(backend, base_url, model, concurrency=concurrency, api_key_env=api_key_env, rpm=rpm, tpm=tpm,
                        max_cost=max_cost) as llm:
        result = run_evol(rows, llm, **options)
    path = save_labels(ws, name or f"evol_{kind}", result)
    print_run_summary(result, console)
    console.print(f"wrote {len(result.labels):,} labels to {path}")
