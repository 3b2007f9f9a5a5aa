"""A training run is named by the arithmetic it trained in (CUDA with bf16: bfloat16 autocast; the CPU: float32),
so a run trained on a GPU never answers or resumes a CPU request (GPU audit, 2026-12-07). These run on the CPU: a
CUDA run is met as its cached record, which is what a CPU request finds in a workspace trained on a GPU before."""

from __future__ import annotations

import json

import pytest

from curate.errors import CurateError
from curate.signals.cache import json_fingerprint
from curate.storage.files import folder_fingerprint
from curate.train import TrainConfig, finetune
from curate.train.harness import VERSION, run_fingerprint, run_folder
from tests.train_fixtures import learnable_rows, row_inputs, tiny_lm  # noqa: F401 (a fixture)

BF16_AUTOCAST, FLOAT32 = "bfloat16-autocast", "float32"  # curate.train.runfile
FAST = {"batch_size": 4, "learning_rate": 5e-3, "max_length": 64, "lora_rank": 4}


def test_the_arithmetic_names_a_cuda_run_and_cpu_names_stay(tmp_path):
    """Before: the name had no arithmetic, so a bf16-autocast run on CUDA and a float32 run on the CPU shared one."""
    (tmp_path / "config.json").write_text("{}")
    rows = row_inputs(learnable_rows(4))
    config = TrainConfig()
    settings = {k: v for k, v in config.__dict__.items() if k != "end_of_turn"}
    before = json_fingerprint({"version": VERSION, "model": folder_fingerprint(tmp_path),
                               "data": json_fingerprint([[r.id, r.conversation] for r in rows]), "config": settings})
    assert run_fingerprint(tmp_path, rows, config) == before  # every CPU run cached so far keeps its name
    assert run_fingerprint(tmp_path, rows, config, BF16_AUTOCAST) != before
    assert run_folder(tmp_path, tmp_path, rows, config, "cpu").name == before[:20]


def test_a_run_cached_from_cuda_is_neither_served_nor_resumed_on_the_cpu(tiny_lm, tmp_path):  # noqa: F811
    """Before: a run trained on CUDA (bf16 autocast) under the shared name answered `curate train run --device cpu`
    as if trained there, and a killed one resumed its later epochs in float32: one run in two arithmetics."""
    rows = row_inputs(learnable_rows(4))
    config = TrainConfig(epochs=2, **FAST)
    out = tmp_path / "run"
    run = finetune(tiny_lm, rows, out, config, device="cpu")
    info = json.loads((out / "run.json").read_text())
    info.pop("precision", None)  # what the harness recorded before: a device, no arithmetic
    info["device"] = "cuda"
    (out / "run.json").write_text(json.dumps(info))
    with pytest.raises(CurateError, match=rf"{out}.*cuda in bfloat16-autocast.*float32 on cpu"):
        finetune(tiny_lm, rows, out, config, device="cpu")  # finished: it was read back as this CPU run
    info["epochs_done"] = 1
    info["epoch_stats"] = info["epoch_stats"][:1]
    (out / "run.json").write_text(json.dumps(info))
    with pytest.raises(CurateError, match="bfloat16-autocast"):
        finetune(tiny_lm, rows, out, config, device="cpu")  # killed after epoch 1: it resumed epoch 2 in float32
    assert run.info["precision"] == FLOAT32  # a record names its arithmetic now
