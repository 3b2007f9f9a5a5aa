"""The training harness and the signals on it: per-row records every epoch, the closed-form gradient norm
against autograd, resume after a kill, free re-runs, a row flipped to noise on the hard side of the data map,
the cartography / el2n / grand selectors' decisions and reason codes, the data map in the report, the CLI.

All on a tiny random Llama with SmolLM2's tokenizer (tests/train_fixtures.py), on the CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from curate.codes import Decision, FailureCode, Reason
from curate.errors import CurateError, InputError
from curate.train import TrainConfig, eval_loss, finetune
from curate.train.harness import TrainRun
from curate.train.records import RECORD_KEYS, batch_records
from tests.train_fixtures import build_tiny_lm, conversation, learnable_rows, row_inputs

FAST = dict(lora_rank=0, learning_rate=3e-2, batch_size=4, warmup_ratio=0.0)  # a random tiny model learns fast
NOISY = (5, 14)


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """The shared tiny random Llama folder (tests/train_fixtures.py)."""
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


class Killed(Exception):
    """Not a KeyboardInterrupt: a Ctrl-C saves a mid-epoch checkpoint, a killed process does not."""


class Killer:
    """A progress object that raises after ``after`` rows, standing in for a killed process."""

    def __init__(self, after: int):
        self.after, self.n = after, 0

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self.after:
            raise Killed("killed")


@pytest.mark.parametrize("setting", [{"epochs": 0}, {"batch_size": 0}, {"learning_rate": float("nan")},
                                     {"warmup_ratio": 1.0}, {"max_length": 4}, {"lora_alpha": 0}])
def test_a_setting_out_of_range_is_refused_by_name(lm, tmp_path, setting):
    (name, value), = setting.items()
    with pytest.raises(CurateError, match=f"training setting {name} must be .*got {value!r}"):
        finetune(lm, row_inputs(learnable_rows(2)), tmp_path / "run", TrainConfig(**setting), device="cpu")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_finetune_takes_the_rows_curate_load_gives_and_plain_records(lm, tmp_path):
    """The README's finetune(model_dir, rows, ...) on rows from curate.load, or on records, raised AttributeError:
    'dict' object has no attribute 'id'; they are the same run as the RowInputs of those rows."""
    import curate
    from curate.pools import row_id

    convs = learnable_rows(2)
    records = [{"instruction": c[0]["content"], "output": c[1]["content"]} for c in convs]
    config = TrainConfig(epochs=1, batch_size=2, lora_rank=0)
    from_load = finetune(lm, curate.load(records), tmp_path / "run", config, device="cpu")
    from_records = finetune(lm, records, tmp_path / "run", config, device="cpu")
    by_hand = [row_inputs([c])[0] for c in convs]
    for r, c in zip(by_hand, convs, strict=True):
        r.id = row_id(c)
    assert from_load.info["fingerprint"] == from_records.info["fingerprint"] == finetune(
        lm, by_hand, tmp_path / "run", config, device="cpu").info["fingerprint"]
    with pytest.raises(InputError, match="row 1: cannot tell the format"):
        finetune(lm, [{"text": "no shape"}], tmp_path / "bad", config, device="cpu")


def test_a_diverging_run_stops_with_an_error_and_caches_no_epoch(lm, tmp_path):
    config = TrainConfig(epochs=3, batch_size=1, lora_rank=0, learning_rate=1e6, warmup_ratio=0.0)
    with pytest.raises(CurateError, match="training diverged: loss (nan|inf) at epoch 1"):
        finetune(lm, row_inputs(learnable_rows(4)), tmp_path / "run", config, device="cpu")
    assert not list((tmp_path / "run").glob("epoch-*"))  # no epoch of it is there to be read back as a result


def test_a_cached_run_loads_the_model_from_where_the_caller_has_it_now(lm, tmp_path, monkeypatch):
    import shutil

    for place in ("a", "b"):
        shutil.copytree(lm, tmp_path / place / "model")
    config, rows = TrainConfig(epochs=1, batch_size=2, lora_rank=0), row_inputs(learnable_rows(2))
    monkeypatch.chdir(tmp_path / "a")
    first = finetune("model", rows, tmp_path / "run", config, device="cpu")  # a relative model folder
    shutil.rmtree(tmp_path / "a")
    monkeypatch.chdir(tmp_path / "b")
    again = finetune("model", rows, tmp_path / "run", config, device="cpu")  # same files, read from the cache
    assert again.info["epoch_stats"] == first.info["epoch_stats"] and again.model_dir == (tmp_path / "b" / "model").resolve()
    model, _ = again.load_model(device="cpu")
    assert model is not None


def test_records_per_epoch_per_row_and_checkpoints(lm, tmp_path):
    convs = learnable_rows(8) + [conversation("a question nobody answered", None)]
    rows = row_inputs(convs)
    run = finetune(lm, rows, tmp_path / "run", TrainConfig(epochs=2, batch_size=4, lora_rank=4), device="cpu")
    assert run.epochs_done == 2 and run.ids == [f"r{i}" for i in range(8)]
    assert run.skipped["r8"].code is FailureCode.NO_RESPONSE
    shown = run._repr_html_()  # a notebook shows the run: its rows, what was skipped, each epoch's mean loss
    assert "8 rows (1 skipped), epochs 2 of 2, lora rank 4" in shown and "1: " in shown and "2: " in shown
    assert repr(run).endswith("rows=8, skipped=1, epochs=2/2)")
    for epoch in (1, 2):
        rec = run.records(epoch)
        assert rec["id"].tolist() == run.ids
        for key in RECORD_KEYS:
            assert rec[key].shape == (8,) and np.isfinite(rec[key]).all(), key
        assert ((rec["gold_prob"] > 0) & (rec["gold_prob"] < 1)).all()
        assert ((rec["token_accuracy"] >= 0) & (rec["token_accuracy"] <= 1)).all()
        assert ((rec["el2n"] > 0) & (rec["el2n"] <= np.sqrt(2))).all() and (rec["grad_norm"] > 0).all()
        np.testing.assert_allclose(rec["loss"], -np.log(rec["gold_prob"]), rtol=0.5)  # same scale, not equal
    files = {p.name for p in run.checkpoint().iterdir()}
    assert {"adapter_model.safetensors", "optimizer.pt", "records.npz"} <= files
    model, tok = run.load_model(device="cpu")
    losses = eval_loss(model, tok, rows)
    assert np.isnan(losses[8]) and np.isfinite(losses[:8]).all()
    np.testing.assert_allclose(losses[:8].mean(), run.records(2)["loss"].mean(), rtol=0.2)


def test_a_batch_run_in_several_passes_takes_the_same_step(lm, tmp_path):
    """``step_tokens`` bounds the tokens of one forward pass (CPU memory): the passes' gradients add up into
    the same optimizer step, so the weights, losses and records are those of the whole batch."""
    import torch

    from curate.train.examples import split_batch

    rows = row_inputs(learnable_rows(8, noisy=(3,)))
    config = TrainConfig(epochs=2, **FAST)
    whole = finetune(lm, rows, tmp_path / "whole", config, device="cpu", step_tokens=10**9)
    split = finetune(lm, rows, tmp_path / "split", config, device="cpu", step_tokens=1)  # each row a pass
    for epoch in (1, 2):
        for key in RECORD_KEYS:
            np.testing.assert_allclose(split.records(epoch)[key], whole.records(epoch)[key], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([s["mean_loss"] for s in split.info["epoch_stats"]],
                               [s["mean_loss"] for s in whole.info["epoch_stats"]], rtol=1e-5)
    a, b = whole.load_model(device="cpu")[0].state_dict(), split.load_model(device="cpu")[0].state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)  # float32 sums in another order, through Adam
    assert split.info["fingerprint"] == whole.info["fingerprint"]  # how a batch is run is not what the run is
    lengths = [type("E", (), {"length": n})() for n in (9, 7, 7, 3, 30)]
    assert split_batch(lengths, [0, 1, 2, 3, 4], 18) == [[0, 1], [2, 3], [4]]  # 2 x 9, 2 x 7, then 30 alone
    assert split_batch(lengths, [0, 1, 2, 3, 4], None) == [[0, 1, 2, 3, 4]]


def test_multi_turn_rows_train_every_answered_turn(lm):
    from transformers import AutoTokenizer

    from curate.signals.template import Prompter
    from curate.train.examples import encode_row

    tok = AutoTokenizer.from_pretrained(str(lm))
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"}, {"role": "user", "content": "And doubled?"},
            {"role": "assistant", "content": "Doubled, it is eight."}, {"role": "user", "content": "Thanks"}]
    example = encode_row(Prompter(tok, 1024), row_inputs([conv])[0])
    assert example.context_only_turns == 0
    assert tok.decode([example.ids[j] for j in example.positions]) == "4Doubled, it is eight."


def test_grad_norm_is_the_output_layer_gradient_norm(lm):
    """The closed form equals autograd's norm of d(mean loss)/dW for each example of a batch."""
    import torch

    torch.manual_seed(0)
    hidden, vocab = torch.randn(7, 16, dtype=torch.float64), 50
    weight = torch.randn(vocab, 16, dtype=torch.float64)
    targets = torch.randint(0, vocab, (7,))
    bounds = [(0, 3), (3, 7)]
    got = batch_records(hidden @ weight.T, hidden, targets, bounds)["grad_norm"]
    for b, (s, e) in enumerate(bounds):
        w = weight.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(hidden[s:e] @ w.T, targets[s:e])
        (grad,) = torch.autograd.grad(loss, w)
        assert got[b] == pytest.approx(float(grad.norm()), rel=1e-6)


