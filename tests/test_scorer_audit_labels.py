"""Labels a scorer cannot learn from, and a saved scorer's folder meeting another machine, as a user meets them
(scorers audit 4)."""

from __future__ import annotations

import warnings

import pytest
from typer.testing import CliRunner

from curate.errors import TooFewLabelsError
from curate.exit_codes import exit_code
from curate.scorers import train_scorer
from curate.session import Workspace
from tests.conftest import write_jsonl


def _pool(tmp_path, labels: list[float | None], name: str = "ws") -> Workspace:
    records = []
    for i, label in enumerate(labels):
        rec = {"instruction": f"Question {i}: tell me about topic {i}.", "output": "detail " * (3 + i % 10)}
        if label is not None:
            rec["gpt4"] = label
        records.append(rec)
    ws = Workspace(tmp_path / name)
    ws.load(write_jsonl(tmp_path / f"{name}.jsonl", records))
    return ws


@pytest.mark.parametrize("kind", ["ridge", "cross-encoder"])
def test_labels_of_one_value_are_refused_as_data_before_any_work(tmp_path, kind):
    """A judge that gave every row one number: train-scorer exited 1 (a crash, by the exit-code table) with 'fitting
    needs at least two rows with different scores', naming no column, after embedding every row (or loading the
    cross-encoder); too few labels is bad input data, 65, naming the column and the value."""
    from curate.cli import app

    ws = _pool(tmp_path, [3.0] * 30 + [None] * 5)
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "gpt4", "--folds", "3", "--kind", kind,
                                   "--out", str(tmp_path / "sc")])
    assert isinstance(res.exception, TooFewLabelsError) and exit_code(res.exception) == 65, res.output
    assert "column gpt4: all 30 usable labels are 3" in str(res.exception)
    assert not (tmp_path / "sc").exists() and not list((ws.cache_dir).rglob("*.npy"))  # nothing embedded or saved
    with pytest.raises(TooFewLabelsError, match="all 30 usable labels are 3"):
        train_scorer(ws, target="gpt4", k=3)


def test_distil_whose_first_labels_are_one_value_says_so_as_data(tmp_path):
    """distil's first random labels all one value (a judge that gives nearly every row a 3): it exited 1 with
    fit_head's 'fitting needs at least two rows with different scores', after paying for the labels; now 65 with the
    count, the value and what to do."""
    from curate.cli import app

    ws = _pool(tmp_path, [3.0] * 40)
    res = CliRunner().invoke(app, ["distil", str(ws.path), "--target", "gpt4", "-n", "12", "--rounds", "1",
                                   "--uncertain-k", "4", "--holdout-n", "6"])
    assert isinstance(res.exception, TooFewLabelsError) and exit_code(res.exception) == 65, res.output
    assert "all 12 labels of the first 12 random rows are 3" in str(res.exception)


def _split_overlap(data, holdout: float = 0.25, seed: int = 0) -> int:
    """Held-out turns whose texts a training turn has too, under the split every evaluation draws."""
    from curate.scorers.evaluation import group_split

    train, test = group_split(len(data), data.groups, holdout, seed)
    seen = {(data.turns[i].instruction, data.turns[i].response) for i in train}
    return sum((data.turns[i].instruction, data.turns[i].response) in seen for i in test)


