"""Notebook views (``_repr_html_``) and the data behind ``curate info``.

- :func:`show_rows` (``ws.show``) returns a :class:`RowsView`: conversations with their values, as HTML
  in Jupyter and as text elsewhere.
- :func:`workspace_html` (``ws._repr_html_``) and :func:`selection_html`: a workspace and a selection
  at a glance.
- :func:`info_data`: what ``curate info`` prints (the CLI does the printing).

Nothing here imports a progress bar or a widget library, so importing it in a kernel without
ipywidgets warns nothing.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from curate.report.sections import column_stats_table, groups_table
from curate.report.summary import (
    decision_counts,
    failure_text,
    has_value,
    is_failure_column,
    llm_usage,
    never_computed,
    provenance_line,
    selection_summary,
    sources,
)
from curate.report.tables import (
    cell_text,
    conversation_html,
    conversation_text,
    esc,
    money,
    scrolling,
    style,
    visible_controls,
)
from curate.storage.columns import column_names
from curate.storage.damage import DamagedFileError
from curate.storage.files import is_name
from curate.storage.label_sets import label_rows
from curate.storage.pool import kept_rows_gone, out_of_date
from curate.storage.selection_inputs import stale_note

if TYPE_CHECKING:
    from curate.storage.selection import Selection
    from curate.storage.workspace import Workspace


REPR_VALUE_CHARS = 80  # a value in a RowsView's text form is cut to this many characters, with "…"


def _display_values(ws: Workspace, columns: list[str], ids: list[str]) -> dict[str, list[str | None]]:
    """Per column, each row's value as text: per-turn values with their reduced row value, failures in
    words (each message once), None where the row has nothing."""
    provs = ws.columns
    out: dict[str, list[str | None]] = {}
    for name in columns:
        prov = provs.get(name, {})
        if is_failure_column(name, prov):
            of = prov.get("of") or name.removesuffix("_failure")
            out[name] = [failure_text(f, with_code=True) or None for f in ws.failures(of, ids)]  # as codes group them
            continue
        values = ws.column(name, ids)
        reducer = prov.get("reducer")
        row_values = ws.row_values(name, ids) if reducer else [None] * len(values)
        texts: list[str | None] = []
        for v, row in zip(values, row_values, strict=True):
            if v in (None, [], "") or (isinstance(v, list) and all(x is None for x in v)):
                texts.append(None)  # no value: the failure column says why
            elif isinstance(v, list) and len(v) > 1 and row is not None:
                texts.append(f"{cell_text(v)} ({reducer} {row:.3g})")
            else:
                texts.append(cell_text(v))
        out[name] = texts
    return out


class RowsView:
    """Rows of a workspace for a notebook: conversations and derived values, as HTML and as text.

    ``position`` is the row's index in the pool (0-based, what ``ws.show`` accepts); ranks in notes
    count from 1.
    """

    def __init__(self, ws: Workspace, ids: list[str], columns: list[str], note: str = "",
                 notes: dict[str, str] | None = None, max_chars: int = 2000):
        self.ids = ids
        self.note = note
        self._notes = notes or {}
        self._max_chars = max_chars
        index = ws.index
        convs = ws.conversations(ids) if ids else []  # (pyarrow cannot take an empty index list)
        values = _display_values(ws, columns, ids)  # one read per column, not per row
        self.rows = [{"id": rid, "position": index[rid], "conversation": convs[k],
                      "values": {c: values[c][k] for c in columns if values[c][k] is not None}}
                     for k, rid in enumerate(ids)]

    def __len__(self) -> int:
        return len(self.rows)

    def _repr_html_(self) -> str:
        blocks = [style(), '<div class="curate-rows">']
        if self.note:
            blocks.append(f"<p>{esc(self.note)}</p>")
        for row in self.rows:
            blocks.append(self._row_html(row))
        blocks.append("</div>")
        return "".join(blocks)

    def html_block(self) -> str:
        """The rows without the stylesheet (for a page that already has it)."""
        return "".join(['<div class="curate-rows">', *(self._row_html(r) for r in self.rows), "</div>"])

    def _row_html(self, row: dict[str, Any]) -> str:
        # user text in <bdi>: a U+202E in a tag or a row id reverses only itself, not curate's text after it
        vals = "".join(f'<span class="kv"><b><bdi>{esc(k)}</bdi></b> <bdi>{esc(v)}</bdi></span>'
                       for k, v in row["values"].items())
        note = self._notes.get(row["id"])
        note_html = f'<bdi class="note">{esc(note)}</bdi>' if note else ""
        return (f'<div class="row"><div class="rowhead">index {row["position"]} <code><bdi>{esc(row["id"])}</bdi></code> '
                f'{note_html}</div><div class="vals">{vals}</div>'
                f'{conversation_html(row["conversation"], self._max_chars)}</div>')

    def __repr__(self) -> str:
        out = [self.note] if self.note else []
        for row in self.rows:
            vals = "; ".join(f"{k}={v if len(v) <= REPR_VALUE_CHARS else v[:REPR_VALUE_CHARS - 1] + '…'}"
                             for k, v in row["values"].items())  # a cut value says so
            extra = f"  ({self._notes[row['id']]})" if row["id"] in self._notes else ""
            out.append(f"--- index {row['position']} id={row['id']}{extra}" + (f"\n    {vals}" if vals else ""))
            out.append(conversation_text(row["conversation"], self._max_chars))
        return visible_controls("\n".join(out))  # ESC, BEL, CR, U+202E in a row as escapes, not terminal controls


def _position(value: Any) -> int | None:
    """A pool position: an int or anything that is one (numpy's integers, from ``np.argsort`` and the like)."""
    if isinstance(value, (bool, str)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def show_rows(ws: Workspace, rows: Any, columns: str | list[str] | None = None, limit: int | None = 20,
              max_chars: int = 2000) -> RowsView:
    """``ws.show``: rows given as ids, pool positions, a slice, or a selection name (its kept rows in order);
    at most ``limit`` of them (None: all)."""
    from curate.errors import ArgumentTypeError, OptionError
    from curate.storage.pool import no_pool_loaded

    if not ws.has_pool:  # not "row 0 is outside the pool (0..-1)"
        raise no_pool_loaded(ws)
    if limit is None:
        limit = len(ws)
    elif isinstance(limit, bool) or _position(limit) is None or limit < 0:
        raise OptionError(f"show: limit is a number of rows >= 0 (or None for all), not {limit!r}")
    note = ""
    if isinstance(rows, bool) or not isinstance(rows, str | slice | Iterable) and _position(rows) is None:
        raise ArgumentTypeError(f"show: rows are ids, pool positions, a slice or a selection name, not {rows!r}")
    if isinstance(rows, str) and is_name(rows) and ws.has_selection(rows):  # a damaged one: ws.selection names it
        gone = set(kept_rows_gone(ws, rows))  # a re-run on an edited source removed them: the others are shown
        kept = [rid for rid in ws.selection(rows).ids if rid not in gone]
        ids = kept[:limit]
        note = f"selection {rows!r}: {len(kept):,} kept" + (f", showing the first {len(ids)}" if len(kept) > len(ids) else "")
        note += f" ({out_of_date(len(gone))})" if gone else ""
    else:
        if isinstance(rows, str) or _position(rows) is not None:
            rows = [rows]
        elif isinstance(rows, slice):
            rows = range(len(ws))[rows]
        from curate.errors import NoSuchRowError  # a CurateError: one line in the CLI and in a notebook

        ids = []
        for r in rows:
            if (at := _position(r)) is not None:
                if not -len(ws) <= at < len(ws):
                    raise NoSuchRowError(f"show: row {at} is outside the pool (0..{len(ws) - 1})")
                ids.append(ws.ids[at])
            elif isinstance(r, str):
                if r not in ws.index:
                    raise NoSuchRowError(f"show: no row with id {r!r} (and no selection of that name: "
                                         f"{sorted(ws.selections)})")
                ids.append(r)
            else:
                raise ArgumentTypeError(f"show: rows are ids, pool positions or a selection name, not {type(r).__name__}")
        if len(ids) > limit:
            note = f"{len(ids):,} rows, showing the first {limit}"
            ids = ids[:limit]
    columns = list(ws.columns) if columns is None else column_names(columns)
    return RowsView(ws, ids, columns, note=note, max_chars=max_chars)


def _decision_line(sel: Selection) -> str:
    kept, rest = decision_counts(sel)
    return f"{kept:,} kept" + ("; " + ", ".join(f"{k} {v:,}" for k, v in rest) if rest else "")


def run_result_html(selected: int, outputs: dict[str, Any], timings: dict[str, float]) -> str:
    """A `curate run` result in a notebook: rows selected, the files written, each step's time."""
    files = "".join(f"<li>{esc(k)}: <code>{esc(str(v))}</code></li>" for k, v in outputs.items())
    steps = esc(", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return f"<div><b>curate run</b>: {selected:,} rows selected<ul>{files}</ul>{steps}</div>"


def run_result_text(workspace: Any, selection: str, selected: int, outputs: dict[str, Any],
                    timings: dict[str, float]) -> str:
    """A `curate run` result as one line: the workspace, the selection and its rows, the files, each step's time."""
    steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    files = ", ".join(f"{name}={str(path)!r}" for name, path in outputs.items())
    return (f"RunResult(workspace={str(workspace)!r}, selection={selection!r} ({selected:,} rows), "
            f"outputs: {files or 'none'}; steps: {steps})")


class WorkspaceInfo(dict):
    """``ws.info()``: a dict, every key as before (``curate info --json`` prints it), shown as one line and, in a
    notebook, as the workspace view (its repr was 13,458 characters for a small workspace)."""

    workspace: Workspace = None

    def __init__(self, info: dict[str, Any], ws: Workspace):
        super().__init__(info)
        self.workspace = ws

    def __repr__(self) -> str:
        return f"WorkspaceInfo({self['path']!r}: {_info_counts(self)})"

    def _repr_html_(self) -> str:
        return workspace_html(self.workspace, taken=self)


def _info_counts(info: dict[str, Any]) -> str:
    counts = ", ".join(f"{n:,} {k.replace('_', ' ')[:-1] if n == 1 and k.endswith('s') else k.replace('_', ' ')}"
                       for k in ("columns", "embeddings", "selections", "label_sets", "damaged")
                       for n in [len(info.get(k) or ())])  # "1 column", not "1 columns"
    return f"{info['rows']:,} rows; {counts}"


def workspace_html(ws: Workspace, taken: dict[str, Any] | None = None) -> str:
    """The notebook view of a workspace: rows, formats, sources, column stats, embeddings, selections, label sets.
    ``taken``: an earlier ``ws.info()`` being shown (its column stats and selections' rows are read now, so the view
    is of the workspace now): where the workspace has changed since, the view says so and what the dict holds."""
    with ws.reading():  # a column's stats read it more than once
        return _workspace_html(ws, taken)


def _workspace_html(ws: Workspace, taken: dict[str, Any] | None = None) -> str:
    info = ws.info()
    changed = (f"<p class='curate-warn'>the workspace has changed since this info was taken ({esc(_info_counts(taken))}"
               f"): shown here as it is now; the dict holds it as it was</p>"
               if taken is not None and dict(taken) != dict(info) else "")
    fmts = ", ".join(f"{k}: {v:,}" for k, v in info["formats"].items())
    cols = column_stats_table(ws, info["columns"]) if info["columns"] else "<p>no derived columns yet</p>"
    embs = "".join(f"<li>embeddings <b>{esc(n)}</b>: {m['shape'][0]:,} x {m['shape'][1]}{esc(_of_text(m))} "
                   f"({esc(provenance_line(m))})</li>" for n, m in info["embeddings"].items())
    found = {d["path"]: d for d in info["damaged"]}
    sels = "".join(f"<li>selection <b>{esc(n)}</b>: {esc(_decision_line(sel))} "
                   f"({esc(provenance_line(p))}){_stale_html(ws, sel)}</li>" for n, p in info["selections"].items()
                   if (sel := _unless_damaged(lambda n=n: ws.selection(n), found)) is not None)
    labs = "".join(f"<li>{esc(label_set_text(entry))}</li>" for entry in label_set_entries(ws, info, found))
    srcs = "".join(f"<li>{esc(s['source'])}: {s['rows_added_all']:,} added"
                   + (f" over {s['loads']} loads" if s["loads"] > 1 else "")
                   + (f", {s['rejects']:,} rejected" if s.get("rejects") else "") + "</li>" for s in sources(ws))
    damaged = "".join(f"<li class='curate-warn'>damaged {esc(d['kind'])} <b>{esc(d['name'])}</b>: {esc(d['path'])}: "
                      f"{esc(d['problem'])}; {esc(d['fix'])}</li>" for d in found.values())
    return (f"{style()}<div>{changed}<b>curate workspace</b> <code>{esc(info['path'])}</code><br>"
            f"{info['rows']:,} rows ({esc(fmts) or 'no pool yet'})<ul>{srcs}{embs}{sels}{labs}{damaged}"
            f"{_last_run_html(info.get('last_run'))}</ul>{cols}</div>")


def _last_run_html(run: dict[str, Any] | None) -> str:
    """The ``last run: ...`` line ``curate info`` prints for a run's workspace, red where the run failed or was
    killed ('' for a workspace no ``curate run`` made)."""
    if not run:
        return ""
    from curate.storage.last_run import last_run_line

    warn = " class='curate-warn'" if run["status"] in ("failed", "killed", "unreadable") else ""
    return f"<li{warn}>{esc(last_run_line(run))}</li>"


def _of_text(meta: dict[str, Any]) -> str:
    """`` of instruction``: which text of each row an embedding set holds ('' when it records none)."""
    return f" of {meta['text']}" if meta.get("text") else ""


def _unless_damaged(read: Callable[[], Any], damaged: dict[str, dict[str, Any]]) -> Any:
    """What ``read`` gives, or None with the file added to ``damaged`` (path -> DamagedFile.to_dict()) when it is
    damaged in a way only reading its rows shows (a selection's rows not those its metadata records)."""
    try:
        return read()
    except DamagedFileError as exc:
        damaged.setdefault(str(exc.damage.path), exc.damage.to_dict())
        return None


def _stale_html(ws: Workspace, sel: Selection) -> str:
    gone = stale_note(ws, sel)
    return f" <span class='curate-warn'>{esc(gone)}</span>" if gone else ""


def selection_html(sel: Selection, head: int = 10, stale: str = "") -> str:
    """The notebook view of a selection: counts by decision, reason groups, and its first rows (ranks from 1);
    ``stale``: what :func:`~curate.storage.selection_inputs.stale_note` says of it, shown under its title."""
    from curate.select.fitted import fitted_rule_lines  # the rule a fitting selector ranked by

    summary = selection_summary(sel)
    method = sel.provenance.get("method", "?")
    first = sel.rows(limit=head)  # ranks from 1, as sel.rows() gives them
    rows = "".join(f"<tr><td class='n'>{r['rank'] if r['rank'] is not None else ''}</td>"
                   f"<td><code>{esc(r['id'])}</code></td><td>{esc(r['decision'])}</td><td>{esc(r['why'])}</td></tr>"
                   for r in first)
    return (f"{style()}<div><b>selection {esc(sel.name)}</b> "
            f"({esc(_decision_line(sel))} of {summary['considered']:,} considered; method {esc(method)})"
            + (f" <span class='curate-warn'>{esc(stale)}</span>" if stale else "")
            + "".join(f"<div>{esc(line)}</div>" for line in fitted_rule_lines(sel.provenance)) +
            f"{groups_table(summary)}"
            f"<details><summary>first {len(first)} rows in rank order</summary>" + scrolling("<table class='curate'><tr>"
            f"<th>rank</th><th>id</th><th>decision</th><th>why</th></tr>{rows}</table>") + "</details></div>")


def _missing_rows(ws: Workspace, name: str) -> tuple[int, int, int]:
    """(rows without a complete value, of those the ones never asked for, and the ones asked for with no failure
    saying why)."""
    never = never_computed(ws, name)
    missing = unexplained = 0
    for rid, value, fails in zip(ws.ids, ws.turn_values(name), ws.failures(name), strict=True):
        if value is None or any(v is None for v in value):
            missing += 1
            unexplained += not fails and rid not in never
    return missing, len(never), unexplained


def info_data(ws: Workspace) -> dict[str, Any]:
    """What ``curate info`` shows: rows, formats, sources (one per file), columns with fill and provenance
    (judges with missing rows, tokens and cost over all runs), embeddings, selections, label sets (Evol's with
    the requests and cost of every run that made them), and the damaged files (those the listing found, and those
    found reading a column or a selection), each once."""
    info = ws.info()
    usage = {u["column"]: u for u in llm_usage(ws)}
    damaged = {d["path"]: d for d in info["damaged"]}

    def tolerant(read: Callable[[], Any]) -> Any:
        return _unless_damaged(read, damaged)

    columns = []
    for name, prov in info["columns"].items():
        if (values := tolerant(lambda name=name: ws.column(name))) is None:
            continue
        entry: dict[str, Any] = {"name": name, "filled": sum(map(has_value, values)), "rows": len(values),
                                 "provenance": provenance_line(prov)}
        if name in usage and (missing := tolerant(lambda name=name: _missing_rows(ws, name))) is not None:
            entry.update(zip(("missing", "never_computed", "unexplained"), missing, strict=True), usage=usage[name])
        columns.append(entry)
    selections = [{"name": n, "kept": len(sel), "gone": len(kept_rows_gone(ws, n)), "stale": stale_note(ws, sel),
                   "provenance": provenance_line(p)}
                  for n, p in info["selections"].items() if (sel := tolerant(lambda n=n: ws.selection(n))) is not None]
    label_sets = label_set_entries(ws, info, damaged, usage)  # before damaged is listed: it may add to it
    return {
        "path": info["path"], "rows": info["rows"], "formats": info["formats"], "sources": sources(ws),
        "columns": columns, "pool_columns": info["pool_columns"],
        "embeddings": [{"name": n, "rows": m["shape"][0], "dims": m["shape"][1], "text": m.get("text"),
                        "provenance": provenance_line(m)}
                       for n, m in info["embeddings"].items()],
        "selections": selections, "label_sets": label_sets, "damaged": list(damaged.values()),
        "last_run": info.get("last_run"),
    }


def label_set_entries(ws: Workspace, info: dict[str, Any], damaged: dict[str, dict[str, Any]],
                      usage: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The label sets of ``info`` (``ws.info()``) as ``curate info`` lists them: each one's rows, what made it, and
    (an Evol set) the LLM usage of its runs; one whose Arrow files cannot be counted is added to ``damaged``."""
    usage = {u["column"]: u for u in llm_usage(ws)} if usage is None else usage
    entries = []
    for name, prov in info["label_sets"].items():
        rows = _unless_damaged(lambda name=name, prov=prov: label_rows(ws.path / "labels" / name, prov), damaged)
        if rows is not None:
            made_by = " ".join(str(prov[k]) for k in ("method", "kind") if prov.get(k)) or "added with ws.add_labels"
            entries.append({"name": name, "rows": rows, "made_by": made_by, "usage": usage.get(f"labels/{name}")})
    return entries


def label_set_text(entry: dict[str, Any]) -> str:
    """One label set of :func:`info_data` in words: ``label set evol_complexity: 9 labels (evol complexity); 1 run(s),
    11 requests sent, 0 answered by the on-disk cache, cost $0.0000``."""
    u = entry["usage"]
    spent = (f"; {u['runs']} run(s), {u['calls'] or 0:,} requests sent, {u['cached'] or 0:,} answered by the on-disk "
             f"cache, cost {money(u['cost_usd'])}" if u else "")
    return f"label set {entry['name']}: {entry['rows']:,} labels ({entry['made_by']}){spent}"