def test_saving_a_checkpoint_or_an_export_shows_no_bar_of_transformers(lm, tmp_path, capfd):
    """A full fine-tune's checkpoint and every export printed transformers' "Writing model shards: 0/1 ... 1/1" in
    the middle of curate's own bars (`curate train run --lora-rank 0`, `curate train model`, mining's fine-tunes)."""
    from curate.train.export import export_model

    run = finetune(lm, row_inputs(learnable_rows(4)), tmp_path / "run", TrainConfig(epochs=1, batch_size=2,
                   lora_rank=0), device="cpu")
    export_model(run, tmp_path / "exported")
    assert (tmp_path / "exported" / "model.safetensors").is_file()
    assert "Writing model shards" not in capfd.readouterr().err


def test_a_killed_run_resumes_after_its_last_finished_epoch(lm, tmp_path):
    rows = row_inputs(learnable_rows(8))
    cfg = TrainConfig(epochs=3, **FAST)
    with pytest.raises(Killed):
        finetune(lm, rows, tmp_path / "killed", cfg, device="cpu", progress=Killer(after=8 + 5))
    assert TrainRun(tmp_path / "killed").epochs_done == 1
    first = (tmp_path / "killed" / "epoch-1" / "records.npz").stat().st_mtime_ns
    # a save SIGKILL stopped (an hour old: no live writer's) is removed on resume; a fresh one is left to its writer
    import os
    import time

    stale, live = tmp_path / "killed" / ".epoch-2.0badc0de", tmp_path / "killed" / ".epoch-2.5eedc0de"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"half")
    for path in (stale / "adapter_model.safetensors", stale):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    counter = Killer(10**9)
    resumed = finetune(lm, rows, tmp_path / "killed", cfg, device="cpu", progress=counter)
    assert resumed.epochs_done == 3 and counter.n == 2 * 8  # only epochs 2 and 3 ran
    assert not stale.exists() and live.exists()
    assert (tmp_path / "killed" / "epoch-1" / "records.npz").stat().st_mtime_ns == first
    straight = finetune(lm, rows, tmp_path / "straight", cfg, device="cpu")
    for key in ("loss", "gold_prob", "grad_norm"):
        np.testing.assert_allclose(resumed.records(3)[key], straight.records(3)[key], rtol=1e-4)
    again = Killer(10**9)
    finetune(lm, rows, tmp_path / "killed", cfg, device="cpu", progress=again)
    assert again.n == 0  # a finished run returns at once
    with pytest.raises(Exception, match="another run"):
        finetune(lm, rows[:4], tmp_path / "killed", cfg, device="cpu")


