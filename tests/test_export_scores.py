"""Exported scores: a per-turn score is exported as its row's number (what the selection sorts by), the per-turn
list beside it as ``<column>_turns``: an audit's ``sel.complexity * sel.quality`` raised a TypeError on the
one-element lists the export wrote."""

import json

import pyarrow.parquet as pq
import pytest

from curate import Workspace
from curate.errors import OptionError, WorkspaceError
from tests.conftest import write_jsonl

ONE_TURN = {"instruction": "Name a prime.", "input": "", "output": "7"}
TWO_TURNS = {"conversations": [{"from": "human", "value": "Hi, add 2 and 3."}, {"from": "gpt", "value": "5"},
                               {"from": "human", "value": "And times 4?"}, {"from": "gpt", "value": "20"}]}


@pytest.fixture
def scored(tmp_path):
    """Two rows (one turn, two turns), scored per turn as a judge or scorer stores scores (reducer: sum)."""
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "one.jsonl", [ONE_TURN]))
    ws.load(write_jsonl(tmp_path / "two.jsonl", [TWO_TURNS]))
    two = {len(c) // 2: rid for rid, c in zip(ws.ids, ws.pool["conversation"], strict=True)}
    per_turn = {"kind": "scorer", "granularity": "turn", "reducer": "sum"}
    values = {two[1]: ([3.0], [5.0]), two[2]: ([2.0, 4.0], [1.5, 2.5])}
    ws.add_column("complexity", [values[i][0] for i in ws.ids], per_turn)
    ws.add_column("quality", [values[i][1] for i in ws.ids], per_turn)
    ws.add_column("labels", [[["a"]] * (len(values[i][0])) for i in ws.ids], {"kind": "tags", "granularity": "turn"})
    ws.select(method="top_k", name="best", budget=2, sort_by="quality")
    return ws, two


def test_exported_scores_are_row_numbers_with_the_turns_beside_them(tmp_path, scored):
    ws, two = scored
    for out in (ws.export(tmp_path / "all.jsonl"), ws.export(tmp_path / "best.jsonl", selection="best")):
        rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
        assert rows[two[1]]["quality"] == 5.0 and rows[two[1]]["quality_turns"] == [5.0]
        assert rows[two[2]]["quality"] == 4.0 and rows[two[2]]["quality_turns"] == [1.5, 2.5]  # summed, as declared
        assert rows[two[2]]["complexity"] * rows[two[2]]["quality"] == 24.0  # plain numbers multiply
        assert rows[two[2]]["labels"] == [["a"], ["a"]] and "labels_turns" not in rows[two[2]]  # no reducer: as stored
    assert [rows[i]["quality"] for i in ws.ids] == ws.row_values("quality")  # the selection's own reduction
    schema = pq.read_schema(ws.export(tmp_path / "all.parquet"))
    assert str(schema.field("quality").type) == "double"
    assert str(schema.field("quality_turns").type) == "list<element: double>"
    df = ws.to_dataset(selection="best").to_pandas()  # the Python API's rows: numbers pandas computes with
    assert sorted((df.complexity * df.quality).tolist()) == [15.0, 24.0]


def test_a_training_format_keeps_the_score_and_its_turns(tmp_path, scored):
    ws, two = scored
    out = ws.export(tmp_path / "train.jsonl", selection="best", columns=["quality"], format="messages")
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert {k: rows[two[2]][k] for k in ("quality", "quality_turns")} == {"quality": 4.0, "quality_turns": [1.5, 2.5]}
    assert "complexity" not in rows[two[2]]


def test_a_derived_column_named_like_the_turns_column_is_refused_by_name(tmp_path, scored):
    ws, _ = scored
    ws.add_column("quality_turns", [1] * len(ws), {"kind": "test"})
    with pytest.raises(WorkspaceError, match="column 'quality_turns': an export writes column 'quality''s per-turn"):
        ws.export(tmp_path / "x.jsonl")
    assert ws.to_dataset(columns=["complexity"])["complexity"] is not None  # other columns export


def test_a_selection_exports_the_score_it_ranked_by_the_multi_turn_sort_key(tmp_path, scored):
    """The exported complexity * quality of a two-turn row (6 * 4 = 24) is not DEITA's sort key (Σ over turns
    2·1.5 + 4·2.5 = 13): the selection's own score is exported beside it as selection_score, in selection order."""
    ws, two = scored
    ws.select(method="top_k", name="evol", budget=2, sort_by="complexity*quality")
    out = ws.export(tmp_path / "evol.jsonl", selection="evol", columns=["complexity", "quality", "selection_score"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["selection_score"]) for r in rows] == [(two[1], 15.0), (two[2], 13.0)]
    assert rows[1]["complexity"] * rows[1]["quality"] == 24.0
    named = ws.export(tmp_path / "t.jsonl", selection="evol", columns=["selection_score"], format="messages")
    assert [json.loads(line)["selection_score"] for line in named.read_text().splitlines()] == [15.0, 13.0]
    assert "selection_score" not in ws.to_dataset(selection="evol").column_names  # the pool's schema by default
    assert "selection_score" not in ws.to_dataset().column_names  # the whole pool has no selection's score
    with pytest.raises(OptionError, match="'selection_score': the score a selection ranked its rows by"):
        ws.to_dataset(columns=["selection_score"])
