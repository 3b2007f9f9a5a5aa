"""Trained small scorers: imitate an expensive LLM judge with MiniLM embeddings and a linear head.

A :class:`Scorer` reads one or two texts per row (``inputs``: the instruction, and for quality also the
response), turns them into features (MiniLM embeddings, their element-wise product, log lengths, cheap
text statistics) and maps the features to a score with a scikit-learn head fitted on judge labels:

- ``head="ridge"``: ridge regression;
- ``head="ordinal"``: multinomial logistic regression over the label values, scored as the expected
  label ``sum_k k * p_k`` (the same expectation DEITA takes over the judge's digit probabilities).

The fitted head is stored as plain arrays (safetensors) plus JSON metadata, and prediction is a matmul
reimplemented here, so a saved scorer loads without pickle and without scikit-learn's object format.

Also here: agreement metrics with baselines (:func:`agreement`, :func:`train_and_evaluate`), drop-in
scoring of a workspace (:func:`score_workspace`), and the distillation loop (:func:`distil`).
Kinds ``finetune`` and ``lm-digit`` (the DEITA way) are not built yet.

Output scale: a scorer may map its judge's label range linearly onto another range (``label_range`` ->
``output_range``); the shipped defaults map onto DEITA's 1-6 scale so ``complexity * quality`` works.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import CurateError

KINDS = ("embedding",)
HEADS = ("ridge", "ordinal")
FEATURES = ("embeddings", "product", "length", "stats")
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_SCORERS = ("complexity", "quality")


class ScorerError(CurateError):
    """A scorer cannot be built, loaded or applied."""


# -- inputs ------------------------------------------------------------------------------------------
Row = str | dict[str, Any] | Sequence[dict[str, str]]


def _row_fields(row: Row) -> dict[str, str | None]:
    """Instruction and response of one row: a dict with those keys (or ``conversation``), or a conversation."""
    from curate.pools import user_turns

    if isinstance(row, dict) and "conversation" not in row:
        instruction = row.get("instruction", row.get("query", row.get("prompt")))
        extra = row.get("input")
        if extra:
            instruction = f"{instruction}\n\n{extra}"
        response = row.get("response", row.get("output", row.get("answer")))
        return {"instruction": instruction, "response": response}
    conversation = row["conversation"] if isinstance(row, dict) else row
    turns = user_turns(list(conversation))
    if not turns:
        return {"instruction": None, "response": None}
    return {"instruction": turns[0][0], "response": turns[0][1]}


def input_texts(rows: Sequence[Row], inputs: Sequence[str]) -> dict[str, list[str]]:
    """The texts a scorer reads, one list per input name, aligned to ``rows``.

    Rows may be plain strings (only when the scorer reads one input), dicts with ``instruction``
    (+ ``input``) and ``response``/``output`` keys, dicts with a ``conversation``, or conversations.
    """
    rows = list(rows)
    if rows and isinstance(rows[0], str):
        if len(inputs) != 1:
            raise ScorerError(f"this scorer reads {list(inputs)}; pass rows (dicts or conversations), not strings")
        return {inputs[0]: [str(r) for r in rows]}
    out: dict[str, list[str]] = {name: [] for name in inputs}
    for i, row in enumerate(rows):
        fields = _row_fields(row)
        for name in inputs:
            text = fields.get(name)
            if text is None:
                raise ScorerError(f"row {i} has no {name}; this scorer reads {list(inputs)}")
            out[name].append(text)
    return out


def _fingerprint(texts: dict[str, list[str]], scores: Sequence[float]) -> str:
    h = hashlib.sha256()
    for name in sorted(texts):
        h.update(name.encode())
        for t in texts[name]:
            h.update(hashlib.sha256(t.encode()).digest())
    h.update(np.asarray(scores, dtype=np.float64).tobytes())
    return "sha256:" + h.hexdigest()[:32]


# -- cheap text statistics ---------------------------------------------------------------------------
_REFUSAL = re.compile(r"as an ai|language model|i'm sorry|i am sorry|i cannot|i can't|i apologi[sz]e")
_LIST_ITEM = re.compile(r"\s*([-*\u2022]|\d+[.)])\s")
_NUMBERED = re.compile(r"(?m)^\s*\d+[.)]")
_SENTENCE_END = re.compile(r"[.!?](\s|$)")
_PARAGRAPH = re.compile(r"\n\s*\n")
_WRAP_UP = re.compile(r"\b(in summary|in conclusion|overall|to summarize)\b")
_EXAMPLE = re.compile(r"\b(for example|for instance|such as|e\.g\.)\b")
_HEDGE = re.compile(r"\b(however|although|depends|note that)\b")
STAT_NAMES = ("log_lines", "list_items", "code_fence", "refusal", "distinct_words", "non_ascii", "ends_cleanly",
              "digits", "headings", "mean_word_len", "log_words_per_sentence", "paragraphs", "bold", "numbered_items",
              "sentences", "log_words", "mean_line_len", "log_max_line_len", "wrap_up", "hedge", "example")
PAIR_STAT_NAMES = ("log_length_ratio", "instruction_word_overlap", "cosine")


def text_stats(text: str) -> list[float]:
    """Surface statistics of one text (structure, refusals, repetition), in ``STAT_NAMES`` order.

    GPT-4 quality ratings follow structure (paragraphs, lists, sentences) more than raw length; these
    cheap counts carry that signal, which sentence embeddings of the first 256 tokens miss.
    """
    words = text.split()
    lines = text.splitlines()
    filled = [line for line in lines if line.strip()]
    lower = text.lower()
    n_chars = max(1, len(text))
    return [math.log1p(len(lines)), math.log1p(sum(bool(_LIST_ITEM.match(line)) for line in lines)),
            float("```" in text), float(bool(_REFUSAL.search(lower))),
            len(set(words)) / max(1, len(words)), sum(ord(c) > 127 for c in text) / n_chars,
            float(text.strip()[-1:] in ".!?)`\"'"), sum(c.isdigit() for c in text) / n_chars,
            math.log1p(sum(line.strip().startswith("#") or line.strip().endswith(":") for line in lines)),
            float(np.mean([len(w) for w in words])) if words else 0.0,
            math.log1p(len(words) / max(1, len(re.findall(r"[.!?]", text)))),
            math.log1p(len(_PARAGRAPH.findall(text))), math.log1p(text.count("**")), math.log1p(len(_NUMBERED.findall(text))),
            math.log1p(len(_SENTENCE_END.findall(text))), math.log1p(len(words)),
            float(np.mean([len(line) for line in filled])) / 100 if filled else 0.0,
            math.log1p(max((len(line) for line in filled), default=0)),
            float(bool(_WRAP_UP.search(lower))), float(bool(_HEDGE.search(lower))), float(bool(_EXAMPLE.search(lower)))]


def _word_overlap(instruction: str, response: str) -> float:
    asked = set(instruction.lower().split())
    return len(asked & set(response.lower().split())) / max(1, len(asked))


# -- the scorer --------------------------------------------------------------------------------------
class Scorer:
    """A small trained scorer that imitates a judge: ``fit`` / ``predict`` / ``save`` / ``load``.

    ``kind``: only ``"embedding"`` (MiniLM + linear head) is implemented. ``inputs``: which texts it
    reads (``["instruction"]`` for complexity, ``["instruction", "response"]`` for quality).
    ``features``: any of ``embeddings`` (one embedding per input), ``product`` (element-wise product
    of the first two inputs' embeddings), ``length`` (log characters of each input), ``stats``
    (:func:`text_stats` of the last input, the judged text; with two inputs also their length ratio, word overlap and
    embedding cosine). ``embedding_weight`` scales the standardised embedding columns (a larger
    ridge penalty on them than on the few text statistics; 1.0 = one penalty for all).
    ``imitates``: what the labels came from, e.g. ``{"judge": "quality", "prompt": ..., "model": "gpt-4"}``.
    """

    def __init__(self, kind: str = "embedding", *, inputs: Sequence[str] = ("instruction",), head: str = "ridge",
                 features: Sequence[str] = ("embeddings", "length"), alpha: float = 10.0, C: float = 1.0,
                 embed_model: str | None = None, label_range: tuple[float, float] | None = None,
                 output_range: tuple[float, float] | None = None, name: str | None = None,
                 imitates: dict[str, Any] | None = None, batch_size: int = 64, embedding_weight: float = 1.0,
                 embed_inputs: Sequence[str] | None = None):
        if kind not in KINDS:
            raise ScorerError(f"scorer kind {kind!r} is not available; implemented: {list(KINDS)} "
                              "(finetune and lm-digit are not built yet)")
        if head not in HEADS:
            raise ScorerError(f"head {head!r}: choose one of {list(HEADS)}")
        bad = [f for f in features if f not in FEATURES]
        if bad:
            raise ScorerError(f"unknown features {bad}; choose from {list(FEATURES)}")
        if "product" in features and len(inputs) < 2:
            raise ScorerError("the 'product' feature needs two inputs (e.g. instruction and response)")
        if (label_range is None) != (output_range is None):
            raise ScorerError("give both label_range and output_range (a linear map), or neither")
        self.kind = kind
        self.inputs = list(inputs)
        self.head = head
        self.features = list(features)
        self.alpha = float(alpha)
        self.C = float(C)
        self.embed_model = embed_model
        self.label_range = tuple(label_range) if label_range else None
        self.output_range = tuple(output_range) if output_range else None
        self.name = name
        self.imitates = dict(imitates or {})
        self.batch_size = batch_size
        self.embedding_weight = float(embedding_weight)
        # Which inputs get a MiniLM embedding (default: all). Embedding long responses is the slow part of
        # scoring a big pool; a quality scorer may read the response through its text statistics only.
        self.embed_inputs = list(inputs) if embed_inputs is None else list(embed_inputs)
        if not set(self.embed_inputs) <= set(self.inputs):
            raise ScorerError(f"embed_inputs {self.embed_inputs} must be among inputs {self.inputs}")
        self.weights: dict[str, np.ndarray] = {}
        self.metadata: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}

    # -- features -----------------------------------------------------------------------------------
    def embed(self, rows: Sequence[Row], cache_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
        """MiniLM embeddings of each input's texts (the slow part; reuse it across folds).

        With ``cache_dir`` (a workspace's), texts embedded before by any step are not encoded again.
        """
        from curate.embed import encode, encode_cached

        texts = input_texts(rows, self.inputs)
        if cache_dir is None:
            vectors = {name: encode(texts[name], model=self.embed_model, batch_size=self.batch_size)
                       for name in self.embed_inputs}
        else:
            vectors = {name: encode_cached(texts[name], cache_dir, model=self.embed_model, batch_size=self.batch_size,
                                           progress=len(texts[name]) > 2000)[0] for name in self.embed_inputs}
        return self.describe(texts, vectors)

    def describe(self, texts: dict[str, list[str]], embeddings: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Embeddings plus the cheap per-text measurements (lengths, text statistics, word overlap)."""
        out = dict(embeddings)
        for name in self.inputs:
            out[f"_chars_{name}"] = np.array([len(t) for t in texts[name]], dtype=np.float32)
        last = self.inputs[-1]
        out[f"_stats_{last}"] = np.array([text_stats(t) for t in texts[last]], dtype=np.float32).reshape(-1, len(STAT_NAMES))
        if len(self.inputs) >= 2:
            a, b = self.inputs[:2]
            out["_overlap"] = np.array([_word_overlap(x, z) for x, z in zip(texts[a], texts[b], strict=True)], dtype=np.float32)
        return out

    def featurize(self, rows_or_embedded: Sequence[Row] | dict[str, np.ndarray]) -> np.ndarray:
        """The feature matrix the head reads (rows, or the output of :meth:`embed`)."""
        emb = rows_or_embedded if isinstance(rows_or_embedded, dict) else self.embed(rows_or_embedded)
        return np.concatenate(self._embedding_parts(emb) + self._stat_parts(emb), axis=1).astype(np.float64)

    def _embedding_parts(self, emb: dict[str, np.ndarray]) -> list[np.ndarray]:
        parts: list[np.ndarray] = []
        if "embeddings" in self.features:
            parts += [emb[name] for name in self.embed_inputs]
        if "product" in self.features:
            parts.append(emb[self.inputs[0]] * emb[self.inputs[1]])
        return parts

    def _stat_parts(self, emb: dict[str, np.ndarray]) -> list[np.ndarray]:
        parts: list[np.ndarray] = []
        if "length" in self.features:
            parts += [np.log1p(emb[f"_chars_{name}"])[:, None] for name in self.inputs]
        if "stats" in self.features:
            parts.append(emb[f"_stats_{self.inputs[-1]}"])  # the judged text: the response when there is one
            if len(self.inputs) >= 2:
                a, b = self.inputs[:2]
                parts += [(np.log1p(emb[f"_chars_{b}"]) - np.log1p(emb[f"_chars_{a}"]))[:, None], emb["_overlap"][:, None]]
                if a in self.embed_inputs and b in self.embed_inputs:  # cosine of the two texts, when both are embedded
                    parts.append((emb[a] * emb[b]).sum(axis=1)[:, None])
        return parts

    # -- head ---------------------------------------------------------------------------------------
    def fit_features(self, X: np.ndarray, y: Sequence[float]) -> Scorer:
        """Fit the head on a feature matrix (standardised here, with this fold's mean and scale)."""
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
        n_emb = self._n_emb_from(X)
        scale[:n_emb] /= self.embedding_weight
        Z = (X - mean) / scale
        # Feature bounds seen in training: predict clips to them, so a text far outside the training data
        # (a 4,000-word list, say) cannot push a linear head past every real example.
        w: dict[str, np.ndarray] = {"feature_mean": mean, "feature_scale": scale,
                                    "feature_min": X.min(axis=0), "feature_max": X.max(axis=0)}
        if self.head == "ridge":
            from sklearn.linear_model import Ridge

            model = Ridge(alpha=self.alpha).fit(Z, y)
            w["coef"] = np.asarray(model.coef_, dtype=np.float64)[None, :]
            w["intercept"] = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))
        else:
            from sklearn.linear_model import LogisticRegression

            classes = np.unique(y)
            if classes.size > 50:
                raise ScorerError(f"ordinal head: {classes.size} distinct labels; use head='ridge' for continuous scores")
            codes = np.searchsorted(classes, y)  # class index per row; the expectation uses the values
            model = LogisticRegression(C=self.C, max_iter=2000).fit(Z, codes)
            coef, intercept = np.asarray(model.coef_), np.asarray(model.intercept_)
            if coef.shape[0] == 1:  # binary: sklearn stores one row for class 1
                coef = np.vstack([np.zeros_like(coef), coef])
                intercept = np.array([0.0, intercept[0]])
            w["coef"], w["intercept"], w["classes"] = coef, intercept, classes[np.asarray(model.classes_)].astype(np.float64)
        w["label_bounds"] = np.array([y.min(), y.max()])
        self.weights = w
        return self

    def _n_emb_from(self, X: np.ndarray) -> int:
        pair_stats = 0
        if len(self.inputs) >= 2:  # the cosine is there only when both texts are embedded
            pair_stats = len(PAIR_STAT_NAMES) - (not set(self.inputs[:2]) <= set(self.embed_inputs))
        n_stats = len(self.inputs) * ("length" in self.features) + ("stats" in self.features) * (
            len(STAT_NAMES) + pair_stats)
        return X.shape[1] - n_stats

    def predict_features_raw(self, X: np.ndarray) -> np.ndarray:
        """Predictions on the judge's own label scale (clipped to the training labels' range)."""
        if not self.weights:
            raise ScorerError("this scorer is not fitted; call fit() or Scorer.load()")
        w = self.weights
        if "feature_min" in w:
            X = np.clip(X, w["feature_min"], w["feature_max"])
        Z = (X - w["feature_mean"]) / w["feature_scale"]
        logits = Z @ w["coef"].T + w["intercept"]
        if self.head == "ridge":
            pred = logits[:, 0]
        else:
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            pred = p @ w["classes"]
        lo, hi = w["label_bounds"]
        return np.clip(pred, lo, hi)

    def to_output_scale(self, raw: np.ndarray | float) -> np.ndarray:
        """Map judge-scale values onto ``output_range`` (identity when no map is set)."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.label_range is None:
            return raw
        (a, b), (c, d) = self.label_range, self.output_range
        return np.clip(c + (raw - a) * (d - c) / (b - a), min(c, d), max(c, d))

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        return self.to_output_scale(self.predict_features_raw(X))

    # -- public API ---------------------------------------------------------------------------------
    def fit(self, rows: Sequence[Row], scores: Sequence[float]) -> Scorer:
        """Fit on rows (or texts, for a one-input scorer) and their judge scores."""
        rows = list(rows)
        scores = [float(s) for s in scores]
        if len(rows) != len(scores):
            raise ScorerError(f"{len(rows)} rows but {len(scores)} scores")
        texts = input_texts(rows, self.inputs)
        self.fit_features(self.featurize(self.embed(rows)), scores)
        self.metadata.update({"n_train": len(rows), "training_fingerprint": _fingerprint(texts, scores),
                              "label_mean": float(np.mean(scores)), "label_std": float(np.std(scores))})
        return self

    def predict(self, rows: Sequence[Row], cache_dir: str | os.PathLike | None = None) -> np.ndarray:
        """Scores for rows (on ``output_range`` when set, else the judge's scale); see :meth:`embed` for ``cache_dir``."""
        rows = list(rows)
        if not rows:
            return np.zeros(0)
        return self.predict_features(self.featurize(self.embed(rows, cache_dir=cache_dir)))

    @property
    def column(self) -> str:
        """Column name the scorer writes by default: its name, else the judge it imitates."""
        return self.name or self.imitates.get("judge") or "score"

    @property
    def fingerprint(self) -> str:
        """Hash of the config and the fitted weights: changes whenever the scorer would score differently."""
        h = hashlib.sha256(json.dumps(self.config(), sort_keys=True, default=_json_default).encode())
        for key in sorted(self.weights):
            h.update(key.encode())
            h.update(np.ascontiguousarray(self.weights[key], dtype=np.float64).tobytes())
        return "sha256:" + h.hexdigest()[:32]

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "inputs": self.inputs, "head": self.head, "features": self.features,
                "alpha": self.alpha, "C": self.C,
                "embedding_weight": self.embedding_weight, "embed_inputs": self.embed_inputs, "embed_model": self.embed_model or "all-MiniLM-L6-v2",
                "label_range": self.label_range, "output_range": self.output_range, "name": self.name,
                "imitates": self.imitates}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``scorer.json`` (config, imitated judge, training fingerprint, metrics) and ``head.safetensors``."""
        from safetensors.numpy import save_file

        if not self.weights:
            raise ScorerError("nothing to save: the scorer is not fitted")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v, dtype=np.float32 if k == "coef" else np.float64)
                   for k, v in self.weights.items()}, str(out / "head.safetensors"))
        from curate import __version__

        doc = {"format_version": FORMAT_VERSION, "curate_version": __version__, **self.config(),
               "metadata": self.metadata, "metrics": self.metrics}
        (out / "scorer.json").write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Scorer:
        """Load a saved scorer folder, or ``"complexity"``/``"quality"`` for a shipped default."""
        from safetensors.numpy import load_file

        path = Path(directory)
        if not path.exists() and str(directory) in DEFAULT_SCORERS:
            path = WEIGHTS_DIR / str(directory)
        if not (path / "scorer.json").exists() or not (path / "head.safetensors").exists():
            raise ScorerError(f"{path}: not a saved scorer (needs scorer.json and head.safetensors)")
        doc = json.loads((path / "scorer.json").read_text())
        if doc.get("format_version") != FORMAT_VERSION:
            raise ScorerError(f"{path}: scorer format {doc.get('format_version')} not supported (want {FORMAT_VERSION})")
        embed_model = doc["embed_model"] if doc["embed_model"] != "all-MiniLM-L6-v2" else None
        scorer = cls(doc["kind"], inputs=doc["inputs"], head=doc["head"], features=doc["features"],
                     alpha=doc["alpha"], C=doc["C"], embed_model=embed_model,
                     label_range=tuple(doc["label_range"]) if doc["label_range"] else None,
                     output_range=tuple(doc["output_range"]) if doc["output_range"] else None,
                     name=doc["name"], imitates=doc["imitates"], embedding_weight=doc.get("embedding_weight", 1.0),
                     embed_inputs=doc.get("embed_inputs"))
        scorer.weights = {k: np.asarray(v, dtype=np.float64) for k, v in load_file(str(path / "head.safetensors")).items()}
        scorer.metadata = doc.get("metadata", {})
        scorer.metrics = doc.get("metrics", {})
        return scorer

    def __repr__(self) -> str:
        state = "fitted" if self.weights else "unfitted"
        return (f"Scorer({self.column!r}, kind={self.kind!r}, head={self.head!r}, inputs={self.inputs}, "
                f"features={self.features}, {state})")

    def _repr_html_(self) -> str:
        held = self.metrics.get("holdout", {}).get("scorer", {})
        figs = ", ".join(f"{k} {v:.3f}" for k, v in held.items() if isinstance(v, float))
        return (f"<div><b>Scorer {html.escape(self.column)}</b> ({html.escape(self.kind)}/{html.escape(self.head)}, "
                f"reads {html.escape(', '.join(self.inputs))}; imitates {html.escape(json.dumps(self.imitates))})"
                f"<br>held-out: {html.escape(figs or 'not evaluated')}</div>")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def load_default(name: str) -> Scorer:
    """A shipped default scorer (``complexity`` or ``quality``), on DEITA's 1-6 scale."""
    if name not in DEFAULT_SCORERS:
        raise ScorerError(f"no default scorer {name!r}; shipped: {list(DEFAULT_SCORERS)}")
    return Scorer.load(WEIGHTS_DIR / name)


