"""Exact pruning for the admission loop: two ways to skip similarity products that did not pay.

Moved out of ``curate.select.admission`` (issue 12): both give exactly the loop's decisions (the tests
check them against brute force), but neither made admission faster where it was measured
(``evals/bench_admission.py --prune screen|groups``):

* ``screen_products()``: an upper bound from a low-rank projection plus residual norms (Cauchy-Schwarz).
  On embeddings with a real-like spectrum it leaves ~18% of the products, but on 2 CPU cores the bound
  pass costs as much as it saves.
* ``group_products()``: admitted rows filed under K-means centroids; by the triangle inequality on angles a
  group whose centroid angle minus radius exceeds ``arccos(tau)`` is skipped. In 384 dimensions the radii
  are too large for this to skip much (measured: 25-60% of products, slower in wall time).

Each returns a factory for ``admit(..., products=...)``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from curate.select.admission import unit_rows
from curate.select.products import FLOAT32_MARGIN, Float32Products

ANGLE_MARGIN = 5e-3  # radians; covers arccos of float32 similarities near 1


def spherical_centroids(x: np.ndarray, k: int, seed: int = 0, iters: int = 8) -> np.ndarray:
    """Unit centroids of a few Lloyd rounds of spherical K-means (cosine) on ``x``."""
    rng = np.random.default_rng(seed)
    k = max(1, min(k, len(x)))
    cent = np.array(x[rng.choice(len(x), size=k, replace=False)], dtype=np.float32)
    for _ in range(iters):
        assign = np.argmax(x @ cent.T, axis=1)
        sums = np.zeros_like(cent)
        np.add.at(sums, assign, x)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        empty = norms[:, 0] == 0
        cent = np.where(empty[:, None], cent, sums / np.where(norms == 0, 1, norms)).astype(np.float32)
    return cent


def two_level_centroids(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """About ``k`` fine unit centroids: coarse spherical K-means, then K-means inside each coarse cell
    (cells get fine centroids in proportion to their size). Fine groups keep the pruning radii small."""
    coarse = max(1, min(64, int(math.sqrt(k))))
    cells = np.argmax(x @ spherical_centroids(x, coarse, seed).T, axis=1)
    out = []
    for c in range(coarse):
        members = x[cells == c]
        if len(members):
            out.append(spherical_centroids(members, max(1, round(k * len(members) / len(x))), seed + c + 1))
    return np.concatenate(out)


class _Groups:
    """Admitted rows filed under their nearest centroid, each group sorted by angle to its centroid.

    For a candidate at angle ``t`` from centroid ``c``, a member at angle ``u`` from ``c`` is at least
    ``|t - u|`` from the candidate (triangle inequality on the sphere), so only members with
    ``u`` in ``[t - max_angle, t + max_angle]`` can be within ``max_angle``: a contiguous slice.
    """

    def __init__(self, centroids: np.ndarray, dim: int):
        self.centroids = centroids
        k = len(centroids)
        self.vecs = [np.empty((0, dim), np.float32) for _ in range(k)]
        self.rank = [np.empty(0, np.int64) for _ in range(k)]  # admission ranks
        self.angle = [np.empty(0, np.float64) for _ in range(k)]  # ascending
        self.radius = np.full(k, -np.inf)

    def add(self, vecs: np.ndarray, ranks: np.ndarray, cent_sims: np.ndarray) -> None:
        assign = np.argmax(cent_sims, axis=1)
        ang = np.arccos(np.clip(cent_sims[np.arange(len(assign)), assign].astype(np.float64), -1, 1))
        np.maximum.at(self.radius, assign, ang)
        for c in np.unique(assign).tolist():
            sel = assign == c
            angle = np.concatenate((self.angle[c], ang[sel]))
            srt = np.argsort(angle, kind="stable")
            self.angle[c] = angle[srt]
            self.vecs[c] = np.concatenate((self.vecs[c], vecs[sel]))[srt]
            self.rank[c] = np.concatenate((self.rank[c], ranks[sel]))[srt]

    def best(self, xb: np.ndarray, cent_sims: np.ndarray, max_angle: float) -> tuple[np.ndarray, np.ndarray, int]:
        """Max similarity (float32) and its admission rank for each row of ``xb``, over every admitted row
        that can be within ``max_angle``; rows with no such admitted row get -inf."""
        from threadpoolctl import threadpool_limits

        theta = np.arccos(np.clip(cent_sims.astype(np.float64), -1, 1))
        reach = max_angle + ANGLE_MARGIN
        need = (theta - self.radius[None, :]) <= reach
        best = np.full(len(xb), -np.inf, np.float32)
        best_rank = np.full(len(xb), -1, np.int64)
        cols, rows = np.nonzero(need.T)  # grouped by centroid
        if cols.size == 0:
            return best, best_rank, 0
        cuts = np.flatnonzero(np.diff(cols)) + 1
        starts = np.concatenate(([0], cuts)).tolist()
        ends = np.concatenate((cuts, [cols.size])).tolist()
        computed = 0
        with threadpool_limits(limits=1, user_api="blas"):  # many small products: threads only add overhead
            for s, e in zip(starts, ends, strict=True):
                c = int(cols[s])
                rs = rows[s:e]
                t = theta[rs, c]
                lo = np.searchsorted(self.angle[c], t.min() - reach, side="left")
                hi = np.searchsorted(self.angle[c], t.max() + reach, side="right")
                if hi <= lo:
                    continue
                sims = xb[rs] @ self.vecs[c][lo:hi].T
                computed += sims.size
                arg = np.argmax(sims, axis=1)
                m = sims[np.arange(len(rs)), arg]
                upd = m > best[rs]
                best[rs[upd]] = m[upd]
                best_rank[rs[upd]] = self.rank[c][lo + arg[upd]]
        return best, best_rank, computed


class _Screen:
    """Exact low-rank screen: with P an orthonormal basis of r directions, for unit rows x and y,
    x.y = Px.Py + rx.ry <= Px.Py + |rx||ry| (Cauchy-Schwarz on the residuals r = x - P'Px).
    So one product of (r+1)-dim rows [Px, |rx|] gives an upper bound on every similarity; only pairs whose
    bound exceeds tau are computed exactly. Real sentence embeddings put most of their energy in few
    directions, so the bound is tight there; on isotropic data it is loose and the screen is not used."""

    def __init__(self, basis: np.ndarray, cap: int):
        self.basis = basis  # (r, d) float32, orthonormal rows
        self.basis64 = basis.astype(np.float64)
        self.aug = np.empty((cap, basis.shape[0] + 1), np.float32)

    def augment(self, xb: np.ndarray) -> np.ndarray:
        x64 = xb.astype(np.float64)
        proj = x64 @ self.basis64.T
        resid = np.linalg.norm(x64 - proj @ self.basis64, axis=1) + 1e-7
        return np.concatenate((proj, resid[:, None]), axis=1).astype(np.float32)

    @classmethod
    def fit(cls, sample: np.ndarray, dims: int, cap: int) -> _Screen:
        """Basis: the top right-singular vectors of a sample of rows (uncentred: similarities, not covariances)."""
        s64 = sample.astype(np.float64)
        _, vecs = np.linalg.eigh(s64.T @ s64)  # eigenvectors of the (d x d) Gram: cheaper than an SVD
        return cls(np.ascontiguousarray(vecs[:, ::-1][:, :dims].T, dtype=np.float32), cap)

    def best(self, xb: np.ndarray, xaug: np.ndarray, adm_vecs: np.ndarray, n_adm: int, threshold: float
             ) -> tuple[np.ndarray, np.ndarray, int]:
        """Max similarity (float32) and its admission rank over admitted rows whose bound exceeds
        ``threshold``; -inf where none does."""
        b = len(xb)
        best = np.full(b, -np.inf, np.float32)
        best_rank = np.full(b, -1, np.int64)
        computed = 0
        adm_aug = self.aug[:n_adm]
        for s in range(0, b, 1024):
            ub = xaug[s:s + 1024] @ adm_aug.T
            computed += ub.size * (xaug.shape[1]) // xb.shape[1]  # in units of full-dimension products
            hot_rows = np.flatnonzero(ub.max(axis=1) > threshold)
            if hot_rows.size == 0:
                continue
            hr, aj = np.nonzero(ub[hot_rows] > threshold)
            bi = hot_rows[hr]
            if bi.size > 0.05 * ub.size:  # bound too loose here: the full product is cheaper
                sims = xb[s:s + 1024] @ adm_vecs[:n_adm].T
                computed += sims.size
                arg = np.argmax(sims, axis=1)
                rows = np.arange(len(arg))
                best[s + rows], best_rank[s + rows] = sims[rows, arg], arg
                continue
            sims = np.einsum("ij,ij->i", xb[s + bi], adm_vecs[aj])
            computed += sims.size
            first = np.lexsort((-sims, bi))
            keep = first[np.unique(bi[first], return_index=True)[1]]
            best[s + bi[keep]] = sims[keep]
            best_rank[s + bi[keep]] = aj[keep]
        return best, best_rank, computed


class ScreenProducts(Float32Products):
    """The admission loop's products through the low-rank screen."""

    def __init__(self, adm: np.ndarray, tau: float, screen: _Screen):
        super().__init__(adm, tau)
        self.screen = screen
        self.dim = adm.shape[1]
        self.xaug: np.ndarray | None = None

    def start_block(self, xb: np.ndarray) -> None:
        self.xaug = self.screen.augment(xb)

    def best(self, xb: np.ndarray, n_adm: int) -> tuple[np.ndarray, np.ndarray, int]:
        return self.screen.best(xb, self.xaug, self.adm, n_adm, self.tau - FLOAT32_MARGIN)

    def conflicts(self, surv: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Bound first, exact products only for pairs the bound cannot clear."""
        aug_s = self.xaug[surv]
        bi, bj = np.nonzero(np.tril(aug_s @ aug_s.T, -1) > self.tau - FLOAT32_MARGIN)
        sims = np.einsum("ij,ij->i", xs[bi], xs[bj])
        hot = sims > self.tau - FLOAT32_MARGIN
        conflict_rows = np.unique(bi[hot])
        g_rows = np.full((conflict_rows.size, surv.size), -np.inf, np.float32)
        g_rows[np.searchsorted(conflict_rows, bi[hot]), bj[hot]] = sims[hot]
        return conflict_rows, g_rows, sims.size + surv.size ** 2 * aug_s.shape[1] // (2 * self.dim)

    def added(self, ranks: np.ndarray, new: np.ndarray, xb: np.ndarray) -> None:
        self.screen.aug[ranks] = self.xaug[new]


def screen_products(screen_dims: int = 64, seed: int = 0, auto: bool = False):
    """A ``products`` factory for ``admit``: the low-rank screen. With ``auto`` the screen is used only
    when a sample shows its bound leaves < 1% of pairs (else plain float32 products)."""

    def make(x: np.ndarray, order: np.ndarray, cap: int, tau: float, adm: np.ndarray, stats: dict[str, Any]):
        if cap <= 1:
            stats["pruning"] = "off"
            return Float32Products(adm, tau)
        t1 = time.perf_counter()
        head = order[: min(len(order), 4 * cap)]
        sample = np.sort(np.random.default_rng(seed).choice(head, size=min(len(head), 4096), replace=False))
        screen = _Screen.fit(unit_rows(x[sample]), min(screen_dims, x.shape[1] - 1), cap)
        ub_tau = 0.0  # share of sample pairs whose bound cannot rule out tau
        if len(sample) > 1:
            aug = screen.augment(unit_rows(x[sample]))
            half = len(aug) // 2
            ub_tau = float((aug[:half] @ aug[half:].T > tau - FLOAT32_MARGIN).mean())
        stats.update(screen_dims=int(screen.basis.shape[0]), screen_pairs_left=round(ub_tau, 5),
                     screen_seconds=round(time.perf_counter() - t1, 3))
        if auto and ub_tau > 0.01:
            stats["pruning"] = f"off: the low-rank bound leaves {ub_tau:.1%} of sample pairs"
            return Float32Products(adm, tau)
        stats["pruning"] = "low-rank screen"
        return ScreenProducts(adm, tau, screen)

    return make


class GroupProducts(Float32Products):
    """The admission loop's products against the admitted set through angular groups."""

    def __init__(self, adm: np.ndarray, tau: float, groups: _Groups):
        super().__init__(adm, tau)
        self.groups = groups
        self.max_angle = math.acos(max(-1.0, min(1.0, tau)))
        self.cent_sims: np.ndarray | None = None

    def start_block(self, xb: np.ndarray) -> None:
        self.cent_sims = xb @ self.groups.centroids.T

    def best(self, xb: np.ndarray, n_adm: int) -> tuple[np.ndarray, np.ndarray, int]:
        best, best_rank, computed = self.groups.best(xb, self.cent_sims, self.max_angle)
        return best, best_rank, computed + self.cent_sims.size

    def added(self, ranks: np.ndarray, new: np.ndarray, xb: np.ndarray) -> None:
        if new.size:
            self.groups.add(xb[new], ranks, self.cent_sims[new])


def group_products(n_clusters: int | str = "auto", seed: int = 0):
    """A ``products`` factory for ``admit``: angular group pruning over ``n_clusters`` centroids ("auto":
    about 16 admitted rows per group at the end)."""

    def make(x: np.ndarray, order: np.ndarray, cap: int, tau: float, adm: np.ndarray, stats: dict[str, Any]):
        k_groups = 0
        if cap > 1:
            k_groups = int(min(2048, max(16, cap // 16))) if n_clusters == "auto" else int(n_clusters)
        if k_groups <= 1:
            stats["pruning"] = "off"
            return Float32Products(adm, tau)
        t1 = time.perf_counter()
        head = order[: min(len(order), 4 * cap)]
        sample = np.sort(np.random.default_rng(seed).choice(head, size=min(len(head), 10 * k_groups), replace=False))
        groups = _Groups(two_level_centroids(unit_rows(x[sample]), k_groups, seed=seed), x.shape[1])
        stats.update(pruning="on", n_clusters=len(groups.centroids), centroid_seconds=round(time.perf_counter() - t1, 3))
        return GroupProducts(adm, tau, groups)

    return make


def prune_products(prune: str, **kwargs: Any):
    """The factory for ``--prune``: "screen", "auto" (the screen when its bound is tight), "groups"; None for "false"."""
    if prune in ("false", "False", "", None):
        return None
    if prune in ("screen", "auto"):
        return screen_products(auto=prune == "auto", **kwargs)
    if prune in ("groups", "true", "True"):
        return group_products(**kwargs)
    raise ValueError(f"prune must be false, auto, screen or groups, not {prune!r}")
