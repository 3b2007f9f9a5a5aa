"""Trained scorers: fit/predict/save/load, agreement metrics, shipped defaults, the Step (ws.apply), training from
judge columns and label sets (DEITA's loop), distillation."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from curate.codes import FailureCode
from curate.errors import CurateWarning
from curate.rows import Turn, turns
from curate.scorers import (
    WEIGHTS_DIR,
    CrossEncoderScorer,
    Scorer,
    ScorerError,
    agreement,
    calibration,
    distil,
    from_column,
    from_label_set,
    load_default,
    pairwise_accuracy,
    train_scorer,
)
from curate.scorers.evaluation import choose_config, group_split
from curate.scorers.metrics import spearman_interval
from curate.session import Workspace
from curate.storage.step import RowInput, StepContext
from tests.conftest import write_jsonl

# Five levels of a learnable signal: everyday chores (1) ... research mathematics (5).
LEVELS = {
    1: ["What colour is a ripe {x}?", "Where should I keep my {x} at home?", "Is a {x} nice to have for breakfast?"],
    2: ["Give me three tips for cooking {x} for a family dinner.", "How do I clean a kitchen after preparing {x}?",
        "Plan a weekend shopping list that includes {x}."],
    3: ["Explain how photosynthesis works in a {x} plant for a school report.",
        "Summarise the history of trade in {x} during the nineteenth century.",
        "Describe the water cycle using a {x} farm as the example."],
    4: ["Derive the enzyme kinetics equations that govern ripening of {x} in cold storage.",
        "Compare supply-chain optimisation models for {x} exports using linear programming.",
        "Analyse the genome sequencing pipeline used to study {x} disease resistance."],
    5: ["Prove that the stochastic differential equation modelling {x} crop yields has a unique strong solution.",
        "Formulate a Bayesian nonparametric model of {x} price dynamics and prove posterior consistency.",
        "Derive the renormalisation group flow for a lattice field theory named after the {x} lattice."],
}
FRUITS = ["apple", "banana", "cherry", "mango", "pear", "plum", "grape", "lemon", "peach", "kiwi", "melon", "fig"]


def synthetic(n_per_level: int = 12, seed: int = 0) -> tuple[list[str], list[float]]:
    rng = random.Random(seed)
    texts, scores = [], []
    for level, templates in LEVELS.items():
        for i in range(n_per_level):
            texts.append(templates[i % len(templates)].format(x=rng.choice(FRUITS)))
            scores.append(float(level))
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [scores[i] for i in order]


def test_metrics_on_known_cases():
    assert pairwise_accuracy([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert pairwise_accuracy([1, 2, 3, 4], [4, 3, 2, 1]) == 0.0
    assert pairwise_accuracy([1, 2], [5, 5]) == 0.5
    assert pairwise_accuracy([1, 1, 2], [0, 9, 5]) == 0.5  # tied labels are skipped; (1,2) right once, wrong once
    # two questions, an easy one (labels 8, 9) and a hard one (2, 3): a predictor that knows only which question is
    # easier orders 4 of the 6 pairs, but none of the two pairs of answers to one question
    labels, by_question = [8, 9, 2, 3], [9.5, 8.5, 1.5, 1.0]
    assert pairwise_accuracy(labels, by_question) == 4 / 6
    assert pairwise_accuracy(labels, by_question, groups=["easy", "easy", "hard", "hard"]) == 0.0
    m = agreement([1, 2, 3, 4], [2, 3, 4, 5])
    assert m["spearman"] == pytest.approx(1.0) and m["kendall"] == pytest.approx(1.0)
    assert m["mae"] == pytest.approx(1.0) and m["pairwise_accuracy"] == 1.0 and m["n"] == 4
    assert agreement([1, 2, 3, 4], [4, 3, 2, 1])["spearman"] == pytest.approx(-1.0)
    cal = calibration(list(range(10)), list(range(10)), bins=5)
    assert [c["n"] for c in cal] == [2] * 5
    assert [c["mean_predicted"] for c in cal] == [c["mean_label"] for c in cal] == [0.5, 2.5, 4.5, 6.5, 8.5]


def test_pairwise_accuracy_of_a_large_set_counts_the_same_pairs_as_the_small_set_path():
    """Above PAIR_MATRIX_MAX_ROWS pairs are counted through Kendall's tau (no n x n matrix): the same count,
    with tied labels skipped and tied predictions counted 1/2, as the pair-by-pair comparison."""
    from curate.scorers import metrics

    rng = np.random.default_rng(3)
    n = metrics.PAIR_MATRIX_MAX_ROWS + 200
    labels = rng.integers(1, 7, n).astype(float)  # many tied labels
    preds = np.round(labels + rng.normal(0, 2, n))  # many tied predictions, some tied with the labels too
    t, p = labels[:, None] - labels[None, :], preds[:, None] - preds[None, :]
    right = ((t > 0) & (p > 0)).sum() + 0.5 * ((t > 0) & (p == 0)).sum()
    assert pairwise_accuracy(labels, preds) == pytest.approx(right / (t > 0).sum(), abs=1e-12)
    assert pairwise_accuracy(labels, np.full(n, 2.0)) == 0.5
    assert np.isnan(pairwise_accuracy(np.full(n, 4.0), preds))


def test_spearman_interval_resamples_whole_groups():
    rng = np.random.default_rng(1)
    y = rng.normal(size=60)
    p = y + rng.normal(scale=1.0, size=60)
    lo, hi = spearman_interval(y, p)
    assert lo < agreement(y, p)["spearman"] < hi and hi - lo < 0.6
    # each label repeated five times in one group: five copies add no evidence, so the interval must not shrink,
    # as it does when the copies are resampled as if they were independent rows
    y5, p5, groups = np.repeat(y, 5), np.repeat(p, 5), np.repeat(np.arange(60), 5)
    lo_g, hi_g = spearman_interval(y5, p5, groups)
    lo_r, hi_r = spearman_interval(y5, p5)
    assert hi_g - lo_g > 1.8 * (hi_r - lo_r)
    assert hi_g - lo_g == pytest.approx(hi - lo, abs=0.08)
    assert np.isnan(spearman_interval([1, 2], [1, 2])).all()  # too few groups to resample


def test_choose_config_prefers_the_regularisation_that_generalises():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=80)
    X = np.column_stack([signal, rng.normal(size=(80, 60))])  # one real column among 60 noise columns
    y = signal + rng.normal(scale=0.5, size=80)

    def make(cfg):
        return Scorer(reads=["instruction"], features=["length"], head="ridge", alpha=cfg["alpha"])

    best, table = choose_config(make, [{"alpha": 0.01}, {"alpha": 10.0}, {"alpha": 300.0}], X, y, k=4, holdout=0.2)
    # a weak ridge fits the noise columns of ~48 training rows, a very strong one shrinks the signal too
    assert best == {"alpha": 10.0}
    assert table[1]["kfold_spearman"] > table[0]["kfold_spearman"] + 0.1


def _nearly_constant_labels() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An Evol label set: 23 x 1.0 and 2 x 2.0 (features that follow the label, a length per row)."""
    rng = np.random.default_rng(1)
    y = np.array([1.0] * 23 + [2.0] * 2)
    rng.shuffle(y)
    return np.column_stack([y + rng.normal(size=25), rng.normal(size=(25, 5))]), y, rng.integers(50, 500, 25) * 1.0


def test_kfold_figures_of_few_folds_say_how_few_and_count_only_their_rows():
    """Labels 23 x 1.0 and 2 x 2.0: the 5-fold table said `spearman 0.516 ... n 20` while 3 of the 5 folds held out
    four equal labels and gave no figure: the figures came from 2 folds of 4 rows, and no line said why."""
    from curate.scorers.evaluation import evaluate_features

    X, y, chars = _nearly_constant_labels()
    ev = evaluate_features(lambda: Scorer(reads=["instruction"], features=["length"]), X, y, chars, k=5, seed=1)
    for who, m in ev.kfold.items():
        skipped = m.get("folds_without_figure", {})
        assert 0 < m["folds"] < 5 and m["folds"] + sum(skipped.values()) == 5, (who, m)
        assert skipped.keys() == {"labels_all_equal"} and m["n"] == 4 * m["folds"] < 20, (who, m)  # 4 rows a fold
    used, equal = ev.kfold["scorer"]["folds"], ev.kfold["scorer"]["folds_without_figure"]["labels_all_equal"]
    assert {split for _, split, _ in ev.rows()} == {f"5-fold ({used} of 5 folds)", "held-out"}
    assert (f"5-fold figures of scorer, length, random from {used} of 5 folds (the others: {equal} with held-out "
            "labels all equal)") in ev.missing_figure_lines()


