"""The judge's scale a trained scorer reads its labels on: given (--label-scale), declared, or inferred as the
smallest standard judge scale holding nearly all the labels; labels outside it left out and counted; two scales
mixed refused. An audit on MT-bench's GPT-4 labels (2,400 on 1-10, 34 on 1-100) found the scale read as the
labels' span, 1..100: every normal row scored 1.09..1.86 on the 1-6 column, with no warning."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from curate.errors import ScorerOptionError
from curate.exit_codes import exit_code
from curate.scorers import Scorer, train_scorer
from curate.session import Workspace
from tests.conftest import write_jsonl

FEATURES = ["length", "stats"]  # no MiniLM: seconds


def _pool(tmp_path, labels: list[float | None], name: str = "ws") -> Workspace:
    """Rows whose answer length grows with the label (a learnable signal); one question per two rows."""
    records = []
    for i, label in enumerate(labels):
        rec = {"instruction": f"Question {i // 2}: tell me about topic {i}.", "output": "detail " * (3 + int(i % 10)),
               "question": f"q{i // 2}"}
        if label is not None:
            rec["gpt4"] = label
        records.append(rec)
    ws = Workspace(tmp_path / name)
    ws.load(write_jsonl(tmp_path / f"{name}.jsonl", records))
    return ws


def _mixed() -> list[float]:
    """MT-bench's shape: most labels on 1-10, a cluster on 1-100 (18%, as the audit's 34 of 184)."""
    return [float(1 + i % 10) for i in range(150)] + [float(20 + 10 * (i % 9)) for i in range(34)]


def test_inference_picks_the_smallest_standard_scale_holding_nearly_all_labels():
    from curate.scorers.label_scales import infer_scale

    assert infer_scale([3, 4, 5, 9, 7]).bounds == (1.0, 10.0)  # labels 3..9 of a 1-10 judge: not 3..9
    assert infer_scale([1, 2, 5]).bounds == (1.0, 5.0) and infer_scale([0.2, 0.9]).bounds == (0.0, 1.0)
    assert infer_scale([0, 4, 10]).bounds == (0.0, 10.0) and infer_scale([45, 80, 95]).bounds == (1.0, 100.0)
    assert infer_scale([*range(1, 11)] * 30 + [-1]).bounds == (1.0, 10.0)  # one "unknown" -1 among 300: left out
    assert infer_scale([*range(1, 11)] * 30 + [95]).bounds == (1.0, 10.0)  # a stray on 1-100: left out
    assert infer_scale([*range(1, 8)] * 100 + [8, 9, 10]).bounds == (1.0, 10.0)  # a 1-10 judge's rare top: kept
    assert infer_scale([*range(1, 11)] * 100 + [0]).bounds == (0.0, 10.0)  # a 0 is on 0-10, not a stray
    with pytest.raises(ScorerOptionError, match=r"two scales mixed: 150 in 1-10 and 34 above 10 .*--label-scale"):
        infer_scale(_mixed(), "column gpt4")
    with pytest.raises(ScorerOptionError, match=r"outside 0-100.*--label-scale"):
        infer_scale([-1.0] * 10 + [5.0] * 10)  # half the labels are "unknown": no scale holds nearly all


def test_a_continuous_score_on_no_judge_scale_is_read_on_its_span_not_refused():
    """A reward model's scores (-2.3..3.7) were refused as on no standard scale, and IFD-like values (0.05..1.6)
    as "two scales mixed" (0-1 and above): neither is a judge's levels. They are read on their span; an expected
    score covering most of 1-6 still reads as 1-6, and judge levels with half of them -1 are still refused."""
    from curate.scorers.label_scales import infer_scale

    reward = [-2.3 + 6.0 * i / 299 + 0.013 for i in range(300)]
    assert infer_scale(reward).how == "span" and infer_scale(reward).bounds == (min(reward), max(reward))
    ifd = [0.05 + 1.55 * i / 199 + 0.001 for i in range(200)]
    assert infer_scale(ifd).how == "span" and infer_scale(ifd).high == pytest.approx(1.601)
    expected = [1.2 + 4.7 * i / 99 + 0.003 for i in range(100)]
    assert infer_scale(expected).bounds == (1.0, 6.0) and infer_scale(expected).how == "inferred"
    with pytest.raises(ScorerOptionError, match="outside 0-100"):
        infer_scale([-1.0] * 10 + [5.0] * 10)


def test_mixed_scales_are_refused_and_a_given_scale_leaves_the_rest_out_counted(tmp_path):
    from curate.cli import app

    ws = _pool(tmp_path, _mixed())
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "gpt4", "--group-by", "question",
                                   "--features", "length,stats", "--out", str(tmp_path / "x")])
    assert exit_code(res.exception) == 78 and "two scales mixed: 150 in 1-10 and 34 above 10" in str(res.exception)
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "gpt4", "--group-by", "question",
                                   "--features", "length,stats", "--label-scale", "1,10", "--out", str(tmp_path / "sc")])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "34 x label outside the judge's 1-10 scale (given)" in out and "150 labels" in out
    assert "MAE on the judge's 1-10 scale" in out and "held-out calibration on the judge's 1-10 scale" in out
    scorer = Scorer.load(tmp_path / "sc")
    assert (scorer.label_range, scorer.output_range) == ((1.0, 10.0), (1.0, 6.0))
    assert scorer.metadata["judge_scale"] == {"scale": [1.0, 10.0], "how": "given", "labels_outside": 34}
    assert scorer.describe()["judge_scale"]["scale"] == [1.0, 10.0]  # in the column's provenance too
    # the 1-10 rows use the 1-6 column's range, not 1.09..1.86 as when 1..100 was read as the scale
    predicted = scorer.predict([t[0] for t, label in zip(ws.turns(), ws.column("gpt4"), strict=True) if label <= 10])
    assert predicted.max() - predicted.min() > 2.5
    with pytest.raises(ScorerOptionError, match="label_scale="):
        train_scorer(ws, target="gpt4", features=FEATURES, label_scale=(10, 1))


def test_labels_on_part_of_their_scale_map_through_the_scale_not_their_span(tmp_path):
    ws = _pool(tmp_path, [float(3 + i % 7) for i in range(60)])  # 3..9 of a 1-10 judge
    result = train_scorer(ws, target="gpt4", group_by="question", features=FEATURES, k=3)
    assert result.scorer.label_range == (1.0, 10.0) and result.data.scale.how == "inferred"
    assert not result.data.skipped
    assert "MAE on the judge's 1-10 scale (inferred)" in result._repr_html_()
    assert result.scorer.metadata["judge_scale"] == {"scale": [1.0, 10.0], "how": "inferred", "labels_outside": 0}


def test_an_unknown_minus_one_among_many_labels_is_left_out_and_counted_not_learnt(tmp_path):
    labels = [float(1 + i % 10) for i in range(200)]
    labels[7] = -1.0  # "unknown"
    ws = _pool(tmp_path, labels)
    result = train_scorer(ws, target="gpt4", group_by="question", features=FEATURES, k=3)
    assert -1.0 not in result.data.scores and result.data.labelled == 199
    assert result.data.skipped["label outside the judge's 1-10 scale (inferred)"] == 1
    assert result.scorer.label_range == (1.0, 10.0)


def test_a_scorer_saved_before_the_judge_scale_was_recorded_still_loads_its_label_range(tmp_path):
    ws = _pool(tmp_path, [float(1 + i % 10) for i in range(60)])
    train_scorer(ws, target="gpt4", group_by="question", features=FEATURES, k=3).scorer.save(tmp_path / "sc")
    doc = json.loads((tmp_path / "sc" / "scorer.json").read_text())
    del doc["metadata"]["judge_scale"]
    doc["label_range"] = [2.0, 9.0]  # as an older curate stored its labels' span
    (tmp_path / "sc" / "scorer.json").write_text(json.dumps(doc))
    old = Scorer.load(tmp_path / "sc")
    assert old.label_range == (2.0, 9.0) and "judge_scale" not in old.describe()


def test_refused_option_values_exit_78_and_name_the_pool_fields_one_way(tmp_path):
    from curate.cli import app

    ws = _pool(tmp_path, [float(1 + i % 10) for i in range(40)])
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "gpt-4", "--out", str(tmp_path / "x")])
    assert exit_code(res.exception) == 78 and "pool fields ['gpt4', 'instruction', 'output', 'question']" in str(res.exception)
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "gpt4", "--group-by", "questoin",
                                   "--out", str(tmp_path / "x")])
    assert exit_code(res.exception) == 78 and "pool fields ['gpt4', 'instruction', 'output', 'question']" in str(res.exception)


def test_a_scorer_given_as_its_json_file_or_as_another_file_says_what_to_pass(tmp_path):
    from curate.cli import app

    ws = _pool(tmp_path, [float(1 + i % 10) for i in range(40)])
    train_scorer(ws, target="gpt4", features=FEATURES, k=3).scorer.save(tmp_path / "sc")
    res = CliRunner().invoke(app, ["score", str(ws.path), "--scorer", str(tmp_path / "sc" / "scorer.json")])
    assert exit_code(res.exception) == 78 and "pass the folder holding scorer.json" in str(res.exception)
    res = CliRunner().invoke(app, ["score", str(ws.path), "--scorer", str(tmp_path / "ws.jsonl")])
    assert exit_code(res.exception) == 78 and "a file, not a scorer folder" in str(res.exception)
