"""What names a training run and its LESS features (every setting that changes them, old names kept at the old
values), and damaged record/feature files named. Each test failed on the code before it."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import curate.train.harness as harness
import curate.train.less as less
from curate.signals.cache import json_fingerprint
from curate.train.harness import TrainConfig, run_fingerprint
from curate.train.less import LessConfig
from tests.train_fixtures import learnable_rows, row_inputs


def test_the_projection_block_names_less_features_and_old_keys_stay(tmp_path, monkeypatch):
    """Before: the key had no block, though the block draws the random matrix (audit p2: two blocks project one
    gradient to cosine ~0), so features cached under another block answered."""
    features = less._Features(SimpleNamespace(info={"fingerprint": "run"}), LessConfig(), "cpu", tmp_path)
    cfg = features.config
    before = json_fingerprint({"run": "run", "epoch": 1, "kind": "adam", "dim": cfg.projection_dim, "seed": cfg.seed,
                               "device": "cpu", "max_length": cfg.max_length})[:24]
    assert features.key(1, "adam") == before  # the default block: the name every cached feature file has
    monkeypatch.setattr(less, "LESS", dataclasses.replace(less.LESS, projection_block=32768))
    assert features.key(1, "adam") != before


def test_the_group_size_names_a_training_run_and_old_names_stay(tmp_path, monkeypatch):
    """Before: TRAIN.group_size decides every epoch's batches (audit p9) but a run cached under another group size
    was read back as this one."""
    (tmp_path / "config.json").write_text("{}")
    rows = row_inputs(learnable_rows(4))
    default = run_fingerprint(tmp_path, rows, TrainConfig())
    monkeypatch.setattr(harness, "TRAIN", dataclasses.replace(harness.TRAIN, group_size=harness.TRAIN.group_size))
    assert run_fingerprint(tmp_path, rows, TrainConfig()) == default
    monkeypatch.setattr(harness, "TRAIN", dataclasses.replace(harness.TRAIN, group_size=4))
    assert run_fingerprint(tmp_path, rows, TrainConfig()) != default
