"""`curate signal`: token-level model signals (perplexity, IFD, learnability) from a small causal LM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from curate.cli.common import app, console, option
from curate.defaults import SIGNAL


@app.command("signal")
def signal_cmd(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    kind: str = typer.Option(..., "--kind", help="ifd | perplexity | learnability"),
    model: Path | None = typer.Option(None, "--model", "-m", help="A Hugging Face causal LM folder "
                                      "(default: the packaged SmolLM2-135M-Instruct)."),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: cuda when present)."),
    dtype: str = option(SIGNAL, "dtype", "float32 | bfloat16 | auto (bfloat16 where the hardware multiplies it "
                        "natively: faster, but a turn's value moves by up to ~15%)."),
    max_length: int = option(SIGNAL, "max_length", "Context + response tokens per turn; longer turns are "
                             "truncated (and counted). Capped at the model's position window."),
    chat_template: Path | None = typer.Option(None, "--chat-template", exists=True, dir_okay=False, help="A Jinja chat template file, for a "
                                              "model whose tokenizer has none."),
    reference: str | None = typer.Option(None, "--reference", help="learnability: the selection whose kept rows "
                                         "the reference model is tuned on."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Score only the first N rows of the pool."),
    column: str | None = typer.Option(None, "--column", help="Column to write (default: the signal's name); "
                                      "another name keeps values under other settings beside it."),
) -> None:
    """Score every response turn with a small LM: perplexity, IFD (loss given the instruction / loss alone),
    or learnability (base loss minus a briefly tuned reference's). Cached and resumable."""
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    template = chat_template.read_text(encoding="utf-8") if chat_template is not None else None
    ids = ws.ids[:limit] if limit is not None else None
    result = ws.signal(kind, model=model, device=device, ids=ids, reference_selection=reference, dtype=dtype,
                       max_length=max_length, chat_template=template, column=column)
    prov = result.provenance
    last = (prov.get("runs") or [{}])[-1]
    cached = f" ({text})" if (text := signal_cache_text(result)) else ""
    console.print(f"{result.column}: {result.valued_now:,} computed{cached}, {result.skipped:,} reused, "
                  f"{result.failed_text()} ({result.seconds:.1f} s)")
    if result.computed and last.get("turns_truncated"):
        console.print(f"  turns truncated to {prov.get('max_length'):,} tokens: {last['turns_truncated']:,}")
    if result.failed:  # why, as curate score says it ("failed 3" alone named no reason)
        from curate.cli.judge import print_failure_counts

        print_failure_counts(ws.failures(result.column, ids))
    if kind == "ifd" and prov.get("rows_with_ifd_at_least_one") is not None:
        console.print(f"  rows of the column with IFD >= 1 (the instruction does not help): "
                      f"{prov['rows_with_ifd_at_least_one']:,}")


def signal_cache_text(result: Any) -> str:
    """'7 of their 40 requests answered by the on-disk cache': what a signal run's rows took from the log-prob cache
    (a run resumed after a kill computes only the rest); '' when it computed no row or recorded no counts."""
    last = (result.provenance.get("runs") or [{}])[-1]
    if not result.computed or not last.get("requests"):
        return ""
    return f"{last.get('cached_requests', 0):,} of their {last['requests']:,} requests answered by the on-disk cache"
