"""Training data for a scorer, from a label set or from a judge column, and the training run itself.

DEITA's loop: Evol labels (``ws.labels("evol_complexity")``) or a judge's column -> a scorer -> the pool.
A judge column of a multi-turn pool gives one label per scored turn (``ws.turn_values``); the turns of one
row, and every answer to one instruction, stay on one side of every split (groups = the row's first
instruction: answers to a held-out question must not train the scorer); Evol variants of one seed stay
together (groups = ``seed_id``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from curate.errors import ScorerError, WorkspaceError
from curate.rows import Turn
from curate.scorers.evaluation import Evaluation, train_and_evaluate
from curate.scorers.features import INPUTS, finite_number, to_turn, turn_number, unreadable, with_columns
from curate.scorers.model import Scorer

# Pool columns that hold the rows themselves, never labels.
POOL_TEXT_COLUMNS = ("id", "conversation", "format")
# What `curate train-scorer` fits when no features are given, by the number of texts read. Two texts (a
# quality-like judge): both MiniLM vectors, log lengths and text statistics. Measured by evals/eval_distil.py
# (1,002 GPT-4 labels -> 1,313 answers to unseen questions): the former default (embeddings + their product +
# length, alpha 10) agreed at Spearman 0.005; this one at 0.56.
DEFAULT_CONFIG: dict[int, dict[str, Any]] = {
    1: {"features": ["embeddings", "length"]},
    2: {"features": ["embeddings", "length", "stats"]},
}
# The ridge's strength and the weight of the embedding columns are chosen per label set, by grouped K-fold
# Spearman on the training part (evaluation.choose_config): ~1,000 labels cannot carry 768 embedding dimensions
# at full weight, while a large label set can, and no one setting suits every judge (evals/eval_distil.py).
RIDGE_SEARCH: dict[str, tuple[float, ...]] = {"alpha": (10.0, 30.0, 100.0, 300.0, 1000.0),
                                              "embedding_weight": (0.05, 0.2, 1.0)}


@dataclass
class TrainingData:
    """(turn, score) pairs to fit on, the group of each (row id or Evol seed), and what was left out."""
    turns: list[Turn]
    scores: list[float]
    groups: list[str]
    reads: list[str]
    source: str                                    # "labels <name>" or "column <name>"
    imitates: dict[str, Any] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)  # reason -> turns left out
    rows: int = 0                                  # rows (label records, or pool rows) read
    columns: list[str] = field(default_factory=list)   # numeric columns read as features (Scorer ``columns``)
    numbers: list[dict[str, float]] = field(default_factory=list)  # their values, one dict per kept turn
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (harder, easier) kept turns, ordered by construction

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def labelled(self) -> int:
        """Turns with a label; the others (score NaN) only enter ordered ``pairs``."""
        return sum(math.isfinite(s) for s in self.scores)

    def extend(self, other: TrainingData) -> None:
        """Append ``other``'s turns and its ordered pairs (e.g. Evol chains beside a judge column's labels)."""
        offset = len(self)
        self.turns += other.turns
        self.scores += other.scores
        self.groups += other.groups
        self.numbers += other.numbers
        self.pairs += [(a + offset, b + offset) for a, b in other.pairs]
        self.skipped.update(other.skipped)
        self.rows += other.rows

    def examples(self) -> list[Any]:
        """What the scorer fits on: the turns, or with ``columns`` dict rows carrying the columns' numbers."""
        return [with_columns(t, n) for t, n in zip(self.turns, self.numbers, strict=True)]

    def keep(self, turn: Turn, score: float, group: str, numbers: dict[str, float | None]) -> bool:
        """Keep one labelled turn, or count why it is left out (a text the scorer reads, or a column's number, absent)."""
        why = unreadable(turn, self.reads, {name: numbers.get(name) for name in self.columns})
        if why:
            self.skipped[why] += 1
        else:
            self.turns.append(turn)
            self.scores.append(score)
            self.groups.append(group)
            self.numbers.append({name: float(numbers[name]) for name in self.columns})
            return True
        return False


def _reads_of(names: Sequence[str]) -> list[str]:
    return ["instruction", "response"] if "response" in names else ["instruction"]


