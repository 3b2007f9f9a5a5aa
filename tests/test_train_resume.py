"""Mid-epoch checkpoints: a run killed part way through an epoch resumes at its last checkpoint (LoRA adapter or full
weights, optimizer, position in the epoch's order, the records so far) and ends with the same per-row records as a
run never stopped. Runs are stopped in this process (an error or a KeyboardInterrupt from the progress hook, a
KeyboardInterrupt inside a forward pass, a real SIGINT inside the optimizer step), one by SIGKILL from outside, in a
process of its own. On the tiny random Llama of tests/train_fixtures.py, on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import curate
from curate.errors import CurateError
from curate.train import TrainConfig, finetune
from curate.train.harness import TrainRun
from curate.train.records import RECORD_KEYS
from curate.train.runfile import RunStart
from tests.train_fixtures import build_tiny_lm, learnable_rows, row_inputs

ROWS = 16          # batch size 4: 4 optimizer steps an epoch
FULL = TrainConfig(epochs=2, lora_rank=0, learning_rate=3e-2, batch_size=4, warmup_ratio=0.25)
LORA = TrainConfig(epochs=2, lora_rank=4, learning_rate=1e-2, batch_size=4, warmup_ratio=0.25)


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


class Crash(Exception):
    """A run's failure that is not a Ctrl-C: it leaves only the checkpoints that were due (as a kill does)."""


class Rows:
    """A progress object counting the rows trained; raises ``error`` once ``stop_after`` rows are trained."""

    def __init__(self, stop_after: int | None = None, error: type[BaseException] = Crash):
        self.n, self.stop_after, self.error = 0, stop_after, error

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.stop_after is not None and self.n >= self.stop_after:
            raise self.error("stopped")


def same_records(a: TrainRun, b: TrainRun) -> None:
    for epoch in range(1, a.config.epochs + 1):
        ra, rb = a.records(epoch), b.records(epoch)
        assert list(ra["id"]) == list(rb["id"])
        for key in RECORD_KEYS:
            np.testing.assert_array_equal(ra[key], rb[key], err_msg=f"epoch {epoch}, {key}")
    assert [s["mean_loss"] for s in a.info["epoch_stats"]] == [s["mean_loss"] for s in b.info["epoch_stats"]]


def test_a_run_stopped_mid_epoch_resumes_at_its_checkpoint_to_the_same_records(lm, tmp_path):
    """Before, a stop in epoch 2 trained all of epoch 2 again: there was no checkpoint inside an epoch."""
    rows = row_inputs(learnable_rows(ROWS))
    straight = finetune(lm, rows, tmp_path / "straight", FULL, device="cpu", checkpoint_seconds=0)
    # checkpoints after steps 2 of each epoch; stopped after step 3 of epoch 2 (rows 16 + 12)
    with pytest.raises(Crash):
        finetune(lm, rows, tmp_path / "run", FULL, device="cpu", progress=Rows(stop_after=ROWS + 12),
                 checkpoint_steps=2)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["epochs_done"] == 1 and info["partial"]["epoch"] == 2 and info["partial"]["step"] == 2
    assert sorted(p.name for p in (tmp_path / "run").glob("step-*")) == ["step-2-2"]  # epoch 1's was removed
    counter = Rows()
    resumed = finetune(lm, rows, tmp_path / "run", FULL, device="cpu", progress=counter, checkpoint_steps=2)
    assert counter.n == 8  # steps 3 and 4 of epoch 2: not the whole epoch again
    same_records(resumed, straight)
    assert not list((tmp_path / "run").glob("step-*")) and "partial" not in resumed.info  # the epoch's replaced it
    assert resumed.info["epoch_stats"][1]["steps"] == 4


CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from curate.train import TrainConfig, finetune
    from tests.train_fixtures import learnable_rows, row_inputs

    lm, out, marker = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    config = TrainConfig(**json.loads(sys.argv[4]))

    class WaitForTheKill:
        def update(self, n):  # once a checkpoint of epoch 2 is recorded, wait (still training) to be killed
            part = json.loads((out / "run.json").read_text()).get("partial") or {}
            if part.get("epoch") == 2 and part.get("step", 0) >= 1:
                marker.write_text("checkpointed")
                time.sleep(120)

    finetune(lm, row_inputs(learnable_rows(int(sys.argv[5]))), out, config, device="cpu",
             progress=WaitForTheKill(), checkpoint_steps=1)
