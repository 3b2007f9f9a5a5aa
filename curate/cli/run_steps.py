"""`curate run`'s lines per step: what each step did, from its result (the command is curate/cli/run.py)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from curate.cli.common import check_interrupted, console, json_columns_line, turn_keys_line


def _start_step(name: str) -> None:
    check_interrupted()
    console.print(f"[bold]{escape(name)}[/]", markup=True)


def _print_step(name: str, result: Any, budget: int, max_cosine_similarity: float) -> None:
    """One or two indented lines saying what a step did."""
    check_interrupted()
    if name == "load":
        rejects = f" (see {result['rejects_file']})" if result["rejects"] else ""
        removed = (f", {result['rows_removed']:,} no longer in the source left out of the pool"
                   if result.get("rows_removed") else "")
        removed += ("; the rows' fields and order taken from the source as it is now"
                    if result.get("fields_refreshed") else "")
        console.print(f"  {result['rows_added']:,} new rows, {result['already_present']:,} already present, "
                      f"{result['rejects']:,} rejected{rejects}{removed}{_unchanged(result)}")
        if result["columns_kept_as_json"]:
            console.print(f"  [yellow]{escape(json_columns_line(result['columns_kept_as_json']))}[/]", markup=True)
        if result.get("turn_keys_not_kept"):
            console.print(f"  [yellow]{escape(turn_keys_line(result['turn_keys_not_kept']))}[/]", markup=True)
    elif name in ("export", "report"):  # their paths are listed once the run ends
        console.print("  unchanged: written from the workspace as it is now" if result.unchanged else "  written")
    elif name == "dedup":
        console.print(f"  {len(result):,} unique of {result.table.num_rows:,}{_unchanged(result)}")
    elif name == "near-duplicates":
        near = result.decisions().get("duplicate", 0)
        console.print(f"  {near:,} of {result.table.num_rows:,} near-duplicates of an earlier row (MinHash, Jaccard >= "
                      f"{result.provenance['threshold']}): left out, and not scored{_unchanged(result)}")
    elif name == "heuristics":
        prov = result.provenance
        failing = ", ".join(f"{rule.replace('_', ' ')} {n:,}" for rule, n in prov["rows_failing"].items())
        console.print(f"  {result.decisions().get('rejected', 0):,} of {result.table.num_rows:,} fail a text rule"
                      f"{f' ({failing})' if failing else ''}: left out of the selection, and not scored{_unchanged(result)}")
        if prov.get("rows_kept_with_end_marker"):
            from curate.select.heuristics import end_marker_note

            console.print(f"  [yellow]{escape(end_marker_note(prov['rows_kept_with_end_marker']))}[/]", markup=True)
    elif name == "decontaminate":
        dropped = result.decisions().get("rejected", 0)
        prov = result.provenance
        short = (f"; {prov['targets_matched_whole']:,} under {prov['min_words']} words matched only as a whole message"
                 if prov["targets_matched_whole"] else "")
        short += (f"; {prov['targets_without_words']:,} without a word, never matched"
                  if prov["targets_without_words"] else "")
        console.print(f"  {dropped:,} of {result.table.num_rows:,} match an evaluation text, left out "
                      f"({prov['target_texts']:,} evaluation texts{short}){_unchanged(result)}")
    elif name == "score":
        from curate.cli.judge import cache_use_text, usage_total_line

        for column, applied in result.items():
            producer = f"; {_producer(applied.provenance)}" if applied.provenance else ""  # none: no row to score
            kept = cache_use_text(applied.provenance) if applied.computed and _from_caches(applied.provenance) else ""
            console.print(f"  {column}: {_done(applied, 'scored')}{producer}" + (f" ({kept})" if kept else ""))
            if took_over := applied.takeover_text():
                console.print(f"    [yellow]{escape(took_over)}[/]", soft_wrap=True, highlight=False, markup=True)
            if applied.provenance.get("kind") == "judge":
                console.print(f"    {usage_total_line(applied.provenance)}", highlight=False)
    elif name == "signals":
        from curate.cli.signals import signal_cache_text

        for column, applied in result.items():
            cached = f"; {text}" if (text := signal_cache_text(applied)) else ""
            console.print(f"  {column}: {_done(applied, 'computed')}{cached}")
    elif name == "embed":
        where = f" by the {result['encoded_in']} step's pass" if result.get("encoded_in") and result["encoded"] else ""
        console.print(f"  {result['rows']:,} rows, {result['encoded']:,} newly encoded{where}{_unchanged(result)}")
        if result.get("warning"):  # the model's vocabulary misses the pool's language
            console.print(f"    [yellow]warning: {escape(result['warning'])}[/]", soft_wrap=True, highlight=False,
                          markup=True)
    elif name == "tags":
        (raw, column), applied = result["columns"], result["tags_raw"]
        console.print(f"  {raw}: {_done(applied, 'tagged')}; normalised into column {column}")
        from curate.cli.judge import usage_total_line

        console.print(f"    {usage_total_line(applied.provenance)}", highlight=False)
    elif name.startswith("select"):
        console.print(f"  {len(result):,} rows admitted (budget {budget:,}, by {result.provenance['params']['sort_by']}, max "
                      f"cosine similarity {max_cosine_similarity}){_short_of_budget(result, budget)}{_unchanged(result)}")


def _unchanged(result: Any) -> str:
    """'; unchanged' when a step found what it would store stored already and left its files as they were."""
    same = result.get("unchanged") if isinstance(result, dict) else getattr(result, "unchanged", False)
    return "; unchanged" if same else ""


def _from_caches(prov: dict[str, Any]) -> bool:
    """Whether a scorer's last run took work from the caches (a stopped run's forward passes: its rows count as
    computed now), as `curate score` says: a resumed run said "1,520 now, 0 reused" where 241 turns came from them."""
    return bool(prov.get("turns_from_prediction_cache") or prov.get("texts_from_embedding_cache"))


def _done(applied: Any, verb: str) -> str:
    """'42 of 47 rows scored (42 now, 0 reused); 5 failed (reasons in quality_failure)': rows that got a value now,
    as the notebook's ApplyResult counts them; a row computed now that failed is among the failed."""
    failed = f"; {applied.failed_text()} (reasons in {applied.column}_failure)" if applied.failed else ""
    dropped = (f"; {applied.stale_dropped:,} values an earlier run left on rows this run does not keep removed "
               "(other settings)" if applied.stale_dropped else "")
    again = f"; {applied.redone_text()}" if applied.redone else ""  # curate score says it; run did not
    return (f"{applied.rows - applied.failed:,} of {applied.rows:,} rows {verb} ({applied.valued_now:,} now, "
            f"{applied.skipped:,} reused{again}){failed}{dropped}")