def test_two_trainers_of_one_run_take_turns_and_the_second_reads_it_back(lm, tmp_path):
    """Fine-tuning held no lock: two processes on one workspace each trained every epoch into one run folder,
    replacing each other's epoch-k/ (twice the time, and a checkpoint from either). The second now waits, then
    reads the finished run back."""
    import threading

    rows = row_inputs(learnable_rows(8))
    cfg = TrainConfig(epochs=2, **FAST)
    counters, runs, errors = [Killer(10**9), Killer(10**9)], [], []

    def train(counter):
        try:
            runs.append(finetune(lm, rows, tmp_path / "run", cfg, device="cpu", progress=counter))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=train, args=(c,)) for c in counters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(c.n for c in counters) == [0, 2 * 8]  # one trained both epochs, one nothing
    assert [r.epochs_done for r in runs] == [2, 2] and len(runs[0].info["epoch_stats"]) == 2


def test_a_save_stopped_by_ctrl_c_leaves_no_half_checkpoint(tmp_path):
    """SIGTERM while an epoch was saved left its temporary folder (500 MB for SmolLM2) in the run folder for good."""
    from curate.train.checkpoints import save_epoch

    class Stopped:
        def save_pretrained(self, folder):
            (tmp_path / "seen").write_text(folder)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_epoch(tmp_path, 1, Stopped(), None, None, [], None)
    assert (tmp_path / "seen").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["seen"]


