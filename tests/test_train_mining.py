"""Instruction Mining: the fit recovers a planted linear rule; end to end on real (tiny, cached) fine-tunes the
selector fits a rule, writes the column with the rule as provenance and keeps the rows it ranks best."""

import numpy as np
import pytest

from curate.errors import CurateError
from curate.train.mining import fit_rule, indicator_matrix
from tests.conftest import write_jsonl
from tests.train_fixtures import learnable_rows, tiny_lm  # noqa: F401  (the session fixture, used through request.getfixturevalue)


def test_fit_recovers_planted_rule():
    rng = np.random.default_rng(0)
    center, scale = np.array([100.0, 5.0, 0.8]), np.array([30.0, 2.0, 0.1])
    means = center + scale * rng.normal(size=(30, 3))
    beta = np.array([-0.2, 0.05, 0.1])
    log_loss = 1.5 + ((means - center) / scale) @ beta + rng.normal(scale=1e-3, size=30)
    rule = fit_rule(means, np.exp(log_loss), ["length", "quality", "ifd"], center, scale)
    assert np.allclose(rule.coefficients, beta, atol=5e-3)
    assert rule.intercept == pytest.approx(1.5, abs=5e-3)
    assert rule.r2 > 0.999 and rule.adjusted_r2 > 0.999
    # the row score is -Σ β z: long rows (β < 0 lowers the loss) score higher
    assert rule.score(np.array([[160.0, 5.0, 0.8], [40.0, 5.0, 0.8]])).argmax() == 0
    assert "R²" in rule._repr_html_()
    with pytest.raises(CurateError, match="more subsets"):
        fit_rule(means[:4], np.exp(log_loss[:4]), ["a", "b", "c"], center, scale)


def _workspace(tmp_path, n=64):
    from curate.session import Workspace

    noisy = tuple(range(1, n, 2))               # every other row's answer is word salad
    convs = learnable_rows(n, noisy=noisy)
    src = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": c[0]["content"], "output": c[1]["content"]}
                                               for c in convs])
    ws = Workspace(tmp_path / "ws")
    ws.load(src)
    clean = {ws.ids[i] for i in range(n) if i not in noisy}
    ws.add_column("quality", [1.0 if i in clean else 0.0 for i in ws.ids], {"kind": "planted"})
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"instruction": c[0]["content"], "output": c[1]["content"]}
                                                 for c in learnable_rows(8, seed=1)])
    return ws, clean, evals


def test_mining_on_real_finetunes(request, tmp_path):
    lm = request.getfixturevalue("tiny_lm")
    ws, clean, evals = _workspace(tmp_path)
    names, x = indicator_matrix(ws)
    assert names == ["length", "quality"] and x.shape == (64, 2)
    sel = ws.select(method="mining", name="mined", budget=16, eval_file=str(evals), model=str(lm),
                    subsets=3, subset_size=6, epochs=1, indicators=["quality"], device="cpu",
                    train={"learning_rate": 1e-2, "batch_size": 4})
    rule = ws.artifact("mining")
    assert rule["indicators"] == ["quality"] and len(rule["subsets"]) == 3
    scores = dict(zip(ws.ids, ws.row_values("mining"), strict=True))
    kept = [scores[i] for i in sel.ids]
    assert len(kept) == 16 and min(kept) >= max(v for i, v in scores.items() if i not in set(sel.ids))
    # the rule's own sign decides which rows rank first
    assert set(sel.ids) <= clean if rule["coefficients"][0] < 0 else not set(sel.ids) & clean
    prov = ws.column_provenance("mining")
    assert prov["kind"] == "instruction_mining" and "coefficients" in prov["rule"]
    # a second run re-fits from the cached fine-tunes and eval losses: no new run folder
    runs = sorted(p.name for p in (ws.cache_dir / "train" / "mining").iterdir())
    again = ws.select(method="mining", name="mined2", budget=16, eval_file=str(evals), model=str(lm),
                      subsets=3, subset_size=6, epochs=1, indicators=["quality"], device="cpu",
                      train={"learning_rate": 1e-2, "batch_size": 4})
    assert again.ids == sel.ids
    assert sorted(p.name for p in (ws.cache_dir / "train" / "mining").iterdir()) == runs
    # an eval row with no answer is counted and left out (it was averaged away as NaN, in silence)
    unanswered = tmp_path / "eval-unanswered.jsonl"
    unanswered.write_text(evals.read_text() + '{"instruction": "Name three rivers."}\n')
    third = ws.select(method="mining", name="mined3", budget=16, eval_file=str(unanswered), model=str(lm),
                      subsets=3, subset_size=6, epochs=1, indicators=["quality"], device="cpu",
                      train={"learning_rate": 1e-2, "batch_size": 4})
    counted = ws.artifact("mining")
    assert third.ids == sel.ids and (counted["eval_rows"], counted["eval_rows_without_answer"]) == (8, 1)


