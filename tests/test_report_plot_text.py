"""The report draws user text (tag names) as written, never as matplotlib maths, refuses a sample count it cannot show,
and says what a sample count of 0 or rows gone from the pool leave out."""

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


def test_characters_no_installed_font_draws_are_escapes_not_empty_boxes_and_warn_nothing(tmp_path):
    # two Chinese sources of one length were drawn as the same four empty boxes, and each character was a
    # "Glyph ... missing from font(s) DejaVu Sans" warning on stderr, at every draw
    import warnings

    from curate.report.figures import figure_bytes
    from curate.report.plots import score_scatter, source_breakdown
    from curate.report.scales import tick_label

    ws = Workspace(tmp_path / "ws")
    ws.load([{"instruction": f"question {i}", "output": "an answer", "source": ["中文来源", "英文来源", "café"][i % 3]}
             for i in range(6)])
    for name in ("品质", "复杂度"):
        ws.add_column(name, [float(i) for i in range(6)], {"kind": "scorer", "method": "hand-written"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph is a UserWarning: raised here
        for fig in (source_breakdown(ws), score_scatter(ws, "品质", "复杂度")):
            figure_bytes(fig)
    labels = [t.get_text() for t in source_breakdown(ws).axes[0].get_yticklabels()]
    assert len(set(labels)) == 3 and "café" in labels  # a letter the font has stays itself
    assert tick_label("中文来源") in labels and tick_label("英文来源") in labels
    assert tick_label("中文来源") in ("中文来源", r"\u4e2d\u6587\u6765\u6e90")  # as written where a CJK font is installed


def test_a_selection_named_in_chinese_draws_every_plot_without_a_missing_glyph(tmp_path):
    # a selection's name is in the legends ("kept by ...") and titles: "精选" was two empty boxes and warnings
    import warnings

    import numpy as np

    from curate.report.figures import figure_bytes

    ws = _tagged(tmp_path, [["a"], ["b"], ["a", "c"], ["c"]])
    ws.add_column("quality", [1.0, 2.0, 3.0, 4.0], {"kind": "scorer", "method": "hand-written"})
    ws.add_column("complexity", [4.0, 1.0, 3.0, 2.0], {"kind": "scorer", "method": "hand-written"})
    ws.add_embeddings("default", np.eye(4, 8), {"model": "hand-written"})
    ws.select(method="threshold", name="精选", min_score=2.0, sort_by="quality")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drawn = [(title, fig) for title, fig, note in all_plots(ws, "精选") if fig is not None]
        for _, fig in drawn:
            figure_bytes(fig)
    assert {"embedding map", "tag coverage", "rows by format"} <= {title for title, _ in drawn}


def test_samples_zero_says_none_were_asked_for_not_that_no_row_was_dropped(tmp_path):
    """samples=0 drew "kept by dedup (first 0 in rank order)" over an empty block and "no row was dropped" where a
    row was; rows no longer in the pool (a re-run on an edited source) read the same."""
    from curate.report.html import report_html

    ws = Workspace(tmp_path / "ws")  # a trailing space makes another row of the same text: dropped as a duplicate
    ws.load([{"instruction": t, "output": "an answer"} for t in ("question 0", "question 0  ", "question 1")])
    ws.select(method="exact", name="dedup")
    assert ws.selection("dedup").decisions()["duplicate"] == 1
    page = report_html(ws, selection="dedup", samples=0)
    assert "no sample rows: samples=0 (--samples 0) asks for none" in page
    assert "no row was dropped" not in page and "first 0 in rank order" not in page
    dropped = [r["id"] for r in ws.selection("dedup").rows() if r["decision"] != "kept"]
    ws.keep_rows(set(ws.ids) - set(dropped))
    page = report_html(ws, selection="dedup", samples=5)
    assert "no row was dropped" not in page and "none of them is in the pool now" in page


def test_score_histograms_of_no_columns_is_refused_naming_the_pools_score_columns(tmp_path):
    """score_histograms(ws, []) said "no score columns yet: score the pool first" of a scored pool."""
    import pytest

    from curate.errors import OptionError
    from curate.report.plots import score_histograms

    ws = _tagged(tmp_path, [["a"], ["b"], ["c"]])
    ws.add_column("quality", [1.0, 2.0, 3.0], {"kind": "scorer", "method": "hand-written", "granularity": "row"})
    with pytest.raises(OptionError, match=r"columns=\[\] names no column: give one or more, or leave it out for "
                                          r"every score column \(quality\)"):
        score_histograms(ws, [])
    assert [ax.get_title() for ax in score_histograms(ws).axes if ax.axison] == ["quality"]
