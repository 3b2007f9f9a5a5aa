"""The columns a scorer may write: never a pool field nor a column another producer (an LLM judge, a loaded label
column) wrote, so predictions never shadow labels."""

from __future__ import annotations

from typing import Any

from curate.errors import ScorerError

ANOTHER_NAME = ("give it another name (scorer.named('NAME'); curate score --scorer KIND_OR_DIR --column NAME, one "
                 "scorer at a time)")


def check_scorer_column(ws: Any, column: str, advice: str | None = None) -> None:
    """A ScorerError when a scorer may not write ``column`` of ``ws``: a column another producer (an LLM judge, a
    loaded label column) wrote, or a field of the pool file, is never shadowed by a scorer's predictions, nor left
    beside them with a stale digit mass."""
    advice = advice or ANOTHER_NAME
    if ws.has_pool and column in ws.pool.column_names:  # the pool file's own fields: labels paid for
        raise ScorerError(f"column {column!r} is a field of the pool file (labels, or the rows themselves); "
                          f"a scorer writes its own column: {advice}")
    if ws.has_column(column):
        kind = ws.column_provenance(column).get("kind")
        if kind != "scorer":
            raise ScorerError(f"column {column!r} holds labels from a {kind or 'non-scorer'} producer; a scorer "
                              f"writes its own column: {advice}")
