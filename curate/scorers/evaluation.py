"""How well a scorer agrees with its judge: K-fold and held-out evaluation beside baselines (the metrics:
:mod:`~curate.scorers.metrics`).

Every figure stands beside two baselines: the length baseline (a least-squares fit of the label on log
length of the judged text, fitted in-fold) and random. Rows of one group (a query and all its
responses, the turns of one conversation, the variants of one Evol seed) stay on one side of every split.
"""

from __future__ import annotations

import html
import itertools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate.defaults import TRAIN_SCORER
from curate.scorers.features import Row, input_texts
from curate.scorers.folds import finite_mean, group_folds, group_split, label_spread, pairs_within, split_off
from curate.scorers.metrics import (
    METRICS,
    NO_FIGURE,
    NoFigure,
    agreement,
    calibration,
    figure,
    length_baseline,
    missing_figure_text,
    missing_figures,
    no_figure_reason,
    pair_order,
    spearman_interval,
    within_group_pairs,
)
from curate.scorers.model import Scorer, training_fingerprint


@dataclass
class Evaluation:
    """Agreement of a scorer configuration with judge labels: K-fold and held-out, with baselines.

    ``kfold`` / ``holdout``: predictor (``scorer``, ``length``, ``random``) -> metrics; the held-out scorer and
    length baseline also carry ``spearman_ci95`` (:func:`spearman_interval`), and where the held-out part holds
    several answers to one instruction every predictor carries ``pairwise_within_group`` and
    ``pairs_within_group`` (:func:`within_group_pairs`).
    """

    kfold: dict[str, dict[str, float]]
    holdout: dict[str, dict[str, Any]]
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

    def rows(self) -> list[tuple[str, str, dict[str, float]]]:
        """(predictor, split, metrics) for every figure, K-fold first; a K-fold row whose figures come from fewer
        than K folds says from how many (``5-fold (2 of 5 folds)``: its ``n`` is their rows)."""
        def kfold_split(m: dict[str, Any]) -> str:
            used = m.get("folds", self.k)  # a scorer saved before folds were counted: not said
            return f"{self.k}-fold" + (f" ({used} of {self.k} folds)" if used < self.k else "")

        return [*((who, kfold_split(m), m) for who, m in self.kfold.items()),
                *((who, "held-out", m) for who, m in self.holdout.items())]

    def missing_figure_lines(self) -> list[str]:
        """One line per split whose table holds a figure it could not compute, saying which and why."""
        lines = []
        held = missing_figure_text({who: m.get("no_figure", {}) for who, m in self.holdout.items()})
        if held:
            lines.append(f"held-out figures not computed: {held}")
        lines.extend(self._kfold_lines())
        return lines

    def _kfold_lines(self) -> list[str]:
        """Per group of predictors whose K-fold figures come from fewer than K folds: from how many, and why the
        others gave none (not fitted, no held-out label, held-out labels or predictions all equal)."""
        fitted = {"not fitted, its training part holding one label value": self.extra.get("folds_without_label_spread", 0),
                  "holding out no labelled row, only chain versions": self.extra.get("folds_without_held_out_labels", 0)}
        said: dict[tuple[int, str], list[str]] = {}  # (folds used, why the others gave none) -> predictors
        for who, m in self.kfold.items():
            used = m.get("folds", self.k)
            if used >= self.k:
                continue
            reasons = {**fitted, **{f"with {no_figure_reason(code)}": n
                                    for code, n in (m.get("folds_without_figure") or {}).items()}}
            why = "; ".join(f"{n} {reason}" for reason, n in reasons.items() if n)
            said.setdefault((used, why), []).append(who.replace("_", " "))
        return [f"{self.k}-fold figures of {', '.join(whos)} " + (f"from {used} of {self.k} folds" if used else
                                                                  "not computed: no fold gave them")
                + (f" (the others: {why})" if used else f" ({why})") for (used, why), whos in said.items()]

    def _repr_html_(self) -> str:
        def interval(m: dict[str, Any]) -> str:  # a dash where it could not be computed; none for the random baseline
            if "spearman_ci95" not in m:
                return ""
            lo, hi = (v if v is not None else float("nan") for v in m["spearman_ci95"])
            return f"{lo:.2f}..{hi:.2f}" if math.isfinite(lo) and math.isfinite(hi) else NO_FIGURE

        def within(m: dict[str, Any]) -> str:
            return f"{figure(m['pairwise_within_group'])} ({m['pairs_within_group']:,})" if "pairwise_within_group" in m else ""

        rows = "".join(f"<tr><td>{html.escape(who)}</td><td>{split}</td><td>{figure(m['spearman'])}</td><td>{interval(m)}</td>"
                       + "".join(f"<td>{figure(m[k])}</td>" for k in METRICS[1:]) + f"<td>{within(m)}</td></tr>"
                       for who, split, m in self.rows())
        why = "".join(f"<p>{html.escape(line)}</p>" for line in self.missing_figure_lines())
        return ("<table><tr><th>predictor</th><th>split</th><th>spearman</th><th>95% interval</th><th>kendall</th>"
                "<th>MAE</th><th>pairwise acc</th><th>pairs within one instruction (n)</th></tr>"
                f"{rows}</table>{why}")


