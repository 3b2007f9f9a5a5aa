"""A verb's result as a dict that a notebook shows as one line: ``ws.load``, ``ws.embed``, ``coverage_report``."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

SHOWN_CHARS = 120  # a value's repr longer than this is cut in the HTML view's key table


class Summary(dict):
    """A dict, every key as before (``r["encoded"]``, ``json.dumps(r)``), shown as ``title(line)`` and, in a notebook,
    as the line with its keys folded below it, as an ``ApplyResult`` is shown (a 15-key dict printed whole)."""

    title = "Summary"
    line = ""

    def __init__(self, data: Mapping[str, Any], title: str, line: str):
        super().__init__(data)
        self.title, self.line = title, line

    def __repr__(self) -> str:
        return f"{self.title}({self.line})"

    def _repr_html_(self) -> str:
        def shown(value: Any) -> str:
            text = repr(value)
            return html.escape(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…")

        rows = "".join(f"<tr><td><code>{html.escape(str(k))}</code></td><td>{shown(v)}</td></tr>"
                       for k, v in self.items())
        return (f"<b>{html.escape(self.title)}</b>: {html.escape(self.line)}"
                f"<details><summary>{len(self)} keys</summary><table>{rows}</table></details>")


def load_summary(done: dict[str, Any]) -> Summary:
    """``ws.load``'s result: rows read, added, already present, rejected, removed; unchanged."""
    line = (f"{done['source']}: {done['rows_read']:,} rows read, {done['rows_added']:,} added, "
            f"{done['already_present']:,} already present")
    if done.get("rejects"):
        line += f", {done['rejects']:,} rejected -> {done.get('rejects_file')}"
    if done.get("rows_gone_from_source"):
        line += (f", at least {done['rows_gone_from_source']:,} rows its load at {done['earlier_load_at']} read not in it "
                 "now (kept in the pool)")
    if "rows_removed" in done:
        line += f", {done['rows_removed']:,} removed"
    return Summary(done, "Load", line + ("; unchanged" if done.get("unchanged") else ""))


def embed_summary(done: dict[str, Any]) -> Summary:
    """``ws.embed``'s result: the set, rows encoded and reused, model, text embedded, device (none when all reused)."""
    device = done.get("device") or "no device: every vector reused"
    line = (f"{done['name']}: {done['rows']:,} rows of {done['text']}, encoded {done['encoded']:,}, reused "
            f"{done['reused']:,} ({done['model']}, {done['backend']}, {device})"
            + ("; unchanged" if done.get("unchanged") else "") + (f"; {done['warning']}" if done.get("warning") else ""))
    return Summary(done, "Embed", line)


def coverage_summary(report: dict[str, Any]) -> Summary:
    """``coverage_report``'s result: tag coverage beside random selections', tags per query beside the pool's."""
    line = (f"{report['rows']:,} rows: tag coverage {report['coverage']:.1%} (random "
            f"{report['random_coverage_mean']:.1%} ± {report['random_coverage_std']:.1%} over "
            f"{report['random_seeds']} seeds of the {report['random_pool_rows']:,} tagged rows"
            + (f" of {report['pool_rows']:,}" if report['pool_rows'] != report['random_pool_rows'] else "")
            + f"); tags per query {report['tags_per_query']:.2f} (pool "
            f"{report['pool_tags_per_query']:.2f}); {report['pool_tags']:,} tags in the pool")
    return Summary(report, "TagCoverage", line)