def test_one_text_never_lands_on_both_sides_of_a_split(tmp_path):
    """Evol labels grouped by seed id kept two seeds of one instruction (a pool's repeated row: ids x and x-2) in two
    groups: 18 of 24 held-out versions had their exact text among the training labels, and the held-out figure
    measured recall. Identical texts now share a group, with every version of their seeds; a judge column's turn
    that repeats another row's turn joins that row's group too."""
    from curate.scorers import from_column, from_label_set

    records = []
    for s in range(20):
        for sid in (f"seed{s}", f"seed{s}-2"):
            for step in range(3):
                records.append({"text": f"Task {s}: do thing {s}" + " and more" * step, "score": float(1 + step),
                                "seed_id": sid, "step": step, "operation": "deepening"})
    data = from_label_set(records, "evol_complexity")
    assert len(set(data.groups)) == 20 and _split_overlap(data) == 0
    ws = Workspace(tmp_path / "ws")
    ws.add_labels("evol_complexity", records, {"method": "evol", "kind": "complexity", "scale": [1, 3]})
    result = train_scorer(ws, labels="evol_complexity", k=3, holdout=0.25, features=["length"])
    assert len(set(result.data.groups)) == 20 and result.evaluation.n_holdout == 5 * 6  # 5 of 20 seeds' instructions

    rows = [{"messages": [{"role": "user", "content": f"Opening {i}?"}, {"role": "assistant", "content": f"A {i}."},
                              {"role": "user", "content": f"Follow-up {i}?"}, {"role": "assistant", "content": "B."}],
             "j": [1.0, 2.0 + i % 3]} for i in range(12)]
    rows += [{"messages": [{"role": "user", "content": f"Follow-up {i}?"}, {"role": "assistant", "content": "B."}],
              "j": [2.0 + i % 3]} for i in range(12)]  # each follow-up again, as a row of its own
    pool = Workspace(tmp_path / "pool")
    pool.load(write_jsonl(tmp_path / "pool.jsonl", rows))
    data = from_column(pool, "j")
    assert len(data) == 36 and len(set(data.groups)) == 12 and _split_overlap(data) == 0


@pytest.mark.parametrize(("scores", "said"), [([1, 2, float("nan"), 4, 5, 3], "score 2 is nan"),
                                              ([1, 2, "high", 4, 5, 3], "score 2 is 'high'"),
                                              ([2] * 6, "at least two rows with different scores")])
def test_a_cross_encoder_fit_refuses_a_label_that_is_no_number_as_the_ridge_fit_does(scores, said):
    """CrossEncoderScorer.fit took a NaN label: it fine-tuned on a NaN target, and the fitted scorer scored every
    row NaN (saved so, too); a label 'high' was Python's 'could not convert string to float'."""
    from curate.errors import ScorerError
    from curate.scorers import CrossEncoderScorer, Scorer

    rows = [{"instruction": f"Question {i}?", "response": "answer " * (i + 1)} for i in range(6)]
    for cls in (CrossEncoderScorer, Scorer):
        with pytest.raises(ScorerError, match=said):
            cls(reads=["instruction", "response"]).fit(rows, scores, **({"epochs": 1} if cls is CrossEncoderScorer else {}))


def test_labels_left_out_as_no_number_show_the_first_such_value_and_where(tmp_path):
    """A judge column of booleans gave 'column gpt4 has 0 usable numeric labels (left out: 40 x no numeric value)':
    nothing said which rows or what they held. The first refused value is named, with its row (or record)."""
    from curate.cli import app
    from curate.errors import TooFewLabelsError
    from curate.scorers import from_label_set

    ws = _pool(tmp_path, [i % 2 == 0 for i in range(40)])
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "gpt4", "--folds", "3",
                                   "--out", str(tmp_path / "sc")])
    assert isinstance(res.exception, TooFewLabelsError), res.output
    assert f"(left out: 40 x no numeric value (e.g. row {ws.ids[0]}: True))" in str(res.exception)
    data = from_label_set([{"text": "A task.", "score": "3/5"}, {"text": "Another.", "score": 2}], "hand")
    assert data.skipped_text() == "1 x no numeric score (e.g. record 0: '3/5')"