@pytest.fixture(scope="module")
def trained(lm, tmp_path_factory):
    """A workspace of 24 learnable rows (two flipped to word salad), trained 5 epochs through ws.train."""
    from curate.session import Workspace

    root = tmp_path_factory.mktemp("train-ws")
    pool = root / "pool.jsonl"
    pool.write_text("\n".join(json.dumps({"messages": c}) for c in learnable_rows(24, noisy=NOISY)))
    ws = Workspace(root / "ws", create=True)
    ws.load(pool)
    run = ws.train(model=lm, device="cpu", progress=False, epochs=5, **FAST)
    return ws, run


def test_rows_flipped_to_noise_land_in_the_hard_low_confidence_region(trained):
    from curate.train.cartography import regions

    ws, run = trained
    noisy = [ws.ids[i] for i in NOISY]
    conf = dict(zip(ws.ids, ws.column_array("confidence"), strict=True))
    ranked = sorted(conf, key=conf.get)
    assert set(ranked[:2]) == set(noisy), [conf[i] for i in ranked[:4]]
    region = dict(zip(ws.ids, regions(ws.column_array("confidence"), ws.column_array("variability")), strict=True))
    assert {region[i] for i in noisy} == {"hard"}
    assert max(ws.column_array("correctness")[list(NOISY)]) == 0.0  # never mostly right
    el2n = ws.column_array("el2n")
    assert min(el2n[list(NOISY)]) > np.median(el2n)
    prov = ws.column_provenance("confidence")
    assert prov["train"]["epochs_done"] == 5 and "gold-token probability" in prov["definition"]
    assert ws.column_provenance("el2n")["epoch"] == 2


def test_a_second_train_call_reads_the_cached_run(trained, lm):
    ws, run = trained
    stamp = (run.checkpoint(5) / "records.npz").stat().st_mtime_ns
    again = ws.train(model=lm, device="cpu", progress=False, epochs=5, **FAST)
    assert again.out_dir == run.out_dir and len(again.info["epoch_stats"]) == 5
    assert (run.checkpoint(5) / "records.npz").stat().st_mtime_ns == stamp


