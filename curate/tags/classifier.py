"""A small multi-label tagger: tag a large pool without LLM calls once a sample has normalised LLM tags.

:class:`TagClassifier` is one-vs-rest logistic regression over sentence embeddings; :func:`train_tagger`
fits it on a workspace's tagged rows and scores it on a held-out share (:func:`tagger_agreement`);
:func:`predict_tags` writes its tags as a column with provenance.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curate.rows import row_text
from curate.tags.metrics import TagLists, all_tags, tags_per_query


class TagClassifier:
    """Multi-label tagger: one-vs-rest logistic regression over sentence embeddings.

    Trained on normalised LLM tags, it tags the rest of a pool without LLM calls. Weights are stored as
    safetensors (``coef`` labels x dim, ``intercept``) with the labels and parameters in its metadata.
    """

    def __init__(self, *, C: float = 1.0, min_label_rows: int = 2, threshold: float = 0.5,
                 class_weight: str | None = "balanced", max_iter: int = 1000):
        self.params = {"C": C, "min_label_rows": min_label_rows, "threshold": threshold,
                       "class_weight": class_weight, "max_iter": max_iter}
        self.labels: list[str] = []
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None
        self.dropped_labels: list[str] = []

    def fit(self, X: np.ndarray, tag_lists: TagLists) -> TagClassifier:
        """Fit on embeddings ``X`` (rows x dim) and each row's tags; labels with too few rows are left out."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.preprocessing import MultiLabelBinarizer

        X = np.asarray(X, dtype=np.float64)
        keep_rows = [i for i, r in enumerate(tag_lists) if r is not None]
        rows = [list(tag_lists[i] or []) for i in keep_rows]
        counts = Counter(t for r in rows for t in set(r))
        n = len(rows)
        self.labels = sorted(t for t, c in counts.items() if self.params["min_label_rows"] <= c < n)
        self.dropped_labels = sorted(set(counts) - set(self.labels))
        if not self.labels:
            raise ValueError("no tag has enough rows (and is absent from some) to train a classifier")
        Y = MultiLabelBinarizer(classes=self.labels).fit_transform([[t for t in r if t in self.labels] for r in rows])
        base = LogisticRegression(C=self.params["C"], class_weight=self.params["class_weight"],
                                  max_iter=self.params["max_iter"])
        ovr = OneVsRestClassifier(base).fit(X[keep_rows], Y)
        self.coef = np.vstack([e.coef_.ravel() for e in ovr.estimators_]).astype(np.float32)
        self.intercept = np.array([e.intercept_[0] for e in ovr.estimators_], dtype=np.float32)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise ValueError("TagClassifier is not fitted")
        z = np.asarray(X, dtype=np.float32) @ self.coef.T + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def predict(self, X: np.ndarray, threshold: float | None = None, top_k: int | None = None) -> list[list[str]]:
        """Tags per row: labels with probability >= ``threshold``, or the ``top_k`` most probable."""
        proba = self.predict_proba(X)
        if top_k is not None:
            idx = np.argsort(-proba, axis=1, kind="stable")[:, :top_k]
            return [[self.labels[j] for j in row] for row in idx]
        thr = self.params["threshold"] if threshold is None else threshold
        return [[self.labels[j] for j in np.flatnonzero(row >= thr)] for row in proba]

    def save(self, path: str | Path) -> Path:
        """Write the classifier as one safetensors file, atomically (a full disk names ``path``, leaves no part)."""
        from safetensors.numpy import save

        from curate.storage.files import atomic_write_bytes

        if self.coef is None:
            raise ValueError("TagClassifier is not fitted")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"kind": "curate.tags.TagClassifier", "labels": json.dumps(self.labels),
                "params": json.dumps(self.params), "dropped_labels": json.dumps(self.dropped_labels)}
        atomic_write_bytes(path, save({"coef": self.coef, "intercept": self.intercept}, metadata=meta))
        return path

    @classmethod
    def load(cls, path: str | Path) -> TagClassifier:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            if meta.get("kind") != "curate.tags.TagClassifier":
                raise ValueError(f"{path}: not a saved curate TagClassifier")
            clf = cls(**json.loads(meta["params"]))
            clf.coef = fh.get_tensor("coef")
            clf.intercept = fh.get_tensor("intercept")
        clf.labels = json.loads(meta["labels"])
        clf.dropped_labels = json.loads(meta["dropped_labels"])
        return clf

    def __repr__(self) -> str:
        return f"TagClassifier(labels={len(self.labels)}, params={self.params})"


