"""The ``deita`` selector: DEITA's score-first, diversity-aware admission (the repr filter)."""

from __future__ import annotations

import numpy as np

from curate.codes import Decision
from curate.defaults import DEITA, EMBED
from curate.select.admission import admit
from curate.select.inputs import score_detail, vector_view
from curate.select.registry import SelectorResult, register
from curate.select.sort_key import score_rows


@register("deita")
def deita(ws, rows: np.ndarray, budget: int | None = None,
          max_cosine_similarity: float = DEITA.max_cosine_similarity, sort_by: str | None = None,
          embeddings: str = EMBED.name, block_size: int = DEITA.block_size, device: str = "cpu",
          progress: bool = False) -> SelectorResult:
    """By score (``sort_by``, default ``DEITA.sort_by`` over the derived score columns: Σ over turns of
    complexity·quality), admit a row
    iff its cosine similarity to every admitted row is <= ``max_cosine_similarity``, until ``budget``.

    Considered rows come in examination order (score descending, ties by row id), then the unscored rows.
    """
    ids_all = ws.ids
    ids = [ids_all[p] for p in rows.tolist()]
    scores = score_rows(ws, sort_by, ids)
    res = admit(vector_view(ws, embeddings, rows), scores.values, np.asarray(ids, dtype=object).astype(str),
                max_cosine_similarity, budget, block_size=block_size, device=device, progress=progress)
    out = SelectorResult(info={"sort_by": scores.sort_by, "reducer": scores.reducer, "stats": res.stats})
    for i in np.concatenate((res.order, np.flatnonzero(np.isnan(scores.values)))).tolist():
        decision, reason, detail = res.outcome(i, ids, max_cosine_similarity)
        if decision is Decision.UNSCORED:
            detail = scores.detail(i)
        else:
            detail = {**score_detail(scores.values[i]), **detail}
            if decision is Decision.NOT_REACHED:
                detail["budget"] = budget
        out.add(int(rows[i]), decision, reason, detail)
    return out
