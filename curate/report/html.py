"""The curation report: one self-contained HTML page (the stylesheet inlined from ``assets/report.css``,
plots as ``data:`` URIs, no script and no external request): pool summary, judges with tokens and
cost, failures by code, each selection's kept/dropped counts by reason code, plots, sample rows.
:func:`report_view` shows it in a notebook, styled as the page is."""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from curate.codes import Decision
from curate.defaults import REPORT
from curate.errors import OptionError, OutPathError
from curate.report.datamap import datamap_section
from curate.report.neighbours import neighbours_section
from curate.report.sections import (
    damaged_section,
    failures_section,
    judges_section,
    pool_section,
    selections_section,
)
from curate.report.summary import default_selection
from curate.report.tables import css, esc
from curate.report.views import RowsView
from curate.storage.outputs import check_outside_workspace, write_output_file
from curate.storage.write_errors import check_parent_folders

if TYPE_CHECKING:
    from curate.storage.workspace import Workspace

# self-contained by construction; the policy makes the browser refuse anything else
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def plots_section(ws: Workspace, selection: str | None) -> str:
    from curate.report.plots import (  # matplotlib only when a report is drawn
        drawn_or_note,
        figure_data_uri,
        plot_plans,
    )

    figs = []
    for title, source, make in plot_plans(ws, selection):
        fig, missing = drawn_or_note(title, source, make)
        uri, missing = drawn_or_note(title, source, lambda fig=fig: figure_data_uri(fig)) if fig else (None, missing)
        if uri is None:  # a figure that cannot be rendered is a note as well: the rest of the page is written
            figs.append(f"<figure><figcaption>{esc(title)}</figcaption><p class='missing'>{esc(missing)}</p></figure>")
        else:
            wide = " class='wide'" if fig.get_figwidth() > 7 else ""  # multi-panel figures take a full row
            figs.append(f"<figure{wide}><img alt='{esc(title)}' src='{uri}'>"
                        f"<figcaption>{esc(title)}</figcaption></figure>")
    from curate.report.plot_inputs import NOT_TAGGED, tags_asked_for

    left_out = "" if tags_asked_for(ws) else f"<p class='sub'>{esc(NOT_TAGGED)}</p>"  # a step not taken: no warning
    return '<div class="plots">' + "".join(figs) + "</div>" + left_out


def samples_section(ws: Workspace, selection: str | None, samples: int) -> str:
    """The first kept rows (rank from 1) and one dropped row per (decision, reason code)."""
    if not selection:
        return "<p class='missing'>no selection yet, so no kept or dropped rows to show</p>"
    if samples == 0:  # "first 0" over an empty block, and "no row was dropped" where rows were
        return "<p class='sub'>no sample rows: samples=0 (--samples 0) asks for none</p>"
    sel, pool_ids = ws.selection(selection), ws.pool.data.table.column("id")  # rows still in the pool
    notes: dict[str, str] = {}
    for r in sel.rows(decision=Decision.KEPT.value, ids=pool_ids, limit=samples):
        notes[r["id"]] = f"kept, rank {r['rank']}: {r['why']}"
    kept = list(notes)
    dropped = [r for r in sel.rows(ids=pool_ids, first_of_each=True) if r["decision"] != Decision.KEPT][:samples]
    notes.update((r["id"], f"{r['decision']}, rank {r['rank']}: {r['why']}") for r in dropped)
    dropped = [r["id"] for r in dropped]
    columns = list(ws.columns)
    kept_view = RowsView(ws, kept, columns, notes=notes)
    dropped_view = RowsView(ws, dropped, columns, notes=notes)
    gone = "<p>none of them is in the pool now (a re-run on an edited source removed them)</p>"
    any_dropped = sum(n for d, n in sel.decisions().items() if d != Decision.KEPT)
    return ((f"<h3>kept by {esc(selection)} (first {len(kept)} in rank order)</h3>{kept_view.html_block()}" if kept
             else f"<h3>kept by {esc(selection)}</h3>" + (gone if len(sel) else "<p>no row kept</p>"))
            + f"<h3>dropped by {esc(selection)} (one per reason)</h3>"
            + (dropped_view.html_block() if dropped else gone if any_dropped else "<p>no row was dropped</p>"))


