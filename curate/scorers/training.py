"""A scorer's training run: K-fold and held-out agreement beside baselines, then the fitted scorer
(the labels it learns from: :mod:`~curate.scorers.training_data`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import curate.scorers.readermap as readermap
from curate.defaults import DEITA, SCORER, TRAIN_SCORER
from curate.errors import ScorerFolderError, ScorerOptionError, TooFewLabelsError, python_and_cli
from curate.scorers.columns import check_scorer_column
from curate.scorers.evaluation import Evaluation, train_and_evaluate
from curate.scorers.features import INPUTS
from curate.scorers.label_scales import judge_scale, parse_label_scale
from curate.scorers.labels_read import RECORD, labels_record
from curate.scorers.model import Scorer
from curate.scorers.training_data import TrainingData, chain_records, from_column, from_label_set
from curate.storage.columns import column_names
from curate.storage.files import check_name

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


FINETUNED_KINDS = ("cross-encoder", "small-lm")


@dataclass(repr=False)
class TrainResult:
    """What :func:`train_scorer` returns: the fitted scorer, its agreement figures, the labels it learnt from."""

    scorer: Scorer
    evaluation: Evaluation
    data: TrainingData

    def __repr__(self) -> str:
        return f"TrainResult({self.scorer!r}, {self.data!r})"

    def how_trained(self) -> str | None:
        """What a fine-tuned kind trained, in words: kind and head, base, warm start, steps, device, and how much came
        from the workspace cache; None for the ridge kind."""
        ev, trained = self.evaluation, self.scorer.metadata.get("train")
        if ev.extra.get("kind") not in FINETUNED_KINDS or not trained:
            return None
        head = f" ({self.scorer.head} head)"
        base = ev.extra.get("base") or f"the packaged {self.scorer.base_name}"
        done = trained.get("resumed_after_step")
        cached = ("" if not done else " (the same fit was done before: read back from the workspace cache)"
                  if done >= trained["steps"] else f" (resumed after step {done:,}, saved by an earlier run that did not finish)")
        return (f"{ev.extra['kind']}{head} fine-tuned on {base}" + (f" from {ev.extra['init']}" if ev.extra.get("init") else "")
                + f": {trained['steps']:,} steps on {trained['device']}{cached}")

    def _repr_html_(self) -> str:
        import html

        trained = self.scorer.metadata.get("train") or {}
        how = (f"{self.evaluation.extra.get('kind')} ({self.scorer.head} head), {trained.get('steps', 0):,} steps on "
               f"{trained.get('device')}" if trained else f"{self.scorer.head} head")
        left = self.data.skipped_text()
        return (f"<div><b>{html.escape(self.scorer.column)}</b>: {html.escape(how)}; {self.evaluation.n_train:,} labels "
                f"from {html.escape(self.data.source)}, {self.evaluation.n_holdout:,} held out"
                + (f"; MAE on the judge's {self.data.scale.text()} scale ({self.data.scale.how}), written on DEITA's 1-6"
                   if self.data.scale is not None else "")
                + (f"; left out: {html.escape(left)}" if left else "")
                + (f"<br>{html.escape(self.how_trained())}" if self.how_trained() else "")
                + f"</div>{self.evaluation._repr_html_()}")



def train_finetuned(data: TrainingData, name: str, *, holdout: float, seed: int, kind: str = "cross-encoder",
                    init: str | None = None, epochs: float = SCORER.finetune_epochs, base: str | None = None,
                    device: str | None = None, progress: bool = False, head: str | None = None,
                    cache_dir: str | None = None) -> TrainResult:
    """Fine-tune a reader (``kind``: the MiniLM cross-encoder or the small-LM reader, SmolLM2 unless ``base`` names
    another model folder; optionally from a saved or shipped adapter, ``init``) on the training groups; agreement on
    the held-out groups beside the response- and instruction-length baselines. The held-out rows never train it.
    ``data.pairs`` (Evol chains) within the training groups join as preference pairs (Bradley-Terry, P = 1);
    held-out ones are scored as ``chain_order``. ``device``: where it trains and predicts (None: the scorer's default,
    the CPU; ``cuda``, ``auto``: see :class:`~curate.scorers.finetuned.CrossEncoderScorer`). ``head``: the small-LM
    reader's ``score`` (default) or ``digits`` head (:class:`~curate.scorers.smalllm.SmallLMScorer`); the
    cross-encoder has the score head only.
    ``progress``: bars over the training steps and the held-out rows scored. ``cache_dir`` (the workspace's): training
    progress and forward passes are kept there, so a killed run continues when it is run again and a finished one is
    read back."""
    import numpy as np

    import curate.scorers.smalllm  # noqa: F401  (registers the small-lm kind, and through its import cross-encoder)
    from curate.scorers.evaluation import group_split, holdout_figures, pairs_within
    from curate.scorers.finetuned import KINDS, check_base_folder
    from curate.storage.progress import progress_bar

    y = np.asarray(data.scores, dtype=np.float64)
    fit_rows, held_rows = group_split(len(y), data.groups, holdout, seed)
    scored = np.isfinite(y)  # a chain version without a label only enters its pairs
    train, test = fit_rows[scored[fit_rows]], held_rows[scored[held_rows]]
    pairs = np.asarray(data.pairs, dtype=int).reshape(-1, 2)
    if kind not in FINETUNED_KINDS:
        raise ScorerOptionError(f"kind {kind!r}: a fine-tuned kind is one of {', '.join(FINETUNED_KINDS)}")
    if not (isinstance(epochs, (int, float)) and math.isfinite(epochs) and epochs > 0):
        raise ScorerOptionError(f"epochs {epochs!r}: passes over the training labels, a finite number above 0")
    cls = KINDS[kind]
    check_base_folder(base)  # before any row is tokenised or any step taken
    if init:
        if base is not None:
            raise ScorerFolderError(f"init {init} and base {base}: a saved adapter names the base it was trained on")
        scorer = Scorer.load(init)
        if type(scorer) is not cls or scorer.reads != data.reads:
            raise ScorerFolderError(f"init {init} (--init): not a {kind} scorer reading {data.reads}")
        if head is not None and scorer.head != head:
            raise ScorerFolderError(f"init {init} (--init) has a {scorer.head} head, not {head}: a warm start keeps its head")
        scorer.name, scorer.imitates = name, data.imitates
    else:  # the class refuses a head its kind lacks
        scorer = cls(reads=data.reads, name=name, imitates=data.imitates, base=base,
                     head=head or cls.heads[0])  # max_length: the kind's default for what it reads, and its head
    if device is not None:
        scorer.device = device
    if data.scale is None:  # called without train_scorer (the evals): read the scale here, and record it as it does
        data.scale = judge_scale(data.scores, declared=data.imitates.get("scale"), source=data.source)
    label_range = data.scale.bounds
    fit_pairs = [(data.turns[fit_rows[a]], data.turns[fit_rows[b]], 1.0) for a, b in pairs_within(pairs, fit_rows, len(y))]
    with progress_bar(None, f"fine-tuning {kind}", progress, unit="step") as bar:
        def on_step(step: int, steps: int) -> None:
            bar.total = steps
            bar.update(step - bar.n)  # a resumed run starts past its first steps

        def on_resume(step: int, steps: int) -> None:  # the bar says so before the first step (minutes on a CPU)
            bar.set_description(f"fine-tuning {kind}, " + (f"resuming from step {step:,}/{steps:,}" if step < steps
                                                          else "finished before: read back from the workspace cache"))
            on_step(step, steps)

        scorer.fit([data.turns[i] for i in train], y[train], label_range=label_range, epochs=epochs, seed=seed,
                   pairs=fit_pairs, on_step=on_step, checkpoint_dir=cache_dir, on_resume=on_resume)
    held: dict[str, dict[str, float]] = {}
    calib: list[dict[str, float]] = []
    if len(test):
        lengths = {who: np.array([len(getattr(t, text) or "") for t in data.turns], dtype=np.float64)
                   for who, text in (("length", data.reads[-1]), ("instruction_length", "instruction"))
                   if who == "length" or data.reads[-1] != "instruction"}
        with progress_bar(len(held_rows), "scoring the held-out rows", progress) as bar:
            pred = scorer.predict([data.turns[i] for i in held_rows], cache_dir=cache_dir, on_rows=bar.update)
        # on the judge's own scale, as the ridge kind reports them: MAE and calibration in the labels' units
        held, calib = holdout_figures(y, readermap.linear_map(pred, scorer.output_range, label_range), fit_rows,
                                      held_rows, lengths, groups=data.groups, pairs=pairs, seed=seed)
    ev = Evaluation(kfold={}, holdout=held, calibration=calib, n_train=len(train), n_holdout=len(test), k=0,
                    length_input=data.reads[-1], extra={"kind": kind, "head": scorer.head, "init": init, "base": scorer.base})
    scorer.metrics = ev.to_dict()
    record_scale(scorer, data)
    scorer.metadata["source"] = data.source
    if len(fit_pairs):
        scorer.metadata["ordered_pairs"] = len(fit_pairs)
    return TrainResult(scorer, ev, data)


def on_deita_scale(scorer: Scorer, scale: tuple[float, float] | None) -> None:
    """Map the judge's ``scale`` (:func:`~curate.scorers.label_scales.judge_scale`: given, declared or inferred,
    never the span its labels happen to cover) linearly onto DEITA's 1-6, as the fine-tuned kinds and the shipped
    scorers do, so a trained quality multiplies with complexity on one scale (order and agreement unchanged)."""
    if scale is not None:
        scorer.label_range, scorer.output_range = tuple(scale), DEITA.score_scale


def record_scale(scorer: Scorer, data: TrainingData) -> None:
    """The judge's scale in the scorer's saved metadata (and so in its column's provenance): the scale, how it was
    chosen and how many labels lay outside it (left out)."""
    if data.scale is not None:
        outside = data.skipped.get(data.scale.outside_reason(), 0)
        scorer.metadata["judge_scale"] = {**data.scale.to_dict(), "labels_outside": outside}


def train_scorer(ws: Any, *, target: str | None = None, labels: str | None = None, reads: Sequence[str] | None = None,
                 head: str | None = None, features: Sequence[str] | None = None, name: str | None = None, k: int = TRAIN_SCORER.folds,
                 holdout: float = TRAIN_SCORER.holdout, seed: int = TRAIN_SCORER.seed, kind: str = TRAIN_SCORER.kind, init: str | None = None,
                 epochs: float | None = None, embed_inputs: Sequence[str] | None = None,
                 group_by: str | None = None, columns: str | Sequence[str] = (), chain_pairs: bool = False,
                 base: str | None = None, device: str | None = None, progress: bool = False,
                 label_scale: str | Sequence[float] | None = None) -> TrainResult:
    """Train a scorer on a workspace's judge column (``target``) or label set (``labels``): K-fold and
    held-out agreement beside baselines, then a head fitted on every label (``group_by``: see ``from_column``).
    ``columns``: numeric columns read as more features (ridge kind; e.g. the token signals of ``ws.signal``).
    ``chain_pairs`` (``labels``: an Evol complexity label set; ridge or cross-encoder): the scorer also learns the order the
    chains have by construction (:func:`chain_order_pairs`), every surviving version's, scored or not; held-out chains
    are scored as ``chain_order``. With ``target`` too, the labels are the target's and the chains give only pairs
    (DEITA's Evol order mixed with, e.g., FLASK difficulty levels).
    ``kind``: ``ridge`` (a head on MiniLM features), ``cross-encoder`` or ``small-lm`` (fine-tuned readers:
    :func:`train_finetuned`, with ``init``, ``epochs``, ``base``, ``device`` and ``progress``). ``head``: the ridge
    kind's ``ridge`` (default) or ``ordinal``; the small-LM reader's ``score`` (default) or ``digits``.
    ``label_scale``: the judge's scale (low, high), e.g. (1, 10); labels outside it are left out and counted.
    Default: the scale the judge's provenance declares, else the smallest standard judge scale holding nearly all
    the labels (:mod:`~curate.scorers.label_scales`; two scales mixed are refused). The column is that scale mapped
    linearly onto DEITA's 1-6.
    Returns the fitted scorer, its evaluation and the training data (how many labels were used, what was left out and why)."""
    if target is None and labels is None or target is not None and labels is not None and not chain_pairs:
        raise ScorerOptionError("train from exactly one of a judge column (target) and a label set (labels); both only "
                          "with chain_pairs (labels from the column, ordered pairs from the label set's chains)")
    columns = column_names(columns)
    given_scale = parse_label_scale(label_scale)
    if columns and kind != "ridge":
        raise ScorerOptionError(f"columns {list(columns)}: numeric column features are read by the ridge kind, not {kind!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ScorerOptionError(f"k (--folds) is {k!r}: cross-validation needs at least 2 folds")
    if name is not None:
        check_name(name)  # the column the scorer writes: refused before the fit, not when it scores
    if not 0 <= holdout < 1:
        raise ScorerOptionError(f"holdout (--holdout) is {holdout!r}: the share of groups held out, at least 0 and below 1")
    if chain_pairs and (labels is None or head == "ordinal" or columns):
        raise ScorerOptionError("chain_pairs: ordered pairs come from an Evol label set (labels=...) and train the ridge head "
                          "or a fine-tuned reader (with no feature columns: chain versions have no numbers in them)")
    if target is None:
        if group_by is not None:
            raise ScorerOptionError("group_by applies to a judge column (target); a label set is grouped by its seed_id")
        data = from_label_set(chain_records(ws, labels) if chain_pairs else ws.labels(labels), labels,
                              ws.label_sets.get(labels), reads, columns, chain_pairs)
    else:
        for feature_column in columns:
            if feature_column == target:  # the label as its own feature: agreement by construction
                raise ScorerOptionError(f"feature column {feature_column!r} is the target itself")
            if not ws.has_column(feature_column) and feature_column not in (ws.pool.column_names if ws.has_pool else []):
                raise ScorerOptionError(f"{ws.path}: no column {feature_column!r} to read as a feature; derived columns "
                                  f"{sorted(ws.columns)}")
        data = from_column(ws, target, reads, group_by, columns)
        if chain_pairs:
            if data.reads != ["instruction"]:
                raise ScorerOptionError(f"chain_pairs with target {target!r}: the chains are instructions, so the scorer "
                                  f"reads the instruction alone, not {data.reads} (inputs=['instruction'])")
            data.extend(from_label_set(chain_records(ws, labels, scored=False), labels, ws.label_sets.get(labels),
                                       data.reads, chain_pairs=True))
            data.source += f" + chains of labels {labels}"
    read = labels_record(ws, target=target, labels=labels)  # as read now: a later change to them is noticed
    if data.labelled:  # none: the count below says so
        judged = target is not None and ws.has_column(target) and ws.column_provenance(target).get("kind") == "judge"
        data.scale = judge_scale(data.scores, given_scale, data.imitates.get("scale"), data.source, judged)
        data.leave_out_outside(data.scale.low, data.scale.high, data.scale.outside_reason())
    if data.labelled < 2 * k:
        left = data.skipped_text()
        as_json = [s["source"] for s in ws.manifest["sources"] if target in (s.get("columns_kept_as_json") or [])]
        more = ("label more rows (curate score, or curate evol for a label set) or give fewer folds, "
                f"{python_and_cli('k=', '--folds')}")
        raise TooFewLabelsError(f"{data.source} has {data.labelled} usable numeric labels; need at least {2 * k}"
                                + (f" (left out: {left})" if left else "")
                                + (f"; {target!r} was kept as JSON text when {as_json[0]} was loaded, as its values "
                                   f"mix types: make every value a number" if as_json else f"; {more}"))
    values = {s for s in data.scores if math.isfinite(s)}
    if len(values) < 2:  # a head learns nothing from one value: refused before any text is embedded or step taken
        raise TooFewLabelsError(f"{data.source}: all {data.labelled:,} usable labels are {values.pop():g}; a scorer "
                                "learns from labels that differ: label rows the judge scores otherwise")
    groups = len(set(map(str, data.groups)))
    if groups - (max(1, round(holdout * groups)) if holdout > 0 else 0) < k:  # as group_split holds groups out
        folds, group_by = python_and_cli("k=", "--folds"), python_and_cli("group_by=", "--group-by")
        raise TooFewLabelsError(f"{data.source}: {data.labelled} labels in {groups} groups (rows of one instruction, "
                                f"or of one {group_by} value, stay together), too few for {k} folds after holding "
                                f"{holdout:.0%} of them out: fewer folds, {folds}, or more groups")
    unknown = [r for r in data.reads if r not in INPUTS]
    if unknown:
        raise ScorerOptionError(f"unknown inputs {unknown}; a scorer reads {list(INPUTS)}")
    name = name or (labels if target is None else f"{target}_scorer")
    check_scorer_column(ws, name, "give it another name (name=..., --column) before training it")
    if kind in FINETUNED_KINDS:
        if features or embed_inputs is not None:  # a fine-tuned reader reads the text itself: they were ignored
            raise ScorerOptionError(f"{'features' if features else 'embed_inputs'} (--features, --embed-inputs): settings "
                              f"of the ridge kind's head; a {kind} reads the texts itself")
        result = train_finetuned(data, name, holdout=holdout, seed=seed, kind=kind, init=init,
                                 epochs=SCORER.finetune_epochs if epochs is None else epochs, base=base,
                                 device=device, progress=progress, head=head, cache_dir=ws.cache_dir)
        result.scorer.metadata[RECORD] = read
        return result
    if kind != "ridge":
        raise ScorerOptionError(f"kind {kind!r}: choose ridge (a linear head on MiniLM features), cross-encoder or small-lm")
    head = head or "ridge"
    if init is not None:
        raise ScorerFolderError(f"init {init}: the ridge kind fits its head afresh; warm starts are for the fine-tuned "
                          f"kinds ({', '.join(FINETUNED_KINDS)})")
    if epochs is not None:
        raise ScorerOptionError(f"epochs {epochs}: the ridge kind fits its head in closed form, in no passes; epochs are "
                          f"for the fine-tuned kinds ({', '.join(FINETUNED_KINDS)})")
    if base is not None or device is not None:
        raise ScorerOptionError(f"{'base ' + base if base is not None else 'device ' + str(device)}: the ridge kind reads "
                          f"the packaged MiniLM where the workspace embeds; a base model and a device are for the "
                          f"fine-tuned kinds ({', '.join(FINETUNED_KINDS)})")
    config = {"features": list(features)} if features else DEFAULT_CONFIG[len(data.reads)]
    if embed_inputs and not {"embeddings", "product"} & set(config["features"]):  # recorded, never embedded
        raise ScorerOptionError(f"embed_inputs {list(embed_inputs)} (--embed-inputs): the texts an embedding feature reads, "
                          f"and features {config['features']} has none (embeddings, product)")
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
    on_deita_scale(scorer, data.scale.bounds)  # figures above are on the judge's scale; scores land on DEITA's
    record_scale(scorer, data)
    scorer.metadata["source"] = data.source
    scorer.metadata[RECORD] = read
    return TrainResult(scorer, ev, data)
