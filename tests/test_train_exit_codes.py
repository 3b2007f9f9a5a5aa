"""Bad inputs of the model-in-the-loop selectors (LESS, Instruction Mining, the training-dynamics selectors) exit
by README's table, as every other command's do: 65 for bad input data (a target or eval file with no answer, a
record without the group field), 78 for a refused setting or a name the workspace does not hold. They all exited 1,
the code of a damaged workspace or a full disk, so a script could not tell "fix your file" from "retry"."""

from __future__ import annotations

import pytest

from curate.session import Workspace
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loop-codes")
    pool = write_jsonl(tmp / "pool.jsonl", [{"instruction": f"Question {i}?", "output": f"Answer {i}."}
                                            for i in range(12)])
    Workspace(tmp / "ws").load(pool)
    questions = write_jsonl(tmp / "questions.jsonl", [{"instruction": "Name a river."}, {"instruction": "Why?"}])
    answered = write_jsonl(tmp / "answered.jsonl", [{"instruction": "Name a river.", "output": "The Rhine."}])
    return {"ws": tmp / "ws", "questions": questions, "answered": answered, "model": tmp / "no-model-needed"}


CASES = [  # (what, selector and its params, exit code, words of the message)
    ("LESS target without answers", ["--method", "less", "--target", "{questions}", "--param", "model={model}"], 65,
     "questions.jsonl: records 1-2: none of the 2 target examples has an answered turn"),
    ("LESS group field missing", ["--method", "less", "--target", "{answered}", "--param", "model={model}",
                                  "--param", "group_field=category"],
     65, "answered.jsonl: record 1: no field 'category'"),
    ("LESS setting out of range", ["--method", "less", "--target", "{answered}", "--param", "projection_dim=0"], 78,
     "LESS projection_dim must be >= 1"),
    ("mining indicator not a column", ["--method", "mining", "--param", "model={model}", "--budget", "4", "--param", "indicators=nope"], 78,
     "no column 'nope'"),
    ("mining subset larger than the pool", ["--method", "mining", "--param", "model={model}", "--budget", "4", "--param", "subset_size=1000",
                                            "--param", "indicators=length", "--param", "subsets=3"], 78,
     "fewer than subset_size 1000"),
    ("mining eval file without answers", ["--method", "mining", "--param", "model={model}", "--budget", "4", "--param", "eval_file={questions}",
                                          "--param", "indicators=length", "--param", "subsets=3"], 65,
     "none of the 2 eval rows has an answer"),
    ("mining without a budget", ["--method", "mining", "--param", "indicators=length"], 78,
     "the mining selector needs budget= or fraction="),
    ("EL2N before training", ["--method", "el2n", "--budget", "4"], 78, "no column 'el2n': run ws.train()"),
]


@pytest.mark.parametrize("what, args, code, words", CASES, ids=[c[0] for c in CASES])
def test_bad_loop_inputs_exit_by_the_table(files, what, args, code, words):
    argv = [a.format(**files) for a in args]
    got = curate_in_process("select", files["ws"], "--name", "x", *argv)
    said = " ".join(got.stderr.split())
    assert got.returncode == code and words in said, (got.returncode, said)
    assert not (files["ws"] / "cache" / "train").exists()  # refused before any fine-tune


def test_curate_train_refuses_untrainable_rows_and_a_taken_out_folder_by_the_table(tmp_path):
    """`curate train run` on rows none of which has an answer said "nothing to train on: no row has an answered turn"
    and exited 1 (a damaged workspace's code); `curate train model --out` an existing file exited 1 too. Bad input
    data exits 65 naming how many rows and why, a taken --out 78, an empty selection 78."""
    from tests.train_fixtures import build_tiny_lm

    lm = build_tiny_lm(tmp_path / "lm")
    pool = write_jsonl(tmp_path / "questions.jsonl", [{"messages": [{"role": "user", "content": f"Q{i}?"}]}
                                                      for i in range(3)])
    ws = Workspace(tmp_path / "ws")
    ws.load(pool)
    got = curate_in_process("train", "run", ws.path, "--model", lm, "--device", "cpu", "--epochs", "2")
    said = " ".join(got.stderr.split())
    assert got.returncode == 65 and "none of the 3 rows has an answered turn" in said and "no_response 3" in said, said
    ws.add_column("quality", [1.0] * 3, {"kind": "planted"})
    ws.select("threshold", name="none", sort_by="quality", min_score=2.0)  # keeps no row
    got = curate_in_process("train", "run", ws.path, "--selection", "none", "--model", lm, "--device", "cpu")
    assert got.returncode == 78 and "no rows were given" in got.stderr, got.stderr
    got = curate_in_process("train", "model", ws.path, "--selection", "none", "--out", pool, "--model", lm)
    assert got.returncode == 78 and "exists and is not a model curate exported" in got.stderr, got.stderr
