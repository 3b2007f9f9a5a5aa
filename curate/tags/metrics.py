"""InsTag metrics over row-level tag lists: diversity (coverage), complexity (tags per query), frequency.

A tag list per row (``None`` where tagging failed), as the normaliser stores it (``tags``, or ``tags_instag`` beside a
pool field ``tags``: :mod:`curate.storage.roles` finds it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from curate.defaults import TAG
from curate.storage.summary import coverage_summary

TagLists = Sequence[Sequence[str] | None]
NAME_TAGS = "tags_column=NAME in Python, --param tags_column=NAME with curate select, --column NAME with curate tags"


def refuse_turn_tags(ws: Any, column: str, reader: str) -> None:
    """A CurateError when ``column`` holds tags per turn (the tagger's raw ``tags_raw``: a list of lists a row), which
    ``reader`` (the sampler, the coverage report, a figure) would read as a row's tags."""
    from curate.errors import CurateError

    prov = ws.column_provenance(column) if ws.has_column(column) else {}
    if prov.get("kind") == "instag_tags" or prov.get("granularity") == "turn":
        raise CurateError(f"column {column!r} holds tags per turn (the judge's raw tags); {reader} a row's normalised "
                          "tag list, e.g. tags_column='tags' (curate tags --normalize)")


def tagged_positions(rows: TagLists) -> list[int]:
    """Positions of the rows whose tagging succeeded. The one rule every reader of a tag column follows: a row whose
    tagging failed has tags None (and covers nothing); a row tagged with no tag has ``[]`` and counts as tagged."""
    return [i for i, r in enumerate(rows) if r is not None]


def tagged_rows(rows: TagLists) -> list[Sequence[str]]:
    """The tag lists of the rows whose tagging succeeded (:func:`tagged_positions`), in order."""
    return [rows[i] for i in tagged_positions(rows)]


def all_tags(rows: TagLists) -> set[str]:
    return {t for r in rows if r for t in r}


def coverage(selected: TagLists, universe: TagLists | set[str]) -> float:
    """Diversity: |union of the selected rows' tags| / |all tags of the pool|."""
    total = universe if isinstance(universe, set) else all_tags(universe)
    if not total:
        return 0.0
    return len(all_tags(selected) & total) / len(total)


def tags_per_query(rows: TagLists) -> float:
    """Complexity: mean number of tags per tagged row (rows whose tagging failed are left out)."""
    counts = [len(r) for r in tagged_rows(rows)]
    return float(np.mean(counts)) if counts else 0.0


def tag_frequency(rows: TagLists) -> list[tuple[str, int]]:
    """(tag, rows carrying it), most frequent first, ties alphabetical."""
    counts = Counter(t for r in rows if r for t in set(r))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def random_coverage(rows: TagLists, size: int, seeds: int | Sequence[int] = 10) -> tuple[float, float]:
    """Coverage of uniform random selections of ``size`` rows: (mean, std) over the seeds."""
    seed_list = range(seeds) if isinstance(seeds, int) else seeds
    universe = all_tags(rows)
    values = []
    for s in seed_list:
        pick = np.random.default_rng(s).choice(len(rows), size=min(size, len(rows)), replace=False)
        values.append(coverage([rows[i] for i in pick], universe))
    return float(np.mean(values)), float(np.std(values))


def coverage_report(ws: Any, selection: str | list[str], *, tags_column: str | None = None,
                    seeds: int = TAG.coverage_seeds) -> dict[str, Any]:
    """A selection's tag coverage and tags per query, beside random selections of the same size drawn from the
    rows whose tagging succeeded (``random_pool_rows`` of ``pool_rows``; ``rows_untagged``: the selection's rows
    whose tagging failed, which cover nothing); an error naming
    the selection when it keeps rows no longer in the pool (a re-run on an edited source removed them).
    ``tags_column``: default the normaliser's column (:func:`curate.storage.roles.role_column`)."""
    from curate.errors import NoSuchRowError
    from curate.storage.pool import selection_positions
    from curate.storage.roles import role_column

    tags_column = tags_column or role_column(ws, "tags", NAME_TAGS)
    refuse_turn_tags(ws, tags_column, "the coverage report reads")  # a list per turn was a TypeError (unhashable)
    if isinstance(selection, str):
        ids, positions = selection_positions(ws, selection)
    else:
        ids, index = list(selection), ws.index
        missing = [rid for rid in ids if rid not in index]
        if missing:
            raise NoSuchRowError(f"no row with id {missing[0]!r} in the pool ({len(missing):,} of {len(ids):,} ids)")
        positions = [index[rid] for rid in ids]
    rows = ws.column(tags_column)
    chosen = [rows[p] for p in positions]
    # The random selections draw from the rows whose tags are known, as instag does: a row whose tagging failed
    # (None) covers nothing whatever it holds, and drawing it would flatter any selection of tagged rows.
    tagged = tagged_rows(rows)
    mean, std = random_coverage(tagged, len(ids), seeds)
    return coverage_summary({"rows": len(ids), "coverage": coverage(chosen, rows), "random_coverage_mean": mean,
                             "random_coverage_std": std, "random_seeds": seeds,
                             "random_pool_rows": len(tagged), "pool_rows": len(rows),
                             "rows_untagged": len(chosen) - len(tagged_rows(chosen)),
                             "tags_per_query": tags_per_query(chosen),
                             "pool_tags_per_query": tags_per_query(rows), "pool_tags": len(all_tags(rows))})
