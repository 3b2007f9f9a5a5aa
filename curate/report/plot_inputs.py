"""What the plots read and share: their inputs (score columns, derived-column roles, a selection's kept and
dropped rows), the one colour per role, and :class:`MissingInput`, the error a plot raises when its input is not
in the workspace yet."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from curate.errors import NotInWorkspaceError, WorkspaceError
from curate.storage.roles import role_candidates, role_column

if TYPE_CHECKING:
    from curate.storage.workspace import Workspace

KEPT_COLOUR = "#1f77b4"     # blue: kept by the selection (a colour-blind-safe pair with the orange)
DROPPED_COLOUR = "#ff7f0e"  # orange: considered by the selection and dropped
POOL_COLOUR = "#b0b0b0"     # grey: the pool, or rows the selection did not consider


class MissingInput(NotInWorkspaceError, LookupError):
    """A plot's input is not in the workspace yet; the message says which step produces it (the CLI prints it
    as one line and exits 78, as for every :class:`NotInWorkspaceError`)."""


TAG_KINDS = ("instag_tags", "instag_normalized")  # the tagger's raw tags, the normaliser's tags


def tags_asked_for(ws: Workspace) -> bool:
    """Whether tags are part of this workspace's work: a tagger's or the normaliser's column, or a derived column
    playing the tags role. Without one the tag coverage plot is no missing step, only a step not taken."""
    return bool(role_candidates(ws, "tags")) or any(p.get("kind") in TAG_KINDS for p in ws.columns.values())


NOT_TAGGED = "tag coverage: not drawn, as no tags were made (optional: curate tag WS adds InsTag tags)"


# -- reading columns ---------------------------------------------------------------------------------
def plotted_values(ws: Workspace, name: str, ids: list[str] | None = None) -> np.ndarray:
    """The numbers a plot draws for column ``name``: ``ws.row_values`` (per-turn values reduced with the
    column's declared reducer, the same one selection's sort key uses) as float64, NaN where missing."""
    if not ws.has_column(name) and not (ws.has_pool and name in ws.pool.column_names):
        if name in ws.selections:  # plots.score_scatter(ws, "deita"): the selection in the place of a column
            raise MissingInput(f"{name!r} is a selection, not a column: pass selection={name!r} (score_histograms and "
                               "score_scatter take columns first; embedding_map, tag_coverage and source_breakdown "
                               "take the selection first)")
        raise MissingInput(f"no column {name!r} yet: score the pool first (e.g. `ws.score(...)` or `curate run`)")
    return np.array([np.nan if v is None else float(v) for v in ws.row_values(name, ids)], dtype=np.float64)


def role_or_missing(ws: Workspace, role: str, name_it: str) -> str:
    """The derived column playing ``role`` (:func:`curate.storage.roles.role_column`: the one rule every default
    follows), or :class:`MissingInput` saying why there is none to draw (nothing wrote one, or several did)."""
    try:
        return role_column(ws, role, name_it)
    except WorkspaceError as exc:
        raise MissingInput(str(exc)) from None


def _selection_masks(ws: Workspace, selection: str) -> tuple[np.ndarray, np.ndarray]:
    """(kept, considered-but-dropped) boolean masks over the pool."""
    if not ws.has_selection(selection):  # a damaged one: ws.selection names it
        raise MissingInput(f"no selection {selection!r}: run a selection first (have {sorted(ws.selections) or 'none'})")
    sel = ws.selection(selection)
    index = ws.index
    kept = np.zeros(len(ws), dtype=bool)
    dropped = np.zeros(len(ws), dtype=bool)
    for rid, decision in zip(sel.table["id"].to_pylist(), sel.table["decision"].to_pylist(), strict=False):
        pos = index.get(rid)
        if pos is None:
            continue
        (kept if decision == "kept" else dropped)[pos] = True
    return kept, dropped


def _need_pool(ws: Workspace) -> None:
    if not ws.has_pool or len(ws) == 0:
        raise MissingInput(f"the workspace {ws.path} has no pool yet: run `curate load SOURCE --workspace {ws.path}`")



def _scatter_by_role(ax, xs: np.ndarray, ys: np.ndarray, shown: np.ndarray, kept: np.ndarray, dropped: np.ndarray,
                     sizes: tuple[int, int, int]) -> None:
    """Points of ``shown`` rows in the three role colours (not considered, dropped, kept: kept on top)."""
    for mask, colour, size, label in ((~kept & ~dropped, POOL_COLOUR, sizes[0], "not considered"),
                                      (dropped, DROPPED_COLOUR, sizes[1], "dropped"),
                                      (kept, KEPT_COLOUR, sizes[2], "kept")):
        if (mask & shown).any():
            ax.scatter(xs[mask & shown], ys[mask & shown], s=size, c=colour, linewidths=0,
                       label=f"{label} ({(mask & shown).sum():,})")
    # beside the axes: placed "best" inside, matplotlib scans every point (11.7 s of a 1M-row report)
    ax.legend(fontsize=8, markerscale=2, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


@contextmanager
def known_warnings_silenced() -> Iterator[None]:
    """Keep off stderr the warnings a plot cannot act on and already shows: matplotlib's constrained layout giving up on
    a crowded figure (it is drawn without it), and the 0/0 of PCA's variance ratio on identical vectors (the embedding
    map says they are all equal)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="constrained_layout not applied", category=UserWarning)
        warnings.filterwarnings("ignore", message="invalid value encountered in divide", category=RuntimeWarning)
        yield


def symlog_axis(ax: Any, axis: str, lo: float, hi: float) -> None:
    """Draw ``ax``'s ``axis`` ("x" or "y") on a symlog scale spanning ``lo``..``hi`` exactly (a margin past the float
    limit left matplotlib's default -1e-3..1e-3), ticked at its ends and 0 (one tick per decade overlapped)."""
    with np.errstate(over="ignore"):  # the inverse transform near the float limit overflows harmlessly
        getattr(ax, f"set_{axis}scale")("symlog")
        getattr(ax, f"set_{axis}lim")(lo, hi)
        getattr(ax, f"set_{axis}ticks")([lo, 0.0, hi] if lo < 0 < hi else [lo, hi])
