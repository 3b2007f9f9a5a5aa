"""A ridge scorer that reads numeric workspace columns (token signals) beside its texts: training, the
failure of a turn without a number, recomputation when the input column changes, and the CLI option."""

import numpy as np
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.codes import FailureCode
from curate.errors import CurateWarning, ScorerError
from curate.scorers import Scorer, train_scorer
from curate.session import Workspace
from tests.conftest import write_jsonl


@pytest.fixture
def ws_with_signal(tmp_path):
    """300 rows whose judge label follows a per-turn signal column that the texts do not show."""
    rng = np.random.default_rng(0)
    recs = [{"instruction": f"Question {i} about topic {i % 7}?", "output": f"Answer {i}: " + "word " * int(rng.integers(3, 30))}
            for i in range(300)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", recs))
    signal = rng.normal(size=len(ws))
    ws.add_column("signal", [[float(v)] for v in signal], {"kind": "signal", "fingerprint": "model-a"})
    ws.add_column("judge", [[3 + float(v) + 0.3 * float(rng.normal())] for v in signal],
                  {"kind": "judge", "judge": "judge", "reads": ["instruction", "response"],
                   "scale": [-5, 11]})  # continuous labels on no standard judge scale: it says its own
    return ws, signal


def test_a_column_feature_teaches_the_scorer_what_the_texts_do_not_carry(ws_with_signal, tmp_path):
    ws, signal = ws_with_signal
    texts_only = train_scorer(ws, target="judge")
    with_signal = train_scorer(ws, target="judge", columns=["signal"])
    assert texts_only.evaluation.holdout["scorer"]["spearman"] < 0.4
    assert with_signal.evaluation.holdout["scorer"]["spearman"] > 0.85
    loaded = Scorer.load(with_signal.scorer.save(tmp_path / "sc"))
    assert loaded.columns == ["signal"] and loaded.inputs == ("signal",) and loaded.column == "judge_scorer"
    rows = [{"instruction": "q?", "response": "a.", "signal": s} for s in (1.5, -1.5)]
    high, low = loaded.predict(rows)
    assert high > low and np.allclose(loaded.predict(rows), with_signal.scorer.predict(rows))
    with pytest.raises(ScorerError, match="no number in column 'signal'"):
        loaded.predict([{"instruction": "q?", "response": "a."}])


def test_apply_fails_turns_without_a_number_and_recomputes_when_the_column_changes(ws_with_signal, tmp_path):
    ws, signal = ws_with_signal
    scorer = train_scorer(ws, target="judge", columns=["signal"]).scorer
    first = ws.apply(scorer, progress=False)
    assert (first.computed, first.failed) == (300, 0)
    assert ws.apply(scorer, progress=False).computed == 0  # same scorer, same input column: nothing to do

    # the signal recomputed (another model), with no value for every tenth row
    ws.add_column("signal", [[float(v)] if i % 10 else [None] for i, v in enumerate(signal)],
                  {"kind": "signal", "fingerprint": "model-b"})
    with pytest.warns(CurateWarning, match=r"judge_scorer: 30 of the 300 rows computed now failed"):
        again = ws.apply(scorer, progress=False)
    assert (again.computed, again.failed) == (300, 30)
    values = ws.column(scorer.column)
    fails = ws.failures(scorer.column, ws.ids)
    for i in range(len(ws)):
        if i % 10:
            assert values[i][0] is not None and not fails[i]
        else:
            assert values[i] is None or values[i][0] is None
            assert [f.code for f in fails[i]] == [FailureCode.NO_INPUT_VALUE]


def test_apply_hands_a_scorer_its_rows_in_chunks_and_stores_what_one_call_would(ws_with_signal, monkeypatch):
    """ws.apply gives a step that declares rows_per_call that many rows at a time (their inputs, read columns too, are
    never all in memory): the column, its failures and the summed stats are those of one call over every row."""
    ws, signal = ws_with_signal
    scorer = train_scorer(ws, target="judge", columns=["signal"]).scorer
    ws.add_column("signal", [[float(v)] if i % 10 else [None] for i, v in enumerate(signal)],
                  {"kind": "signal", "fingerprint": "model-b"})
    calls: list[int] = []
    run = type(scorer).run
    monkeypatch.setattr(type(scorer), "run", lambda self, rows, ctx: calls.append(len(rows)) or run(self, rows, ctx))
    scorer.rows_per_call = len(ws)
    with pytest.warns(CurateWarning, match=r"judge_scorer: 30 of the 300 rows computed now failed"):
        whole = ws.apply(scorer, progress=False)
    expected = (ws.column(scorer.column), ws.failures(scorer.column, ws.ids))
    scorer.rows_per_call = 70
    with pytest.warns(CurateWarning, match=r"judge_scorer: 30 of the 300 rows computed now failed"):
        chunked = ws.apply(scorer, force=True, progress=False)
    assert calls == [300, 70, 70, 70, 70, 20]
    assert (ws.column(scorer.column), ws.failures(scorer.column, ws.ids)) == expected
    assert (chunked.computed, chunked.failed) == (whole.computed, whole.failed) == (300, 30)
    assert chunked.provenance["turns_scored"] == whole.provenance["turns_scored"] == 270


def test_cli_train_scorer_feature_column(ws_with_signal, tmp_path):
    ws, _ = ws_with_signal
    out = tmp_path / "sc"
    result = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "judge", "--out", str(out),
                                      "--feature-column", "signal"])
    assert result.exit_code == 0, result.output
    assert Scorer.load(out).columns == ["signal"]
    rows = [line.split("│") for line in result.output.splitlines() if "held-out" in line and "│" in line]
    n = Scorer.load(out).metrics["holdout"]["scorer"]["n"]
    assert len(rows) == 4 and all(r[-2].strip() == f"{n:,}" for r in rows), result.output  # at 80 columns, whole
    assert "…" not in result.output and "instruction" in {r[1].strip().split(" ")[0] for r in rows}
    missing = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "judge", "--out", str(tmp_path / "x"),
                                       "--feature-column", "ifd"])
    assert isinstance(missing.exception, ScorerError) and "no column 'ifd'" in str(missing.exception)


