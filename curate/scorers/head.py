"""The linear head of a scorer, stored as plain arrays and applied row by row (a sum per row, never a BLAS product).

- ``ridge``: ridge regression;
- ``ordinal``: multinomial logistic regression over the label values, scored as the expected label
  ``sum_k k * p_k`` (the same expectation DEITA takes over the judge's digit probabilities).

scikit-learn fits the head; prediction is reimplemented here on the stored arrays, so a saved scorer
loads without pickle and without scikit-learn's object format.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curate.defaults import SCORER
from curate.errors import ScorerError

HEADS = ("ridge", "ordinal")


def fit_head(X: np.ndarray, y: Sequence[float], *, head: str, alpha: float, C: float, n_embedding_columns: int,
             embedding_weight: float, pairs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Fit a head on a feature matrix (standardised here, with these rows' mean and scale).

    The first ``n_embedding_columns`` columns are scaled by ``embedding_weight`` after standardising:
    a larger ridge penalty on them than on the few text statistics (1.0 = one penalty for all).
    ``pairs``: (harder, easier) row indices of ``X`` in a known order (Evol chains); the ridge head then also
    learns their order (:func:`fit_joint_head`: squared error plus Bradley-Terry on the pairs, weighted alike),
    and a row whose score is NaN enters only its pairs.
    """
    y = np.asarray(y, dtype=np.float64)
    if pairs is not None and len(pairs):
        if head != "ridge":
            raise ScorerError(f"ordered pairs train the ridge head, not {head!r}")
        pairs = np.asarray(pairs, dtype=int)
        scored = np.isfinite(y)
        if scored.sum() < 2 or np.unique(y[scored]).size < 2:
            raise ScorerError("fitting needs at least two rows with different scores beside the ordered pairs")
        return fit_joint_head(X[scored], y[scored], X[pairs[:, 0]], X[pairs[:, 1]], np.ones(len(pairs)), alpha=alpha,
                              n_embedding_columns=n_embedding_columns, embedding_weight=embedding_weight)
    if X.shape[0] != y.shape[0]:
        raise ScorerError(f"{X.shape[0]} rows but {y.shape[0]} scores")
    if X.shape[0] < 2 or np.unique(y).size < 2:
        raise ScorerError("fitting needs at least two rows with different scores")
    if not np.all(np.isfinite(y)):
        raise ScorerError("scores contain NaN/inf; drop unlabelled rows before fitting")
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-12] = 1.0
    scale[:n_embedding_columns] /= embedding_weight
    Z = (X - mean) / scale
    # Feature bounds seen in training: predict clips to them, so a text far outside the training data
    # (a 4,000-word list, say) cannot push a linear head past every real example.
    w: dict[str, np.ndarray] = {"feature_mean": mean, "feature_scale": scale,
                                "feature_min": X.min(axis=0), "feature_max": X.max(axis=0)}
    if head == "ridge":
        from sklearn.linear_model import Ridge

        model = Ridge(alpha=alpha).fit(Z, y)
        w["coef"] = np.asarray(model.coef_, dtype=np.float64)[None, :]
        w["intercept"] = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))
    else:
        from sklearn.linear_model import LogisticRegression

        classes = np.unique(y)
        if classes.size > 50:
            raise ScorerError(f"ordinal head: {classes.size} distinct labels, more than 50 classes; "
                              "use the ridge head for continuous scores")
        codes = np.searchsorted(classes, y)  # class index per row; the expectation uses the values
        model = LogisticRegression(C=C, max_iter=2000).fit(Z, codes)
        coef, intercept = np.asarray(model.coef_), np.asarray(model.intercept_)
        if coef.shape[0] == 1:  # binary: sklearn stores one row for class 1
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.array([0.0, intercept[0]])
        w["coef"], w["intercept"], w["classes"] = coef, intercept, classes[np.asarray(model.classes_)].astype(np.float64)
    w["label_bounds"] = np.array([y.min(), y.max()])
    return as_saved(w)


