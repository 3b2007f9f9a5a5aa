"""Selectors: build the final set from scores, embeddings and text, with a reason for every row.

A selector is a function ``fn(ws, rows, **params) -> SelectorResult``: ``rows`` are the pool positions it
may choose from (the whole pool, or the kept rows of an input selection); it returns the rows it considered
in rank order, each with a decision (``kept`` for the final set; ``rejected``, ``duplicate``,
``not_reached``, ``unscored`` ... otherwise) and a reason. Selectors live in :data:`SELECTORS`; other modules
add theirs with :func:`register` (the tags module registers ``instag``). A selector's parameters are read
from its signature: :func:`select` names a missing or unknown one before any step runs.

Selectors compose: ``ws.select(method="threshold", name="good", input_selection="dedup", min_score=4)``,
or a chain in one call: ``ws.select(name="final", steps=[{"method": "exact"}, {"method": "deita", "budget": 6000}])``.

Sort keys (``sort_by``): a column name or an arithmetic expression over columns, e.g.
``complexity*quality`` (the default when both columns exist: the DEITA evol score). Expressions are
evaluated per turn and summed over turns when a column holds per-turn lists, so ``complexity*quality``
is DEITA's sum over turns of c_t * q_t. Only numbers, column names, + - * / ** and the functions
log, log1p, exp, sqrt, abs, minimum, maximum are allowed (parsed with ``ast``; nothing is ``eval``-ed).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.select.admission import (
    ADMITTED,
    DECISION_NAMES,
    REJECTED,
    AdmissionResult,
    admit,
    examination_order,
    unit_rows,
)
from curate.errors import CurateError

__all__ = ["SELECTORS", "SelectorResult", "admit", "evaluate_sort_key", "register", "select", "AdmissionResult"]

SELECTORS: dict[str, Callable[..., SelectorResult]] = {}
DEFAULT_SORT = "complexity*quality"


@dataclass
class SelectorResult:
    """What a selector decided: considered rows (pool positions) in rank order, decision and reason each."""

    rows: list[int]
    decisions: list[str]
    reasons: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def register(name: str) -> Callable[[Callable[..., SelectorResult]], Callable[..., SelectorResult]]:
    """Decorator: add a selector to :data:`SELECTORS` under ``name``."""

    def deco(fn: Callable[..., SelectorResult]) -> Callable[..., SelectorResult]:
        SELECTORS[name] = fn
        return fn

    return deco


# -- sort keys ----------------------------------------------------------------------------------------
_FUNCS = {"log": np.log, "log1p": np.log1p, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs,
          "minimum": np.minimum, "maximum": np.maximum}
_BINOPS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.true_divide,
           ast.Pow: np.power}


def _column_matrix(values: list[Any]) -> np.ndarray:
    """Column values as an (n, turns) float matrix: scalars fill one column, per-turn lists are padded NaN."""
    turns = max((len(v) for v in values if isinstance(v, list | tuple)), default=0)
    if turns == 0:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)[:, None]
    out = np.full((len(values), turns), np.nan)
    for i, v in enumerate(values):
        if isinstance(v, list | tuple):
            out[i, : len(v)] = [np.nan if t is None else float(t) for t in v]
        elif v is not None:
            out[i, :] = float(v)
    return out


def evaluate_sort_key(ws, expr: str | None = None, ids: list[str] | None = None) -> np.ndarray:
    """Float score per row (pool order, or ``ids``) from a column or a safe expression; NaN = unscored."""
    if expr is None:
        have = set(ws.columns)
        if not {"complexity", "quality"} <= have:
            raise CurateError(f"no sort key: the default is {DEFAULT_SORT} (the DEITA evol score) but the workspace "
                              f"has columns {sorted(have)}; pass sort_by=COLUMN or an expression")
        expr = DEFAULT_SORT
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise CurateError(f"sort key {expr!r} is not an expression: {exc.msg}") from None
    cache: dict[str, np.ndarray] = {}

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in cache:
                cache[node.id] = _column_matrix(ws.column(node.id, ids))
            return cache[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                and not node.keywords):
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise CurateError(f"sort key {expr!r}: {ast.unparse(node)!r} is not allowed (use column names, numbers, "
                          f"+ - * / **, and {', '.join(_FUNCS)})")

    with np.errstate(all="ignore"):
        value = ev(tree)
    n = len(ws.ids) if ids is None else len(ids)
    if not isinstance(value, np.ndarray):
        return np.full(n, float(value))
    value = np.broadcast_to(value, (n, value.shape[1]))
    present = ~np.isnan(value)
    total = np.where(present, value, 0.0).sum(axis=1)
    total[~present.any(axis=1)] = np.nan
    return total


def _rows_by_score(ws, rows: np.ndarray, sort_by: str | None, required: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``rows`` ordered by score (desc, ties by id; unscored last) with their scores in the same order, when a
    score exists (or is required); else the rows in pool order and None."""
    if sort_by is None and not required and not {"complexity", "quality"} <= set(ws.columns):
        return rows, None
    scores = evaluate_sort_key(ws, sort_by)[rows]
    ids = np.asarray(ws.ids, dtype=object)[rows].astype(str)
    order = examination_order(scores, ids)
    perm = np.concatenate((order, np.flatnonzero(np.isnan(scores))))
    return rows[perm], scores[perm]


