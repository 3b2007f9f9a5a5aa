"""The report's sections as HTML, each built from the data in :mod:`curate.report.summary`: the pool,
judges (tokens and cost over every run), failures by code, and selections by reason code."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from curate.report.summary import (
    column_stats,
    failure_summary,
    in_creation_order,
    llm_usage,
    provenance_line,
    selection_chain,
    selection_parameters,
    selection_summary,
    sources,
    step_columns,
)
from curate.report.tables import clip, esc, money, pairs_html, shorten, table
from curate.scorers.metrics import figure_with_reason
from curate.select.heuristics import end_marker_note
from curate.storage.damage import DamagedFileError
from curate.storage.selection_inputs import stale_note

if TYPE_CHECKING:
    from curate.storage.workspace import Workspace

REJECT_EXAMPLES = 5
TURN_COUNT_ROWS = 10_000  # conversations turned into Python objects at a time to count multi-turn and empty rows


def column_stats_table(ws: Workspace, columns: dict[str, dict[str, Any]]) -> str:
    """Every derived column: kind, fill, failing rows, the row values' summary, provenance."""
    rows = []
    for name, prov in columns.items():
        try:
            s = column_stats(ws, name, prov)
        except DamagedFileError as exc:  # its rows could not be read: shown, the others go on
            rows.append([name, "damaged", None, None, None, None, None, str(exc.damage), provenance_line(prov)])
            continue
        kind = s["kind"] + (f" ({s['reducer']} over turns)" if s.get("reducer") else "")
        extra = f"{s['per_row']:.1f} per row, {s['distinct']:,} distinct" if s["kind"] == "list" else ""
        never = f" ({s['never_computed']:,} never computed)" if s.get("never_computed") else ""
        codes = ", ".join(f"{n:,} {code}" for code, n in (s.get("failure_codes") or {}).items())
        failing = f"{s['failures']:,} ({codes})" if codes else s.get("failures")  # the table said "6" alone
        rows.append([name, kind, f"{s['filled']:,}/{s['rows']:,}{never}", failing,
                     *(s.get(k) for k in ("mean", "min", "max")),  # fmt rounds, once
                     extra, provenance_line(prov)])
    return table(["column", "kind", "filled", "failing rows", "mean", "min", "max", "values", "provenance"],
                 rows, {3, 4, 5, 6}, {8: "prov"})


def groups_table(summary: dict[str, Any]) -> str:
    """A selection's rows grouped by (decision, reason code), with one example each; a reason whose rows name the
    rule they failed (the heuristics' text rules) a line per rule, each with its own example."""
    return table(["decision", "why", "rows", "example (row)"],
                 [row for g in summary["groups"] for row in _group_rows(g)], {2}, {3: "ex"})


def _group_rows(group: dict[str, Any]) -> list[list[Any]]:
    if not group["rules"]:
        return [[group["decision"], group["label"], group["count"], f"{group['example']} ({group['example_id']})"]]
    return [[group["decision"], f"{group['label']}: {r['rule']}", r["count"], f"{r['example']} ({r['example_id']})"]
            for r in group["rules"]]


def _turn_counts(ws: Workspace) -> tuple[int, int]:
    """(rows with an empty or missing response, multi-turn rows), ``TURN_COUNT_ROWS`` conversations at a time."""
    from curate.rows import turns

    empty = multi = 0
    if ws.has_pool:
        for batch in ws.pool.data.table.select(["conversation"]).to_batches(max_chunksize=TURN_COUNT_ROWS):
            for row in map(turns, batch.column(0).to_pylist()):
                empty += any(not (t.response or "").strip() for t in row)
                multi += len(row) > 1
    return empty, multi


