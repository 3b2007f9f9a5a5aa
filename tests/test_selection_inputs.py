"""A selection records the version of every column and embedding set it read, and its views say which was
rewritten since (the audit: rescoring ``quality`` after ``ws.select(method="deita", ...)`` left ``ws.selection``,
the report and ``curate info`` silent)."""

import numpy as np

import curate
from curate.report.views import info_data
from tests.conftest import write_jsonl


def _workspace(tmp_path):
    records = [{"instruction": f"Explain topic number {i} in detail.", "input": "", "output": f"Topic {i} is {i}."}
               for i in range(8)]
    ws = curate.Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "all.jsonl", records))
    ws.add_column("quality", [float(i) for i in range(8)], {"kind": "test"})
    ws.add_column("length", [float(-i) for i in range(8)], {"kind": "test"})
    vectors = np.eye(8, dtype=np.float32) + 0.01
    ws.add_embeddings("default", vectors, {"model": "test", "text": "instruction"})
    return ws


def test_a_selection_says_which_input_was_rewritten_since_it_was_made(tmp_path):
    ws = _workspace(tmp_path)
    sel = ws.select(method="deita", name="d3", budget=3, sort_by="quality")
    assert set(sel.provenance["read"]) == {"columns", "embeddings"}
    assert list(sel.provenance["read"]["columns"]) == ["quality"]  # the column it did not read is not recorded
    assert list(sel.provenance["read"]["embeddings"]) == ["default"]
    assert sel.out_of_date() == ""
    ws.add_column("length", [1.0] * 8, {"kind": "test"})  # not read by d3: no alarm
    assert ws.selection("d3").out_of_date() == ""
    ws.add_column("quality", [float(8 - i) for i in range(8)], {"kind": "test"})  # rescored
    said = "out of date: quality rewritten since this selection was made; make the selection again"
    for view in (sel, ws.selection("d3")):
        assert view.out_of_date() == said
        assert said in repr(view) and said in view._repr_html_()
    assert said in ws._repr_html_()
    assert [s["stale"] for s in info_data(ws)["selections"]] == [said]  # what `curate info` prints
    report = ws.report(tmp_path / "report.html", selection="d3").read_text()
    assert f"<p class='curate-warn'>{said}</p>" in report
    ws.add_embeddings("default", np.eye(8, dtype=np.float32) + 0.02, {"model": "test", "text": "instruction"})
    assert ws.selection("d3").out_of_date() == ("out of date: quality rewritten, embeddings default rewritten since "
                                                "this selection was made; make the selection again")
    again = ws.select(method="deita", name="d3", budget=3, sort_by="quality")  # made again: up to date
    assert again.out_of_date() == "" and ws.selection("d3").out_of_date() == ""


def test_a_selection_made_before_inputs_were_recorded_is_not_called_out_of_date(tmp_path):
    ws = _workspace(tmp_path)
    ids = ws.ids
    ws.add_selection("old", ids[:3], ["kept"] * 3, ["selected"] * 3, [None] * 3,
                     {"method": "top_k", "params": {"budget": 3, "sort_by": "quality"}})  # no "read": an older curate's
    ws.add_column("quality", [0.0] * 8, {"kind": "test"})
    assert ws.selection("old").out_of_date() == ""
    assert [s["stale"] for s in info_data(ws)["selections"]] == [""]


def test_a_chain_records_what_every_step_read(tmp_path):
    ws = _workspace(tmp_path)
    ws.select(name="two", steps=[{"method": "top_k", "budget": 6, "sort_by": "length"},
                                 {"method": "top_k", "budget": 3, "sort_by": "quality"}])
    assert sorted(ws.selection("two").provenance["read"]["columns"]) == ["length", "quality"]
    ws.add_column("length", [0.0] * 8, {"kind": "test"})
    assert "length rewritten since" in ws.selection("two").out_of_date()


def test_rows_gone_and_an_input_rewritten_are_said_in_one_line(tmp_path):
    ws = _workspace(tmp_path)
    ws.select(method="top_k", name="top", budget=3, sort_by="quality")
    records = [{"instruction": f"Explain topic number {i} in detail.", "input": "", "output": f"Topic {i} is {i}."}
               for i in range(7)]
    ws.load(write_jsonl(tmp_path / "edited.jsonl", records), keep_only_source=True)  # the best row (7) is gone
    ws.add_column("quality", [0.0] * 7, {"kind": "test"})
    assert ws.selection("top").out_of_date() == ("out of date: 1 of its kept rows are no longer in the pool; quality "
                                                 "rewritten since this selection was made; make the selection again")


def test_a_column_read_from_the_reading_memo_is_recorded_too(tmp_path):
    """Inside ``ws.reading()`` a second ``row_values`` comes from the memo (mining's selector reads so)."""
    from curate.storage.read_log import recording_reads

    ws = _workspace(tmp_path)
    with ws.reading():
        ws.row_values("quality")
        with recording_reads(ws) as noted:
            ws.row_values("quality")
    assert noted["columns"] == {"quality"}


def test_rows_loaded_after_an_input_selection_are_said_not_left_out_in_silence(tmp_path):
    """`curate select --from dedup` after `curate load more.jsonl` chose among dedup's rows alone: the new rows were
    never deduplicated nor considered, and neither selection said so."""
    from tests.cli_in_process import curate_in_process

    ws = _workspace(tmp_path)
    ws.select(method="exact", name="dedup")
    more = [{"instruction": f"Another question {i}?", "input": "", "output": f"Answer {i}."} for i in range(3)]
    ws.load(write_jsonl(tmp_path / "more.jsonl", more))
    ws.load(write_jsonl(tmp_path / "more.jsonl", more))  # the same file again adds no row: counted once
    ws.add_column("quality", [float(i) for i in range(11)], {"kind": "test"})
    sel = ws.select(method="top_k", name="best", budget=2, sort_by="quality", input_selection="dedup")
    assert sel.provenance["candidates"] == 8
    assert sel.provenance["rows_loaded_since_input"] == {"rows": 3, "since": "dedup", "sources": [str(tmp_path / "more.jsonl")]}
    assert ws.selection("dedup").out_of_date() == (
        f"out of date: 3 row(s) loaded since selection 'dedup' was made ({tmp_path / 'more.jsonl'}) are not among its "
        "candidates; make it again to consider them")
    assert ws.selection("best").out_of_date().startswith("out of date: 3 row(s) loaded since selection 'dedup' was "
                                                         "made")
    assert "are not among the candidates of 'best'; make 'dedup' again" in ws.selection("best").out_of_date()
    out = curate_in_process("select", str(ws.path), "--method", "top_k", "--name", "best", "--budget", "2",
                            "--sort-by", "quality", "--from", "dedup")
    assert "note: 3 row(s) loaded since selection 'dedup' was made" in " ".join(out.stdout.split())
    ws.select(method="exact", name="dedup")  # made again: it and a selection from it consider every row
    again = ws.select(method="top_k", name="best", budget=2, sort_by="quality", input_selection="dedup")
    assert "rows_loaded_since_input" not in again.provenance and again.provenance["candidates"] == 11
    assert ws.selection("dedup").out_of_date() == again.out_of_date() == ""