def test_scoring_with_a_scorer_whose_labels_changed_since_it_learnt_them_says_so(tmp_path):
    """A judge column re-judged after a scorer learnt it: `curate score --scorer` scored on in silence with a scorer
    imitating labels that are no longer there. Its scorer.json records the labels it read (in this workspace); a
    change is said (a note on the command line, a CurateWarning from ws.apply); another workspace is not compared."""
    from curate.cli import app
    from curate.errors import CurateWarning
    from curate.scorers import Scorer

    ws = _pool(tmp_path, [None] * 30)
    provenance = {"kind": "judge", "judge": "quality", "reads": ["instruction", "response"]}
    ws.add_column("judge_q", [float(1 + i % 5) for i in range(30)], provenance)
    train_scorer(ws, target="judge_q", k=3, features=["length"]).scorer.save(tmp_path / "sc")
    runner = CliRunner()
    res = runner.invoke(app, ["score", str(ws.path), "--scorer", str(tmp_path / "sc"), "--column", "s1"])
    assert res.exit_code == 0 and "changed since" not in res.output, res.output
    ws.add_column("judge_q", [float(5 - i % 5) for i in range(30)], provenance)  # re-judged
    with warnings.catch_warnings():  # as curate's main: the command says it in its own words
        warnings.simplefilter("ignore", CurateWarning)
        res = runner.invoke(app, ["score", str(ws.path), "--scorer", str(tmp_path / "sc"), "--column", "s2"])
    said = " ".join(res.output.split())
    assert res.exit_code == 0 and "note: scorer 'judge_q_scorer': column 'judge_q' changed since this scorer learnt" \
        in said, res.output
    with pytest.warns(CurateWarning, match="column 'judge_q' changed since this scorer learnt it"):
        ws.apply(Scorer.load(tmp_path / "sc").named("s3"), progress=False)
    other = _pool(tmp_path, [None] * 30, name="other")  # its own judge_q: other labels, not these changed
    other.add_column("judge_q", [1.0] * 30, provenance)
    res = runner.invoke(app, ["score", str(other.path), "--scorer", str(tmp_path / "sc"), "--column", "s1"])
    assert res.exit_code == 0 and "changed since" not in res.output, res.output


def test_rows_loaded_after_a_scorer_learnt_its_labels_are_no_change_to_them(tmp_path):
    """The record hashed the whole column over the whole pool: rows loaded after training (the pool a scorer is
    trained to score, unlabelled) made every later `curate score --scorer` say the labels were 're-judged or
    relabelled', though not one label changed. A label given to one of them is a change."""
    from curate.scorers.labels_read import labels_changed

    ws = _pool(tmp_path, [None] * 30)
    provenance = {"kind": "judge", "judge": "quality", "reads": ["instruction", "response"]}
    ws.add_column("judge_q", [float(1 + i % 5) for i in range(30)], provenance)
    scorer = train_scorer(ws, target="judge_q", k=3, features=["length"]).scorer
    ws.load(write_jsonl(tmp_path / "more.jsonl", [{"instruction": f"New question {i}?", "output": "new " * (i + 2)}
                                                  for i in range(5)]))
    assert len(ws) == 35 and labels_changed(ws, scorer.metadata) is None
    ws.add_column("judge_q", [*ws.column("judge_q")[:30], 3.0, None, None, None, None], provenance)  # one more label
    assert "column 'judge_q' changed since this scorer learnt it" in labels_changed(ws, scorer.metadata)


def test_a_follow_up_many_conversations_share_does_not_join_them_into_one_group():
    """Identical texts joined whole groups: 50 conversations whose second turn is "continue" (read alone, as the
    instruction) became one group, so no split could hold any of them out (train-scorer: too few groups for its folds).
    The shared text sits in one group; the conversations keep theirs."""
    from curate.rows import Turn
    from curate.scorers.training_data import TrainingData

    data = TrainingData([], [], [], reads=["instruction"], source="column j")
    for i in range(50):
        data.keep(Turn(f"Write a poem about topic {i}.", "..."), 3.0, f"conversation {i}", {})
        data.keep(Turn("continue", "..."), 2.0, f"conversation {i}", {})
    data.join_duplicate_groups()
    assert len(set(data.groups)) == 50 and len({data.groups[i] for i in range(1, 100, 2)}) == 1
    assert _split_overlap(data) == 0
