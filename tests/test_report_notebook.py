"""The plots and the report as a Jupyter kernel shows them (Jupyter audit): figures display as PNG without
``%matplotlib inline``, the report keeps its styling inside a notebook's output div (checked in headless Chromium),
and a selection passed where a plot takes a column is named as such."""

import asyncio
import json
import tempfile
from pathlib import Path

import pytest
from IPython.core.formatters import DisplayFormatter
from matplotlib.figure import Figure

from curate.report import report_view
from curate.report.datamap import data_map_figure
from curate.report.html import build_report
from curate.report.plots import MissingInput, all_plots, embedding_map, score_histograms, score_scatter
from tests.test_report import _browser_required, _inspect_page, synthetic_workspace


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


# what a notebook's output div holds, probed in the browser: the report's styled parts under .curate-report
PROBE = """(() => { const out = document.getElementById('out'), plots = out.querySelector('.plots'),
  img = out.querySelector('figure img'), cards = out.querySelector('.cards');
  return {ancestor: !!(plots && plots.closest('.curate-report')), plots: plots && getComputedStyle(plots).display,
          cards: cards && getComputedStyle(cards).display,
          fits: !!img && img.getBoundingClientRect().right <= out.getBoundingClientRect().right + 1}; })()"""


def _shown_in_an_output_div(html: str, host: Path, profile: str) -> dict:
    """``html`` set as a Jupyter output div's innerHTML (the page's html/head/body tags dropped, as there)."""
    script = json.dumps(html).replace("</", "<\\/")
    host.write_text(f"<!DOCTYPE html><html><body><div id='out' style='width:900px'></div>"
                    f"<script>document.getElementById('out').innerHTML = {script};</script></body></html>")
    return asyncio.run(_inspect_page(host.as_uri(), host.with_suffix(".png"), profile, probe=PROBE))["probe"]


def test_the_report_keeps_its_styling_inline_in_a_notebook(tmp_path):
    """HTML(open(path).read()) and report_view: the cards, the plot grid and the image widths as on the page
    (before: body class='curate-report' was dropped with the body tag, so no rule matched: plots display block)."""
    _browser_required()
    ws = synthetic_workspace(tmp_path / "ws")
    path = build_report(ws, tmp_path / "report.html")
    view = report_view(path)
    assert view.path == path and "<body" not in view._repr_html_() and "<style>" in view._repr_html_()
    assert "<style>" in report_view(ws, samples=2)._repr_html_()  # built without a file
    styled = {"ancestor": True, "plots": "grid", "cards": "flex", "fits": True}
    with tempfile.TemporaryDirectory() as profile:
        assert _shown_in_an_output_div(path.read_text(), tmp_path / "raw.html", profile) == styled
    with tempfile.TemporaryDirectory() as profile:
        assert _shown_in_an_output_div(view._repr_html_(), tmp_path / "view.html", profile) == styled
