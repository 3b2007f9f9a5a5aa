"""The DEITA admission loop (repr filter), exact and fast.

Semantics (the sequential loop DEITA describes): walk the rows by score, descending (ties: row id,
ascending); admit a row iff its cosine similarity to every row admitted so far is <= ``tau``
(``max_cosine_similarity``); stop once ``budget`` rows are admitted. Similarities are decided in float64
on float32 unit vectors: rows that are unit to float32 precision are used as given, every other row
(user embeddings with norms off by 1e-3, say) is first divided by its norm (:func:`unit_rows`), so the
decisions follow true cosines, not dot products scaled by the norms.

How it is fast and still exact:

* **Blocks.** Candidates are taken ``block_size`` at a time: one matrix product against the admitted set,
  then a sequential pass inside the block against block-mates admitted earlier (only rows that have a
  block-mate above ``tau`` need it). Decisions never depend on the block size.
* **Exact pruning (opt-in).** Two bounds can skip products without changing a decision:
  ``prune="screen"``: an upper bound from a low-rank projection plus residual norms (Cauchy-Schwarz);
  on embeddings with a real-like spectrum it leaves ~18% of the products, but on 2 CPU cores it did not
  make the loop faster (the bound pass costs as much as it saves), so it is off by default.
  ``prune="groups"``: admitted rows filed under K-means centroids; by the triangle inequality on angles a
  group whose centroid angle minus radius exceeds ``arccos(tau)`` is skipped. In 384 dimensions the radii are
  too large for this to skip much (measured: 25-60% of products, slower in wall time).
* **bfloat16 screen (default where it pays).** On CPUs with AVX512-BF16/AMX, torch multiplies bf16 about
  6x faster than float32 (measured here: 530 vs 87 GFLOP/s). The products against the admitted set run
  in bf16; a row whose bf16 maximum is more than ``BF16_MARGIN`` (0.02, above the proven 0.012 error
  bound) from ``tau`` is decided by it, and every other row is recomputed in float32 (and float64 near tau).
* **Float safety.** Products run in float32; any decision whose float32 similarity lies within
  ``1e-4`` of ``tau`` is recomputed in float64.

With ``device="cuda"`` the products run with torch on the GPU (full products, no pruning); the
decisions are the same.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NOT_REACHED, ADMITTED, REJECTED, UNSCORED = 0, 1, 2, 3
DECISION_NAMES = {NOT_REACHED: "not_reached", ADMITTED: "kept", REJECTED: "rejected", UNSCORED: "unscored"}

FLOAT32_MARGIN = 1e-4  # float32 dot products of 384-d unit vectors are off by far less than this
ANGLE_MARGIN = 5e-3  # radians; covers arccos of float32 similarities near 1
# bfloat16 screen: unit inputs rounded to bf16 (unit roundoff u = 2^-8) move a dot product by at most
# 2u + u^2 ~ 0.0078 (Cauchy-Schwarz); float32 accumulation adds < 1e-4 and rounding the output to bf16 at most
# u * |s| ~ 0.0039. So |bf16 - exact| < 0.012; the margin below leaves room on top. Measured: <= 0.0027.
BF16_MARGIN = 0.02
# rounding a unit row to float32 moves its norm by at most 2^-24 ~ 6e-8 (each component by a relative 2^-24):
# rows closer to norm 1 than this are unit to float32 precision and used bit for bit; others are renormalised
UNIT_NORM_TOLERANCE = 1e-7


@dataclass
class AdmissionResult:
    """Per-row outcome of the admission loop, indexed by row position (as given)."""

    decision: np.ndarray  # int8 codes: NOT_REACHED, ADMITTED, REJECTED, UNSCORED
    witness: np.ndarray  # row position of the admitted row that caused a rejection, else -1
    witness_similarity: np.ndarray  # float64 similarity to the witness, NaN otherwise
    order: np.ndarray  # row positions in examination order (scored rows only)
    admitted: np.ndarray  # row positions admitted, in admission order
    stats: dict[str, Any] = field(default_factory=dict)

    def reasons(self, ids: list[Any] | None = None, tau: float | None = None) -> list[str]:
        """One human-readable reason per row."""
        ids = list(range(len(self.decision))) if ids is None else list(ids)
        rank = np.empty(len(self.decision), dtype=np.int64)
        rank[self.admitted] = np.arange(len(self.admitted))
        tau_text = "" if tau is None else f" <= {tau:g}"
        out = []
        for pos, code in enumerate(self.decision.tolist()):
            if code == ADMITTED:
                out.append(f"admitted #{rank[pos] + 1}: max similarity to earlier admitted rows{tau_text}")
            elif code == REJECTED:
                out.append(f"too close to row {ids[self.witness[pos]]} at similarity {self.witness_similarity[pos]:.4f}")
            elif code == UNSCORED:
                out.append("no score")
            else:
                out.append("not reached: budget filled")
        return out


def examination_order(scores: np.ndarray, ids: Any) -> np.ndarray:
    """Row positions by score descending, ties by id ascending; rows with a NaN score are left out."""
    scores = np.asarray(scores, dtype=np.float64)
    keys = np.asarray(ids)
    by_id = np.argsort(keys, kind="stable")
    order = by_id[np.argsort(-scores[by_id], kind="stable")]
    return order[~np.isnan(scores[order])]


def check_unit_rows(x: np.ndarray, chunk: int = 65536) -> None:
    """Raise unless every row has norm 1 (within 1e-3): pruning and the similarity rule assume unit rows."""
    for start in range(0, len(x), chunk):
        part = np.asarray(x[start:start + chunk], dtype=np.float32)
        dev = np.abs(np.einsum("ij,ij->i", part, part) - 1)
        if dev.size and dev.max() > 2e-3:
            bad = start + int(np.argmax(dev))
            raise ValueError(f"embeddings must be unit-normalised rows; row {bad} has norm "
                             f"{float(np.linalg.norm(np.asarray(x[bad], np.float64))):.4f}")


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 rows of norm 1: rows off unit norm by more than ``UNIT_NORM_TOLERANCE`` are divided
    by their float64 norm, the rest are kept bit for bit (so this is idempotent); all-zero rows stay zero."""
    out = np.array(x, dtype=np.float32)  # a copy: the caller's array (or memory map) is never changed
    norms = np.linalg.norm(out.astype(np.float64), axis=1)
    off = np.flatnonzero((np.abs(norms - 1) > UNIT_NORM_TOLERANCE) & (norms > 0))
    if off.size:
        out[off] = (out[off].astype(np.float64) / norms[off, None]).astype(np.float32)
    return out


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