def report_html(ws: Workspace, selection: str | None = None, samples: int = REPORT.samples) -> str:
    """The curation report as one HTML string (see :func:`build_report`)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:  # -1 sliced off one row: [:-1]
        raise OptionError(f"report: samples is a number of rows >= 0 (as --samples), not {samples!r}")
    with ws.reading():  # its sections read the same score columns several times: from disk once
        return _report_html(ws, selection, samples)


def _report_html(ws: Workspace, selection: str | None, samples: int) -> str:
    selection = selection if selection is not None else default_selection(ws)
    if selection is not None:
        ws.selection(selection)  # one not stored, or damaged, is an error naming it before the page is built
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    sections = [
        *([("damaged files: left out of this report", damaged)] if (damaged := damaged_section(ws)) else []),
        ("pool", pool_section(ws)),
        ("paid LLM steps (judges, tagger, evol labels): prompts, models and cost", judges_section(ws)),
        ("failures", failures_section(ws)),
        ("selections: what was kept and why the rest was dropped", selections_section(ws)),
        *([("why rows were rejected: their nearest kept rows", why)] if (why := neighbours_section(ws)) else []),
        *([("training dynamics: the data map", dm)] if (dm := datamap_section(ws, selection)) else []),
        ("plots" + (f" (selection {selection!r} highlighted)" if selection else ""), plots_section(ws, selection)),
        ("sample rows", samples_section(ws, selection, samples)),
    ]
    body = "".join(f'<section id="s{i}"><h2>{esc(t)}</h2>{c}</section>' for i, (t, c) in enumerate(sections))
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">"
            f"<title>curation report: {esc(ws.path.name)}</title><style>{css()}</style></head>"
            # the class on a div, not on body: shown inside a notebook's output div (report_view, or HTML(page)) the
            # page's body tag is dropped, and every .curate-report rule with it
            f"<body style='margin:0'><div class='curate-report'><main><h1>Curation report</h1><p class='sub'>"
            f"workspace <code>{esc(ws.path)}</code> · generated {now}</p>{body}</main></div></body></html>")


def build_report(ws: Workspace, out: str | Path = REPORT.path, selection: str | None = None,
                 samples: int = REPORT.samples) -> Path:
    """Write the curation report: one self-contained HTML page (inline CSS, plots as data URIs, no script).

    ``selection`` is the one highlighted in plots and samples (default: the most recent one).
    """
    out = Path(out)
    check_outside_workspace(ws, out, "a report")
    check_parent_folders(out)
    if out.is_dir():  # named before the page is built, and no temporary file left behind
        raise OutPathError(f"{out}: a folder, where the report's HTML file is to be written; name a file, e.g. "
                           f"{out / REPORT.path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_output_file(out, report_html(ws, selection=selection, samples=samples).encode("utf-8"))


class ReportView:
    """A curation report shown inline in Jupyter (``_repr_html_``): its stylesheet and its body, without the page's
    html, head and body tags, which a notebook's output div drops."""

    def __init__(self, page: str, path: Path | None = None):
        self.page, self.path = page, path

    def _repr_html_(self) -> str:
        style = re.search(r"<style>.*?</style>", self.page, re.S)
        body = re.search(r"<body([^>]*)>(.*)</body>", self.page, re.S)
        if body is None:  # not a page curate wrote: shown as it is
            return self.page
        inner = body.group(2)
        if "curate-report" in body.group(1):  # a report written before the class moved onto a div
            inner = f"<div class='curate-report'>{inner}</div>"
        return (style.group(0) if style else "") + inner

    def __repr__(self) -> str:
        return f"ReportView({str(self.path) if self.path else 'a curation report'})"


def report_view(source: Workspace | str | os.PathLike, selection: str | None = None,
                samples: int = REPORT.samples) -> ReportView:
    """The curation report to show in a notebook: ``report_view(ws.report("report.html"))`` shows the page written
    (a path), ``report_view(ws)`` builds it without writing a file."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return ReportView(path.read_text(encoding="utf-8"), path)
    return ReportView(report_html(source, selection=selection, samples=samples))
