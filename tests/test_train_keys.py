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


def test_damaged_feature_and_record_files_are_errors_naming_them(tmp_path):
    """Before: zipfile's "File is not a zip file" and numpy's "No data left in file" named no file (audit p5)."""
    import pytest

    from curate.errors import WorkspaceError
    from curate.train.gradfeatures import FeatureStore
    from curate.train.records import load_records

    (tmp_path / "features").mkdir()
    part = tmp_path / "features" / "part-0001.npz"
    part.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(WorkspaceError, match=rf"{part}: a damaged file of the LESS feature cache .*remove it"):
        FeatureStore(tmp_path / "features")
    (tmp_path / "run" / "epoch-1").mkdir(parents=True)
    records = tmp_path / "run" / "epoch-1" / "records.npz"
    records.write_bytes(b"")
    with pytest.raises(WorkspaceError, match=rf"{records}: a damaged training record file .*remove the run's folder "
                                             rf"{tmp_path / 'run'}"):
        load_records(records.parent)
