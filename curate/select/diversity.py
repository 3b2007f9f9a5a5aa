"""Diversity selectors over embeddings: ``kcenter`` (MoDS / coreset), ``kmeans`` (cluster quotas), ``lift``."""

from __future__ import annotations

import math

import numpy as np

from curate.codes import Decision, Reason
from curate.defaults import EMBED, KMEANS, SELECT
from curate.errors import OptionError
from curate.select.clusters import fit_kmeans
from curate.select.inputs import in_id_order, score_detail, vectors
from curate.select.progress import printed_iterations, walked
from curate.select.registry import SelectorResult, register
from curate.select.sort_key import rows_by_score

LIFT_SVD_SOLVER = "covariance_eigh"  # exact, draws nothing: 0.7-2.0 s on 10K x 384 (randomized 2.0-2.9, full 1.7-4.2)
_CHOSEN_BLOCK = 4096  # rows of ``chosen`` per matrix product in kcenter_greedy


def kcenter_greedy(x: np.ndarray, k: int, first: int = 0, chosen: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy k-center on unit vectors (cosine distance): returns centre indices, each row's nearest centre,
    and each row's distance to it. Exact: one matrix-vector product per centre. A row is picked once: with more
    centres asked for than distinct vectors, the duplicates of centres (distance 0) come last, in row order.
    ``chosen``: unit rows outside ``x`` that are centres already (MoDS' seed); the first pick is then the farthest
    from them instead of ``first``, and a row nearest one of them has nearest centre -1.

    Identical rows are one point, stood for by the first of them (``first`` for its own): float32 products round
    differently by row position, so twins' distances differed in the last bit and that, not row order (the score
    order of ``kcenter --sort-by``), chose among them."""
    n = len(x)
    k = min(k, n)
    stand_in, group = identical_rows(x)
    if n:
        stand_in[group[first]] = first
    order = np.argsort(stand_in, kind="stable")  # the distinct points in row order
    points, rank = stand_in[order], np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    distinct = x if len(points) == n else x[points]  # all distinct (points in row order are 0..n-1): no copy
    centres, nearest, dist = _greedy(distinct, min(k, len(points)), int(rank[group[first]]) if n else 0, chosen)
    centres, point_of_row = points[centres], rank[group]
    nearest = np.where(nearest[point_of_row] < 0, -1, points[nearest[point_of_row]])
    dist = dist[point_of_row]
    if k > len(centres):  # every distinct point is a centre: the other copies follow, in row order
        copies = np.setdiff1d(np.arange(n), centres)[: k - len(centres)]
        centres = np.concatenate([centres, copies])
        nearest[copies] = copies
    return centres, nearest, dist


def identical_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(stand_in, group)``: the first row of each set of bitwise-identical rows of ``x``, and each row's set.
    Rows are grouped by a hash of their bytes (np.unique over the rows would sort a copy of ``x``), then compared
    with their stand-in: a row that only shares the hash is a set of its own."""
    flat = np.ascontiguousarray(x).reshape(len(x), int(np.prod(x.shape[1:])))  # (0, d) too
    digests = np.fromiter((hash(row.tobytes()) for row in flat), np.int64, len(flat))
    _, stand_in, group = np.unique(digests, return_index=True, return_inverse=True)
    group = group.ravel()
    copies = np.flatnonzero(stand_in[group] != np.arange(len(flat)))
    clash = copies[~(flat[copies] == flat[stand_in[group[copies]]]).all(axis=1)]
    if clash.size:
        group[clash] = len(stand_in) + np.arange(clash.size)
        stand_in = np.concatenate([stand_in, clash])
    return stand_in, group


def as_first_copy(values: np.ndarray, members: np.ndarray, twin: np.ndarray) -> np.ndarray:
    """``values`` of rows ``members`` (sorted), each row's replaced by its first identical copy's (``twin``, from
    :func:`identical_rows`) where that copy is a member too: float32 products round by row position, so identical
    rows got values a last bit apart, and that, not row order, broke their tie."""
    at = np.minimum(np.searchsorted(members, twin[members]), len(members) - 1)
    return np.where(members[at] == twin[members], values[at], values)


def _greedy(x: np.ndarray, k: int, first: int, chosen: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`kcenter_greedy` on distinct rows ``x``."""
    n = len(x)
    centres = np.empty(k, np.int64)
    dist = np.full(n, np.inf)
    nearest = np.full(n, -1, np.int64)
    free = np.ones(n, bool)
    for start in range(0, 0 if chosen is None else len(chosen), _CHOSEN_BLOCK):  # bounded memory for big seeds
        dist = np.minimum(dist, 1.0 - (x @ chosen[start:start + _CHOSEN_BLOCK].T).astype(np.float64).max(axis=1))
    c = first if chosen is None or not len(chosen) else int(np.argmax(dist))
    for i in walked(range(k), k, "k-center", "centre"):
        centres[i] = c
        free[c] = False
        d = 1.0 - (x @ x[c]).astype(np.float64)
        closer = d < dist
        dist[closer] = d[closer]
        nearest[closer] = c
        dist[c], nearest[c] = 0.0, c
        if i + 1 < k:
            c = int(np.flatnonzero(free)[np.argmax(dist[free])])
    return centres, nearest, dist


@register("kcenter")
def kcenter(ws, rows: np.ndarray, budget: int, embeddings: str = EMBED.name, sort_by: str | None = None,
            seed: int = SELECT.seed) -> SelectorResult:
    """MoDS / coreset k-center greedy: each pick is the row farthest (cosine distance) from those picked.

    The first centre is the best-scored row when ``sort_by`` is given, else a seeded random row (the
    choice never depends on which columns the workspace happens to hold). The rows are walked in score order
    (ties by row id) or in row-id order, so equally far rows go by that order and the same rows and seed give the
    same centres whatever the pool file's order.
    """
    if sort_by is None:
        ordered, values = in_id_order(ws, rows), np.full(len(rows), np.nan)
        first = int(np.random.default_rng(seed).integers(len(rows))) if len(rows) else 0
    else:  # in row-id order first: rows without a score follow the scored ones in it (they were in pool order)
        rows = in_id_order(ws, rows)
        perm, scores = rows_by_score(ws, rows, sort_by)
        ordered, values, first = rows[perm], scores.values[perm], 0
    x = vectors(ws, embeddings, ordered)
    centres, nearest, dist = kcenter_greedy(x, budget, first)
    ids = ws.ids
    drawn = {"seed": seed} if sort_by is None else {}  # the seed is used (and recorded) without sort_by only
    if not len(centres):  # no rows (a budget is at least 1): no centre, so no witness and no radius
        return SelectorResult(info={"radius": None, "sort_by": sort_by, **drawn})
    first_centre = ("seeded random row" if sort_by is None else "best-scored row" if not np.isnan(values[0])
                    else "first row in row-id order: no candidate has a score")  # it said best-scored of none
    out = SelectorResult(info={"radius": float(dist.max()), "sort_by": sort_by, "first_centre": first_centre, **drawn})
    for i, c in enumerate(centres.tolist()):
        out.add(ordered[c], Decision.KEPT, Reason.SELECTED, {"centre": i + 1, **score_detail(values[c])})
    picked = set(centres.tolist())
    for j in range(len(ordered)):
        if j not in picked:
            out.add(ordered[j], Decision.NOT_REACHED, Reason.BUDGET_FILLED,
                    {"witness": ids[ordered[nearest[j]]], "distance": float(dist[j]), "budget": budget,
                     **score_detail(values[j])})
    return out


@register("kmeans")
def kmeans(ws, rows: np.ndarray, budget: int, n_clusters: int | None = None, per_cluster: str = "nearest",
           embeddings: str = EMBED.name, seed: int = SELECT.seed) -> SelectorResult:
    """Coreset: K-means, then each cluster's share of ``budget`` (by size) nearest its centroid
    (``per_cluster="nearest"``) or by k-center inside the cluster (``"kcenter"``). K-means runs over the rows in
    row-id order, and identical rows tie, broken by row id: the same rows and seed give the same selection
    whatever the pool file's order."""
    if per_cluster not in ("nearest", "kcenter"):
        raise OptionError(f"kmeans: per_cluster must be 'nearest' or 'kcenter', not {per_cluster!r}")
    rows = in_id_order(ws, rows)
    x = vectors(ws, embeddings, rows)
    k = min(len(rows), n_clusters or max(1, min(budget, int(math.sqrt(len(rows))))))
    with printed_iterations(KMEANS.max_iter, "kmeans", "Iteration ") as verbose:
        km, seeding = fit_kmeans(x, k, seed, verbose=verbose)  # fewer distinct vectors than clusters: in the info
    labels = km.labels_
    sizes = np.bincount(labels, minlength=k)
    quota = np.floor(sizes / sizes.sum() * budget).astype(int)
    for c in np.argsort(-(sizes / sizes.sum() * budget - quota), kind="stable")[: budget - quota.sum()]:
        quota[c] += 1
    quota = np.minimum(quota, sizes)
    out = SelectorResult(info={"n_clusters": k, "per_cluster": per_cluster, "empty_clusters": int((sizes == 0).sum()),
                               "seed": seed, **seeding})
    stand_in, group = identical_rows(x)
    twin = stand_in[group]  # identical rows take their first copy's similarity: float32 rounding by position differed
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if not len(members):  # K-means may leave a cluster empty (fewer distinct vectors than clusters)
            continue
        cent = km.cluster_centers_[c] / max(np.linalg.norm(km.cluster_centers_[c]), 1e-12)
        sims = as_first_copy(x[members] @ cent, members, twin)
        if per_cluster == "kcenter":
            picked, _, _ = kcenter_greedy(x[members], int(quota[c]), int(np.argmax(sims)))
            rank = {int(m): i for i, m in enumerate(picked)}
            order = list(picked) + [m for m in np.argsort(-sims, kind="stable") if m not in rank]
        else:
            order = np.argsort(-sims, kind="stable").tolist()
        for i, m in enumerate(order):
            detail = {"cluster": c, "quota": int(quota[c]), "cluster_size": int(sizes[c]),
                      "similarity": float(sims[m])}
            if i < quota[c]:
                out.add(rows[members[m]], Decision.KEPT, Reason.SELECTED, detail)
            else:
                out.add(rows[members[m]], Decision.NOT_REACHED, Reason.QUOTA_FILLED, detail)
    return out


@register("lift")
def lift(ws, rows: np.ndarray, budget: int, n_components: int = 32, embeddings: str = EMBED.name) -> SelectorResult:
    """LIFT: project embeddings (PCA) and keep the rows whose projected coordinates vary the most
    (detail ``score``: that variance). As in the paper, the statistic depends on each axis' sign; the signs are
    scikit-learn's (``svd_flip``). The PCA is exact (the eigenvectors of the dims x dims covariance: no random draw,
    so no seed; scikit-learn's default drew a randomized SVD above 500 rows) and ties go by row id, so the same rows
    give the same selection."""
    from sklearn.decomposition import PCA

    if n_components < 2:  # the variance over fewer than two coordinates is no statistic (NaN or 0 for every row)
        raise OptionError(f"lift: n_components must be at least 2, not {n_components}")
    rows = in_id_order(ws, rows)
    if len(rows) < 2:  # one row has no variance to project (PCA's covariance divides by n - 1: LinAlgError); kept
        out = SelectorResult(info={"budget_covers_all": {"eligible": len(rows), "keep": budget,
                                                         "skipped": "the PCA (one row has no variance)"}})
        for p in rows.tolist():
            out.add(p, Decision.KEPT, Reason.BUDGET_COVERS_ALL, {"keep": budget, "eligible": len(rows)})
        return out
    x = np.asarray(vectors(ws, embeddings, rows))
    info = {"svd_solver": LIFT_SVD_SOLVER, "score": "variance of the row's PCA projection"}
    if (x == x[0]).all():  # no direction varies: scikit-learn's PCA divided 0 by 0 (a RuntimeWarning), scores 0
        var = np.zeros(len(x))
        info |= {"n_components": 0, "zero_variance": f"all {len(x)} candidates have the same embedding: no PCA, "
                                                     "every score is 0 and the budget is filled in row-id order"}
    else:
        proj = PCA(n_components=min(n_components, *x.shape), svd_solver=LIFT_SVD_SOLVER).fit_transform(x)
        stand_in, group = identical_rows(x)
        var = as_first_copy(proj.var(axis=1), np.arange(len(x)), stand_in[group])
        info["n_components"] = int(proj.shape[1])
    out = SelectorResult(info=info)
    for i, j in enumerate(np.argsort(-var, kind="stable").tolist()):
        if i < budget:
            out.add(rows[j], Decision.KEPT, Reason.SELECTED, {"score": float(var[j])})
        else:
            out.add(rows[j], Decision.NOT_REACHED, Reason.BUDGET_FILLED, {"score": float(var[j]), "budget": budget})
    return out
