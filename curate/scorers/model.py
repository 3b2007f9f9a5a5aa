"""A small trained scorer that imitates an LLM judge: ``fit`` / ``predict`` / ``save`` / ``load``, and a Step.

A :class:`Scorer` reads one or two texts of a turn (``reads``: the instruction, and for quality also the response),
turns them into features (:mod:`curate.scorers.features`) and maps them to a score with a linear head
(:mod:`curate.scorers.head`) fitted on judge labels. It is a Step (see :mod:`curate.storage.step`):
``ws.apply(scorer)`` scores every turn of every row, with turn granularity and DEITA's ``sum`` reducer, exactly as an
LLM judge's column. Output scale: a scorer may map its judge's label range linearly onto another range
(``label_range`` -> ``output_range``); the shipped defaults map onto DEITA's 1-6 scale so ``complexity * quality``
works."""

from __future__ import annotations

import contextvars
import copy
import hashlib
import html
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import curate.scorers.saved as saved
from curate.codes import Failure, FailureCode
from curate.defaults import EMBED, SCORER
from curate.errors import CurateWarning, ScorerError, ScorerFolderError
from curate.scorers.columns import check_scorer_column
from curate.scorers.defaults import DEFAULT_SCORERS, WEIGHTS_DIR
from curate.scorers.features import (
    FEATURES,
    INPUTS,
    Row,
    column_values,
    feature_matrix,
    input_texts,
    label_values,
    measure_texts,
    missing_inputs,
    n_stat_columns,
    training_fingerprint,
    turn_number,
    with_columns,
)
from curate.scorers.head import HEADS, OUTPUT_MAP, check_saved_head, fit_head, predict_head
from curate.scorers.metrics import figures_text, imitates_text
from curate.scorers.overrides import OlderSignatures
from curate.storage.columns import column_names
from curate.storage.step import RowInput, RowProgress, StepContext, StepOutput, add_counts, turns_replied_by

# Whether this run's row bar is shown (per context: runs in threads): the encoding then shows as its stage, however few
ROW_BAR_SHOWN: contextvars.ContextVar[bool] = contextvars.ContextVar("scorer_row_bar_shown", default=False)
KINDS = saved.KINDS  # scorer.json "kind" -> its class; curate.scorers.finetuned adds "cross-encoder"
DEFAULT_EMBED_MODEL = EMBED.model  # recorded by name in scorer.json, so a changed default cannot go unnoticed


