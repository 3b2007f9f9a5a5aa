"""A saved scorer folder whose weights file is damaged or hand-edited (an array missing, or of another length) is
refused when it is loaded, naming the folder, as a setting (exit 78): it loaded, then failed after embedding or
scoring every row with exit 1 and an error naming no folder ('this cross-encoder scorer has no calibration map;
fit() or load() it first', numpy's 'fp and xp are not of the same length.')."""

from __future__ import annotations

import shutil

import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from curate.errors import ScorerFolderError
from curate.exit_codes import exit_code
from curate.scorers import WEIGHTS_DIR, Scorer
from curate.session import Workspace
from tests.conftest import write_jsonl


def _edit(folder, file, edit) -> None:
    """Rewrite ``folder/file``'s tensors through ``edit`` (keeping the save id that pairs it with scorer.json)."""
    with safe_open(str(folder / file), "numpy") as fh:
        meta = fh.metadata()
    tensors = load_file(folder / file)
    edit(tensors)
    save_file(tensors, folder / file, metadata=meta)


def _workspace(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"Question {i}?", "output": "answer " * (1 + i)}
                                                  for i in range(6)]))
    return ws


def _ridge(tmp_path, name: str):
    scorer = Scorer(reads=["instruction", "response"], features=["length", "stats"])
    scorer.fit([{"instruction": f"Q {i}?", "response": "word " * (1 + 3 * i)} for i in range(8)], list(range(8)))
    return scorer.save(tmp_path / name)


@pytest.mark.parametrize(("edit", "said"), [
    (lambda t: t.pop("coef"), "head.safetensors holds no coef"),
    (lambda t: t.update(feature_mean=t["feature_mean"][:-1]), "per-feature arrays of different widths"),
])
def test_a_ridge_head_missing_an_array_is_refused_when_loaded(tmp_path, edit, said):
    folder = _ridge(tmp_path, "sc")
    assert Scorer.load(folder).weights
    _edit(folder, "head.safetensors", edit)
    with pytest.raises(ScorerFolderError, match=said) as err:
        Scorer.load(folder)
    assert str(folder) in str(err.value)
    from curate.cli import app

    ws = _workspace(tmp_path)
    res = CliRunner().invoke(app, ["score", str(ws.path), "--scorer", str(folder), "--column", "q"])
    assert exit_code(res.exception) == 78 and said in str(res.exception) and "q" not in ws.columns


@pytest.mark.parametrize(("edit", "said"), [
    (lambda t: t.pop("calibration.x"), "holds no calibration map"),
    (lambda t: t.update({"calibration.y": t["calibration.y"][:-1]}), "a calibration map of (21,) and (20,) knots"),
    (lambda t: t.update({"calibration.x": t["calibration.x"][::-1].copy()}), "not finite and in increasing order"),
])
def test_a_cross_encoder_calibration_map_damaged_is_refused_when_loaded(tmp_path, edit, said):
    folder = tmp_path / "ce"
    shutil.copytree(WEIGHTS_DIR / "quality_ce", folder)
    _edit(folder, "adapter.safetensors", edit)
    with pytest.raises(ScorerFolderError) as err:
        Scorer.load(folder)
    assert str(folder) in str(err.value) and said in str(err.value)


def test_cross_encoder_weights_that_do_not_fit_its_net_name_the_folder_as_a_setting(tmp_path):
    """Found only when the net is built (the base model decides the shapes): the error named the scorer's repr, not
    the folder, and exited 1."""
    from curate.cli import app

    folder = tmp_path / "ce"
    shutil.copytree(WEIGHTS_DIR / "quality_ce", folder)
    _edit(folder, "adapter.safetensors", lambda t: t.pop("head.bias"))
    ws = _workspace(tmp_path)
    res = CliRunner().invoke(app, ["score", str(ws.path), "--scorer", str(folder), "--column", "q"])
    assert exit_code(res.exception) == 78, res.output
    assert str(res.exception).startswith(f"{folder}: its saved weights do not load") and "head.bias" in str(res.exception)


def test_a_folder_named_as_a_shipped_scorer_says_it_is_read_first(tmp_path, monkeypatch):
    """Run where a folder 'quality' (no scorer) lies, --scorer quality said 'quality: not a saved scorer (no
    scorer.json); shipped: complexity, complexity_ridge, quality, quality_ce': refused, naming quality as shipped."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quality").mkdir()
    with pytest.raises(ScorerFolderError, match=f"quality: the name of a shipped scorer, and of {tmp_path}/quality, "
                                                "which is read first"):
        Scorer.load("quality")
    shutil.copytree(WEIGHTS_DIR / "complexity_ridge", tmp_path / "quality", dirs_exist_ok=True)
    assert Scorer.load("quality").column == "complexity_ridge"  # a saved scorer there is the one meant


def test_a_scorer_trained_on_a_base_folder_of_another_machine_names_itself(tmp_path):
    """A cross-encoder saved with --base /home/alice/models/minilm, scored elsewhere, said only 'base
    /home/alice/models/minilm: the base model folder does not exist', naming neither the scorer nor a way on."""
    import json

    folder = shutil.copytree(WEIGHTS_DIR / "quality_ce", tmp_path / "ce")
    doc = json.loads((folder / "scorer.json").read_text())
    (folder / "scorer.json").write_text(json.dumps({**doc, "base": str(tmp_path / "alice" / "minilm")}))
    with pytest.raises(ScorerFolderError) as err:
        Scorer.load(folder).predict([{"instruction": "Question?", "response": "Answer."}])
    assert str(err.value).startswith(f"{folder}: trained on a base model folder that is not here: base "
                                     f"{tmp_path}/alice/minilm: the base model folder does not exist; put that model")
