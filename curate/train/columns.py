"""Training signals as workspace columns: fine-tune on rows, then write the data map and the diet scores.

:func:`train_workspace` runs (or resumes, or reads back) the harness on a workspace's rows, its run cached
under ``<cache_dir>/train/<run fingerprint>/``, and writes one value per row into ``confidence``,
``variability``, ``correctness`` (Cartography: needs at least 2 epochs) and ``el2n``, ``grand`` (Data Diet:
at epoch ``early_epoch``), each with provenance naming the run and the definition; rows that could not be
trained (no answered turn) get None and a ``<column>_failure`` entry. Each call replaces these columns: they
always describe one run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from curate.defaults import TRAIN
from curate.errors import OptionError, python_and_cli
from curate.storage.failures import failure_arrow_type
from curate.train.cartography import CARTOGRAPHY_COLUMNS, data_map
from curate.train.diet import DIET_COLUMNS, diet_scores
from curate.train.harness import TrainConfig, TrainRun, finetune, run_folder

DEFINITIONS = {
    "confidence": "mean over epochs of the row's mean gold-token probability (Cartography)",
    "variability": "std over epochs of the row's mean gold-token probability (Cartography)",
    "correctness": "share of epochs with teacher-forced token accuracy > {acc} (Cartography, for generation)",
    "el2n": "mean per-token ||p - onehot(gold)||_2 in epoch {epoch}'s forward pass (Data Diet EL2N)",
    "grand": "norm of the row's loss gradient w.r.t. the output-head weights in epoch {epoch} (Data Diet GraNd, "
             "last layer, closed form)",
}


def run_columns(run: TrainRun, early_epoch: int = TRAIN.early_epoch) -> dict[str, np.ndarray]:
    """The five columns' values aligned to ``run.ids`` (Cartography needs 2+ epochs, the diet ``early_epoch``)."""
    stacked = run.all_records()
    out = dict(data_map(stacked["gold_prob"], stacked["token_accuracy"]))
    out.update(diet_scores(stacked, early_epoch))
    return out


def write_columns(ws: Any, run: TrainRun, early_epoch: int = TRAIN.early_epoch) -> list[str]:
    """Write the run's columns into ``ws`` (replacing earlier ones); returns their names."""
    values = run_columns(run, early_epoch)
    skipped = list(run.skipped)
    ids = run.ids + skipped
    fails = [None] * len(run.ids) + [[run.skipped[k].to_dict()] for k in skipped]
    base = {"kind": "training_dynamics", "granularity": "row", "reducer": None, "train": run.describe()}
    names = [*CARTOGRAPHY_COLUMNS, *DIET_COLUMNS]
    for name in names:
        text = DEFINITIONS[name].format(acc=TRAIN.correct_accuracy, epoch=early_epoch)
        prov = {**base, "definition": text, **({"epoch": early_epoch} if name in DIET_COLUMNS else {})}
        col = [float(v) for v in values[name]] + [None] * len(skipped)
        ws.add_column(name, col, prov, ids=ids)
        ws.add_column(f"{name}_failure", fails, {"kind": "failure", "of": name}, ids=ids, value_type=failure_arrow_type())
    return names


def train_workspace(ws: Any, ids: list[str] | None = None, *, model: str | Path | None = None,
                    config: TrainConfig | None = None, device: str | None = None, progress: Any = None,
                    early_epoch: int = TRAIN.early_epoch, columns: bool = True) -> TrainRun:
    """Fine-tune on the rows ``ids`` (default: the pool) and write the training-signal columns."""
    from curate.signals.engine import default_model_dir

    config = config or TrainConfig()
    if columns and config.epochs < max(2, early_epoch):
        raise OptionError(f"the data map needs at least 2 epochs and EL2N/GraNd epoch {early_epoch}; "
                          f"got {python_and_cli(f'epochs={config.epochs}', '--epochs')}")
    model_dir = Path(model) if model is not None else default_model_dir()
    rows = ws.row_inputs(ws.ids if ids is None else list(dict.fromkeys(ids)), ())
    out_dir = run_folder(Path(ws.cache_dir) / "train", model_dir, rows, config, device)
    run = finetune(model_dir, rows, out_dir, config, device=device, progress=progress)
    if columns:
        write_columns(ws, run, early_epoch)
    return run
