"""ws.select shows its selectors' bars in Python as `curate select` does (an hour-long ws.select("mining") in a
notebook said nothing until it ended), and a fitted selector's rule is said by `curate select` and by the selection's
notebook view (R², a β per indicator, the subsets), not only kept in the artifact."""

import io
import sys

import pytest

from curate.select.progress import showing_progress
from curate.session import Workspace
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl
from tests.train_fixtures import learnable_rows, tiny_lm  # noqa: F401  (the session fixture, used through request.getfixturevalue)


class Terminal(io.StringIO):
    """stderr as a terminal is (where a person watches the bars), keeping what was written to it."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch, capsys) -> Terminal:
    """A terminal for the test to make sys.stderr in its body (pytest's capture puts its own back at each phase)."""
    monkeypatch.delenv("CURATE_PROGRESS", raising=False)
    return Terminal()


def read(stream: io.StringIO) -> str:
    """What was written to ``stream`` since the last read."""
    text = stream.getvalue()
    stream.seek(0)
    stream.truncate()
    return text


def _pool(tmp_path, n: int) -> Workspace:
    convs = learnable_rows(n, noisy=tuple(range(1, n, 2)))
    src = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": c[0]["content"], "output": c[1]["content"]}
                                               for c in convs])
    ws = Workspace(tmp_path / "ws")
    ws.load(src)
    return ws


def test_ws_select_shows_the_walk_where_a_person_watches_unless_told_not_to(tmp_path, terminal, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stderr", terminal)
    ws = _pool(tmp_path, 8)
    read(terminal)
    ws.select(method="minhash", name="shown")
    assert "minhash: 100%" in read(terminal)  # as curate select shows it, and ws.train and ws.apply theirs
    ws.select(method="minhash", name="quiet", progress=False)
    assert "minhash" not in read(terminal)
    with showing_progress(False):  # a caller that chose quiet (run_pipeline(progress=False)) stays quiet
        ws.select(method="minhash", name="in_a_quiet_run")
    assert "minhash" not in read(terminal)
    monkeypatch.setattr(sys, "stderr", captured := io.StringIO())  # a log, a pipe: quiet unless asked
    ws.select(method="minhash", name="in_a_log")
    assert "minhash" not in captured.getvalue()
    ws.select(method="minhash", name="asked", progress=True)
    assert "minhash: 100%" in captured.getvalue()


def test_mining_shows_its_fine_tunes_and_says_its_rule(request, tmp_path, terminal, monkeypatch):
    monkeypatch.setattr(sys, "stderr", terminal)
    lm = request.getfixturevalue("tiny_lm")
    ws = _pool(tmp_path, 12)
    ws.add_column("quality", [float(i % 2 == 0) for i in range(12)], {"kind": "planted"})
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"instruction": c[0]["content"], "output": c[1]["content"]}
                                                 for c in learnable_rows(4, seed=1)])
    params = {"model": str(lm), "eval_file": str(evals), "subsets": 3, "subset_size": 4, "indicators": "quality",
              "device": "cpu"}
    read(terminal)
    ws.select("mining", name="in_python", budget=4, **params)
    assert "Instruction Mining fine-tunes" in read(terminal)  # in a notebook: hours of fine-tunes said nothing
    got = curate_in_process("select", tmp_path / "ws", "--method", "mining", "--name", "mined", "--budget", "4",
                            *(a for k, v in params.items() for a in ("--param", f"{k}={v}")))
    assert got.returncode == 0, got.stderr
    beta = ws.artifact("mining")["coefficients"][0]
    said = " ".join(got.stdout.split())
    assert "Instruction Mining rule fitted on 3 fine-tuned subsets: R² " in said, said
    assert f"quality {beta:+.4f}" in said, said
    view = ws.selection("mined")._repr_html_()
    assert "fitted on 3 fine-tuned subsets: R² " in view and f"quality {beta:+.4f}" in view
