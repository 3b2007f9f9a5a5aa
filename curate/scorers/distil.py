"""Distil a judge into a scorer: judge a random sample, train, predict the rest, refine where unsure.

The unit a labeller is asked about is a row (a judge call per row; ``labels_spent`` counts rows); the
scorer learns from every turn of the labelled rows. Held-out rows are judged for evaluation only.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate.defaults import DISTIL
from curate.errors import ScorerError, ScorerOptionError, TooFewLabelsError
from curate.scorers.evaluation import choose_settings, length_input
from curate.scorers.features import input_texts, turn_number, unreadable, with_columns
from curate.scorers.label_scales import covering_scale
from curate.scorers.metrics import (
    METRICS,
    MIN_FIGURE_LABELS,
    NoFigure,
    agreement,
    figure,
    length_baseline,
    missing_figure_text,
    missing_figures,
)
from curate.scorers.model import Scorer, training_fingerprint
from curate.scorers.training import DEFAULT_CONFIG, RIDGE_SEARCH, on_deita_scale
from curate.scorers.training_data import column_judge, row_groups

NO_REASON = "no reason given"
TOP_REASONS, REASON_CHARS = 3, 160
HOLDOUT_KEYS = ("spearman", "kendall", "mae", "pairwise_accuracy", "n", "no_figure")

# A labeller: row ids -> per row, a number (a one-turn row), a list with one entry per turn, or why not
# (None/NaN, a reason string, or a dict with "reason").
LabelFn = Callable[[list[str]], list[Any]]


@dataclass
class DistilReport:
    """What a distillation run spent and how well the final scorer agrees with held-out judge labels."""

    labels_spent: int
    rows_total: int
    rounds: list[dict[str, Any]]
    holdout: dict[str, float]
    column: str
    scorer: Scorer
    turns_left_out: dict[str, int] = field(default_factory=dict)  # why -> turns the scorer cannot read (never asked)
    # round -> its head settings search (choose_settings' result: chosen, candidates, k; few_folds/undecided if so)
    settings_chosen: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def fraction_spent(self) -> float:
        return self.labels_spent / self.rows_total if self.rows_total else float("nan")

    def missing_figure_lines(self) -> list[str]:
        """One line per round whose held-out figures (a dash in a table) could not be computed, saying which and why."""
        lines = []
        for r in self.rounds:
            text = missing_figure_text({"scorer": r.get("no_figure", {}),
                                        "length": r.get("length", {}).get("no_figure", {})})
            if text:
                lines.append(f"round {r['round']}: held-out figures not computed: {text}")
        return lines

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{r['round']}</td><td>{r['labelled']:,}</td><td>{r['spent']:,}</td>"
                       f"<td>{figure(r.get('spearman'))}</td><td>{figure(r.get('length', {}).get('spearman'))}</td>"
                       f"<td>{figure(r.get('mae'))}</td></tr>" for r in self.rounds)
        return (f"<div><b>Distillation of {html.escape(self.column)}</b>: {self.labels_spent:,} of "
                f"{self.rows_total:,} rows judged ({self.fraction_spent:.1%})<table><tr><th>round</th>"
                f"<th>trained on</th><th>labels spent</th><th>held-out spearman</th><th>length's spearman</th>"
                f"<th>MAE</th></tr>{rows}</table>"
                + "".join(f"<p>{html.escape(line)}</p>" for line in self.missing_figure_lines())
                + (f"<p>turns the scorer cannot read, never asked about: {html.escape(self.left_out_text())}</p>"
                   if self.turns_left_out else "") + "</div>")

    def left_out_text(self) -> str:
        """The turns left out, one line: ``"12 x no number in column ifd; 3 x no response"``."""
        return counts_text(Counter(self.turns_left_out))

    def __repr__(self) -> str:
        return (f"DistilReport({self.labels_spent:,}/{self.rows_total:,} rows judged ({self.fraction_spent:.1%}), "
                f"held-out spearman {figure(self.holdout.get('spearman'))})")


class TooFewRowsToDistil(TooFewLabelsError):
    """Fewer rows than ``holdout_n + n`` to ask about: counted (rows the scorer can read; of those, rows with a label
    when the labeller is an existing column), so a command line can name its own options in :meth:`line`."""

    def __init__(self, readable: int, labelled: int | None, column: str | None, holdout_n: int, n: int,
                 left_out: str = ""):
        self.readable, self.labelled, self.column = readable, labelled, column
        self.holdout_n, self.n, self.left_out = holdout_n, n, left_out
        super().__init__(self.line())

    def line(self, n_option: str = "n", holdout_option: str = "holdout_n", train_hint: str | None = None) -> str:
        """One line naming the counts and what to do; ``n_option``/``holdout_option``: how the caller spells them;
        ``train_hint``: how to fit on the whole column instead (default: the Python API's call)."""
        asked = f"{holdout_option} + {n_option} = {self.holdout_n} + {self.n} = {self.holdout_n + self.n}"
        left = f" (turns left out: {self.left_out})" if self.left_out else ""
        if self.column is None:  # a labeller that pays per row: judging every row is the alternative
            return (f"distil: {self.readable:,} rows the scorer can read, not more than {asked}{left}; lower "
                    f"{holdout_option} and {n_option}, or judge every row and train a scorer on that column")
        hint = train_hint or f"train_scorer(ws, target={self.column!r})"
        return (f"distil: {self.labelled:,} rows with a label in column {self.column!r} (of {self.readable:,} the "
                f"scorer can read), not more than {asked}{left}; lower {holdout_option} and {n_option}, or fit on "
                f"every label: {hint}")


MIN_TRAINING_LABELS = 10  # as train-scorer's least (2 x its 5 folds): fewer fit noise and measure nothing


def label_failure(value: Any) -> str | None:
    """Why ``value`` is not a label (None/NaN, a reason string, or a failure dict), or None when it is a number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_REASON
    if isinstance(value, str):
        return value.strip() or NO_REASON
    if isinstance(value, dict):
        return str(value.get("reason") or value)
    if isinstance(value, bool):  # a flag, not a score (train-scorer's finite_number refuses it too)
        return f"a boolean ({value}), not a number"
    return None


def counts_text(counts: Counter) -> str:
    """Counted reasons, most common first, one line: ``"12 x no number in column ifd; 3 x no response"``."""
    return "; ".join(f"{n:,} x {why}" for why, n in counts.most_common())


def top_reasons(reasons: Sequence[str], top: int = TOP_REASONS) -> str:
    """The ``top`` most common reasons, one line: ``"12 x timeout; 3 x no digit in output; ..."``."""
    counts = Counter(" ".join(r.split())[:REASON_CHARS] for r in reasons)
    text = "; ".join(f"{c} x {r}" for r, c in counts.most_common(top))
    return text + ("; ..." if len(counts) > top else "")


def column_labeller(ws: Any, column: str) -> LabelFn:
    """A labeller that reads an existing judge column (only the rows asked for): per-turn values, and
    for a turn without one the reason its failure records."""

    def label_fn(ids: list[str]) -> list[Any]:
        out: list[Any] = []
        for values, fails in zip(ws.turn_values(column, ids), ws.failures(column, ids), strict=True):
            why = {f.turn: f"{f.code.value}: {f.message}" for f in fails}
            if values is None:
                out.append("; ".join(why.values()) or f"no value in column {column!r}")
            else:
                out.append([v if v is not None else why.get(t) or why.get(None) or f"no value in column {column!r}"
                            for t, v in enumerate(values, start=1)])
        return out

    label_fn.column = column  # type: ignore[attr-defined]  # distil refuses a scorer that reads it as a feature
    return label_fn


def _turn_labels(value: Any, n_turns: int) -> list[tuple[float | None, str | None]]:
    """A labeller's value for one row as (label, failure reason) per turn."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_turns:
            return [(None, f"{len(value)} labels for a row of {n_turns} turns")] * n_turns
        return [(None, why) if (why := label_failure(v)) else (float(v), None) for v in value]
    why = label_failure(value)
    if why is None and n_turns != 1:
        why = f"one label for a row of {n_turns} turns"
    return [(None, why) if why else (float(value), None)]


def distil_scorer(ws: Any, label_fn: LabelFn, column: str | None = None, inputs: Sequence[str] | None = None,
                  columns: str | Sequence[str] = ()) -> Scorer:
    """The ridge scorer :func:`distil` trains when given none, as ``train_scorer`` fits one: it reads what the label
    column's judge read (``inputs`` overrides; :func:`column_judge`), imitates that judge, and writes ``column``
    (default ``LABEL_COLUMN_distilled``); ``columns``: numeric column features. A labeller that is no workspace
    column (a judge asked per row) says nothing of what it read: the scorer reads ``inputs`` (default the
    instruction) and needs ``column``."""
    label_column = getattr(label_fn, "column", None)
    if label_column is not None:
        reads, imitates = column_judge(ws, label_column, inputs)
        column = column or f"{label_column}{DISTIL.column_suffix}"
    elif column is None:
        raise ScorerOptionError("distil: the labeller is no workspace column (column_labeller), so name the column "
                                "the scorer writes: column=...")
    else:
        reads, imitates = list(inputs or ["instruction"]), {}
    if not reads or any(r not in ("instruction", "response") for r in reads):
        raise ScorerOptionError(f"distil: inputs {list(reads)}: a scorer reads instruction and/or response")
    return Scorer(reads=reads, name=column, imitates=imitates, columns=columns, **DEFAULT_CONFIG[len(reads)])


def distil(ws, label_fn: LabelFn, *, scorer: Scorer | None = None, n: int = DISTIL.n, rounds: int = DISTIL.rounds,
           uncertain_k: int = DISTIL.uncertain_k, holdout_n: int = DISTIL.holdout_n, column: str | None = None,
           inputs: Sequence[str] | None = None, columns: str | Sequence[str] = (), n_bootstrap: int = 8,
           seed: int = 0, write: bool = True, progress: bool = True,
           search: dict[str, Sequence[float]] | None = None, group_by: str | None = None) -> DistilReport:
    """Distil a judge into a scorer; see the module doc.

    ``scorer``: the scorer to train; without one, :func:`distil_scorer` makes the one ``curate distil`` trains
    (reads what the label column's judge read, or ``inputs``; writes ``column``, default ``LABEL_COLUMN_distilled``;
    ``columns``: numeric column features) and its ridge settings are searched (``RIDGE_SEARCH``) unless ``search``
    is given. A scorer you pass keeps its settings unless ``search`` is given, and ``column`` renames it.

    ``label_fn(row_ids)`` is any labeller (a judge, an existing column: :func:`column_labeller`); failed
    labels are left out of training, and when every label fails :class:`ScorerError` says so with the
    most common reasons. Steps: label ``holdout_n`` random rows for evaluation only; label ``n`` random
    rows; fit; then ``rounds`` times send the ``uncertain_k`` rows where a bootstrap ensemble of heads
    disagrees most to the labeller and refit; the final head is fitted on every label, held-out ones included,
    after the figure is taken. With ``write`` the final scorer (named ``column``) is applied
    to every turn of the pool (``ws.apply``), so the column has one scale. ``search``: head settings chosen
    before each fit by grouped K-fold on the labelled rows (:func:`~curate.scorers.evaluation.choose_settings`).
    Groups keep every answer to one instruction together: a row that shares a held-out row's group is never asked
    about nor trained on, and the search folds are grouped. A group is the row's first instruction, or the value
    of ``group_by``, a column (e.g. a question id) that groups rows whose instructions differ.
    """
    for name, value, least in (("n", n, 1), ("holdout_n", holdout_n, 1), ("rounds", rounds, 0), ("uncertain_k", uncertain_k, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ScorerOptionError(f"distil: {name} must be a whole number >= {least}, not {value!r}")
    if scorer is None:
        scorer = distil_scorer(ws, label_fn, column, inputs, columns)
        search = RIDGE_SEARCH if search is None else search
    elif inputs is not None or columns:
        raise ScorerOptionError("distil: inputs and columns make the scorer distil trains; a scorer given keeps its "
                                "own (Scorer(reads=..., columns=...))")
    if getattr(label_fn, "column", None) in scorer.columns:  # the label as its own feature: agreement by construction
        raise ScorerOptionError(f"distil: the scorer reads the label column {label_fn.column!r} as a feature")
    if column:
        scorer.name = column
    if write:
        scorer.check_column(ws)  # the column it would write: refused before any label is paid for
    rng = np.random.default_rng(seed)
    ids = list(ws.ids)
    turns = ws.turns()
    numbers = {name: ws.column(name) for name in scorer.columns}  # a scorer's numeric column features, per turn

    # the turns the scorer can read (its texts present, a number in each of its columns); the others are counted
    items: list[tuple[int, int]] = []
    examples: list[Any] = []  # what the scorer reads of each item
    left_out: Counter = Counter()
    for i, row in enumerate(turns):
        for t, turn in enumerate(row):
            row_numbers = {name: turn_number(values[i], t) for name, values in numbers.items()}
            why = unreadable(turn, scorer.reads, row_numbers)
            if why:
                left_out[why] += 1
            else:
                items.append((i, t))
                examples.append(with_columns(turn, row_numbers))
    usable = sorted({i for i, _ in items})  # rows with a turn the scorer can read
    if holdout_n + n >= len(usable):
        label_column = getattr(label_fn, "column", None)  # an existing column: its labels cost nothing to count
        labelled = None
        if label_column is not None:  # read from the column, never asked of the labeller (it may pay per row)
            readable_turns: dict[int, set[int]] = {}
            for i, t in items:
                readable_turns.setdefault(i, set()).add(t)
            values = ws.turn_values(label_column, [ids[i] for i in usable])
            labelled = sum(any(label is not None and t in readable_turns[i]
                               for t, (label, _) in enumerate(_turn_labels(value, len(turns[i]))))
                           for i, value in zip(usable, values, strict=True))
        raise TooFewRowsToDistil(len(usable), labelled, label_column, holdout_n, n, counts_text(left_out))
    row_items: dict[int, list[int]] = {}
    for k, (i, _) in enumerate(items):
        row_items.setdefault(i, []).append(k)
    emb = scorer.embed(examples, cache_dir=ws.cache_dir)  # texts embedded before are reused
    base = length_input(scorer)  # every figure beside the length baseline train-scorer reports
    chars = np.array([len(text) for text in input_texts(examples, (base,))[base]], dtype=float)
    X = scorer.featurize(emb)
    group = row_groups(ws, group_by, turns)
    order = rng.permutation(len(usable))
    by_group: dict[str, list[int]] = {}  # groups in random order, each with its rows
    for p in order:
        by_group.setdefault(group[usable[p]], []).append(p)
    held_pos = np.array([p for ps in by_group.values() for p in ps][:holdout_n], dtype=int)  # as few groups as can be
    held_groups = {group[usable[p]] for p in held_pos}  # their other answers are never asked about nor trained on
    pool_pos = np.array([p for p in order if group[usable[p]] not in held_groups], dtype=int)
    if len(pool_pos) <= n:
        raise TooFewLabelsError(f"distil: {len(pool_pos)} usable rows outside the held-out groups, not more than n = {n}")
    labels: dict[int, float] = {}  # item -> label
    failed: dict[int, str] = {}    # row position (in usable) -> reason, for rows that gave no label
    asked: set[int] = set()
    spent = 0

    def judge(positions: Sequence[int]) -> None:
        nonlocal spent
        positions = list(positions)
        got = label_fn([ids[usable[p]] for p in positions])
        if len(got) != len(positions):
            raise ScorerError(f"label_fn returned {len(got)} labels for {len(positions)} rows")
        spent += len(positions)
        asked.update(positions)
        for p, value in zip(positions, got, strict=True):
            row = usable[p]
            per_turn = _turn_labels(value, len(turns[row]))
            reasons = []
            for k in row_items[row]:
                label, why = per_turn[items[k][1]]
                if label is None:
                    reasons.append(why)
                else:
                    labels[k] = label
            if len(reasons) == len(row_items[row]):
                failed[p] = reasons[0]

    judge(held_pos)
    held_labels = dict(labels)  # evaluation only: never trained on
    labels.clear()
    judge(pool_pos[:n])
    if len(labels) < MIN_TRAINING_LABELS:  # too little to fit or measure anything: say why, not nan figures
        rows_asked = pool_pos[:n].tolist()
        scope = (f"{len(labels)} of {len(rows_asked)} training rows gave a label, fewer than {MIN_TRAINING_LABELS}"
                 if labels else f"all {len(rows_asked)} training labels failed ({len(held_labels)} held-out labels did not)")
        if not held_labels and not labels:
            rows_asked = held_pos.tolist() + rows_asked
            scope = f"all {len(rows_asked)} labels failed"
        raise ScorerError(f"distil: {scope}: {top_reasons([failed[p] for p in rows_asked if p in failed])}")
    if len(set(labels.values())) < 2:  # no head learns from one value (fit_head said so, naming nothing)
        raise TooFewLabelsError(f"distil: all {len(labels):,} labels of the first {n:,} random rows are {labels.popitem()[1]:g}; "
                                "a scorer learns from labels that differ: label more rows first (a larger n)")
    history: list[dict[str, Any]] = []
    choices: dict[int, dict[str, Any]] = {}
    held_keys = np.array(sorted(held_labels))

    def fit_and_measure(round_no: int, added: int) -> None:
        train = np.array(sorted(labels))
        y_train = np.array([labels[k] for k in train])
        chosen, notes = {}, {}
        groups = [group[items[k][0]] for k in train]  # answers to one question stay on one side of every fold
        if search and len(set(groups)) >= 2:  # the labelled rows only: held-out labels stay for the figure
            choices[round_no] = choose_settings(scorer, search, X[train], y_train, k=min(5, len(set(groups))),
                                                holdout=0.0, groups=groups, seed=seed)
            chosen = choices[round_no]["chosen"]
            notes = {k: v for k, v in choices[round_no].items() if k in ("few_folds", "undecided")}
        scorer.fit_features(X[train], y_train)
        too_few = dict.fromkeys(METRICS, NoFigure.TOO_FEW_LABELS)  # a figure not taken is a reason code, not nan
        m, length = {"no_figure": too_few}, {"length": {"no_figure": too_few}}
        if len(held_keys) >= MIN_FIGURE_LABELS:
            y_held = [held_labels[k] for k in held_keys]
            preds = (scorer.predict_features_raw(X[held_keys]), length_baseline(chars[train], y_train, chars[held_keys]))
            m, base = (agreement(y_held, p) | ({"no_figure": why} if (why := missing_figures(y_held, p)) else {})
                       for p in preds)
            length = {"length": base}
        history.append({"round": round_no, "labelled": int(len(train)), "added": added, "spent": spent,
                        "label_failures": len(failed), **m, **length, **({"chosen": chosen} if chosen else {}), **notes})

    fit_and_measure(0, min(n, len(pool_pos)))
    for r in range(1, rounds + 1):
        if uncertain_k <= 0:
            break
        candidates = np.array([p for p in pool_pos if p not in asked])
        if not len(candidates):
            break
        train = np.array(sorted(labels))
        cand_items = [row_items[usable[p]] for p in candidates]
        std = _bootstrap_std(scorer, X[train], np.array([labels[k] for k in train]),
                             X[[k for ks in cand_items for k in ks]], n_bootstrap, rng)
        ends = np.cumsum([len(ks) for ks in cand_items])
        row_std = np.array([std[e - len(ks):e].mean() for e, ks in zip(ends, cand_items, strict=True)])
        pick = candidates[np.argsort(-row_std, kind="stable")[:uncertain_k]]
        judge(pick)
        fit_and_measure(r, len(pick))
    # The figure is measured; now the final head learns from every label paid for, the held-out ones too
    # (as train-scorer refits on all its labels after measuring).
    labels.update(held_labels)
    train = np.array(sorted(labels))
    scorer.fit_features(X[train], np.array([labels[k] for k in train]))
    on_deita_scale(scorer, covering_scale([labels[k] for k in train], scorer.imitates.get("scale")))
    texts = input_texts([turns[items[k][0]][items[k][1]] for k in train], scorer.reads)
    scorer.metadata.update({"n_train": int(len(train)), "distilled": True,
                            "training_fingerprint": training_fingerprint(texts, [labels[k] for k in train])})
    last = history[-1] if history else {}
    holdout = {k: v for k, v in last.items() if k in HOLDOUT_KEYS}
    scorer.metrics = {"distil": history, "holdout": {"scorer": holdout, "length": last.get("length", {})},
                      "length_baseline_reads": base, "labels_spent": spent, "rows_total": len(ids)}
    if write:
        ws.apply(scorer, progress=progress)
    return DistilReport(labels_spent=spent, rows_total=len(ids), rounds=history, holdout=holdout, column=scorer.column,
                        scorer=scorer, turns_left_out=dict(left_out), settings_chosen=choices)


def _bootstrap_std(scorer: Scorer, X: np.ndarray, y: np.ndarray, X_pred: np.ndarray, n_models: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Disagreement of a small bootstrap ensemble of heads: the per-row std of their predictions."""
    preds = []
    for _ in range(n_models):
        idx = rng.integers(0, len(y), len(y))
        if np.unique(y[idx]).size < 2:
            continue
        preds.append(scorer.fresh().fit_features(X[idx], y[idx]).predict_features_raw(X_pred))
    if len(preds) < 2:  # no disagreement to measure: say so rather than rank every row as certain
        raise ScorerError(f"distil: only {len(preds)} of {n_models} bootstrap heads could be fitted "
                          "(the labels so far hardly vary); label more rows at random first (larger n)")
    return np.std(preds, axis=0)