class Scorer(OlderSignatures):
    """A small trained scorer that imitates a judge (MiniLM embeddings + a linear head).

    ``reads``: which texts of a turn it reads (``["instruction"]`` for complexity,
    ``["instruction", "response"]`` for quality). ``features``: any of ``embeddings`` (one embedding per
    input in ``embed_inputs``), ``product`` (element-wise product of the first two inputs' embeddings),
    ``length`` (log characters of each input), ``stats`` (:func:`~curate.scorers.features.text_stats`
    of the last input, the judged text; with two inputs also their length ratio, word overlap and
    embedding cosine), ``requirements`` (:func:`~curate.scorers.features.requirement_stats` of the last
    input: requirement words, clause marks, numbers). ``embedding_weight`` scales the standardised embedding columns (a larger ridge
    penalty on them than on the few text statistics; 1.0 = one penalty for all). ``embed_inputs``: which
    inputs get a MiniLM embedding (default all; embedding long responses is the slow part of scoring a
    big pool, so a quality scorer may read the response through its statistics only).
    ``imitates``: what the labels came from, e.g. ``{"judge": "quality", "prompt": ..., "model": "gpt-4"}``.
    ``columns``: numeric workspace columns read per turn as more features (e.g. the token signals ``ifd``,
    ``ifd_loss_conditioned``, ``ifd_loss_alone`` of ``curate signal``); they are the step's ``inputs``, so
    ``ws.apply`` hands them over, recomputes the scores when they change, and a turn without a value in one of
    them gets a failure. ``fit``/``predict`` then take dict rows that carry them. As a Step it writes column
    :attr:`column` (its name, else the judge it imitates), one score per turn."""

    granularity, reducer = "turn", "sum"  # DEITA: a row's score is the sum over its turns
    inputs: tuple[str, ...] = ()  # no pool or derived columns: it reads the conversation's turns (``reads``)
    response_column: str | None = None  # set by reading_replies: the replies come from this derived column
    output_map = OUTPUT_MAP  # the version of the map onto the scale (keys the fingerprint: stored scores recompute)
    rows_per_call = EMBED.rows_per_call  # each row is scored on its own: ws.apply hands over this many at a time

    def __init__(self, *, reads: Sequence[str] = ("instruction",), head: str = "ridge",
                 features: Sequence[str] = ("embeddings", "length"), alpha: float = SCORER.ridge_alpha,
                 C: float = SCORER.ordinal_C, embed_model: str | None = None,
                 label_range: tuple[float, float] | None = None, output_range: tuple[float, float] | None = None,
                 name: str | None = None, imitates: dict[str, Any] | None = None, batch_size: int = EMBED.batch_size,
                 embedding_weight: float = SCORER.embedding_weight, embed_inputs: Sequence[str] | None = None, columns: str | Sequence[str] = ()):
        if head not in HEADS:
            raise ScorerError(f"head {head!r}: choose one of {list(HEADS)}")
        bad = [f for f in features if f not in FEATURES]
        if bad:
            raise ScorerError(f"unknown features {bad}; choose from {list(FEATURES)}")
        unknown = [r for r in reads if r not in INPUTS]
        if unknown or not reads:
            raise ScorerError(f"a scorer reads some of {list(INPUTS)}; got {list(reads)}")
        if "product" in features and len(reads) < 2:
            raise ScorerError("the 'product' feature needs two inputs (e.g. instruction and response)")
        if (label_range is None) != (output_range is None):
            raise ScorerError("give both label_range and output_range (a linear map), or neither")
        self.reads = list(reads)
        self.head = head
        self.features = list(features)
        self.alpha, self.C = float(alpha), float(C)
        self.embed_model = embed_model
        self.label_range = tuple(label_range) if label_range else None
        self.output_range = tuple(output_range) if output_range else None
        self.name = name
        self.imitates = dict(imitates or {})
        self.batch_size = batch_size
        self.embedding_weight = float(embedding_weight)
        self.embed_inputs = list(reads) if embed_inputs is None else list(embed_inputs)
        if not set(self.embed_inputs) <= set(self.reads):
            raise ScorerError(f"embed_inputs {self.embed_inputs} must be among reads {self.reads}")
        self.columns = column_names(columns)
        if len(set(self.columns)) != len(self.columns) or not all(isinstance(c, str) and c for c in self.columns):
            raise ScorerError(f"columns must be distinct column names; got {self.columns}")
        self.inputs = tuple(self.columns)  # the Step's declared inputs: ws.apply reads them for every row
        self.weights: dict[str, np.ndarray] = {}
        self.metadata: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}

    # -- features -----------------------------------------------------------------------------------
    def embed(self, rows: Sequence[Row], cache_dir: str | os.PathLike | None = None,
              on_rows=None, cache_use: dict[str, int] | None = None) -> dict[str, np.ndarray]:
        """MiniLM embeddings of each input's texts plus the cheap measurements (reuse it across folds). With
        ``cache_dir`` (a workspace's), texts embedded before by any step are not encoded again. ``on_rows(k)``:
        progress, called as the statistics of ``k`` more rows are done. ``cache_use``: the caller's counts of this
        call's cache hits and encodings (:func:`~curate.storage.step.add_counts`)."""
        from curate.embed import encode, encode_cached

        texts = input_texts(rows, self.reads)
        if cache_dir is None:
            vectors = {name: encode(texts[name], model=self.embed_model, batch_size=self.batch_size)
                       for name in self.embed_inputs}
        else:
            vectors: dict[str, np.ndarray] = {}
            for name in self.embed_inputs:  # counted: a re-run after a kill reads what the killed one encoded
                vectors[name], encoded, _ = encode_cached(texts[name], cache_dir, model=self.embed_model,
                                                          batch_size=self.batch_size,
                                                          progress=len(texts[name]) > 2000 or ROW_BAR_SHOWN.get())
                add_counts(cache_use, texts_from_embedding_cache=len(set(texts[name])) - encoded,
                           texts_encoded=encoded)
        measured = self.measure(texts, vectors, on_rows=on_rows)
        if self.columns:
            measured["_columns"] = column_values(rows, self.columns)
        return measured

    def measure(self, texts: dict[str, list[str]], embeddings: dict[str, np.ndarray],
                on_rows=None) -> dict[str, np.ndarray]:
        """Embeddings plus lengths, text statistics and word overlap (see :func:`features.measure_texts`)."""
        return measure_texts(texts, embeddings, self.reads, on_rows=on_rows, features=self.features)

    def featurize(self, rows_or_embedded: Sequence[Row] | dict[str, np.ndarray]) -> np.ndarray:
        """The feature matrix the head reads (rows, or the output of :meth:`embed`)."""
        emb = rows_or_embedded if isinstance(rows_or_embedded, dict) else self.embed(rows_or_embedded)
        return feature_matrix(emb, self.reads, self.embed_inputs, self.features)

    # -- head ---------------------------------------------------------------------------------------
    def fit_features(self, X: np.ndarray, y: Sequence[float] | np.ndarray, pairs: np.ndarray | None = None) -> Scorer:
        """Fit the head on a feature matrix (standardised by these rows); ``pairs``: see :func:`head.fit_head`."""
        n_emb = X.shape[1] - n_stat_columns(self.reads, self.embed_inputs, self.features, len(self.columns))
        self.weights = fit_head(X, y, head=self.head, alpha=self.alpha, C=self.C, n_embedding_columns=n_emb,
                                embedding_weight=self.embedding_weight, pairs=pairs)
        return self

    def predict_features_raw(self, X: np.ndarray) -> np.ndarray:
        """Predictions on the judge's own label scale (inside the training labels' range, :func:`head.soft_clip`)."""
        return predict_head(self.weights, X, self.head)

    def to_output_scale(self, raw: np.ndarray | float) -> np.ndarray:
        """Map judge-scale values onto ``output_range`` (identity when no map is set)."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.label_range is None:
            return raw
        (a, b), (c, d) = self.label_range, self.output_range
        return np.clip(c + (raw - a) * (d - c) / (b - a), min(c, d), max(c, d))

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        """Predictions for feature rows ``X`` on the output scale (``output_range`` when set, else the judge's)."""
        return self.to_output_scale(self.predict_features_raw(X))

    def fresh(self) -> Scorer:
        """An unfitted scorer with this configuration (for folds, bootstrap heads)."""
        cfg = self.config()
        return Scorer(**{k: v for k, v in cfg.items() if k != "embed_model"}, embed_model=self.embed_model,
                      batch_size=self.batch_size)

    # -- public API ---------------------------------------------------------------------------------
    def fit(self, rows: Sequence[Row] | Any, scores: Sequence[float] | np.ndarray | None = None) -> Scorer:
        """Fit on rows (or texts, for a one-input scorer) and their judge scores. Without ``scores`` the rows are label
        records with a ``score`` column: a label set such as ``ws.labels("evol_complexity")`` (``text`` + ``score``;
        quality labels add ``instruction``, and ``text`` is then the response) or a list of dicts with
        ``instruction`` (+ ``response``) and ``score``."""
        rows = list(rows)
        scores = label_values(rows, scores)
        emb = self.embed(rows)
        self.fit_features(self.featurize(emb), scores)
        texts = input_texts(rows, self.reads)
        self.metadata.update({"n_train": len(rows), "training_fingerprint": training_fingerprint(texts, scores),
                              "label_mean": float(np.mean(scores)), "label_std": float(np.std(scores))})
        return self

    def predict(self, rows: Sequence[Row], cache_dir: str | os.PathLike | None = None, on_rows=None,
                cache_use: dict[str, int] | None = None) -> np.ndarray:
        """Scores for rows, one per row (each one turn; see :func:`features.to_turn`), on ``output_range``
        when set, else the judge's scale; see :meth:`embed` for ``cache_dir``, ``on_rows`` and ``cache_use``."""
        rows = list(rows)
        if not rows:
            return np.zeros(0)
        embedded = self.embed(rows, cache_dir=cache_dir, on_rows=on_rows, cache_use=cache_use)
        return self.predict_features(self.featurize(embedded))

    # -- the Step -----------------------------------------------------------------------------------
    def named(self, column: str) -> Scorer:
        """The same scorer writing column ``column`` (a scorer writes the column of its name)."""
        scorer = copy.copy(self)
        scorer.name = column
        return scorer

    def reading_replies(self, response_column: str, name: str | None = None) -> Scorer:
        """This scorer reading each turn's reply from the derived turn column ``response_column`` (a model's own
        answers, MoDS) instead of the pool's; it writes ``name`` (default ``<response_column>_<its column>``)."""
        if "response" not in self.reads:
            raise ScorerError(f"scorer {self.column!r} reads {self.reads}, no response: it cannot judge other replies")
        scorer = copy.copy(self)
        scorer.name = name or f"{response_column}_{self.column}"
        if response_column == scorer.column:
            raise ScorerError(f"scorer {scorer.column!r} cannot read its replies from the column it writes")
        scorer.response_column = response_column
        scorer.inputs = tuple(dict.fromkeys((*self.inputs, response_column)))
        return scorer

    @property
    def column(self) -> str:
        """Column the scorer writes: its name, else the judge it imitates."""
        return self.name or self.imitates.get("judge") or "score"

    def fingerprint(self) -> str:
        """Hash of the config and the fitted weights: changes whenever the scorer would score differently."""
        h = hashlib.sha256(json.dumps(self.config(), sort_keys=True, default=saved.json_default).encode())
        h.update(self.output_map.encode())  # the code that maps the model's output onto the scale
        if self.response_column:
            h.update(f"|replies={self.response_column}".encode())
        for key in sorted(self.weights):
            h.update(key.encode())
            h.update(np.ascontiguousarray(self.weights[key], dtype=np.float64).tobytes())
        return "sha256:" + h.hexdigest()[:32]

    def describe(self) -> dict[str, Any]:
        """Provenance: a scorer, which judge (and labels) it imitates, its held-out agreement."""
        out = {"kind": "scorer", "imitates": self.imitates.get("judge", self.column), "imitates_detail": self.imitates,
               "reads": self.reads, "scorer": self.config(),
               "scale": list(self.output_range) if self.output_range else None,
               "training_fingerprint": self.metadata.get("training_fingerprint"),
               "labels": self.metadata.get("n_train"),
               "holdout_agreement": (self.metrics.get("holdout") or {}).get("scorer"), "cost_usd": 0.0}
        out.update({"response_column": self.response_column} if self.response_column else {})
        if self.metadata.get("judge_scale"):  # the judge's scale it was trained on, and how it was chosen
            out["judge_scale"] = self.metadata["judge_scale"]
        if self.metadata.get("distilled"):
            out.update({"distilled": True, "labels_spent": self.metrics.get("labels_spent"),
                        "rows_total": self.metrics.get("rows_total")})
        return out

    def check_column(self, ws: Any) -> None:
        """Refuse to write over labels (``ws.apply`` calls this before running): see :func:`check_scorer_column`."""
        check_scorer_column(ws, self.column)
        from curate.scorers.labels_read import labels_changed

        if changed := labels_changed(ws, self.metadata):  # the CLI prints it in its own words
            warnings.warn(CurateWarning(f"scorer {self.column!r}: {changed}"), stacklevel=2)

    def run_cache_dir(self, ctx: StepContext) -> Path | None:
        """The cache folder ``run`` hands ``predict`` (the embedding cache: a Ray actor's batch fills it too)."""
        return ctx.cache_dir

    def run(self, rows: Sequence[RowInput], ctx: StepContext) -> StepOutput:
        """Score every turn of every row; a turn without a text it reads gets a failure, never a score."""
        values: list[list[float | None] | None] = []
        failures: list[list[Failure]] = []
        todo, where = [], []
        for i, row in enumerate(rows):
            fails: list[Failure] = []
            if not row.turns:
                values.append(None)
                fails.append(Failure(FailureCode.NO_USER_TURN, "the row has no user turn"))
            else:
                values.append([None] * len(row.turns))
                for t, turn in enumerate(turns_replied_by(row, self.response_column)):
                    missing = missing_inputs(turn, self.reads)
                    numbers = {name: turn_number(row.columns.get(name), t) for name in self.columns}
                    absent = [name for name, v in numbers.items() if v is None]
                    if missing:
                        code = FailureCode.NO_RESPONSE if "response" in missing else FailureCode.EMPTY_INPUT
                        fails.append(Failure(code, f"no {' or '.join(missing)}; scorer {self.column!r} reads "
                                                   f"{', '.join(self.reads)}", turn=t + 1))
                    elif absent:
                        fails.append(Failure(FailureCode.NO_INPUT_VALUE, f"no number in column {', '.join(absent)} "
                                             f"(see its failure column); scorer {self.column!r} reads it", turn=t + 1))
                    else:
                        todo.append(with_columns(turn, numbers))
                        where.append((i, t))
            failures.append(fails)
        progress = RowProgress([i for i, _ in where], len(rows), ctx.progress)
        cache_use: dict[str, int] = {}  # this call's own counts: one scorer may run in several threads at once
        # One predict call: every text goes through the workspace's embedding cache in one pass.
        shown = ROW_BAR_SHOWN.set(getattr(ctx.progress, "disable", True) is False)
        try:
            preds = self.predict(todo, cache_dir=self.run_cache_dir(ctx), on_rows=progress.count,
                                 cache_use=cache_use) if todo else []
        finally:
            ROW_BAR_SHOWN.reset(shown)
        for (i, t), value in zip(where, preds, strict=True):
            if math.isfinite(value):
                values[i][t] = float(value)
            else:  # broken weights, say: a failure to see, never a NaN stored as a score
                failures[i].append(Failure(FailureCode.MODEL_ERROR, f"scorer {self.column!r} computed {value} for this "
                                           f"turn, not a score", turn=t + 1))
        progress.finish()
        return StepOutput(values, failures, stats={"turns_scored": len(todo), **cache_use})

    # -- persistence --------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The settings that rebuild this scorer (saved in ``scorer.json``; part of its fingerprint)."""
        cfg = {"reads": self.reads, "head": self.head, "features": self.features, "alpha": self.alpha, "C": self.C,
               "embedding_weight": self.embedding_weight, "embed_inputs": self.embed_inputs,
               "embed_model": self.embed_model or DEFAULT_EMBED_MODEL, "label_range": self.label_range,
               "output_range": self.output_range, "name": self.name, "imitates": self.imitates}
        if self.columns:  # absent otherwise, so the fingerprints of scorers without columns stay as they were
            cfg["columns"] = self.columns
        return cfg

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``scorer.json`` (config, imitated judge, training fingerprint, metrics) and ``head.safetensors``; the
        folder is replaced whole (:func:`~curate.scorers.saved.save_scorer_folder`)."""
        if not self.weights:
            raise ScorerError("nothing to save: the scorer is not fitted")
        weights = {k: np.ascontiguousarray(v, dtype=np.float32 if k == "coef" else np.float64)
                   for k, v in self.weights.items()}
        return saved.save_scorer_folder(directory, "head.safetensors", weights, self.config(), self.metadata, self.metrics)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Scorer:
        """Load a saved scorer folder of any kind, or a shipped scorer by name (``"complexity"``, ``"quality"``...);
        one saved again while read is read again (:func:`~curate.scorers.saved.read_whole_save`). A folder that is
        missing, no saved scorer or damaged is a :class:`~curate.errors.ScorerFolderError` (the value given refused)."""
        try:
            return saved.read_whole_save(Path(directory), lambda path: cls._load_folder(path, directory))
        except ScorerFolderError:
            raise
        except ScorerError as exc:  # raised where its kind is decided (load_folder) as a ScorerError, as it reads
            raise ScorerFolderError(str(exc)) from None

    @classmethod
    def _load_folder(cls, path: Path, directory: str | os.PathLike) -> Scorer:
        shipped = str(directory) in DEFAULT_SCORERS or (WEIGHTS_DIR / str(directory)).is_dir()
        if not path.exists() and shipped:
            path = WEIGHTS_DIR / str(directory)  # a shipped scorer by name (complexity, quality, quality_ce, ...)
        elif shipped and not (path / "scorer.json").is_file():  # said 'quality: not a saved scorer; shipped: ..., quality'
            raise ScorerError(f"{directory}: the name of a shipped scorer, and of {path.absolute()}, which is read first "
                              "and holds no saved scorer (no scorer.json): rename that, or run from another folder")
        return saved.load_folder(path, cls, Scorer)

    @classmethod
    def _from_saved(cls, path: Path, doc: dict[str, Any]) -> Scorer:
        """The scorer saved in ``path``, whose ``scorer.json`` reads as ``doc`` (this kind's part of :meth:`load`)."""
        if not (path / "head.safetensors").is_file():
            raise ScorerError(f"{path}: not a saved scorer (no head.safetensors beside scorer.json)")
        embed_model = doc["embed_model"] if doc["embed_model"] != DEFAULT_EMBED_MODEL else None
        reads = doc["reads"] if "reads" in doc else doc["inputs"]  # "inputs": files saved before the Step contract
        scorer = cls(reads=reads, head=doc["head"], features=doc["features"],
                     alpha=doc["alpha"], C=doc["C"], embed_model=embed_model,
                     label_range=tuple(doc["label_range"]) if doc["label_range"] else None,
                     output_range=tuple(doc["output_range"]) if doc["output_range"] else None,
                     name=doc["name"], imitates=doc["imitates"], embedding_weight=doc.get("embedding_weight", 1.0),
                     embed_inputs=doc.get("embed_inputs"), columns=doc.get("columns", ()))
        scorer.weights = {k: np.asarray(v, dtype=np.float64) for k, v in saved.read_tensors(
            path / "head.safetensors", doc.get(saved.SAVE_ID)).items()}
        check_saved_head(scorer.weights, scorer.head, path / "head.safetensors")  # when loaded, not once all is embedded
        scorer.metadata = doc.get("metadata", {})
        scorer.metrics = doc.get("metrics", {})
        return scorer

    def __repr__(self) -> str:
        state = "fitted" if self.weights else "unfitted"
        columns = f", columns={self.columns}" if self.columns else ""
        return f"Scorer({self.column!r}, head={self.head!r}, reads={self.reads}, features={self.features}{columns}, {state})"

    def _repr_html_(self) -> str:
        figs = figures_text(self.metrics.get("holdout", {}).get("scorer", {}))  # NaN as "-" with its reason
        return (f"<div><b>Scorer {html.escape(self.column)}</b> ({html.escape(self.head)} head, "
                f"reads {html.escape(', '.join(self.reads + self.columns))}; imitates {html.escape(imitates_text(self.imitates))})"
                f"<br>held-out: {html.escape(figs or 'not evaluated')}</div>")