""")


def test_a_run_killed_by_sigkill_mid_epoch_resumes_to_the_same_records(lm, tmp_path):
    """A real process, SIGKILLed after a mid-epoch checkpoint of its LoRA adapter was recorded, in the middle of
    its next step's work; the resume trains the rest of that epoch only, to the records of an unkilled run."""
    from dataclasses import asdict

    rows = row_inputs(learnable_rows(ROWS))
    out, marker = tmp_path / "killed", tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(Path(curate.__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(lm), str(out), str(marker),
                              json.dumps(asdict(LORA)), str(ROWS)], env=env, cwd=env["PYTHONPATH"],
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no mid-epoch checkpoint within 240 s"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    part = json.loads((out / "run.json").read_text())["partial"]
    assert part["epoch"] == 2 and (out / part["folder"] / "adapter_model.safetensors").is_file()
    counter = Rows()
    resumed = finetune(lm, rows, out, LORA, device="cpu", progress=counter)
    assert counter.n == ROWS - part["rows"] and 0 < part["rows"] < ROWS  # only the rest of epoch 2
    straight = finetune(lm, rows, tmp_path / "straight", LORA, device="cpu", checkpoint_seconds=0)
    same_records(resumed, straight)


def test_a_checkpoint_step_count_below_one_is_refused(lm, tmp_path):
    with pytest.raises(CurateError, match="checkpoint_steps must be >= 1"):
        finetune(lm, row_inputs(learnable_rows(2)), tmp_path / "run", FULL, device="cpu", checkpoint_steps=0)
    assert not (tmp_path / "run").exists()


def test_a_damaged_mid_epoch_checkpoint_is_an_error_naming_it_and_what_to_remove(lm, tmp_path):
    """A checkpoint file cut short (a copied cache, a failing disk) raised numpy's or safetensors' error, naming no
    folder; removing the folder it names resumes from the start of that epoch."""
    from curate.errors import WorkspaceError

    rows = row_inputs(learnable_rows(ROWS))
    with pytest.raises(Crash):
        finetune(lm, rows, tmp_path / "run", FULL, device="cpu", progress=Rows(stop_after=ROWS + 12),
                 checkpoint_steps=2)
    folder = tmp_path / "run" / "step-2-2"
    for name in ("position.npz", "optimizer.pt", "model.safetensors"):
        good = (folder / name).read_bytes()
        (folder / name).write_bytes(good[:len(good) // 2])
        with pytest.raises(WorkspaceError, match=r"step-2-2: a damaged training checkpoint .*remove it to resume from "
                                                 r"the start of epoch 2"):
            finetune(lm, rows, tmp_path / "run", FULL, device="cpu")
        (folder / name).write_bytes(good)
    import shutil

    shutil.rmtree(folder)
    counter = Rows()
    assert finetune(lm, rows, tmp_path / "run", FULL, device="cpu", progress=counter).epochs_done == 2
    assert counter.n == ROWS  # epoch 2 from its start


def test_an_error_of_the_machine_while_a_checkpoint_loads_is_not_called_damage(tmp_path):
    """Too many open files while a checkpoint loaded (no 'memory' in its message) was 'a damaged training checkpoint'
    with the advice to remove it, losing the run's progress for nothing; a failing disk's error is the files'."""
    import errno

    import torch

    from curate.errors import WorkspaceError
    from curate.train.checkpoints import load_errors_as_damage

    folder = tmp_path / "step-2-2"
    for machine in (OSError(errno.EMFILE, "Too many open files"), MemoryError(), torch.OutOfMemoryError("no room")):
        with pytest.raises(type(machine)), load_errors_as_damage(folder):
            raise machine
    with pytest.raises(RuntimeError, match="DefaultCPUAllocator"), load_errors_as_damage(folder):
        torch.empty(2**50, dtype=torch.uint8)  # torch's own CPU out-of-memory error (a RuntimeError, no type of its own)
    with pytest.raises(WorkspaceError, match=r"step-2-2: a damaged training checkpoint \(OSError: \[Errno 5\]"), \
            load_errors_as_damage(folder):
        raise OSError(errno.EIO, "Input/output error")


def test_a_base_model_that_fails_to_load_on_resume_is_not_blamed_on_the_checkpoint(lm, tmp_path):
    """The resume's load of the base model (LoRA) ran inside the checkpoint's error wrapper: a base weights file that
    failed to read (here damaged in place, its size and time kept, as a failing disk does) was 'a damaged training
    checkpoint' in step-2-2, with the advice to remove it, losing the run's progress for nothing."""
    import shutil

    from curate.errors import WorkspaceError

    base = tmp_path / "base"
    shutil.copytree(lm, base)
    rows = row_inputs(learnable_rows(ROWS))
    with pytest.raises(Crash):
        finetune(base, rows, tmp_path / "run", LORA, device="cpu", progress=Rows(stop_after=ROWS + 12),
                 checkpoint_steps=2)
    weights = base / "model.safetensors"
    st = weights.stat()
    weights.write_bytes(b"\0" * st.st_size)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(Exception) as got:  # noqa: PT011  (whatever the base's loader raises: not the checkpoint's)
        finetune(base, rows, tmp_path / "run", LORA, device="cpu")
    assert not isinstance(got.value, WorkspaceError) and "damaged training checkpoint" not in str(got.value)
    assert "header" in str(got.value), repr(got.value)  # the base weights file's own error
    assert (tmp_path / "run" / "step-2-2").is_dir()


def interrupted_then_resumed(lm, rows, out: Path, stop: Any, config: TrainConfig = FULL, **kwargs) -> tuple[dict, Rows, TrainRun]:
    """Train with ``stop`` (a context manager that makes the KeyboardInterrupt) and no checkpoint ever due; returns
    ``run.json``'s partial entry the interrupt left, and the counter of the resume's rows."""
    with pytest.raises(KeyboardInterrupt), stop:
        finetune(lm, rows, out, config, device="cpu", progress=stop.rows, checkpoint_seconds=0, **kwargs)
    part = json.loads((out / "run.json").read_text())["partial"]
    counter = Rows()
    resumed = finetune(lm, rows, out, config, device="cpu", progress=counter, checkpoint_seconds=0, **kwargs)
    return part, counter, resumed


class StopInForward:
    """Raise KeyboardInterrupt in the ``nth`` backbone forward pass once ``after`` rows are trained (a global torch
    forward pre-hook: the interrupt lands mid-step, after some of the step's passes added their gradients)."""

    def __init__(self, after: int, nth: int):
        self.rows, self.after, self.nth, self.seen = Rows(), after, nth, 0

    def __enter__(self):
        import torch

        def hook(module, args):
            if type(module).__name__ == "LlamaModel" and self.rows.n >= self.after:
                self.seen += 1
                if self.seen == self.nth:
                    raise KeyboardInterrupt("mid-step")

        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


class SigintInOptimizerStep:
    """Send this process a real SIGINT from inside the optimizer step once ``after`` rows are trained (a global torch
    optimizer step pre-hook): the step must finish before the interrupt is let through. Python's own Ctrl-C handler
    is put in place for it, as a user's process has (a pytest-xdist worker ignores SIGINT)."""

    def __init__(self, after: int):
        self.rows, self.after, self.sent = Rows(), after, False

    def __enter__(self):
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self.previous = signal.signal(signal.SIGINT, signal.default_int_handler)

        def hook(opt, args, kwargs):
            if self.rows.n >= self.after and not self.sent:
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)

        self.handle = register_optimizer_step_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        signal.signal(signal.SIGINT, self.previous)


def test_a_ctrl_c_mid_step_keeps_the_completed_steps_and_the_resume_trains_only_the_rest(lm, tmp_path):
    """A Ctrl-C lost up to TRAIN.checkpoint_seconds of training: nothing was saved unless a checkpoint was due. Now a
    KeyboardInterrupt in epoch 2's step 3 (its second of four one-row passes, the first one's gradients added) saves
    the state after step 2, the cut step discarded; the resume trains steps 3 and 4 to an unkilled run's records."""
    rows = row_inputs(learnable_rows(ROWS))
    straight = finetune(lm, rows, tmp_path / "straight", FULL, device="cpu", checkpoint_seconds=0, step_tokens=1)
    part, counter, resumed = interrupted_then_resumed(lm, rows, tmp_path / "run", StopInForward(ROWS + 8, 2),
                                                      step_tokens=1)
    assert (part["epoch"], part["step"], part["rows"]) == (2, 2, 8)
    assert counter.n == 8 and resumed.start == RunStart("resumed", 2, 2, 4)
    same_records(resumed, straight)


def test_a_sigint_inside_the_optimizer_step_waits_for_the_step_then_saves_it(lm, tmp_path):
    """A real SIGINT landing in opt.step() of epoch 2's step 3 (LoRA): the step ends whole, then the interrupt saves
    the state after it; the resume trains step 4 only, to an unkilled run's records."""
    rows = row_inputs(learnable_rows(ROWS))
    straight = finetune(lm, rows, tmp_path / "straight", LORA, device="cpu", checkpoint_seconds=0)
    part, counter, resumed = interrupted_then_resumed(lm, rows, tmp_path / "run", SigintInOptimizerStep(ROWS + 8),
                                                      LORA)
    assert (part["epoch"], part["step"], part["rows"]) == (2, 3, 12)
    assert counter.n == 4
    same_records(resumed, straight)


def test_a_second_ctrl_c_while_the_interrupt_saves_leaves_no_damaged_checkpoint(lm, tmp_path, monkeypatch):
    """A second Ctrl-C in the save the first one started (here: as its optimizer state is written) leaves no
    checkpoint folder, named or not, nor a temporary one; the resume trains epoch 2 from its start."""
    import curate.train.checkpoints as checkpoints

    rows = row_inputs(learnable_rows(ROWS))
    stop = StopInForward(ROWS + 8, 1)
    real_save = checkpoints.torch_save

    def second_ctrl_c(obj, path):
        if stop.seen:
            raise KeyboardInterrupt("again")
        return real_save(obj, path)

    monkeypatch.setattr(checkpoints, "torch_save", second_ctrl_c)
    with pytest.raises(KeyboardInterrupt, match="again"), stop:
        finetune(lm, rows, tmp_path / "run", FULL, device="cpu", progress=stop.rows, checkpoint_seconds=0)
    monkeypatch.undo()
    run = tmp_path / "run"
    assert "partial" not in json.loads((run / "run.json").read_text())
    assert not list(run.glob("step-*")) and not list(run.glob(".step-*"))
    counter = Rows()
    assert finetune(lm, rows, run, FULL, device="cpu", progress=counter).epochs_done == 2
    assert counter.n == ROWS


class SigintsInEpochSave:
    """Send this process ``count`` real SIGINTs as epoch ``epoch``'s checkpoint writes its records (after its last
    step, before ``run.json`` marks the epoch done), with Python's own Ctrl-C handler in place."""

    def __init__(self, monkeypatch, epoch: int, count: int = 1):
        import curate.train.checkpoints as checkpoints

        real = checkpoints.save_records
        self.sent = 0

        def save_records(folder, *args):
            if folder.name.startswith(f".epoch-{epoch}.") and not self.sent:
                for _ in range(count):
                    self.sent += 1
                    os.kill(os.getpid(), signal.SIGINT)
            return real(folder, *args)

        monkeypatch.setattr(checkpoints, "save_records", save_records)
        self.previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def close(self) -> None:
        signal.signal(signal.SIGINT, self.previous)


def _stopped_in_epoch_2s_save(lm, rows, run, monkeypatch, sigints: int) -> int:
    """Train ``run`` with ``sigints`` SIGINTs sent in epoch 2's save, to its KeyboardInterrupt; the SIGINTs sent. The
    save's hold of Ctrl-C has put Python's handler back by then (checked before this restores the test's own)."""
    stop = SigintsInEpochSave(monkeypatch, epoch=2, count=sigints)
    try:
        with pytest.raises(KeyboardInterrupt):
            finetune(lm, rows, run, FULL, device="cpu", checkpoint_seconds=0)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not the hold's: its handlers put back
    finally:
        stop.close()
        monkeypatch.undo()
    return stop.sent


def test_a_ctrl_c_between_an_epochs_last_step_and_its_record_keeps_the_epoch(lm, tmp_path, monkeypatch):
    """A Ctrl-C landing in epoch 2's save (its four steps done) cut the save: the epoch's steps were lost and the
    resume trained all of epoch 2 again. Now it waits for the epoch to be recorded, then stops the run: the resume
    trains nothing, to an unkilled run's records."""
    rows = row_inputs(learnable_rows(ROWS))
    straight = finetune(lm, rows, tmp_path / "straight", FULL, device="cpu", checkpoint_seconds=0)
    assert _stopped_in_epoch_2s_save(lm, rows, tmp_path / "run", monkeypatch, sigints=1) == 1
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["epochs_done"] == 2 and [s["steps"] for s in info["epoch_stats"]] == [4, 4]
    counter = Rows()
    resumed = finetune(lm, rows, tmp_path / "run", FULL, device="cpu", progress=counter)
    assert counter.n == 0 and resumed.start == RunStart("cache")
    same_records(resumed, straight)


def test_a_second_ctrl_c_in_an_epochs_save_stops_it_and_the_resume_trains_the_epoch_again(lm, tmp_path, monkeypatch):
    """Pressed twice, Ctrl-C gives the epoch's save up at once: no epoch-2/ folder, named or temporary, and run.json
    still says one epoch; the resume trains epoch 2 from its start to an unkilled run's records."""
    rows = row_inputs(learnable_rows(ROWS))
    straight = finetune(lm, rows, tmp_path / "straight", FULL, device="cpu", checkpoint_seconds=0)
    run = tmp_path / "run"
    assert _stopped_in_epoch_2s_save(lm, rows, run, monkeypatch, sigints=2) == 2
    assert json.loads((run / "run.json").read_text())["epochs_done"] == 1
    assert not (run / "epoch-2").exists() and not list(run.glob(".epoch-*"))
    counter = Rows()
    resumed = finetune(lm, rows, run, FULL, device="cpu", progress=counter)
    assert counter.n == ROWS
    same_records(resumed, straight)


def test_a_kill_after_an_epochs_folder_is_renamed_in_but_before_its_record_counts_the_epoch_once(
        lm, tmp_path, monkeypatch):
    """Stopped (as a SIGKILL would) once epoch-2/ is in place but before run.json marks it done: the resume trains
    epoch 2 again from its last checkpoint (step 2) and replaces the folder; run.json counts the epoch once."""
    import curate.train.checkpoints as checkpoints

    rows = row_inputs(learnable_rows(ROWS))
    straight = finetune(lm, rows, tmp_path / "straight", FULL, device="cpu", checkpoint_seconds=0)
    run, real = tmp_path / "run", checkpoints.fsync_path

    def fsync_path(path):
        real(path)
        if Path(path) == run and (run / "epoch-2").is_dir():
            raise Crash("killed after the rename")

    monkeypatch.setattr(checkpoints, "fsync_path", fsync_path)
    with pytest.raises(Crash):
        finetune(lm, rows, run, FULL, device="cpu", checkpoint_steps=2)
    monkeypatch.undo()
    info = json.loads((run / "run.json").read_text())
    assert info["epochs_done"] == 1 and info["partial"]["step"] == 2 and (run / "epoch-2").is_dir()
    counter = Rows()
    resumed = finetune(lm, rows, run, FULL, device="cpu", progress=counter, checkpoint_steps=2)
    assert counter.n == 8 and [s["epoch"] for s in resumed.info["epoch_stats"]] == [1, 2]
    assert resumed.info["epoch_stats"][1]["steps"] == 4
    same_records(resumed, straight)


def test_a_run_of_a_model_with_dropout_killed_early_in_an_epoch_resumes_to_the_same_records(tmp_path):
    """A model that draws dropout in training (here attention dropout 0.3; GPT-2's folders have 0.1): a run stopped
    in epoch 2 before any checkpoint of it resumed from epoch-1/ with torch's random state reset to the seed's, not
    the one the unstopped run had after epoch 1: epoch 2's records differed. Each epoch's checkpoint keeps it now."""
    import json as json_module

    lm = build_tiny_lm(tmp_path / "lm")
    cfg = json_module.loads((lm / "config.json").read_text())
    (lm / "config.json").write_text(json_module.dumps({**cfg, "attention_dropout": 0.3}))
    rows = row_inputs(learnable_rows(ROWS))
    straight = finetune(lm, rows, tmp_path / "straight", FULL, device="cpu", checkpoint_seconds=0)
    with pytest.raises(Crash):
        finetune(lm, rows, tmp_path / "run", FULL, device="cpu", progress=Rows(stop_after=ROWS + 4),
                 checkpoint_seconds=0)
    counter = Rows()
    resumed = finetune(lm, rows, tmp_path / "run", FULL, device="cpu", progress=counter, checkpoint_seconds=0)
    assert counter.n == ROWS and resumed.start == RunStart("resumed", 2, 0, 4)
    same_records(resumed, straight)
