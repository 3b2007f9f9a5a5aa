"""Static plots of a workspace (matplotlib): they render in notebooks, HTML reports and CI alike.

Figures are built with matplotlib's object API (``Figure``, not ``pyplot``), so no global backend is
chosen or changed and nothing needs a display: saving renders with Agg. In Jupyter a returned figure
shows inline as a PNG, with or without ``%matplotlib inline`` (:class:`~curate.report.figures.NotebookFigure`).

Every plot function takes a :class:`~curate.storage.workspace.Workspace` and names, and returns a matplotlib
``Figure``, or raises :class:`MissingInput` saying what is missing and how to make it (the report turns
that into a line of text instead of a picture). :func:`figure_data_uri` turns a figure into a
``data:`` URI for self-contained HTML.

Inputs, colours and :class:`MissingInput` live in :mod:`curate.report.plot_inputs`. Numbers are read through
:func:`plotted_values` (= ``ws.row_values``: the column's declared reducer,
the one selection uses), never averaged here. One colour per role in every plot: ``KEPT_COLOUR`` for a
selection's kept rows, ``DROPPED_COLOUR`` for rows it considered and dropped, ``POOL_COLOUR`` for the
pool (or rows the selection did not consider).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from matplotlib.figure import Figure

from curate.errors import OptionError
from curate.report.embedding_plot import embedding_map, pca_coordinates, project_2d  # noqa: F401  (read from here too)
from curate.report.figures import NotebookFigure, figure_data_uri  # noqa: F401  (read from here too)
from curate.report.plot_inputs import (  # the colours and MissingInput are read from here too
    DROPPED_COLOUR,  # noqa: F401
    KEPT_COLOUR,
    POOL_COLOUR,
    MissingInput,
    _need_pool,
    _scatter_by_role,
    _selection_masks,
    plotted_values,
    role_or_missing,
    symlog_axis,
    tags_asked_for,
)
from curate.report.scales import constant_view, drawable, histogram_bins, jitter, range_overflows, tick_label
from curate.report.summary import default_selection, numeric_columns
from curate.report.tag_plots import coverage_curve, tag_coverage, tag_frequency_plot, tag_sets  # noqa: F401
from curate.storage.columns import column_names
from curate.storage.damage import DamagedFileError
from curate.storage.roles import role_candidates

if TYPE_CHECKING:
    from curate.storage.workspace import Workspace

T = TypeVar("T")

# -- figures ---------------------------------------------------------------------------------------
def score_histograms(ws: Workspace, columns: str | list[str] | None = None, selection: str | None = None) -> Figure:
    """One histogram per score column; the selection's kept rows overlaid when ``selection`` is given."""
    _need_pool(ws)
    if columns is not None and not column_names(columns):  # said "no score columns yet" of a scored pool
        raise OptionError(f"score_histograms: columns={columns!r} names no column: give one or more, or leave it out "
                          f"for every score column ({', '.join(numeric_columns(ws)) or 'none yet'})")
    columns = numeric_columns(ws) if columns is None else column_names(columns)
    if not columns:
        raise MissingInput("no score columns yet: score the pool (judges or scorers) first")
    kept = _selection_masks(ws, selection)[0] if selection else None
    values_of = {name: plotted_values(ws, name) for name in columns}
    if not any(np.isfinite(v).any() for v in values_of.values()):  # empty axes say less than a line
        raise MissingInput(f"no row has a value in {', '.join(columns)}: every row failed or was never scored "
                           "(the failures section says why)")
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = NotebookFigure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, name in zip(axes.flat, columns, strict=False):
        values = values_of[name]
        finite = np.isfinite(values)
        if not finite.any():
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        else:
            bins = histogram_bins(values[finite])
            with np.errstate(over="ignore"):  # bar widths near the float limit (symlog axis) overflow harmlessly
                ax.hist(values[finite], bins=bins, color=POOL_COLOUR, label=f"pool ({finite.sum():,})")
                if kept is not None:
                    sel = finite & kept
                    ax.hist(values[sel], bins=bins, color=KEPT_COLOUR, alpha=0.8,
                            label=drawable(f"kept by {selection} ({sel.sum():,})"))
            if range_overflows(bins[0], bins[-1]):
                symlog_axis(ax, "x", bins[0], bins[-1])
            if (view := constant_view(values[finite])) is not None:  # a narrow bar at the value, the axis around it
                ax.set_xlim(*view)
            ax.legend(fontsize=7)
        missing = int((~finite).sum())
        ax.set_title(tick_label(name, 60) + (f" ({missing:,} missing)" if missing else ""), fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    return fig


def score_scatter(ws: Workspace, x: str | None = None, y: str | None = None, selection: str | None = None) -> Figure:
    """``x`` against ``y`` for every scored row, the selection's kept rows highlighted (default: the derived
    complexity and quality columns, :mod:`curate.storage.roles`)."""
    _need_pool(ws)
    x, y = x or role_or_missing(ws, "complexity", "x=NAME"), y or role_or_missing(ws, "quality", "y=NAME")
    xs, ys = plotted_values(ws, x), plotted_values(ws, y)
    both = np.isfinite(xs) & np.isfinite(ys)
    if not both.any():
        raise MissingInput(f"no row has both {x!r} and {y!r} scores yet")
    fig = NotebookFigure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    (jx, x_label), (jy, y_label) = (_jittered(v, v[both], name, rng) for v, name in ((xs, x), (ys, y)))
    for values, axis in ((xs[both], "x"), (ys[both], "y")):
        if range_overflows(values.min(), values.max()):  # as the histograms: a linear axis cannot span it
            symlog_axis(ax, axis, values.min(), values.max())  # before the points: autoscaling them linearly overflows
    with np.errstate(over="ignore"):  # the margins of a symlog axis near the float limit overflow harmlessly
        if selection:
            kept, dropped = _selection_masks(ws, selection)
            _scatter_by_role(ax, jx, jy, both, kept, dropped, sizes=(6, 6, 10))
        else:
            ax.scatter(jx[both], jy[both], s=6, c=POOL_COLOUR, linewidths=0)
    ax.set_xlabel(drawable(x_label))  # column names: letters of any script
    ax.set_ylabel(drawable(y_label))
    ax.set_title(drawable(f"{x} x {y} ({both.sum():,} rows)"), fontsize=10)
    return fig


def _jittered(values: np.ndarray, finite: np.ndarray, name: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """``values`` moved by a random jitter (:func:`~curate.report.scales.jitter`; none on a symlog axis) and the axis
    label, which says the points are jittered and by how much (a constant column would look spread otherwise)."""
    half_width = jitter(finite)
    if half_width == 0:
        return values, name
    return values + rng.uniform(-1.0, 1.0, len(values)) * half_width, f"{name} (jittered ±{half_width:.2g})"


def breakdown_column(ws: Workspace) -> str:
    """``source`` when the pool or a derived column has it, else ``format``."""
    names = (set(ws.pool.column_names) if ws.has_pool else set()) | set(ws.columns)
    return "source" if "source" in names else "format"


def source_breakdown(ws: Workspace, selection: str | None = None, column: str | None = None,
                     top: int = 15) -> Figure:
    """Rows per source (or format) in the pool and in the selection, as shares side by side."""
    _need_pool(ws)
    column = column or breakdown_column(ws)
    values = [str(v) if v is not None else "(none)" for v in ws.column(column)]
    pool_counts = Counter(values)
    labels = [k for k, _ in pool_counts.most_common(top)]
    sel_counts: Counter = Counter()
    if selection:
        kept = _selection_masks(ws, selection)[0]
        sel_counts = Counter(v for v, k in zip(values, kept, strict=False) if k)
    fig = NotebookFigure(figsize=(6.0, 0.45 * len(labels) + 1.4), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(labels))
    n_pool, n_sel = sum(pool_counts.values()), sum(sel_counts.values())
    h = 0.4 if selection else 0.7
    ax.barh(y - (h / 2 if selection else 0), [pool_counts[k] / n_pool for k in labels], height=h,
            color=POOL_COLOUR, label=f"pool ({n_pool:,})")
    for yi, k in zip(y, labels, strict=False):
        ax.text(pool_counts[k] / n_pool, yi - (h / 2 if selection else 0), f" {pool_counts[k]:,}", va="center", fontsize=7)
    if selection and n_sel:
        ax.barh(y + h / 2, [sel_counts[k] / n_sel for k in labels], height=h, color=KEPT_COLOUR,
                label=drawable(f"kept by {selection} ({n_sel:,})"))
        for yi, k in zip(y, labels, strict=False):
            ax.text(sel_counts[k] / n_sel, yi + h / 2, f" {sel_counts[k]:,}", va="center", fontsize=7)
    ax.set_yticks(y, [tick_label(k) for k in labels], fontsize=8)  # full names: the report's sources table
    ax.invert_yaxis()
    ax.set_xlabel("share of rows")
    ax.set_title(f"rows by {column}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def ifd_histogram(ws: Workspace, selection: str | None = None) -> Figure:
    """The IFD histogram with IFD = 1 marked: right of it the instruction does not help (Cherry LLM drops those)."""
    fig = score_histograms(ws, ["ifd"], selection)
    ax = fig.axes[0]
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.text(1.0, 0.95, " IFD >= 1", transform=ax.get_xaxis_transform(), fontsize=7, va="top")
    return fig


def plot_plans(ws: Workspace, selection: str | None) -> list[tuple[str, str, Callable[[], Figure]]]:
    """The report's plots as (title, what it draws from, a function that draws it), in page order."""
    numeric = numeric_columns(ws) if ws.has_pool else []
    scores = {role: role_candidates(ws, role) for role in ("complexity", "quality")}  # the one rule of defaults
    several = any(len(found) > 1 for found in scores.values())  # the scatter says which columns, not picks one
    pair = () if several else tuple(f[0] for f in scores.values()) if all(scores.values()) else tuple(numeric[:2])
    plans: list[tuple[str, str, Callable[[], Figure]]] = [
        ("score histograms", _columns(numeric), lambda: score_histograms(ws, selection=selection)),
        (f"{pair[0]} x {pair[1]}" if len(pair) == 2 else "complexity x quality", _columns(pair),
         (lambda: score_scatter(ws, *(pair or (None, None)), selection)) if len(pair) == 2 or several else
         _missing("needs two score columns (complexity and quality); this workspace has "
                  + (f"{numeric[0]} only" if numeric else "none: score the pool first"))),
        ("embedding map", "embeddings 'default'", lambda: embedding_map(ws, selection)),
        *([("tag frequency", _columns(role_candidates(ws, "tags")), lambda: tag_frequency_plot(tag_sets(ws))),
           ("tag coverage", _columns(role_candidates(ws, "tags")),
            lambda: tag_coverage(ws, [selection] if selection else None))] if tags_asked_for(ws) else []),
        (f"rows by {breakdown_column(ws)}", _columns([breakdown_column(ws)]), lambda: source_breakdown(ws, selection)),
    ]
    if "ifd" in numeric:  # model signals are optional: their plots appear once the column exists
        plans.append(("IFD (instruction-following difficulty)", _columns(["ifd"]), lambda: ifd_histogram(ws, selection)))
        if len(scores["quality"]) == 1 and scores["quality"][0] in numeric:
            plans.append(("IFD x quality", _columns(["ifd", scores["quality"][0]]),
                          lambda: score_scatter(ws, "ifd", scores["quality"][0], selection)))
    return plans


def all_plots(ws: Workspace, selection: str | None = None) -> list[tuple[str, Figure | None, str | None]]:
    """Every report plot as (title, figure or None, what is missing or why it failed); never raises: a plot that
    fails is a note naming it, its columns and the error, and the other plots are still drawn."""
    selection = selection if selection is not None else default_selection(ws)
    return [(title, *drawn_or_note(title, source, make)) for title, source, make in plot_plans(ws, selection)]


def drawn_or_note(title: str, source: str, make: Callable[[], T]) -> tuple[T | None, str | None]:
    """(what ``make`` returns, None), or (None, why not): the missing input, or the error naming the plot and
    ``source`` (the columns it draws)."""
    try:
        return make(), None
    except (MissingInput, DamagedFileError) as exc:  # a damaged input stops its plot, not the others
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 -- any failure of one plot is shown in its place, the report goes on
        return None, f"{title} could not be drawn from {source}: {type(exc).__name__}: {exc}"


def _columns(names: list[str] | tuple[str, ...]) -> str:
    return ("column " if len(names) == 1 else "columns ") + ", ".join(names) if names else "no column"


def _missing(message: str):
    def raise_missing():
        raise MissingInput(message)

    return raise_missing