def _vectors(ws, embeddings: str, rows: np.ndarray) -> np.ndarray:
    """The rows' embeddings as float32 unit rows (renormalised where off unit norm: cosines stay true cosines)."""
    return unit_rows(ws.embeddings(embeddings)[rows])


def _texts(ws, rows: np.ndarray, text: str) -> list[str]:
    from curate.embed import row_text

    convs = ws.conversations()
    return [row_text(convs[p], text) for p in rows.tolist()]


def _score_text(s: float | None) -> str:
    return "no score" if s is None or (isinstance(s, float) and math.isnan(s)) else f"score {s:.4g}"


# -- selectors ----------------------------------------------------------------------------------------
@register("deita")
def deita(ws, rows: np.ndarray, budget: int | None = None, max_cosine_similarity: float = 0.9,
          sort_by: str | None = None, embeddings: str = "default", block_size: int = 4096,
          device: str = "cpu", prune: bool | str = False, progress: bool = False) -> SelectorResult:
    """DEITA's repr filter: by score, admit a row iff max cosine similarity to admitted rows <= tau."""
    scores = evaluate_sort_key(ws, sort_by)[rows]
    ids = np.asarray(ws.ids, dtype=object)[rows].astype(str)
    res = admit(_vectors(ws, embeddings, rows), scores, ids, max_cosine_similarity, budget,
                block_size=block_size, device=device, prune=prune, progress=progress)
    reasons = res.reasons(ids.tolist(), max_cosine_similarity)
    local = np.concatenate((res.order, np.flatnonzero(np.isnan(scores))))
    return SelectorResult(
        rows=rows[local].tolist(), decisions=[DECISION_NAMES[int(res.decision[i])] for i in local],
        reasons=[f"{_score_text(scores[i])}; {reasons[i]}" for i in local],
        info={"sort_by": sort_by or DEFAULT_SORT, "stats": res.stats})


@register("top_k")
def top_k(ws, rows: np.ndarray, budget: int, sort_by: str | None = None) -> SelectorResult:
    """The ``budget`` best-scored rows."""
    ordered, scores = _rows_by_score(ws, rows, sort_by, required=True)
    dec, why = [], []
    for r, s in enumerate(scores.tolist()):
        if math.isnan(s):
            dec.append("unscored"), why.append("no score")
        elif r < budget:
            dec.append("kept"), why.append(f"score {s:.4g}, rank {r + 1} <= {budget}")
        else:
            dec.append("rejected"), why.append(f"score {s:.4g}, rank {r + 1} > {budget}")
    return SelectorResult(ordered.tolist(), dec, why, {"sort_by": sort_by or DEFAULT_SORT})


