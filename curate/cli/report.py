"""Looking at a workspace: `curate info` and `curate report`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from curate.cli.common import app, console, err_console
from curate.defaults import REPORT


def _usage_line(entry: dict[str, Any]) -> str:
    from curate.report.tables import money

    u = entry["usage"]
    tokens = ("unknown" if u["prompt_tokens"] is None or u["completion_tokens"] is None
              else f"{u['prompt_tokens'] + u['completion_tokens']:,}")
    explained = entry["missing"] - entry["never_computed"] - entry["unexplained"]
    return (f"missing {entry['missing']:,} (with failure reason {explained:,}, never asked for "
            f"{entry['never_computed']:,}, unexplained {entry['unexplained']:,}); {u['runs']} run(s), {tokens} tokens, "
            f"{money(u['cost_usd'])}; ")


def print_info(info: dict[str, Any], console: Console) -> None:
    """Print :func:`curate.report.views.info_data`: rows, formats, sources, columns, embeddings, selections,
    label sets, the damaged files with their fix."""
    from curate.report.tables import visible_controls
    from curate.report.views import label_set_text

    def say(line: str, **kwargs: Any) -> None:  # a row's ESC, BEL or U+202E shown as an escape, not obeyed
        console.print(visible_controls(line), soft_wrap=True, **{"markup": False, **kwargs})  # a "[red]" in a name is text

    fmts = ", ".join(f"{k} {v:,}" for k, v in info["formats"].items())
    # soft_wrap: these lines carry paths; a console narrower than a line (a pipe: 80 columns) must not break them
    if not fmts:  # it printed "0 rows ()" for a workspace whose first load was killed
        fmts = (f"no pool loaded: a first load that did not finish leaves this; curate load SOURCE --workspace "
                f"{info['path']}")
    say(f"[bold]{escape(info['path'])}[/]: {info['rows']:,} rows ({escape(fmts)})", markup=True)
    for src in info["sources"]:
        loads = f" over {src['loads']} loads (last {src.get('loaded_at')})" if src["loads"] > 1 else ""
        rej = f", {src['rejects']} rejected -> {src['rejects_file']}" if src.get("rejects") else ""
        say(f"  source {src['source']}: {src['rows_added_all']:,} added{loads}{rej}")
    table = Table(title="derived columns", show_lines=False)
    for head in ("column", "filled", "provenance"):
        table.add_column(head)
    for c in info["columns"]:
        line = (_usage_line(c) if "usage" in c else "") + c["provenance"]
        table.add_row(visible_controls(c["name"]), f"{c['filled']:,}/{c['rows']:,}", visible_controls(line))
    if info["columns"]:
        console.print(table)
    for e in info["embeddings"]:
        of = f" of {e['text']}" if e.get("text") else ""
        say(f"  embeddings {e['name']}: {e['rows']:,} x {e['dims']}{of} ({e['provenance']})")
    for s in info["selections"]:
        stale = f"; {s['stale']}" if s.get("stale") else ""
        say(f"  selection {s['name']}: {s['kept']:,} kept ({s['provenance']}){stale}")
    for lab in info["label_sets"]:
        say(f"  {label_set_text(lab)}")
    for d in info["damaged"]:  # listed, not raised: one bad file stops only what needs it
        say(f"  [red]damaged {d['kind']} {escape(d['name'])}[/]: {escape(d['path'])}: "
            f"{escape(d['problem'])}; {escape(d['fix'])}", markup=True)
    say(f"  pool columns: {', '.join(info['pool_columns'])}")
    if run := info.get("last_run"):  # OUT/run.json of the run whose workspace this is
        from curate.storage.last_run import last_run_line

        say(f"  {last_run_line(run)}", style="red" if run["status"] in ("failed", "killed", "unreadable") else None)


@app.command()
def info(workspace: Path = typer.Argument(..., help="Workspace directory."),
         as_json: bool = typer.Option(False, "--json", help="Print ws.info() as one JSON object (for scripts): each "
                                      "column's, embedding set's and selection's full provenance by name."),
         verify: bool = typer.Option(False, "--verify", help="Exit 1 when a column, selection or label set is damaged "
                                     "(listed with its fix; every column's and selection's checksum is checked "
                                     "either way), for a script or a scheduler's check.")) -> None:
    """Show rows, formats, sources, and derived columns with their provenance, and the last run of a run's workspace."""
    from curate.report.views import info_data
    from curate.session import Workspace
    from curate.storage.damage import listed_by_caller
    from curate.storage.outputs import write_all

    ws = Workspace.open(workspace)
    with listed_by_caller():  # info lists the damaged files: the listings' warnings named each a second time
        if not as_json:
            print_info(shown := info_data(ws), console)
        else:
            # the data ws.info() returns, not the view's display strings: a script reads a selection's params. orjson:
            # a NaN or an infinity as null (valid JSON), dates as ISO text, anything else unknown as its text
            import orjson

            write_all(sys.stdout.buffer, orjson.dumps(shown := ws.info(), default=str, option=orjson.OPT_INDENT_2
                                                      | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
            sys.stdout.flush()
    if verify and (damaged := shown["damaged"]):
        from curate.errors import WorkspaceError

        raise WorkspaceError(f"{workspace}: {len(damaged)} damaged file(s), listed with the fix of each"
                             f"{' in damaged' if as_json else ''}: {', '.join(d['path'] for d in damaged)}")


@app.command()
def report(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    out: Path = typer.Option(Path(REPORT.path), "--out", "-o", help="HTML file to write (self-contained)."),
    selection: str | None = typer.Option(None, help="Selection to highlight in plots and samples "
                                         "(default: the most recent)."),
    samples: int = typer.Option(REPORT.samples, min=0, help="Rows kept and rows dropped to show."),
) -> None:
    """Write the curation report: one self-contained HTML page (pool, judges and cost, failures, selections, plots)."""
    from curate.report.html import build_report
    from curate.session import Workspace
    from curate.storage.files import writing

    with writing(out):  # a full disk names the file
        path = build_report(Workspace.open(workspace), out, selection=selection, samples=samples)
    from curate.storage.outputs import written_through

    if not written_through(path):
        console.print(f"wrote {path} ({path.stat().st_size / 1024:,.0f} KiB)")
    else:  # a pipe, a device or a descriptor (/dev/stdout): the line would join the page
        err_console.print(f"wrote {path} (written through)")