def from_label_set(records: Any, name: str = "labels", provenance: dict[str, Any] | None = None,
                   reads: Sequence[str] | None = None, columns: Sequence[str] = (),
                   chain_pairs: bool = False) -> TrainingData:
    """Labels from a label set (``ws.labels(name)``: Evol's ``text, score, seed_id, step, operation
    [, instruction]``) or any records with ``text``/``instruction`` (+ ``response``) and ``score``.
    ``chain_pairs``: also the order Evol complexity chains have by construction (:func:`chain_order_pairs`;
    records as :func:`chain_records` gives them); a version without a score then enters only its pairs.

    Reads: the instruction and the response when the records carry a response (``instruction`` beside
    ``text``, as Evol quality labels, or a ``response`` column), else the instruction.
    """
    records = [dict(r) for r in records]
    prov = provenance or {}
    if reads is None:
        keys = set().union(*(r.keys() for r in records)) if records else set()
        reads = _reads_of(["response"] if ("text" in keys and "instruction" in keys) or "response" in keys else [])
    data = TrainingData([], [], [], list(reads), f"labels {name}", rows=len(records), columns=list(columns))
    data.imitates = {"judge": prov.get("kind", name), "label_set": name,
                     **{k: prov[k] for k in ("method", "scale") if k in prov}}
    model = (prov.get("backend") or {}).get("model") if isinstance(prov.get("backend"), dict) else None
    if model:
        data.imitates["model"] = model
    steps = [(r.get("seed_id"), r.get("step"), r.get("operation")) for r in records]
    ordered: list[tuple[int, int]] = []
    if chain_pairs:
        if data.reads != ["instruction"] or data.columns or prov.get("kind") == "quality" or \
                not all(seed is not None and isinstance(step, int) for seed, step, _ in steps):
            raise ScorerError(f"label set {name!r}: ordered pairs come from Evol complexity chains (records with "
                              "seed_id and step, reading instructions and no columns: curate evol --kind complexity)")
        ordered = chain_order_pairs(steps)
    in_pairs = {i for pair in ordered for i in pair}
    kept: dict[int, int] = {}  # record -> its turn in data
    for i, record in enumerate(records):
        score = finite_number(record.get("score"))
        if score is None and i not in in_pairs:
            data.skipped["no numeric score"] += 1
            continue
        group = str(record.get("group") or record.get("seed_id") or record.get("instruction") or record.get("text") or i)
        if data.keep(to_turn(record), math.nan if score is None else score, group,
                     {c: finite_number(record.get(c)) for c in data.columns}):
            kept[i] = len(data) - 1
    data.pairs = [(kept[a], kept[b]) for a, b in ordered if a in kept and b in kept]
    return data


def chain_records(ws: Any, name: str, *, scored: bool = True) -> list[dict[str, Any]]:
    """Every surviving version of label set ``name``'s Evol chains, for :func:`from_label_set` with ``chain_pairs``:
    from its ``sets.jsonl`` (sets whose rank-and-score call failed included: their order holds by construction),
    else its rows. Each record: text, score (None where the set has no scores, or everywhere unless ``scored``),
    seed_id, step, operation and group (the seed's instruction, as a pool row's split group is its instruction)."""
    try:
        path = ws.label_file(name, "sets.jsonl")
    except WorkspaceError:
        path = None
    if path is None:
        records = [dict(r) for r in ws.labels(name)]
        seeds = {r.get("seed_id"): r.get("text") for r in records if r.get("step") == 0}
        for r in records:
            r["group"] = seeds.get(r.get("seed_id")) or r.get("seed_id")
    else:
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            vs = json.loads(line)
            for i, v in enumerate(vs["variants"]):
                records.append({"text": v["text"], "score": vs["scores"][i] if vs.get("scores") else None,
                                "seed_id": vs["seed_id"], "step": v["step"], "operation": v["operation"],
                                "group": vs["instruction"]})
    if not scored:
        for r in records:
            r["score"] = None
    return records