def test_head_settings_chosen_on_few_folds_say_so():
    """choose_settings averaged the Spearman of the folds that had one and said nothing when that was 2 of 5."""
    from curate.scorers.evaluation import choose_settings

    X, y, _ = _nearly_constant_labels()
    choice = choose_settings(Scorer(reads=["instruction"], features=["length"]), {"alpha": [0.1, 10.0]}, X, y, k=5,
                             seed=1)
    row = choice["candidates"][[c["alpha"] for c in choice["candidates"]].index(choice["chosen"]["alpha"])]
    assert 0 < row["folds_with_spearman"] < 5 and row["kfold_spearman_rows"] == 4 * row["folds_with_spearman"]
    assert choice["few_folds"] == (f"chosen on the Spearman of {row['folds_with_spearman']} of 5 folds "
                                   f"({row['kfold_spearman_rows']} held-out rows; the others: "
                                   f"{5 - row['folds_with_spearman']} with held-out labels all equal)")


def test_fit_predict_save_load_roundtrip(tmp_path):
    texts, scores = synthetic()
    train_t, train_y, test_t, test_y = texts[:45], scores[:45], texts[45:], scores[45:]
    scorer = Scorer(reads=["instruction"], alpha=1.0, name="complexity",
                    imitates={"judge": "complexity", "model": "synthetic"}).fit(train_t, train_y)
    pred = scorer.predict(test_t)
    assert agreement(test_y, pred)["spearman"] > 0.8
    assert pred.min() >= 1.0 and pred.max() <= 5.0  # clipped to the training labels' range
    folder = scorer.save(tmp_path / "sc")
    assert sorted(p.name for p in folder.iterdir()) == ["head.safetensors", "scorer.json"]
    doc = json.loads((folder / "scorer.json").read_text())
    assert doc["imitates"] == {"judge": "complexity", "model": "synthetic"}
    assert doc["metadata"]["n_train"] == 45 and doc["metadata"]["training_fingerprint"].startswith("sha256:")
    again = Scorer.load(folder)
    # exactly as before the save: columns it wrote are reused, not recomputed under a "new" scorer
    assert np.array_equal(again.predict(test_t), pred) and again.fingerprint() == scorer.fingerprint()
    assert again.fingerprint() != Scorer(reads=["instruction"]).fit(train_t[:20], train_y[:20]).fingerprint()
    # dict rows and Turns read the same text as plain strings
    np.testing.assert_allclose(again.predict([{"instruction": t} for t in test_t]), pred, atol=1e-5)
    np.testing.assert_allclose(again.predict([Turn(t, None) for t in test_t]), pred, atol=1e-5)


def test_ordinal_head_and_output_scale():
    texts, scores = synthetic()
    scorer = Scorer(head="ordinal", C=1.0, label_range=(1, 5), output_range=(1, 6)).fit(texts[:45], scores[:45])
    pred = scorer.predict(texts[45:])
    assert 1.0 <= pred.min() and pred.max() <= 6.0
    assert agreement(scores[45:], pred)["spearman"] > 0.8
    np.testing.assert_allclose(scorer.to_output_scale([1, 3, 5]), [1.0, 3.5, 6.0])


def test_scorer_refuses_bad_inputs():
    with pytest.raises(ScorerError, match="reads some of"):
        Scorer(reads=["answer"])
    with pytest.raises(ScorerError, match="two inputs"):
        Scorer(features=["product"])
    two = Scorer(reads=["instruction", "response"])
    with pytest.raises(ScorerError, match="not strings"):
        two.fit(["a", "b"], [1, 2])
    with pytest.raises(ScorerError, match="no response"):
        two.fit([{"instruction": "a"}, {"instruction": "b"}], [1, 2])
    with pytest.raises(ScorerError, match="not fitted"):
        Scorer().predict(["x"])
    with pytest.raises(ScorerError, match="one turn"):  # a conversation of two turns is not one score
        Scorer().predict([[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                           {"role": "user", "content": "c"}]])
    with pytest.raises(ScorerError, match="'score' column"):
        Scorer().fit([{"instruction": "a"}, {"instruction": "b"}])
    with pytest.raises(ScorerError, match="at least two rows with different scores, got 0 row"):  # not numpy's
        Scorer().fit([], [])


GOOD_ANSWER = ("The sky looks blue because of Rayleigh scattering.\n\nSunlight contains every colour. When it passes "
               "through the atmosphere it meets gas molecules much smaller than the wavelength of visible light. Such "
               "small particles scatter short wavelengths far more strongly than long ones (as 1/wavelength^4), so blue "
               "light is scattered across the whole sky about five times more than red light.\n\n"
               "1. Violet is scattered even more, but the sun emits less of it and our eyes are less sensitive to it.\n"
               "2. At sunrise and sunset the light crosses more air, so most blue is scattered away and the sky turns "
               "red and orange.\n\nIn summary, the blue colour is sunlight scattered by the air itself.")


def test_shipped_defaults_load_offline_and_rank_as_their_judges():
    for name in ("complexity", "quality"):
        scorer = load_default(name)
        assert scorer.output_range == (1.0, 6.0) and scorer.column == name
        assert scorer.imitates["judge"] == name and (scorer.granularity, scorer.reducer, scorer.inputs) == ("turn", "sum", ())
    assert Scorer.load("complexity").reads == ["instruction"]
    question = "Explain why the sky is blue."
    good, one_word, refusal = load_default("quality").predict(
        [{"instruction": question, "response": r} for r in
         (GOOD_ANSWER, "Blue.", "I'm sorry, but as an AI language model I cannot answer that.")])
    assert good > one_word and good > refusal
    easy, hard, chore, research = load_default("complexity").predict(
        ["What is 2 + 2?", "Prove that there are infinitely many primes.", "What colour is a banana?",
         "Derive the Black-Scholes equation from a self-financing replicating portfolio and state its assumptions."])
    assert min(hard, research) > max(easy, chore)


def _conversation_key(conversation) -> str:
    return hashlib.sha256(json.dumps(conversation, sort_keys=True).encode()).hexdigest()[:16]


def _recompute(scorer: Scorer, name: str, turns: list[Turn]) -> np.ndarray:
    """The shipped head applied by hand to the scorer's features: weights read from head.safetensors."""
    from safetensors.numpy import load_file

    w = {k: v.astype(np.float64) for k, v in load_file(str(WEIGHTS_DIR / name / "head.safetensors")).items()}
    X = np.clip(scorer.featurize(turns), w["feature_min"], w["feature_max"])
    logits = (X - w["feature_mean"]) / w["feature_scale"] @ w["coef"].T + w["intercept"]
    if "classes" in w:  # ordinal: the expected label
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        raw = (p / p.sum(axis=1, keepdims=True)) @ w["classes"]
    else:
        raw = logits[:, 0]
    lo, hi = w["label_bounds"]
    m = 0.05 * (hi - lo)  # within 5% of a bound the prediction bends towards it instead of being clipped
    with np.errstate(divide="ignore"):
        raw = np.where(raw > hi - m, hi - m / (1 + (raw - (hi - m)) / m),
                       np.where(raw < lo + m, lo + m / (1 + ((lo + m) - raw) / m), raw))
    (a, b), (c, d) = scorer.label_range, scorer.output_range
    return c + (raw - a) * (d - c) / (b - a)


def test_shipped_scorers_on_the_sample_equal_recomputation(tmp_path):
    # (issue 13 retrained the shipped heads, so tests/data/shipped_scorers_on_sample.json, the pre-redesign
    # scores, no longer applies; the ridge scores must still equal the head recomputed by hand from
    # head.safetensors, and the default complexity cross-encoder's column must equal its own network's scores)
    from curate.cli.common import sample_path

    ws = Workspace(tmp_path / "ws")
    ws.load(sample_path())
    turns = [t for row in ws.turns() for t in row]
    for scorer in (load_default("quality"), Scorer.load("complexity_ridge"), load_default("complexity")):
        ws.apply(scorer, progress=False)
        flat = [v for row in ws.column(scorer.column) for v in row]
        if isinstance(scorer, CrossEncoderScorer):
            assert scorer.column == "complexity" and scorer.reads == ["instruction"]
            want = scorer.calibrate(scorer.predict_raw([{"instruction": t.instruction} for t in turns]))
            np.testing.assert_allclose(flat, want, rtol=0, atol=1e-5)
            assert 1.0 <= min(flat) and max(flat) <= 6.0 and np.ptp(flat) > 0.5
        else:
            np.testing.assert_allclose(flat, _recompute(scorer, scorer.column, turns), rtol=0, atol=1e-9)
        again = ws.apply(scorer, progress=False)  # same fingerprint: nothing recomputed
        assert again.computed == 0 and again.skipped == len(ws)


