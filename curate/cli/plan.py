"""`curate plan`: how many rows to keep for a compute budget (QQT: repeated high-quality data loses utility)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from curate.cli.common import app, console, err_console, option
from curate.defaults import PLAN

BAR_WIDTH = 40  # characters of the longest bar in the printed curve, on a terminal wide enough
OTHER_COLUMNS = 44  # the table's other columns, padding and borders: what a bar leaves of the terminal's width


@app.command("plan")
def plan_cmd(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    order_by: str = typer.Option(..., "--sort-by", "--order-by", help="Quality ordering: a column or sort expression, "
                                 "higher = better (e.g. quality, complexity*quality, less), as run and select's "
                                 "--sort-by; --order-by, its earlier name, still works."),
    samples: float | None = typer.Option(None, help="Compute budget: rows seen in training (epochs x rows)."),
    epochs: float | None = typer.Option(None, help="Compute budget: epochs over the whole scored pool."),
    tokens: float | None = typer.Option(None, help="Compute budget: training tokens (rows counted with --model's "
                                        "tokenizer)."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Tokenizer folder for --tokens (default: the "
                                      "packaged SmolLM2)."),
    buckets: int = option(PLAN, "buckets", "Quality tiers the pool is cut into."),
    half_life: float = option(PLAN, "half_life", "Repetitions until a row's utility halves."),
    utilities: str | None = typer.Option(None, help="Per-tier utilities b (JSON list, best tier first; default: "
                                         "the paper's priors)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the plan and its curve as JSON here; - for "
                                         "standard output (the table then goes to standard error), as export's --out."),
) -> None:
    """Recommend how many of the best rows to keep for a compute budget, by the QQT scaling law with repetition
    decay (Goyal et al. 2024); prints the predicted-loss curve it optimised."""
    from curate.session import Workspace
    from curate.train.planner import plan_workspace

    if model is not None and tokens is None:  # the tokenizer counts the rows' tokens for --tokens alone
        raise typer.BadParameter("--model is the tokenizer of --tokens; give --tokens", param_hint="'--model'")
    ws = Workspace.open(workspace)
    to_stdout = json_out is not None and str(json_out) == "-"  # for a pipe: the JSON alone on stdout
    shown = err_console if to_stdout else console
    if json_out is not None and not to_stdout:  # --json WS/manifest.json replaced the workspace's manifest
        from curate.storage.outputs import check_outside_workspace

        check_outside_workspace(ws, json_out, "the plan")
    result = plan_workspace(ws, order_by, model=model, samples=samples, epochs=epochs, tokens=tokens,
                            buckets=buckets, half_lives=half_life,
                            utilities=_utilities(utilities) if utilities else None)
    shown.print(f"keep {result.keep_rows:,} rows ({result.keep_fraction:.0%}: the top {result.keep_tiers} of "
                  f"{buckets} tiers by {order_by}) for {result.samples:,.0f} rows seen")
    table = Table(title="predicted loss by rows kept (QQT effective utility)")
    for head, justify in (("tiers", "right"), ("rows kept", "right"), ("epochs", "right"), ("loss", "right"),
                          ("", "left")):
        table.add_column(head, justify=justify)
    losses = [p["loss"] for p in result.curve]
    lo, hi = min(losses), max(losses)
    longest = max(10, min(BAR_WIDTH, shown.width - OTHER_COLUMNS))  # a cut bar would read as a shorter one
    for p in result.curve:
        width = 1 + round((longest - 1) * (p["loss"] - lo) / (hi - lo)) if hi > lo else 1
        mark = " <- keep" if p["tiers"] == result.keep_tiers else ""
        table.add_row(str(p["tiers"]), f"{int(p['rows']):,}", f"{p['epochs']:.2f}", f"{p['loss']:.5f}",
                      "#" * width + mark)
    shown.print(table)
    if to_stdout:
        from curate.storage.write_errors import writing

        with writing("standard output"):  # a closed pipe names no file
            sys.stdout.write(json.dumps(result.to_dict(), indent=1) + "\n")
            sys.stdout.flush()
    elif json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=1))
        console.print(f"plan written to {json_out}")


def _utilities(text: str) -> list[float]:
    """--utilities as a JSON list; a typo is named as the option's (json's own message names no option)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise typer.BadParameter(f"not a JSON list of numbers ({err.msg} at character {err.pos + 1}): {text!r}, "
                                 "e.g. '[-0.16, -0.125, -0.1]'", param_hint="'--utilities'") from None