def _fold_figures(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """One fold's agreement, with ``no_figure`` codes where a figure could not be computed (every figure it could
    not compute has its code: :func:`_mean_metrics` counts folds by them)."""
    m: dict[str, Any] = agreement(y_true, y_pred)
    why = {**{k: NoFigure.TOO_FEW_LABELS for k in METRICS if not np.isfinite(m[k])}, **missing_figures(y_true, y_pred)}
    if why:
        m["no_figure"] = why
    return m


def _mean_metrics(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of each metric over the folds that gave every figure; ``n``: those folds' rows, ``folds``: their
    number. A fold without one (held-out labels or predictions all equal) is left out, its MAE too, and counted by
    reason in ``folds_without_figure``: a figure of 2 small folds no longer says it came from all the rows."""
    measured = [m for m in items if "no_figure" not in m]
    out: dict[str, Any] = {k: finite_mean([m[k] for m in measured]) for k in METRICS}
    rhos = [m["spearman"] for m in measured]
    out["spearman_std"] = float(np.std(rhos)) if rhos else float("nan")
    out["n"] = int(sum(m["n"] for m in measured))
    out["folds"] = len(measured)
    unmeasured = [next(iter(m["no_figure"].values())) for m in items if "no_figure" in m]
    if unmeasured:
        out["folds_without_figure"] = {str(code): unmeasured.count(code) for code in dict.fromkeys(unmeasured)}
    return out


def _criterion_key(table: list[dict[str, float]]) -> str:
    """What :func:`choose_config` ranks candidates by: Spearman and chain order together where pairs gave both."""
    return "criterion" if all("criterion" in row for row in table) else "kfold_spearman"


def choose_config(make_scorer: Callable[[dict[str, float]], Scorer], candidates: Sequence[dict[str, float]],
                  X: np.ndarray, y: Sequence[float], *, k: int = TRAIN_SCORER.folds,
                  holdout: float = TRAIN_SCORER.holdout, groups: Sequence[Any] | None = None,
                  seed: int = TRAIN_SCORER.seed,
                  pairs: np.ndarray | None = None) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The candidate with the best mean K-fold Spearman on the training part (the held-out part of
    :func:`evaluate_features` with the same ``holdout``/``seed`` is never read), and every candidate's figure.
    With ``pairs`` the criterion is half Spearman, half the folds' pair order (as 2 x accuracy - 1)."""
    y = np.asarray(y, dtype=np.float64)
    train, _ = split_off(len(y), groups, holdout, seed)
    folds = list(group_folds(train, groups, k, np.random.default_rng(seed)))
    folds = [(tr, te) for tr, te in folds if label_spread(y[tr])]  # the others cannot be fitted: counted below
    table = []
    for cfg in candidates:
        rhos, orders, rows, without = [], [], 0, {}
        for tr, te in folds:
            pred = make_scorer(cfg).fit_features(X[tr], y[tr], pairs_within(pairs, tr, len(y))).predict_features_raw(X[te])
            scored = np.isfinite(y[te])  # a row that only enters ordered pairs has no label
            rhos.append(agreement(y[te][scored], pred[scored])["spearman"] if scored.sum() > 1 else float("nan"))
            if np.isfinite(rhos[-1]):
                rows += int(scored.sum())
            else:  # why this fold gave no Spearman, counted: a choice on 1-2 small folds is said
                why = (NoFigure.TOO_FEW_LABELS if scored.sum() < 2
                       else missing_figures(y[te][scored], pred[scored]).get("spearman", NoFigure.PREDICTIONS_ALL_EQUAL))
                without[str(why)] = without.get(str(why), 0) + 1
            held_pairs = pairs_within(pairs, te, len(y))
            if held_pairs is not None and len(held_pairs):
                orders.append(pair_order(held_pairs, pred))
        row = {**cfg, "kfold_spearman": finite_mean(rhos), "folds_with_spearman": len(rhos) - sum(without.values()),
               "kfold_spearman_rows": rows}
        if without:
            row["folds_without_spearman"] = without
        if len(folds) < k:
            row["folds_without_label_spread"] = k - len(folds)
        if orders:  # ordered pairs are a label of their own: the criterion weighs both (order as 2 x acc - 1)
            row["kfold_chain_order"] = float(np.mean(orders))
            row["criterion"] = 0.5 * np.nan_to_num(row["kfold_spearman"]) + 0.5 * (2 * row["kfold_chain_order"] - 1)
        table.append(row)
    key = _criterion_key(table)
    best = max(range(len(table)), key=lambda i: -np.inf if np.isnan(table[i][key]) else table[i][key])
    return dict(candidates[best]), table


def choose_settings(scorer: Scorer, search: dict[str, Sequence[float]], X: np.ndarray, y: Sequence[float], *,
                    k: int = TRAIN_SCORER.folds, holdout: float = TRAIN_SCORER.holdout,
                    groups: Sequence[Any] | None = None, seed: int = TRAIN_SCORER.seed,
                    pairs: np.ndarray | None = None) -> dict[str, Any]:
    """Set on ``scorer`` the head settings (every combination of ``search``) that :func:`choose_config` picks;
    returns the choice, every candidate's K-fold figure and K."""
    names = list(search)
    candidates = [dict(zip(names, values, strict=True)) for values in itertools.product(*(search[n] for n in names))]

    def configured(cfg: dict[str, float]) -> Scorer:
        sc = scorer.fresh()
        for name, value in cfg.items():
            setattr(sc, name, float(value))
        return sc

    best, table = choose_config(configured, candidates, X, y, k=k, holdout=holdout, groups=groups, seed=seed,
                                pairs=pairs)
    for name, value in best.items():
        setattr(scorer, name, float(value))
    out: dict[str, Any] = {"chosen": best, "candidates": table, "k": k}
    key = _criterion_key(table)
    if all(np.isnan(row[key]) for row in table):  # e.g. constant labels in every fold: say so
        out["undecided"] = "no fold gave a Spearman (constant labels or predictions); the first candidate is kept"
    elif (row := table[candidates.index(best)])["folds_with_spearman"] < k:
        out["few_folds"] = few_folds_text(row, k)
    return out


def few_folds_text(row: dict[str, Any], k: int) -> str:
    """How few folds a choice's Spearman came from, and why the others gave none (a candidate row of
    :func:`choose_config`)."""
    others = {"not fitted, the training part holding one label value": row.get("folds_without_label_spread", 0),
              **{f"with {no_figure_reason(code)}": n for code, n in (row.get("folds_without_spearman") or {}).items()}}
    why = "; ".join(f"{n} {reason}" for reason, n in others.items() if n)
    return (f"chosen on the Spearman of {row['folds_with_spearman']} of {k} folds ({row['kfold_spearman_rows']:,} "
            f"held-out rows; the others: {why})")


def evaluate_features(make_scorer: Callable[[], Scorer], X: np.ndarray, y: Sequence[float], chars: np.ndarray, *,
                      k: int = TRAIN_SCORER.folds, holdout: float = TRAIN_SCORER.holdout,
                    groups: Sequence[Any] | None = None, seed: int = TRAIN_SCORER.seed,
                      length_input: str = "", chars_instruction: np.ndarray | None = None,
                      pairs: np.ndarray | None = None) -> Evaluation:
    """K-fold agreement on the training part and agreement on a held-out part split off first.

    ``X`` holds precomputed features (``Scorer.featurize``), ``chars`` the length the baseline reads.
    ``groups`` keeps rows of one group (e.g. the same query) on one side of every split. ``pairs``: rows in a
    known order (harder, easier; Evol chains) that every fit also learns from; the held-out ones are scored as
    ``chain_order`` (the length baseline: the longer text is the harder). A row whose label is NaN only enters
    pairs: every fit reads it, no agreement figure does.
    """
    y = np.asarray(y, dtype=np.float64)
    chars = np.asarray(chars, dtype=np.float64)
    rng = np.random.default_rng(seed)
    train, test = split_off(len(y), groups, holdout, seed)
    folds: dict[str, list[dict[str, float]]] = {"scorer": [], "length": [], "random": []}
    ichars = None if chars_instruction is None else np.asarray(chars_instruction, dtype=np.float64)
    if ichars is not None:  # a two-text scorer: the instruction-length baseline too
        folds["instruction_length"] = []
    scored = np.isfinite(y)
    extra: dict[str, Any] = {}
    for fit_rows, held_rows in group_folds(train, groups, k, rng):
        if not label_spread(y[fit_rows]):  # one label value to learn from: no head, no figure
            extra["folds_without_label_spread"] = extra.get("folds_without_label_spread", 0) + 1
            continue
        pred_all = make_scorer().fit_features(X[fit_rows], y[fit_rows],
                                              pairs_within(pairs, fit_rows, len(y))).predict_features_raw(X[held_rows])
        tr, te, pred = fit_rows[scored[fit_rows]], held_rows[scored[held_rows]], pred_all[scored[held_rows]]
        if len(te) < 2:  # its held-out groups are chain versions without labels: no agreement to measure
            extra["folds_without_held_out_labels"] = extra.get("folds_without_held_out_labels", 0) + 1
            continue
        folds["scorer"].append(_fold_figures(y[te], pred))
        folds["length"].append(_fold_figures(y[te], length_baseline(chars[tr], y[tr], chars[te])))
        folds["random"].append(_fold_figures(y[te], rng.uniform(y[tr].min(), y[tr].max(), len(te))))
        if ichars is not None:
            folds["instruction_length"].append(_fold_figures(y[te], length_baseline(ichars[tr], y[tr], ichars[te])))
    kfold = {who: _mean_metrics(ms) for who, ms in folds.items()}
    held: dict[str, dict[str, float]] = {}
    calib: list[dict[str, float]] = []
    fit_rows, held_rows = train, test  # every row; train and test from here on: the labelled ones
    train, test = train[scored[train]], test[scored[test]]
    if len(test) and not label_spread(y[fit_rows]):
        extra["holdout_without_label_spread"] = True  # the training part holds one label value: nothing to fit
    elif len(test):
        pred_all = make_scorer().fit_features(X[fit_rows], y[fit_rows],
                                              pairs_within(pairs, fit_rows, len(y))).predict_features_raw(X[held_rows])
        lengths = {"length": chars, **({"instruction_length": ichars} if ichars is not None else {})}
        held, calib = holdout_figures(y, pred_all, fit_rows, held_rows, lengths, groups=groups, pairs=pairs, seed=seed,
                                      rng=rng)
    return Evaluation(kfold=kfold, holdout=held, calibration=calib, n_train=len(train), n_holdout=len(test), k=k,
                      length_input=length_input, extra=extra)


def holdout_figures(y: np.ndarray, pred_all: np.ndarray, fit_rows: np.ndarray, held_rows: np.ndarray,
                    lengths: dict[str, np.ndarray], *, groups: Sequence[Any] | None = None,
                    pairs: np.ndarray | None = None, seed: int = 0,
                    rng: np.random.Generator | None = None) -> tuple[dict[str, dict[str, Any]], list[dict[str, float]]]:
    """Held-out agreement of ``pred_all`` (the scorer's predictions for ``held_rows``) beside baselines, and its
    calibration. Each ``lengths`` entry (name -> a text length per row; ``length`` first) is a length baseline
    fitted on the labelled ``fit_rows``; with ``rng`` a random baseline too. Rows labelled NaN count only in
    ``chain_order``, over the held-out ``pairs`` (the length baseline: the longer text is the harder)."""
    scored = np.isfinite(y)
    train, test = fit_rows[scored[fit_rows]], held_rows[scored[held_rows]]
    pred = pred_all[scored[held_rows]]
    preds = {"scorer": pred, "length": length_baseline(lengths["length"][train], y[train], lengths["length"][test])}
    if rng is not None:
        preds["random"] = rng.uniform(y[train].min(), y[train].max(), len(test))
    for who, chars in lengths.items():
        preds.setdefault(who, length_baseline(chars[train], y[train], chars[test]))
    g_test = None if groups is None else np.asarray(groups, dtype=object)[test]
    held: dict[str, dict[str, Any]] = {who: agreement(y[test], p) for who, p in preds.items()}
    for who in ("scorer", "length"):
        held[who]["spearman_ci95"] = spearman_interval(y[test], preds[who], g_test, seed=seed)
    for who, p in preds.items():  # a figure that could not be computed: why, as a code
        if why := missing_figures(y[test], p, held[who].get("spearman_ci95"), g_test):
            held[who]["no_figure"] = why
    within_group_pairs(held, y[test], preds, g_test)
    held_pairs = pairs_within(pairs, held_rows, len(y))
    if held_pairs is not None and len(held_pairs):
        held["scorer"].update(chain_order=pair_order(held_pairs, pred_all), chain_pairs=len(held_pairs))
        held["length"]["chain_order"] = pair_order(held_pairs, lengths["length"][held_rows])
    return held, calibration(y[test], pred)


def length_input(scorer: Scorer) -> str:
    """The input the length baseline measures: the response when the scorer reads one, else the instruction."""
    return "response" if "response" in scorer.reads else scorer.reads[-1]


def train_and_evaluate(scorer: Scorer, rows: Sequence[Row], scores: Sequence[float], *,
                       k: int = TRAIN_SCORER.folds, holdout: float = TRAIN_SCORER.holdout,
                       groups: Sequence[Any] | None = None, seed: int = TRAIN_SCORER.seed,
                       refit_all: bool = True, embedded: dict[str, np.ndarray] | None = None,
                       cache_dir: str | os.PathLike | None = None,
                       search: dict[str, Sequence[float]] | None = None, pairs: np.ndarray | None = None) -> Evaluation:
    """Embed once, evaluate (K-fold + held-out, baselines beside), then fit ``scorer`` and store the metrics.

    The held-out part is split off before any fitting; with ``refit_all`` the final head is fitted on
    all rows (the reported figures stay the held-out ones). ``embedded``: a cached :meth:`Scorer.embed`
    result for these rows; ``cache_dir``: a workspace's cache folder (texts embedded before are reused).
    ``search``: head settings to choose among first (e.g. ``{"alpha": [...], "embedding_weight": [...]}``), by
    grouped K-fold Spearman on the training part (:func:`choose_config`); the choice is in ``extra``.
    ``pairs``: (harder, easier) row indices in a known order that every fit learns from too (:func:`evaluate_features`).
    """
    rows = list(rows)
    pairs = None if pairs is None or not len(pairs) else np.asarray(pairs, dtype=int)
    scores = np.asarray([float(s) for s in scores], dtype=np.float64)
    emb = scorer.embed(rows, cache_dir=cache_dir) if embedded is None else embedded
    X = scorer.featurize(emb)
    chosen = None
    if search:
        chosen = choose_settings(scorer, search, X, scores, k=k, holdout=holdout, groups=groups, seed=seed, pairs=pairs)
    base = length_input(scorer)
    ev = evaluate_features(scorer.fresh, X, scores, emb[f"_chars_{base}"], k=k, holdout=holdout, groups=groups,
                           seed=seed, length_input=base,
                           chars_instruction=emb.get("_chars_instruction") if base != "instruction" else None,
                           pairs=pairs)
    if refit_all or not ev.n_holdout:
        idx = np.arange(len(rows))
    else:
        idx = group_split(len(rows), groups, holdout, seed)[0]
    fit_pairs = pairs_within(pairs, idx, len(rows))
    scorer.fit_features(X[idx], scores[idx], fit_pairs)
    texts = input_texts([rows[i] for i in idx], scorer.reads)
    if fit_pairs is not None:  # the order learnt is part of what the head was fitted on
        texts["ordered_pairs"] = [f"{a}>{b}" for a, b in fit_pairs]
    labelled = scores[idx][np.isfinite(scores[idx])]
    scorer.metadata.update({"n_train": int(len(labelled)), "training_fingerprint": training_fingerprint(texts, scores[idx]),
                            "label_mean": float(labelled.mean()), "label_std": float(labelled.std()),
                            "refit_on_all_rows": bool(refit_all)})
    if pairs is not None:
        scorer.metadata["ordered_pairs"] = int(len(fit_pairs))
        if len(labelled) < len(idx):
            scorer.metadata["pair_only_rows"] = int(len(idx) - len(labelled))
    if chosen:
        ev.extra["chosen_by_kfold"] = chosen
    scorer.metrics = ev.to_dict()
    return ev
