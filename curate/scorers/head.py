"""The linear head of a scorer, stored as plain arrays and applied with a matmul.

- ``ridge``: ridge regression;
- ``ordinal``: multinomial logistic regression over the label values, scored as the expected label
  ``sum_k k * p_k`` (the same expectation DEITA takes over the judge's digit probabilities).

scikit-learn fits the head; prediction is reimplemented here on the stored arrays, so a saved scorer
loads without pickle and without scikit-learn's object format.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curate.errors import ScorerError

HEADS = ("ridge", "ordinal")


def fit_head(X: np.ndarray, y: Sequence[float], *, head: str, alpha: float, C: float, n_embedding_columns: int,
             embedding_weight: float) -> dict[str, np.ndarray]:
    """Fit a head on a feature matrix (standardised here, with these rows' mean and scale).

    The first ``n_embedding_columns`` columns are scaled by ``embedding_weight`` after standardising:
    a larger ridge penalty on them than on the few text statistics (1.0 = one penalty for all).
    """
    y = np.asarray(y, dtype=np.float64)
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
            raise ScorerError(f"ordinal head: {classes.size} distinct labels; use head='ridge' for continuous scores")
        codes = np.searchsorted(classes, y)  # class index per row; the expectation uses the values
        model = LogisticRegression(C=C, max_iter=2000).fit(Z, codes)
        coef, intercept = np.asarray(model.coef_), np.asarray(model.intercept_)
        if coef.shape[0] == 1:  # binary: sklearn stores one row for class 1
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.array([0.0, intercept[0]])
        w["coef"], w["intercept"], w["classes"] = coef, intercept, classes[np.asarray(model.classes_)].astype(np.float64)
    w["label_bounds"] = np.array([y.min(), y.max()])
    return w


def predict_head(w: dict[str, np.ndarray], X: np.ndarray, head: str) -> np.ndarray:
    """Predictions on the judge's own label scale (clipped to the training labels' range)."""
    if not w:
        raise ScorerError("this scorer is not fitted; call fit() or Scorer.load()")
    if "feature_min" in w:
        X = np.clip(X, w["feature_min"], w["feature_max"])
    Z = (X - w["feature_mean"]) / w["feature_scale"]
    logits = Z @ w["coef"].T + w["intercept"]
    if head == "ridge":
        pred = logits[:, 0]
    else:
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        pred = p @ w["classes"]
    lo, hi = w["label_bounds"]
    return np.clip(pred, lo, hi)