@register("threshold")
def threshold(ws, rows: np.ndarray, min_score: float, sort_by: str | None = None) -> SelectorResult:
    """ALPAGASUS-style filter: keep rows whose score is >= ``min_score``."""
    ordered, scores = _rows_by_score(ws, rows, sort_by, required=True)
    dec, why = [], []
    for s in scores.tolist():
        if math.isnan(s):
            dec.append("unscored"), why.append("no score")
        elif s >= min_score:
            dec.append("kept"), why.append(f"score {s:.4g} >= {min_score:g}")
        else:
            dec.append("rejected"), why.append(f"below threshold: score {s:.4g} < {min_score:g}")
    return SelectorResult(ordered.tolist(), dec, why, {"sort_by": sort_by or DEFAULT_SORT})


@register("random")
def random_sample(ws, rows: np.ndarray, budget: int, seed: int = 0) -> SelectorResult:
    """A seeded uniform sample of ``budget`` rows."""
    perm = rows[np.random.default_rng(seed).permutation(len(rows))]
    dec = ["kept" if i < budget else "rejected" for i in range(len(perm))]
    why = [f"random draw {i + 1} (seed {seed})" + ("" if i < budget else f" > budget {budget}") for i in range(len(perm))]
    return SelectorResult(perm.tolist(), dec, why, {"seed": seed})


