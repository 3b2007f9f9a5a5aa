"""What selectors read from a workspace besides scores: unit embedding rows and row texts."""

from __future__ import annotations

import numpy as np

from curate.rows import row_text
from curate.select.admission import unit_rows


def vectors(ws, embeddings: str, rows: np.ndarray) -> np.ndarray:
    """The rows' embeddings (pool positions ``rows``) as float32 unit rows (renormalised where off unit
    norm, so cosines stay true cosines)."""
    return unit_rows(ws.embeddings(embeddings)[rows])


def texts(ws, rows: np.ndarray, text: str) -> list[str]:
    """One text per row (pool positions ``rows``): its instruction, response or conversation
    (see :func:`curate.rows.row_text`)."""
    ids = ws.ids
    return [row_text(c, text) for c in ws.conversations([ids[p] for p in rows.tolist()])]


def score_detail(value: float) -> dict[str, float]:
    """``{"score": value}``, or nothing for a NaN (no score)."""
    return {} if np.isnan(value) else {"score": float(value)}