def chain_order_pairs(steps: Sequence[tuple[Any, int, Any]]) -> list[tuple[int, int]]:
    """(harder, easier) index pairs of Evol complexity variants, by construction: within one seed, each surviving
    in-depth rewrite (add a constraint, deepen, concretize, reasoning) was made from the survivor before it, so it
    asks for more than every earlier version of its chain. An in-breadth rewrite is a new task: it starts a new
    chain. ``steps``: (seed_id, step, operation) per variant."""
    from curate.evol.rules import IN_DEPTH_OPERATIONS

    by_seed: dict[Any, list[tuple[int, Any, int]]] = {}
    for k, (seed, step, operation) in enumerate(steps):
        by_seed.setdefault(seed, []).append((step, operation, k))
    pairs: list[tuple[int, int]] = []
    for variants in by_seed.values():
        chain: list[int] = []
        for step, operation, k in sorted(variants, key=lambda v: v[0]):
            if step != 0 and operation not in IN_DEPTH_OPERATIONS:
                chain = []  # the seed, or an in-breadth rewrite: a chain of its own starts here
            pairs += [(k, earlier) for earlier in chain]
            chain.append(k)
    return pairs


def column_judge(ws: Any, column: str, reads: Sequence[str] | None = None) -> tuple[list[str], dict[str, Any]]:
    """What a scorer imitating ``column`` reads (``reads``, else what the column's provenance says its
    producer read, else the instruction) and what it imitates (judge, prompt, model), from provenance.

    ``column`` is a derived column (an LLM judge's) or a column of the pool file itself: judge labels that
    came with the data (e.g. a ``gpt4_score`` field on the rows that were judged). Such a column has no
    provenance, so the scorer reads what the rows carry: instruction and response when any row has a response.
    """
    if ws.has_column(column):
        prov = ws.column_provenance(column)
        reads = list(reads) if reads is not None else _reads_of(prov.get("reads") or [])
        imitates = {"judge": prov.get("judge", column), "column": column,
                    **{k: prov[k] for k in ("prompt", "prompt_fingerprint", "model", "label_set") if k in prov}}
        return reads, imitates
    if ws.has_pool and column in ws.pool.column_names and column not in POOL_TEXT_COLUMNS:
        if reads is None:
            reads = _reads_of(["response"] if any(t.response for turns in ws.turns() for t in turns) else [])
        return list(reads), {"judge": column, "column": column, "from": "pool file"}
    loaded = sorted(c for c in (ws.pool.column_names if ws.has_pool else []) if c not in POOL_TEXT_COLUMNS)
    raise ScorerError(f"{ws.path}: no column {column!r}; derived columns {sorted(ws.columns)}, pool file columns {loaded}")


def row_groups(ws: Any, group_by: str | None = None, turns: list[list[Turn]] | None = None) -> list[str]:
    """Each row's split group: the value of column ``group_by`` (e.g. a question id), else the row's first
    instruction, so every answer to one instruction stays on one side (a row without a user turn: its id).
    ``turns``: ``ws.turns()`` when the caller has read them already."""
    keys = ws.column(group_by) if group_by is not None else [None] * len(ws)
    return [f"{group_by}={key}" if key is not None else row[0].instruction if row else rid
            for rid, row, key in zip(ws.ids, ws.turns() if turns is None else turns, keys, strict=True)]


def from_column(ws: Any, column: str, reads: Sequence[str] | None = None, group_by: str | None = None,
                columns: Sequence[str] = ()) -> TrainingData:
    """Labels from a judge column: one (turn, score) pair per scored turn of every row.

    ``reads`` defaults to what the column's provenance says its producer read (``reads``), else the
    instruction. Turns without a numeric value (failed, JSON output) or without a text the scorer reads
    are left out and counted in ``skipped``. ``group_by``: a column (e.g. a question id in the pool file) whose
    value keeps rows together in every split, for answers to one question whose instructions differ (a
    second turn written out with its history); a row without a value is grouped by its first instruction.
    ``columns``: numeric columns (e.g. token signals) whose per-turn numbers the scorer reads as features.
    """
    reads, imitates = column_judge(ws, column, reads)
    data = TrainingData([], [], [], reads, f"column {column}", imitates, rows=len(ws), columns=list(columns))
    all_turns = ws.turns()
    feature_values = {name: ws.column(name) for name in data.columns}
    for r, (values, turns, group) in enumerate(zip(ws.turn_values(column), all_turns, row_groups(ws, group_by, all_turns),
                                                   strict=True)):
        if values is None:
            data.skipped["no value"] += len(turns)
            continue
        if len(values) != len(turns):
            data.skipped[f"{len(values)} values for a row of {len(turns)} turns"] += len(turns)
            continue
        for t, (value, turn) in enumerate(zip(values, turns, strict=True)):
            score = finite_number(value)
            if score is None:
                data.skipped["no numeric value"] += 1
            else:
                data.keep(turn, score, group, {name: turn_number(v[r], t) for name, v in feature_values.items()})
    return data


