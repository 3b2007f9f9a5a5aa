"""The main job (`curate run`) and the report."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from curate.cli.common import (
    _judge_backend,
    _source,
    app,
    console,
)


@app.command()
def run(
    source: str = typer.Argument("sample", help="Pool to curate ('sample' = the bundled sample)."),
    out: Path = typer.Option(Path("curate-run"), "--out", "-o", help="Output directory (workspace, exports, report)."),
    budget: int = typer.Option(20, help="Rows to select."),
    max_cosine_similarity: float = typer.Option(0.9, "--max-cosine-similarity",
                                                help="DEITA admission: a row joins only if its cosine similarity "
                                                     "to every admitted row is at most this."),
    backend: str | None = typer.Option(None, "--backend", help="Score with LLM judges: openai | vllm | local. "
                                       "Default: the shipped scorers (offline, no LLM calls)."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (implies --backend openai)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Judge model name (openai) or folder (vllm)."),
    tags: bool = typer.Option(False, "--tags/--no-tags", help="Also tag intents with the LLM judge (needs a backend)."),
    max_cost: float | None = typer.Option(None, "--max-cost", help="Hard cap in USD for judge calls."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write OUT/report.html."),
) -> None:
    """The main job: load -> dedup -> score -> embed -> \\[tags] -> DEITA admission -> export -> report.

    Re-running with the same arguments costs nothing (caches) and gives the same selection.
    """
    from curate.pipeline import run_pipeline

    src = _source(source)
    use_llm = backend is not None or base_url is not None
    if tags and not use_llm:
        raise typer.BadParameter("--tags needs an LLM: give --backend local|vllm|openai or --base-url")
    with (_judge_backend(backend, base_url, model, max_cost=max_cost) if use_llm else contextlib.nullcontext()) as llm:
        run_pipeline(src, out=out, budget=budget, max_cosine_similarity=max_cosine_similarity, backend=llm,
                     tag_backend=llm if tags else None, report=report, console=console)
