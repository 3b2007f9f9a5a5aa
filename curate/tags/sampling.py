"""InsTag's complexity-first diverse sampling, registered as selector ``instag`` (``ws.select(method="instag")``).

Order rows by tag count descending, ties by id ascending. Sweep that order, taking a row whenever its tags
add at least one tag not yet covered in this sweep; the covered set resets at each new sweep; stop at the
budget or when no tagged row is left. Rows with no tags never qualify. Importing this module registers the
selector (``curate.session`` imports it before selecting; ``curate.select`` never imports tags).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.codes import Decision, Reason
from curate.errors import CurateError
from curate.select.registry import SelectorResult, register
from curate.storage.roles import role_column
from curate.tags.metrics import (
    NAME_TAGS,
    TagLists,
    coverage,
    refuse_turn_tags,
    tagged_positions,
    tags_per_query,
)

NEW_TAGS_SHOWN = 5  # new tags listed in a kept row's detail


@dataclass
class Sample:
    """The sampler's decisions: pool ``positions`` in rank order (kept rows first, in the order taken, then the
    others in tag-count order), and per position a decision, a reason code and a detail dict."""

    positions: list[int]
    decisions: list[Decision]
    reasons: list[Reason]
    details: list[dict[str, Any]]
    visits: int = 0  # rows the sweeps looked at (a sweep stops once no row further on can add a tag)

    @property
    def kept(self) -> list[int]:
        return [p for p, d in zip(self.positions, self.decisions, strict=True) if d is Decision.KEPT]


def instag_sample(tag_lists: TagLists, budget: int, ids: Sequence[str] | None = None) -> Sample:
    """Complexity-first diverse sampling over positions ``0..n-1`` (ties by ``ids``, default the position).

    Reasons: ``SELECTED`` (detail: sweep, tags, new tags), ``NO_TAGS`` (empty list: rejected; ``None``, i.e.
    not tagged or tagging failed: unscored), ``NO_NEW_TAG`` (swept at least once without adding a tag, then
    the budget filled), ``BUDGET_FILLED`` (the budget filled before any sweep reached it).
    """
    n = len(tag_lists)
    key_ids = list(ids) if ids is not None else [f"{i:012d}" for i in range(n)]
    sets = [set(r) if r else set() for r in tag_lists]
    tagged = set(tagged_positions(tag_lists))
    order = sorted(range(n), key=lambda i: (-len(sets[i]), key_ids[i]))
    remaining = [i for i in order if sets[i]]
    alive = Counter(t for i in remaining for t in sets[i])  # tag -> rows not yet kept that carry it
    kept: list[int] = []
    taken: dict[int, dict[str, Any]] = {}
    unreached: set[int] = set()  # rows the last sweep did not reach: the budget filled before them
    sweep = visits = 0
    while remaining and len(kept) < budget:
        sweep += 1
        covered: set[str] = set()
        uncovered = len(alive)  # tags some remaining row carries that this sweep has not covered
        left: list[int] = []
        stop = len(remaining)
        for pos, i in enumerate(remaining):
            if len(kept) >= budget:
                stop = pos
                unreached = set(remaining[pos:])
                break
            if not uncovered:  # no row further on can add a tag: each is passed over in this sweep, unvisited
                stop = pos
                break
            visits += 1
            new = sets[i] - covered
            if new:
                kept.append(i)
                covered |= new
                uncovered -= len(new)
                alive.subtract(sets[i])
                taken[i] = {"sweep": sweep, "tags": len(sets[i]), "new": len(new),
                            "new_tags": sorted(new)[:NEW_TAGS_SHOWN]}
            else:
                left.append(i)
        left.extend(remaining[stop:])
        alive = +alive  # tags no remaining row carries are gone
        remaining = left
    # a row not kept was passed over in every sweep that reached it: all of them, but the last when the budget
    # filled before it there
    passed_over = {i: sweep - (i in unreached) for i in remaining if sweep - (i in unreached)}
    kept_set = set(kept)
    positions = kept + [i for i in order if i not in kept_set]
    decisions, reasons, details = [], [], []
    for i in positions:
        if i in kept_set:
            decision, reason, detail = Decision.KEPT, Reason.SELECTED, taken[i]
        elif not sets[i]:
            failed = i not in tagged
            decision = Decision.UNSCORED if failed else Decision.REJECTED
            reason, detail = Reason.NO_TAGS, {"tags": 0, "tagged": not failed}
        elif i in passed_over:
            decision, reason = Decision.NOT_REACHED, Reason.NO_NEW_TAG
            detail = {"tags": len(sets[i]), "sweeps": passed_over[i], "budget": budget}
        else:
            decision, reason, detail = Decision.NOT_REACHED, Reason.BUDGET_FILLED, {"tags": len(sets[i]), "budget": budget}
        decisions.append(decision)
        reasons.append(reason)
        details.append(detail)
    return Sample(positions, decisions, reasons, details, visits)


@register("instag")
def instag_selector(ws: Any, rows: np.ndarray, budget: int, tags_column: str | None = None) -> SelectorResult:
    """Selector ``instag``: complexity-first diverse sampling on ``tags_column`` (row-level tag lists, as
    :func:`curate.tags.normalize` writes them; default: the normaliser's column, ``tags`` or the ``tags_instag``
    a run writes beside a pool field ``tags``, :mod:`curate.storage.roles`) over the candidate pool positions ``rows``."""
    candidates = [int(r) for r in rows]
    all_ids = ws.ids
    ids = [all_ids[p] for p in candidates]
    tags_column = tags_column or role_column(ws, "tags", NAME_TAGS)
    if not ws.has_column(tags_column):
        raise CurateError(f"{ws.path}: no column {tags_column!r} yet: tag the pool first (curate tag {ws.path}, "
                          f"or ws.apply(Tagger(backend)) then normalize(ws)); have {sorted(ws.columns) or 'no columns'}")
    tag_lists = ws.column(tags_column, ids)
    refuse_turn_tags(ws, tags_column, "instag samples on")
    for row_id, tags in zip(ids, tag_lists, strict=True):
        if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
            raise CurateError(f"column {tags_column!r} is not a list of tags per row (row {row_id}: {tags!r}); "
                              "instag samples on tag lists such as the normalised 'tags' column")
    sample = instag_sample(tag_lists, budget, ids)
    kept = [tag_lists[i] for i in sample.kept]
    # coverage of the pool's tags, as coverage_report and `curate tags` measure it; of the candidates' tags beside
    pool_tags = tag_lists if len(candidates) == len(all_ids) else ws.column(tags_column)
    info = {"tags_column": tags_column, "coverage": coverage(kept, pool_tags),
            "coverage_of_candidates": coverage(kept, tag_lists), "tags_per_query": tags_per_query(kept),
            "tie_break": "row id ascending"}
    return SelectorResult([candidates[i] for i in sample.positions], sample.decisions, sample.reasons,
                          sample.details, info)
