"""How the admission loop computes similarities: numpy float32, a bfloat16 screen, or torch.

The loop (:mod:`curate.select.admission`) owns the decisions; a *products* object only answers two
questions per block of candidates, and is told which candidates were admitted:

* ``best(xb, n_adm)``: each candidate's largest similarity to the ``n_adm`` rows admitted before the
  block, and the admission rank of that row (exact where it can decide a row; see each class);
* ``conflicts(surv, xs)``: the survivors that have an earlier block-mate above ``tau - FLOAT32_MARGIN``,
  with their rows of the survivors' lower-triangular Gram matrix;
* ``added(ranks, new, xb)``: block rows ``new`` were admitted with admission ``ranks``.

Any implementation gives the same decisions (the loop rechecks near ``tau`` in float64); they differ in
speed only. Small numpy products run on one BLAS thread (:func:`blas_threads`): OpenBLAS's threads cost
more than they save there, and on a loaded machine (other processes on the cores) they made a
128 x 384 by 384 x 2,000 product 6-10x slower (14-24 ms vs 2.2 ms, measured on the 2-core dev machine). ``evals/admission_prune.py`` holds two exact pruning variants that did not pay.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np

from curate.defaults import ANN
from curate.hardware import import_torch

FLOAT32_MARGIN = 1e-4  # float32 dot products of 384-d unit vectors are off by far less than this
# bfloat16 screen: unit inputs rounded to bf16 (unit roundoff u = 2^-8) move a dot product by at most
# 2u + u^2 ~ 0.0078 (Cauchy-Schwarz); float32 accumulation adds < 1e-4 and rounding the output to bf16 at most
# u * |s| ~ 0.0039. So |bf16 - exact| < 0.012; the margin below leaves room on top. Measured: <= 0.0027.
BF16_MARGIN = 0.02
CHUNK = 1024  # candidates per product: bounds its memory (CHUNK x budget floats)
# the bf16 screen runs once this many rows are admitted (below, its conversions and float32 rechecks
# cost more than it saves: measured on real 30K rows, budget 6,000: 0.42-0.68 s with it, 0.41-0.48 s without)
BF16_MIN_ADMITTED = 4096
SINGLE_THREAD_WORK = 1 << 27  # multiply-adds: numpy products smaller than this run on one BLAS thread
TRIANGLE_ROWS = 256  # a block's Gram matrix is computed this many rows at a time, lower triangle only

_CONTROLLER: Any = None


def blas_threads(work: int) -> contextlib.AbstractContextManager:
    """A context running numpy's BLAS on one thread when a product of ``work`` multiply-adds is small
    (below ``SINGLE_THREAD_WORK``, ~1.5 ms on one core); a no-op for larger products."""
    global _CONTROLLER
    if work >= SINGLE_THREAD_WORK:
        return contextlib.nullcontext()
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


class Float32Products:
    """Plain blocked products in numpy float32 against the loop's admitted buffer ``adm`` (cap x dim)."""

    precision = "float32"

    def __init__(self, adm: np.ndarray, tau: float):
        self.adm = adm
        self.tau = tau

    def start_block(self, xb: np.ndarray) -> None:
        """Called with each block's unit rows before ``best``/``conflicts``."""

    def best(self, xb: np.ndarray, n_adm: int) -> tuple[np.ndarray, np.ndarray, int]:
        b = len(xb)
        best = np.full(b, -np.inf, np.float32)
        best_rank = np.full(b, -1, np.int64)
        computed = 0
        for c0 in range(0, b, CHUNK):
            with blas_threads(min(CHUNK, b - c0) * n_adm * xb.shape[1]):
                sims = xb[c0:c0 + CHUNK] @ self.adm[:n_adm].T
            arg = np.argmax(sims, axis=1)
            best_rank[c0:c0 + CHUNK] = arg
            best[c0:c0 + CHUNK] = sims[np.arange(len(arg)), arg]
            computed += sims.size
        return best, best_rank, computed

    def conflicts(self, surv: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Only the lower triangle of the Gram matrix is computed, ``TRIANGLE_ROWS`` rows at a time (half the
        products of the full square); returned rows are zero from their diagonal on."""
        s, lo = len(xs), self.tau - FLOAT32_MARGIN
        rows, parts, computed = [], [], 0
        for r0 in range(0, s, TRIANGLE_ROWS):
            r1 = min(s, r0 + TRIANGLE_ROWS)
            with blas_threads((r1 - r0) * r1 * xs.shape[1]):
                g = xs[r0:r1] @ xs[:r1].T
            g[:, r0:r1] = np.tril(g[:, r0:r1], -1)
            computed += g.size
            hit = np.flatnonzero((g > lo).any(axis=1))
            if hit.size:
                part = np.zeros((hit.size, s), np.float32)
                part[:, :r1] = g[hit]
                rows.append(hit + r0)
                parts.append(part)
        if not rows:
            return np.empty(0, np.int64), np.empty((0, s), np.float32), computed
        return np.concatenate(rows), np.concatenate(parts), computed

    def added(self, ranks: np.ndarray, new: np.ndarray, xb: np.ndarray) -> None:
        """The loop already wrote ``adm[ranks] = xb[new]``."""


class Bf16Products(Float32Products):
    """Products against the admitted set in bfloat16 as a screen (about 6x faster than float32 on CPUs
    with AVX512-BF16/AMX); rows the screen cannot decide are recomputed in float32."""

    precision = "bf16 screen + float32/64 recheck"

    def __init__(self, adm: np.ndarray, tau: float, min_admitted: int = 0):
        torch = import_torch()
        super().__init__(adm, tau)
        self.torch = torch
        self.min_admitted = min_admitted  # below this many admitted rows, plain float32 products
        self.adm16 = torch.empty(adm.shape, dtype=torch.bfloat16)
        self.n16 = 0  # admitted rows copied to adm16 so far (copied in bulk when a product needs them)

    def best(self, xb: np.ndarray, n_adm: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Rows whose bf16 maximum is below ``tau - BF16_MARGIN`` are clear; rows above ``tau + BF16_MARGIN``
        are rejected with the bf16 argmax as witness (its exact similarity is > tau); the rows in between are
        recomputed in float32 against the whole admitted set (and the loop rechecks near tau in float64).
        The maxima are exact for those rows; for the others they only need to be on the right side."""
        if n_adm < self.min_admitted:  # a small admitted set: float32 is as fast (the screen's overhead)
            return super().best(xb, n_adm)
        if self.n16 < n_adm:
            self.adm16[self.n16:n_adm] = self.torch.from_numpy(self.adm[self.n16:n_adm]).to(self.torch.bfloat16)
            self.n16 = n_adm
        tau = self.tau
        adm16, adm_vecs = self.adm16[:n_adm], self.adm[:n_adm]
        b = len(xb)
        best = np.empty(b, np.float32)
        best_rank = np.empty(b, np.int64)
        computed = 0
        x16 = self.torch.from_numpy(xb).to(self.torch.bfloat16)
        for c0 in range(0, b, CHUNK):
            m, a = (x16[c0:c0 + CHUNK] @ adm16.T).max(dim=1)
            best[c0:c0 + CHUNK] = m.float().numpy()
            best_rank[c0:c0 + CHUNK] = a.numpy()
            computed += min(CHUNK, b - c0) * adm16.shape[0]
        band = np.flatnonzero(np.abs(best - tau) <= BF16_MARGIN)
        if band.size:
            with blas_threads(band.size * n_adm * xb.shape[1]):
                sims = xb[band] @ adm_vecs.T
            arg = np.argmax(sims, axis=1)
            best[band], best_rank[band] = sims[np.arange(band.size), arg], arg
            computed += sims.size
        clear = best < tau - BF16_MARGIN
        best[clear] = np.minimum(best[clear], tau - 2 * FLOAT32_MARGIN)  # below every float32 threshold used later
        return best, best_rank, computed


class TorchProducts(Float32Products):
    """Full products with torch on ``device`` (e.g. a GPU; ``"torch:cpu"`` runs this path on the CPU)."""

    def __init__(self, adm: np.ndarray, tau: float, device: str):
        torch = import_torch()
        super().__init__(adm, tau)
        self.torch = torch
        self.dev = torch.device(device.removeprefix("torch:"))
        self.t_adm = torch.empty(adm.shape, dtype=torch.float32, device=self.dev)

    def best(self, xb: np.ndarray, n_adm: int) -> tuple[np.ndarray, np.ndarray, int]:
        sims = self.torch.from_numpy(xb).to(self.dev) @ self.t_adm[:n_adm].T
        m, a = sims.max(dim=1)
        return m.cpu().numpy(), a.cpu().numpy().astype(np.int64), len(xb) * n_adm

    def conflicts(self, surv: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        torch = self.torch
        ts = torch.from_numpy(xs).to(self.dev)
        g = torch.tril(ts @ ts.T, diagonal=-1)
        crow = torch.nonzero((g > self.tau - FLOAT32_MARGIN).any(dim=1)).flatten()
        return crow.cpu().numpy(), g[crow].cpu().numpy(), len(xs) * (len(xs) - 1) // 2

    def added(self, ranks: np.ndarray, new: np.ndarray, xb: np.ndarray) -> None:
        if new.size:
            self.t_adm[int(ranks[0]):int(ranks[0]) + new.size] = self.torch.from_numpy(xb[new]).to(self.dev)


class HnswProducts(Float32Products):
    """Approximate products for semantic dedup at scale: the admitted rows live in an hnswlib index (cosine);
    ``best`` asks it for each candidate's nearest admitted row (beam ``ef``) instead of multiplying against
    every admitted row. Exactness is kept where the index answers: the returned similarity is the true one
    (a row above ``tau + FLOAT32_MARGIN`` is rejected with a real witness; one near ``tau`` is rechecked in
    float64 against every admitted row by the loop) and rows inside a block are compared exactly. The one
    error is a kept row whose nearest admitted neighbour the index did not find (recall < 1). Admitted rows
    are added in blocks with ``threads`` build threads (1: the same graph, and result, every run)."""

    precision = "hnswlib ANN (exact within blocks)"

    def __init__(self, adm: np.ndarray, tau: float, cap: int, ef: int = ANN.ef, m: int = ANN.m,
                 ef_construction: int = ANN.ef_construction, threads: int = 1, seed: int = 0):
        import hnswlib

        super().__init__(adm, tau)
        self.index = hnswlib.Index(space="ip", dim=adm.shape[1])  # unit rows: inner product = cosine
        self.index.init_index(max_elements=max(1, cap), ef_construction=ef_construction, M=m, random_seed=seed)
        self.index.set_ef(ef)
        self.threads = threads

    def best(self, xb: np.ndarray, n_adm: int) -> tuple[np.ndarray, np.ndarray, int]:
        labels, dist = self.index.knn_query(xb, k=1, num_threads=-1)
        return (1.0 - dist[:, 0]).astype(np.float32), labels[:, 0].astype(np.int64), len(xb)

    def added(self, ranks: np.ndarray, new: np.ndarray, xb: np.ndarray) -> None:
        if new.size:
            self.index.add_items(xb[new], ranks, num_threads=self.threads)


def hnsw_products(ef: int = ANN.ef, m: int = ANN.m, ef_construction: int = ANN.ef_construction, threads: int = 1,
                  seed: int = 0):
    """A ``products`` factory for ``admit``: :class:`HnswProducts` (approximate; for semantic dedup)."""

    def factory(x, order, cap, tau, adm, stats):
        return HnswProducts(adm, tau, cap, ef=ef, m=m, ef_construction=ef_construction, threads=threads, seed=seed)

    return factory


_BF16_FASTER: bool | None = None


def bf16_is_faster() -> bool:
    """Whether torch multiplies bfloat16 clearly faster than float32 on this CPU (probed once, ~0.1 s)."""
    global _BF16_FASTER
    if _BF16_FASTER is None:
        try:
            torch = import_torch()
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


def default_products(adm: np.ndarray, tau: float, cap: int, device: str, precision: str) -> Any:
    """The products for ``device`` (numpy on "cpu", else torch) and ``precision`` ("bf16": the bf16 screen
    throughout; "auto": the screen once ``BF16_MIN_ADMITTED`` rows are admitted, when this CPU multiplies
    bf16 measurably faster)."""
    if precision not in ("auto", "float32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'float32' or 'bf16', not {precision!r}")
    if device != "cpu":
        return TorchProducts(adm, tau, device)
    if cap > 1 and precision == "bf16":
        return Bf16Products(adm, tau)
    if precision == "auto" and cap > BF16_MIN_ADMITTED and bf16_is_faster():
        return Bf16Products(adm, tau, min_admitted=BF16_MIN_ADMITTED)
    return Float32Products(adm, tau)
