"""The columns a scorer may write: never a pool field nor a column another producer (an LLM judge, a loaded label
column) wrote, so predictions never shadow labels."""

from __future__ import annotations

from typing import Any

from curate.errors import ScorerError
from curate.storage.step import check_column_owner

ANOTHER_NAME = ("give it another name (scorer.named('NAME'); curate score --scorer KIND_OR_DIR --column NAME, one "
                 "scorer at a time)")


def check_scorer_column(ws: Any, column: str, advice: str | None = None) -> None:
    """A ScorerError when a scorer may not write ``column`` of ``ws``: a column another producer (an LLM judge, a
    loaded label column) wrote, or a field of the pool file, is never shadowed by a scorer's predictions, nor left
    beside them with a stale digit mass (the rule judges and signals follow too: ``check_column_owner``)."""
    check_column_owner(ws, column, "a scorer", lambda prov: prov.get("kind") == "scorer", advice or ANOTHER_NAME,
                       ScorerError)
