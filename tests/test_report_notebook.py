"""The plots and the report as a Jupyter kernel shows them (Jupyter audit): figures display as PNG without
``%matplotlib inline``, the report keeps its styling inside a notebook's output div (checked in headless Chromium),
and a selection passed where a plot takes a column is named as such."""

import pytest
from IPython.core.formatters import DisplayFormatter
from matplotlib.figure import Figure

from curate.report.datamap import data_map_figure
from curate.report.plots import MissingInput, all_plots, embedding_map, score_histograms, score_scatter
from tests.test_report import synthetic_workspace


def test_every_plot_displays_as_a_png_in_a_kernel_without_the_inline_magic(tmp_path):
    """IPython's formatter (what a kernel calls on a cell's value) gave text/plain only: ``<Figure size ...>``."""
    ws = synthetic_workspace(tmp_path / "ws")
    figures = [fig for _, fig, _ in all_plots(ws, "deita")]
    assert len(figures) >= 5 and all(fig is not None for fig in figures)
    for fig in figures:
        data, _ = DisplayFormatter().format(fig)
        assert data.get("image/png", b"")[:8] == b"\x89PNG\r\n\x1a\n", (fig, sorted(data))
        assert isinstance(fig, Figure)  # still matplotlib's: savefig, axes
    fig = score_histograms(ws)
    fig.savefig(tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("confidence", "variability", "correctness"):  # the data map's columns, as training writes them
        ws.add_column(name, [(i % 10) / 10 for i in range(len(ws))], {"kind": "test"})
    assert "image/png" in DisplayFormatter().format(data_map_figure(ws, "deita"))[0]


def test_a_selection_passed_as_a_column_is_named_a_selection(tmp_path):
    ws = synthetic_workspace(tmp_path / "ws")
    with pytest.raises(MissingInput, match=r"'deita' is a selection, not a column: pass selection='deita'"):
        score_scatter(ws, "deita")  # was: "no column 'deita' yet: score the pool first"
    with pytest.raises(MissingInput, match="is a selection, not a column"):
        score_histograms(ws, "deita")
    assert embedding_map(ws, "deita") is not None  # a selection second stays a selection
    assert score_scatter(ws, selection="deita") is not None
    with pytest.raises(MissingInput, match="no column 'nope' yet"):
        score_scatter(ws, "nope")
