"""Budgets and the codes of rows a budget leaves: one rule for a budget (at least 1 row) wherever it is given, an
unfilled budget said as data and in one CLI line, one code for "the budget filled first" whatever the selector
(selections written before read in it), refused rows told apart from rows never reached, and rejected rows shown
with why."""

import numpy as np
import pytest

from curate.errors import OptionError
from curate.session import Workspace
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl

TURNS_SUM = {"kind": "test", "granularity": "turn", "reducer": "sum"}  # how judges and scorers declare DEITA scores
BUDGETED = ("deita", "top_k", "random", "kcenter", "kmeans", "lift")


@pytest.fixture
def ws(tmp_path):
    """20 rows with DEITA scores (row i scores 20 - i) and embeddings in which rows 1, 3 and 5 are near copies of
    rows 0, 2 and 4 (cosine ~0.995): deita at 0.9 refuses those three."""
    recs = [{"instruction": f"Question number {i} about topic {i % 7}?", "output": f"Answer {i}."} for i in range(20)]
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "pool.jsonl", recs))
    order = [w.index[w.ids[k]] for k in range(len(w))]  # positions are the pool's: scores by position
    rng = np.random.default_rng(7)
    x = rng.standard_normal((len(w), 32))
    for copy in (1, 3, 5):
        x[copy] = x[copy - 1] + 0.1 * rng.standard_normal(32) * np.linalg.norm(x[copy - 1]) / np.sqrt(32)
    w.add_embeddings("default", x / np.linalg.norm(x, axis=1, keepdims=True), {"kind": "test"})
    w.add_column("complexity", [[float(20 - p)] for p in order], TURNS_SUM)
    w.add_column("quality", [[1.0] for _ in order], TURNS_SUM)
    return w


def test_a_budget_under_one_row_is_refused_alike_by_every_selector_the_api_and_the_cli(ws, tmp_path):
    """`curate select --method top_k --budget 0` exited 0 keeping nothing, --budget -5 said '>= 0' (78), and curate
    run's --budget 0 said '>= 1': now every selector, ws.select, a chain's step, run_pipeline and curate select
    refuse a budget under 1 with one message (an OptionError, exit 78) naming budget= and --budget."""
    from curate.pipeline import run_pipeline

    message = (r"budget must be a whole number of rows, at least 1 \(--budget; budget= in Python\), not 0: "
               r"a budget of 0 keeps no row")
    for method in BUDGETED:
        with pytest.raises(OptionError, match=rf"^selector '{method}': {message}$"):
            ws.select(method=method, name="zero", budget=0)
    with pytest.raises(OptionError, match=message):
        ws.select(name="chain", steps=[{"method": "exact"}, {"method": "top_k", "budget": 0}])
    with pytest.raises(OptionError, match=r"at least 1 .*, not None$"):  # a required budget given as None: named too
        ws.select(method="top_k", name="none", budget=None)
    with pytest.raises(OptionError, match=message):
        run_pipeline(str(tmp_path / "pool.jsonl"), out=tmp_path / "run", budget=0, report=False)
    assert not any(name in ws.selections for name in ("zero", "chain", "none"))
    for budget in ("0", "-5"):
        proc = curate_in_process("select", ws.path, "--method", "top_k", "--budget", budget, "--name", "z")
        assert proc.returncode == 78, proc.stdout + proc.stderr
        assert (f"budget must be a whole number of rows, at least 1 (--budget; budget= in Python), not {budget}"
                in proc.stderr)
    assert "z" not in Workspace.open(ws.path).selections
    assert len(ws.select(method="deita", name="uncapped").ids) == 17  # deita without a budget: no cap, as before
