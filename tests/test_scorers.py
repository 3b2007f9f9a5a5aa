"""Trained scorers: fit/predict/save/load, agreement metrics, shipped defaults, drop-in scoring, distillation."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from curate.scorers import (
    Scorer,
    ScorerError,
    agreement,
    calibration,
    distil,
    load_default,
    pairwise_accuracy,
    score_workspace,
)
from curate.session import Workspace
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
    m = agreement([1, 2, 3, 4], [2, 3, 4, 5])
    assert m["spearman"] == pytest.approx(1.0) and m["kendall"] == pytest.approx(1.0)
    assert m["mae"] == pytest.approx(1.0) and m["pairwise_accuracy"] == 1.0 and m["n"] == 4
    assert agreement([1, 2, 3, 4], [4, 3, 2, 1])["spearman"] == pytest.approx(-1.0)
    cal = calibration(list(range(10)), list(range(10)), bins=5)
    assert [c["n"] for c in cal] == [2] * 5
    assert [c["mean_predicted"] for c in cal] == [c["mean_label"] for c in cal] == [0.5, 2.5, 4.5, 6.5, 8.5]


def test_fit_predict_save_load_roundtrip(tmp_path):
    texts, scores = synthetic()
    train_t, train_y, test_t, test_y = texts[:45], scores[:45], texts[45:], scores[45:]
    scorer = Scorer("embedding", inputs=["instruction"], alpha=1.0, name="complexity",
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
    np.testing.assert_allclose(again.predict(test_t), pred, atol=1e-4)
    # dict rows read the same text as plain strings
    np.testing.assert_allclose(again.predict([{"instruction": t} for t in test_t]), pred, atol=1e-5)


def test_ordinal_head_and_output_scale():
    texts, scores = synthetic()
    scorer = Scorer(head="ordinal", C=1.0, label_range=(1, 5), output_range=(1, 6)).fit(texts[:45], scores[:45])
    pred = scorer.predict(texts[45:])
    assert 1.0 <= pred.min() and pred.max() <= 6.0
    assert agreement(scores[45:], pred)["spearman"] > 0.8
    np.testing.assert_allclose(scorer.to_output_scale([1, 3, 5]), [1.0, 3.5, 6.0])


def test_scorer_refuses_bad_inputs():
    with pytest.raises(ScorerError, match="not available"):
        Scorer("lm-digit")
    with pytest.raises(ScorerError, match="two inputs"):
        Scorer(features=["product"])
    two = Scorer(inputs=["instruction", "response"])
    with pytest.raises(ScorerError, match="not strings"):
        two.fit(["a", "b"], [1, 2])
    with pytest.raises(ScorerError, match="no response"):
        two.fit([{"instruction": "a"}, {"instruction": "b"}], [1, 2])
    with pytest.raises(ScorerError, match="not fitted"):
        Scorer().predict(["x"])


def test_shipped_defaults_load_offline_and_predict_in_range():
    rows = [{"instruction": "What is 2 + 2?", "response": "4"},
            {"instruction": "Prove that there are infinitely many primes.",
             "response": "Suppose finitely many primes p1..pn; then p1*...*pn + 1 has a prime factor not in the list."}]
    for name in ("complexity", "quality"):
        scorer = load_default(name)
        assert scorer.output_range == (1.0, 6.0)
        assert scorer.imitates["judge"] == name and scorer.metrics["holdout"]["scorer"]["spearman"] > 0
        pred = scorer.predict(rows)
        assert pred.shape == (2,) and np.all((pred >= 1) & (pred <= 6))
    assert Scorer.load("complexity").inputs == ["instruction"]


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


def test_drop_in_scoring_writes_columns_and_provenance(tmp_path):
    ws = _workspace(tmp_path, with_label=False)
    summary = score_workspace(ws, load_default("quality"))
    assert summary["column"] == "quality" and summary["failed"] == 1 and summary["scored"] == len(ws) - 1
    prov = ws.columns["quality"]
    assert prov["kind"] == "scorer" and prov["imitates"] == "quality" and prov["scale"] == [1.0, 6.0]
    values, failures = ws.column("quality"), ws.column("quality_failure")
    empty = [i for i, f in enumerate(failures) if f is not None]
    assert len(empty) == 1 and values[empty[0]] is None and "no response" in failures[empty[0]]
    assert all(1 <= v <= 6 for v in values if v is not None)
    score_workspace(ws, "complexity", column="cx")  # a complexity scorer needs no response
    assert ws.column("cx_failure") == [None] * len(ws)


def test_distil_spends_fewer_labels_and_agrees_with_oracle(tmp_path):
    ws = _workspace(tmp_path)
    calls: list[int] = []

    def oracle(ids: list[str]) -> list[float | None]:
        calls.append(len(ids))
        return ws.column("oracle", ids)

    report = distil(ws, oracle, scorer=Scorer(inputs=["instruction"], alpha=1.0, name="cx",
                                              imitates={"judge": "oracle-complexity"}),
                    n=24, rounds=2, uncertain_k=8, holdout_n=20, n_bootstrap=4)
    assert report.labels_spent == sum(calls) == 20 + 24 + 8 + 8
    assert report.labels_spent < report.rows_total
    assert report.holdout["spearman"] > 0.7
    assert [r["labelled"] for r in report.rounds][-1] == 40  # 24 random + 2 x 8 uncertain (the empty row has a label None)
    assert ws.columns["cx"]["kind"] == "scorer" and ws.columns["cx"]["labels_spent"] == report.labels_spent


def test_cli_train_scorer_and_score_scorer(tmp_path):
    from curate.cli import app

    ws = _workspace(tmp_path)
    runner = CliRunner()
    out = tmp_path / "trained"
    res = runner.invoke(app, ["train-scorer", str(ws.path), "--target", "oracle", "--kind", "embedding",
                              "--out", str(out), "--folds", "3"])
    assert res.exit_code == 0, res.output
    assert "length" in res.output and "random" in res.output and "held-out" in res.output
    saved = Scorer.load(out)
    assert saved.imitates["judge"] == "oracle-complexity" and saved.metrics["holdout"]["scorer"]["spearman"] > 0.5
    res = runner.invoke(app, ["score", str(ws.path), "--scorer", str(out), "--column", "oracle_hat"])
    assert res.exit_code == 0, res.output
    assert ws.columns["oracle_hat"]["imitates"] == "oracle-complexity"
    res = runner.invoke(app, ["score", str(ws.path), "--scorer", "default"])
    assert res.exit_code == 0, res.output
    assert {"complexity", "quality", "complexity_failure", "quality_failure"} <= set(ws.columns)


def test_per_turn_scoring_writes_one_score_per_user_turn(tmp_path, shapes):
    ws = Workspace(tmp_path / "ws")
    ws.load(shapes["sharegpt"])  # two user turns per row
    summary = score_workspace(ws, "complexity", per_turn=True)
    assert summary["failed"] == 0
    values = ws.column("complexity")
    assert all(len(v) == 2 and all(1 <= x <= 6 for x in v) for v in values)
    assert ws.columns["complexity"]["turns"] == "each user turn"


def test_cli_distil_with_a_label_column(tmp_path):
    from curate.cli import app

    ws = _workspace(tmp_path)
    res = CliRunner().invoke(app, ["distil", str(ws.path), "--label-column", "oracle", "-n", "24", "--rounds", "1",
                                   "--uncertain-k", "8", "--holdout-n", "20", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert "52 of 81 rows labelled" in res.output
    assert ws.columns["oracle_distilled"]["labels_spent"] == 52
    assert Scorer.load(tmp_path / "d").metadata["distilled"] is True
