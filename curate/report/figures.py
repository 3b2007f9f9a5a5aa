"""The figure every plot returns: a matplotlib ``Figure`` that shows itself as a PNG in Jupyter, and its rendering
into bytes and ``data:`` URIs for the HTML report.

Plots are built with matplotlib's object API (no ``pyplot``, no global backend), so a kernel without
``%matplotlib inline`` registers no PNG formatter for them and a bare ``Figure`` shows as the text
``<Figure size 1260x300 with 3 Axes>``. :class:`NotebookFigure` carries its own ``_repr_png_``; where the inline
backend did register its formatter (it matches subclasses too), that one draws it, once.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.figure import Figure

from curate.report.plot_inputs import known_warnings_silenced


def figure_bytes(fig: Figure, format: str = "png", dpi: int = 100) -> bytes:
    """``fig`` rendered (Agg, tight box) as PNG or SVG bytes."""
    buf = io.BytesIO()
    with np.errstate(over="ignore"), known_warnings_silenced():  # a symlog axis near the float limit overflows
        fig.savefig(buf, format=format, dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def figure_data_uri(fig: Figure, format: str = "png", dpi: int = 100) -> str:
    """Render ``fig`` into a ``data:`` URI (PNG or SVG)."""
    mime = "image/svg+xml" if format == "svg" else f"image/{format}"
    return f"data:{mime};base64,{base64.b64encode(figure_bytes(fig, format, dpi)).decode('ascii')}"


class NotebookFigure(Figure):
    """A matplotlib ``Figure`` (``savefig``, ``axes``, everything) that Jupyter shows as an image without
    ``%matplotlib inline``."""

    def _repr_png_(self) -> bytes:
        return figure_bytes(self, "png")