def test_cartography_selector_takes_ambiguous_then_easy_and_names_hard_rows(trained):
    ws, _ = trained
    sel = ws.select("cartography", name="carto", budget=9, easy_share=1 / 3)
    table = sel.table.to_pylist()
    kept = [r for r in table if r["decision"] == Decision.KEPT]
    details = [json.loads(r["detail"]) for r in kept]
    assert len(kept) == 9 and [d["picked_as"] for d in details].count("easy") == 3
    var = dict(zip(ws.ids, ws.column_array("variability"), strict=True))
    amb = [r["id"] for r, d in zip(kept, details, strict=True) if d["picked_as"] == "ambiguous"]
    assert min(var[i] for i in amb) >= max(var[i] for i in ws.ids if i not in {r["id"] for r in kept})
    reasons = {r["id"]: r["reason"] for r in table}
    assert all(reasons[ws.ids[i]] == Reason.HARD_TO_LEARN for i in NOISY)
    assert set(sel.reasons()) <= {(Decision.KEPT, Reason.SELECTED), (Decision.NOT_REACHED, Reason.BUDGET_FILLED),
                                  (Decision.REJECTED, Reason.HARD_TO_LEARN)}


def test_el2n_and_grand_prune_the_easiest_rows(trained):
    ws, _ = trained
    sel = ws.select("el2n", name="diet", budget=10, skip_hardest=0.1)
    reasons = {r["id"]: (r["decision"], r["reason"]) for r in sel.table.to_pylist()}
    assert all(reasons[ws.ids[i]] == (Decision.REJECTED, Reason.HARD_TO_LEARN) for i in NOISY)
    assert sum(v == (Decision.KEPT, Reason.SELECTED) for v in reasons.values()) == 10
    el2n = dict(zip(ws.ids, ws.column_array("el2n"), strict=True))
    pruned = [i for i, v in reasons.items() if v[1] == Reason.PRUNED_EASY]
    kept = [i for i, v in reasons.items() if v[0] == Decision.KEPT]
    assert len(pruned) == 12 and max(el2n[i] for i in pruned) <= min(el2n[i] for i in kept)
    grand = ws.select("grand", name="grand", fraction=0.5)
    assert grand.decisions()[Decision.KEPT] == 12
    with pytest.raises(Exception, match="exactly one"):
        ws.select("el2n", name="bad")


def test_the_report_shows_the_data_map_once_the_columns_exist(trained, tmp_path):
    from curate.report.datamap import data_map
    from curate.report.html import report_html
    from curate.session import Workspace

    bare = Workspace(tmp_path / "bare", create=True)
    (tmp_path / "p.jsonl").write_text(json.dumps({"messages": learnable_rows(1)[0]}))
    bare.load(tmp_path / "p.jsonl")
    assert "data map" not in report_html(bare)
    assert "no data map yet" in data_map(bare)._repr_html_()
    from typer.testing import CliRunner

    from curate.cli import app

    result = CliRunner().invoke(app, ["train", "map", str(bare.path)])  # the CLI prints a CurateError as one line
    assert isinstance(result.exception, CurateError) and "no data map yet" in str(result.exception)
    ws, _ = trained
    ws.select("cartography", name="carto-report", budget=6)
    page = report_html(ws, selection="carto-report")
    assert "training dynamics: the data map" in page and "alt='data map' src='data:image/png;base64," in page
    view = data_map(ws, "carto-report")
    assert "hard" in view._repr_html_() and "hard" in repr(view)


