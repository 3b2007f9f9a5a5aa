"""A budget (or fraction) that keeps every eligible row needs no model: the selectors that pay model work to rank rows
(LESS's warm-up and gradients, Instruction Mining's fine-tunes, the training run that cartography / el2n / grand read)
keep every eligible row without it, reason code ``budget_covers_all``, leave the rest unscored as the model's work
would, record what was skipped, and `curate select` says so. Before, they ran minutes to hours of model work to keep
every row anyway (or, without the training columns, refused)."""

from __future__ import annotations

import pytest

from curate.codes import Decision, Reason
from curate.errors import CurateError
from tests.conftest import write_jsonl
from tests.train_fixtures import learnable_rows, tiny_lm  # noqa: F401  (the session fixture)

ANSWERED = 5


def _workspace(tmp_path):
    """5 answered rows and one question without an answer, with a planted quality column."""
    from curate.session import Workspace

    records = [{"instruction": c[0]["content"], "output": c[1]["content"]} for c in learnable_rows(ANSWERED)]
    src = write_jsonl(tmp_path / "pool.jsonl", [*records, {"messages": [{"role": "user", "content": "Unanswered?"}]}])
    ws = Workspace(tmp_path / "ws", create=True)
    ws.load(src)
    ws.add_column("quality", [1.0] * len(ws.ids), {"kind": "planted"})
    target = write_jsonl(tmp_path / "target.jsonl", records[:2])
    return ws, target


def _kept_all_answered(ws, sel) -> None:
    rows = sel.rows()
    kept = [r for r in rows if r["decision"] == Decision.KEPT]
    assert len(kept) == ANSWERED and {r["reason"] for r in kept} == {Reason.BUDGET_COVERS_ALL}
    unscored = [r for r in rows if r["decision"] == Decision.UNSCORED]
    assert len(unscored) == 1 and unscored[0]["reason"] == Reason.NO_SCORE
    assert not (ws.cache_dir / "train").exists()  # no warm-up, fine-tune or training run was started


@pytest.mark.parametrize("size", [{"budget": ANSWERED}, {"budget": 100}, {"fraction": 1.0}])
def test_less_keeps_every_answered_row_without_a_warm_up(request, tmp_path, size):
    lm = request.getfixturevalue("tiny_lm")
    ws, target = _workspace(tmp_path)
    sel = ws.select("less", name="all", target=str(target), model=str(lm), device="cpu", projection_dim=64, **size)
    _kept_all_answered(ws, sel)
    covers = sel.provenance["budget_covers_all"]
    assert covers["eligible"] == ANSWERED and "warm-up" in covers["skipped"] and not ws.has_column("less")


def test_mining_keeps_every_scored_row_without_its_fine_tunes(request, tmp_path):
    lm = request.getfixturevalue("tiny_lm")
    ws, target = _workspace(tmp_path)
    sel = ws.select("mining", name="all", budget=len(ws.ids), eval_file=str(target), model=str(lm), device="cpu",
                    subsets=3, subset_size=2, indicators=["quality"])
    rows = sel.rows()
    assert all(r["decision"] == Decision.KEPT and r["reason"] == Reason.BUDGET_COVERS_ALL for r in rows)
    assert len(rows) == len(ws.ids) and not (ws.cache_dir / "train").exists()
    # what the fine-tunes would refuse is refused all the same
    with pytest.raises(CurateError, match="not a Hugging Face model folder"):
        ws.select("mining", name="bad", budget=len(ws.ids), eval_file=str(target), model=str(tmp_path / "nothing"),
                  subsets=3, subset_size=2, indicators=["quality"])


@pytest.mark.parametrize("method", ["cartography", "el2n", "grand"])
def test_training_dynamics_selectors_need_no_training_run_for_a_budget_that_keeps_every_row(tmp_path, method):
    ws, _ = _workspace(tmp_path)
    _kept_all_answered(ws, ws.select(method, name="all", budget=ANSWERED))
    with pytest.raises(CurateError, match=r"run ws.train\(\)"):  # a budget that chooses still needs the run
        ws.select(method, name="some", budget=ANSWERED - 1)


def test_curate_select_says_the_model_work_was_skipped(request, tmp_path):
    lm = request.getfixturevalue("tiny_lm")
    from typer.testing import CliRunner

    from curate.cli import app

    ws, target = _workspace(tmp_path)
    res = CliRunner().invoke(app, ["select", str(ws.path), "--method", "less", "--name", "all", "--target", str(target),
                                   "--budget", "50", "--param", f"model={lm}", "--param", "device=cpu"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert ("note: the budget keeps 50 rows, at least the 5 eligible ones: all kept (reason budget_covers_all), "
            "without LESS's warm-up and gradient features") in said


@pytest.mark.parametrize("method", ["el2n", "grand"])
def test_a_budget_that_keeps_every_row_still_needs_the_training_run_to_skip_the_hardest(tmp_path, method):
    """skip_hardest drops the hardest share of the scored rows whatever the budget: without the training run the
    selection kept every row (budget_covers_all), the hardest ones the trained selection rejects among them."""
    ws, _ = _workspace(tmp_path)
    with pytest.raises(CurateError, match=r"run ws.train\(\) .* first, or give skip_hardest=0 and a budget"):
        ws.select(method, name="all", budget=ANSWERED, skip_hardest=0.4)
