"""Issue 13: the cross-encoder kind (tiny random MiniLM-shaped model), the joint pointwise+pairwise head,
constraint chains, quantile thresholds, and scorers never writing over a judge's labels."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from curate.errors import CurateError, ScorerError
from curate.scorers import Scorer
from curate.scorers.constraints import (
    EVAL_FAMILIES,
    PHRASING,
    TRAIN_FAMILIES,
    chain_pairs,
    constraint_chains,
    filler_twins,
    order_accuracy,
    rewritten_chains,
)
from curate.scorers.features import requirement_stats
from curate.scorers.head import fit_joint_head, predict_head
from curate.session import Workspace


def _quality_rows(n: int = 24, seed: int = 0):
    rng = random.Random(seed)
    rows, scores = [], []
    for i in range(n):
        good = i % 2 == 0
        words = rng.randint(20, 40) if good else rng.randint(1, 4)
        rows.append({"instruction": f"Question {i}: explain topic {i % 5}.",
                     "response": " ".join(["detailed reasoning"] * words) if good else "no idea"})
        scores.append(8.0 + rng.random() if good else 2.0 + rng.random())
    return rows, scores


def forward_passes(monkeypatch) -> list[int]:
    """The rows of each forward pass the cross-encoder runs from now on (curate's own predict_net, wrapped)."""
    import curate.scorers.crossencoder as ce

    scored: list[int] = []
    predict_net = ce.predict_net

    def counted(net, tok, instructions, *args, **kwargs):
        scored.append(len(instructions))
        return predict_net(net, tok, instructions, *args, **kwargs)

    monkeypatch.setattr(ce, "predict_net", counted)
    return scored


def test_cross_encoder_fit_predict_save_load(tiny_base, tmp_path):
    from curate.scorers.finetuned import CrossEncoderScorer

    rows, scores = _quality_rows(16)
    sc = CrossEncoderScorer(name="quality_ce_test", imitates={"judge": "quality", "model": "synthetic"},
                            max_length=32, base=tiny_base)
    pairs = [(rows[0], rows[1], 1.0), (rows[3], rows[2], 0.0)]
    sc.fit(rows, scores, label_range=(1, 10), epochs=2, batch_size=8, lr=1e-3, pairs=pairs)
    pred = sc.predict(rows)
    assert pred.shape == (len(rows),) and 1.0 <= pred.min() and pred.max() <= 6.0
    assert np.ptp(pred) > 0.5  # calibrated onto the label spread, not squeezed to a mean
    import curate.scorers.crossencoder as ce

    net, tok = sc._load_net()  # the LoRA-merged copy that predicts scores what the adapter-carrying net scores
    unmerged = ce.predict_net(net, tok, [r["instruction"] for r in rows], [r["response"] for r in rows], max_length=32)
    np.testing.assert_allclose(sc.predict_raw(rows), unmerged, atol=1e-4)
    out = sc.save(tmp_path / "ce")
    assert (out / "adapter.safetensors").stat().st_size <= 2 * 1024 * 1024
    loaded = Scorer.load(out)  # dispatches on scorer.json's kind
    assert type(loaded).__name__ == "CrossEncoderScorer" and loaded.column == "quality_ce_test"
    np.testing.assert_allclose(loaded.predict(rows), pred, atol=1e-4)
    assert loaded.fingerprint() == sc.fingerprint()
    assert json.loads((out / "scorer.json").read_text())["imitates"]["judge"] == "quality"


def test_a_killed_fine_tune_continues_where_it_stopped(tiny_base, tmp_path, monkeypatch):
    """A fit killed mid-way and run again continues from its saved progress and ends with the adapter an unbroken
    fit gets; another run (another seed) does not pick that progress up; the same fit run once more trains nothing."""
    import curate.scorers.checkpoint as checkpoint
    from curate.scorers.finetuned import CrossEncoderScorer

    monkeypatch.setattr(checkpoint, "SAVE_EVERY_S", 0.0)  # save after every step
    rows, scores = _quality_rows(16)
    cache = tmp_path / "cache"

    class Killed(Exception):
        pass

    def fit(seed: int = 0, kill_at: int | None = None, cache_dir=cache):
        events.clear()

        def on_step(step: int, steps: int) -> None:
            events.append(("step", step, steps))
            if step == kill_at:
                raise Killed
        sc = CrossEncoderScorer(max_length=32, base=tiny_base)
        return sc.fit(rows, scores, epochs=3, batch_size=4, lr=1e-3, seed=seed, on_step=on_step, checkpoint_dir=cache_dir,
                      on_resume=lambda step, steps: events.append(("resume", step, steps)))

    events: list[tuple[str, int, int]] = []

    unbroken = fit(cache_dir=None)
    with pytest.raises(Killed):
        fit(kill_at=6)
    assert len(list((cache / "finetune").glob("*.pt"))) == 1
    other = fit(seed=1)  # other settings: starts afresh, beside the killed run's progress
    assert other.metadata["train"]["resumed_after_step"] is None and events[0] == ("step", 1, 12)
    resumed = fit()
    assert resumed.metadata["train"]["resumed_after_step"] == 5
    assert events[:2] == [("resume", 5, 12), ("step", 6, 12)]  # said before the first step it takes
    assert resumed.metadata["train"]["steps"] == unbroken.metadata["train"]["steps"] == 12
    for name, value in unbroken.weights.items():
        np.testing.assert_allclose(resumed.weights[name], value, atol=1e-6, err_msg=name)
    again = fit(kill_at=1)  # a finished fit is read back: no step runs (one would be killed)
    assert again.metadata["train"]["resumed_after_step"] == 12 and events == [("resume", 12, 12)]
    np.testing.assert_array_equal(again.weights["calibration.x"], resumed.weights["calibration.x"])
    saved = sorted((cache / "finetune").glob("*.pt"))
    assert len(saved) == 2  # the two finished runs, no temporary files
    for path in saved:
        path.write_bytes(path.read_bytes()[:100])  # cut short
    with pytest.raises(ScorerError, match="unreadable training progress.*delete it to train afresh"):
        fit()


def test_a_resumed_train_scorer_says_so_before_its_first_step(tiny_base, tmp_path, monkeypatch, capsys):
    """The progress bar of a train-scorer run that continues a killed one says it resumes (it jumped 0 -> k/n)."""
    import curate.scorers.checkpoint as checkpoint
    from curate.scorers import train_scorer

    monkeypatch.setattr(checkpoint, "SAVE_EVERY_S", 0.0)  # save after every step
    ws = _ws(tmp_path)
    ws.add_column("judge_q", [[float(1 + i % 3)] for i in range(len(ws))],
                  {"kind": "judge", "judge": "q", "reads": ["instruction", "response"]})

    class Killed(Exception):
        pass

    step_done = checkpoint.TrainingCheckpoint.step_done

    def killed_after_two(self, step, last, parts):
        step_done(self, step, last, parts)
        if step == 2:
            raise Killed

    def run(progress: bool):
        return train_scorer(ws, target="judge_q", kind="cross-encoder", base=tiny_base, epochs=3, holdout=0.3,
                            progress=progress)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint.TrainingCheckpoint, "step_done", killed_after_two)
        with pytest.raises(Killed):
            run(False)
    capsys.readouterr()
    result = run(True)
    steps = result.scorer.metadata["train"]["steps"]
    assert f"fine-tuning cross-encoder, resuming from step 2/{steps}" in capsys.readouterr().err
    run(True)
    assert "fine-tuning cross-encoder, finished before: read back from the workspace cache" in capsys.readouterr().err


