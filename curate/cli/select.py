"""`curate select`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand

from curate.cli.common import (
    app,
    console,
)
from curate.defaults import DEITA, SELECT


def selection_table(sel) -> Table:
    """Rows per (decision, reason), reasons in words (codes.reason_text), most frequent first; untitled: the outcome
    line above it says how many were kept of how many considered (the title said it a second time)."""
    from curate.codes import reason_text

    table = Table()
    for head, justify in (("decision", "left"), ("reason", "left"), ("rows", "right")):
        table.add_column(head, justify=justify)
    for (decision, reason), n in sel.reasons().most_common():
        table.add_row(decision, reason_text(reason), f"{n:,}")
    return table


def outcome_line(sel, method: str) -> str:
    """'selection 'd' (deita): 2,000 kept of 3,955 considered; 61 refused, 1,894 not reached (budget filled first)':
    rows turned away for what they are apart from rows the budget left (``Selection.outcomes``)."""
    from curate.codes import outcomes_text

    out = sel.outcomes()
    rest = outcomes_text(out)
    return (f"selection {sel.name!r} ({method}): {out['kept']:,} kept of {out['considered']:,} considered"
            + (f"; {rest}" if rest else ""))


def budget_line(sel) -> str | None:
    """One line when a selection did not fill its budget, from its provenance's ``budget_use`` (None when it did, or
    took no budget): how many it kept, whether the candidates ran out, and why the others were not kept, by reason
    (the words of ``codes.reason_text``; rows without a score by the column and failure that left them none)."""
    use = sel.provenance.get("budget_use")
    if not use or use["filled"]:
        return None
    head = f"budget {use['budget']:,} not filled: {use['kept']:,} kept"
    if not use["candidates"]:
        return f"{head}: no candidate rows (the input selection kept none)"
    why = _not_kept(sel, use["not_kept"])
    if use["ran_out"]:
        return f"{head}; the {use['candidates']:,} candidates ran out first" + (f" (not kept: {why})" if why else "")
    return f"{head} of {use['candidates']:,} candidates" + (f" (not kept: {why})" if why else "")


def _not_kept(sel, not_kept: dict[str, int]) -> str:
    """'120 too similar to a kept row, 3 no score (quality: no response)': the selector's rows not kept by reason
    (rows an earlier step of a chain dropped are not its own: left out)."""
    from collections import Counter

    from curate.codes import Reason, reason_text

    groups: Counter = Counter({reason_text(code): n for code, n in not_kept.items() if code != Reason.NO_SCORE})
    for row in sel.rows(reasons=[Reason.NO_SCORE]) if not_kept.get(Reason.NO_SCORE) else []:
        d = row["detail"]
        if not d.get("step"):
            failed = d.get("failure") and d.get("column")
            groups[reason_text(Reason.NO_SCORE) + (f" ({d['column']}: {d['failure'].replace('_', ' ')})" if failed
                                                   else "")] += 1
    return ", ".join(f"{n:,} {why}" for why, n in groups.most_common())


def index_check_line(provenance: dict) -> str | None:
    """One line when semantic dedup's hnsw graph missed duplicates its exact check of kept rows found (provenance
    ``index_check``, :mod:`curate.select.ann_check`); None when it found none or ran no check."""
    check = provenance.get("index_check") or {}
    if not check.get("missed"):
        return None
    return (f"the hnsw index missed near duplicates: {check['missed']:,} of {check['checked']:,} kept rows checked "
            f"have an earlier kept row above the threshold (about {check['estimated_missed']:,} of the "
            f"{check['kept']:,} kept rows); raise --param ef= (it was {provenance.get('ef')}) or use --param index=exact")


def selector_help() -> dict[str, str]:
    """The help of --method and --budget, from the selector registry (every selector ws.select runs, and those of
    them that take a budget): one source, so a selector registered later is listed too."""
    from curate.select.registry import selector_parameters
    from curate.session import registered_selectors

    names = sorted(registered_selectors())
    budgeted = [n for n in names if "budget" in selector_parameters(n)[0]]
    return {"method": f"The selector: {', '.join(names)} (or any other registered).",
            "budget": f"Rows to keep, at least 1 ({', '.join(budgeted)})."}


class SelectCommand(TyperCommand):
    """`curate select`, whose --method and --budget help is filled from the registry when help is shown: importing
    every selector's package costs each other command's start nothing."""

    def format_help(self, ctx: Any, formatter: Any) -> None:  # click's Context and HelpFormatter
        texts = selector_help()
        for param in self.params:
            if param.name in texts:
                param.help = texts[param.name]  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


@app.command("select", cls=SelectCommand)
def select_cmd(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    method: str = typer.Option(SELECT.method, help="The selector (listed by --help from the selector registry)."),
    name: str = typer.Option(..., help="Name of the selection to write."),
    budget: int | None = typer.Option(None, help="Rows to keep, at least 1 (the selectors taking a budget: listed by "
                                                 "--help)."),
    max_cosine_similarity: float | None = typer.Option(
        None, "--max-cosine-similarity",
        help=f"deita: admit a row iff its similarity to every admitted row is <= this "
             f"(default {DEITA.max_cosine_similarity})."),
    duplicate_similarity: float | None = typer.Option(
        None, "--duplicate-similarity",
        help=f"semantic: a row is a duplicate of a kept row above this cosine similarity "
             f"(default {DEITA.semantic_duplicate_similarity})."),
    sort_by: str | None = typer.Option(
        None, "--sort-by",
        help=f"Column or expression, evaluated per turn and reduced by the columns' reducer. deita, top_k, "
             f"threshold: default {DEITA.sort_by!r} over the derived columns holding those scores (quality_score "
             f"where a curate run scored beside a pool field quality; never the pool field); exact, minhash, semantic: which copy to keep (default: "
             f"pool order); kcenter: start from the best-scored row (default: a seeded random row)."),
    min_score: float | None = typer.Option(None, "--min-score", help="threshold: keep rows scoring at least this."),
    quantile: float | None = typer.Option(None, "--quantile",
                                          help="threshold: keep rows scoring at least this quantile (0-1) of the "
                                               "candidates' scores, instead of --min-score."),
    target: Path | None = typer.Option(None, help="dsir: file of target texts, one per line; less: a file of "
                                                  "target-task examples with answers (any shape curate loads); "
                                                  "decontaminate: the evaluation set's texts (.txt, one per line, "
                                                  "or any shape curate loads)."),
    from_selection: str | None = typer.Option(None, "--from", help="Choose among this selection's kept rows."),
    param: list[str] = typer.Option([], "--param", help="Other selector parameters as KEY=VALUE (VALUE parsed as JSON when it can be)."),
) -> None:
    """Select rows with one method and store every row's decision, reason code and details as a named selection."""
    from curate.session import Workspace

    params: dict = {}
    for item in param:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--param {item!r}: expected KEY=VALUE")
        if key in params:  # the last one won in silence
            raise typer.BadParameter(f"--param {key}={params[key]!r} and --param {item}: give it once")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    for key, value in (("budget", budget), ("max_cosine_similarity", max_cosine_similarity),
                       ("duplicate_similarity", duplicate_similarity), ("sort_by", sort_by),
                       ("min_score", min_score), ("quantile", quantile), ("target", str(target) if target else None)):
        if value is not None:
            if key in params:  # the option and --param say it twice: neither may win in silence
                raise typer.BadParameter(f"--{key.replace('_', '-')} {value} and --param {key}={params[key]}: "
                                         "give it once")
            params[key] = value
    ws = Workspace.open(workspace)
    from curate.select.fitted import fitted_rule_lines
    from curate.select.progress import showing_progress

    with showing_progress():
        sel = ws.select(method=method, name=name, input_selection=from_selection, **params)
    console.print(outcome_line(sel, method))
    for line in fitted_rule_lines(sel.provenance):
        console.print(line, soft_wrap=True, highlight=False)
    if note := budget_line(sel):
        console.print(f"[yellow]{escape(note)}[/]", markup=True)
    if covers := sel.provenance.get("budget_covers_all"):  # LESS, mining, training dynamics: no model was run
        console.print(f"note: the budget keeps {covers['keep']:,} rows, at least the {covers['eligible']:,} eligible "
                      f"ones: all kept (reason budget_covers_all), without {covers['skipped']}", highlight=False)
    if new := sel.provenance.get("rows_loaded_since_input"):
        from curate.storage.selection_inputs import loaded_since_text

        console.print(f"[yellow]note: {escape(loaded_since_text(new, sel.name))}[/]", markup=True, soft_wrap=True,
                      highlight=False)
    if missed := index_check_line(sel.provenance):
        console.print(f"[yellow]{escape(missed)}[/]", markup=True, soft_wrap=True, highlight=False)
    left_out = sel.provenance.get("target_left_out") or {}
    if left_out.get("rows"):
        codes = ", ".join(f"{code} {n:,}" for code, n in left_out["codes"].items())
        records = ", ".join(str(k) for k in left_out["records"])
        console.print(f"note: {left_out['rows']:,} target record(s) have no gradient and were left out ({codes}; "
                      f"record {records}{'…' if left_out['rows'] > len(left_out['records']) else ''}): "
                      "LESS matches the rows to the other target records")
    console.print(selection_table(sel))