def test_cli_train_run_and_map(lm, tmp_path):
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.session import Workspace

    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps({"messages": c}) for c in learnable_rows(6)))
    ws = Workspace(tmp_path / "ws", create=True)
    ws.load(pool)
    args = ["train", "run", str(ws.path), "--model", str(lm), "--device", "cpu", "--epochs", "2",
            "--lora-rank", "0", "--learning-rate", "0.03", "--batch-size", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "trained 6 rows for 2 epochs" in result.output and "epoch 2: mean loss" in result.output
    assert "Loading weights" not in result.output  # transformers' bar, with its cursor codes, beside curate's own
    assert len(Workspace.open(ws.path).column_array("confidence")) == 6
    result = CliRunner().invoke(app, ["train", "map", str(ws.path)])
    assert result.exit_code == 0 and "6 rows, 2 epochs" in result.output, result.output


def test_cli_train_run_says_it_resumed_a_stopped_run_and_read_a_finished_one(lm, tmp_path):
    """`curate train run` did not say it resumed (only its bar counted fewer rows): it now says where it started."""
    from pathlib import Path

    from curate.session import Workspace
    from curate.train.harness import run_folder
    from tests.cli_in_process import curate_in_process

    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps({"messages": c}) for c in learnable_rows(8)))
    ws = Workspace(tmp_path / "ws", create=True)
    ws.load(pool)
    config = TrainConfig(epochs=2, lora_rank=0, learning_rate=0.03, batch_size=4)  # what the flags below ask
    rows = ws.row_inputs(ws.ids, ())
    out = run_folder(Path(ws.cache_dir) / "train", lm, rows, config, "cpu")
    with pytest.raises(KeyboardInterrupt):  # a Ctrl-C after epoch 2's step 1 of 2: its checkpoint keeps that step
        finetune(lm, rows, out, config, device="cpu", progress=KeyboardAfter(8 + 4))
    args = ["train", "run", ws.path, "--model", lm, "--device", "cpu", "--epochs", "2", "--lora-rank", "0",
            "--learning-rate", "0.03", "--batch-size", "4"]
    result = curate_in_process(*args)
    assert result.returncode == 0, result.stderr
    assert "resumed at epoch 2, step 1 of 2" in result.stdout and "trained 8 rows for 2 epochs" in result.stdout
    again = curate_in_process(*args)
    assert again.returncode == 0 and "a finished run read from the cache" in again.stdout, again.stderr
    fresh = ws.path.parent / "fresh"
    Workspace(fresh, create=True).load(pool)
    assert "trained from the start" in curate_in_process(*args[:2], fresh, *args[3:]).stdout


def test_a_stopped_run_asked_again_with_other_settings_is_kept_named_and_never_resumed_into_them(lm, tmp_path):
    """A run stopped mid-epoch, then asked for with another learning rate: the new one trains from the start in a
    folder of its own (the same out_dir with other settings is refused), the stopped one's checkpoint is left as
    it was, and `curate train run` names it and its size (before: kept in silence); its own settings resume it."""
    import subprocess
    import sys
    from pathlib import Path

    from curate.session import Workspace
    from curate.train.harness import run_folder
    from tests.cli_in_process import curate_in_process

    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps({"messages": c}) for c in learnable_rows(8)))
    ws = Workspace(tmp_path / "ws", create=True)
    ws.load(pool)
    config = TrainConfig(epochs=2, lora_rank=0, learning_rate=0.03, batch_size=4)
    rows = ws.row_inputs(ws.ids, ())
    stopped = run_folder(Path(ws.cache_dir) / "train", lm, rows, config, "cpu")
    with pytest.raises(KeyboardInterrupt):  # a Ctrl-C after epoch 2's step 1 of 2: a checkpoint of that step
        finetune(lm, rows, stopped, config, device="cpu", progress=KeyboardAfter(8 + 4))
    record = (stopped / "run.json").read_text()
    checkpoint = json.loads(record)["partial"]["folder"]
    with pytest.raises(CurateError, match="holds another run"):
        finetune(lm, rows, stopped, TrainConfig(epochs=2, lora_rank=0, learning_rate=0.05, batch_size=4), device="cpu")
    args = ["train", "run", ws.path, "--model", lm, "--device", "cpu", "--epochs", "2", "--lora-rank", "0",
            "--batch-size", "4", "--learning-rate"]
    other = curate_in_process(*args, "0.05")
    assert other.returncode == 0, other.stderr
    assert "trained from the start" in other.stdout
    said = " ".join(other.stdout.split())
    assert "kept beside it: an unfinished run (learning_rate 0.03; epoch 1 of 2 done," in said
    assert f"MiB) in {stopped}: its settings resume it" in said
    assert (stopped / "run.json").read_text() == record and (stopped / checkpoint).is_dir()
    from curate.train.runfile import TRAIN_LOCK, unfinished_beside

    other_folder = run_folder(Path(ws.cache_dir) / "train", lm, rows, TrainConfig(
        epochs=2, lora_rank=0, learning_rate=0.05, batch_size=4), "cpu")
    trainer = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                                "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(120)",
                                str(stopped / TRAIN_LOCK)], stdout=subprocess.PIPE, text=True)
    try:  # a process training it now: said so, and not offered for removal
        assert trainer.stdout.readline().strip() == "held"
        [kept] = unfinished_beside(other_folder)
        assert kept.folder == stopped and kept.training and kept.differs == {"learning_rate": 0.03}
    finally:
        trainer.kill()
        trainer.wait()
    assert not unfinished_beside(other_folder)[0].training
    again = curate_in_process(*args, "0.03")
    assert again.returncode == 0 and "resumed at epoch 2, step 1 of 2" in again.stdout, again.stderr
    assert "kept beside it" not in again.stdout  # the other run finished: nothing unfinished beside this one