def _workspace(tmp_path, with_label: bool = True) -> Workspace:
    texts, scores = synthetic(n_per_level=16, seed=1)
    records = [{"instruction": t, "input": "", "output": f"An answer to: {t}"} for t in texts]
    records.append({"instruction": "An instruction nobody answered.", "input": "", "output": ""})
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", records))
    if with_label:
        conv_to_score = dict(zip(texts, scores, strict=True))
        labels = [conv_to_score.get(c[0]["content"]) for c in ws.conversations()]
        ws.add_column("oracle", labels, {"judge": "oracle-complexity", "model": "synthetic"})
    return ws


def test_apply_writes_per_turn_lists_and_a_no_response_failure(tmp_path):
    ws = _workspace(tmp_path, with_label=False)
    with pytest.warns(CurateWarning, match=r"quality: 1 of the 81 rows computed now failed"):
        result = ws.apply(load_default("quality"), progress=False)
    assert result.column == "quality" and result.failed == 1 and result.computed == len(ws)
    prov = ws.columns["quality"]
    assert prov["kind"] == "scorer" and prov["imitates"] == "quality" and prov["scale"] == [1.0, 6.0]
    assert prov["reducer"] == "sum" and prov["granularity"] == "turn" and prov["reads"] == ["instruction", "response"]
    assert prov["holdout_agreement"] == load_default("quality").metrics["holdout"]["scorer"]
    values, failures = ws.column("quality"), ws.failures("quality")
    assert all(isinstance(v, list) and len(v) == 1 for v in values)
    empty = [i for i, f in enumerate(failures) if f]
    assert len(empty) == 1 and values[empty[0]] == [None] and ws.row_values("quality")[empty[0]] is None
    (failure,) = failures[empty[0]]
    assert failure.code == FailureCode.NO_RESPONSE and failure.turn == 1 and "no response" in failure.message
    ws.apply(Scorer.load("complexity"), progress=False)  # a complexity scorer needs no response
    assert ws.failures("complexity") == [[]] * len(ws)


def test_per_turn_scoring_writes_one_score_per_user_turn(tmp_path, shapes):
    ws = Workspace(tmp_path / "ws")
    ws.load(shapes["sharegpt"])  # two user turns per row
    scorer = load_default("complexity")
    result = ws.apply(scorer, progress=False)
    assert result.failed == 0 and ws.columns["complexity"]["turns_scored"] == 2 * len(ws)
    values = ws.column("complexity")
    assert all(len(v) == 2 for v in values)
    turns = ws.turns()
    np.testing.assert_allclose([x for v in values for x in v], scorer.predict([t for row in turns for t in row]))
    np.testing.assert_allclose(ws.row_values("complexity"), [sum(v) for v in values])  # DEITA: the sum over turns


class _Bar:
    n = 0

    def update(self, k: int = 1) -> None:
        self.n += k


def test_run_fails_only_the_turn_without_a_response_and_moves_the_progress_bar(tmp_path):
    conversation = [{"role": "user", "content": "Explain why the sky is blue."},
                    {"role": "assistant", "content": GOOD_ANSWER},
                    {"role": "user", "content": "And why are sunsets red?"}]  # the last turn has no reply
    rows = [RowInput("a", conversation, turns(conversation)), RowInput("b", conversation[:2], turns(conversation[:2])),
            RowInput("c", [], [])]
    bar = _Bar()
    out = load_default("quality").run(rows, StepContext(bar, tmp_path / "cache", tmp_path))
    assert out.values[0][0] == out.values[1][0] and out.values[0][1] is None and out.values[2] is None
    assert [(f.code, f.turn) for f in out.failures[0]] == [(FailureCode.NO_RESPONSE, 2)] and out.failures[1] == []
    assert [f.code for f in out.failures[2]] == [FailureCode.NO_USER_TURN]
    # one distinct text, encoded once (not counted as found in the cache: the same text twice in one pass)
    assert bar.n == len(rows) and out.stats == {"turns_scored": 2, "texts_encoded": 1, "texts_from_embedding_cache": 0}


class _BarMeetingAnother:
    """A progress bar whose first update waits for the other thread's: both runs have counted their cache use
    before either returns."""

    def __init__(self, barrier) -> None:
        self.barrier, self.met = barrier, False

    def update(self, k: int = 1) -> None:
        if not self.met:
            self.met = True
            self.barrier.wait()


