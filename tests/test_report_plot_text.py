"""The report draws user text (tag names) as written, never as matplotlib maths, and refuses a sample count it cannot show."""

import io

from curate import Workspace
from curate.report.plots import all_plots


def _tagged(tmp_path, tags):
    ws = Workspace(tmp_path / "ws")
    ws.load([{"instruction": f"question {i}", "output": "an answer"} for i in range(len(tags))])
    ws.add_column("tags", tags, {"kind": "tagger", "method": "hand-written", "granularity": "row"})
    ws.select(method="exact", name="dedup")
    return ws


def test_a_tag_holding_dollar_signs_is_drawn_in_the_tag_frequency_plot(tmp_path):
    # a tag an LLM wrote, "budget $x^$ maths", was parsed as mathtext: the figure raised ValueError when drawn, so the
    # report had no tag frequency plot and the notebook showed a traceback
    ws = _tagged(tmp_path, [["pricing in $", "budget $x^$ maths"], ["budget $x^$ maths"], ["plain"]])
    figures = {title: (fig, note) for title, fig, note in all_plots(ws, "dedup")}
    fig, note = figures["tag frequency"]
    assert note is None and fig is not None
    fig.savefig(io.BytesIO(), format="png")  # the draw that raised
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert r"budget \$x^\$ maths" in labels  # escaped: drawn as the text itself


def test_a_long_tag_is_cut_on_the_tag_frequency_axis(tmp_path):
    ws = _tagged(tmp_path, [["a" * 300], ["short"]])
    fig = dict((title, fig) for title, fig, _ in all_plots(ws, "dedup"))["tag frequency"]
    assert max(len(t.get_text()) for t in fig.axes[0].get_yticklabels()) < 100


def test_a_negative_samples_is_refused_not_read_as_all_rows_but_one(tmp_path):
    # ws.report(samples=-1) (the CLI's --samples has min=0) showed every kept row but the last: rows[:-1]
    import pytest

    from curate.errors import OptionError
    from curate.report import report_view

    ws = _tagged(tmp_path, [["a"], ["b"], ["c"]])
    for bad in (-1, 1.5, True):
        with pytest.raises(OptionError, match="samples is a number of rows >= 0"):
            ws.report(tmp_path / "report.html", samples=bad)
        with pytest.raises(OptionError, match="samples"):
            report_view(ws, samples=bad)
    assert not (tmp_path / "report.html").exists()
    assert ws.report(tmp_path / "report.html", samples=0).exists()
