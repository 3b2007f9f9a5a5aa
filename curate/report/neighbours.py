"""Why was this row rejected: the nearest kept rows of a row a similarity selector dropped.

For selections whose rows were dropped for being too similar (DEITA's ``too_similar``, semantic dedup's
``near_duplicate``) the report shows, for a few such rows, the kept rows nearest to it by cosine over the
embedding set the selector used, beside the witness the selector recorded. The recorded witness is the
admitted row that decided the rejection (in DEITA's walk order); the nearest kept row is at least as
similar. Neighbours are exact (one product against every kept row) unless ``index="hnsw"``: an hnswlib
graph over the kept rows (cosine), for asking about many rejected rows of a large selection. Its answers are
approximate (a kept row nearer than those listed may be missed), so a kept witness is always compared exactly
as well and listed where it is among the ``k`` nearest: the first row listed is at least as similar as the
witness under either index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from curate.codes import Reason
from curate.defaults import ANN, EMBED
from curate.report.summary import in_creation_order
from curate.report.tables import esc, shorten, table
from curate.select.admission import unit_rows
from curate.storage.damage import DamagedFileError

if TYPE_CHECKING:
    from curate.storage.workspace import Workspace

SIMILARITY_REASONS = (Reason.TOO_SIMILAR.value, Reason.NEAR_DUPLICATE.value)
EXAMPLES = 5  # rejected rows shown per selection
CHUNK = 65536  # kept rows per product in the exact search


def selection_embeddings(prov: dict[str, Any]) -> str:
    """The embedding set a selection's selector used (its ``embeddings`` parameter), else the default."""
    params = prov.get("params") or {}
    return str(params.get("embeddings") or prov.get("embeddings") or EMBED.name)


def nearest_kept(kept: np.ndarray, queries: np.ndarray, k: int = ANN.neighbours, index: str = "exact",
                 ef: int = ANN.ef) -> tuple[np.ndarray, np.ndarray]:
    """For each query row (unit vectors), the ``k`` nearest ``kept`` rows by cosine: (positions into
    ``kept``, similarities), best first, both (n_queries, min(k, len(kept))). ``index``: ``exact`` or
    ``hnsw`` (approximate; similarities recomputed exactly for the rows it returns)."""
    k = min(k, len(kept))
    if k == 0 or len(queries) == 0:
        return np.empty((len(queries), k), np.int64), np.empty((len(queries), k))
    q = np.asarray(queries, np.float32)
    if index == "hnsw":
        import hnswlib

        graph = hnswlib.Index(space="ip", dim=kept.shape[1])
        graph.init_index(max_elements=len(kept), ef_construction=ANN.ef_construction, M=ANN.m, random_seed=0)
        graph.add_items(np.asarray(kept, np.float32), np.arange(len(kept)))
        graph.set_ef(max(ef, k))
        pos, _ = graph.knn_query(q, k=k)
        pos = pos.astype(np.int64)
    elif index == "exact":
        best_sim = np.full((len(q), 0), -np.inf, np.float32)
        best_pos = np.empty((len(q), 0), np.int64)
        for c0 in range(0, len(kept), CHUNK):
            sims = q @ np.asarray(kept[c0:c0 + CHUNK], np.float32).T
            top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            best_sim = np.concatenate((best_sim, np.take_along_axis(sims, top, 1)), axis=1)
            best_pos = np.concatenate((best_pos, top + c0), axis=1)
            keep = np.argsort(-best_sim, axis=1, kind="stable")[:, :k]
            best_sim, best_pos = np.take_along_axis(best_sim, keep, 1), np.take_along_axis(best_pos, keep, 1)
        pos = best_pos
    else:
        from curate.errors import OptionError

        raise OptionError(f"index must be 'exact' or 'hnsw', not {index!r}")
    sims = np.einsum("qd,qkd->qk", q.astype(np.float64), np.asarray(kept[pos], np.float64))  # the answers' rows only
    order = np.argsort(-sims, axis=1, kind="stable")
    return np.take_along_axis(pos, order, 1), np.take_along_axis(sims, order, 1)