def test_one_scorer_run_in_two_threads_at_once_reports_each_runs_own_cache_use(tmp_path):
    import threading

    questions = ["Explain why the sky is blue.", "Plan a week of meals for a family of four.", "Prove that 2 is prime."]
    chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": f"{GOOD_ANSWER} ({i})"}]
             for i, q in enumerate(questions)]
    rows = [RowInput(str(i), chat, turns(chat)) for i, chat in enumerate(chats)]
    scorer = load_default("quality")  # the ridge kind: it encodes each instruction
    scorer.run(rows, StepContext(_Bar(), tmp_path / "warm", tmp_path))  # the 'warm' cache holds every text now
    barrier, stats = threading.Barrier(2, timeout=120), {}

    def run(cache: str) -> None:
        stats[cache] = scorer.run(rows, StepContext(_BarMeetingAnother(barrier), tmp_path / cache, tmp_path)).stats

    threads = [threading.Thread(target=run, args=(cache,)) for cache in ("warm", "cold")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stats["warm"] == {"turns_scored": 3, "texts_encoded": 0, "texts_from_embedding_cache": 3}
    assert stats["cold"] == {"turns_scored": 3, "texts_encoded": 3, "texts_from_embedding_cache": 0}


def test_distil_spends_fewer_labels_and_agrees_with_oracle(tmp_path):
    ws = _workspace(tmp_path)
    calls: list[list[str]] = []

    def oracle(ids: list[str]) -> list[float | None]:
        calls.append(ids)
        return ws.column("oracle", ids)

    report = distil(ws, oracle, scorer=Scorer(reads=["instruction"], alpha=1.0, name="cx",
                                              imitates={"judge": "oracle-complexity"}),
                    n=24, rounds=2, uncertain_k=8, holdout_n=20, n_bootstrap=4, progress=False)
    assert report.labels_spent == sum(map(len, calls)) == 20 + 24 + 8 + 8
    assert report.labels_spent < report.rows_total
    assert report.holdout["spearman"] > 0.7
    # beside it, the length baseline on the same held-out rows: these synthetic levels grow with the instruction's
    # length, and the report says so (as train-scorer's does) instead of leaving 0.96 to look like learning
    length = report.scorer.metrics["holdout"]["length"]
    assert length == report.rounds[-1]["length"] and length["n"] == report.holdout["n"] and length["spearman"] > 0.9
    assert report.scorer.metrics["length_baseline_reads"] == "instruction"
    # 24 random + 2 x 8 uncertain, less the unanswered row if the draw asked about it (its label is None)
    unlabelled = sum(v is None for ids in calls[1:] for v in ws.column("oracle", ids))
    assert unlabelled <= 1 and [r["labelled"] for r in report.rounds][-1] == 40 - unlabelled
    assert ws.columns["cx"]["kind"] == "scorer" and ws.columns["cx"]["labels_spent"] == report.labels_spent
    assert all(len(v) == 1 and v[0] is not None for v in ws.column("cx"))  # every turn, with the final scorer


def test_cli_train_scorer_and_score_scorer(tmp_path):
    from curate.cli import app

    ws = _workspace(tmp_path)
    runner = CliRunner()
    out = tmp_path / "trained"
    res = runner.invoke(app, ["train-scorer", str(ws.path), "--target", "oracle", "--out", str(out), "--folds", "3"])
    assert res.exit_code == 0, res.output
    assert "length" in res.output and "random" in res.output and "held-out" in res.output
    saved_metrics = Scorer.load(out).metrics
    choice = saved_metrics["chosen_by_kfold"]  # train-scorer chose the ridge's settings on the training folds
    assert choice["chosen"]["alpha"] == Scorer.load(out).alpha and len(choice["candidates"]) == 15
    assert "chosen by 3-fold" in res.output
    lo, hi = saved_metrics["holdout"]["scorer"]["spearman_ci95"]
    assert f"{lo:.2f}..{hi:.2f}" in " ".join(res.output.split())  # the held-out Spearman is printed with its interval
    saved = Scorer.load(out)
    assert saved.imitates["judge"] == "oracle-complexity" and saved.metrics["holdout"]["scorer"]["spearman"] > 0.5
    res = runner.invoke(app, ["score", str(ws.path), "--scorer", str(out), "--column", "oracle_hat"])
    assert res.exit_code == 0, res.output
    assert ws.columns["oracle_hat"]["imitates"] == "oracle-complexity"
    with pytest.warns(CurateWarning, match=r"quality: 1 of the 81 rows computed now failed"):
        res = runner.invoke(app, ["score", str(ws.path), "--scorer", "default"])
    assert res.exit_code == 0, res.output
    assert {"complexity", "quality", "complexity_failure", "quality_failure"} <= set(ws.columns)


def test_labels_that_came_in_the_pool_file_train_a_scorer(tmp_path):
    """Judge labels on some rows of the pool file (a numeric field) are a target like a judge's column; answers
    to one question stay on one side of every split, by instruction or by a --group-by field."""
    from curate.cli import app

    texts, scores = synthetic(n_per_level=8, seed=2)
    records = []
    for i, (text, score) in enumerate(zip(texts, scores, strict=True)):
        for a in range(2):  # two answers per instruction; the second is written out with its history, as MT-bench's
            rec = {"instruction": text if a == 0 else f"### User:\n{text}\n### Assistant:\nearlier answer", "input": "",
                   "output": f"Answer {a} to: {text}", "question": f"q{i}"}
            if i % 3:  # a third of the questions were never judged
                rec["gpt4"] = score + a
            records.append(rec)
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", records))
    data = from_column(ws, "gpt4")
    assert data.reads == ["instruction", "response"] and data.imitates["from"] == "pool file"
    assert len(data) == 2 * sum(1 for i in range(len(texts)) if i % 3) and data.skipped["no value"] == 2 * 14
    assert len(set(data.groups)) == len(data)  # by instruction: the written-out second turn is another group
    by_question = from_column(ws, "gpt4", group_by="question")
    assert len(set(by_question.groups)) == len(data) // 2
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "gpt4", "--group-by", "question",
                                   "--folds", "3", "--out", str(tmp_path / "sc")])
    assert res.exit_code == 0, res.output
    assert "(26 groups)" in res.output and Scorer.load(tmp_path / "sc").imitates["column"] == "gpt4"
    held = Scorer.load(tmp_path / "sc").metrics["holdout"]
    n_test = held["scorer"]["n"]  # two answers per held-out question, labels one apart: one pair within each
    assert held["scorer"]["pairs_within_group"] == held["length"]["pairs_within_group"] == n_test // 2
    # the two answers have one length (length ties: 1/2); the later answer, one point better, reads differently
    assert held["length"]["pairwise_within_group"] == 0.5 < held["scorer"]["pairwise_within_group"]
    assert "pairs of answers to one instruction" in " ".join(res.output.split())
    page = train_scorer(ws, target="gpt4", group_by="question", k=3).evaluation._repr_html_()
    assert "pairs within one instruction" in page and f"({n_test // 2:,})" in page
    # a CSV file's fields are text: its numbers are labels as a sort key reads them, and text that is no number is not
    import csv

    with open(tmp_path / "pool.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["instruction", "output", "gpt4"])
        out.writerows([r["instruction"], r["output"], r.get("gpt4", "")] for r in records)
        out.writerow(["One more question?", "An answer.", "high"])
    csv_ws = Workspace(tmp_path / "csv_ws")
    csv_ws.load(tmp_path / "pool.csv")
    from_csv = from_column(csv_ws, "gpt4")
    assert sorted(from_csv.scores) == sorted(data.scores) and from_csv.skipped["no numeric value"] == 2 * 14 + 1
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "gpt5", "--out", str(tmp_path / "x")])
    assert isinstance(res.exception, ScorerError) and "pool fields" in str(res.exception)
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "gpt4", "--group-by", "questoin",
                                   "--out", str(tmp_path / "x")])  # the group column is named among the pool's fields
    assert "no column 'questoin'" in str(res.exception) and "'question'" in str(res.exception)
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "conversation", "--out", str(tmp_path / "x")])
    assert isinstance(res.exception, ScorerError)  # the rows' own text is never a label


def test_ordinal_head_on_continuous_labels_names_the_ridge_head_without_python_syntax(tmp_path):
    """The CLI said "use head='ridge'": Python-API syntax a command-line user cannot type."""
    from curate.cli import app

    records = [{"instruction": f"Question {i}: explain topic {i} in detail.", "input": "",
                "output": f"Answer {i}.", "gpt4": 1 + i / 20} for i in range(64)]  # 64 distinct labels
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", records))
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "gpt4", "--head", "ordinal",
                                   "--folds", "3", "--out", str(tmp_path / "sc")])
    line = str(res.exception)
    assert isinstance(res.exception, ScorerError) and "distinct labels" in line, res.output
    assert "ridge head" in line and "head='" not in line and "\n" not in line