def test_cross_encoder_predictions_are_cached_and_resume(tiny_base, tmp_path):
    from curate.scorers.finetuned import CrossEncoderScorer

    rows, scores = _quality_rows(12)
    sc = CrossEncoderScorer(name="q", max_length=32, base=tiny_base).fit(rows, scores, epochs=1, batch_size=4)
    first = sc.predict(rows, cache_dir=tmp_path)
    assert list((tmp_path / "scorer_ce").glob("*/shard-*")) and not list((tmp_path / "scorer_ce").glob("*/.tmp-*"))
    np.testing.assert_allclose(sc.predict(rows, cache_dir=tmp_path), first)


# Scores 300 rows through the cache; once the first chunk is on disk it says so and waits to be killed.
_KILLED_PASS = """
import sys, time
import curate.scorers.prediction_cache as cache
from curate.scorers import Scorer
keep = cache.store
def store_then_wait(folder, keys, values):
    keep(folder, keys, values)
    print(len(keys), flush=True)
    time.sleep(600)
cache.store = store_then_wait
cache.PART_EVERY_S = 0  # each chunk kept as it ends (a real pass keeps them every PART_EVERY_S seconds)
sys.path.insert(0, sys.argv[3])
from tests.test_scorers_finetuned import _quality_rows
Scorer.load(sys.argv[1]).predict(_quality_rows(300)[0], cache_dir=sys.argv[2])
"""


def test_a_killed_scoring_pass_keeps_its_finished_rows_on_a_pool_under_512_rows(tiny_base, tmp_path, monkeypatch):
    """Forward passes were cached per whole chunk of 512 rows: a kill during a pass over 300 rows kept nothing, and
    every re-run paid the whole pass again. Chunks now start at one batch and are kept as each ends."""
    import os
    import signal
    import subprocess
    import sys

    from curate.scorers.finetuned import CrossEncoderScorer

    repo = str(Path(__file__).resolve().parents[1])
    rows, scores = _quality_rows(300)
    sc = CrossEncoderScorer(name="q", max_length=32, base=tiny_base, batch_size=8).fit(rows[:24], scores[:24],
                                                                                     epochs=1, batch_size=4)
    sc.save(tmp_path / "sc")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_PASS, str(tmp_path / "sc"), str(tmp_path / "ws"), repo],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": repo})
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.stderr.read() if proc.poll() is not None else line
        done = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert 0 < done < 300
    scored = forward_passes(monkeypatch)
    resumed = sc.predict(rows, cache_dir=tmp_path / "ws")
    assert sum(scored) == 300 - done  # the killed pass's chunk was read back, not scored again
    np.testing.assert_allclose(resumed, sc.predict(rows), atol=1e-5)
    assert not list((tmp_path / "ws" / "scorer_ce").glob("*/.tmp-*"))


def test_cross_encoder_instruction_only_learns_constraint_order(tiny_base):
    from curate.scorers.finetuned import CrossEncoderScorer

    seeds = [f"Describe item number {i} briefly." for i in range(8)]
    chains = constraint_chains(seeds, TRAIN_FAMILIES, steps=3, seed=0)
    texts = [t for c in chains for t in c]
    levels = [float(j) for c in chains for j in range(len(c))]
    pairs = [({"instruction": h}, {"instruction": e}, 1.0) for h, e in chain_pairs(chains)]
    sc = CrossEncoderScorer(reads=["instruction"], name="cx", max_length=48, base=tiny_base)
    sc.fit(texts, levels, epochs=2, batch_size=12, lr=1e-3, pairs=pairs)
    flat = sc.predict(texts)
    per = [flat[k * 4:(k + 1) * 4].tolist() for k in range(len(chains))]
    assert order_accuracy(chains, per) > 0.6  # the length covariate alone can order them


def test_cross_encoder_fine_tunes_under_bf16_mixed_precision(tiny_base):
    """Mixed precision is entered per step: autocast caches its low-precision weight copies until its context
    exits, so one autocast around the whole loop kept every forward at the initial (zero) head and the
    training loss never moved (the GPU training of the first shipped adapters)."""
    import torch
    from transformers import AutoTokenizer

    import curate.scorers.crossencoder as ce

    rows, scores = _quality_rows(16)
    y = (np.array(scores) - np.mean(scores)) / np.std(scores)
    points = [(r["instruction"], r["response"], float(v)) for r, v in zip(rows, y, strict=True)]
    tok = AutoTokenizer.from_pretrained(tiny_base)
    steps = iter(range(1000))
    info = ce.train_net(ce.build_net(tiny_base), tok, points=points, pairs=[], max_length=32, epochs=15, batch_size=8,
                        lr=1e-3, amp_dtype=torch.bfloat16, evaluate=lambda: next(steps), eval_every=1)
    losses = [h["loss"] for h in info["history"]]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5])  # a frozen forward stays at the labels' variance (~1)


