"""The report's tag figures: the frequency plot (the commonest tags of the normalised column and how diverse the
tags are: distinct tags, tags per query, rows tagged), drawn with or without a selection (a tagged workspace with
none showed no tag figure at all), and the coverage plot (a selection's tag coverage as it grows, against random
tagged rows), which needs one."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from curate.defaults import TAG
from curate.report.figures import NotebookFigure
from curate.report.plot_inputs import KEPT_COLOUR, POOL_COLOUR, MissingInput, _need_pool, role_or_missing
from curate.report.scales import drawable, tick_label
from curate.report.summary import default_selection
from curate.tags.metrics import tag_frequency, tags_per_query

if TYPE_CHECKING:
    from curate.storage.workspace import Workspace

TOP_TAGS = 20  # bars drawn


def tag_frequency_plot(sets: list[set[str]], top: int = TOP_TAGS) -> Figure:
    """Horizontal bars of the ``top`` commonest tags (share of tagged rows), the diversity figures in the title;
    ``sets``: each row's tags (``curate.report.plots.tag_sets``)."""
    tagged = [s for s in sets if s]
    if not tagged:
        raise MissingInput("no row has tags (see the tagger's failures in the columns table)")
    frequency = tag_frequency(tagged)  # the table `curate tags` prints
    ranked = frequency[:top]
    fig = NotebookFigure(figsize=(5.5, 0.6 + 0.22 * len(ranked)), layout="constrained")
    ax = fig.subplots()
    names = [name for name, _ in ranked][::-1]
    shares = [n / len(tagged) for _, n in ranked][::-1]
    ax.barh(range(len(names)), shares, color=POOL_COLOUR)
    ax.set_yticks(range(len(names)), [tick_label(n) for n in names], fontsize=7)  # a tag's $ is no maths
    ax.set_xlabel(f"share of the {len(tagged):,} tagged rows")
    ax.set_title(f"{len(frequency):,} distinct tags, {tags_per_query(tagged):.2f} per tagged row; {len(tagged):,} of {len(sets):,} "
                 "rows tagged", fontsize=9)
    return fig


def tag_sets(ws: Workspace, column: str | None = None) -> list[set[str]]:
    """Each row's tags as a set (empty when the row has none); ``column``: the normalised tags by default."""
    column = column or role_or_missing(ws, "tags", "column=NAME")
    if not ws.has_column(column) and not (ws.has_pool and column in ws.pool.column_names):
        raise MissingInput(f"no {column!r} column yet: tag the pool first (`curate tag {ws.path}`)")
    from curate.tags.metrics import refuse_turn_tags

    refuse_turn_tags(ws, column, "a tag figure reads")  # a turn's list was drawn as the tag "['write', 'poems']"
    out = []
    for v in ws.column(column):
        if v is None:
            out.append(set())
        elif isinstance(v, str):
            out.append({v})
        else:
            out.append({str(t) for t in v if t is not None})
    return out


def coverage_curve(order: list[int], tags: list[set[str]], universe: int) -> np.ndarray:
    """Fraction of the ``universe`` of tags covered by the first k rows of ``order``, for k = 1..len(order)."""
    seen: set[str] = set()
    out = np.empty(len(order), dtype=np.float64)
    for k, pos in enumerate(order):
        seen |= tags[pos]
        out[k] = len(seen) / universe
    return out


def tag_coverage(ws: Workspace, selections: str | list[str] | None = None, column: str | None = None,
                 random_draws: int = TAG.coverage_seeds, seed: int = 0, *, tags_column: str | None = None) -> Figure:
    """Tag coverage as a selection grows (in rank order) against random samples of tagged rows; ``selections``: names.
    ``tags_column`` (or ``column``): the tags column, as ``coverage_report`` and the ``instag`` selector name it."""
    from curate.errors import OptionError
    from curate.tags.metrics import tagged_positions

    if column is not None and tags_column is not None and column != tags_column:
        raise OptionError(f"tag_coverage: column={column!r} and tags_column={tags_column!r} name one column: give one")
    _need_pool(ws)
    selections = [selections] if isinstance(selections, str) else selections
    column = tags_column or column or role_or_missing(ws, "tags", "tags_column=NAME")
    with ws.reading():  # the column read once: its tag sets, and the rows whose tagging succeeded (as coverage_report)
        tags = tag_sets(ws, column)
        tagged = tagged_positions(ws.column(column))
    universe = len(set().union(*tags))
    if universe == 0:
        raise MissingInput(f"the {column!r} column has no tags")
    selections = [s for s in ([default_selection(ws)] if selections is None else selections) if s]
    if not selections:
        raise MissingInput("no selection yet: run a selection first")
    index = ws.index
    fig = NotebookFigure(figsize=(5.5, 4.0), layout="constrained")
    ax = fig.subplots()
    longest = 0
    for k, name in enumerate(selections):
        if not ws.has_selection(name):
            raise MissingInput(f"no selection {name!r}: run a selection first (have {sorted(ws.selections) or 'none'})")
        order = [index[i] for i in ws.selection(name).ids if i in index]
        if not order:
            continue
        longest = max(longest, len(order))
        curve = coverage_curve(order, tags, universe)
        ax.plot(np.arange(1, len(order) + 1), curve, label=drawable(f"{name} ({curve[-1]:.0%} at {len(order):,})"), lw=1.8,
                c=KEPT_COLOUR if k == 0 else None, marker=_marker(len(order)), ms=4)
    if longest == 0:
        raise MissingInput("the selections keep no rows")
    rng = random.Random(seed)
    curves = []
    for _ in range(random_draws):
        perm = list(tagged)
        rng.shuffle(perm)
        curves.append(coverage_curve(perm[:longest], tags, universe))
    mean = np.mean(curves, axis=0)  # fewer points than longest where the selection keeps more rows than are tagged
    ax.plot(np.arange(1, len(mean) + 1), mean, ls="--", c=POOL_COLOUR, marker=_marker(longest), ms=4,
            label=f"random tagged rows, mean of {random_draws} ({mean[-1]:.0%} at {len(mean):,})")
    ax.set_xlabel("rows selected")
    ax.set_ylabel(f"share of the pool's {universe:,} tags covered")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("tag coverage", fontsize=10)
    return fig


def _marker(points: int) -> str | None:
    """Points marked on a short curve: one of a single point (one kept row) is no visible line."""
    return "o" if points <= 30 else None