def pool_section(ws: Workspace) -> str:
    info = ws.info()
    empty, multi = _turn_counts(ws)
    loads = sources(ws)
    rejects = sum(int(s.get("rejects") or 0) for s in loads)
    cards = [(f"{info['rows']:,}", "rows"), (f"{len(info['formats'])}", "formats"),
             (f"{len(loads)}", "sources loaded"), (f"{multi:,}", "multi-turn rows"),
             (f"{empty:,}", "rows with an empty or missing response"), (f"{rejects:,}", "records rejected at load")]
    out = ['<div class="cards">' + "".join(f'<div class="card"><b>{v}</b><span>{esc(k)}</span></div>'
                                           for v, k in cards) + "</div>"]
    out.append("<h3>formats</h3>" + table(["format", "rows"], sorted(info["formats"].items(), key=lambda kv: -kv[1]), {1}))
    out.append("<h3>sources</h3><p class='sub'>one line per file; a file loaded again shows its latest load "
               "(rows already present are not added twice)</p>" + table(
        ["source", "loads", "last loaded at", "read", "added (all loads)", "already present", "empty responses",
         "no response (instructions)", "rejected"],
        [[s.get("source"), s["loads"], s.get("loaded_at"), s.get("rows_read"), s["rows_added_all"],
          s.get("already_present"), s.get("empty_responses"), s.get("instruction_only"), s.get("rejects")]
         for s in loads], {1, 3, 4, 5, 6, 7, 8}))
    if ws.has_pool and "source" in ws.pool.column_names:
        out.append("<h3>rows by source column</h3>" + table(
            ["source", "rows"], Counter(map(str, ws.column("source"))).most_common(20), {1}))
    rejects_file = ws.path / "rejects.jsonl"
    if rejects_file.exists():
        examples = []
        with open(rejects_file, encoding="utf-8") as fh:
            for line, _ in zip(fh, range(REJECT_EXAMPLES), strict=False):
                rec = json.loads(line)
                examples.append([f"{rec.get('path')}: {rec.get('location')}", rec.get("reason"),
                                 clip(str(rec.get("raw", "")), 160)])
        out.append(f"<h3>rejected records (first {len(examples)}; all in <code>{esc(rejects_file)}</code>)</h3>"
                   + table(["where", "reason", "record"], examples))
    return "".join(out)


def judges_section(ws: Workspace) -> str:
    judges = llm_usage(ws)
    out = []
    if judges:
        costs = [j["cost_usd"] for j in judges]
        total_cost = None if any(c is None for c in costs) else sum(costs)
        tokens = [j["prompt_tokens"] for j in judges] + [j["completion_tokens"] for j in judges]
        total_tokens = "unknown" if any(t is None for t in tokens) else f"{sum(tokens):,}"
        steps = Counter(j["step"] for j in judges)
        out.append(f"<p>{len(judges)} paid LLM step(s) ({esc(', '.join(f'{n} {k}' for k, n in steps.items()))}); "
                   f"{total_tokens} tokens; total cost {money(total_cost)} (every run that paid into a column or "
                   "a label set counted; calls: requests sent, not those the on-disk cache answered (cached: "
                   "earlier runs' answers), those repeating another request of the same run (repeated: sent once) "
                   "or those max_cost held back)</p>")
        out.append(table(
            ["column", "step", "judge", "prompt", "version", "fingerprint", "model", "backend", "runs", "calls",
             "cached", "repeated", "not sent (max_cost)", "prompt tokens", "completion tokens", "cost", "failing rows"],
            [[j["column"], j["step"], j["judge"], j["prompt"], j["prompt_version"],
              str(j["fingerprint"])[:12] if j["fingerprint"] else None, j["model"], j["backend"], j["runs"],
              j["calls"], j["cached"], j["repeated"], j["not_sent_max_cost"], j["prompt_tokens"],
              j["completion_tokens"], money(j["cost_usd"]), j["failures"]]
             for j in judges], {8, 9, 10, 11, 12, 13, 14, 15, 16}))
    columns = ws.columns  # one read of every column's provenance for this section
    scorers = [(n, p) for n, p in columns.items() if p.get("kind") == "scorer"]
    if scorers:
        out.append("<p>scored by trained scorers (no LLM calls, $0):</p>")
        out.append(table(["column", "imitates", "labels it learned from",
                          "held-out agreement (Spearman, on test rows of those labels; other sources may agree less)"],
                         [[n, p.get("imitates"), (p.get("imitates_detail") or {}).get("label_set"),
                           figure_with_reason(held, "spearman") if (held := p.get("holdout_agreement")) else None]
                          for n, p in scorers]))
    if not judges and not scorers:
        out.append("<p class='missing'>no judge has scored this pool yet: run <code>curate run</code> with "
                   "<code>--base-url/--model</code> or score in Python (<code>ws.score(...)</code>)</p>")
    if columns:
        out.append("<h3>all derived columns</h3>" + column_stats_table(ws, columns))
    if ws.embedding_sets:
        out.append("<h3>embeddings</h3>" + table(["name", "rows", "dims", "provenance"], [
            [n, m["shape"][0], m["shape"][1], provenance_line(m)] for n, m in ws.embedding_sets.items()], {1, 2}))
    return "".join(out)