def test_distil_never_asks_about_a_held_out_question_again(tmp_path):
    """The held-out figure must not be taught: answers that share a held-out row's question (by instruction, or
    by --group-by) are never asked about nor trained on."""
    from curate.scorers import column_labeller

    texts, scores = synthetic(n_per_level=8, seed=2)
    records = [{"instruction": t if a == 0 else f"### User:\n{t}\n### Assistant:\nearlier answer", "input": "",
                "output": f"Answer {a} to: {t}", "question": f"q{i}", "gpt4": s + a}
               for i, (t, s) in enumerate(zip(texts, scores, strict=True)) for a in range(2)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", records))
    question = dict(zip(ws.ids, ws.column("question"), strict=True))

    def asked_again(group_by):
        batches, oracle = [], column_labeller(ws, "gpt4")

        def label_fn(ids):
            batches.append(ids)
            return oracle(ids)

        sc = Scorer(reads=["instruction", "response"], features=["embeddings", "length"])
        distil(ws, label_fn, scorer=sc, n=30, rounds=1, uncertain_k=5, holdout_n=10, group_by=group_by,
               progress=False, write=False)
        assert len(batches[0]) == 10 and sum(map(len, batches)) == 45  # the spend is what was asked for
        held = {question[r] for r in batches[0]}
        return held & {question[r] for b in batches[1:] for r in b}

    assert not asked_again("question")
    assert asked_again(None)  # the written-out second turn is another instruction: only --group-by ties them
    from curate.cli import app

    res = CliRunner().invoke(app, ["distil", str(ws.path), "--label-column", "gpt4", "--group-by", "question",
                                   "-n", "30", "--holdout-n", "10", "--uncertain-k", "5"])
    assert res.exit_code == 0, res.output
    assert "45 of 80 rows labelled" in " ".join(res.output.split())


def test_cli_distil_with_a_label_column(tmp_path):
    from curate.cli import app

    ws = _workspace(tmp_path)
    res = CliRunner().invoke(app, ["distil", str(ws.path), "--label-column", "oracle", "-n", "24", "--rounds", "1",
                                   "--uncertain-k", "8", "--holdout-n", "20", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert "52 of 81 rows labelled" in res.output
    assert ws.columns["oracle_distilled"]["labels_spent"] == 52
    saved = Scorer.load(tmp_path / "d")
    assert saved.metadata["distilled"] is True
    # the final head learns from every label paid for, held-out ones too (a row without a label gives none)
    assert saved.metadata["n_train"] == 52 - saved.metrics["distil"][-1]["label_failures"] > 52 - 20
    # each round chose the ridge's settings on its labelled rows, and the saved head carries the last choice
    last = saved.metrics["distil"][-1]["chosen"]
    assert (saved.alpha, saved.embedding_weight) == (last["alpha"], last["embedding_weight"])
    assert saved.reads == ["instruction"] and saved.features == ["embeddings", "length"]  # as train-scorer fits


def test_distil_in_python_and_on_the_command_line_train_the_same_scorer(tmp_path):
    """distil(ws, column_labeller(ws, "quality"), ...) read the instruction alone, searched no ridge settings and
    wrote a column named 'score', while `curate distil --label-column quality` read what the judge read, searched
    them and wrote quality_distilled: the same labels gave columns up to 2.42 apart on the 1-6 scale."""
    from curate.cli import app
    from curate.scorers import column_labeller

    made = []
    for where in ("cli", "api"):
        (tmp_path / where).mkdir()
        ws = _workspace(tmp_path / where)
        ws.add_column("judged", ws.column("oracle"), {"judge": "quality", "reads": ["instruction", "response"]})
        made.append(ws)
    with pytest.warns(CurateWarning, match=r"judged_distilled: 1 of the 81 rows computed now failed"):
        res = CliRunner().invoke(app, ["distil", str(made[0].path), "--label-column", "judged", "-n", "24",
                                       "--holdout-n", "20", "--uncertain-k", "8"])
    assert res.exit_code == 0, res.output
    with pytest.warns(CurateWarning, match=r"judged_distilled: 1 of the 81 rows computed now failed"):
        report = distil(made[1], column_labeller(made[1], "judged"), n=24, holdout_n=20, uncertain_k=8, progress=False)
    assert report.column == "judged_distilled" and report.scorer.reads == ["instruction", "response"]
    assert "chosen" in report.rounds[-1] and report.scorer.imitates["judge"] == "quality"

    def flat(ws):
        return [np.nan if v is None else v for row in ws.column("judged_distilled") for v in (row or [None])]

    np.testing.assert_allclose(flat(made[1]), flat(made[0]), rtol=1e-6, equal_nan=True)


def test_a_distil_figure_it_could_not_compute_is_a_dash_with_its_reason_never_nan(tmp_path):
    """The distil table showed "-" with no line saying why, and the notebook view showed "nan"."""
    from curate.cli import app

    ws = _workspace(tmp_path)
    res = CliRunner().invoke(app, ["distil", str(ws.path), "--label-column", "oracle", "-n", "24", "--rounds", "0",
                                   "--holdout-n", "2"])  # two held-out labels: no figure is taken
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "round 0: held-out figures not computed: Spearman, Kendall, MAE, pairwise acc of scorer, length " \
           "(fewer than 3 held-out labels)" in text, res.output
    calls: list[list[str]] = []

    def held_out_all_equal(ids: list[str]) -> list[float | None]:
        """The judge's labels, but 3 for every held-out row (the first call): no rank correlation to take."""
        calls.append(ids)
        return [3.0] * len(ids) if len(calls) == 1 else ws.column("oracle", ids)

    report = distil(ws, held_out_all_equal, scorer=Scorer(reads=["instruction"], alpha=1.0), n=24, rounds=0,
                    holdout_n=10, progress=False, write=False)
    assert report.rounds[0]["no_figure"] == {"spearman": "labels_all_equal", "kendall": "labels_all_equal",
                                             "pairwise_accuracy": "labels_all_equal"}
    page = report._repr_html_()
    assert "nan" not in page.lower() and "nan" not in repr(report).lower(), page
    assert "<td>-</td>" in page and ("round 0: held-out figures not computed: Spearman, Kendall, pairwise acc of "
                                     "scorer, length (held-out labels all equal)") in page


def test_cli_distil_with_too_few_labelled_rows_counts_the_labels_and_names_its_options(tmp_path):
    """It said "81 usable rows ...; judge them all instead" of a column with 80 labels, judged already."""
    from curate.cli import app

    ws = _workspace(tmp_path)  # 81 rows, 80 with a label (the unanswered row has none)
    res = CliRunner().invoke(app, ["distil", str(ws.path), "--label-column", "oracle"])  # -n 200 --holdout-n 100
    line = str(res.exception)
    assert isinstance(res.exception, ScorerError), res.output
    assert "80 rows with a label in column 'oracle' (of 81 the scorer can read)" in line, line
    assert "--holdout-n" in line and "-n" in line and "curate train-scorer" in line and "--target oracle" in line
    assert "judge them all" not in line and "usable" not in line and "\n" not in line


# -- DEITA's loop: a multi-turn judge column and Evol labels train scorers ----------------------------------
def _multi_turn_workspace(tmp_path, rows: int = 30) -> tuple[Workspace, list[list[float]]]:
    """Rows of 2-3 user turns from the synthetic levels; returns the workspace and each row's turn levels."""
    rng = random.Random(3)
    records, levels = [], []
    for i in range(rows):
        turn_levels = [rng.randint(1, 5) for _ in range(2 + i % 2)]
        messages = []
        for t, level in enumerate(turn_levels):
            messages += [{"role": "user", "content": LEVELS[level][(i + t) % 3].format(x=rng.choice(FRUITS))},
                         {"role": "assistant", "content": f"Answer {i}.{t}."}]
        records.append({"messages": messages})
        levels.append([float(v) for v in turn_levels])
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "multi.jsonl", records))
    by_conversation = {json.dumps(r["messages"]): lv for r, lv in zip(records, levels, strict=True)}
    return ws, [by_conversation[json.dumps(c)] for c in ws.conversations()]


def test_multi_turn_judge_column_trains_a_scorer(tmp_path):
    ws, levels = _multi_turn_workspace(tmp_path)
    # a judge's per-turn column; every 5th row's last turn failed (no value)
    values = [lv[:-1] + [None] if i % 5 == 0 else lv for i, lv in enumerate(levels)]
    ws.add_column("judge_cx", values, {"kind": "judge", "judge": "complexity", "granularity": "turn", "reducer": "sum"})
    scored_turns = sum(v is not None for row in values for v in row)
    result = train_scorer(ws, target="judge_cx", k=3, seed=0)
    assert len(result.data) == scored_turns > len(ws)  # every scored turn is a label, not one per row
    assert result.scorer.metadata["n_train"] == scored_turns
    assert result.data.skipped == {"no numeric value": sum(i % 5 == 0 for i in range(len(ws)))}
    first = {rid: t[0].instruction for rid, t in zip(ws.ids, ws.turns(), strict=True)}
    # grouped by the row's first instruction; rows that share a turn's text, by one of theirs
    assert set(result.data.groups) <= set(first.values()) and len(set(result.data.groups)) > 10
    train, test = group_split(len(result.data), result.data.groups, 0.2, 0)
    assert not {result.data.groups[i] for i in train} & {result.data.groups[i] for i in test}
    assert not {result.data.turns[i].instruction for i in train} & {result.data.turns[i].instruction for i in test}
    assert result.evaluation.n_train + result.evaluation.n_holdout == scored_turns
    held = result.evaluation.holdout
    assert held["scorer"]["spearman"] > 0.5
    for who in ("scorer", "length"):  # the held-out figures come with their spread
        lo, hi = held[who]["spearman_ci95"]
        assert lo <= held[who]["spearman"] <= hi
    # the scorer writes its own column, never the judge's (issue 13)
    assert result.scorer.column == "judge_cx_scorer" and result.scorer.imitates["judge"] == "complexity"
    # what a scorer reads comes from what the column's producer read (its provenance), not from its name
    ws.add_column("quality_like", values, {"kind": "judge", "judge": "q", "reads": ["instruction", "response"]})
    assert from_column(ws, "quality_like").reads == ["instruction", "response"]
    assert from_column(ws, "judge_cx").reads == ["instruction"]


def test_a_scorer_never_writes_over_pool_file_labels_nor_stores_a_non_score(tmp_path):
    from curate.errors import ScorerError
    from curate.storage.apply import apply_step

    rows = [{"instruction": f"Task {i}: {FRUITS[i % len(FRUITS)]}", "output": "word " * (i + 1), "gpt4": float(i % 9 + 1)}
            for i in range(30)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", rows))
    result = train_scorer(ws, target="gpt4", k=3, seed=0)
    scorer = result.scorer  # the judge's 1-9 labels read on 1-10 (the smallest standard scale holding them), mapped
    assert (scorer.label_range, scorer.output_range) == ((1.0, 10.0), (1.0, 6.0))  # onto DEITA's 1-6
    raw = scorer.predict_features_raw(scorer.featurize(rows))
    mapped = scorer.predict([{"instruction": r["instruction"], "response": r["output"]} for r in rows])
    assert mapped.min() >= 1.0 and mapped.max() <= 6.0 and np.allclose(mapped, 1 + (raw - 1) * 5 / 9)
    for field in ("gpt4", "instruction"):  # labels paid for, and the rows themselves
        with pytest.raises(ScorerError, match=f"column {field!r} is a field of the pool file"):
            apply_step(ws, _named(scorer, field), progress=False)
    assert [v for v in ws.pool["gpt4"]] == [r["gpt4"] for r in rows] and not ws.has_column("gpt4")
    # ... and the name is refused before training, not by the first `curate score` after it
    with pytest.raises(ScorerError, match="column 'instruction' is a field of the pool file.*before training it"):
        train_scorer(ws, target="gpt4", k=3, seed=0, name="instruction")
    broken = _named(scorer, "broken")
    broken.weights = {**broken.weights, "coef": np.full_like(broken.weights["coef"], np.nan)}
    with pytest.warns(CurateWarning, match=r"broken: 30 of the 30 rows computed now failed"):
        result = ws.apply(broken, progress=False)
    assert result.failed == 30 and all(v == [None] for v in ws.column("broken"))
    assert {f.code for fails in ws.failures("broken") for f in fails} == {FailureCode.MODEL_ERROR}
    with pytest.raises(ScorerError, match="row 0 has no response"):
        scorer.predict([{"instruction": "x", "response": "  "}])
    with pytest.raises(ScorerError, match="score 1 is True: every score must be a finite number"):
        scorer.fresh().fit([{"instruction": "a", "response": "b"}] * 2, [1.0, True])


def _named(scorer, name):
    clone = scorer.fresh()
    clone.weights, clone.metadata, clone.name = scorer.weights, scorer.metadata, name
    return clone


def _evol_labels(kind: str) -> list[dict]:
    """A small hand-written Evol label set: per seed, variants of rising level scored 1..3 by the ranker."""
    rows = []
    for s, fruit in enumerate(FRUITS[:8]):
        for step, level in enumerate((1, 3, 5)):
            text = LEVELS[level][s % 3].format(x=fruit)
            row = {"text": text, "score": float(step + 1), "seed_id": f"seed-{s}", "step": step,
                   "operation": "deepening" if step else "seed"}
            if kind == "quality":  # text is the response to the seed's instruction
                row = {**row, "instruction": f"Tell me about {fruit}.",
                       "text": " ".join([f"{fruit.title()} facts, part {k}." for k in range(1 + 4 * step)])}
            rows.append(row)
    return rows


def test_evol_labels_train_a_scorer_through_the_cli(tmp_path):
    from curate.cli import app

    ws = _workspace(tmp_path, with_label=False)
    labels = _evol_labels("complexity")
    ws.add_labels("evol_complexity", labels, {"method": "evol", "kind": "complexity", "scale": [1, 3]})
    out = tmp_path / "from_evol"
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--labels", "evol_complexity", "--out", str(out),
                                   "--folds", "3", "--name", "complexity"])
    assert res.exit_code == 0, res.output
    assert "labels evol_complexity" in res.output and "held-out" in res.output
    scorer = Scorer.load(out)
    assert scorer.reads == ["instruction"] and scorer.metadata["n_train"] == len(labels)
    assert scorer.imitates == {"judge": "complexity", "label_set": "evol_complexity", "method": "evol", "scale": [1, 3]}
    # ... and the trained scorer scores the pool: the loop is closed
    ws.apply(scorer, progress=False)
    by_text = {c[0]["content"]: v for c, v in zip(ws.conversations(), ws.row_values("complexity"), strict=True)}
    texts, levels = synthetic(n_per_level=16, seed=1)
    assert agreement(levels, [by_text[t] for t in texts])["spearman"] > 0.5


