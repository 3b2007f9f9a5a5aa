import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import curate
from curate.codes import Decision, Reason
from curate.errors import WorkspaceError
from curate.session import Workspace
from tests.conftest import write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_workspace_roundtrip_and_reopen(tmp_path, shapes):
    ws = curate.Workspace(tmp_path / "ws")
    for path in shapes.values():
        ws.load(path)
    assert len(ws) == 17
    assert ws.info()["formats"] == {"alpaca": 5, "sharegpt": 4, "messages": 3, "qa": 3, "prompt_completion": 2}
    scores = np.arange(len(ws), dtype=float)
    ws.add_column("quality", scores, {"kind": "judge", "judge": "quality", "model": "m", "prompt_fingerprint": "abc"})
    ws.add_embeddings("default", np.random.default_rng(0).normal(size=(len(ws), 8)), {"model": "test"})
    sel = ws.add_selection("top3", ws.ids[:5], [Decision.KEPT] * 3 + [Decision.REJECTED] * 2,
                           [Reason.SELECTED] * 3 + [Reason.BELOW_THRESHOLD] * 2,
                           [{"score": 1.0}] * 3 + [{"score": 0.1, "min_score": 0.5}] * 2, {"method": "threshold"})
    assert sel.ids == ws.ids[:3]
    assert sel.reasons() == {("kept", "selected"): 3, ("rejected", "below_threshold"): 2}
    # A fresh process sees everything, with provenance.
    code = (
        f"import curate, json; ws = curate.Workspace.open({str(tmp_path / 'ws')!r}); "
        "print(json.dumps([len(ws), ws.columns['quality']['judge'], ws.column('quality')[3], "
        "ws.embeddings('default').shape[1], len(ws.selection('top3'))]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [17, "quality", 3.0, 8, 3]


def test_loading_again_adds_nothing(tmp_path, shapes):
    ws = curate.Workspace(tmp_path / "ws")
    ws.load(shapes["alpaca"])
    summary = ws.load(shapes["alpaca"])
    assert summary["rows_added"] == 0 and summary["already_present"] == 5 and len(ws) == 5


def test_columns_are_keyed_by_id(tmp_path, shapes):
    ws = curate.Workspace(tmp_path / "ws")
    ws.load(shapes["alpaca"])
    ids = ws.ids
    ws.add_column("partial", [1.0, 2.0], {"kind": "test"}, ids=[ids[3], ids[1]])
    assert ws.column("partial") == [None, 2.0, None, 1.0, None]
    assert np.isnan(ws.column_array("partial")[0])


def test_reading_reads_a_column_once_until_it_changes_and_hands_out_lists_of_their_own(tmp_path, shapes):
    """ws.reading() (the report) reads each column from disk once; another writer's new version is read anew."""
    from curate.storage import columns

    ws = curate.Workspace(tmp_path / "ws")
    ws.load(shapes["alpaca"])
    ids = ws.ids
    ws.add_column("s", [[1.0, 2.0], [3.0], None, [4.0], [5.0]], {"kind": "test", "reducer": "sum"})
    reads = []
    real = columns._aligned
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(columns, "_aligned", lambda *a: reads.append(a[1].name) or real(*a))
        with ws.reading():
            first = ws.column("s")
            first.append("mine")  # the caller's own list
            assert ws.column("s") == [[1.0, 2.0], [3.0], None, [4.0], [5.0]]
            assert ws.column("s", [ids[3], ids[0]]) == [[4.0], [1.0, 2.0]]
            with pytest.raises(WorkspaceError, match="1 of the ids asked for are not in the pool"):
                ws.column("s", [ids[3], "gone"])  # as outside
            assert ws.row_values("s") == [3.0, 3.0, None, 4.0, 5.0] == ws.row_values("s")
            assert reads == ["s.arrow"]
            curate.Workspace.open(ws.path).add_column("s", [[9.0]] * 5, {"kind": "test", "reducer": "sum"})
            assert ws.column("s") == [[9.0]] * 5 and ws.row_values("s") == [9.0] * 5  # rewritten meanwhile
            assert reads == ["s.arrow", "s.arrow"]
        ws.column("s")
        ws.column("s")
        assert len(reads) == 4  # outside the stretch every call reads


def test_merge_column_writes_over_the_ids_given_and_keeps_the_rest_in_pool_order(tmp_path, shapes):
    ws = curate.Workspace(tmp_path / "ws")
    ws.load(shapes["alpaca"])
    ids = ws.ids
    ws.add_column("m", [[1.0], [2.0], [3.0]], {"kind": "test"}, ids=[ids[4], ids[0], ids[2]])  # no fingerprints
    ws.merge_column("m", [ids[2], ids[1], ids[1], "gone"], [None, [5.0], [6.0], [7.0]], {"kind": "test"}, "fp")
    assert ws.column_ids("m") == [ids[0], ids[1], ids[2], ids[4]]  # pool order; an id not in the pool is dropped
    assert ws.column("m") == [[2.0], [6.0], None, None, [1.0]]  # a repeated id: its last value
    assert ws.column_fingerprints("m") == {ids[0]: None, ids[1]: "fp", ids[2]: "fp", ids[4]: None}


def test_add_column_is_atomic(tmp_path, shapes):
    ws = curate.Workspace(tmp_path / "ws")
    ws.load(shapes["alpaca"])
    ws.add_column("q", [1.0] * 5, {"kind": "test", "v": 1})
    with pytest.raises(ValueError):
        ws.add_column("q", [object()] * 5, {"kind": "test", "v": 2})  # fails while converting
    assert ws.column("q") == [1.0] * 5 and ws.columns["q"]["v"] == 1
    assert not [p for p in os.listdir(tmp_path / "ws" / "columns") if p.endswith(".tmp")]


def test_export_selection_formats(tmp_path, shapes):
    ws = curate.Workspace(tmp_path / "ws")
    ws.load(shapes["qa"])
    ws.add_column("score", [0.1, 0.2, 0.3], {"kind": "test"})
    ws.add_selection("best", [ws.ids[2]], ["kept"], ["selected"], [None], {"method": "manual"})
    rows = [json.loads(x) for x in ws.export(tmp_path / "o.jsonl", selection="best").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["score"] == 0.3 and rows[0]["id"] == ws.ids[2]
    import datasets

    assert len(datasets.Dataset.from_parquet(str(ws.export(tmp_path / "o.parquet")))) == 3
    assert len(datasets.load_from_disk(str(ws.export(tmp_path / "folder", selection="best")))) == 1


def test_one_column_name_given_as_a_str_is_one_column_everywhere_columns_are_taken(tmp_path, shapes):
    """columns="quality" is the column quality, not the columns 'q', 'u', 'a'... (a notebook user's first try)."""
    from curate.report.plots import score_histograms
    from curate.scorers import Scorer

    ws = curate.Workspace(tmp_path / "ws")
    ws.load(shapes["qa"])
    ws.add_column("quality", [0.1, 0.2, 0.3], {"kind": "test"})
    ws.add_column("other", [1.0, 2.0, 3.0], {"kind": "test"})
    ws.add_selection("best", [ws.ids[2]], ["kept"], ["selected"], [None], {"method": "manual"})
    shown = ws.show([0], columns="quality")._repr_html_()
    assert "quality" in shown and "other" not in shown
    ds = ws.to_dataset(columns="quality")
    assert "quality" in ds.column_names and "other" not in ds.column_names
    rows = [json.loads(x) for x in ws.export(tmp_path / "c.jsonl", selection="best", columns="quality")
            .read_text().splitlines()]
    assert rows[0]["quality"] == 0.3 and "other" not in rows[0]
    assert len(score_histograms(ws, "quality").axes) == 1
    assert Scorer(columns="quality").columns == ["quality"]


def test_export_to_json_writes_json_lines_and_the_refusal_of_other_suffixes_says_so(tmp_path, shapes):
    """.json was written (as JSON Lines, as datasets writes it) but the refusal of .txt offered only .jsonl,
    .parquet and a folder."""
    ws = curate.Workspace(tmp_path / "ws")
    ws.load(shapes["qa"])
    lines = ws.export(tmp_path / "x.json").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["format"] == "qa" for line in lines)
    with pytest.raises(WorkspaceError) as refused:
        ws.export(tmp_path / "o.txt")
    assert str(refused.value) == (f"{tmp_path / 'o.txt'}: export to .jsonl or .json (both JSON Lines, one record a "
                                  "line, as datasets' to_json writes .json), .parquet, or a folder (no suffix) for a "
                                  "datasets folder")
    assert ".json (both JSON Lines" in curate.storage.export.export.__doc__


def test_a_selections_own_view_says_it_is_out_of_date_when_a_refresh_removed_kept_rows(tmp_path):
    """ws.show("top") said so; ws.selection("top") and the object ws.select returned did not."""
    records = [{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": f"{2 * i + 1}"} for i in range(6)]
    ws = curate.Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "all.jsonl", records))
    ws.add_column("quality", [float(i) for i in range(6)], {"kind": "test"})
    top = ws.select(method="top_k", name="top", budget=3, sort_by="quality")
    said = "out of date: 1 of its kept rows are no longer in the pool; make the selection again"
    assert said not in repr(top) and said not in top._repr_html_()
    ws.load(write_jsonl(tmp_path / "edited.jsonl", records[:5]), keep_only_source=True)  # the best row is gone
    assert said in ws.show("top").note
    for view in (top, ws.selection("top")):
        assert said in repr(view) and said in view._repr_html_()


def test_unknown_ids_and_decisions_are_errors_in_the_words_apply_uses_not_empty_answers(tmp_path, shapes):
    """ws.row_values/column/failures answered [None] (or [[]]) for an id not in the pool and a selection's
    rows(decision="bogus") answered [], while ws.apply refused the same ids."""
    from curate.errors import OptionError

    ws = curate.Workspace(tmp_path / "ws")
    assert ws.failures("quality", ids=[]) == []  # no id asked: no pool needed to check them
    ws.load(shapes["qa"])
    ws.add_column("quality", [0.1, 0.2, 0.3], {"kind": "test"})
    said = "1 of the ids asked for are not in the pool (first: 'nope')"
    for read in (ws.row_values, ws.column, ws.failures, ws.turn_values):
        with pytest.raises(WorkspaceError, match=re.escape(f"{ws.path}: {said}")):
            read("quality", ids=[ws.ids[0], "nope"])
    with pytest.raises(WorkspaceError, match=re.escape(said)):
        ws.column("question", ids=["nope"])  # a pool field: was a raw KeyError
    assert ws.column("quality", ids=[ws.ids[2], ws.ids[0]]) == [0.3, 0.1]
    sel = ws.add_selection("best", [ws.ids[2], ws.ids[0]], ["kept", "rejected"], ["selected", "below_threshold"],
                           [None, None], {"method": "manual"})
    with pytest.raises(OptionError, match="^unknown decision 'bogus': one of kept, rejected, duplicate, not_reached, "
                                          "unscored$"):
        sel.rows(decision="bogus")
    with pytest.raises(OptionError, match="^unknown reason 'nope': one of selected, too_similar"):
        sel.rows(reasons=iter(["selected", "nope"]))
    assert [r["id"] for r in sel.rows(decision="kept")] == [ws.ids[2]]
    assert [r["id"] for r in sel.rows(reasons=iter(["below_threshold"]))] == [ws.ids[0]]


def test_open_refuses_non_workspace(tmp_path):
    with pytest.raises(WorkspaceError):
        curate.Workspace.open(tmp_path)
    (tmp_path / "junk").write_text("x")
    with pytest.raises(WorkspaceError, match="not empty"):
        curate.Workspace(tmp_path)


def test_repr_html(tmp_path, shapes):
    ws = curate.Workspace(tmp_path / "ws")
    ws.load(shapes["qa"])
    ws.add_column("quality", [1.0, 2.0, 3.0], {"kind": "judge", "model": "smol"})
    html = ws._repr_html_()
    assert "3 rows" in html and "quality" in html and "smol" in html


def test_take_values_reads_positions_chunk_by_chunk_in_the_order_asked():
    """A pool of several million rows is a ChunkedArray whose text passes 2 GiB, which ChunkedArray.take cannot
    concatenate; take_values takes from each chunk and keeps the order asked for (repeats included)."""
    import pyarrow as pa

    from curate.storage.files import take_values

    chunks = [[{"role": "user", "content": f"c{c} r{r}"}] for c in range(4) for r in range(c + 1)]
    column = pa.chunked_array([pa.array(chunks[0:1]), pa.array(chunks[1:3]), pa.array([], pa.array(chunks).type),
                               pa.array(chunks[3:6]), pa.array(chunks[6:10])])
    positions = [9, 0, 4, 4, 2, 7, 1]
    assert take_values(column, positions) == [chunks[p] for p in positions]
    assert take_values(column, []) == []


def test_a_notebook_workspace_object_follows_rows_another_process_loads_or_removes(tmp_path):
    rows = [{"instruction": f"Task {i}.", "output": f"Answer {i}."} for i in range(6)]
    src = write_jsonl(tmp_path / "p.jsonl", rows)
    notebook = Workspace(tmp_path / "ws")
    notebook.load(src)
    assert len(notebook) == 6 and len(notebook.ids) == 6
    other = subprocess.run([sys.executable, "-m", "curate.cli", "load", str(write_jsonl(tmp_path / "more.jsonl", [
        {"instruction": "Task 99.", "output": "Answer 99."}])), "-w", str(notebook.path)], capture_output=True,
        text=True, cwd=REPO)
    assert other.returncode == 0, other.stderr
    assert len(notebook) == 7 and len(notebook.ids) == 7 and len(notebook.conversations()) == 7
    assert len(notebook.select(method="random", name="r", budget=10)) == 7
    exported = notebook.export(tmp_path / "all.jsonl")
    assert len(exported.read_text().splitlines()) == 7
    Workspace.open(notebook.path).keep_rows(notebook.ids[:3])  # another object removes rows
    assert len(notebook) == 3 and notebook.ids == Workspace.open(notebook.path).ids
    sel = notebook.select(method="random", name="r2", budget=10)
    assert len(sel) == 3 and set(sel.ids) <= set(notebook.ids)
    assert len(notebook.export(tmp_path / "three.jsonl", selection="r2").read_text().splitlines()) == 3
    import copy
    import pickle

    for twin in (pickle.loads(pickle.dumps(notebook)), copy.deepcopy(notebook)):  # multiprocessing, joblib
        assert type(twin) is Workspace and twin.ids == notebook.ids


def test_names_and_stored_file_names_never_reach_outside_the_workspace(tmp_path):
    """An edited embeddings/<set>.json ("file": "../../victim") was read, and deleted when the set was next written;
    read-side names (a selection, an artifact, a column, a label set) read files outside the workspace; an embedding
    set named like another set's ids file overwrote it."""
    ws = Workspace(tmp_path / "ws", create=True)
    ws.load([{"instruction": f"Question {i}?", "output": "ok"} for i in range(3)])
    ws.add_embeddings("default", np.eye(3, 4, dtype=np.float32), {"model": "test"})
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    meta_path = ws.path / "embeddings" / "default.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "file": "../../victim.txt"}))
    with pytest.raises(WorkspaceError, match=r"default.json: names '../../victim.txt', not a file of the embeddings"):
        ws.embeddings("default")
    with pytest.raises(WorkspaceError, match="not a file of the embeddings folder"):
        ws.add_embeddings("default", np.eye(3, 4, dtype=np.float32), {"model": "test"})
    assert victim.read_text() == "precious"
    with pytest.raises(WorkspaceError, match="a name ending in .ids is the name of a set's ids file"):
        ws.add_embeddings(f"{meta['ids_file'].removesuffix('.json')}", np.eye(3, 4, dtype=np.float32), {})
    outside = tmp_path / "outside"
    (outside / "artifacts").mkdir(parents=True)
    (outside / "artifacts" / "evil.json").write_text('{"a": 1}')
    ws.add_selection("kept", ws.ids[:1], ["kept"], ["selected"], [{}], {"method": "test"})
    (outside / "sel.arrow").write_bytes((ws.path / "selections" / "kept.arrow").read_bytes())
    ws.add_column("q", [1.0, 2.0, 3.0], {"kind": "test"})
    (outside / "q.arrow").write_bytes((ws.path / "columns" / "q.arrow").read_bytes())
    for read in (lambda: ws.selection("../../outside/sel"), lambda: ws.artifact("../../outside/artifacts/evil"),
                 lambda: ws.labels("../../outside"), lambda: ws.label_file("..", "../outside/artifacts/evil.json")):
        with pytest.raises(ValueError, match="bad name"):
            read()
    with pytest.raises(WorkspaceError, match="no column"):
        ws.column("../../outside/q")


def test_curate_subpackages_are_reached_from_a_bare_import_as_its_docstring_says():
    """``import curate; curate.scorers`` raised AttributeError though the package's docstring names it."""
    code = ("import sys, curate\n"
            "assert not {'curate.scorers', 'curate.select', 'curate.tags'} & set(sys.modules)  # still a fast import\n"
            "scorers, select, tags = curate.scorers, curate.select, curate.tags  # each first of its kind\n"
            "from curate.scorers import Scorer\n"
            "print(scorers.Scorer is Scorer, select.__name__, tags.__name__, curate.evol.__name__,"
            " curate.report.__name__, curate.llm.__name__, 'scorers' in dir(curate))\n"
            "try:\n    curate.nosuch\nexcept AttributeError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.split("\n")[:2] == ["True curate.select curate.tags curate.evol curate.report curate.llm True",
                                   "module 'curate' has no attribute 'nosuch'"]


def test_the_public_methods_a_notebook_user_sees_have_docstrings():
    """help(ws.has_column) and friends showed nothing."""
    from curate.llm.judges import Judge
    from curate.scorers import Scorer

    public = [Workspace.has_column, Workspace.has_pool, Workspace.column_provenance, Workspace.manifest,
              Workspace.selections, Scorer.config, Scorer.predict_features, Judge.describe, Judge.name]
    assert [m for m in public if not (m.__doc__ or "").strip()] == []


def test_a_new_name_too_long_for_its_files_is_refused_before_the_work_and_an_older_one_still_reads(tmp_path):
    """A column name of 143-250 bytes passed the name check and failed after the step had run (the OS's "File name
    too long" on ``<name>_failure``, whose temporary copy is longer); names that long made by an earlier curate must
    still be listed, read and rewritten."""
    from curate.storage.step import StepOutput

    class Counted:
        granularity, reducer, inputs = "turn", "mean", ()
        calls = 0

        def __init__(self, column):
            self.column = column

        def fingerprint(self):
            return "v1"

        def describe(self):
            return {"kind": "test"}

        def run(self, rows, ctx):
            Counted.calls += 1
            return StepOutput([[1.0] for _ in rows], [[] for _ in rows])

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "a", "output": "b"}]))
    long = "c" * 200
    with pytest.raises(ValueError, match="a name may hold at most 150 bytes"):
        ws.apply(Counted(long), progress=False)
    assert Counted.calls == 0 and long not in ws.columns
    from curate.embed import embed
    from curate.evol.labels import labels_lock

    for add in (lambda: embed(ws, name=long, progress=False), lambda: labels_lock(ws, long),
                lambda: ws.add_embeddings(long, np.eye(1, 4, dtype=np.float32), {}),
                lambda: ws.add_labels(long, [{"text": "t", "score": 1.0}], {"kind": "test"})):
        with pytest.raises(ValueError, match="at most 150 bytes"):
            add()
    longest = "d" * 150  # the longest a step column may be: its failure column is longer, and stored
    ws.apply(Counted(longest), progress=False)
    assert ws.column(longest) == [[1.0]] and f"{longest}_failure" in ws.columns
    import curate.storage.files as files  # an older curate had no limit: its long column is still the workspace's

    limit, files.MAX_NAME_BYTES = files.MAX_NAME_BYTES, 255
    try:
        ws.add_column(long, [1.0], {"kind": "test"})
    finally:
        files.MAX_NAME_BYTES = limit
    assert long in ws.columns and ws.column(long) == [1.0]
    ws.add_column(long, [2.0], {"kind": "test"})
    assert ws.column(long) == [2.0]
