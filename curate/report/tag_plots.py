"""The report's tag frequency plot: the commonest tags of the normalised column and how diverse the tags are
(distinct tags, tags per query, rows tagged). Drawn with or without a selection: the coverage plot needs one, and a
tagged workspace with none showed no tag figure at all."""

from __future__ import annotations

from matplotlib.figure import Figure

from curate.report.figures import NotebookFigure
from curate.report.plot_inputs import POOL_COLOUR, MissingInput
from curate.tags.metrics import tag_frequency, tags_per_query

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
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel(f"share of the {len(tagged):,} tagged rows")
    ax.set_title(f"{len(frequency):,} distinct tags, {tags_per_query(tagged):.2f} per tagged row; {len(tagged):,} of {len(sets):,} "
                 "rows tagged", fontsize=9)
    return fig