def test_an_eval_file_without_answers_is_refused_before_any_fine_tune(tmp_path):
    ws, _, _ = _workspace(tmp_path, n=8)
    evals = write_jsonl(tmp_path / "questions.jsonl", [{"instruction": "Name three rivers."}, {"instruction": "Why?"}])
    with pytest.raises(CurateError, match="none of the 2 eval rows has an answer"):
        ws.select(method="mining", name="bad", budget=4, eval_file=str(evals), subsets=3, subset_size=2,
                  indicators=["quality"], model=str(tmp_path / "no-model-needed"))
    assert not (ws.cache_dir / "train").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"train": {"learning_rat": 1e-2}}, "train= has no setting 'learning_rat'"),
    ({"train": {"epochs": 2}}, "train= has no setting 'epochs'"),
    ({"train": {"batch_size": 0}}, "training setting batch_size must be >= 1"),
    ({"subsets": 2}, "2 subsets cannot fit 1 indicators"),
    ({"subset_size": 0}, "subset_size must be >= 1"),
    ({"indicators": "quality,nope"}, "no column 'nope'"),
    ({"budget": None}, "the mining selector needs budget= or fraction="),
    ({"fraction": 1.5, "budget": None}, "fraction must be in"),
])
def test_bad_mining_settings_are_refused_before_any_fine_tune(tmp_path, kwargs, message):
    ws, _, evals = _workspace(tmp_path, n=8)
    args = {"name": "bad", "budget": 4, "eval_file": str(evals), "subsets": 3, "subset_size": 2,
            "indicators": ["quality"], "model": str(tmp_path / "no-model-needed"), **kwargs}
    with pytest.raises(CurateError, match=message):
        ws.select(method="mining", **args)
    assert not (ws.cache_dir / "train").exists()


