"""What a notebook prints for curate's results: short reprs, and HTML views where a dict was printed whole (the
API audit: 50 CallResults repr'd as 79,296 characters, ``ws.info()`` as 13,458)."""

import json
import pickle

import curate
from curate.codes import Failure, FailureCode
from curate.llm.calls import CallResult
from curate.tags.metrics import coverage_report
from tests.conftest import write_jsonl


def _top(n: int) -> list[dict]:
    return [{"token": str(i % 10), "logprob": -0.1 * i} for i in range(n)]


def test_a_call_result_repr_counts_its_logprobs_and_keeps_them_whole():
    scored = CallResult(text="4", parsed=4.2, raw={"text": "4", "top_logprobs": _top(20), "digit_mass": 0.91234,
                                                    "score_method": "logprobs"}, cached=True)
    assert repr(scored) == "CallResult(parsed=4.2, text='4', digit_mass=0.912, top_logprobs=<20>, cached=True)"
    assert len(scored.raw["top_logprobs"]) == 20  # the data as it was
    failed = CallResult(text="x" * 500, failure=Failure(FailureCode.UNPARSABLE, "no digit", "x" * 500),
                        raw={"top_logprobs": _top(20)})
    assert repr(failed).startswith("CallResult(failure='unparsable', text='xxxx") and len(repr(failed)) < 150
    assert len(repr([scored] * 50)) < 5_000


def _workspace(tmp_path):
    ws = curate.Workspace(tmp_path / "ws")
    load = ws.load(write_jsonl(tmp_path / "rows.jsonl", [{"instruction": f"question {i}", "input": "",
                                                          "output": f"answer {i}"} for i in range(6)]))
    return ws, load


def test_load_info_and_coverage_are_dicts_shown_as_one_line_and_html(tmp_path):
    ws, load = _workspace(tmp_path)
    assert load["rows_added"] == 6 and isinstance(load, dict) and json.loads(json.dumps(load)) == dict(load)
    assert repr(load) == f"Load({tmp_path / 'rows.jsonl'}: 6 rows read, 6 added, 0 already present)"
    assert "<b>Load</b>: " in load._repr_html_() and "<code>turn_fields</code>" in load._repr_html_()
    assert repr(ws.load(tmp_path / "rows.jsonl")).endswith("6 already present; unchanged)")
    assert pickle.loads(pickle.dumps(load)) == load

    ws.add_column("tags", [["math"], ["code", "math"], ["poetry"], [], ["code"], ["math"]],
                  {"kind": "tags", "granularity": "row"})
    ws.add_selection("two", ws.ids[:2], ["kept"] * 2, ["selected"] * 2, [None] * 2, {"method": "manual"})
    info = ws.info()
    assert info["rows"] == 6 and list(info["columns"]) == ["tags"] and json.loads(json.dumps(info))["rows"] == 6
    assert repr(info) == (f"WorkspaceInfo({str(ws.path)!r}: 6 rows; 1 column, 0 embeddings, 1 selection, "
                          "0 label sets, 0 damaged)")
    assert info._repr_html_() == ws._repr_html_()
    # shown later, after the workspace changed: the dict holds it as it was, the view (read now) says so
    ws.add_column("more", [["x"]] * 6, {"kind": "tags", "granularity": "row"})
    later = info._repr_html_()
    assert list(info["columns"]) == ["tags"] and "<td>more</td>" in later
    assert ("the workspace has changed since this info was taken (6 rows; 1 column, 0 embeddings, 1 selection, 0 label "
            "sets, 0 damaged): shown here as it is now; the dict holds it as it was") in later
    assert "has changed" not in ws.info()._repr_html_() and later.endswith(ws._repr_html_().split("<div>", 1)[1])

    cover = coverage_report(ws, "two", tags_column="tags", seeds=3)
    assert cover["rows"] == 2 and cover["coverage"] == 2 / 3
    assert repr(cover).startswith("TagCoverage(2 rows: tag coverage 66.7% (random ")
    assert "<b>TagCoverage</b>" in cover._repr_html_()


def test_the_workspace_view_and_curate_info_say_which_text_each_embedding_set_holds(tmp_path):
    import numpy as np

    from curate.report.views import info_data

    ws, _ = _workspace(tmp_path)
    vectors = np.eye(6, dtype=np.float32) + 0.01
    ws.add_embeddings("default", vectors, {"model": "m", "text": "instruction"})
    ws.add_embeddings("replies", vectors, {"model": "m", "text": "response"})
    view = ws._repr_html_()
    assert "embeddings <b>default</b>: 6 x 6 of instruction (" in view
    assert "embeddings <b>replies</b>: 6 x 6 of response (" in view
    assert [e["text"] for e in info_data(ws)["embeddings"]] == ["instruction", "response"]


def test_a_scorers_view_says_what_it_imitates_in_words_and_the_normalizers_table_is_styled():
    from curate.scorers import Scorer
    from curate.tags.normalize import Normalizer

    scorer = Scorer(imitates={"judge": "complexity", "model": "gpt-4", "label_set": "FLASK difficulty 1-5"})
    view = scorer._repr_html_()
    assert "imitates judge complexity (model gpt-4, label_set FLASK difficulty 1-5)" in view
    assert "{" not in view.split("imitates", 1)[1]  # no JSON
    norm = Normalizer(min_frequency=None, semantic=False, association=False)
    norm.fit([["Math"], ["math", "code"], ["Code"]])
    html = norm._repr_html_()
    assert "<table class='curate'>" in html and "<style>" in html


def test_ws_embed_returns_a_dict_shown_as_one_line_naming_the_text_and_the_device(tmp_path):
    ws, _ = _workspace(tmp_path)
    first = ws.embed(progress=False)
    assert first["encoded"] == 6 and first["text"] == "instruction"
    again = ws.embed(progress=False)  # every vector from the cache: no device chosen
    assert again["reused"] == 6 and repr(again).startswith("Embed(default: 6 rows of instruction, encoded 0, reused 6 (")
    assert "; unchanged)" in repr(again)
    assert "<b>Embed</b>: default: 6 rows of instruction" in again._repr_html_()