@dataclass
class TrainResult:
    scorer: Scorer
    evaluation: Evaluation
    data: TrainingData


def train_cross_encoder(data: TrainingData, name: str, *, holdout: float, seed: int, init: str | None = None,
                        epochs: float = 2.0) -> TrainResult:
    """Fine-tune a cross-encoder (optionally from a shipped adapter, ``init``) on the training groups; agreement on
    the held-out groups beside the response- and instruction-length baselines. The held-out rows never train it."""
    import numpy as np

    from curate.scorers.evaluation import group_split
    from curate.scorers.finetuned import CrossEncoderScorer
    from curate.scorers.metrics import (
        agreement,
        calibration,
        length_baseline,
        spearman_interval,
        within_group_pairs,
    )

    y = np.asarray(data.scores, dtype=np.float64)
    train, test = group_split(len(y), data.groups, holdout, seed)
    if init:
        scorer = Scorer.load(init)
        if not isinstance(scorer, CrossEncoderScorer) or scorer.reads != data.reads:
            raise ScorerError(f"--init {init}: not a cross-encoder scorer reading {data.reads}")
        scorer.name, scorer.imitates = name, data.imitates
    else:
        scorer = CrossEncoderScorer(reads=data.reads, name=name, imitates=data.imitates,
                                    max_length=256 if "response" in data.reads else 128)
    rng = (float(y.min()), float(y.max()))
    scorer.fit([data.turns[i] for i in train], y[train], label_range=rng, epochs=epochs, seed=seed)
    held: dict[str, dict[str, float]] = {}
    calib: list[dict[str, float]] = []
    if len(test):
        (c, d), (lo, hi) = scorer.output_range, rng
        y6 = c + (y - lo) * (d - c) / (hi - lo)
        pred = scorer.predict([data.turns[i] for i in test])
        g_test = np.asarray(data.groups, dtype=object)[test]
        held["scorer"] = {**agreement(y6[test], pred), "spearman_ci95": spearman_interval(y6[test], pred, g_test, seed=seed)}
        preds = {"scorer": pred}
        for who, text in (("length", data.reads[-1]), ("instruction_length", "instruction")):
            if who == "instruction_length" and data.reads[-1] == "instruction":
                continue
            chars = np.array([len(getattr(t, text) or "") for t in data.turns], dtype=np.float64)
            base = length_baseline(chars[train], y6[train], chars[test])
            held[who] = agreement(y6[test], base)
            if who == "length":
                held[who]["spearman_ci95"] = spearman_interval(y6[test], base, g_test, seed=seed)
            preds[who] = base
        within_group_pairs(held, y6[test], preds, g_test)
        calib = calibration(y6[test], pred)
    ev = Evaluation(kfold={}, holdout=held, calibration=calib, n_train=len(train), n_holdout=len(test), k=0,
                    length_input=data.reads[-1], extra={"kind": "cross-encoder", "init": init})
    scorer.metrics = ev.to_dict()
    scorer.metadata["source"] = data.source
    return TrainResult(scorer, ev, data)


