"""Reports: what a workspace holds, for terminals (rich), notebooks (``_repr_html_``) and one HTML page.

- :func:`print_info`: the terminal summary behind ``curate info``.
- :func:`build_report`: the curation report, one self-contained HTML file (inline CSS, plots as
  ``data:`` URIs, no script and no external request): pool summary, judges with tokens and cost,
  failures with reasons, each selection's kept/dropped counts and why, plots, sample rows.
- :func:`show_rows` (``ws.show``), :func:`workspace_html` and :func:`selection_html`: notebook views.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from curate.session import Workspace

from curate.storage.selection import Selection


def _provenance_line(prov: dict[str, Any]) -> str:
    keys = ("kind", "judge", "prompt", "prompt_fingerprint", "model", "backend", "method", "cost_usd", "created")
    return ", ".join(f"{k}={prov[k]}" for k in keys if prov.get(k) not in (None, ""))


def print_info(ws: Workspace, console: Console | None = None) -> dict[str, Any]:
    """Print a workspace's rows, formats, sources, columns (with provenance), embeddings and selections."""
    console = console or Console()
    info = ws.info()
    fmts = ", ".join(f"{k} {v:,}" for k, v in info["formats"].items())
    console.print(f"[bold]{info['path']}[/]: {info['rows']:,} rows ({fmts})")
    for src in info["sources"]:
        rej = f", {src['rejects']} rejected -> {src['rejects_file']}" if src["rejects"] else ""
        console.print(f"  source {src['source']}: {src['rows_added']:,} added{rej}")
    table = Table(title="derived columns", show_lines=False)
    for head in ("column", "filled", "provenance"):
        table.add_column(head)
    for name, prov in info["columns"].items():
        values = ws.column(name)
        filled = sum(v is not None for v in values)
        line = _provenance_line(prov)
        if prov.get("kind") == "judge" and f"{name}_failure" in info["columns"]:
            from curate.llm.judges import missing_report

            miss = missing_report(ws, name)
            line = (f"missing {miss['missing']:,} (with failure reason {miss['missing'] - miss['unexplained']:,}, "
                    f"unexplained {miss['unexplained']:,}); tokens {prov.get('tokens')}; " + line)
        table.add_row(name, f"{filled:,}/{len(values):,}", line)
    if info["columns"]:
        console.print(table)
    for name, meta in info["embeddings"].items():
        console.print(f"  embeddings {name}: {meta['shape'][0]:,} x {meta['shape'][1]} ({_provenance_line(meta)})")
    for name, prov in info["selections"].items():
        sel = ws.selection(name)
        console.print(f"  selection {name}: {len(sel):,} kept ({_provenance_line(prov)})")
    console.print(f"  pool columns: {', '.join(info['pool_columns'])}")
    return info


# -- reasons ---------------------------------------------------------------------------------------
_REASON_GROUPS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.I), label) for p, label in [
        (r"too (close|similar)|near[- ]?dup|cosine|similarity|similar to", "too similar to a kept row"),
        (r"duplicate|same (text|conversation)|minhash", "duplicate of another row"),
        (r"fail|error|no score|unscored|missing score", "no score (judge failure)"),
        (r"budget|not reached|quota|limit reached", "budget filled before this row"),
        (r"no new tag|adds no|no tags?", "adds no new tag"),
        (r"below|threshold|min(imum)? score|score <", "score below the threshold"),
        (r"empty", "empty response"),
    ]
]
_ID_LIKE = re.compile(r"(?<![A-Za-z])(?=[0-9a-f]*\d)[0-9a-f]{6,}(?![A-Za-z])|\b\d+(\.\d+)?\b")


def reason_group(reason: str | None, decision: str | None = None) -> str:
    """A reason's group: ``too close to row 3f2a… (cos 0.93)`` -> ``too similar to a kept row``.

    Known phrasings map to a plain-words group; other reasons group by their text with ids and
    numbers blanked out, so one rule with many thresholds/ids still counts as one group.
    """
    if reason is None or not str(reason).strip():
        return f"(no reason given; decision {decision})" if decision else "(no reason given)"
    text = str(reason)
    for pattern, label in _REASON_GROUPS:
        if pattern.search(text):
            return label
    return _ID_LIKE.sub("…", text.strip())[:120]


