"""The data map (Dataset Cartography): confidence against variability of each trained row, coloured by
correctness, with the regions the ``cartography`` selector uses; a report section and a notebook view.

It appears once ``ws.train()`` has written the ``confidence`` / ``variability`` / ``correctness`` columns.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from curate.report.scales import drawable
from curate.report.tables import esc, table
from curate.train.cartography import AMBIGUOUS_QUANTILE, REGIONS, regions

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from curate.storage.workspace import Workspace

MAP_COLUMNS = ("confidence", "variability", "correctness")
MAX_POINTS = 20_000  # a larger pool is subsampled (seeded) for the scatter; counts use every row


def has_data_map(ws: Workspace) -> bool:
    return ws.has_pool and all(ws.has_column(c) for c in MAP_COLUMNS)


def _values(ws: Workspace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from curate.report.plots import MissingInput, plotted_values  # matplotlib only when a map is drawn

    if not has_data_map(ws):
        raise MissingInput("no data map yet: run `ws.train()` or `curate train run` (writes confidence, "
                           "variability, correctness)")
    return tuple(plotted_values(ws, c) for c in MAP_COLUMNS)  # type: ignore[return-value]


def data_map_figure(ws: Workspace, selection: str | None = None) -> Figure:
    """Variability (x) against confidence (y), colour = correctness; a selection's kept rows ringed."""
    from curate.report.figures import NotebookFigure
    from curate.report.plots import KEPT_COLOUR, _selection_masks
    conf, var, corr = _values(ws)
    ok = np.flatnonzero(~(np.isnan(conf) | np.isnan(var)))
    if len(ok) > MAX_POINTS:
        ok = np.sort(np.random.default_rng(0).choice(ok, MAX_POINTS, replace=False))
    fig = NotebookFigure(figsize=(6.0, 4.6), layout="constrained")
    ax = fig.subplots()
    pts = ax.scatter(var[ok], conf[ok], c=corr[ok], cmap="viridis", vmin=0.0, vmax=1.0, s=9, alpha=0.75,
                     linewidths=0)
    fig.colorbar(pts, ax=ax, label="correctness (share of epochs)")
    if selection:
        kept = _selection_masks(ws, selection)[0][ok]
        ax.scatter(var[ok][kept], conf[ok][kept], s=26, facecolors="none", edgecolors=KEPT_COLOUR, linewidths=0.8,
                   label=drawable(f"kept by {selection} ({int(kept.sum()):,})"))
        ax.legend(fontsize=8, loc="lower right")
    valid = ~(np.isnan(conf) | np.isnan(var))
    ax.axvline(float(np.quantile(var[valid], AMBIGUOUS_QUANTILE)), color="black", linestyle="--", linewidth=0.8)
    ax.axhline(float(np.median(conf[valid])), color="black", linestyle=":", linewidth=0.8)
    for text, x, y in (("easy", 0.02, 0.97), ("hard", 0.02, 0.03), ("ambiguous", 0.98, 0.5)):
        ax.text(x, y, text, transform=ax.transAxes, fontsize=8, ha="left" if x < 0.5 else "right",
                va="top" if y > 0.9 else ("bottom" if y < 0.1 else "center"))
    ax.set_xlabel("variability (std of gold-token probability over epochs)")
    ax.set_ylabel("confidence (mean gold-token probability)")
    ax.set_title(f"data map ({int(valid.sum()):,} rows)", fontsize=10)
    return fig


def region_counts(ws: Workspace) -> dict[str, int]:
    conf, var, _ = _values(ws)
    counts = Counter(r for r in regions(conf, var).tolist() if r)
    return {r: counts.get(r, 0) for r in REGIONS}


def _train_line(ws: Workspace) -> str:
    prov = ws.column_provenance("confidence")
    train = prov.get("train") or {}
    cfg = train.get("config") or {}
    mode = f"LoRA r={cfg.get('lora_rank')}" if cfg.get("lora_rank") else "full fine-tune"
    return (f"{train.get('rows', '?')} rows, {train.get('epochs_done', '?')} epochs of {mode} of "
            f"<code>{esc(train.get('model', '?'))}</code> (lr {cfg.get('learning_rate')}, batch {cfg.get('batch_size')}, "
            f"seed {cfg.get('seed')}); correctness: {esc(prov.get('definition', ''))}")


def datamap_section(ws: Workspace, selection: str | None = None) -> str:
    """The report section: the map, region counts, how it was trained; "" when there is no data map."""
    from curate.report.plots import figure_data_uri

    if not has_data_map(ws):
        return ""
    fig = data_map_figure(ws, selection if selection in ws.selections else None)
    counts = region_counts(ws)
    return (f"<p class='sub'>{_train_line(ws)}. Regions: ambiguous = top third by variability; the rest easy "
            "(confidence at or above the median) or hard (below: often noisy labels).</p>"
            + table(["region", "rows"], list(counts.items()), {1})
            + f"<figure><img alt='data map' src='{figure_data_uri(fig)}'><figcaption>data map</figcaption></figure>")


class DataMapView:
    """The data map in a notebook: ``DataMapView(ws, selection)`` renders the scatter and region counts."""

    def __init__(self, ws: Workspace, selection: str | None = None):
        self.ws = ws
        self.selection = selection

    def figure(self) -> Figure:
        return data_map_figure(self.ws, self.selection)

    def _repr_html_(self) -> str:
        html = datamap_section(self.ws, self.selection)
        return html or "<p class='missing'>no data map yet: run <code>ws.train()</code></p>"

    def __repr__(self) -> str:
        if not has_data_map(self.ws):
            return "DataMapView(no data map yet: run ws.train())"
        return f"DataMapView({region_counts(self.ws)})"


def data_map(ws: Any, selection: str | None = None) -> DataMapView:
    """The notebook view of ``ws``'s data map."""
    return DataMapView(ws, selection)