def test_point_rank_loss_orders_unequal_labels_and_skips_ties(tiny_base):
    """``point_rank_weight`` adds Bradley-Terry over the pointwise batch's pairs: the higher label should score
    higher; pairs of equal labels add nothing (a batch of one level costs what squared error alone costs)."""
    import torch
    from transformers import AutoTokenizer

    import curate.scorers.crossencoder as ce

    tok = AutoTokenizer.from_pretrained(tiny_base)
    net = ce.build_net(tiny_base).eval()
    torch.manual_seed(0)
    torch.nn.init.normal_(net.head.weight, std=1.0)  # a head that scores the texts differently
    texts = ["Name a colour.", "Prove that there are infinitely many primes, with every step justified."]

    def step_loss(pts, rank=0.0):  # the step's loss: its forward passes' terms added up
        return float(sum(ce._loss_passes(net, tok, pts, [], 32, 1.0, "cpu", point_rank_weight=rank)))

    with torch.no_grad():
        s = net(ce.encode_batch(tok, texts, None, 32, "cpu"))
        tied = [(t, None, 0.5) for t in texts]
        assert step_loss(tied, 2.0) == pytest.approx(step_loss(tied))
        for hi, lo in ((1, 0), (0, 1)):
            pts = [(texts[hi], None, 1.0), (texts[lo], None, -1.0)]
            extra = step_loss(pts, 2.0) - step_loss(pts)
            # a difference of two float32 losses: its rounding error scales with the loss, not with the term
            assert extra == pytest.approx(2.0 * float(torch.nn.functional.softplus(s[lo] - s[hi])), rel=1e-5, abs=1e-5)


def test_joint_head_learns_from_pairs_and_keeps_the_judge_spread():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = 3 + 2 * X[:, 0] + 0.1 * rng.normal(size=200)
    A, B = rng.normal(size=(300, 5)), rng.normal(size=(300, 5))
    p = (A[:, 1] > B[:, 1]).astype(float)  # pairs teach feature 1, labels teach feature 0
    w = fit_joint_head(X, y, A, B, p, alpha=1.0, label_mean=5.0, label_std=2.0)
    pred = predict_head(w, X, "ridge")
    assert abs(pred.mean() - 5.0) < 0.2 and abs(pred.std() - 2.0) < 0.3
    assert w["coef"][0, 0] > 0 and w["coef"][0, 1] > 0
    with_pairs = np.mean((predict_head(w, A, "ridge") > predict_head(w, B, "ridge")) == (p > 0.5))
    w0 = fit_joint_head(X, y, alpha=1.0)
    without = np.mean((predict_head(w0, A, "ridge") > predict_head(w0, B, "ridge")) == (p > 0.5))
    assert with_pairs > without and w["coef"][0, 1] > 5 * abs(w0["coef"][0, 1])  # only the pairs teach feature 1


def test_constraint_chains_grow_and_hold_out_families():
    chains = constraint_chains(["Write a poem about the sea.", "Summarise the causes of inflation."], EVAL_FAMILIES,
                               steps=4, seed=3)
    for chain in chains:
        assert len(chain) == 5 and all(chain[i + 1].startswith(chain[i].rstrip()[:20]) for i in range(4))
        assert all(len(chain[i + 1]) > len(chain[i]) for i in range(4))
    assert order_accuracy(chains, [[len(t) for t in c] for c in chains]) == 1.0
    assert not set(EVAL_FAMILIES) & set(TRAIN_FAMILIES)
    assert len(chain_pairs(chains)) == 2 * 10


def test_rewritten_chains_are_not_ordered_by_length_and_filler_twins_ask_for_nothing_more():
    seeds = [f"Explain how topic number {i} works." for i in range(40)]
    chains = rewritten_chains(seeds, TRAIN_FAMILIES, steps=5, seed=0)
    assert all(len(c) == 6 and c[0].count(seeds[k]) >= 1 for k, c in enumerate(chains))
    by_length = order_accuracy(chains, [[len(t) for t in c] for c in chains])
    assert 0.6 < by_length < 0.95  # length helps, but a version with more requirements is often shorter
    shorter_harder = sum(len(c[j]) < len(c[i]) for c in chains for i in range(6) for j in range(i + 1, 6))
    assert shorter_harder > 0.05 * len(chain_pairs(chains))
    twins = filler_twins(chains, seed=0)
    assert len(twins) == 6 * len(chains) and all(len(padded) > len(plain) for padded, plain in twins)
    assert all(requirement_stats(padded)[0] == requirement_stats(plain)[0] for padded, plain in twins)  # no new asks
    held = rewritten_chains(seeds, EVAL_FAMILIES, seed=0, held_out=True)
    train_fillers = {f.split("{")[0] for f in PHRASING[False]["fillers"]}
    assert not any(f in t for c in held for t in c for f in train_fillers)  # the test never sees training filler
    assert not set(PHRASING[True]["fillers"]) & set(PHRASING[False]["fillers"])