# -- agreement metrics -------------------------------------------------------------------------------
def pairwise_accuracy(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Share of pairs with different labels that the predictions order the same way (prediction ties 1/2)."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    dt = np.sign(t[:, None] - t[None, :])
    dp = np.sign(p[:, None] - p[None, :])
    mask = dt > 0
    n = int(mask.sum())
    if n == 0:
        return float("nan")
    agree = (dp[mask] > 0).sum() + 0.5 * (dp[mask] == 0).sum()
    return float(agree / n)


def calibration(y_true: Sequence[float], y_pred: Sequence[float], bins: int = 10) -> list[dict[str, float]]:
    """Calibration plot data: quantile bins of the prediction, mean prediction vs mean label per bin."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    out = []
    for chunk in np.array_split(order, min(bins, len(order))):
        if len(chunk):
            out.append({"n": int(len(chunk)), "mean_predicted": float(p[chunk].mean()),
                        "mean_label": float(t[chunk].mean())})
    return out


def agreement(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    """Spearman, Kendall (tau-b), MAE and pairwise accuracy of predictions against judge labels."""
    from scipy.stats import kendalltau, spearmanr

    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    constant = np.ptp(p) == 0 or np.ptp(t) == 0
    return {"spearman": float("nan") if constant else float(spearmanr(t, p).statistic),
            "kendall": float("nan") if constant else float(kendalltau(t, p).statistic),
            "mae": float(np.mean(np.abs(t - p))), "pairwise_accuracy": pairwise_accuracy(t, p), "n": int(len(t))}


def _length_baseline(chars_train: np.ndarray, y_train: np.ndarray, chars_test: np.ndarray) -> np.ndarray:
    """Length baseline: least squares of the label on log length (fitted in-fold so its MAE is fair)."""
    x = np.log1p(chars_train)
    a, b = np.polyfit(x, y_train, 1) if np.ptp(x) > 0 else (0.0, float(np.mean(y_train)))
    return np.clip(a * np.log1p(chars_test) + b, y_train.min(), y_train.max())


@dataclass
class Evaluation:
    """Agreement of a scorer configuration with judge labels: K-fold and held-out, with baselines."""

    kfold: dict[str, dict[str, float]]
    holdout: dict[str, dict[str, float]]
    calibration: list[dict[str, float]]
    n_train: int
    n_holdout: int
    k: int
    length_input: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kfold": self.kfold, "holdout": self.holdout, "calibration": self.calibration,
                "n_train": self.n_train, "n_holdout": self.n_holdout, "k": self.k,
                "length_baseline_reads": self.length_input, **self.extra}

    def table(self, title: str = "agreement with the judge"):
        """A rich table: scorer beside the length and random baselines, K-fold and held-out."""
        from rich.table import Table

        table = Table(title=title)
        for head in ("predictor", "split", "spearman", "kendall", "MAE", "pairwise acc", "n"):
            table.add_column(head, justify="right" if head not in ("predictor", "split") else "left")
        for split, res in ((f"{self.k}-fold", self.kfold), ("held-out", self.holdout)):
            for who, m in res.items():
                table.add_row(who, split, *(f"{m[k]:.3f}" for k in ("spearman", "kendall", "mae", "pairwise_accuracy")),
                              f"{m['n']:,}")
        return table

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{who}</td><td>{split}</td>" + "".join(f"<td>{m[k]:.3f}</td>" for k in
                                                          ("spearman", "kendall", "mae", "pairwise_accuracy")) + "</tr>"
            for split, res in (("k-fold", self.kfold), ("held-out", self.holdout)) for who, m in res.items())
        return ("<table><tr><th>predictor</th><th>split</th><th>spearman</th><th>kendall</th><th>MAE</th>"
                f"<th>pairwise acc</th></tr>{rows}</table>")


def _mean_metrics(items: list[dict[str, float]]) -> dict[str, float]:
    out = {k: float(np.nanmean([m[k] for m in items])) for k in ("spearman", "kendall", "mae", "pairwise_accuracy")}
    out["spearman_std"] = float(np.nanstd([m["spearman"] for m in items]))
    out["n"] = int(sum(m["n"] for m in items))
    return out


def _group_split(n: int, groups: Sequence[Any] | None, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = np.arange(n) if groups is None else np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1]
    uniq = np.unique(keys)
    rng.shuffle(uniq)
    test_keys = set(uniq[: max(1, int(round(holdout * len(uniq))))].tolist())
    test = np.array([k in test_keys for k in keys])
    return np.flatnonzero(~test), np.flatnonzero(test)


def evaluate_features(make_scorer: Callable[[], Scorer], X: np.ndarray, y: Sequence[float], chars: np.ndarray, *,
                      k: int = 5, holdout: float = 0.2, groups: Sequence[Any] | None = None, seed: int = 0,
                      length_input: str = "") -> Evaluation:
    """K-fold agreement on the training part and agreement on a held-out part split off first.

    ``X`` holds precomputed features (``Scorer.featurize``), ``chars`` the length the baseline reads.
    ``groups`` keeps rows of one group (e.g. the same query) on one side of every split.
    """
    from sklearn.model_selection import GroupKFold

    y = np.asarray(y, dtype=np.float64)
    chars = np.asarray(chars, dtype=np.float64)
    rng = np.random.default_rng(seed)
    train, test = _group_split(len(y), groups, holdout, seed) if holdout > 0 else (np.arange(len(y)), np.array([], int))
    g_train = np.arange(len(train)) if groups is None else np.asarray(groups, dtype=object).astype(str)[train]
    folds: dict[str, list[dict[str, float]]] = {"scorer": [], "length": [], "random": []}
    perm = rng.permutation(len(train))  # GroupKFold is deterministic: shuffle group order first
    for tr, te in GroupKFold(n_splits=k).split(perm, groups=np.asarray(g_train)[perm]):
        tr, te = train[perm[tr]], train[perm[te]]
        pred = make_scorer().fit_features(X[tr], y[tr]).predict_features_raw(X[te])
        folds["scorer"].append(agreement(y[te], pred))
        folds["length"].append(agreement(y[te], _length_baseline(chars[tr], y[tr], chars[te])))
        folds["random"].append(agreement(y[te], rng.uniform(y[tr].min(), y[tr].max(), len(te))))
    kfold = {who: _mean_metrics(ms) for who, ms in folds.items()}
    held: dict[str, dict[str, float]] = {}
    calib: list[dict[str, float]] = []
    if len(test):
        pred = make_scorer().fit_features(X[train], y[train]).predict_features_raw(X[test])
        held = {"scorer": agreement(y[test], pred),
                "length": agreement(y[test], _length_baseline(chars[train], y[train], chars[test])),
                "random": agreement(y[test], rng.uniform(y[train].min(), y[train].max(), len(test)))}
        calib = calibration(y[test], pred)
    return Evaluation(kfold=kfold, holdout=held, calibration=calib, n_train=len(train), n_holdout=len(test), k=k,
                      length_input=length_input)


def length_input(scorer: Scorer) -> str:
    """The input the length baseline measures: the response when the scorer reads one, else the instruction."""
    return "response" if "response" in scorer.inputs else scorer.inputs[-1]


def train_and_evaluate(scorer: Scorer, rows: Sequence[Row], scores: Sequence[float], *, k: int = 5,
                       holdout: float = 0.2, groups: Sequence[Any] | None = None, seed: int = 0,
                       refit_all: bool = True, embedded: dict[str, np.ndarray] | None = None) -> Evaluation:
    """Embed once, evaluate (K-fold + held-out, baselines beside), then fit ``scorer`` and store the metrics.

    The held-out part is split off before any fitting; with ``refit_all`` the final head is fitted on
    all rows (the reported figures stay the held-out ones). ``embedded``: a cached :meth:`Scorer.embed`
    result for these rows.
    """
    rows = list(rows)
    scores = np.asarray([float(s) for s in scores], dtype=np.float64)
    emb = scorer.embed(rows) if embedded is None else embedded
    X = scorer.featurize(emb)
    base = length_input(scorer)
    config = scorer.config()
    config.pop("imitates")
    config.pop("name")

    def make() -> Scorer:
        return Scorer(**{k2: v for k2, v in config.items() if k2 not in ("embed_model",)},
                      embed_model=scorer.embed_model)

    ev = evaluate_features(make, X, scores, emb[f"_chars_{base}"], k=k, holdout=holdout, groups=groups, seed=seed,
                           length_input=base)
    if refit_all or not ev.n_holdout:
        idx = np.arange(len(rows))
    else:
        idx = _group_split(len(rows), groups, holdout, seed)[0]
    scorer.fit_features(X[idx], scores[idx])
    texts = input_texts([rows[i] for i in idx], scorer.inputs)
    scorer.metadata.update({"n_train": int(len(idx)), "training_fingerprint": _fingerprint(texts, scores[idx]),
                            "label_mean": float(scores[idx].mean()), "label_std": float(scores[idx].std()),
                            "refit_on_all_rows": bool(refit_all)})
    scorer.metrics = ev.to_dict()
    return ev


# -- drop-in judge -----------------------------------------------------------------------------------
def score_workspace(ws, scorer: Scorer | str, column: str | None = None, *, ids: Sequence[str] | None = None,
                    per_turn: bool = False) -> dict[str, Any]:
    """Score a workspace's rows with a trained scorer, writing the columns a judge writes.

    Writes ``<column>`` (on the scorer's output scale: a float from the first user turn, or with
    ``per_turn`` a list with one score per user turn) and ``<column>_failure`` (None, or why the row
    could not be scored, e.g. no response for a quality scorer; never a default score). Provenance:
    ``{"kind": "scorer", "imitates": <judge>, ...}``. Returns a summary.
    """
    from curate.pools import user_turns

    if isinstance(scorer, (str, os.PathLike)):
        scorer = Scorer.load(scorer)
    column = column or scorer.column
    ids = ws.ids if ids is None else list(ids)
    index = ws.index
    conversations = ws.conversations()
    items: list[tuple[int, int]] = []  # (row position, turn) of every text pair to score
    fields: list[dict[str, str | None]] = []
    failures: list[str | None] = []
    n_turns: list[int] = []
    for pos, rid in enumerate(ids):
        turns = user_turns(conversations[index[rid]])
        if not per_turn:
            turns = turns[:1]
        n_turns.append(len(turns))
        if not turns:
            failures.append("row has no user turn")
            continue
        problems = []
        for t, (inst, resp) in enumerate(turns):
            row = {"instruction": inst, "response": resp}
            missing = [name for name in scorer.inputs if not row.get(name)]
            if missing:
                problems.append(f"turn {t + 1} has no {' or '.join(missing)}" if per_turn else f"row has no {' or '.join(missing)}")
            items.append((pos, t))
            fields.append(row)
        failures.append(f"{'; '.join(problems)}; scorer {scorer.column!r} reads {scorer.inputs}" if problems else None)
    keep = [k for k, (pos, _) in enumerate(items) if failures[pos] is None]
    scores: dict[tuple[int, int], float] = {}
    # One predict call: the texts go through the workspace's embedding cache in one pass.
    preds = scorer.predict([fields[k] for k in keep], cache_dir=ws.cache_dir)
    for k, v in zip(keep, preds, strict=True):
        scores[items[k]] = float(v)
    values: list[Any] = []
    for pos, failure in enumerate(failures):
        if failure is not None:
            values.append(None)
        elif per_turn:
            values.append([scores[(pos, t)] for t in range(n_turns[pos])])
        else:
            values.append(scores[(pos, 0)])
    provenance = {"kind": "scorer", "imitates": scorer.imitates.get("judge", scorer.column),
                  "imitates_detail": scorer.imitates, "scorer": scorer.config(),
                  "training_fingerprint": scorer.metadata.get("training_fingerprint"),
                  "scorer_fingerprint": scorer.fingerprint,
                  "holdout_agreement": (scorer.metrics.get("holdout") or {}).get("scorer"),
                  "scale": list(scorer.output_range) if scorer.output_range else None,
                  "turns": "each user turn" if per_turn else "first user turn", "cost_usd": 0.0}
    ws.add_column(column, values, provenance, ids=ids)
    ws.add_column(f"{column}_failure", failures, {"kind": "scorer", "failures_of": column}, ids=ids)
    n_fail = sum(f is not None for f in failures)
    return {"column": column, "scored": len(ids) - n_fail, "failed": n_fail, "rows": len(ids)}


def score_with_scorer_cli(workspace: str | os.PathLike, scorer: str, column: str | None = None, console=None) -> list[dict[str, Any]]:
    """What ``curate score WS --scorer DIR|default`` does: ``default`` runs both shipped scorers."""
    from rich.console import Console

    from curate.session import Workspace

    console = console or Console()
    ws = Workspace.open(workspace)
    if scorer == "default":
        if column:
            raise ScorerError("--column names one column; with --scorer default both complexity and quality are written")
        scorers = [load_default(name) for name in DEFAULT_SCORERS]
    else:
        scorers = [Scorer.load(scorer)]
    summaries = []
    for sc in scorers:
        summary = score_workspace(ws, sc, column=column)
        summaries.append(summary)
        fails = f", {summary['failed']:,} failed (reasons in {summary['column']}_failure)" if summary["failed"] else ""
        console.print(f"{summary['column']}: scored {summary['scored']:,}/{summary['rows']:,} rows with scorer "
                      f"imitating {sc.imitates.get('judge', sc.column)}{fails}")
    return summaries


def train_scorer_cli(workspace: str | os.PathLike, target: str, out: str | os.PathLike, *, kind: str = "embedding",
                     inputs: Sequence[str] | None = None, head: str = "ridge", features: Sequence[str] | None = None,
                     k: int = 5, holdout: float = 0.2, seed: int = 0, console=None) -> Evaluation:
    """What ``curate train-scorer`` does: fit on a workspace column, print agreement, save to ``out``."""
    from rich.console import Console

    from curate.session import Workspace

    console = console or Console()
    ws = Workspace.open(workspace)
    labels = ws.column(target)
    prov = ws.columns.get(target, {})
    if inputs is None:
        inputs = ["instruction", "response"] if "quality" in target else ["instruction"]
    if features is None:
        features = ["embeddings", "product", "length"] if len(inputs) > 1 else ["embeddings", "length"]
    conversations = ws.conversations()
    rows, ys = [], []
    from curate.pools import user_turns

    for conv, y in zip(conversations, labels, strict=True):
        if y is None or isinstance(y, (list, dict, str)) or (isinstance(y, float) and math.isnan(y)):
            continue
        turns = user_turns(conv)
        if not turns or ("response" in inputs and not turns[0][1]):
            continue
        rows.append({"instruction": turns[0][0], "response": turns[0][1]})
        ys.append(float(y))
    if len(rows) < 2 * k:
        raise ScorerError(f"column {target!r} has {len(rows)} usable numeric labels; need at least {2 * k}")
    imitates = {"judge": prov.get("judge", target), "column": target,
                **{key: prov[key] for key in ("prompt", "prompt_fingerprint", "model", "label_set") if key in prov}}
    scorer = Scorer(kind, inputs=inputs, head=head, features=features, name=target, imitates=imitates)
    ev = train_and_evaluate(scorer, rows, ys, k=k, holdout=holdout, seed=seed,
                            groups=[r["instruction"] for r in rows], embedded=scorer.embed(rows, cache_dir=ws.cache_dir))
    console.print(ev.table(f"scorer for {target!r} ({len(rows):,} labelled rows)"))
    if ev.calibration:
        bins = ", ".join(f"{c['mean_predicted']:.2f}->{c['mean_label']:.2f}" for c in ev.calibration)
        console.print(f"held-out calibration (mean predicted -> mean label, by prediction decile): {bins}")
    path = scorer.save(out)
    console.print(f"saved scorer to {path}")
    return ev


# -- distillation loop -------------------------------------------------------------------------------
@dataclass
class DistilReport:
    """What a distillation run spent and how well the final scorer agrees with held-out judge labels."""

    labels_spent: int
    rows_total: int
    rounds: list[dict[str, Any]]
    holdout: dict[str, float]
    column: str
    scorer: Scorer

    @property
    def fraction_spent(self) -> float:
        return self.labels_spent / self.rows_total if self.rows_total else float("nan")

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{r['round']}</td><td>{r['labelled']:,}</td><td>{r['spent']:,}</td>"
                       f"<td>{r.get('spearman', float('nan')):.3f}</td><td>{r.get('mae', float('nan')):.3f}</td></tr>"
                       for r in self.rounds)
        return (f"<div><b>Distillation of {html.escape(self.column)}</b>: {self.labels_spent:,} of "
                f"{self.rows_total:,} rows judged ({self.fraction_spent:.1%})<table><tr><th>round</th>"
                f"<th>trained on</th><th>labels spent</th><th>held-out spearman</th><th>MAE</th></tr>{rows}</table></div>")

    def __repr__(self) -> str:
        return (f"DistilReport({self.labels_spent:,}/{self.rows_total:,} rows judged ({self.fraction_spent:.1%}), "
                f"held-out spearman {self.holdout.get('spearman', float('nan')):.3f})")


def _bootstrap_std(scorer: Scorer, X: np.ndarray, y: np.ndarray, X_pred: np.ndarray, n_models: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Disagreement of a small bootstrap ensemble of heads: the per-row std of their predictions."""
    preds = []
    for _ in range(n_models):
        idx = rng.integers(0, len(y), len(y))
        if np.unique(y[idx]).size < 2:
            continue
        preds.append(Scorer(**{k: v for k, v in scorer.config().items() if k != "embed_model"},
                            embed_model=scorer.embed_model).fit_features(X[idx], y[idx]).predict_features_raw(X_pred))
    if len(preds) < 2:  # no disagreement to measure: say so rather than rank every row as certain
        raise ScorerError(f"distil: only {len(preds)} of {n_models} bootstrap heads could be fitted "
                          "(the labels so far hardly vary); label more rows at random first (larger n)")
    return np.std(preds, axis=0)


NO_REASON = "no reason given"
TOP_REASONS, REASON_CHARS = 3, 160


def label_failure(value: Any) -> str | None:
    """Why ``value`` is not a label (None/NaN, a reason string, or a failure dict), or None when it is a number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_REASON
    if isinstance(value, str):
        return value.strip() or NO_REASON
    if isinstance(value, dict):
        return str(value.get("reason") or value)
    return None


def top_reasons(reasons: Sequence[str], top: int = TOP_REASONS) -> str:
    """The ``top`` most common reasons, one line: ``"12 x timeout; 3 x no digit in output; ..."``."""
    from collections import Counter

    counts = Counter(" ".join(r.split())[:REASON_CHARS] for r in reasons)
    text = "; ".join(f"{c} x {r}" for r, c in counts.most_common(top))
    return text + ("; ..." if len(counts) > top else "")


def distil(ws, label_fn: Callable[[list[str]], list[float | None]], *, scorer: Scorer | None = None, n: int = 200,
           rounds: int = 1, uncertain_k: int = 50, holdout_n: int = 100, column: str | None = None,
           n_bootstrap: int = 8, seed: int = 0, write: bool = True) -> DistilReport:
    """Distil a judge into a scorer: judge a random sample, train, predict the rest, refine where unsure.

    ``label_fn(row_ids) -> list[float | None]`` is any labeller (a judge, an existing column). A failed
    label is None or NaN, or its reason: a string, or a dict with ``"reason"`` (a judge's failure record);
    failed labels are left out of training, and when every label fails :class:`ScorerError` says so with
    the most common reasons. Steps: label ``holdout_n`` random rows for evaluation
    only; label ``n`` random rows; fit; then ``rounds`` times send the ``uncertain_k`` rows where a
    bootstrap ensemble of heads disagrees most to the labeller and refit. With ``write`` the final
    scorer's predictions for every row (judged ones too, so the column has one scale) go to ``column``.
    """
    from curate.pools import user_turns

    scorer = scorer or Scorer(inputs=["instruction"])
    column = column or scorer.column
    rng = np.random.default_rng(seed)
    ids = list(ws.ids)
    conversations = ws.conversations()
    rows: list[dict[str, str | None]] = []
    usable: list[int] = []
    for i, conv in enumerate(conversations):
        turns = user_turns(conv)
        row = {"instruction": turns[0][0], "response": turns[0][1]} if turns else {}
        rows.append(row)
        if all(row.get(name) for name in scorer.inputs):
            usable.append(i)
    if holdout_n + n >= len(usable):
        raise ScorerError(f"distil: {len(usable)} usable rows, fewer than holdout_n + n = {holdout_n + n}; "
                          "judge them all instead")
    emb = scorer.embed([rows[i] for i in usable], cache_dir=ws.cache_dir)  # texts embedded by earlier steps are reused
    X = scorer.featurize(emb)
    order = rng.permutation(len(usable))
    held_pos, pool_pos = order[:holdout_n], order[holdout_n:]
    labels: dict[int, float] = {}
    failed: dict[int, str] = {}  # position -> reason
    spent = 0

    def judge(positions: Sequence[int]) -> None:
        nonlocal spent
        positions = list(positions)
        got = label_fn([ids[usable[p]] for p in positions])
        if len(got) != len(positions):
            raise ScorerError(f"label_fn returned {len(got)} labels for {len(positions)} rows")
        spent += len(positions)
        for p, v in zip(positions, got, strict=True):
            reason = label_failure(v)
            if reason is None:
                labels[p] = float(v)
            else:
                failed[p] = reason

    judge(held_pos)
    held_labels = dict(labels)  # evaluation only: never trained on
    labels.clear()
    judge(pool_pos[:n])
    if not labels:  # nothing to train on: say why instead of failing on an empty training set
        asked = pool_pos[:n].tolist()
        scope = f"all {len(asked)} training labels failed ({len(held_labels)} held-out labels did not)"
        if not held_labels:
            asked = held_pos.tolist() + asked
            scope = f"all {len(asked)} labels failed"
        raise ScorerError(f"distil: {scope}: {top_reasons([failed[p] for p in asked])}")
    history: list[dict[str, Any]] = []
    held_keys = np.array(sorted(held_labels))

    def fit_and_measure(round_no: int, added: int) -> None:
        train = np.array(sorted(labels))
        y = np.array([labels[p] for p in train])
        scorer.fit_features(X[train], y)
        m = agreement([held_labels[p] for p in held_keys], scorer.predict_features_raw(X[held_keys])) \
            if len(held_keys) >= 3 else {}
        history.append({"round": round_no, "labelled": int(len(train)), "added": added, "spent": spent,
                        "label_failures": len(failed), **m})

    fit_and_measure(0, min(n, len(pool_pos)))
    for r in range(1, rounds + 1):
        if uncertain_k <= 0:
            break
        candidates = np.array([p for p in pool_pos if p not in labels and p not in failed])
        if not len(candidates):
            break
        train = np.array(sorted(labels))
        std = _bootstrap_std(scorer, X[train], np.array([labels[p] for p in train]), X[candidates], n_bootstrap, rng)
        pick = candidates[np.argsort(-std, kind="stable")[:uncertain_k]]
        judge(pick)
        fit_and_measure(r, len(pick))
    train = np.array(sorted(labels))
    texts = input_texts([rows[usable[p]] for p in train], scorer.inputs)
    scorer.metadata.update({"n_train": int(len(train)), "distilled": True,
                            "training_fingerprint": _fingerprint(texts, [labels[p] for p in train])})
    holdout = history[-1] if history else {}
    holdout = {k: v for k, v in holdout.items() if k in ("spearman", "kendall", "mae", "pairwise_accuracy", "n")}
    scorer.metrics = {"distil": history, "holdout": {"scorer": holdout}, "labels_spent": spent,
                      "rows_total": len(ids)}
    if write:
        values: list[float | None] = [None] * len(ids)
        failures: list[str | None] = ["row lacks a text the scorer reads"] * len(ids)
        preds = scorer.predict_features(X)
        for pos, i in enumerate(usable):
            values[i] = float(preds[pos])
            failures[i] = None
        ws.add_column(column, values, {"kind": "scorer", "imitates": scorer.imitates.get("judge", column),
                                       "distilled": True, "labels_spent": spent, "rows_total": len(ids),
                                       "holdout_agreement": holdout, "scorer": scorer.config()})
        ws.add_column(f"{column}_failure", failures, {"kind": "scorer", "failures_of": column})
    return DistilReport(labels_spent=spent, rows_total=len(ids), rounds=history, holdout=holdout, column=column,
                        scorer=scorer)


def _column_failure_text(failure: Any) -> str | None:
    """The reason in a ``<column>_failure`` cell (a string, a dict with "reason", or per-turn list of those)."""
    if isinstance(failure, list):
        return next((t for t in map(_column_failure_text, failure) if t), None)
    if isinstance(failure, dict):
        return str(failure.get("reason") or "") or None
    return str(failure) if failure else None


def distil_cli(workspace: str | os.PathLike, label_column: str, *, n: int, rounds: int, uncertain_k: int,
               holdout_n: int, column: str | None = None, inputs: Sequence[str] | None = None,
               out: str | os.PathLike | None = None, seed: int = 0, console=None) -> DistilReport:
    """What ``curate distil`` does with an existing label column as the labeller (the judge engine plugs in
    through :func:`distil`'s ``label_fn``): only the rows the loop asks for are read from the column."""
    from rich.console import Console
    from rich.table import Table

    from curate.session import Workspace

    console = console or Console()
    ws = Workspace.open(workspace)
    prov = ws.columns.get(label_column, {})
    if inputs is None:
        inputs = ["instruction", "response"] if "quality" in label_column else ["instruction"]
    features = ["embeddings", "length", "stats"]
    name = column or f"{label_column}_distilled"
    scorer = Scorer(inputs=inputs, features=features, name=name,
                    imitates={"judge": prov.get("judge", label_column), "column": label_column})

    failure_column = f"{label_column}_failure"

    def label_fn(ids: list[str]) -> list[float | str]:
        values = ws.column(label_column, ids)
        failures = ws.column(failure_column, ids) if ws.has_column(failure_column) else [None] * len(ids)
        return [float(v) if v is not None and not isinstance(v, (list, dict, str)) else
                _column_failure_text(f) or (f"{label_column!r} holds per-turn scores; distil needs one number"
                                            if isinstance(v, list) else f"no value in column {label_column!r}")
                for v, f in zip(values, failures, strict=True)]

    report = distil(ws, label_fn, scorer=scorer, n=n, rounds=rounds, uncertain_k=uncertain_k, holdout_n=holdout_n,
                    column=name, seed=seed)
    table = Table(title=f"distilling {label_column!r} into {name!r}: {report.labels_spent:,} of "
                        f"{report.rows_total:,} rows labelled ({report.fraction_spent:.1%})")
    for head in ("round", "trained on", "labels spent", "held-out spearman", "kendall", "MAE", "pairwise acc"):
        table.add_column(head)
    for r in report.rounds:
        table.add_row(str(r["round"]), f"{r['labelled']:,}", f"{r['spent']:,}",
                      *(f"{r.get(k, float('nan')):.3f}" for k in ("spearman", "kendall", "mae", "pairwise_accuracy")))
    console.print(table)
    if out:
        console.print(f"saved scorer to {report.scorer.save(out)}")
    return report