def _bf16_best(xb: np.ndarray, adm16, adm_vecs: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Max similarity and its admission rank, screened in bfloat16.

    Rows whose bf16 maximum is below ``tau - BF16_MARGIN`` are clear; rows above ``tau + BF16_MARGIN`` are
    rejected with the bf16 argmax as witness (its exact similarity is > tau); the rows in between are
    recomputed in float32 against the whole admitted set (and the caller rechecks near tau in float64).
    The returned maxima are exact for those rows; for the others they only need to be on the right side.
    """
    import torch

    b = len(xb)
    best = np.empty(b, np.float32)
    best_rank = np.empty(b, np.int64)
    computed = 0
    x16 = torch.from_numpy(xb).to(torch.bfloat16)
    for c0 in range(0, b, 1024):
        m, a = (x16[c0:c0 + 1024] @ adm16.T).max(dim=1)
        best[c0:c0 + 1024] = m.float().numpy()
        best_rank[c0:c0 + 1024] = a.numpy()
        computed += min(1024, b - c0) * adm16.shape[0]
    band = np.flatnonzero(np.abs(best - tau) <= BF16_MARGIN)
    if band.size:
        sims = xb[band] @ adm_vecs.T
        arg = np.argmax(sims, axis=1)
        best[band], best_rank[band] = sims[np.arange(band.size), arg], arg
        computed += sims.size
    clear = best < tau - BF16_MARGIN
    best[clear] = np.minimum(best[clear], tau - 2 * FLOAT32_MARGIN)  # below every float32 threshold used later
    return best, best_rank, computed


_BF16_FASTER: bool | None = None


def bf16_is_faster() -> bool:
    """Whether torch multiplies bfloat16 clearly faster than float32 on this CPU (probed once, ~0.1 s)."""
    global _BF16_FASTER
    if _BF16_FASTER is None:
        try:
            import torch
        except ImportError:
            _BF16_FASTER = False
            return False
        a, c = torch.randn(512, 384), torch.randn(8192, 384)
        timings = {}
        for dtype in (torch.float32, torch.bfloat16):
            x, y = a.to(dtype), c.to(dtype)
            x @ y.T  # warm-up
            t = time.perf_counter()
            for _ in range(3):
                x @ y.T
            timings[dtype] = time.perf_counter() - t
        _BF16_FASTER = timings[torch.bfloat16] * 1.5 < timings[torch.float32]
    return _BF16_FASTER


def _resolve_block(conflict_rows: np.ndarray, g_rows: np.ndarray, xs: np.ndarray, tau: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sequential resolution inside a block of survivors (rows already clear of the admitted set).

    ``conflict_rows`` are the survivors with an earlier block-mate above ``tau - margin``; ``g_rows`` their
    rows of the survivors' Gram matrix. Returns (admitted mask, witness index into survivors, witness sim).
    """
    s = len(xs)
    admitted = np.ones(s, bool)
    witness = np.full(s, -1, np.int64)
    wsim = np.full(s, np.nan)
    lo = tau - FLOAT32_MARGIN
    for r, i in enumerate(conflict_rows.tolist()):
        row = g_rows[r, :i]
        js = np.flatnonzero((row > lo) & admitted[:i])
        if js.size == 0:
            continue
        sims = row[js].astype(np.float64)
        near = np.abs(sims - tau) <= FLOAT32_MARGIN
        if near.any():
            sims[near] = xs[js[near]].astype(np.float64) @ xs[i].astype(np.float64)
        if (sims > tau).any():
            admitted[i] = False
            k = int(np.argmax(sims))
            witness[i] = js[k]
            wsim[i] = float(xs[js[k]].astype(np.float64) @ xs[i].astype(np.float64))
    return admitted, witness, wsim


def admit(embeddings: np.ndarray, scores: np.ndarray, ids: Any = None, max_cosine_similarity: float = 0.9,
          budget: int | None = None, *, block_size: int = 4096, n_clusters: int | str = "auto",
          prune: bool | str = False, screen_dims: int = 64, device: str = "cpu", seed: int = 0,
          progress: bool = False, precision: str = "auto") -> AdmissionResult:
    """Run the exact DEITA admission loop.

    ``embeddings``: (n, d) unit-normalised rows (norm 1 within 1e-3; each block is renormalised with
    :func:`unit_rows` before use, so decisions follow true cosines). ``scores``: n floats (NaN = unscored, left out).
    ``ids``: sort keys for ties (default: row positions). ``prune``: False (plain blocked products, the
    default: measured fastest on 2 CPU cores, see evals/bench_admission.py), "auto" (the low-rank screen
    when a sample shows its bound leaves < 1% of pairs), "screen" (always), "groups"/True (angular group
    pruning). Every mode gives the same decisions; pruning only changes how many products are computed.
    ``device``: "cpu" (numpy), or a torch device such as "cuda". ``precision`` (CPU, unpruned): "float32",
    or "bf16": products against the admitted set in bfloat16 as a screen, with every row the screen cannot
    decide (within ``BF16_MARGIN`` of tau) recomputed in float32/float64; "auto" picks bf16 when this CPU
    multiplies bf16 measurably faster (AVX512-BF16/AMX). Returns an :class:`AdmissionResult` equal to the
    one-row-at-a-time loop for any ``block_size``, ``prune``, ``n_clusters``, ``device`` or ``precision``.
    """
    x = embeddings
    n, dim = x.shape
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) != n:
        raise ValueError(f"{len(scores)} scores for {n} embeddings")
    tau = float(max_cosine_similarity)
    check_unit_rows(x)
    ids = np.arange(n) if ids is None else ids
    order = examination_order(scores, ids)
    total = len(order)
    budget = total if budget is None else int(budget)
    if budget < 0:
        raise ValueError("budget must be >= 0")
    cap = min(budget, total)
    max_angle = math.acos(max(-1.0, min(1.0, tau)))

    decision = np.zeros(n, np.int8)
    decision[np.isnan(scores)] = UNSCORED
    witness = np.full(n, -1, np.int64)
    wsim = np.full(n, np.nan)
    adm_vecs = np.empty((cap, dim), np.float32)
    adm_pos = np.empty(cap, np.int64)
    n_adm = 0
    t0 = time.perf_counter()
    stats: dict[str, Any] = {"examined": 0, "similarities_computed": 0, "exact_rechecks": 0,
                             "block_size": block_size, "device": device}

    use_torch = device != "cpu"
    if use_torch:
        import torch

        tdev = torch.device(device.removeprefix("torch:"))  # "torch:cpu" runs the torch path on the CPU
        t_adm = torch.empty((cap, dim), dtype=torch.float32, device=tdev)
    if precision not in ("auto", "float32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'float32' or 'bf16', not {precision!r}")
    use_bf16 = not use_torch and prune in (False, None) and cap > 1 and (
        precision == "bf16" or (precision == "auto" and cap >= 2048 and bf16_is_faster()))
    stats["precision"] = "bf16 screen + float32/64 recheck" if use_bf16 else "float32"
    if use_bf16:
        import torch

        adm16 = torch.empty((cap, dim), dtype=torch.bfloat16)
    groups = None
    k_groups = 0
    if not use_torch and prune in (True, "groups") and cap > 1:
        k_groups = _auto_clusters(cap) if n_clusters == "auto" else int(n_clusters)
    stats["pruning"] = "off" if k_groups <= 1 else "pending"
    screen = None
    if not use_torch and prune in ("auto", "screen") and cap > 1 and (prune == "screen" or cap >= 4 * block_size):
        t1 = time.perf_counter()
        head = order[: min(total, 4 * cap)]
        sample = np.sort(np.random.default_rng(seed).choice(head, size=min(len(head), 4096), replace=False))
        screen = _Screen.fit(unit_rows(x[sample]), min(screen_dims, dim - 1), cap)
        ub_tau = 0.0  # share of sample pairs whose bound cannot rule out tau
        if len(sample) > 1:
            aug = screen.augment(unit_rows(x[sample]))
            half = len(aug) // 2
            ub_tau = float((aug[:half] @ aug[half:].T > tau - FLOAT32_MARGIN).mean())
        stats.update(screen_dims=int(screen.basis.shape[0]), screen_pairs_left=round(ub_tau, 5),
                     screen_seconds=round(time.perf_counter() - t1, 3))
        if prune == "auto" and ub_tau > 0.01:
            screen = None
            stats["pruning"] = f"off: the low-rank bound leaves {ub_tau:.1%} of sample pairs"
        else:
            stats["pruning"] = "low-rank screen"

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cap, desc="admission", unit="row")
    start = 0
    while start < total and n_adm < cap:
        cb = order[start:start + block_size]
        start += len(cb)
        xb = unit_rows(x[cb])
        b = len(cb)
        stats["examined"] += b
        # 1. against rows admitted before this block
        best = np.full(b, -np.inf, np.float32)
        best_rank = np.full(b, -1, np.int64)
        if groups is None and stats["pruning"] == "pending":
            t1 = time.perf_counter()
            head = order[: min(total, 4 * cap)]
            sample = np.sort(np.random.default_rng(seed).choice(head, size=min(len(head), 10 * k_groups), replace=False))
            groups = _Groups(two_level_centroids(unit_rows(x[sample]), k_groups, seed=seed), dim)
            if n_adm:
                groups.add(adm_vecs[:n_adm], np.arange(n_adm), adm_vecs[:n_adm] @ groups.centroids.T)
            stats.update(pruning="on", n_clusters=len(groups.centroids),
                         centroid_seconds=round(time.perf_counter() - t1, 3))
        cent_sims = xb @ groups.centroids.T if groups is not None else None
        xaug = screen.augment(xb) if screen is not None else None
        if n_adm:
            if use_torch:
                tb = torch.from_numpy(xb).to(tdev)
                sims = tb @ t_adm[:n_adm].T
                m, a = sims.max(dim=1)
                best, best_rank = m.cpu().numpy(), a.cpu().numpy().astype(np.int64)
                stats["similarities_computed"] += b * n_adm
            elif screen is not None:
                best, best_rank, computed = screen.best(xb, xaug, adm_vecs, n_adm, tau - FLOAT32_MARGIN)
                stats["similarities_computed"] += computed
            elif groups is not None:
                best, best_rank, computed = groups.best(xb, cent_sims, max_angle)
                stats["similarities_computed"] += computed + cent_sims.size
            elif use_bf16:
                best, best_rank, computed = _bf16_best(xb, adm16[:n_adm], adm_vecs[:n_adm], tau)
                stats["similarities_computed"] += computed
            else:  # in chunks of 1024 candidates: bounds the product's memory (1024 x budget floats)
                for c0 in range(0, b, 1024):
                    sims = xb[c0:c0 + 1024] @ adm_vecs[:n_adm].T
                    arg = np.argmax(sims, axis=1)
                    best_rank[c0:c0 + 1024] = arg
                    best[c0:c0 + 1024] = sims[np.arange(len(arg)), arg]
                    stats["similarities_computed"] += sims.size
        rejected = best > tau + FLOAT32_MARGIN
        near = np.flatnonzero(~rejected & (best > tau - FLOAT32_MARGIN))
        for i in near.tolist():  # rare: decide in float64 against every admitted row
            stats["exact_rechecks"] += 1
            exact = adm_vecs[:n_adm].astype(np.float64) @ xb[i].astype(np.float64)
            k = int(np.argmax(exact))
            best[i], best_rank[i] = exact[k], k
            rejected[i] = exact[k] > tau
        blk_dec = np.where(rejected, REJECTED, ADMITTED).astype(np.int8)
        blk_wit = np.where(rejected, best_rank, -1)
        blk_sim = np.full(b, np.nan)
        rej_idx = np.flatnonzero(rejected)
        if rej_idx.size:
            blk_sim[rej_idx] = np.einsum("ij,ij->i", xb[rej_idx].astype(np.float64),
                                         adm_vecs[best_rank[rej_idx]].astype(np.float64))
        # 2. inside the block, against block-mates admitted earlier
        surv = np.flatnonzero(~rejected)
        if surv.size > 1:
            xs = xb[surv]
            if use_torch:
                ts = torch.from_numpy(xs).to(tdev)
                g = torch.tril(ts @ ts.T, diagonal=-1)
                crow = torch.nonzero((g > tau - FLOAT32_MARGIN).any(dim=1)).flatten()
                conflict_rows = crow.cpu().numpy()
                g_rows = g[crow].cpu().numpy()
            elif screen is not None:  # bound first, exact products only for pairs the bound cannot clear
                aug_s = xaug[surv]
                bi, bj = np.nonzero(np.tril(aug_s @ aug_s.T, -1) > tau - FLOAT32_MARGIN)
                sims = np.einsum("ij,ij->i", xs[bi], xs[bj])
                hot = sims > tau - FLOAT32_MARGIN
                conflict_rows = np.unique(bi[hot])
                g_rows = np.full((conflict_rows.size, surv.size), -np.inf, np.float32)
                g_rows[np.searchsorted(conflict_rows, bi[hot]), bj[hot]] = sims[hot]
                stats["similarities_computed"] += sims.size + surv.size ** 2 * aug_s.shape[1] // (2 * dim)
            else:
                g = np.tril(xs @ xs.T, -1)
                conflict_rows = np.flatnonzero((g > tau - FLOAT32_MARGIN).any(axis=1))
                g_rows = g[conflict_rows]
            if screen is None:
                stats["similarities_computed"] += surv.size * (surv.size - 1) // 2
            adm_s, wit_s, wsim_s = _resolve_block(conflict_rows, g_rows, xs, tau)
            lost = np.flatnonzero(~adm_s)
            blk_dec[surv[lost]] = REJECTED
            blk_sim[surv[lost]] = wsim_s[lost]
            blk_wit[surv[lost]] = -2 - surv[wit_s[lost]]  # block-local witness, resolved below
        # 3. budget: everything after the cap-th admission is not reached
        new_adm = np.flatnonzero(blk_dec == ADMITTED)
        if new_adm.size and n_adm + new_adm.size >= cap:
            cut = new_adm[cap - n_adm - 1] + 1
            blk_dec[cut:] = NOT_REACHED
            blk_wit[cut:] = -1
            blk_sim[cut:] = np.nan
            new_adm = new_adm[: cap - n_adm]
        ranks = n_adm + np.arange(new_adm.size)
        local_rank = np.full(b, -1, np.int64)
        local_rank[new_adm] = ranks
        adm_vecs[ranks] = xb[new_adm]
        if screen is not None:
            screen.aug[ranks] = xaug[new_adm]
        adm_pos[ranks] = cb[new_adm]
        if use_torch and new_adm.size:
            t_adm[n_adm:n_adm + new_adm.size] = torch.from_numpy(xb[new_adm]).to(tdev)
        if use_bf16 and new_adm.size:
            adm16[ranks] = torch.from_numpy(xb[new_adm]).to(torch.bfloat16)
        if groups is not None and new_adm.size and cent_sims is not None:
            groups.add(xb[new_adm], ranks, cent_sims[new_adm])
        n_adm += new_adm.size
        # witnesses as row positions
        from_before = blk_wit >= 0
        blk_wit_pos = np.full(b, -1, np.int64)
        blk_wit_pos[from_before] = adm_pos[blk_wit[from_before]]
        from_block = blk_wit <= -2
        blk_wit_pos[from_block] = cb[-2 - blk_wit[from_block]]
        decision[cb] = blk_dec
        witness[cb] = blk_wit_pos
        wsim[cb] = blk_sim
        if bar is not None:
            bar.update(new_adm.size)
    if bar is not None:
        bar.close()
    stats["admitted"] = n_adm
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return AdmissionResult(decision, witness, wsim, order, adm_pos[:n_adm].copy(), stats)


def _auto_clusters(cap: int) -> int:
    # about 16 admitted rows per group at the end: small radii; the centroid product costs ~1/16 of brute force
    return int(min(2048, max(16, cap // 16)))