def selection_summary(sel: Selection) -> dict[str, Any]:
    """Counts by decision, and by (decision, reason group) with one example reason and row id each."""
    ids = sel.table["id"].to_pylist()
    decisions = sel.table["decision"].to_pylist()
    reasons = sel.table["reason"].to_pylist()
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for rid, dec, why in zip(ids, decisions, reasons, strict=False):
        # kept rows' reasons are not sorted into drop groups, only stripped of ids and numbers
        group = reason_group(why, dec) if dec != "kept" else (_ID_LIKE.sub("…", str(why))[:120] if why else "kept")
        key = (dec, group)
        g = groups.setdefault(key, {"decision": dec, "group": key[1], "count": 0, "example_reason": why,
                                    "example_id": rid})
        g["count"] += 1
    by_decision = Counter(decisions)
    return {
        "name": sel.name, "considered": len(ids), "kept": by_decision.get("kept", 0),
        "dropped": len(ids) - by_decision.get("kept", 0), "by_decision": dict(by_decision),
        "groups": sorted(groups.values(), key=lambda g: (g["decision"] != "kept", -g["count"])),
        "provenance": sel.provenance,
    }


def failure_summary(ws: Workspace, column: str, examples: int = 3) -> dict[str, Any]:
    """A ``<judge>_failure`` column: failed rows, counts by reason group, and a few examples each."""
    values = ws.column(column)
    ids = ws.ids
    groups: dict[str, dict[str, Any]] = {}
    failed = 0
    for rid, value in zip(ids, values, strict=False):
        for reason, raw in _failure_items(value):
            failed += 1
            g = groups.setdefault(_failure_group(reason), {"count": 0, "examples": []})
            g["count"] += 1
            if len(g["examples"]) < examples:
                g["examples"].append({"id": rid, "reason": reason, "raw": raw})
    return {"column": column, "failed": failed, "rows": len(ids),
            "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1]["count"]))}


def _failure_items(value: Any) -> list[tuple[str, str | None]]:
    """(reason, raw output) pairs in one failure cell: a string, a dict, or a per-turn list of those."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [item for v in value for item in _failure_items(v)]
    if isinstance(value, dict):
        reason = value.get("reason") or value.get("failure") or json.dumps(value, default=str)
        return [(str(reason), None if value.get("raw") is None else str(value.get("raw")))]
    return [(str(value), None)]


def _failure_group(reason: str) -> str:
    head = reason.split(":", 1)[0] if ":" in reason[:60] else reason
    return _ID_LIKE.sub("…", head.strip())[:100]


# -- provenance: judges, tokens, cost ----------------------------------------------------------------


def judge_usage(ws: Workspace) -> list[dict[str, Any]]:
    """One entry per LLM-judge column, from the provenance ``curate.llm.judges.score`` writes."""
    out = []
    for name, prov in ws.columns.items():
        if prov.get("kind") != "judge":
            continue
        tokens = prov.get("tokens") or {}
        out.append({
            "column": name, "judge": prov.get("judge"), "prompt": prov.get("prompt"),
            "prompt_version": prov.get("prompt_version"), "fingerprint": prov.get("prompt_fingerprint"),
            "model": prov.get("model"), "backend": prov.get("backend"), "calls": prov.get("requests"),
            "cached": prov.get("cached_requests"), "prompt_tokens": tokens.get("prompt"),
            "completion_tokens": tokens.get("completion"), "cost_usd": prov.get("cost_usd"),
            "failures": prov.get("failed_rows"), "created": prov.get("created"),
        })
    return out


# -- conversations -------------------------------------------------------------------------------
def _clip(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else f"{text[:max_chars]}… ({len(text) - max_chars:,} more characters)"


def conversation_html(conversation: list[dict[str, str]], max_chars: int = 2000) -> str:
    """A conversation as HTML turns (role label + text kept as written, HTML-escaped)."""
    parts = []
    for turn in conversation:
        role = str(turn.get("role", "?"))
        content = str(turn.get("content") or "")
        body = html.escape(_clip(content, max_chars)) if content.strip() else "<i>(empty)</i>"
        parts.append(f'<div class="turn {html.escape(role)}"><span class="role">{html.escape(role)}</span>'
                     f'<div class="text">{body}</div></div>')
    return '<div class="conv">' + "".join(parts) + "</div>"


def conversation_text(conversation: list[dict[str, str]], max_chars: int = 2000) -> str:
    """A conversation as plain text, one ``role: text`` block per turn."""
    return "\n".join(f"[{t.get('role')}] {_clip(str(t.get('content') or ''), max_chars)}" for t in conversation)


def _cell_text(value: Any, max_chars: int = 200) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell_text(v, max_chars) for v in value)
    if isinstance(value, dict):
        return _clip(json.dumps(value, default=str, ensure_ascii=False), max_chars)
    return _clip(str(value), max_chars)


class RowsView:
    """Rows of a workspace for a notebook: conversations and derived values, as HTML and as text."""

    def __init__(self, ws: Workspace, ids: list[str], columns: list[str], note: str = "",
                 notes: dict[str, str] | None = None, max_chars: int = 2000):
        self.ids = ids
        self.note = note
        self._ws = ws
        self._columns = columns
        self._notes = notes or {}
        self._max_chars = max_chars
        index = ws.index
        convs = ws.pool.data.table.column("conversation")
        values = {c: ws.column(c, ids) for c in columns}  # one read per column, not per row
        self.rows = [{"id": rid, "position": index[rid], "conversation": convs[index[rid]].as_py(),
                      "values": {c: values[c][k] for c in columns if values[c][k] not in (None, [], "")}}
                     for k, rid in enumerate(ids)]

    def __len__(self) -> int:
        return len(self.rows)

    def _repr_html_(self) -> str:
        blocks = [f'<style>{_CSS_ROWS}</style><div class="curate-rows">']
        if self.note:
            blocks.append(f"<p>{html.escape(self.note)}</p>")
        for row in self.rows:
            blocks.append(_row_html(row, self._notes.get(row["id"]), self._max_chars))
        blocks.append("</div>")
        return "".join(blocks)

    def __repr__(self) -> str:
        out = [self.note] if self.note else []
        for row in self.rows:
            vals = "; ".join(f"{k}={_cell_text(v, 80)}" for k, v in row["values"].items())
            extra = f"  ({self._notes[row['id']]})" if row["id"] in self._notes else ""
            out.append(f"--- row {row['position']} id={row['id']}{extra}" + (f"\n    {vals}" if vals else ""))
            out.append(conversation_text(row["conversation"], self._max_chars))
        return "\n".join(out)


def _row_html(row: dict[str, Any], note: str | None, max_chars: int) -> str:
    vals = "".join(f'<span class="kv"><b>{html.escape(k)}</b> {html.escape(_cell_text(v))}</span>'
                   for k, v in row["values"].items())
    note_html = f'<span class="note">{html.escape(note)}</span>' if note else ""
    return (f'<div class="row"><div class="rowhead">row {row["position"]} <code>{html.escape(row["id"])}</code> '
            f"{note_html}</div><div class=\"vals\">{vals}</div>{conversation_html(row['conversation'], max_chars)}</div>")


def show_rows(ws: Workspace, rows: Any, columns: list[str] | None = None, limit: int = 20,
              max_chars: int = 2000) -> RowsView:
    """``ws.show``: rows given as ids, pool positions, a slice, or a selection name (its kept rows in order)."""
    note = ""
    if isinstance(rows, str) and rows in ws.selections:
        kept = ws.selection(rows).ids
        ids = kept[:limit]
        note = f"selection {rows!r}: {len(kept):,} kept" + (f", showing the first {len(ids)}" if len(kept) > len(ids) else "")
    else:
        if isinstance(rows, (str, int)):
            rows = [rows]
        elif isinstance(rows, slice):
            rows = range(len(ws))[rows]
        ids = []
        for r in rows:
            if isinstance(r, (int,)) and not isinstance(r, bool):
                if not -len(ws) <= r < len(ws):
                    raise IndexError(f"row {r} is outside the pool (0..{len(ws) - 1})")
                ids.append(ws.ids[r])
            elif isinstance(r, str):
                if r not in ws.index:
                    raise KeyError(f"no row with id {r!r} (and no selection of that name: {sorted(ws.selections)})")
                ids.append(r)
            else:
                raise TypeError(f"show: rows are ids, pool positions or a selection name, not {type(r).__name__}")
        if len(ids) > limit:
            note = f"{len(ids):,} rows, showing the first {limit}"
            ids = ids[:limit]
    columns = list(ws.columns) if columns is None else columns
    return RowsView(ws, ids, columns, note=note, max_chars=max_chars)


# -- notebook views --------------------------------------------------------------------------------
def column_stats(ws: Workspace, name: str) -> dict[str, Any]:
    """Filled rows, failures (from ``<name>_failure``), and mean/min/max (numbers) or tags per row (lists)."""
    from curate.report.plots import is_numeric_column, row_number

    values = ws.column(name)
    filled = [v for v in values if v is not None and v != [] and v != ""]
    stats: dict[str, Any] = {"name": name, "filled": len(filled), "rows": len(values)}
    fail_col = f"{name}_failure"
    if ws.has_column(fail_col):
        stats["failures"] = sum(1 for v in ws.column(fail_col) if v not in (None, "", []))
    if name.endswith("_failure"):
        stats["kind"] = "failures"
    elif is_numeric_column(values):
        nums = [x for v in filled if (x := row_number(v)) == x]
        stats["kind"] = "per-turn scores" if any(isinstance(v, list) for v in filled) else "number"
        if nums:
            stats.update(mean=sum(nums) / len(nums), min=min(nums), max=max(nums))
    elif filled and all(isinstance(v, list) for v in filled):
        stats["kind"] = "list"
        stats["per_row"] = sum(len(v) for v in filled) / len(filled)
        stats["distinct"] = len({str(x) for v in filled for x in v})
    else:
        stats["kind"] = "text"
    return stats


def _stats_cells(s: dict[str, Any]) -> str:
    def num(key: str) -> str:
        return f"{s[key]:.3g}" if key in s else ""

    extra = f"{s['per_row']:.1f} per row, {s['distinct']:,} distinct" if s.get("kind") == "list" else ""
    return (f"<td>{html.escape(s['kind'])}</td><td>{s['filled']:,}/{s['rows']:,}</td>"
            f"<td>{'' if 'failures' not in s else format(s['failures'], ',')}</td>"
            f"<td>{num('mean')}</td><td>{num('min')}</td><td>{num('max')}</td><td>{html.escape(extra)}</td>")


def workspace_html(ws: Workspace) -> str:
    """The notebook view of a workspace: rows, formats, sources, column stats, embeddings, selections."""
    info = ws.info()
    fmts = ", ".join(f"{k}: {v:,}" for k, v in info["formats"].items())
    cols = _column_stats_table(ws, info["columns"]) if info["columns"] else "<p>no derived columns yet</p>"
    embs = "".join(f"<li>embeddings <b>{html.escape(n)}</b>: {m['shape'][0]:,} x {m['shape'][1]} "
                   f"({html.escape(_provenance_line(m))})</li>" for n, m in info["embeddings"].items())
    sels = "".join(f"<li>selection <b>{html.escape(n)}</b>: {_decision_line(ws.selection(n))} "
                   f"({html.escape(_provenance_line(p))})</li>" for n, p in info["selections"].items())
    srcs = "".join(f"<li>{html.escape(str(s['source']))}: {s['rows_added']:,} added"
                   + (f", {s['rejects']:,} rejected" if s.get("rejects") else "") + "</li>" for s in info["sources"])
    return (f"<style>{_CSS_TABLE}</style><div><b>curate workspace</b> <code>{html.escape(info['path'])}</code><br>"
            f"{info['rows']:,} rows ({html.escape(fmts) or 'no pool yet'})<ul>{srcs}{embs}{sels}</ul>{cols}</div>")


def _decision_line(sel: Selection) -> str:
    counts = sel.decisions()
    kept = counts.pop("kept", 0)
    rest = ", ".join(f"{html.escape(str(k))} {v:,}" for k, v in counts.most_common())
    return f"{kept:,} kept" + (f"; {rest}" if rest else "")


def selection_html(sel: Selection, head: int = 10) -> str:
    """The notebook view of a selection: counts by decision, reason groups, and its first rows."""
    summary = selection_summary(sel)
    method = sel.provenance.get("method", "?")
    first = sel.table.slice(0, head).to_pylist()
    rows = "".join(f"<tr><td><code>{html.escape(str(r['id']))}</code></td><td>{html.escape(str(r['decision']))}</td>"
                   f"<td>{html.escape(str(r.get('reason') or ''))}</td></tr>" for r in first)
    return (f"<style>{_CSS_TABLE}</style><div><b>selection {html.escape(sel.name)}</b> "
            f"({_decision_line(sel)} of {summary['considered']:,} considered; method {html.escape(str(method))})"
            f"{_groups_table(summary)}"
            f"<details><summary>first {len(first)} rows in rank order</summary><table class='curate'><tr><th>id</th>"
            f"<th>decision</th><th>reason</th></tr>{rows}</table></details></div>")


def _groups_table(summary: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(g['decision']))}</td><td>{html.escape(g['group'])}</td><td class='n'>{g['count']:,}</td>"
        f"<td class='ex'>{html.escape(str(g['example_reason'] or ''))} <code>{html.escape(str(g['example_id']))}</code></td></tr>"
        for g in summary["groups"])
    return ("<table class='curate'><tr><th>decision</th><th>why</th><th>rows</th><th>example reason (row)</th></tr>"
            f"{rows}</table>")


# -- the HTML report -------------------------------------------------------------------------------
_CSS_TABLE = """
table.curate{border-collapse:collapse;margin:.4em 0 1em;font-size:13px}
table.curate th,table.curate td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
table.curate th{background:#f3f3f3} table.curate td.n{text-align:right;font-variant-numeric:tabular-nums}
table.curate td.prov,table.curate td.ex{color:#555;font-size:12px;max-width:38em;overflow-wrap:anywhere}
"""
_CSS_ROWS = """
.curate-rows .row{border:1px solid #ddd;border-radius:6px;margin:.6em 0;padding:.5em .7em;background:#fff}
.curate-rows .rowhead{font-size:12px;color:#444;margin-bottom:.3em}
.curate-rows .note{background:#fff3cd;padding:1px 6px;border-radius:4px;margin-left:.5em}
.curate-rows .vals .kv{display:inline-block;font-size:12px;background:#eef3fb;border-radius:4px;padding:1px 6px;margin:0 4px 4px 0}
.curate-rows .turn{margin:.3em 0;padding:.3em .6em;border-left:4px solid #999;background:#fafafa}
.curate-rows .turn.user{border-color:#1f77b4}.curate-rows .turn.assistant{border-color:#2ca02c}
.curate-rows .turn.system{border-color:#9467bd}
.curate-rows .role{font-size:11px;font-weight:bold;text-transform:uppercase;color:#555}
.curate-rows .text{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;overflow-wrap:anywhere}
"""
_CSS_PAGE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#222}
main{max-width:1100px;margin:0 auto;padding:1.2em 1.6em 3em;background:#fff;min-height:100vh}
h1{margin:.2em 0 .1em} h2{border-bottom:2px solid #e3e3e3;padding-bottom:.2em;margin-top:1.6em}
.sub{color:#666;font-size:13px} .missing{color:#8a6d3b;background:#fcf8e3;padding:.4em .7em;border-radius:4px}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:1em}
figure{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:.5em;background:#fff}
figure.wide{grid-column:1/-1} figure img{max-width:100%;height:auto;display:block;margin:0 auto} figcaption{font-size:13px;color:#444;text-align:center}
.cards{display:flex;flex-wrap:wrap;gap:.7em}.card{background:#f3f6fa;border-radius:6px;padding:.5em .9em;min-width:8em}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#555}
"""


def _table(headers: list[str], rows: Iterable[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    body = "".join("<tr>" + "".join(
        f"<td class='n'>{html.escape(_fmt(v))}</td>" if i in numeric else f"<td>{html.escape(_fmt(v))}</td>"
        for i, v in enumerate(r)) + "</tr>" for r in rows)
    return "<table class='curate'><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + f"</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.4f}".rstrip("0").rstrip(".") if abs(v) < 1 else f"{v:,.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _pool_section(ws: Workspace) -> str:
    from curate.pools import user_turns

    info = ws.info()
    convs = ws.conversations() if ws.has_pool else []
    empty = sum(any(r is None or not r.strip() for _, r in user_turns(c)) for c in convs)
    multi = sum(len(user_turns(c)) > 1 for c in convs)
    rejects = sum(int(s.get("rejects") or 0) for s in info["sources"])
    cards = [(f"{info['rows']:,}", "rows"), (f"{len(info['formats'])}", "formats"),
             (f"{len(info['sources'])}", "sources loaded"), (f"{multi:,}", "multi-turn rows"),
             (f"{empty:,}", "rows with an empty or missing response"), (f"{rejects:,}", "records rejected at load")]
    out = ['<div class="cards">' + "".join(f'<div class="card"><b>{v}</b><span>{html.escape(k)}</span></div>'
                                           for v, k in cards) + "</div>"]
    out.append("<h3>formats</h3>" + _table(["format", "rows"], sorted(info["formats"].items(), key=lambda kv: -kv[1]), {1}))
    out.append("<h3>sources</h3>" + _table(
        ["source", "loaded at", "read", "added", "already present", "empty responses", "rejected"],
        [[s.get("source"), s.get("loaded_at"), s.get("rows_read"), s.get("rows_added"), s.get("already_present"),
          s.get("empty_responses"), s.get("rejects")] for s in info["sources"]], {2, 3, 4, 5, 6}))
    if ws.has_pool and "source" in ws.pool.column_names:
        out.append("<h3>rows by source column</h3>" + _table(
            ["source", "rows"], Counter(map(str, ws.column("source"))).most_common(20), {1}))
    rejects_file = ws.path / "rejects.jsonl"
    if rejects_file.exists():
        examples = []
        with open(rejects_file, encoding="utf-8") as fh:
            for line, _ in zip(fh, range(5), strict=False):
                rec = json.loads(line)
                examples.append([f"{rec.get('path')}: {rec.get('location')}", rec.get("reason"), _clip(str(rec.get("raw", "")), 160)])
        out.append(f"<h3>rejected records (first {len(examples)}; all in <code>{html.escape(str(rejects_file))}</code>)</h3>"
                   + _table(["where", "reason", "record"], examples))
    return "".join(out)


def _column_stats_table(ws: Workspace, columns: dict[str, dict[str, Any]]) -> str:
    """Every derived column: kind, fill, failures, numeric summary, provenance."""
    rows = "".join(f"<tr><td><b>{html.escape(n)}</b></td>{_stats_cells(column_stats(ws, n))}"
                   f"<td class='prov'>{html.escape(_provenance_line(p))}</td></tr>" for n, p in columns.items())
    return ("<table class='curate'><tr><th>column</th><th>kind</th><th>filled</th><th>failures</th><th>mean</th>"
            f"<th>min</th><th>max</th><th>values</th><th>provenance</th></tr>{rows}</table>")


def _columns_section(ws: Workspace) -> str:
    judges = judge_usage(ws)
    out = []
    if judges:
        total_cost = sum(j["cost_usd"] or 0 for j in judges)
        total_tokens = sum((j["prompt_tokens"] or 0) + (j["completion_tokens"] or 0) for j in judges)
        out.append(f"<p>{len(judges)} judge column(s); {total_tokens:,} tokens; total cost ${total_cost:,.4f}</p>")
        out.append(_table(
            ["column", "judge", "prompt", "version", "fingerprint", "model", "backend", "calls", "cached",
             "prompt tokens", "completion tokens", "cost $"],
            [[j["column"], j["judge"], j["prompt"], j["prompt_version"], (str(j["fingerprint"])[:12] if j["fingerprint"] else None),
              j["model"], j["backend"], j["calls"], j["cached"], j["prompt_tokens"], j["completion_tokens"],
              j["cost_usd"]] for j in judges], {7, 8, 9, 10, 11}))
    columns = ws.columns  # one read of every column's provenance for this section
    scorers = [(n, p) for n, p in columns.items() if p.get("kind") == "scorer" and not n.endswith("_failure")]
    if scorers:
        out.append("<p>scored by trained scorers (no LLM calls, $0):</p>")
        out.append(_table(["column", "imitates", "labels it learned from", "held-out agreement (Spearman)"],
                          [[n, p.get("imitates"), (p.get("imitates_detail") or {}).get("label_set"),
                            (p.get("holdout_agreement") or {}).get("spearman")] for n, p in scorers], set()))
    if not judges and not scorers:
        out.append("<p class='missing'>no judge has scored this pool yet: run <code>curate run</code> with "
                   "<code>--base-url/--model</code> or score in Python (<code>ws.score(...)</code>)</p>")
    if columns:
        out.append("<h3>all derived columns</h3>" + _column_stats_table(ws, columns))
    if ws.embedding_sets:
        out.append("<h3>embeddings</h3>" + _table(["name", "rows", "dims", "provenance"], [
            [n, m["shape"][0], m["shape"][1], _provenance_line(m)] for n, m in ws.embedding_sets.items()], {1, 2}))
    return "".join(out)


def _failures_section(ws: Workspace) -> str:
    fail_cols = [n for n in ws.columns if n.endswith("_failure")]
    if not fail_cols:
        return "<p>no failure columns (no judge has run, so nothing could fail)</p>"
    out = []
    for col in fail_cols:
        s = failure_summary(ws, col)
        out.append(f"<h3>{html.escape(col)}: {s['failed']:,} failure(s) in {s['rows']:,} rows</h3>")
        if not s["failed"]:
            continue
        rows = []
        for group, g in s["groups"].items():
            ex = "; ".join(f"{e['id']}: {_clip(e['reason'], 140)}" + (f" — raw: {_clip(e['raw'], 80)!r}" if e["raw"] else "")
                           for e in g["examples"])
            rows.append([group, g["count"], ex])
        out.append(_table(["reason", "failures", "examples (row: reason — raw output)"], rows, {1}))
    return "".join(out)


def _selections_section(ws: Workspace) -> str:
    selections = ws.selections
    if not selections:
        return "<p class='missing'>no selection yet: run a selection (<code>curate run</code> or <code>ws.select(...)</code>)</p>"
    out = []
    for name in selections:
        s = selection_summary(ws.selection(name))
        prov = s["provenance"]
        params = {k: v for k, v in prov.items() if k not in ("name", "created", "method")}
        out.append(f"<h3>{html.escape(name)}: {s['kept']:,} kept, {s['dropped']:,} dropped of {s['considered']:,} considered</h3>"
                   f"<p class='sub'>method {html.escape(str(prov.get('method', '?')))}"
                   + (f"; {html.escape(json.dumps(params, default=str)[:400])}" if params else "")
                   + f"; created {html.escape(str(prov.get('created', '')))}</p>")
        chain = _chain(selections, name)
        if len(chain) > 1:
            out.append("<p>steps, in order:</p>" + _table(
                ["#", "selection", "method", "rows in", "kept", "dropped"],
                [[i + 1, n, p.get("method"), p.get("candidates"), (p.get("counts") or {}).get("kept"),
                  p["candidates"] - (p.get("counts") or {}).get("kept", 0) if p.get("candidates") is not None else None]
                 for i, (n, p) in enumerate(chain)], {0, 3, 4, 5}))
        out.append(_groups_table(s))
    return "".join(out)


def _chain(selections: dict[str, dict[str, Any]], name: str) -> list[tuple[str, dict[str, Any]]]:
    """The selections ``name`` was built from, first step first (``select`` records each step's input)."""
    chain: list[tuple[str, dict[str, Any]]] = []
    while name in selections and all(name != n for n, _ in chain):
        chain.append((name, selections[name]))
        name = selections[name].get("input_selection")
    return chain[::-1]


def _plots_section(ws: Workspace, selection: str | None) -> str:
    from curate.report.plots import all_plots, figure_data_uri

    figs = []
    for title, fig, missing in all_plots(ws, selection):
        if fig is None:
            figs.append(f"<figure><figcaption>{html.escape(title)}</figcaption><p class='missing'>{html.escape(str(missing))}</p></figure>")
        else:
            wide = " class='wide'" if fig.get_figwidth() > 7 else ""  # multi-panel figures take a full row
            figs.append(f"<figure{wide}><img alt='{html.escape(title)}' src='{figure_data_uri(fig)}'>"
                        f"<figcaption>{html.escape(title)}</figcaption></figure>")
    return '<div class="plots">' + "".join(figs) + "</div>"


def _samples_section(ws: Workspace, selection: str | None, samples: int) -> str:
    if not selection:
        return "<p class='missing'>no selection yet, so no kept or dropped rows to show</p>"
    sel = ws.selection(selection)
    index = ws.index
    kept = [i for i in sel.ids if i in index][:samples]
    dropped: list[str] = []
    notes: dict[str, str] = {}
    seen_groups: set[str] = set()
    table = sel.table.to_pylist()
    for r in table:  # one row per reason group first, so the examples show the different reasons
        if r["decision"] == "kept" or r["id"] not in index:
            continue
        group = reason_group(r["reason"], r["decision"])
        if group in seen_groups:
            continue
        seen_groups.add(group)
        dropped.append(r["id"])
        notes[r["id"]] = f"{r['decision']}: {r['reason'] or group}"
        if len(dropped) >= samples:
            break
    for i, r in enumerate(table):
        if r["decision"] == "kept":
            notes[r["id"]] = f"kept, rank {r['rank'] if r.get('rank') is not None else i}" + (f": {r['reason']}" if r["reason"] else "")
    columns = list(ws.columns)
    kept_view = RowsView(ws, kept, columns, notes=notes)
    dropped_view = RowsView(ws, dropped, columns, notes=notes)
    return (f"<h3>kept by {html.escape(selection)} (first {len(kept)} in rank order)</h3>{kept_view._repr_html_()}"
            f"<h3>dropped by {html.escape(selection)} (one per reason)</h3>"
            + (dropped_view._repr_html_() if dropped else "<p>no row was dropped</p>"))


def report_html(ws: Workspace, selection: str | None = None, samples: int = 3) -> str:
    """The curation report as one HTML string (see :func:`build_report`)."""
    from curate.report.plots import default_selection

    selection = selection if selection is not None else default_selection(ws)
    if selection is not None and selection not in ws.selections:
        raise KeyError(f"no selection {selection!r}; have {sorted(ws.selections)}")
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    sections = [
        ("pool", _pool_section(ws)),
        ("judges, prompts, models and cost", _columns_section(ws)),
        ("failures", _failures_section(ws)),
        ("selections: what was kept and why the rest was dropped", _selections_section(ws)),
        ("plots" + (f" (selection {selection!r} highlighted)" if selection else ""), _plots_section(ws, selection)),
        ("sample rows", _samples_section(ws, selection, samples)),
    ]
    body = "".join(f'<section id="s{i}"><h2>{html.escape(t)}</h2>{c}</section>' for i, (t, c) in enumerate(sections))
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            # self-contained by construction; the policy makes the browser refuse anything else
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
            f"<title>curation report: {html.escape(ws.path.name)}</title><style>{_CSS_PAGE}{_CSS_TABLE}{_CSS_ROWS}</style>"
            f"</head><body><main><h1>Curation report</h1><p class='sub'>workspace <code>{html.escape(str(ws.path))}</code>"
            f" · generated {now}</p>{body}</main></body></html>")


def build_report(ws: Workspace, out: str | Path = "report.html", selection: str | None = None,
                 samples: int = 3) -> Path:
    """Write the curation report: one self-contained HTML page (inline CSS, plots as data URIs, no script).

    ``selection`` is the one highlighted in plots and samples (default: the most recent one).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    page = report_html(ws, selection=selection, samples=samples)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