def test_the_default_indicators_read_the_score_a_run_wrote_beside_a_pool_field_of_its_name(tmp_path):
    """A `curate run` on a pool with its own `quality` field writes its score as quality_score; the mining defaults
    read columns named exactly `quality`, so the quality indicator was left out without a word."""
    from curate.session import Workspace

    rows = [{"instruction": f"Task {i}.", "output": "word " * (i + 1), "quality": 9} for i in range(5)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", rows))
    ws.add_column("quality_score", [float(i) for i in range(5)], {"kind": "scorer", "imitates": "quality"})
    names, x = indicator_matrix(ws)
    assert names == ["length", "quality_score"]
    assert x[:, 1].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # the run's scores, never the pool's 9s


def test_a_damaged_cached_loss_and_a_foreign_run_record_are_errors_naming_the_file(tmp_path):
    """A cached subset loss that is not JSON raised json's "Expecting value: line 2 column 1" and a ``run.json`` of
    another tool in a fine-tune's out_dir a bare KeyError('config'): neither named the file."""
    from curate.train.harness import TrainRun
    from curate.train.mining import _cached_loss

    (tmp_path / "k.json").write_text('{"loss":\n')
    with pytest.raises(CurateError, match=r"k\.json"):
        _cached_loss(tmp_path, "k", lambda: 1.0)
    (tmp_path / "k.json").write_text('{"other": 2}')
    with pytest.raises(CurateError, match=r"k\.json: damaged cached loss"):
        _cached_loss(tmp_path, "k", lambda: 1.0)
    assert _cached_loss(tmp_path, "fresh", lambda: 2.5) == 2.5 and _cached_loss(tmp_path, "fresh", lambda: 0) == 2.5
    run = tmp_path / "run"
    run.mkdir()
    for text in ('{"name": "another tool"}', "not json", '{"config": {"epochs": 1}}'):
        (run / "run.json").write_text(text)
        with pytest.raises(CurateError, match=r"run\.json"):
            TrainRun(run)


def test_curate_select_shows_a_bar_over_the_mining_fine_tunes(request, tmp_path):
    """`curate select --method mining` ran its K fine-tunes (hours on a CPU) with no output at all; a bar counts
    their rows now, and a re-run, whose fine-tunes and losses are cached, fills it at once."""
    from tests.cli_in_process import curate_in_process

    lm = request.getfixturevalue("tiny_lm")
    ws, _, evals = _workspace(tmp_path, n=12)
    args = ["select", tmp_path / "ws", "--method", "mining", "--budget", "4", "--param", f"model={lm}", "--param",
            f"eval_file={evals}", "--param", "subsets=3", "--param", "subset_size=4", "--param", "indicators=quality",
            "--param", "device=cpu"]
    for name in ("mined", "again"):
        got = curate_in_process(*args, "--name", name)
        assert got.returncode == 0, got.stderr
        assert "Instruction Mining fine-tunes: 100%" in got.stderr and "12/12" in got.stderr, got.stderr


def test_the_subsets_spread_enough_for_the_rule_to_find_a_planted_effect(tmp_path, monkeypatch):
    """Uniform random subsets of one pool have nearly equal mean indicators (1,000 rows of pool_30k: response
    length's means within ±0.06 pool std), so the rule fitted the fine-tunes' noise. Here each subset's eval loss is
    planted (log loss = 1 - 0.3 · mean z of quality, plus noise of 0.03, no fine-tune): uniform subsets of 150 of
    600 rows spread their means by ~0.07 std and the fit missed the effect; leaning subsets find it."""
    import curate.train.mining as mining
    from curate.session import Workspace

    rows = 600
    src = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"Question {i}?", "output": "An answer."}
                                               for i in range(rows)])
    ws = Workspace(tmp_path / "ws")
    ws.load(src)
    quality = np.random.default_rng(1).normal(size=rows)
    ws.add_column("quality", quality.tolist(), {"kind": "planted"})
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"instruction": "Why?", "output": "Because."}])
    noise = np.random.default_rng(2)

    def planted_loss(ws, pick, *args):
        z = (quality[pick].mean() - quality.mean()) / quality.std()
        return float(np.exp(1.0 - 0.3 * z + noise.normal(scale=0.03)))

    monkeypatch.setattr(mining, "_subset_loss", planted_loss)
    rule = mining.mine(ws, eval_file=evals, model=tmp_path / "no-model-needed", subsets=8, subset_size=150,
                       indicators=["quality"])
    means = np.array([s["quality"] for s in rule.subsets])
    assert means.std() / quality.std() > 0.3  # the subsets lean different ways
    assert rule.coefficients[0] == pytest.approx(-0.3, rel=0.25) and rule.r2 > 0.9
    assert ws.artifact("mining")["tilt"] == 1.0  # how the subsets were drawn, with the rule


def test_a_tilt_too_steep_to_draw_a_subset_is_refused_by_name():
    """At tilt 1000 all but a few rows' weights round to 0: numpy's 'Fewer non-zero entries in p than size' (a
    ValueError naming no setting, exit 1) came out of the first subset's draw."""
    from curate.errors import OptionError
    from curate.train.mining import tilted_subset

    pool, z = np.arange(3, 500, 2), np.random.default_rng(1).normal(size=(600, 3))
    with pytest.raises(OptionError, match=r"tilt 1000\.0: the weights of all but \d+ of the 249 rows round to 0"):
        tilted_subset(np.random.default_rng(0), pool, z, 240, 1000.0)
    assert len(tilted_subset(np.random.default_rng(0), pool, z, 240, 1.0)) == 240  # the default draws as before