class KeyboardAfter(Killer):
    """A Ctrl-C (KeyboardInterrupt) from the progress hook after ``after`` rows."""

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self.after:
            raise KeyboardInterrupt("Ctrl-C")


def test_end_of_turn_training_teaches_the_model_to_stop(lm, tmp_path):
    """The records' definition trains response tokens only, and such a model never learns to end its answer;
    ``end_of_turn=True`` (``ws.fine_tune``) trains the template's end-of-turn token after each answer too."""
    import torch
    from transformers import AutoTokenizer

    from curate.signals.template import Prompter
    from curate.train.examples import encode_rows, end_of_turn_ids
    from curate.train.harness import run_fingerprint

    rows = row_inputs(learnable_rows(8))
    tok = AutoTokenizer.from_pretrained(str(lm))
    prompter = Prompter(tok, 64)
    end = end_of_turn_ids(prompter)
    assert [tok.decode([t]) for t in end] == ["<|im_end|>"]
    plain, _ = encode_rows(prompter, rows)
    ended, _ = encode_rows(prompter, rows, end_of_turn=True)
    assert [e.ids[e.positions[-1]] for e in ended] == [end[-1]] * 8
    assert [e.ids[e.positions[-1]] for e in plain] != [end[-1]] * 8 and len(ended[0].positions) == len(plain[0].positions) + 1
    cut, _ = encode_rows(Prompter(tok, 24), rows, end_of_turn=True)  # truncated answers end nowhere
    assert all(e.truncated and e.ids[e.positions[-1]] != end[-1] for e in cut)

    p_end = {}
    for flag in (False, True):
        run = finetune(lm, rows, tmp_path / f"end-{flag}", TrainConfig(epochs=10, end_of_turn=flag, **FAST),
                       device="cpu")
        model, _ = run.load_model(device="cpu")
        answered = prompter.context_ids([{"role": "user", "content": "Question 5: tell me the number."}]) + \
            prompter.encode("The number you want is forty two.")
        with torch.no_grad():  # the probability of ending right after the answer
            p_end[flag] = float(model(torch.tensor([answered])).logits[0, -1].softmax(-1)[end[-1]])
    assert p_end[True] > 0.2 and p_end[False] < 1e-3, p_end  # measured 0.35 and 1.7e-6
    assert run_fingerprint(lm, rows, TrainConfig(end_of_turn=True)) != run_fingerprint(lm, rows, TrainConfig())