def test_evol_quality_labels_fit_directly(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.add_labels("evol_quality", _evol_labels("quality"), {"method": "evol", "kind": "quality"})
    data = from_label_set(ws.labels("evol_quality"), "evol_quality")
    assert data.reads == ["instruction", "response"] and len(data) == 24 and data.turns[0].instruction.startswith("Tell")
    scorer = Scorer(reads=["instruction", "response"], features=["length", "stats"]).fit(ws.labels("evol_quality"))
    short, long = scorer.predict([{"instruction": "Tell me about kiwi.", "response": r} for r in
                                  ("Kiwi facts.", " ".join(f"Kiwi facts, part {k}." for k in range(9)))])
    assert long > short and scorer.metadata["n_train"] == 24


def test_split_settings_that_cannot_work_are_refused_by_name(tmp_path):
    from curate.errors import ScorerError

    rows = [{"instruction": f"question {i % 3}", "output": "a" * (i + 1), "s": float(i % 5 + 1)} for i in range(12)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", rows))
    for kwargs, message in (({"holdout": 1.0}, "holdout .--holdout. is 1.0"), ({"holdout": -0.5}, "is -0.5"),
                            ({"k": 1}, r"k \(--folds\) is 1"),
                            ({}, r"12 labels in 3 groups .* too few for 5 folds after holding 20% of them out: "
                                 r"fewer folds, k= \(CLI: --folds\)")):
        with pytest.raises(ScorerError, match=message):
            train_scorer(ws, target="s", **kwargs)


def test_fine_tuning_settings_the_ridge_kind_ignores_and_impossible_epochs_are_refused(tmp_path):
    """``--epochs 5`` with the ridge kind was accepted and did nothing (the head is fitted in closed form); a
    fine-tuned kind took 0, negative or NaN epochs."""
    from curate.errors import ScorerError

    rows = [{"instruction": f"Task {i}", "output": "word " * (i + 1), "s": float(i % 5 + 1)} for i in range(30)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", rows))
    for kwargs, message in (({"epochs": 5}, "epochs 5: the ridge kind fits its head in closed form"),
                            ({"init": "quality_ce"}, "init quality_ce: the ridge kind fits its head afresh"),
                            ({"device": "cpu"}, "device cpu: the ridge kind")):
        with pytest.raises(ScorerError, match=message):
            train_scorer(ws, target="s", k=3, **kwargs)
    with pytest.raises(ScorerError, match=r"embed_inputs \['instruction'\] .--embed-inputs.: the texts an embedding"):
        train_scorer(ws, target="s", k=3, features=["length"], embed_inputs=["instruction"])  # recorded, unused
    for kwargs in ({"features": ["length"]}, {"embed_inputs": []}):  # the ridge head's: ignored by a fine-tune
        with pytest.raises(ScorerError, match="settings of the ridge kind's head; a cross-encoder reads the texts"):
            train_scorer(ws, target="s", k=3, kind="cross-encoder", **kwargs)
    for epochs in (0, -1.0, float("nan")):  # a fine-tuned kind is given a number of passes it can make
        with pytest.raises(ScorerError, match=f"epochs {epochs!r}: passes over the training labels"):
            train_scorer(ws, target="s", k=3, kind="cross-encoder", epochs=epochs)
    from curate.cli import app

    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "s", "--epochs", "3", "--out",
                                   str(tmp_path / "sc")])
    assert isinstance(res.exception, ScorerError) and "epochs 3.0: the ridge kind" in str(res.exception)
    assert not (tmp_path / "sc").exists()


def test_a_saved_scorer_is_readable_by_whom_the_umask_lets_read(tmp_path):
    """safetensors writes its file 0600: a scorer saved to a team's folder had weights only its trainer could read."""
    import os

    rows = [{"instruction": f"Task {i}", "output": "word " * (i + 1), "s": float(i % 5 + 1)} for i in range(30)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", rows))
    before = os.umask(0o022)
    try:
        folder = train_scorer(ws, target="s", k=3, seed=0).scorer.save(tmp_path / "team" / "sc")
    finally:
        os.umask(before)
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {"head.safetensors": 0o644,
                                                                           "scorer.json": 0o644}


def test_a_damaged_scorer_folder_is_one_error_naming_it(tmp_path):
    from curate.errors import ScorerError
    from curate.scorers import Scorer

    rows = [{"instruction": f"Task {i}", "output": "word " * (i + 1), "s": float(i % 5 + 1)} for i in range(30)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", rows))
    folder = train_scorer(ws, target="s", k=3, seed=0).scorer.save(tmp_path / "sc")
    doc = json.loads((folder / "scorer.json").read_text())
    for damage, message in ((lambda: (folder / "scorer.json").write_text("{broken"), "scorer.json is not"),
                            (lambda: (folder / "scorer.json").write_text(
                                json.dumps({k: v for k, v in doc.items() if k != "alpha"})), "not a readable scorer .KeyError"),
                            (lambda: (folder / "head.safetensors").write_bytes(b"cut"), "head.safetensors: not readable weights")):
        damage()
        with pytest.raises(ScorerError, match=message):
            Scorer.load(folder)
        (folder / "scorer.json").write_text(json.dumps(doc))
        train_scorer(ws, target="s", k=3, seed=0).scorer.save(folder)
    doc = json.loads((folder / "scorer.json").read_text())  # this save's (its weights carry its save id)
    (folder / "scorer.json").write_text(json.dumps({**doc, "head": "ordinal"}))  # ridge weights, another head
    with pytest.raises(ScorerError, match=f"{folder}/head.safetensors holds no classes"):  # when loaded, not scored
        Scorer.load(folder)


def test_a_scorer_saved_again_while_loaded_is_never_read_half_old_half_new(tmp_path):
    """A load beside a loop of saves read scorer.json of one save and the weights of the next about once in 80: a
    scorer no save wrote, with no error. Each save's two files carry one save id; a load that meets two reads again.
    scorer.json copied from another save is named as that."""
    import threading

    texts, scores = synthetic()
    a = Scorer(reads=["instruction"], features=["length"], embed_inputs=[], alpha=1.0).fit(texts, scores)
    b = Scorer(reads=["instruction"], features=["length"], embed_inputs=[], alpha=100.0).fit(texts, scores)
    saved = {a.fingerprint(), b.fingerprint()}
    a.save(tmp_path / "sc")
    saver = threading.Thread(target=lambda: [(a if i % 2 else b).save(tmp_path / "sc") for i in range(40)])
    saver.start()
    loaded = []
    while saver.is_alive():
        loaded.append(Scorer.load(tmp_path / "sc").fingerprint())
    saver.join()
    assert loaded and set(loaded) <= saved  # (how many loads overlap the saves is the machine's: not asserted, it
    # failed under load with other jobs)
    doc = (tmp_path / "sc" / "scorer.json").read_text()
    b.save(tmp_path / "sc")
    (tmp_path / "sc" / "scorer.json").write_text(doc)  # from the save before: the weights are b's
    with pytest.raises(ScorerError, match="the two files of different saves"):
        Scorer.load(tmp_path / "sc")


_KILLED_AFTER_MOVING_ASIDE = """
import os, signal, sys
from pathlib import Path
from curate.scorers import Scorer
out = Path(sys.argv[2]).resolve()
rename = os.replace
def replace(src, dst):  # the kill lands just after the earlier folder is moved away from out
    rename(src, dst)
    if Path(src) == out:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
Scorer.load(sys.argv[1]).save(out)
"""


def test_a_save_killed_in_its_swap_never_leaves_the_folder_missing(tmp_path):
    """Swapped in by two renames (the earlier folder aside, the new one in), a save killed between them left no
    folder: CI's loop of killed saves met it once (``sc`` gone; loads read the copy aside, ``ls`` found nothing).
    The two folders are now exchanged in one step, so the folder is there whatever moment the kill lands."""
    import subprocess
    import sys

    texts, scores = synthetic()
    Scorer(reads=["instruction"], features=["length"], embed_inputs=[], alpha=1.0).fit(texts, scores).save(
        tmp_path / "sc")
    new = Scorer(reads=["instruction"], features=["length"], embed_inputs=[], alpha=2.0).fit(texts, scores)
    new.save(tmp_path / "new")
    proc = subprocess.run([sys.executable, "-c", _KILLED_AFTER_MOVING_ASIDE, str(tmp_path / "new"),
                           str(tmp_path / "sc")], capture_output=True, text=True)
    assert proc.returncode in (0, -9), proc.stderr
    assert sorted(p.name for p in (tmp_path / "sc").iterdir()) == ["head.safetensors", "scorer.json"]
    assert Scorer.load(tmp_path / "sc").alpha == 2.0


def test_a_load_that_lists_a_folder_aside_the_finishing_save_removes_is_not_an_error(tmp_path):
    """Between a save's two renames a load looks for the earlier folder moved aside; the save finishing removed the
    one it listed before its stat: FileNotFoundError out of Scorer.load (the test above failed so once, on two
    busy cores). A listed entry gone at its stat (here: a dead link, deterministically) is skipped."""
    from curate.storage.folders import whole_folder

    texts, scores = synthetic()
    Scorer(reads=["instruction"], features=["length"], embed_inputs=[], alpha=1.0).fit(texts, scores).save(
        tmp_path / "kept")
    (tmp_path / ".sc.0123abcd.old").symlink_to(tmp_path / "gone")  # listed by the glob, gone at its stat
    assert whole_folder(tmp_path / "sc") == tmp_path / "sc"
    (tmp_path / "kept").rename(tmp_path / ".sc.89abcdef.old")  # a save cut between its renames: the earlier one
    assert whole_folder(tmp_path / "sc") == tmp_path / ".sc.89abcdef.old"
    assert Scorer.load(tmp_path / "sc").alpha == 1.0


def test_a_training_result_shows_itself_in_a_line(tmp_path):
    rows = [{"instruction": f"Task {i % 10}", "output": "word " * (i + 1), "s": float(i % 5 + 1)} for i in range(40)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", rows))
    text = repr(train_scorer(ws, target="s", k=3, seed=0))
    assert text.startswith("TrainResult(Scorer('s_scorer'") and "column s: 40 labels in 10 groups" in text
    assert len(text) < 400  # it printed every training turn (47 KB)


_SAVER = """
import sys
from curate.scorers import Scorer
a, b = Scorer.load(sys.argv[1]), Scorer.load(sys.argv[2])
print("ready", flush=True)
while True:
    a.save(sys.argv[3])
    b.save(sys.argv[3])
"""


def test_a_scorer_save_killed_at_any_moment_leaves_one_whole_scorer(tmp_path):
    """The weights were written over the folder's, then scorer.json: a kill between the two left new weights
    beside the old config, and neither scorer loaded ("22 weights for 26 features"). The folder is now swapped in
    whole: whenever the saving process dies, the folder holds the earlier scorer or the new one."""
    import signal
    import subprocess
    import sys
    import time

    texts, scores = synthetic()
    few = Scorer(reads=["instruction"], features=["length"], embed_inputs=[]).fit(texts, scores)
    many = Scorer(reads=["instruction"], features=["length", "stats"], embed_inputs=[]).fit(texts, scores)
    expected = {s.weights["coef"].size: s.predict(texts[:5]) for s in (few, many)}
    assert len(expected) == 2  # two shapes: a mix of the two cannot load
    saver = [sys.executable, "-c", _SAVER, str(few.save(tmp_path / "few")), str(many.save(tmp_path / "many")),
             str(tmp_path / "sc")]
    rng = np.random.default_rng(0)
    for _ in range(12):
        proc = subprocess.Popen(saver, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "ready\n"
        time.sleep(float(rng.uniform(0.05, 0.3)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        loaded = Scorer.load(tmp_path / "sc")
        assert np.allclose(loaded.predict(texts[:5]), expected[loaded.weights["coef"].size])
    assert sorted(p.name for p in (tmp_path / "sc").iterdir()) == ["head.safetensors", "scorer.json"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ScorerError, match="holds other files than a saved scorer .todo.txt."):
        few.save(tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def test_a_scorer_saves_through_a_symlink_and_into_the_current_folder(tmp_path, monkeypatch):
    """The whole-folder save replaced a symlink by a folder (and then failed on it), and `--out .` put its lock
    file inside the folder, which the next save refused as "other files"; the lock beside it was left there for
    good (a `.NAME.save.lock` in the user's folder)."""
    texts, scores = synthetic()
    scorer = Scorer(reads=["instruction"], features=["length"], embed_inputs=[]).fit(texts, scores)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for _ in range(2):
        scorer.save(tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and Scorer.load(tmp_path / "link").fingerprint() == scorer.fingerprint()
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["head.safetensors", "scorer.json"]
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    for _ in range(2):
        scorer.save(".")
    assert sorted(p.name for p in (tmp_path / "here").iterdir()) == ["head.safetensors", "scorer.json"]
    assert Path.cwd() == tmp_path / "here"  # the current folder is written into, never moved away and deleted
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no lock left in the user's folder
    scorer.save(tmp_path / "sc.v2")
    (tmp_path / "sc.v2").rename(tmp_path / ".sc.v2.1a2b3c4d.old")  # sc.v2's save cut between its two renames
    with pytest.raises(ScorerError, match="not a saved scorer"):
        Scorer.load(tmp_path / "sc")  # another folder's backup is never taken for this one's
    scorer.save(tmp_path / "sc")
    assert Scorer.load(tmp_path / "sc.v2").fingerprint() == scorer.fingerprint()  # read from its backup


def test_saves_to_one_folder_from_many_threads_take_turns_and_leave_no_lock(tmp_path):
    """The save's lock is removed when done; a saver that waited on the removed file takes the lock anew, so saves
    still take turns (two at once fail: the second swap finds the folder the first put in place)."""
    import threading

    texts, scores = synthetic()
    scorer = Scorer(reads=["instruction"], features=["length"], embed_inputs=[]).fit(texts, scores)
    errors: list[BaseException] = []

    def save() -> None:
        try:
            for _ in range(5):
                scorer.save(tmp_path / "sc")
        except BaseException as exc:  # noqa: BLE001  (checked below)
            errors.append(exc)

    threads = [threading.Thread(target=save) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sc"]
    assert Scorer.load(tmp_path / "sc").fingerprint() == scorer.fingerprint()


def test_a_scorer_saved_by_the_first_curate_still_loads(tmp_path):
    """Scorers saved before the fine-tuned kinds say ``"kind": "embedding"`` and ``"inputs"``; the kind check added
    with those kinds refused them ("scorer kind 'embedding' unknown") before the reader of the old keys ran."""
    texts, scores = synthetic()
    scorer = Scorer(reads=["instruction"], features=["length"], embed_inputs=[]).fit(texts, scores)
    folder = scorer.save(tmp_path / "sc")
    doc = json.loads((folder / "scorer.json").read_text())
    doc["kind"], doc["inputs"] = "embedding", doc.pop("reads")  # as curate 0.1.0 of 2026-11-21 wrote it
    doc["name"] = "gpt-4o/quality v2"  # no column name: `--column NAME` (named) gives it one
    (folder / "scorer.json").write_text(json.dumps(doc))
    loaded = Scorer.load(folder)
    assert np.array_equal(loaded.named("q2").predict(texts[:5]), scorer.predict(texts[:5]))


def test_a_scorer_of_a_judge_that_declares_its_scale_keeps_that_scale_not_its_labels_span(tmp_path):
    """A 1-6 judge whose labels spanned 2.76..3.65 gave a scorer mapping that span onto 1-6: on the rows it was
    trained on its column read 4.31 on average where the judge read 3.35 (a row judged 2.77 got 1.15)."""
    rows = [{"instruction": f"Task {i}: describe the {FRUITS[i % len(FRUITS)]} " + "in detail " * (i % 4),
             "output": "word " * (i + 1)} for i in range(40)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", rows))
    labels = [2.76 + 0.89 * (i % 9) / 8 for i in range(len(ws))]
    ws.add_column("quality", labels, {"kind": "judge", "judge": "quality", "scale": [1, 6],
                                      "reads": ["instruction", "response"]})
    scorer = train_scorer(ws, target="quality", k=3, seed=0).scorer
    assert (scorer.label_range, scorer.output_range) == ((1.0, 6.0), (1.0, 6.0))
    predicted = scorer.predict([t[0] for t in ws.turns()])
    assert 2.7 <= predicted.min() and predicted.max() <= 3.7  # on the judge's own scale, as its labels
    ws.add_column("gpt4", [2 * v for v in labels], {"kind": "judge", "judge": "gpt4"})  # no declared scale
    # no declared scale: the smallest standard judge scale holding its labels (5.52..7.3), never their span
    assert train_scorer(ws, target="gpt4", k=3, seed=0).scorer.label_range == (1.0, 10.0)


class _RoundedBeforeCacheUse(Scorer):
    """A user's scorer written when predict took (rows, cache_dir, on_rows), before cache_use."""

    def predict(self, rows, cache_dir=None, on_rows=None):
        return np.round(super().predict(rows, cache_dir=cache_dir, on_rows=on_rows))


class _LengthBeforeCaches(Scorer):
    """A user's scorer written when predict took the rows alone."""

    def predict(self, rows):
        return np.array([float(len(turn.instruction)) for turn in rows])


def test_a_scorer_subclass_whose_predict_predates_cache_use_still_scores(tmp_path):
    """Scorer.run passes predict cache_use (and cache_dir, on_rows): a subclass written without them failed every
    run with "predict() got an unexpected keyword argument 'cache_use'". It is called with the keywords it takes."""
    ws = _workspace(tmp_path, with_label=False)
    texts, scores = synthetic()
    rounded = _RoundedBeforeCacheUse(reads=["instruction"], alpha=1.0, name="rounded").fit(texts, scores)
    result = ws.apply(rounded, progress=False)
    assert result.failed == 0 and result.computed == len(ws)
    instructions = [turn for row in ws.turns() for turn in row]
    expected = np.round(Scorer.predict(rounded, instructions))
    assert [v[0] for v in ws.column("rounded")] == list(expected)
    ws.apply(_LengthBeforeCaches(name="length"), progress=False)
    assert [v[0] for v in ws.column("length")] == [float(len(turn.instruction)) for turn in instructions]
    with pytest.raises(TypeError, match="unexpected keyword argument 'batch'"):  # only curate's keywords are dropped
        _LengthBeforeCaches().predict(instructions, batch=2)


class _LengthMixin:
    """A predict kept in a mixin that is no Scorer, written with the rows alone."""

    def predict(self, rows):
        return np.array([float(len(turn.instruction)) for turn in rows])


class _LengthFromMixin(_LengthMixin, Scorer):
    pass


class _LengthStatic(Scorer):
    @staticmethod
    def predict(rows):
        return np.array([float(len(turn.instruction)) for turn in rows])


@pytest.mark.parametrize("kind", [_LengthFromMixin, _LengthStatic])
def test_an_older_predict_from_a_mixin_or_a_staticmethod_still_scores(tmp_path, kind):
    """The older-signature adapter read only the class's own functions: a predict inherited from a mixin that is
    no Scorer, or a staticmethod, still failed every run on 'cache_use'."""
    ws = _workspace(tmp_path, with_label=False)
    result = ws.apply(kind(name="length"), progress=False)
    assert result.failed == 0 and result.computed == len(ws)
    instructions = [turn for row in ws.turns() for turn in row]
    assert [v[0] for v in ws.column("length")] == [float(len(turn.instruction)) for turn in instructions]


def test_a_figure_missing_for_a_reason_this_curate_does_not_know_is_shown_with_its_code():
    """A scorer saved by a newer curate may give a no_figure code this one lacks: the report and the scorer's view
    raised ValueError on it, where the figure is shown missing with the code as its reason."""
    from curate.scorers.metrics import figures_text, missing_figure_text

    metrics = {"spearman": None, "kendall": 0.5, "no_figure": {"spearman": "some_newer_reason"}}
    assert figures_text(metrics) == "spearman - (reason code 'some_newer_reason'), kendall 0.500"
    assert "reason code 'some_newer_reason'" in missing_figure_text({"scorer": {"spearman": "some_newer_reason"}})


def test_distil_says_when_its_head_settings_were_chosen_on_few_folds(tmp_path):
    """distil kept only the settings its K-fold search chose: with labels nearly all equal, most folds gave no
    Spearman, and train-scorer said 'chosen on the Spearman of 2 of 5 folds' while distil said nothing."""
    from curate.cli import app

    texts, _ = synthetic(n_per_level=8, seed=3)
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", [{"instruction": t, "output": f"An answer to: {t}"} for t in texts]))
    ws.add_column("oracle", [[2.0] if i % 12 == 5 else [1.0] for i in range(len(texts))],
                  {"judge": "oracle-complexity", "model": "synthetic"})  # 1 label in 12 differs
    res = CliRunner().invoke(app, ["distil", str(ws.path), "--label-column", "oracle", "-n", "30", "--rounds", "0",
                                   "--holdout-n", "6", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    note = Scorer.load(tmp_path / "d").metrics["distil"][0]["few_folds"]  # the round's record carries it too
    assert note.startswith("chosen on the Spearman of ") and "with held-out labels all equal" in note, note
    text = " ".join(res.output.split())
    assert ("round 0: head settings chosen by 5-fold Spearman on its labelled rows: alpha " in text
            and f"candidates); {note}" in text), res.output