def kcenter_greedy(x: np.ndarray, k: int, first: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy k-center on unit vectors (cosine distance): returns centre indices, each row's nearest centre,
    and each row's distance to it. Exact: one matrix-vector product per centre."""
    n = len(x)
    k = min(k, n)
    centres = np.empty(k, np.int64)
    dist = np.full(n, np.inf)
    nearest = np.full(n, -1, np.int64)
    pick_dist = np.empty(k)
    c = first
    for i in range(k):
        centres[i] = c
        pick_dist[i] = dist[c]
        d = 1.0 - (x @ x[c]).astype(np.float64)
        closer = d < dist
        dist[closer] = d[closer]
        nearest[closer] = c
        dist[c], nearest[c] = 0.0, c
        c = int(np.argmax(dist))
    return centres, nearest, dist


@register("kcenter")
def kcenter(ws, rows: np.ndarray, budget: int, embeddings: str = "default", sort_by: str | None = None,
            seed: int = 0) -> SelectorResult:
    """MoDS / coreset k-center greedy: each pick is the row farthest (cosine distance) from those picked.

    Starts from the best-scored row when a score exists, else a seeded random row.
    """
    ordered, scores = _rows_by_score(ws, rows, sort_by, required=False)
    x = _vectors(ws, embeddings, ordered)
    first = 0 if scores is not None else int(np.random.default_rng(seed).integers(len(ordered)))
    centres, nearest, dist = kcenter_greedy(x, budget, first)
    cset = {int(c): i for i, c in enumerate(centres)}
    radius = float(dist.max()) if len(dist) else 0.0
    out_rows, dec, why = [], [], []
    for i, c in enumerate(centres.tolist()):
        out_rows.append(int(ordered[c])), dec.append("kept")
        why.append("first centre" if i == 0 else f"centre #{i + 1}: farthest remaining row")
    for j in range(len(ordered)):
        if j not in cset:
            out_rows.append(int(ordered[j])), dec.append("rejected")
            why.append(f"covered by row {ws.ids[ordered[nearest[j]]]} at cosine distance {dist[j]:.4f}")
    return SelectorResult(out_rows, dec, why, {"radius": radius})


@register("kmeans")
def kmeans(ws, rows: np.ndarray, budget: int, n_clusters: int | None = None, per_cluster: str = "nearest",
           embeddings: str = "default", seed: int = 0) -> SelectorResult:
    """Coreset: K-means, then each cluster's share of ``budget`` (by size) nearest its centroid or by k-center."""
    from sklearn.cluster import KMeans

    x = _vectors(ws, embeddings, rows)
    k = min(len(rows), n_clusters or max(1, min(budget, int(math.sqrt(len(rows))))))
    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    labels = km.labels_
    sizes = np.bincount(labels, minlength=k)
    quota = np.floor(sizes / sizes.sum() * budget).astype(int)
    for c in np.argsort(-(sizes / sizes.sum() * budget - quota), kind="stable")[: budget - quota.sum()]:
        quota[c] += 1
    quota = np.minimum(quota, sizes)
    out_rows, dec, why = [], [], []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        cent = km.cluster_centers_[c] / max(np.linalg.norm(km.cluster_centers_[c]), 1e-12)
        sims = x[members] @ cent
        if per_cluster == "kcenter":
            picked, _, _ = kcenter_greedy(x[members], int(quota[c]), int(np.argmax(sims)))
            rank = {int(m): i for i, m in enumerate(picked)}
            order = list(picked) + [m for m in np.argsort(-sims, kind="stable") if m not in rank]
        elif per_cluster == "nearest":
            order = np.argsort(-sims, kind="stable").tolist()
        else:
            raise ValueError("per_cluster must be 'nearest' or 'kcenter'")
        for i, m in enumerate(order):
            out_rows.append(int(rows[members[m]]))
            keep = i < quota[c]
            dec.append("kept" if keep else "rejected")
            why.append(f"cluster {c} ({sizes[c]} rows, quota {quota[c]}): {per_cluster} pick {i + 1}, "
                       f"similarity to centroid {sims[m]:.3f}")
    return SelectorResult(out_rows, dec, why, {"n_clusters": k, "per_cluster": per_cluster})


@register("lift")
def lift(ws, rows: np.ndarray, budget: int, n_components: int = 32, embeddings: str = "default",
         seed: int = 0) -> SelectorResult:
    """LIFT: project embeddings (PCA) and keep the rows whose projected coordinates vary the most."""
    from sklearn.decomposition import PCA

    x = _vectors(ws, embeddings, rows)
    proj = PCA(n_components=min(n_components, *x.shape), random_state=seed).fit_transform(x)
    var = proj.var(axis=1)
    order = np.argsort(-var, kind="stable")
    dec = ["kept" if i < budget else "rejected" for i in range(len(order))]
    why = [f"row variance {var[j]:.4g} in {proj.shape[1]} components, rank {i + 1}" for i, j in enumerate(order)]
    return SelectorResult(rows[order].tolist(), dec, why, {"n_components": int(proj.shape[1])})


def hashed_ngrams(texts: list[str], num_buckets: int = 10_000, ngram: int = 2):
    """Sparse (texts x buckets) counts of hashed word 1..ngram-grams (sklearn's stable murmur hashing)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vec = HashingVectorizer(n_features=num_buckets, ngram_range=(1, ngram), alternate_sign=False, norm=None,
                            lowercase=True)
    return vec.transform(texts)


@register("dsir")
def dsir(ws, rows: np.ndarray, budget: int, target: list[str] | str, text: str = "instruction",
         num_buckets: int = 10_000, ngram: int = 2, seed: int = 0) -> SelectorResult:
    """DSIR: importance weights p_target/p_raw over hashed n-grams, then Gumbel top-k resampling."""
    if isinstance(target, str):
        target = [ln for ln in Path(target).read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not target:
        raise CurateError("dsir needs target texts")
    raw = hashed_ngrams(_texts(ws, rows, text), num_buckets, ngram)
    tgt = hashed_ngrams(target, num_buckets, ngram)
    p_raw = np.asarray(raw.sum(axis=0)).ravel() + 1.0
    p_tgt = np.asarray(tgt.sum(axis=0)).ravel() + 1.0
    logratio = np.log(p_tgt / p_tgt.sum()) - np.log(p_raw / p_raw.sum())
    logw = raw @ logratio
    gumbel = np.random.default_rng(seed).gumbel(size=len(rows))
    keys = logw + gumbel
    order = np.argsort(-keys, kind="stable")
    dec = ["kept" if i < budget else "rejected" for i in range(len(order))]
    why = [f"log importance weight {logw[j]:.3f} (+ Gumbel noise = {keys[j]:.3f}), rank {i + 1}"
           for i, j in enumerate(order)]
    return SelectorResult(rows[order].tolist(), dec, why, {"num_buckets": num_buckets, "ngram": ngram,
                                                            "target_texts": len(target), "seed": seed})


def normalise_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed: the key of exact deduplication."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()


@register("exact")
def exact_dedup(ws, rows: np.ndarray, text: str = "conversation", sort_by: str | None = None) -> SelectorResult:
    """Exact dedup on a hash of the normalised text; the best-scored (else first) copy is kept."""
    ordered, _ = _rows_by_score(ws, rows, sort_by, required=False)
    first: dict[bytes, int] = {}
    dec, why = [], []
    for p, t in zip(ordered.tolist(), _texts(ws, ordered, text), strict=True):
        h = hashlib.sha256(normalise_text(t).encode()).digest()
        if h in first:
            dec.append("duplicate"), why.append(f"same normalised {text} as row {ws.ids[first[h]]}")
        else:
            first[h] = p
            dec.append("kept"), why.append(f"first copy of its normalised {text}")
    return SelectorResult(ordered.tolist(), dec, why, {"text": text})


@register("minhash")
def minhash_dedup(ws, rows: np.ndarray, threshold: float = 0.8, text: str = "conversation", shingle: int = 3,
                  num_perm: int = 128, sort_by: str | None = None, seed: int = 1) -> SelectorResult:
    """Near-duplicate text (MinHash LSH over word shingles, datasketch); the best-scored copy is kept."""
    from datasketch import MinHash, MinHashLSH

    ordered, _ = _rows_by_score(ws, rows, sort_by, required=False)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: dict[str, MinHash] = {}
    dec, why = [], []
    for p, t in zip(ordered.tolist(), _texts(ws, ordered, text), strict=True):
        words = normalise_text(t).split(" ")
        grams = {" ".join(words[i:i + shingle]) for i in range(max(1, len(words) - shingle + 1))}
        mh = MinHash(num_perm=num_perm, seed=seed)
        mh.update_batch([g.encode() for g in grams])
        hits = [(mh.jaccard(kept[h]), h) for h in lsh.query(mh)]
        hits = [h for h in hits if h[0] >= threshold]
        if hits:
            j, h = max(hits)
            dec.append("duplicate"), why.append(f"near-duplicate of row {h} (estimated Jaccard {j:.2f})")
        else:
            key = ws.ids[p]
            lsh.insert(key, mh)
            kept[key] = mh
            dec.append("kept"), why.append("no kept row above the Jaccard threshold")
    return SelectorResult(ordered.tolist(), dec, why, {"threshold": threshold, "shingle": shingle, "num_perm": num_perm})


@register("semantic")
def semantic_dedup(ws, rows: np.ndarray, max_cosine_similarity: float = 0.95, n_clusters: int | None = None,
                   embeddings: str = "default", sort_by: str | None = None, seed: int = 0) -> SelectorResult:
    """Semantic dedup: K-means clusters, then inside each cluster the exact admission loop (no budget):
    a row is a duplicate when a better-scored kept row of its cluster is above the similarity."""
    from sklearn.cluster import KMeans

    ordered, scores = _rows_by_score(ws, rows, sort_by, required=False)
    x = _vectors(ws, embeddings, ordered)
    k = min(len(ordered), n_clusters or max(1, int(math.sqrt(len(ordered) / 4))))
    labels = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(x) if k > 1 else np.zeros(len(x), int)
    rank_score = -np.arange(len(ordered), dtype=np.float64)  # ordered is already best first
    dec = ["kept"] * len(ordered)
    why = [""] * len(ordered)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        res = admit(x[members], rank_score[members], None, max_cosine_similarity, None)
        for local, m in enumerate(members.tolist()):
            if res.decision[local] == REJECTED:
                dec[m] = "duplicate"
                why[m] = (f"near-duplicate of row {ws.ids[ordered[members[res.witness[local]]]]} "
                          f"(cosine {res.witness_similarity[local]:.4f} > {max_cosine_similarity:g}) in cluster {c}")
            else:
                assert res.decision[local] == ADMITTED
                why[m] = f"best-scored of its near-duplicates in cluster {c}"
    return SelectorResult(ordered.tolist(), dec, why, {"n_clusters": k, "max_cosine_similarity": max_cosine_similarity,
                                                       "scored": scores is not None})


# -- running selectors against a workspace ------------------------------------------------------------
_NAMED_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
SELECTOR_FIXED_ARGS = 2  # every selector is fn(ws, rows, **params)


def selector_parameters(method: str) -> tuple[list[str], list[str], bool]:
    """(every parameter name, the required ones, whether it takes any keyword) of selector ``method``,
    read from its signature after ``ws, rows``."""
    fn = SELECTORS[method]
    params = list(inspect.signature(fn).parameters.values())[SELECTOR_FIXED_ARGS:]
    named = [p for p in params if p.kind in _NAMED_KINDS]
    return ([p.name for p in named], [p.name for p in named if p.default is inspect.Parameter.empty],
            any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params))


def check_params(method: str, params: dict[str, Any]) -> None:
    """Raise a :class:`CurateError` naming the first unknown or missing parameter of selector ``method``."""
    known, required, any_keyword = selector_parameters(method)
    unknown = [k for k in params if k not in known]
    if unknown and not any_keyword:
        raise CurateError(f"selector {method!r} has no parameter {unknown[0]!r} (known: {', '.join(known) or 'none'})")
    missing = [k for k in required if k not in params]
    if missing:
        raise CurateError(f"selector {method!r} needs parameter {missing[0]!r}"
                          + (f" (and {', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else ""))


def select(ws, method: str | None = None, name: str | None = None, input_selection: str | None = None,
           steps: list[dict[str, Any]] | None = None, **params: Any):
    """Run a selector (or a chain of ``steps``) and store the result as selection ``name``.

    ``input_selection``: start from that selection's kept rows instead of the whole pool. With ``steps``,
    each step's kept rows feed the next; intermediate steps are stored as ``{name}.{i}-{method}``.
    Returns the final :class:`curate.storage.workspace.Selection`.
    """
    if name is None:
        raise ValueError("select needs a name for the selection")
    if steps is None:
        if method is None:
            raise ValueError("select needs method= or steps=")
        steps = [{"method": method, **params}]
    elif method is not None or params:
        raise ValueError("pass either method= with parameters, or steps=, not both")
    chained = method is None
    for i, step in enumerate(steps):  # every step checked before any runs: a chain never stops half-written
        where = f"step {i + 1} of chain {name!r}: " if chained else ""
        if "method" not in step:
            raise CurateError(f"{where}no 'method' given; choose one of {', '.join(sorted(SELECTORS))}")
        meth = step["method"]
        if meth not in SELECTORS:
            raise CurateError(f"{where}unknown selection method {meth!r}; have {', '.join(sorted(SELECTORS))}")
        try:
            check_params(meth, {k: v for k, v in step.items() if k != "method"})
        except CurateError as exc:
            raise CurateError(f"{where}{exc}") from None
    source = input_selection
    selection = None
    for i, step in enumerate(steps):
        step = dict(step)
        meth = step.pop("method")
        if source is None:
            rows = np.arange(len(ws.ids))
        else:  # the previous step's selection is in hand; only a given input_selection is read from disk
            kept = (selection or ws.selection(source)).ids
            index = ws.index
            rows = np.sort(np.array([index[r] for r in kept], dtype=np.int64))
        result = SELECTORS[meth](ws, rows, **step)
        step_name = name if i == len(steps) - 1 else f"{name}.{i + 1}-{meth}"
        counts: dict[str, int] = {}
        for d in result.decisions:
            counts[d] = counts.get(d, 0) + 1
        provenance = {"method": meth, "params": step, "input_selection": source, "candidates": int(len(rows)),
                      "counts": counts, **result.info}
        ids = ws.ids
        selection = ws.add_selection(step_name, [ids[p] for p in result.rows], result.decisions, result.reasons,
                                     provenance)
        source = step_name
    return selection


def _register_other_modules() -> None:
    """Selectors that live with their concept (InsTag sampling in curate.tags) join the registry here."""
    from curate.tags import register as register_instag

    register_instag()


_register_other_modules()