def _short_of_budget(selection: Any, budget: int) -> str:
    """Why a selection holds fewer rows than the budget, from its reason codes (a run can end with nothing
    selected, e.g. a pool without replies, whose rows get no quality score): '' when the budget is met."""
    if len(selection) >= budget:
        return ""
    if not selection.table.num_rows:
        return ": no candidate rows left by the steps before"
    import json
    from collections import Counter

    from curate.codes import Reason, reason_text

    groups: Counter = Counter()
    for reason, detail in zip(selection.table["reason"].to_pylist(), selection.table["detail"].to_pylist(), strict=True):
        if reason == Reason.SELECTED.value:
            continue
        d = json.loads(detail) if detail else {}
        why = f" ({d['column']}: {d['failure'].replace('_', ' ')})" if reason == Reason.NO_SCORE.value and d.get(
            "failure") and d.get("column") else ""
        groups[reason_text(reason) + why] += 1
    if not groups:  # the rules, dedup or decontamination left fewer candidates than the budget, each one admitted
        return f": every candidate admitted (the steps before left {selection.table.num_rows:,})"
    return "; not admitted: " + ", ".join(f"{n:,} {why}" for why, n in groups.most_common())


def _producer(prov: dict[str, Any]) -> str:
    """Who wrote a score column, from its provenance: a default scorer (and the judge it imitates) or a judge."""
    if prov.get("kind") == "scorer":
        detail = prov.get("imitates_detail")
        if detail is None:  # a column written before imitates_detail was recorded: imitates named the judge
            detail = prov["imitates"] if isinstance(prov.get("imitates"), dict) else {"judge": prov.get("imitates")}
        if not detail.get("judge"):  # fitted on scores of no named judge: imitates holds only its column's name
            return "trained scorer, no judge recorded"
        model = f" ({detail['model']})" if detail.get("model") else ""
        return f"trained scorer imitating the {detail['judge']} judge{model}"
    return f"{prov.get('kind') or 'step'} {prov.get('model') or ''}".strip()