def _ws(tmp_path) -> Workspace:
    path = tmp_path / "pool.jsonl"
    recs = [{"instruction": f"Task {i}: " + "do this " * (i % 7 + 1), "input": "", "output": "word " * (3 * i + 1)}
            for i in range(20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    ws = Workspace(tmp_path / "ws")
    ws.load(path)
    return ws


def test_a_scorer_never_writes_over_judge_labels(tmp_path):
    from curate.scorers import train_scorer

    ws = _ws(tmp_path)
    labels = [[float(i % 5 + 1)] for i in range(len(ws))]
    ws.add_column("quality", labels, {"kind": "judge", "judge": "quality", "model": "gpt-4", "granularity": "turn",
                                      "reducer": "sum", "reads": ["instruction", "response"]})
    ws.add_column("quality_digit_mass", [[0.9]] * len(ws), {"kind": "judge", "judge": "quality"})
    result = train_scorer(ws, target="quality", k=2, holdout=0.2)
    assert result.scorer.column == "quality_scorer" and result.scorer.imitates["judge"] == "quality"
    ws.apply(result.scorer, progress=False)
    assert ws.column("quality") == labels  # the judge's labels and digit mass are untouched
    assert ws.column_provenance("quality_scorer")["imitates"] == "quality"
    clash = result.scorer.fresh()
    clash.weights, clash.name = result.scorer.weights, "quality"
    with pytest.raises(ScorerError, match="holds labels"):
        ws.apply(clash, progress=False)
    assert ws.column("quality") == labels
    with pytest.raises(ScorerError, match="'quality_scorer' holds a trained scorer's predictions .imitating 'quality'"):
        train_scorer(ws, target="quality_scorer", k=2, holdout=0.2)  # its agreement would be with a scorer, not a judge


def test_threshold_by_quantile(tmp_path):
    ws = _ws(tmp_path)
    ws.add_column("s", [[float(i)] for i in range(len(ws))], {"kind": "scorer", "granularity": "turn", "reducer": "sum"})
    sel = ws.select(method="threshold", name="top", sort_by="s", quantile=0.75)
    assert len(sel.ids) == 5
    with pytest.raises(CurateError, match="takes one of 'min_score', 'quantile', not both"):
        ws.select(method="threshold", name="bad", sort_by="s", quantile=0.5, min_score=1.0)
    for bad in ("0.8", 1.5, True):  # a quantile given as text (--param 'quantile="0.8"') was a TypeError traceback
        # text and booleans meet the selector-wide type check first, 1.5 the threshold's own range check
        with pytest.raises(CurateError, match=r"quantile (must be a number|.* is not a number in \[0, 1\])"):
            ws.select(method="threshold", name="bad", sort_by="s", quantile=bad)
    # two infinite scores (log of a zero count): numpy's quantile interpolated -inf + 0 * inf = NaN and kept no row
    ws.add_column("count", [[0.0], [0.0]] + [[float(i)] for i in range(1, len(ws) - 1)], {"kind": "test"})
    for quantile in (0.05, 0.06):  # between the two -inf, and between -inf and log(1)
        sel = ws.select(method="threshold", name="logs", sort_by="log(count)", quantile=quantile)
        assert sel.provenance["min_score"] == float("-inf") and len(sel.ids) == len(ws)
    assert len(ws.select(method="threshold", name="logs", sort_by="log(count)", quantile=0.5).ids) == len(ws) // 2


def test_train_scorer_cross_encoder_kind_reports_length_baselines(tiny_base, tmp_path):
    from curate.scorers import train_scorer
    from curate.scorers.finetuned import CrossEncoderScorer

    ws = _ws(tmp_path)
    labels = [[float(1 + 3 * i // len(ws))] for i in range(len(ws))]  # longer responses got higher labels
    ws.add_column("judge_q", labels, {"kind": "judge", "judge": "q", "reads": ["instruction", "response"]})
    rows, scores = _quality_rows(8)
    init = CrossEncoderScorer(name="seed", max_length=32, base=tiny_base).fit(rows, scores, epochs=1, batch_size=4)
    init.save(tmp_path / "init")
    result = train_scorer(ws, target="judge_q", kind="cross-encoder", init=str(tmp_path / "init"), epochs=1, holdout=0.3)
    assert result.scorer.column == "judge_q_scorer"
    held = result.evaluation.holdout
    assert {"scorer", "length", "instruction_length"} <= set(held) and held["scorer"]["n"] == result.evaluation.n_holdout
    # MAE and calibration are on the judge's scale (1-5 here: the smallest standard judge scale holding labels
    # 1..3) for every kind: the cross-encoder reported them on
    # 1-6 while the ridge kind used the judge's, so the same length baseline had two MAEs
    ridge = train_scorer(ws, target="judge_q", k=2, holdout=0.3, name="judge_q_ridge")
    assert held["length"]["mae"] == pytest.approx(ridge.evaluation.holdout["length"]["mae"])
    assert all(1 - 1e-9 <= b[key] <= 5 + 1e-9 for b in result.evaluation.calibration for key in b if key != "n")
    assert result.scorer.metadata["judge_scale"] == {"scale": [1.0, 5.0], "how": "inferred", "labels_outside": 0}
    ws.apply(result.scorer, progress=False)
    assert ws.column("judge_q") == labels and len(ws.column("judge_q_scorer")) == len(ws)


def test_small_lm_kind_on_a_tiny_llama(tiny_llama, tmp_path):
    """The small-LM reader: a tiny random Llama with SmolLM2's tokenizer, LoRA + score head, saved and reloaded."""
    from curate.scorers.smalllm import SmallLMScorer

    rows, scores = _quality_rows(12)
    sc = SmallLMScorer(name="quality_lm", max_length=48, base=tiny_llama).fit(rows, scores, epochs=1, batch_size=4)
    pred = sc.predict(rows)
    assert 1.0 <= pred.min() <= pred.max() <= 6.0
    out = sc.save(tmp_path / "lm")
    assert json.loads((out / "scorer.json").read_text())["kind"] == "small-lm"
    loaded = Scorer.load(out)
    assert type(loaded).__name__ == "SmallLMScorer"
    np.testing.assert_allclose(loaded.predict(rows), pred, atol=1e-4)


def test_small_lm_digits_head_is_the_lms_expected_digit_and_keeps_its_prompt(tiny_llama, tmp_path, monkeypatch):
    """DEITA's scorer: before training, the digits head's score is the LM's own expected digit after the reader
    prompt (its next-token probabilities renormalised over 1-6); fine-tuning moves it towards the labels; the
    saved reader keeps the prompt it was trained with when the prompt file is later overridden."""
    import torch
    from transformers import AutoModelForCausalLM

    import curate.scorers.crossencoder as ce
    from curate.scorers.smalllm import SmallLMScorer

    rows, scores = _quality_rows(24)
    sc = SmallLMScorer(name="quality_digits", max_length=96, base=tiny_llama, head="digits")
    assert sc.prompt.name == "quality_reader" and sc.prompt.scale == (1, 6)
    net, tok = sc._load_net()
    ins, res = [r["instruction"] for r in rows[:4]], [r["response"] for r in rows[:4]]
    before = ce.predict_net(net, tok, ins, res, max_length=96)
    lm = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    digit_ids = [tok.convert_tokens_to_ids(str(d)) for d in range(1, 7)]
    with torch.no_grad():
        for i in range(4):
            text = ce.chat_texts(tok, ins[i:i + 1], res[i:i + 1], 96, net.messages)[0]
            assert "Please identify the quality score" in text and text.rstrip().endswith("assistant")
            logits = lm(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, -1, digit_ids]
            assert before[i] == pytest.approx(float((logits.softmax(-1) * torch.arange(1, 7)).sum()), abs=1e-4)

    sc.fit(rows, scores, label_range=(1, 10), epochs=6, batch_size=8, lr=1e-3)
    pred = sc.predict(rows)
    good = np.array(scores) > 5
    assert pred[good].mean() > pred[~good].mean() + 0.5 and 1.0 <= pred.min() <= pred.max() <= 6.0
    out = sc.save(tmp_path / "digits")
    doc = json.loads((out / "scorer.json").read_text())
    assert doc["head"] == "digits" and doc["prompt"]["name"] == "quality_reader"

    edited = tmp_path / "prompts"
    edited.mkdir()
    (edited / "quality_reader.md").write_text(doc["prompt"]["text"].replace("quality score", "worth"))
    monkeypatch.setenv("CURATE_PROMPTS", str(edited))
    assert "worth" in SmallLMScorer(head="digits", base=tiny_llama).prompt.body  # a new reader reads the edit
    loaded = Scorer.load(out)
    assert loaded.head == "digits" and loaded.prompt.fingerprint == sc.prompt.fingerprint
    np.testing.assert_allclose(loaded.predict(rows), pred, atol=1e-4)

    complexity = SmallLMScorer(reads=["instruction"], head="digits", base=tiny_llama, max_length=64)
    assert complexity.prompt.name == "complexity_reader"
    with pytest.raises(ScorerError, match="digit_score prompt whose inputs are the texts read"):
        SmallLMScorer(reads=["instruction"], head="digits", prompt="quality_reader")
    with pytest.raises(ScorerError, match="only the digits head reads a prompt"):
        SmallLMScorer(prompt="quality_reader")
    plain = tmp_path / "no_template"  # a base model's folder: no chat template to ask the reader prompt in
    shutil.copytree(tiny_llama, plain)
    (plain / "chat_template.jinja").unlink()
    with pytest.raises(ScorerError, match="no chat template; a digits head asks a chat model"):
        SmallLMScorer(head="digits", base=str(plain))._load_net()


def test_cli_train_scorer_without_minilm_writes_its_own_column(tmp_path):
    from typer.testing import CliRunner

    from curate.cli import app

    ws = _ws(tmp_path)
    labels = [[float(1 + (3 * i) // len(ws))] for i in range(len(ws))]
    ws.add_column("gpt4", labels, {"kind": "judge", "judge": "gpt4", "reads": ["instruction", "response"]})
    out = tmp_path / "distilled"
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "gpt4", "--out", str(out), "--folds", "2",
                                   "--features", "length,stats", "--embed-inputs", "none"])
    assert res.exit_code == 0, res.output
    assert {"scorer", "length", "instruction_length", "random"} <= set(Scorer.load(out).metrics["holdout"])
    res = CliRunner().invoke(app, ["score", str(ws.path), "--scorer", str(out)])
    assert res.exit_code == 0, res.output
    assert ws.column("gpt4") == labels and len(ws.column("gpt4_scorer")) == len(ws)


SEEDS = ["Write a short story about a lighthouse keeper.", "Explain how vaccines train the immune system.",
         "Summarise the causes of the French Revolution.", "Describe a recipe for vegetable soup.",
         "Give advice to a student starting university.", "Compare electric and petrol cars."]


def test_shipped_complexity_scores_keep_every_rank_the_network_gives():
    # The calibration onto 1-6 must not tie rows the network ranks apart: a flat quantile map put most
    # versions of a constraint chain at exactly 6.0, so the scores DEITA sorts by lost the chain's order.
    sc = Scorer.load("complexity")
    flat = [t for chain in constraint_chains(SEEDS, EVAL_FAMILIES, seed=3) for t in chain]
    raw, cal = sc.predict_raw(flat), sc.predict(flat)
    assert len(np.unique(raw)) == len(flat)
    assert len(np.unique(cal)) == len(flat)
    assert (np.argsort(raw) == np.argsort(cal)).all()
    assert 1.0 <= cal.min() and cal.max() <= 6.0


def test_ridge_predictions_bend_towards_the_label_bounds_instead_of_tying_there():
    from curate.scorers.head import soft_clip

    pred = np.linspace(-20.0, 30.0, 2001)
    out = soft_clip(pred, 1.0, 10.0)
    assert (np.diff(out) > 0).all() and 1.0 < out.min() and out.max() < 10.0
    middle = (pred >= 1.45) & (pred <= 9.55)  # 5% of the range from either bound
    assert np.array_equal(out[middle], pred[middle])
    knee = 10.0 - 0.45
    assert abs(soft_clip(np.array([knee + 1e-6]), 1.0, 10.0)[0] - (knee + 1e-6)) < 1e-9  # continuous at the knee
    sc = Scorer.load("complexity_ridge")
    scores = sc.predict([t for chain in constraint_chains(SEEDS, EVAL_FAMILIES, seed=3) for t in chain])
    assert len(np.unique(scores)) == len(scores)


def test_a_fresh_cross_encoder_fit_is_the_same_for_the_same_seed(tiny_base):
    """The fresh LoRA adapters' random init is drawn under the fit's seed: two fits of one seed agree, whatever
    else moved torch's random state in between (a killed run retrained, a notebook cell run twice)."""
    import torch

    from curate.scorers.finetuned import CrossEncoderScorer

    rows, scores = _quality_rows(12)
    fits = []
    for _ in range(2):
        torch.rand(7)  # other work between the fits
        fits.append(CrossEncoderScorer(name="q", max_length=32, base=tiny_base).fit(rows, scores, epochs=1,
                                                                                    batch_size=4, seed=3))
    assert np.array_equal(fits[0].predict(rows), fits[1].predict(rows))
    other = CrossEncoderScorer(name="q", max_length=32, base=tiny_base).fit(rows, scores, epochs=1, batch_size=4, seed=4)
    assert not np.array_equal(fits[0].predict(rows), other.predict(rows))


@pytest.mark.parametrize("head", ["score", "digits"])
def test_cli_train_scorer_small_lm_kind_on_a_base_folder(tiny_llama, tmp_path, head):
    """`train-scorer --kind small-lm --base DIR [--head digits]` fine-tunes that causal LM, reports held-out
    agreement beside the length baselines, and the saved scorer scores the pool into its own column."""
    from typer.testing import CliRunner

    from curate.cli import app

    ws = _ws(tmp_path)
    labels = [[float(1 + (3 * i) // len(ws))] for i in range(len(ws))]
    ws.add_column("gpt4", labels, {"kind": "judge", "judge": "gpt4", "reads": ["instruction", "response"]})
    out = tmp_path / "lm"
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "gpt4", "--kind", "small-lm", "--base",
                                   tiny_llama, "--epochs", "1", "--device", "cpu", "--holdout", "0.3", "--out", str(out),
                                   "--head", head])
    assert res.exit_code == 0, res.output
    assert ("small-lm (digits head) fine-tuned on" in res.output) == (head == "digits")
    doc = json.loads((out / "scorer.json").read_text())
    assert doc["kind"] == "small-lm" and doc["base"] == tiny_llama and doc["reads"] == ["instruction", "response"]
    assert doc.get("head", "score") == head and doc["metrics"]["head"] == head
    held = doc["metrics"]["holdout"]
    assert {"scorer", "length", "instruction_length"} <= set(held) and held["scorer"]["n"] >= 4
    assert doc["metrics"]["kind"] == "small-lm"
    res = CliRunner().invoke(app, ["score", str(ws.path), "--scorer", str(out)])
    assert res.exit_code == 0, res.output
    scored = ws.column("gpt4_scorer")
    assert ws.column("gpt4") == labels and len(scored) == len(ws)
    assert all(1.0 <= v[0] <= 6.0 for v in scored)


def test_train_scorer_refuses_a_base_or_init_its_kind_cannot_use(tiny_base, tmp_path):
    from curate.scorers import train_scorer
    from curate.scorers.finetuned import CrossEncoderScorer

    ws = _ws(tmp_path)
    ws.add_column("judge_q", [[float(i % 5 + 1)] for i in range(len(ws))],
                  {"kind": "judge", "judge": "q", "reads": ["instruction", "response"]})
    with pytest.raises(ScorerError, match="ridge kind reads the packaged MiniLM"):
        train_scorer(ws, target="judge_q", base=tiny_base)
    with pytest.raises(ScorerError, match="device cuda: the ridge kind"):
        train_scorer(ws, target="judge_q", device="cuda")
    with pytest.raises(ScorerError, match="warm starts are for the fine-tuned"):
        train_scorer(ws, target="judge_q", init="quality_ce")
    rows, scores = _quality_rows(8)
    CrossEncoderScorer(name="seed", max_length=32, base=tiny_base).fit(rows, scores, epochs=1, batch_size=4).save(tmp_path / "ce")
    with pytest.raises(ScorerError, match="not a small-lm scorer"):
        train_scorer(ws, target="judge_q", kind="small-lm", init=str(tmp_path / "ce"))
    with pytest.raises(ScorerError, match="names the base it was trained on"):
        train_scorer(ws, target="judge_q", kind="cross-encoder", init=str(tmp_path / "ce"), base=tiny_base)
    with pytest.raises(ScorerError, match="device 'gpu': cpu, cuda, cuda:N or auto"):
        train_scorer(ws, target="judge_q", kind="cross-encoder", base=tiny_base, device="gpu")
    with pytest.raises(ScorerError, match="head 'digits': the cross-encoder kind has a score head"):
        train_scorer(ws, target="judge_q", kind="cross-encoder", base=tiny_base, head="digits")
    with pytest.raises(ScorerError, match="head 'ordinal': the small-lm kind has a score or a digits head"):
        train_scorer(ws, target="judge_q", kind="small-lm", head="ordinal")


def test_a_base_that_is_no_folder_is_one_line_naming_it(tmp_path):
    """--base /nonexistent reached transformers, which read it as a Hub repo id: "Repo id must use alphanumeric
    chars...", after the fine-tune had started; a scorer whose base moved failed the same way when it predicted."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.scorers.finetuned import CrossEncoderScorer
    from curate.scorers.smalllm import SmallLMScorer

    ws = _ws(tmp_path)
    ws.add_column("judge_q", [[float(i % 5 + 1)] for i in range(len(ws))],
                  {"kind": "judge", "judge": "q", "reads": ["instruction", "response"]})
    (tmp_path / "weights.bin").write_bytes(b"")
    for kind in ("cross-encoder", "small-lm"):
        for base, said in ((tmp_path / "nonexistent", "does not exist"), (tmp_path / "weights.bin", "is not a folder")):
            res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "judge_q", "--kind", kind,
                                           "--base", str(base), "--out", str(tmp_path / "sc")])
            assert isinstance(res.exception, ScorerError), (kind, res.output, res.exception)
            assert str(res.exception) == f"base {base}: the base model folder {said}"
    assert not (tmp_path / "sc").exists()
    for cls in (CrossEncoderScorer, SmallLMScorer):
        with pytest.raises(ScorerError, match="the base model folder does not exist"):
            cls(base=str(tmp_path / "moved"))._load_net()


def test_a_damaged_or_newer_cross_encoder_folder_is_one_error_naming_it(tmp_path):
    from curate.scorers import WEIGHTS_DIR, CrossEncoderScorer

    folder = shutil.copytree(WEIGHTS_DIR / "complexity", tmp_path / "sc")
    doc = json.loads((folder / "scorer.json").read_text())
    adapter = (folder / "adapter.safetensors").read_bytes()
    turn = [{"instruction": "Write a haiku about rain, in French, without the letter e."}]
    tensors = {k: v for k, v in __import__("safetensors.numpy").numpy.load_file(str(folder / "adapter.safetensors")).items()}

    def without_one_lora_tensor():
        from safetensors.numpy import save_file
        save_file({k: v for k, v in tensors.items() if k != min(k for k in tensors if k.startswith("lora."))},
                  str(folder / "adapter.safetensors"))

    at_load = ((lambda: (folder / "scorer.json").write_text(json.dumps({**doc, "format_version": 99})),
                "scorer format 99 not supported"),
               (lambda: (folder / "scorer.json").write_text(json.dumps({**doc, "kind": "giant-lm"})),
                "scorer kind 'giant-lm' unknown"),
               (lambda: (folder / "scorer.json").write_text(json.dumps({k: v for k, v in doc.items() if k != "lora_r"})),
                "not a readable scorer .KeyError: 'lora_r'"),
               (lambda: (folder / "adapter.safetensors").write_bytes(adapter[:1000]), "adapter.safetensors: not readable"),
               (lambda: (folder / "adapter.safetensors").unlink(), "no adapter.safetensors"))
    at_predict = ((without_one_lora_tensor, "do not load into .*: 1 tensors missing.* e.g. lora"),
                  (lambda: (folder / "scorer.json").write_text(json.dumps({**doc, "lora_r": 8})), "do not load into .*: \\d+ tensors .* \\[\\(24, 384\\), \\(8, 384\\)\\]"))
    for damage, message in at_load + at_predict:
        damage()
        with pytest.raises(ScorerError, match=str(folder) + ".*" + message if (damage, message) in at_load else message):
            Scorer.load(folder).predict(turn)
        (folder / "scorer.json").write_text(json.dumps(doc))
        (folder / "adapter.safetensors").write_bytes(adapter)
    assert Scorer.load(folder).predict(turn)[0] == pytest.approx(Scorer.load("complexity").predict(turn)[0])
    with pytest.raises(ScorerError, match="a saved ridge scorer, not a cross-encoder one"):
        CrossEncoderScorer.load(WEIGHTS_DIR / "complexity_ridge")


def test_a_prediction_cache_of_the_earlier_layouts_is_moved_into_the_store_and_its_dead_files_removed(
        tiny_base, tmp_path, monkeypatch, caplog):
    """An upgraded workspace kept the files of the layouts before the shard store (``scorer_ce/<hash>.npy`` per whole
    512-row chunk, then ``scorer_ce/<scorer>/<uuid>.npz``): never read, never removed, and the forward passes they
    held were paid again. A pass now reads them into the store and removes the chunk files no pass can match."""
    import hashlib
    import logging

    from curate.scorers.finetuned import CrossEncoderScorer

    rows, scores = _quality_rows(520)
    sc = CrossEncoderScorer(name="q", max_length=32, base=tiny_base).fit(rows[:24], scores[:24], epochs=1,
                                                                         batch_size=4)
    ws = tmp_path / "ws"
    root = ws / "scorer_ce"
    root.mkdir(parents=True)
    fp = sc.fingerprint()
    chunk = rows[:512]  # the first chunk, as curate up to 55c98a7 kept it: by the hash of the scorer and the texts
    h = hashlib.sha256(fp.encode())
    for row in chunk:
        h.update(hashlib.sha256(row["instruction"].encode()).digest())
        h.update(hashlib.sha256(row["response"].encode()).digest())
    np.save(root / f"{h.hexdigest()[:32]}.npy", np.full(512, 100.0, dtype=np.float32))
    np.save(root / f"{'0' * 32}.npy", np.zeros(512, dtype=np.float32))  # another pass's chunk: no pass matches it
    folder = root / hashlib.sha256(fp.encode()).hexdigest()[:32]  # the per-row layout: the last 8 rows
    folder.mkdir()
    keys = [hashlib.sha256((r["instruction"] + "\0response\0" + r["response"]).encode()).hexdigest()[:32].encode()
            for r in rows[512:]]
    np.savez(folder / "0123abcd.npz", keys=np.array(keys, dtype="S32"), values=np.full(8, 200.0, dtype=np.float32))
    scored = forward_passes(monkeypatch)
    use: dict[str, int] = {}
    with caplog.at_level(logging.WARNING, logger="curate"):
        raw = sc.predict_raw(rows, cache_dir=ws, cache_use=use)
    assert scored == []  # every row read from the old files, none scored again
    np.testing.assert_array_equal(raw, [100.0] * 512 + [200.0] * 8)
    assert not list(root.glob("*.npy")) and not list(folder.glob("*.npz")) and list(folder.glob("shard-*"))
    # what the move did is the call's data (the run's stats), not a log line (before: a warning, no counts)
    assert use == {"turns_from_old_cache_layout": 520, "old_cache_files_removed_unread": 1,
                   "old_cache_files_damaged": 0, "turns_from_prediction_cache": 520, "turns_predicted": 0}
    assert not caplog.text
    np.testing.assert_array_equal(sc.predict_raw(rows, cache_dir=ws), raw)  # from the store now
    assert scored == []


def test_the_earlier_layouts_are_looked_for_once_per_store_and_process_not_on_every_cached_pass(tmp_path,
                                                                                                   monkeypatch):
    """Every cached pass of a fine-tuned scorer globbed its store's folder for files of the earlier layouts, which no
    curate writes any more: a store is now looked at once per process (a per-row file there is still moved in), and
    another scorer's store in the same workspace is still looked at."""
    import curate.scorers.prediction_cache as cache
    from curate.storage.vector_shards import KEY_DTYPE, VectorStore

    def old_per_row_file(fingerprint: str, keys: list[bytes], value: float) -> Path:
        folder = cache.cache_folder(tmp_path, fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "0123abcd.npz", keys=np.array(keys, dtype="S32"), values=np.full(len(keys), value, "f4"))
        return folder

    keys = cache.row_keys(["q1", "q2"], ["a1", "a2"])
    first = old_per_row_file("sha256:first", keys, 7.0)
    assert cache.move_legacy(tmp_path, "sha256:first", ["q1", "q2"], ["a1", "a2"]).rows_moved == 2
    values, found = VectorStore(first).get(np.asarray(keys, dtype=KEY_DTYPE))
    assert found.all() and values[:, 0].tolist() == [7.0, 7.0] and not list(first.glob("*.npz"))
    globbed: list[Path] = []
    glob = Path.glob
    monkeypatch.setattr(Path, "glob", lambda self, pattern: globbed.append(self) or glob(self, pattern))
    assert cache.move_legacy(tmp_path, "sha256:first", ["q1", "q2"], ["a1", "a2"]).rows_moved == 0
    assert globbed == []  # the second pass over that store looked at no folder
    second = old_per_row_file("sha256:second", keys, 9.0)
    assert cache.move_legacy(tmp_path, "sha256:second", ["q1", "q2"], ["a1", "a2"]).rows_moved == 2
    assert second in globbed and not list(second.glob("*.npz"))


def test_a_cross_encoder_first_used_by_two_threads_at_once_scores_as_one_used_alone():
    """Both threads built the net and folded its LoRA in, one twice: every score after that was off (by up to 1.7
    on the 1-6 scale), for the object's whole life and in the prediction cache. The build now happens once."""
    from concurrent.futures import ThreadPoolExecutor

    from curate.scorers import load_default

    rows = [[{"role": "user", "content": f"Explain topic {i} in detail, with {i % 7} examples"},
             {"role": "assistant", "content": "ok"}] for i in range(24)]
    alone = np.asarray(load_default("complexity").predict(rows))
    shared = load_default("complexity")
    assert type(shared).__name__ == "CrossEncoderScorer"  # the shipped complexity scorer is a fine-tuned reader
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda _: np.asarray(shared.predict(rows)), range(2)))
    for got in [*both, np.asarray(shared.predict(rows))]:
        np.testing.assert_allclose(got, alone, atol=1e-5)


def test_new_weights_in_a_base_folder_are_refused_not_answered_from_cached_predictions(tiny_base, tmp_path):
    """Before: the config named a base folder by its path only, so after new weights were written into it the saved
    scorer kept its fingerprint and answered from the old predictions (audit p7: cached ≠ recomputed). The scorer
    records the files it was trained on and refuses others (its adapter was tuned on the old weights); its key is
    the one of before, so a scorer saved before the record keeps its cached predictions after the upgrade."""
    from safetensors.torch import load_file, save_file

    from curate.scorers.finetuned import CrossEncoderScorer

    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    rows, scores = _quality_rows(8)
    saved = CrossEncoderScorer(name="q", max_length=32, base=str(base)).fit(rows, scores, epochs=1,
                                                                            batch_size=4).save(tmp_path / "scorer")
    cache = tmp_path / "cache"
    before = Scorer.load(saved)
    before.predict_raw(rows, cache_dir=cache)  # its predictions cached
    old_key = before.fingerprint()
    weights = next(base.glob("*.safetensors"))
    save_file({k: v + 0.5 if v.is_floating_point() else v for k, v in load_file(weights).items()}, weights,
              metadata={"format": "pt"})
    assert old_key == Scorer.fingerprint(before)  # the key of before the record: config and weights
    with pytest.raises(ScorerError, match=r"base model folder's files changed since this scorer was trained"):
        Scorer.load(saved).predict_raw(rows, cache_dir=cache)  # was the old predictions, from the cache
    unrecorded = Scorer.load(saved)
    del unrecorded.metadata["base_files"]  # as a scorer saved before the record: not checked, its key as before
    assert unrecorded.fingerprint() == old_key

    def stop(step, steps):
        raise KeyboardInterrupt

    warm = Scorer.load(saved)  # a warm start on the changed files, stopped: it keeps the record it had
    with pytest.raises(KeyboardInterrupt):  # (it recorded the new files before training, so the check then passed)
        warm.fit(rows, scores, epochs=1, batch_size=4, on_step=stop)
    with pytest.raises(ScorerError, match=r"base model folder's files changed"):
        warm.fingerprint()
    packaged = CrossEncoderScorer(name="q", max_length=32)  # the packaged base: the key of before (config + weights)
    assert packaged.fingerprint() == Scorer.fingerprint(packaged)


def test_repeated_rows_of_a_pass_are_not_counted_as_read_from_the_prediction_cache(tiny_base, tmp_path):
    """A pass scores each distinct row once; its repeats were counted as read from the prediction cache, so a first
    run on an empty cache said "4 from its prediction cache" (review): they are counted as repeats."""
    from curate.cli.judge import cache_use_text
    from curate.scorers.finetuned import CrossEncoderScorer

    rows, scores = _quality_rows(8)
    sc = CrossEncoderScorer(name="c", reads=("instruction",), max_length=32, base=tiny_base).fit(
        rows, scores, epochs=1, batch_size=4)
    twice = [{"instruction": r["instruction"]} for r in rows[:3]] * 2  # 3 distinct rows, each twice
    used: dict[str, int] = {}
    sc.predict_raw(twice, cache_dir=tmp_path / "fresh", cache_use=used)
    assert used == {"turns_from_prediction_cache": 0, "turns_predicted": 3, "turns_repeating_a_row_of_the_pass": 3}
    assert cache_use_text(used) == ("3 turns scored by the model, 0 from its prediction cache, 3 repeating a turn "
                                    "scored in the pass")  # was "3 from its prediction cache"
    again: dict[str, int] = {}
    sc.predict_raw(twice, cache_dir=tmp_path / "fresh", cache_use=again)
    assert again == {"turns_from_prediction_cache": 6, "turns_predicted": 0}