def as_saved(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``w`` with its coefficients at the float32 precision ``Scorer.save`` stores them in: a scorer scores the
    same, with the same fingerprint, before and after a save/load (else its columns were recomputed)."""
    w["coef"] = np.asarray(w["coef"], dtype=np.float32).astype(np.float64)
    return w


OUTPUT_MAP = "soft-bounds-1"  # names predict_head's map onto the label range; a scorer's fingerprint includes it
SOFT_EDGE_SHARE = 0.05  # share of the label range at each end where predictions bend towards the bound


def soft_clip(pred: np.ndarray, lo: float, hi: float, edge_share: float = SOFT_EDGE_SHARE) -> np.ndarray:
    """``pred`` kept inside ``(lo, hi)`` and strictly increasing: the identity in the middle, and within
    ``edge_share`` of the range from either bound a hyperbolic approach to it (value and slope continuous; an
    exponential one would round far outliers onto the bound again).
    A hard clip tied every row past a bound (8% of pool rows at exactly 1.0 for the shipped quality ridge,
    16% of held-out constraint-chain versions at 6.0 for complexity_ridge), so their order was lost."""
    pred = np.asarray(pred, dtype=np.float64)
    m = max((hi - lo) * edge_share, 1e-12)
    out = pred.copy()
    top, bottom = pred > hi - m, pred < lo + m
    out[top] = hi - m / (1.0 + (pred[top] - (hi - m)) / m)
    out[bottom] = lo + m / (1.0 + ((lo + m) - pred[bottom]) / m)
    return out


def head_keys(head: str) -> set[str]:
    """The arrays a fitted ``head`` predicts from (``feature_min``/``feature_max``: scorers saved since they were kept)."""
    return {"feature_mean", "feature_scale", "coef", "intercept", "label_bounds"} | ({"classes"} if head != "ridge" else set())


def head_fault(w: dict[str, np.ndarray], head: str) -> str | None:
    """Why the saved arrays ``w`` are no fitted ``head`` (an array missing, or the per-feature arrays of unequal
    widths: a damaged or hand-edited file), or None; the width against the features is checked when it predicts."""
    if missing := sorted(head_keys(head) - set(w)):
        return f"no {', '.join(missing)}"
    widths = {name: np.shape(w[name])[-1] if np.ndim(w[name]) else None
              for name in ("coef", "feature_mean", "feature_scale", "feature_min", "feature_max") if name in w}
    if len(set(widths.values())) > 1:
        return "per-feature arrays of different widths (" + ", ".join(f"{k} {v}" for k, v in widths.items()) + ")"
    return None


def check_saved_head(w: dict[str, np.ndarray], head: str, file: object) -> None:
    """Refuse (a :class:`ScorerError` naming ``file``) saved arrays that are no fitted ``head`` (:func:`head_fault`)."""
    if fault := head_fault(w, head):
        raise ScorerError(f"{file} holds {fault}: a damaged or hand-edited file; train the scorer again")


def predict_head(w: dict[str, np.ndarray], X: np.ndarray, head: str) -> np.ndarray:
    """Predictions on the judge's own label scale, inside the training labels' range (:func:`soft_clip`)."""
    if not w:
        raise ScorerError("this scorer is not fitted; call fit() or Scorer.load()")
    need = head_keys(head)
    if need - set(w) or w["coef"].shape[-1] != X.shape[1]:
        raise ScorerError(f"the {head} head's weights do not fit this scorer (missing {sorted(need - set(w))}, or "
                          f"{w['coef'].shape[-1] if 'coef' in w else '?'} weights for {X.shape[1]} features): a damaged "
                          f"or hand-edited head.safetensors / scorer.json; train it again")
    if "feature_min" in w:
        X = np.clip(X, w["feature_min"], w["feature_max"])
    Z = (X - w["feature_mean"]) / w["feature_scale"]
    # einsum's own loops, not a BLAS matrix product: BLAS sums a row differently with the rows beside it (1 ulp
    # between the same row in two orders of the rows), and a row's score follows its conversation alone. As fast as
    # the matmul; a multiply-then-sum per coefficient row was 5-13x slower (a temporary the size of X per row).
    logits = np.einsum("ij,kj->ik", Z, np.atleast_2d(w["coef"])) + w["intercept"]
    if head == "ridge":
        pred = logits[:, 0]
    else:
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        pred = np.einsum("ij,j->i", p, w["classes"])
    lo, hi = w["label_bounds"]
    return soft_clip(pred, float(lo), float(hi))


def fit_joint_head(X: np.ndarray, y: Sequence[float], pairs_a: np.ndarray | None = None,
                   pairs_b: np.ndarray | None = None, pair_p: Sequence[float] | None = None, *,
                   alpha: float = SCORER.ridge_alpha,
                   pair_weight: float = 1.0, n_embedding_columns: int = 0,
                   embedding_weight: float = SCORER.embedding_weight,
                   label_mean: float | None = None, label_std: float | None = None) -> dict[str, np.ndarray]:
    """A linear head fitted on single scores and preference pairs at once (stored like ``ridge``).

    Minimises mean squared error on standardised labels ``y`` plus ``pair_weight`` x Bradley-Terry log
    loss on the score difference of each pair (``P(a beats b) = pair_p``), plus ``alpha`` x L2 / rows.
    Features are standardised on the rows and pair sides together (embedding columns scaled by
    ``embedding_weight``). The score is then put on the label scale: mean ``label_mean``, spread
    ``label_std`` (the judge's), so a quantile threshold and a value threshold mean the same thing.
    """
    from scipy.optimize import minimize

    y = np.asarray(y, dtype=np.float64)
    have_pairs = pairs_a is not None and len(pairs_a) > 0
    allx = np.vstack([X, pairs_a, pairs_b]) if have_pairs else X
    mean = allx.mean(axis=0)
    scale = allx.std(axis=0)
    scale[scale < 1e-12] = 1.0
    scale[:n_embedding_columns] /= embedding_weight
    Z = (X - mean) / scale
    yz = (y - y.mean()) / max(y.std(), 1e-12)
    if have_pairs:
        D = (pairs_a - pairs_b) / scale
        p = np.asarray(pair_p, dtype=np.float64)
    n, d = Z.shape

    def loss(theta):
        w, b = theta[:d], theta[d]
        r = Z @ w + b - yz
        f = (r @ r) / max(n, 1)
        g = np.zeros(d + 1)
        g[:d] = 2 * Z.T @ r / max(n, 1)
        g[d] = 2 * r.sum() / max(n, 1)
        if have_pairs:
            s = D @ w
            q = 1 / (1 + np.exp(-s))
            f += pair_weight * float(np.mean(np.logaddexp(0, s) - p * s))
            g[:d] += pair_weight * D.T @ (q - p) / len(p)
        f += alpha * (w @ w) / max(n, 1)
        g[:d] += 2 * alpha * w / max(n, 1)
        return f, g

    theta = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 200}).x
    w = theta[:d]
    pred = Z @ w
    mu = float(y.mean() if label_mean is None else label_mean)
    sd = float(y.std() if label_std is None else label_std)
    k = sd / max(pred.std(), 1e-12)  # the judge's spread, not ridge's squeezed one
    return as_saved({"feature_mean": mean, "feature_scale": scale, "feature_min": allx.min(axis=0),
                     "feature_max": allx.max(axis=0), "coef": (k * w)[None, :], "intercept": np.array([mu - k * pred.mean()]),
                     "label_bounds": np.array([y.min(), y.max()])})