def damaged_section(ws: Workspace) -> str:
    """The column and selection files that cannot be read, each with the fix; "" when there are none."""
    if not (damaged := ws.damaged):
        return ""
    return table(["file", "what it held", "problem", "fix"],
                 [[str(d.path), f"{d.kind} {d.name}", d.problem, d.fix] for d in damaged])


def failures_section(ws: Workspace) -> str:
    columns = step_columns(ws)
    if not columns:
        return ("<p>no derived column, so no row's failure to show (an Evol label set keeps its failed requests in "
                "its own folder, labels/&lt;name&gt;/failures.jsonl)</p>")
    out = []
    for column in columns:
        s = failure_summary(ws, column)
        out.append(f"<h3>{esc(column)}: {s['failed_rows']:,} failing row(s) of {s['rows']:,}</h3>")
        if not s["failed_rows"]:
            continue
        rows = []
        for g in s["groups"]:
            ex = "; ".join(f"{e['id']}: {shorten(e['message'], 140)}"
                           + (f" — raw: {clip(e['raw'], 80)!r}" if e["raw"] else "") for e in g["examples"])
            rows.append([g["code"].value, g["rows"], ex])
        out.append(table(["failure code", "rows", "examples (row: message — raw output)"], rows, {1}, {2: "ex"}))
    return "".join(out)


def _not_kept(outcomes: dict[str, int]) -> str:
    """The rows a selection did not keep, refused apart from those its budget never reached (one "dropped" count
    read 1,955 where 61 rows were turned away and the rest came after the budget filled)."""
    from curate.codes import outcomes_text

    said = outcomes_text(outcomes)
    return f": {said}" if said else ""


def _kept(provenance: dict[str, Any]) -> int | None:
    """A selection's kept rows by its recorded counts: 0 when they count no kept row, None when it recorded none."""
    counts = provenance.get("counts")
    return None if counts is None else counts.get("kept", 0)


def selections_section(ws: Workspace) -> str:
    selections = ws.selections
    if not selections:
        return ("<p class='missing'>no selection yet: run a selection (<code>curate run</code> or "
                "<code>ws.select(...)</code>)</p>")
    out = []
    for name in in_creation_order(selections):
        try:
            sel = ws.selection(name)
            s = selection_summary(sel)
        except DamagedFileError as exc:  # its rows are not what its metadata records: shown, the others go on
            out.append(f"<h3>{esc(name)}: damaged</h3><p class='curate-warn'>{esc(exc.damage)}</p>")
            continue
        prov = s["provenance"]
        params = selection_parameters(prov)
        gone = stale_note(ws, sel)
        out.append(f"<h3>{esc(name)}: {s['kept']:,} kept of {s['considered']:,} considered{_not_kept(s['outcomes'])}</h3>"
                   + (f"<p class='curate-warn'>{esc(gone)}</p>" if gone else "")
                   + (f"<p class='curate-warn'>{esc(end_marker_note(prov['rows_kept_with_end_marker']))}</p>"
                      if prov.get("rows_kept_with_end_marker") else "")
                   + f"<p class='sub params'>method {esc(prov.get('method', '?'))}"
                   + (f"; {pairs_html(params)}" if params else "")
                   + f"; created {esc(prov.get('created', ''))}</p>")
        chain = selection_chain(selections, name)
        if len(chain) > 1:
            out.append("<p>steps, in order:</p>" + table(
                ["#", "selection", "method", "rows in", "kept", "dropped"],
                [[i + 1, n, p.get("method"), p.get("candidates"), _kept(p),
                  p["candidates"] - (_kept(p) or 0) if p.get("candidates") is not None else None]
                 for i, (n, p) in enumerate(chain)], {0, 3, 4, 5}))
        out.append(groups_table(s))
    return "".join(out)

