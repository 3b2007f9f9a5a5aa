"""Reports: what a workspace holds, for terminals (rich) and, later, the HTML curation report."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from curate.workspace import Workspace, _provenance_line


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
            from curate.judges import missing_report

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