def tagger_agreement(predicted: TagLists, true: TagLists, labels: Sequence[str]) -> dict[str, float]:
    """Micro/macro F1 over ``labels``, plus how well the predicted tags reproduce the true tag coverage.

    ``coverage_true``/``coverage_pred``: share of ``labels`` covered by the union of the true/predicted
    tags; ``covered_jaccard``: Jaccard of those two covered sets; ``tags_per_query_true/pred``.
    """
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    labels = list(labels)
    label_set = set(labels)
    true_in = [[t for t in (r or []) if t in label_set] for r in true]
    pred_in = [[t for t in (r or []) if t in label_set] for r in predicted]
    mlb = MultiLabelBinarizer(classes=labels)
    yt, yp = mlb.fit_transform(true_in), mlb.transform(pred_in)
    cov_t, cov_p = all_tags(true_in), all_tags(pred_in)
    union = cov_t | cov_p
    return {"micro_f1": float(f1_score(yt, yp, average="micro", zero_division=0)),
            # over the labels that occur in either: one absent from the held-out rows and never predicted is
            # not a miss (counted as F1 0, it held a perfect tagger to 0.67)
            "macro_f1": float(f1_score(yt[:, active], yp[:, active], average="macro", zero_division=0))
            if (active := (yt.sum(0) + yp.sum(0)) > 0).any() else 1.0,
            "coverage_true": len(cov_t) / len(labels), "coverage_pred": len(cov_p) / len(labels),
            "covered_jaccard": len(cov_t & cov_p) / len(union) if union else 1.0,
            "tags_per_query_true": tags_per_query(true_in), "tags_per_query_pred": tags_per_query(pred_in)}


def row_texts(ws: Any, ids: list[str] | None = None) -> list[str]:
    """The text the small tagger reads for a row: its user turns, joined (:func:`curate.rows.row_text`)."""
    return [row_text(c, "instruction") for c in ws.conversations(ids)]


def _row_vectors(ws: Any, ids: list[str], embeddings: str | None) -> np.ndarray:
    """A stored embedding set's rows, or the rows' user turns encoded now (through the workspace's cache)."""
    if embeddings is None:
        from curate.embed import encode_cached

        return encode_cached(row_texts(ws, ids), ws.cache_dir)[0]
    return np.asarray(ws.embeddings(embeddings, ids=ids))


def train_tagger(ws, *, tags_column: str = "tags", embeddings: str | None = None, test_share: float = 0.2,
                 seed: int = 0, classifier: TagClassifier | None = None) -> tuple[TagClassifier, dict[str, float]]:
    """Fit a :class:`TagClassifier` on the rows that have tags; score it on a held-out share of them.

    ``embeddings``: a stored embedding set of the workspace, or ``None`` to embed the rows' user turns now.
    Returns the classifier (refitted on all tagged rows) and its held-out agreement (:func:`tagger_agreement`).
    """
    values = ws.column(tags_column)
    ids = [i for i, v in zip(ws.ids, values, strict=True) if v]
    tag_lists = [v for v in values if v]
    if len(ids) < 10:
        raise ValueError(f"only {len(ids)} rows have tags in {tags_column!r}; need at least 10 to train a tagger")
    X = _row_vectors(ws, ids, embeddings)
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_test = max(1, int(round(test_share * len(ids))))
    test, train = perm[:n_test], perm[n_test:]
    clf = classifier or TagClassifier()
    clf.fit(X[train], [tag_lists[i] for i in train])
    scores = tagger_agreement(clf.predict(X[test]), [tag_lists[i] for i in test], clf.labels)
    scores.update({"train_rows": int(len(train)), "test_rows": int(n_test), "labels": len(clf.labels)})
    clf.fit(X, tag_lists)
    return clf, scores


def predict_tags(ws, classifier: TagClassifier, *, column: str = "tags_predicted", embeddings: str | None = None,
                 threshold: float | None = None, ids: list[str] | None = None) -> list[list[str]]:
    """Tag rows (default: the whole pool) with the small tagger; write ``column`` with provenance."""
    ids = ws.ids if ids is None else list(ids)
    predicted = classifier.predict(_row_vectors(ws, ids, embeddings), threshold=threshold)
    ws.add_column(column, predicted, {"kind": "instag_tagger", "labels": len(classifier.labels),
                                      "params": classifier.params, "threshold": threshold,
                                      "embeddings": embeddings or "curate.embed.encode_cached(user turns)"}, ids=ids)
    return predicted
