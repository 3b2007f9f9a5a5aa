"""Pool commands: load, export, embed (info is in cli/report.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from curate.cli.common import (
    _batch_size_opt,
    _embed_name_opt,
    _embed_text_opt,
    _format_opt,
    _mapping_opt,
    _source,
    app,
    console,
    err_console,
    gone_from_source_line,
    json_columns_line,
    mapping_arg,
    turn_keys_line,
)
from curate.defaults import POOL


@app.command()
def load(
    source: str = typer.Argument(..., help="JSONL/JSON (or .jsonl.gz/.json.gz)/Parquet/CSV/TSV file, a folder or a "
                                 "quoted glob of them ('data/*.jsonl': unquoted, the shell makes it several "
                                 "arguments), datasets folder, Hub name, or 'sample'."),
    workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace directory (created if new)."),
    format: str = _format_opt(),
    on_error: str = typer.Option(POOL.on_error, "--on-error", help="raise: stop at the first bad record; "
                                 "skip: leave it out and list it in WORKSPACE/rejects.jsonl"),
    mapping: str | None = _mapping_opt(),
) -> None:
    """Load a pool into a workspace."""
    from curate import pools
    from curate.session import Workspace

    mapping_value = mapping_arg(mapping)
    pools.check_read_options(format, mapping_value, on_error)  # a bad option creates nothing
    # a missing or broken source (or every record rejected) leaves no new workspace: ws.load takes back the one it
    # made, unless another process loaded into it meanwhile (rmtree of the folder here deleted that load's rows)
    summary = Workspace(workspace).load(_source(source), format=format, on_error=on_error, mapping=mapping_value)
    fmts = ", ".join(f"{k} {v:,}" for k, v in summary["formats"].items())
    console.print(f"loaded {summary['rows_added']:,} rows from {source} ({fmts}); "
                  f"{summary['already_present']:,} already present")
    if summary.get("rows_gone_from_source"):
        console.print(f"[yellow]{escape(gone_from_source_line(summary))}[/]", markup=True)
    if summary["empty_responses"]:
        console.print(f"[yellow]{summary['empty_responses']:,} row(s) have an empty response[/]", markup=True)
    if summary.get("instruction_only"):
        console.print(f"{summary['instruction_only']:,} instruction-only row(s) (no response)")
    if summary["rejects"]:
        console.print(f"[yellow]{summary['rejects']} record(s) left out; reasons in {escape(str(summary['rejects_file']))}[/]",
                      markup=True)
    if summary["columns_kept_as_json"]:
        console.print(f"[yellow]{escape(json_columns_line(summary['columns_kept_as_json']))}[/]", markup=True)
    if summary.get("turn_keys_not_kept"):
        console.print(f"[yellow]{escape(turn_keys_line(summary['turn_keys_not_kept']))}[/]", markup=True)


@app.command()
def export(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    out: Path = typer.Option(..., "--out", "-o", help=".jsonl or .json (both JSON Lines), .parquet, a folder "
                             "(datasets save_to_disk), or - for JSON Lines on standard output (as a pipe or a device "
                             "without a suffix gets: /dev/stdout, /dev/null)."),
    selection: str | None = typer.Option(None, help="Export only this selection's kept rows."),
    format: str | None = typer.Option(None, "--format", help="Write training records of this shape: messages "
                                      "(OpenAI / TRL chat), sharegpt, or one exchange per row as alpaca, "
                                      "prompt_completion or qa; each with its id (and the --column's asked for). "
                                      "Default: every pool field and derived column."),
    column: list[str] = typer.Option([], "--column", help="A derived column to export (repeatable), e.g. --column "
                                     "quality: beside every pool field, or beside --format's records. Default: "
                                     "every derived column, none with --format."),
) -> None:
    """Export the pool (or a selection) with its derived columns, or as training records (--format)."""
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    n = len(ws.selection(selection)) if selection else len(ws)
    if str(out) == "-":  # for a pipe: the rows alone on stdout, what was written on stderr
        from curate.quiet import quiet_datasets
        from curate.storage.export import export_rows, json_fields, write_jsonl
        from curate.storage.write_errors import writing

        with quiet_datasets():
            rows = export_rows(ws, selection, column or None, format)
            with writing("standard output"):  # a full disk or a closed pipe names no file
                write_jsonl(rows, sys.stdout.buffer, json_fields(ws, rows, format, column))
                sys.stdout.flush()
        err_console.print(f"wrote {n:,} rows to standard output")
        return
    path = ws.export(out, selection=selection, columns=column or None, format=format)
    from curate.storage.outputs import written_through

    through = written_through(path)  # /dev/stdout: the line must not join the rows
    said = " (JSON Lines, written through)" if through and not path.suffix else ""
    (err_console if through else console).print(f"wrote {n:,} rows to {path}{said}")


@app.command()
def embed(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    model: str | None = typer.Option(None, "--model", "-m", help="Sentence-transformers model folder or name "
                                     "(default: the packaged all-MiniLM-L6-v2)."),
    text: str = _embed_text_opt(),
    name: str = _embed_name_opt(),
    batch_size: int = _batch_size_opt(),
    device: str | None = typer.Option(None, help="cpu, cuda, ... (default: cuda when present)."),
) -> None:
    """Embed every row; rows embedded before with the same model and text come from the cache."""
    from curate.session import Workspace

    summary = Workspace.open(workspace).embed(model=model, text=text, name=name, batch_size=batch_size, device=device)
    console.print(f"embeddings {summary['name']!r}: {summary['rows']:,} rows, {summary['encoded']:,} encoded, "
                  f"{summary['reused']:,} from the cache ({', '.join(str(summary[k]) for k in ('model', 'text', 'device') if summary[k])})")
    if summary.get("warning"):
        console.print(f"[yellow]warning: {escape(summary['warning'])}[/]", soft_wrap=True, highlight=False, markup=True)
