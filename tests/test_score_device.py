"""`curate score --scorer NAME --device`: a fine-tuned scorer (cross-encoder, small-lm) scores where it is told, as
train-scorer's --device trains it; before, `curate score` had no --device and such a scorer always ran on the CPU."""

import pytest

from curate.cli.judge import on_device
from curate.errors import OptionError
from curate.scorers import Scorer
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl


@pytest.fixture
def ws(tmp_path):
    path = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"Explain topic {i}.", "output": "ok"}
                                                 for i in range(3)])
    assert curate_in_process("load", path, "--workspace", tmp_path / "ws").returncode == 0
    return tmp_path / "ws"


def test_device_reaches_the_fine_tuned_scorer_and_not_a_ridge_one():
    tuned, ridge = Scorer.load("complexity"), Scorer.load("quality")  # shipped: a cross-encoder and a ridge scorer
    assert tuned.device == "cpu"
    on_device([tuned, ridge], "auto")
    assert tuned.device == "auto" and not hasattr(ridge, "device")
    with pytest.raises(OptionError, match="'quality' is a ridge scorer"):
        on_device([Scorer.load("quality")], "cpu")  # would be dropped in silence


def test_score_takes_device_and_scores_there(ws):
    r = curate_in_process("score", ws, "--scorer", "complexity", "--device", "cpu")
    assert r.returncode == 0 and "complexity: 3 rows — computed 3" in r.stdout, r.stderr


def test_a_device_this_machine_lacks_is_refused_before_any_row(ws):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = curate_in_process("score", ws, "--scorer", "complexity", "--device", "cuda")
    assert r.returncode == 78 and "device 'cuda' asked for but torch sees no CUDA device" in r.stderr, r.stderr
    ridge = curate_in_process("score", ws, "--scorer", "quality", "--device", "cuda")
    assert ridge.returncode == 78 and "'quality' is a ridge scorer" in ridge.stderr, ridge.stderr
    judge = curate_in_process("score", ws, "--judge", "quality", "--device", "cuda")
    assert judge.returncode == 2 and "an LLM judge runs where its backend serves it" in judge.stderr, judge.stderr