class _UnitRows:
    """Rows ``positions`` of ``x`` as unit float32 vectors, read a part at a time: :func:`nearest_kept` walks the
    kept rows in chunks and reads back only its answers. The report copied the whole kept set (a near-duplicate
    selection keeps nearly every row: 4 GB more at 1M rows)."""

    def __init__(self, x: np.ndarray, positions: np.ndarray):
        self.x, self.positions = x, positions
        self.shape = (len(positions), x.shape[1])

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, item: Any) -> np.ndarray:
        at = np.asarray(self.positions[item])
        return unit_rows(self.x[at.reshape(-1)]).reshape(*at.shape, self.shape[1])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:  # the hnsw index holds them all anyway
        rows = self[:]
        return rows if dtype is None else rows.astype(dtype)


def rejected_neighbours(ws: Workspace, selection: str, k: int = ANN.neighbours, limit: int | None = EXAMPLES,
                        index: str = "exact", ef: int = ANN.ef) -> list[dict[str, Any]]:
    """Rows of ``selection`` dropped for similarity (the first ``limit`` in rank order; None: all), each with
    the selector's recorded witness and similarity and its ``k`` nearest kept rows: a list of
    ``{"id", "reason", "witness", "similarity", "neighbours": [{"id", "similarity"}, ...]}``. Empty when no
    row was dropped for similarity or the embedding set is missing. ``index="hnsw"`` (query beam ``ef``) may miss a
    nearer kept row, never the witness (compared exactly)."""
    sel = ws.selection(selection)
    dropped = sel.rows(reasons=SIMILARITY_REASONS, limit=limit)  # in rank order
    kept_ids = sel.ids
    name = selection_embeddings(sel.provenance)
    if not dropped or not kept_ids or name not in ws.embedding_sets:
        return []
    x = ws.embeddings(name)
    index_of = ws.index
    kept_pos = np.array([index_of[i] for i in kept_ids], np.int64)
    queries = unit_rows(x[np.array([index_of[r["id"]] for r in dropped], np.int64)])
    kept_rows = _UnitRows(x, kept_pos)
    pos, sims = nearest_kept(kept_rows, queries, k, index, ef)  # cosines, as the selectors decided on
    at = {i: p for p, i in enumerate(kept_ids)}
    out = []
    for r, q, p_row, s_row in zip(dropped, queries, pos, sims, strict=True):
        detail = r["detail"]
        w = at.get(detail.get("witness"))
        if w is not None and len(p_row) and w not in p_row:  # the graph missed it: compared exactly, listed if near
            w_sim = float(np.asarray(q, np.float64) @ np.asarray(kept_rows[w], np.float64))
            p_row, s_row = [*p_row.tolist(), w], [*s_row.tolist(), w_sim]
            best = np.argsort(-np.asarray(s_row), kind="stable")[:len(pos[0])]
            p_row, s_row = [p_row[b] for b in best], [s_row[b] for b in best]
        out.append({"id": r["id"], "reason": r["reason"], "witness": detail.get("witness"),
                    "similarity": detail.get("similarity"),
                    "neighbours": [{"id": kept_ids[int(p)], "similarity": float(s)} for p, s in zip(p_row, s_row, strict=True)]})
    return out


def neighbours_section(ws: Workspace, examples: int = EXAMPLES) -> str:
    """HTML: per selection with similarity rejections, a few rejected rows with their nearest kept rows;
    empty when no selection dropped a row for similarity (the report then leaves the section out)."""
    out = []
    for name in in_creation_order(ws.selections):
        try:
            found = rejected_neighbours(ws, name, limit=examples)
        except DamagedFileError:  # the selections section shows it as damaged
            continue
        if not found:
            continue
        needed = sorted({r["id"] for r in found} | {n["id"] for r in found for n in r["neighbours"]})
        texts = {i: (c[0]["content"] if c else "") for i, c in zip(needed, ws.conversations(needed), strict=True)}
        rows = [[f"{r['id']}: {shorten(texts.get(r['id'], ''), 90)}", r["reason"],
                 f"{r['witness']} ({r['similarity']:.3f})" if r["similarity"] is not None else r["witness"],
                 "; ".join(f"{n['id']} ({n['similarity']:.3f}): {shorten(texts.get(n['id'], ''), 60)}"
                           for n in r["neighbours"])] for r in found]
        out.append(f"<h3>{esc(name)}</h3>" + table(
            ["rejected row", "reason", "recorded witness (cosine)", "nearest kept rows (cosine): text"], rows,
            set(), {0: "ex", 3: "ex"}))
    return "".join(out)