def train_scorer(ws: Any, *, target: str | None = None, labels: str | None = None, reads: Sequence[str] | None = None,
                 head: str = "ridge", features: Sequence[str] | None = None, name: str | None = None, k: int = 5,
                 holdout: float = 0.2, seed: int = 0, kind: str = "ridge", init: str | None = None,
                 epochs: float = 2.0, embed_inputs: Sequence[str] | None = None,
                 group_by: str | None = None, columns: Sequence[str] = (), chain_pairs: bool = False) -> TrainResult:
    """Train a scorer on a workspace's judge column (``target``) or label set (``labels``): K-fold and
    held-out agreement beside baselines, then a head fitted on every label (``group_by``: see ``from_column``).
    ``columns``: numeric columns read as more features (ridge kind; e.g. the token signals of ``ws.signal``).
    ``chain_pairs`` (``labels``: an Evol complexity label set; ridge kind): the ridge head also learns the order the
    chains have by construction (:func:`chain_order_pairs`), every surviving version's, scored or not; held-out chains
    are scored as ``chain_order``. With ``target`` too, the labels are the target's and the chains give only pairs
    (DEITA's Evol order mixed with, e.g., FLASK difficulty levels).
    Returns the fitted scorer, its evaluation and the training data (how many labels were used, what was left out and why)."""
    if target is None and labels is None or target is not None and labels is not None and not chain_pairs:
        raise ScorerError("train from exactly one of a judge column (target) and a label set (labels); both only "
                          "with chain_pairs (labels from the column, ordered pairs from the label set's chains)")
    if columns and kind != "ridge":
        raise ScorerError(f"columns {list(columns)}: numeric column features are read by the ridge kind, not {kind!r}")
    if chain_pairs and (labels is None or kind != "ridge" or head != "ridge" or columns):
        raise ScorerError("chain_pairs: ordered pairs come from an Evol label set (labels=...) and train the ridge head "
                          "(with no feature columns: chain versions have no numbers in them)")
    if target is None:
        if group_by is not None:
            raise ScorerError("group_by applies to a judge column (target); a label set is grouped by its seed_id")
        data = from_label_set(chain_records(ws, labels) if chain_pairs else ws.labels(labels), labels,
                              ws.label_sets.get(labels), reads, columns, chain_pairs)
    else:
        for feature_column in columns:
            if not ws.has_column(feature_column) and feature_column not in (ws.pool.column_names if ws.has_pool else []):
                raise ScorerError(f"{ws.path}: no column {feature_column!r} to read as a feature; derived columns "
                                  f"{sorted(ws.columns)}")
        data = from_column(ws, target, reads, group_by, columns)
        if chain_pairs:
            if data.reads != ["instruction"]:
                raise ScorerError(f"chain_pairs with target {target!r}: the chains are instructions, so the scorer "
                                  f"reads the instruction alone, not {data.reads} (inputs=['instruction'])")
            data.extend(from_label_set(chain_records(ws, labels, scored=False), labels, ws.label_sets.get(labels),
                                       data.reads, chain_pairs=True))
            data.source += f" + chains of labels {labels}"
    if data.labelled < 2 * k:
        left = "; ".join(f"{n:,} x {why}" for why, n in data.skipped.most_common(3))
        raise ScorerError(f"{data.source} has {data.labelled} usable numeric labels; need at least {2 * k}"
                          + (f" (left out: {left})" if left else ""))
    unknown = [r for r in data.reads if r not in INPUTS]
    if unknown:
        raise ScorerError(f"unknown inputs {unknown}; a scorer reads {list(INPUTS)}")
    name = name or (labels if target is None else f"{target}_scorer")
    if kind == "cross-encoder":
        return train_cross_encoder(data, name, holdout=holdout, seed=seed, init=init, epochs=epochs)
    if kind != "ridge":
        raise ScorerError(f"kind {kind!r}: choose ridge (a linear head on MiniLM features) or cross-encoder")
    config = {"features": list(features)} if features else DEFAULT_CONFIG[len(data.reads)]
    if chain_pairs and not features:  # an in-depth rewrite adds requirements: count them, as the shipped complexity does
        config = {"features": [*config["features"], "requirements"]}
    scorer = Scorer(reads=data.reads, head=head, name=name,
                    imitates=data.imitates, embed_inputs=embed_inputs, columns=data.columns, **config)  # never the judge's column
    search = None
    if head == "ridge":  # the ordinal head has its own regulariser (C) and is not searched
        search = {setting: grid for setting, grid in RIDGE_SEARCH.items()
                  if setting != "embedding_weight" or ("embeddings" in scorer.features and scorer.embed_inputs)}
    ev = train_and_evaluate(scorer, data.examples(), data.scores, k=k, holdout=holdout, seed=seed, groups=data.groups,
                            cache_dir=ws.cache_dir, search=search, pairs=data.pairs if chain_pairs else None)
    scorer.metadata["source"] = data.source
    return TrainResult(scorer, ev, data)