def test_distil_reads_the_columns_and_never_asks_about_a_turn_without_a_number(ws_with_signal):
    from curate.scorers import column_labeller, distil

    ws, signal = ws_with_signal
    ws.add_column("signal", [[float(v)] if i % 10 else [None] for i, v in enumerate(signal)],
                  {"kind": "signal", "fingerprint": "model-b"})
    asked: set[str] = set()
    oracle = column_labeller(ws, "judge")

    def label_fn(batch):
        asked.update(batch)
        return oracle(batch)

    scorer = Scorer(reads=["instruction", "response"], name="distilled", columns=["signal"], features=["length", "stats"])
    with pytest.warns(CurateWarning, match=r"distilled: 30 of the 300 rows computed now failed"):
        report = distil(ws, label_fn, scorer=scorer, n=120, rounds=1, uncertain_k=20, holdout_n=40, progress=False)
    no_number = {rid for i, rid in enumerate(ws.ids) if i % 10 == 0}
    assert asked and not asked & no_number
    assert report.holdout["spearman"] > 0.7  # the texts alone carry none of the label (first test: < 0.4)
    fails = ws.failures("distilled", sorted(no_number))
    assert all([f.code for f in row] == [FailureCode.NO_INPUT_VALUE] for row in fails)
    assert report.turns_left_out == {"no number in column signal": len(no_number)}
    assert f"{len(no_number)} x no number in column signal" in report._repr_html_()
    with pytest.warns(CurateWarning, match=r"by_cli: 30 of the 300 rows computed now failed"):
        res = CliRunner().invoke(app, ["distil", str(ws.path), "--label-column", "judge", "-n", "120", "--holdout-n", "40",
                                       "--uncertain-k", "20", "--feature-column", "signal", "--column", "by_cli"])
    assert res.exit_code == 0, res.output
    assert f"cannot read (never asked about; scoring gives them a failure): {len(no_number)} x no number in column " \
           "signal" in " ".join(res.output.split())
