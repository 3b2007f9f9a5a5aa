import json
import os
import re

import pytest

import curate
from curate import pools
from curate.errors import CurateWarning, InputError, OptionError
from curate.rows import turns
from tests.conftest import write_jsonl


@pytest.mark.parametrize("shape", ["alpaca", "sharegpt", "messages", "qa", "prompt_completion"])
def test_detects_each_shape_and_keeps_original_columns(shapes, shape):
    ds = curate.load(shapes[shape])
    assert set(ds["format"]) == {shape}
    assert {"id", "conversation", "format"} <= set(ds.column_names)
    raw = json.loads(open(shapes[shape]).readline())
    assert set(raw) <= set(ds.column_names)  # every original column kept
    conv = ds[0]["conversation"]
    assert any(t["role"] == "user" for t in conv) and all(set(t) == {"role", "content"} for t in conv)


def test_alpaca_input_joins_the_instruction():
    conv = pools.to_conversation({"instruction": "Translate.", "input": "Hola", "output": "Hello"}, "alpaca")
    assert conv == [{"role": "user", "content": "Translate.\n\nHola"}, {"role": "assistant", "content": "Hello"}]


def test_sharegpt_multi_turn_and_roles():
    conv = pools.to_conversation({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "a"},
                                                    {"from": "gpt", "value": "b"}]}, "sharegpt")
    assert [t["role"] for t in conv] == ["system", "user", "assistant"]
    assert [(t.instruction, t.response) for t in turns(conv)] == [("a", "b")]


def test_a_turns_reply_is_the_answer_the_user_got_after_tool_calls():
    conv = pools.to_conversation({"messages": [
        {"role": "user", "content": "weather?"}, {"role": "assistant", "content": "calling get_weather"},
        {"role": "tool", "content": "12C, rain"}, {"role": "assistant", "content": "It is 12C and raining."},
        {"role": "user", "content": "and tomorrow?"}, {"role": "assistant", "content": "   "}]}, "messages")
    got = turns(conv)
    assert [(t.instruction, t.response) for t in got] == [("weather?", "It is 12C and raining."),
                                                         ("and tomorrow?", "   ")]
    assert [t.has_response for t in got] == [True, False]  # a blank reply is no reply


def test_ids_are_stable_across_files_and_unique_within_a_pool(tmp_path):
    rec = {"instruction": "Same row", "output": "same"}
    a = curate.load(write_jsonl(tmp_path / "a.jsonl", [rec, {"instruction": "x", "output": "y"}]))
    b = curate.load(write_jsonl(tmp_path / "b.json", [{"instruction": "z", "output": "w"}, rec, rec]))
    assert a[0]["id"] == b[1]["id"]
    assert len(set(b["id"])) == 3 and b[2]["id"] == b[1]["id"] + "-2"


def test_explicit_mapping_overrides_detection(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"q": "Why?", "reply": "Because.", "instruction": "decoy"}])
    ds = curate.load(path, format="qa", mapping={"question": "q", "answer": "reply"})
    assert ds[0]["conversation"][0]["content"] == "Why?"


def _bad_pool(tmp_path):
    lines = [json.dumps({"instruction": f"row {i}", "output": "ok"}) for i in range(1, 11)]
    lines[6] = '{"instruction": "broken", "output": '  # line 7: truncated JSON
    return write_jsonl(tmp_path / "bad.jsonl", lines)


def test_malformed_line_error_names_file_and_line(tmp_path):
    path = _bad_pool(tmp_path)
    with pytest.raises(InputError) as err:
        curate.load(path)
    assert "bad.jsonl" in str(err.value) and "line 7" in str(err.value)


def test_a_folder_or_glob_of_shards_reads_each_in_path_order(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_jsonl(shards / "part-1.jsonl", [json.dumps({"instruction": f"b{i}", "output": "ok"}) for i in range(2)])
    write_jsonl(shards / "part-0.jsonl", [json.dumps({"instruction": f"a{i}", "output": "ok"}) for i in range(3)])
    got = pools.read(shards)
    assert [r["conversation"][0]["content"] for r in got.rows] == ["a0", "a1", "a2", "b0", "b1"]
    assert [r["id"] for r in curate.load(str(shards / "part-*.jsonl"))] == [r["id"] for r in curate.load(shards)]
    import gzip  # a gzipped shard is read (it was skipped without a word); a hidden folder's copies are not
    with gzip.open(shards / "part-1b.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"instruction": "c0", "output": "ok"}) + "\n")
    (shards / ".ipynb_checkpoints").mkdir()
    write_jsonl(shards / ".ipynb_checkpoints" / "part-0-checkpoint.jsonl", [json.dumps({"instruction": "a0", "output": "ok"})])
    assert [r["conversation"][0]["content"] for r in pools.read(shards).rows] == ["a0", "a1", "a2", "b0", "b1", "c0"]
    (shards / "README.md").write_text("notes")  # not data: left alone
    import bz2  # data compressed otherwise was left out without a word
    (shards / "part-3.jsonl.bz2").write_bytes(bz2.compress(b'{"instruction": "d0", "output": "ok"}\n'))
    with pytest.raises(InputError, match=r"part-3.jsonl.bz2: file: compressed as .bz2, which curate does not read"):
        pools.read(shards)
    (shards / "part-3.jsonl.bz2").unlink()
    write_jsonl(shards / "part-2.jsonl", ['{"instruction": "broken"'])
    with pytest.raises(InputError) as err:
        pools.read(shards)
    assert "part-2.jsonl" in str(err.value) and "line 1" in str(err.value)
    with pytest.raises(InputError, match="matches no files"):
        pools.read(str(tmp_path / "none-*.jsonl"))


def test_an_export_of_a_mixed_pool_loads_back_with_the_same_ids(tmp_path):
    from curate.storage.workspace import Workspace

    ws = Workspace(tmp_path / "ws", create=True)
    ws.load("sample")  # alpaca, sharegpt, messages, prompt_completion and qa rows
    assert len(set(ws.pool.data.table.column("format").to_pylist())) == 5
    ws.export(tmp_path / "all.jsonl")  # every shape's fields on every row, null where a row had none
    again = Workspace(tmp_path / "again", create=True)
    again.load(tmp_path / "all.jsonl")
    assert sorted(again.ids) == sorted(ws.ids)
    assert again.column("format") == [ws.column("format")[ws.index[i]] for i in again.ids]  # the shape first read
    assert "original_conversation" not in again.pool.column_names
    # fields a mapping named (no shape knows query/reply): the export's conversation brings the responses back
    mapped = Workspace(tmp_path / "mapped", create=True)
    write_jsonl(tmp_path / "qr.jsonl", [{"ask": f"Name a colour, {i}.", "reply": "Blue."} for i in range(3)])
    mapped.load(tmp_path / "qr.jsonl", format="alpaca", mapping={"instruction": "ask", "output": "reply"})
    assert [t[0].response for t in mapped.turns()] == ["Blue."] * 3
    mapped.export(tmp_path / "qr-export.jsonl")
    back = Workspace(tmp_path / "back", create=True)
    back.load(tmp_path / "qr-export.jsonl")
    assert back.ids == mapped.ids and [t[0].response for t in back.turns()] == ["Blue."] * 3


def test_training_formats_load_back_as_the_same_conversations(tmp_path):
    """`ws.export(..., format=F)` writes training records that `load` reads back to the same turns and ids; a
    row the shape cannot hold, or a reply some rows lack, is an error naming a row, never a dropped turn."""
    from curate.errors import WorkspaceError
    from curate.storage.workspace import Workspace

    single = [{"instruction": "Sort these numbers.", "input": "3, 1, 2", "output": "1, 2, 3"},
              {"instruction": "Name a prime.", "output": "7", "system": "Answer in one word."},
              {"instruction": "Translate 'cat' to French.", "output": ""}]  # an empty reply stays an empty reply
    multi = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                           {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye?"},
                           {"role": "assistant", "content": "Bye."}]}]
    tool = [{"messages": [{"role": "user", "content": "Weather in Oslo?"},
                          {"role": "assistant", "content": "Calling the weather tool."},
                          {"role": "tool", "content": "4 C, rain"}, {"role": "assistant", "content": "4 C and rain."}]}]
    ws = Workspace(tmp_path / "ws", create=True)
    ws.load(write_jsonl(tmp_path / "pool.jsonl", single + multi + tool))
    ws.add_column("quality", [4.5, 3.0, 1.0, 5.0, 2.0], {"kind": "test"})
    formats = {"messages": ws.ids, "sharegpt": ws.ids[:4], "alpaca": ws.ids[:3]}
    for fmt, ids in formats.items():
        ws.add_selection(fmt, ids, ["kept"] * len(ids), ["selected"] * len(ids), [{}] * len(ids), {"method": "test"})
        out = ws.export(tmp_path / f"{fmt}.jsonl", selection=fmt, columns=["quality"], format=fmt)
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["id"] for r in records] == ids and [r["quality"] for r in records] == ws.column("quality", ids)
        back = Workspace(tmp_path / f"back-{fmt}", create=True)
        back.load(out)
        assert back.ids == ids and back.column("format") == [fmt] * len(ids)
        assert back.conversations() == [ws.conversations()[ws.index[i]] for i in ids]
    alpaca = [json.loads(line) for line in (tmp_path / "alpaca.jsonl").read_text().splitlines()]
    assert set(alpaca[0]) == {"id", "instruction", "input", "output", "system", "quality"}  # no pool field rides along
    assert alpaca[1]["system"] == "Answer in one word." and alpaca[0]["instruction"] == "Sort these numbers.\n\n3, 1, 2"
    with pytest.raises(WorkspaceError, match=r"2 of 5 rows cannot be written as alpaca: row .*: alpaca holds one "
                                             r"exchange and it has 2 user turns"):
        ws.export(tmp_path / "x.jsonl", format="alpaca")
    with pytest.raises(WorkspaceError, match="1 of 5 rows cannot be written as sharegpt: .*tool turn"):
        ws.export(tmp_path / "x.jsonl", format="sharegpt")
    with pytest.raises(WorkspaceError, match="1 of 3 rows cannot be written as qa: .*system prompt"):
        ws.export(tmp_path / "x.jsonl", selection="alpaca", format="qa")
    # turns a single exchange would reorder or drop: the greeting was exported as the answer to the joke, the first of
    # two system prompts was dropped, a system turn after the exchange moved ahead of it
    odd = Workspace(tmp_path / "odd", create=True)
    greeting, rule, joke = ({"role": "assistant", "content": "Hello! How can I help?"},
                            {"role": "system", "content": "Answer in French."}, {"role": "user", "content": "A joke?"})
    odd.load([{"messages": [greeting, joke]}, {"messages": [rule, dict(rule, content="Be brief."), joke]},
              {"messages": [joke, dict(greeting, content="Voilà."), rule]}])
    for fmt, problems in (("alpaca", "3 of 3 rows"), ("qa", "3 of 3 rows"), ("prompt_completion", "3 of 3 rows")):
        with pytest.raises(WorkspaceError, match=f"{problems} cannot be written as {fmt}"):
            odd.export(tmp_path / "x.jsonl", format=fmt)
    from curate.pools.formats import shape_problem

    assert [shape_problem(c, "alpaca") for c in odd.conversations()] == [
        "alpaca holds a question and its reply, and its assistant turn comes before the user turn",
        "alpaca's system field holds one system prompt ahead of the exchange, and it has 2",
        "alpaca's system field holds one system prompt ahead of the exchange, and it has one inside or after it"]
    odd.export(tmp_path / "odd.jsonl", format="messages")  # messages and sharegpt hold every turn as it is
    odd.export(tmp_path / "odd-sharegpt.jsonl", format="sharegpt")
    prompts = Workspace(tmp_path / "prompts", create=True)  # instruction-only rows: no reply field at all
    prompts.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "Write a haiku."}, {"instruction": "Add 2+2."}]))
    out = prompts.export(tmp_path / "prompts.jsonl", format="qa")
    assert [set(json.loads(line)) for line in out.read_text().splitlines()] == [{"id", "question"}] * 2
    mixed = Workspace(tmp_path / "mixed", create=True)
    mixed.load(write_jsonl(tmp_path / "m.jsonl", [{"instruction": "Write a haiku."}, {"instruction": "A", "output": "B"}]))
    with pytest.raises(WorkspaceError, match="1 of 2 rows have no reply .*cannot tell them from empty replies"):
        mixed.export(tmp_path / "m-out.jsonl", format="alpaca")
    with pytest.raises(OptionError, match="export format 'chatml': one of"):
        mixed.export(tmp_path / "m-out.jsonl", format="chatml")
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "m-out.jsonl").exists()


def test_skip_writes_rejects_with_reason(tmp_path):
    path = _bad_pool(tmp_path)
    rejects = tmp_path / "rejects.jsonl"
    with pytest.warns(UserWarning, match="1 record"):
        ds = curate.load(path, on_error="skip", rejects_path=rejects)
    assert len(ds) == 9
    rej = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert rej[0]["location"] == "line 7" and "malformed JSON" in rej[0]["reason"]


@pytest.mark.parametrize("record,needle", [
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}, "second user turn"),
    ({"instruction": "  ", "output": "x"}, "instruction is empty"),
    ({"instruction": 5, "output": "x"}, "must be a string"),
    ({"conversations": []}, "empty conversation"),
    ({"messages": [{"role": "user", "content": "a\x00b"}, {"role": "assistant", "content": "c"}]}, "NUL byte"),
    ({"instruction": "big", "output": "x" * 2_000_001}, "over the limit"),
    ({"foo": "bar"}, "cannot tell the format"),
    ({"conversations": [{"from": "alien", "value": "x"}]}, "unknown speaker"),
])
def test_bad_records_get_reasons(tmp_path, record, needle):
    path = write_jsonl(tmp_path / "p.jsonl", [{"instruction": "fine", "output": "fine"}, record])
    with pytest.raises(InputError, match="line 2") as err:
        curate.load(path)
    assert needle in str(err.value)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "\xff\xfe", "output": "b"}\n')
    with pytest.raises(InputError, match=r"u\.jsonl: line 2: invalid UTF-8"):
        curate.load(path)


def test_a_csv_record_of_fewer_or_more_fields_than_the_header_is_named_never_shifted_or_padded(tmp_path):
    """pandas filled a short record's missing fields with empty text (a file still being written, cut after "q2",
    loaded q2 with an empty reply), and when every record had a field more than the header it took the first column
    as the index: the columns shifted one (the instruction read from the output's field, the output from the third)."""
    path = tmp_path / "p.csv"
    path.write_text("instruction,output\nq1,a1\nq2\n")
    with pytest.raises(InputError, match=r"p\.csv: line 3: 1 field where the header has 2$"):
        curate.load(path)
    path.write_text("instruction,output\nq1,a1,x1\nq2,a2,x2\n")
    with pytest.raises(InputError, match=r"p\.csv: line 2: 3 fields where the header has 2$"):
        curate.load(path)
    (tmp_path / "t.tsv").write_text("instruction\toutput\nq1\ta1\nq2\n\nq3\ta3,\t\nq4\t\n")
    read = pools.read(tmp_path / "t.tsv", on_error="skip")
    assert [(r.location, r.reason, r.raw) for r in read.rejects] == [("line 3", "1 field where the header has 2", "q2"),
                                                                      ("line 5", "3 fields where the header has 2",
                                                                       "q3\ta3,\t")]
    assert [turns(row["conversation"])[0].response for row in read.rows] == ["a1", ""]  # q4's empty field is given


def test_a_parquet_file_of_no_rows_is_said_to_hold_no_records(tmp_path):
    """A Parquet file of 0 rows (a writer's empty part, a filter that kept none) failed with datasets' own words,
    'cannot read parquet: An error occurred while generating the dataset', as if the file were damaged."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"instruction": pa.array([], pa.string()), "output": pa.array([], pa.string())}),
                   tmp_path / "none.parquet")
    with pytest.raises(InputError, match=r"none\.parquet: file: no records \(it is empty"):
        curate.load(tmp_path / "none.parquet")


def test_a_line_that_is_no_json_object_is_named_in_jsons_words(tmp_path):
    """A line `null` or `[...]` said 'expected a JSON object, got NoneType' (or list, str): Python's names of what
    the line holds, not the file's."""
    path = tmp_path / "p.jsonl"
    path.write_text('{"instruction": "q", "output": "a"}\nnull\n[{"instruction": "q"}]\n"text"\n7\ntrue\n')
    read = pools.read(path, on_error="skip")
    assert [(r.location, r.reason) for r in read.rejects] == [
        (f"line {n}", f"expected a JSON object, got {kind}")
        for n, kind in ((2, "null"), (3, "an array"), (4, "a string"), (5, "a number"), (6, "true/false"))]
    with pytest.raises(InputError, match=r"^<list of 2 records, .*>: row 2: expected a record \(a dict\), got str$"):
        pools.read([{"instruction": "q", "output": "a"}, "text"])


def test_a_utf16_file_is_named_as_utf16(tmp_path):
    """A file PowerShell's `>` wrote (UTF-16, with its byte-order mark) said 'invalid UTF-8 at byte 0' of its first
    line (under on_error="skip", of every line: no record could be read), not what the file is."""
    for name in ("p.jsonl", "p.csv"):
        text = '{"instruction": "q", "output": "a"}\n' if name.endswith("l") else "instruction,output\nq,a\n"
        (tmp_path / name).write_text(text, encoding="utf-16")
        with pytest.raises(InputError, match=rf"^.*{name}: line 1: the file is UTF-16 .* save it as UTF-8"):
            pools.read(tmp_path / name, on_error="skip")


def test_a_jsonl_file_holding_a_json_array_reads_as_the_array(tmp_path):
    """`json.dump(records, open("p.jsonl", "w"), indent=2)` is a JSON array in a .jsonl file: it failed at 'line 1:
    malformed JSON' (the line '['), and on one line at 'expected a JSON object'. A .json file of JSON Lines is read
    as JSON Lines; the other way round now too, its records located by their lines."""
    records = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(3)]
    (tmp_path / "pretty.jsonl").write_text(json.dumps(records, indent=2))
    (tmp_path / "one.jsonl").write_text(json.dumps(records) + "\n")
    for name in ("pretty.jsonl", "one.jsonl"):
        read = pools.read(tmp_path / name)
        assert [r["instruction"] for r in read.rows] == ["q0", "q1", "q2"] and not read.rejects, name
    (tmp_path / "pretty.jsonl").write_text(json.dumps([*records, "text"], indent=2))
    with pytest.raises(InputError, match=r"pretty\.jsonl: record 4 \(line 14\): expected a JSON object, got a string"):
        pools.read(tmp_path / "pretty.jsonl")


def test_a_parquet_load_leaves_no_copy_in_the_hugging_face_cache_and_reads_a_map_column(tmp_path, monkeypatch):
    """datasets' from_parquet wrote an Arrow copy of each Parquet file read into ~/.cache/huggingface/datasets, kept
    for good (102 MB for a 6 MB file of 200,000 rows), and refused a map column ('does not have a datasets dtype')."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    pq.write_table(pa.table({"instruction": ["q1", "q2"], "output": ["a1", "a2"],
                             "meta": pa.array([[("lang", "en")], [("lang", "de")]], pa.map_(pa.string(), pa.string()))}),
                   tmp_path / "p.parquet")
    read = pools.read(tmp_path / "p.parquet")
    assert [(r["instruction"], r["meta"]) for r in read.rows] == [("q1", [("lang", "en")]), ("q2", [("lang", "de")])]
    assert len(curate.load(tmp_path / "p.parquet")) == 2
    assert not (tmp_path / "hf_cache").exists() or not any((tmp_path / "hf_cache").rglob("*.arrow"))


def test_parquet_csv_and_datasets_folder(tmp_path, shapes):
    ds = curate.load(shapes["alpaca"])
    ds.select_columns(["instruction", "input", "output"]).to_parquet(str(tmp_path / "p.parquet"))
    ds.select_columns(["instruction", "input", "output"]).to_csv(str(tmp_path / "p.csv"), index=False)
    ds.select_columns(["instruction", "input", "output"]).save_to_disk(str(tmp_path / "folder"))
    for src in ("p.parquet", "p.csv", "folder"):
        again = curate.load(tmp_path / src)
        assert again["id"] == ds["id"], src


def test_a_csv_error_names_the_line_a_text_editor_shows(tmp_path):
    """pandas counts rows (header 0, blank lines included, a quoted newline not): errors name the file's line."""
    path = tmp_path / "p.csv"
    path.write_text('instruction,output\n\nhello,world\n"two\nlines",ans\n\n,empty\nok,fine\n')
    with pytest.raises(InputError, match=r"p\.csv: line 7: instruction is empty"):
        curate.load(path)
    rejects = pools.read(path, on_error="skip").rejects
    assert [r.location for r in rejects] == ["line 7"]
    path.write_text('instruction,output\nhello,world\n\n"two\nlines",ans\nx,"never closed\nmore\n')
    with pytest.raises(InputError, match=r"p\.csv: line 6: cannot read csv: a quoted field is never closed"):
        curate.load(path)
    (tmp_path / "t.tsv").write_text("instruction\toutput\nq\ta\n\t\n")
    with pytest.raises(InputError, match=r"t\.tsv: line 3: instruction is empty"):
        curate.load(tmp_path / "t.tsv")
    # a record with a field too many, after a quoted newline and a blank line; a Latin-1 byte (pandas named neither)
    path.write_text('instruction,output\n"two\nlines",ans\n\nq,a,extra\n')
    with pytest.raises(InputError, match=r"p\.csv: line 5: 3 fields where the header has 2"):
        curate.load(path)
    # ... is that record's alone: under on_error="skip" the file's other rows are read (the whole file failed)
    path.write_text('instruction,output\n"two\nlines",ans\n\nq,a,extra\nlast,row\n')
    read = pools.read(path, on_error="skip")
    assert [(r.location, r.reason, r.raw) for r in read.rejects] == [("line 5", "3 fields where the header has 2",
                                                                      "q,a,extra")]
    assert [row["instruction"] for row in read.rows] == ["two\nlines", "last"]
    path.write_text('instruction,output\n"two\nlines",ans\n\nq,a,extra\n,row\n')
    with pytest.raises(InputError, match=r"p\.csv: line 5: 3 fields"):  # the first bad record is named first
        curate.load(path)
    assert [r.location for r in pools.read(path, on_error="skip").rejects] == ["line 5", "line 6"]
    path.write_text('instruction,output\nq1,a1\n   \nq2,a2,extra\nq3,a3\n')  # a line of spaces, skipped by pandas
    read = pools.read(path, on_error="skip")
    assert [r.location for r in read.rejects] == ["line 4"] and [row["instruction"] for row in read.rows] == ["q1", "q3"]
    # a field the csv module stops at (pandas reads it) before the long record: the file's error, no row dropped
    # unnamed; pandas' "Expected 2 fields in line 3" counts records, not lines: said as a record (the audit's CSV
    # read "line 47: ... in line 29", two numbers for one place)
    path.write_text('instruction,output\n"q1"x,a1\nq2,a2,extra\nq3,a3\n')
    with pytest.raises(InputError, match=r"p\.csv: file: cannot read csv: record 3 \(the header is record 1\): "
                                         r"expected 2 fields, saw 3$"):
        pools.read(path, on_error="skip")
    path.write_bytes(b"instruction,output\nq1,a1\ncaf\xe9,a2\n")
    with pytest.raises(InputError, match=r"p\.csv: line 3: cannot read csv: invalid UTF-8 at byte 28"):
        curate.load(path)


def test_mixed_type_column_is_kept_as_json(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"instruction": "a", "output": "b", "meta": 1},
                                              {"instruction": "c", "output": "d", "meta": "two"}])
    ds = curate.load(path)
    assert ds["meta"] == ["1", '"two"']


def test_skip_without_a_rejects_path_writes_nothing_and_names_the_rejects(tmp_path, monkeypatch):
    path = _bad_pool(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.warns(UserWarning, match=r"1 record.*line 7: malformed JSON"):
        ds = curate.load(path, on_error="skip")
    assert len(ds) == 9 and sorted(p.name for p in tmp_path.iterdir()) == before


def test_load_reads_through_a_temporary_folder_it_removes_after_a_load_and_after_an_error(tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.warns(UserWarning, match="1 record"):
        assert len(curate.load(_bad_pool(tmp_path), on_error="skip")) == 9
    with pytest.raises(InputError, match="line 7"):
        curate.load(_bad_pool(tmp_path))
    assert list(scratch.iterdir()) == []


def test_sample_names_the_bundled_pool_unless_a_file_of_that_name_is_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bundled = pools.read("sample")
    assert bundled.source == str(pools.SAMPLE) and len(bundled.rows) > 20 and len(bundled.formats) >= 4
    assert len(pools.load("sample")) == len(bundled.rows)
    write_jsonl(tmp_path / "sample", [{"instruction": "mine", "output": "only"}])  # a file of that name is read
    with pytest.raises(InputError, match="^sample: file: unknown file type ''"):
        pools.read("sample")


def test_gzipped_jsonl_and_json_read_as_their_plain_files(tmp_path):
    import gzip

    records = [{"instruction": "one", "output": "a"}, {"instruction": "two", "output": "b"}]
    plain = pools.read(write_jsonl(tmp_path / "p.jsonl", records)).rows
    (tmp_path / "p.jsonl.gz").write_bytes(gzip.compress((tmp_path / "p.jsonl").read_bytes()))
    (tmp_path / "p.json.gz").write_bytes(gzip.compress(json.dumps(records).encode()))
    for name in ("p.jsonl.gz", "p.json.gz"):
        assert [r["conversation"] for r in pools.read(tmp_path / name).rows] == [r["conversation"] for r in plain]
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress((tmp_path / "p.jsonl").read_bytes())[:-12])
    with pytest.raises(InputError, match="cut.jsonl.gz: file: cannot read it"):
        pools.read(tmp_path / "cut.jsonl.gz")
    (tmp_path / "p.csv.gz").write_bytes(gzip.compress(b"instruction,output\\nx,y\\n"))
    with pytest.raises(InputError, match="a gzipped .csv"):
        pools.read(tmp_path / "p.csv.gz")


def test_a_blank_system_prompt_is_none_and_a_text_part_must_be_text():
    conv = pools.to_conversation({"instruction": "hi", "output": "hello", "system": "  "}, "alpaca")
    assert [t["role"] for t in conv] == ["user", "assistant"]
    # a top-level system prompt of a ShareGPT or messages record is its first turn (two records that differ only
    # there were one row, and a duplicate); a system turn of the list itself wins
    chat = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    terse, pirate = (pools.to_conversation({"conversations": chat, "system": s}, "sharegpt") for s in ("Be terse.", "Arr."))
    assert terse[0] == {"role": "system", "content": "Be terse."} and pools.row_id(terse) != pools.row_id(pirate)
    listed = [{"role": "system", "content": "In the list."}, {"role": "user", "content": "hi"}]
    assert pools.to_conversation({"messages": listed, "system": "Beside."}, "messages") == listed
    with pytest.raises(Exception, match="a text part's text must be a string"):
        pools.to_conversation({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]},
                                            {"role": "assistant", "content": "x"}]}, "messages")


def test_a_boolean_among_numbers_is_mixed_types_not_one():
    table, as_json = pools.to_table([{"id": "a", "conversation": [], "format": "qa", "gpt4": 7.5},
                                     {"id": "b", "conversation": [], "format": "qa", "gpt4": True}])
    assert as_json == ["gpt4"] and table.column("gpt4").to_pylist() == ["7.5", "true"]  # never a label of 1.0


def test_a_pool_in_memory_loads_as_its_file_would(tmp_path):
    """A notebook's datasets.Dataset, pandas DataFrame or list of dicts loads like the same records in a file: the
    same ids and conversations, a bad record named by its row, a field the frame lacks (NaN) treated as missing."""
    import datasets
    import pandas as pd

    from curate.session import Workspace

    records = [{"instruction": "Add the numbers", "input": "2 and 3", "output": "5"},
               {"instruction": "Say hello", "output": "Hello"}]
    on_disk = curate.load(write_jsonl(tmp_path / "p.jsonl", records))
    for obj in (datasets.Dataset.from_list(records), pd.DataFrame(records), records, (r for r in records),
                datasets.Dataset.from_list(records).to_iterable_dataset()):
        ds = curate.load(obj)
        assert ds["id"] == on_disk["id"] and ds["conversation"] == on_disk["conversation"], type(obj)
    chats = [{"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}],
              "tags": ["x", f"t{i}"]} for i in range(2)]
    frame = datasets.Dataset.from_list(chats).to_pandas()  # list fields as numpy arrays, as read_parquet gives them
    from_frame, from_file = curate.load(frame), curate.load(write_jsonl(tmp_path / "c.jsonl", chats))
    assert from_frame["id"] == from_file["id"] and from_frame["conversation"] == from_file["conversation"]
    assert from_frame["tags"] == [["x", "t0"], ["x", "t1"]]
    with pytest.raises(InputError, match=r"^<builtins.dict>: source: not a pool: give a path"):
        curate.load(records[0])  # one record is not a pool (and never a path named by its repr)
    with pytest.raises(InputError, match=r"^<list of 3 records, sha256 \w+>: row 3: instruction is empty"):
        curate.load([*records, {"instruction": "", "output": "x"}])
    with pytest.raises(InputError, match=r"pass one, e\.g\. ds\['train'\]"):
        curate.load(datasets.DatasetDict({"train": datasets.Dataset.from_list(records)}))
    splits = datasets.DatasetDict({"validation": datasets.Dataset.from_list(records[:1]),
                                   "test": datasets.Dataset.from_list(records)})
    splits.save_to_disk(str(tmp_path / "splits"))
    with pytest.raises(InputError, match=r"splits: a datasets folder of splits \['validation', 'test'\]: load one "
                                         r"split's folder, e\.g\. .*splits/validation"):
        curate.load(tmp_path / "splits")
    assert curate.load(tmp_path / "splits" / "test")["id"] == on_disk["id"]
    ws = Workspace(tmp_path / "ws")
    first, again = ws.load(list(records)), ws.load(list(records))  # the same content: one source, named alike
    assert (first["rows_added"], again["rows_added"], again["already_present"]) == (2, 0, 2)
    assert {s["source"] for s in ws.manifest["sources"]} == {first["source"]}  # two loads of one source


def test_a_mapping_names_the_shape_it_maps_and_a_misspelt_field_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"q": "What is 2+2?", "a": "4"}, {"q": "Capital of France?", "a": "Paris"}])
    with pytest.raises(InputError, match="cannot tell the format"):
        curate.load(path)
    as_alpaca = curate.load(path, mapping={"instruction": "q", "output": "a"})  # no format= needed
    as_qa = curate.load(path, mapping={"question": "q", "answer": "a"})
    assert as_alpaca["format"] == ["alpaca"] * 2 and as_qa["format"] == ["qa"] * 2
    assert as_alpaca["conversation"] == as_qa["conversation"] and as_qa["conversation"][0][1]["content"] == "4"
    with pytest.raises(ValueError, match="mapping 'instrucion'"):
        curate.load(path, mapping={"instrucion": "q", "output": "a"})


def test_a_mapping_whose_fields_the_record_lacks_is_an_error_not_another_shape_without_its_responses(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"query": "What is AI?", "reply": "Artificial intelligence."}])
    with pytest.raises(InputError, match="line 1: missing field 'question' \\(mapped to 'instruction'\\)"):
        curate.load(path, mapping={"instruction": "question", "output": "reply"})
    with pytest.raises(InputError, match="line 1: the record is qa .* does not read"):
        curate.load(path, mapping={"output": "reply"})
    nulled = write_jsonl(tmp_path / "null.jsonl", [{"instruction": None, "output": "x"}])
    with pytest.raises(InputError, match="line 1: instruction is null; it must be text"):
        curate.load(nulled)
    loaded = curate.load(path, mapping={"answer": "reply"})  # qa by its query field, its answer mapped
    assert loaded["conversation"][0][1]["content"] == "Artificial intelligence."


def test_a_record_of_a_json_array_is_named_by_number_and_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n  null,\n  {"instruction": "say \\"]{\\"",\n'
                    '   "output": "c"},\n  {"instruction": "", "output": "d"}\n]\n')
    rejects = pools.read(path, on_error="skip").rejects
    assert [r.location for r in rejects] == ["record 2 (line 3)", "record 4 (line 6)"]
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "", "output": "d"}]))
    with pytest.raises(InputError, match=r"a\.json: record 2: instruction is empty"):  # one line: the number says it
        pools.read(path)


def test_a_pool_staged_part_by_part_is_the_pool_read_at_once(tmp_path):
    """pools.stage holds one part of rows in memory; the parts' types, unified, are what to_table makes of every
    row at once: ints then floats are floats, a column first seen late is null before, and ints then text, booleans
    then numbers, an integer beyond 64 bits or objects of other keys (a struct of both would give each row keys it
    never had) make JSON text in every part."""
    import pyarrow as pa

    records = [{"instruction": f"task {i}", "output": "ok", "n": i, "meta": {"a": i}, "mixed": i, "flag": True,
                "big": i} for i in range(5)]
    records += [{"instruction": f"later {i}", "output": "ok" if i else "", "n": i + 0.5, "meta": {"b": "x"},
                 "mixed": "text", "flag": 3, "late": [1, 2], "big": 2**63} for i in range(4)]
    records.insert(3, {"instruction": "no reply field"})
    records.insert(6, {"instruction": ""})  # rejected
    path = write_jsonl(tmp_path / "p.jsonl", records)
    whole = pools.read(path, on_error="skip")
    pools.assign_ids(whole.rows)
    expected, as_json = pools.to_table(whole.rows)
    staged = pools.stage(path, tmp_path / "stage", on_error="skip", part_rows=2)
    assert len(staged.parts) == 5
    assert pa.concat_tables(staged.tables()).equals(expected)
    assert set(as_json) == {"mixed", "flag", "big", "meta"} and staged.columns_kept_as_json == as_json
    assert expected.column("n").type == pa.float64() and expected.column("meta").to_pylist()[:6] == [
        '{"a": 0}', '{"a": 1}', '{"a": 2}', None, '{"a": 3}', '{"a": 4}']
    even = pools.stage(write_jsonl(tmp_path / "even.jsonl", [{"instruction": f"t {i}", "output": "ok", "meta": {"a": i}}
                                                             for i in range(4)]), tmp_path / "even", part_rows=2)
    assert even.columns_kept_as_json == [] and pa.concat_tables(even.tables()).column("meta").type.num_fields == 1
    uneven = pools.stage(write_jsonl(tmp_path / "uneven.jsonl", [  # even within each part, uneven across parts
        {"instruction": f"t {i}", "output": "ok", "meta": {"a": i} if i < 2 else {"b": i}} for i in range(4)]),
        tmp_path / "uneven", part_rows=2)
    assert uneven.columns_kept_as_json == ["meta"]
    assert (staged.rows_read, staged.rejects, staged.instruction_only, staged.empty_responses) == (10, 1, 1, 1)
    assert staged.formats == whole.formats and staged.first_reject == whole.rejects[0]
    assert staged.ids().to_pylist() == [row["id"] for row in whole.rows]


def test_a_row_with_tool_calls_or_an_image_part_is_left_out_with_its_line_never_kept_without_them(tmp_path):
    """Stored as text alone, an assistant turn that calls a tool is an empty reply (a model trained on it learns to
    say nothing), two rows that differ only in their calls become one row and its exact duplicate, and a question
    about a picture loses the picture: such a record is a reject naming its line, as any unreadable record is."""
    ask = {"role": "user", "content": "What is the weather?"}
    calls = [{"messages": [ask, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": name, "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}, {"role": "assistant", "content": "It is sunny."}]}
        for name in ("get_weather", "delete_all_files")]
    picture = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                                         {"type": "image_url", "image_url": {"url": "x.png"}}]},
                            {"role": "assistant", "content": "A cat."}]}
    plain = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Name an owl."}]},
                          {"role": "assistant", "content": "The barn owl."}]}
    src = write_jsonl(tmp_path / "pool.jsonl", [*calls, picture, plain])
    with pytest.raises(InputError, match=r"pool.jsonl: line 1: turn 1 has tool_calls; curate keeps text turns only"):
        pools.read(src, on_error="raise")
    from curate.storage.workspace import Workspace

    ws = Workspace(tmp_path / "ws", create=True)
    with pytest.warns(CurateWarning, match=r"3 record\(s\) left out"):
        ws.load(src, on_error="skip")
    assert ws.conversations() == [[{"role": "user", "content": "Name an owl."},
                                   {"role": "assistant", "content": "The barn owl."}]]
    rejects = [json.loads(line) for line in (tmp_path / "ws" / "rejects.jsonl").read_text().splitlines()]
    assert [r["location"] for r in rejects] == ["line 1", "line 2", "line 3"]
    assert "turn 0 content has a part of type 'image_url'" in rejects[2]["reason"]
    clash = {"id": "SRC-1", "original_id": "older", "instruction": "Name an owl.", "output": "The barn owl."}
    with pytest.raises(InputError, match=r"line 1: fields 'id' and 'original_id': a source's id is kept as original_id"):
        pools.read(write_jsonl(tmp_path / "clash.jsonl", [clash]))  # one of the two was lost in silence
    untyped = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                                         {"image_url": {"url": "x.png"}}]},  # no "type": read as text
                            {"role": "assistant", "content": "A cat."}]}
    with pytest.raises(InputError, match=r"line 1: turn 0 content has a part with no text \(keys \['image_url'\]\)"):
        pools.read(write_jsonl(tmp_path / "untyped.jsonl", [untyped]))


def test_a_field_of_mixed_types_is_json_text_in_every_row_and_exported_to_json_lines_as_its_values(tmp_path):
    """A field whose values mix types is held as JSON text; a later load whose values are of one type used to add
    them as they were, so the text "1" and the number 1 read back alike. Every load now conforms to the JSON text
    (either order), and a JSON Lines export (a file, or standard output) writes the values themselves."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.storage.workspace import Workspace

    mixed = write_jsonl(tmp_path / "mixed.jsonl", [
        {"instruction": "First question here?", "output": "a", "label": 1, "tags": ["x"]},
        {"instruction": "Second question here?", "output": "b", "label": "high", "tags": []}])
    texts = write_jsonl(tmp_path / "texts.jsonl", [{"instruction": "Third question here?", "output": "c", "label": "1"}])
    numbers = write_jsonl(tmp_path / "numbers.jsonl", [{"instruction": "Fourth question?", "output": "d", "label": 8}])
    for order in ((texts, mixed, numbers), (mixed, texts, numbers)):
        ws = Workspace(tmp_path / f"ws-{order[0].stem}", create=True)
        for source in order:
            ws.load(source)  # numbers after mixed: a number field beside JSON text was a type clash
        by_question = dict(zip((c[0]["content"] for c in ws.conversations()), ws.column("label"), strict=True))
        assert by_question == {"First question here?": "1", "Second question here?": '"high"',
                               "Third question here?": '"1"', "Fourth question?": "8"}
        ws.export(tmp_path / "out.jsonl")
        shown = CliRunner().invoke(app, ["export", str(ws.path), "--out", "-"])
        for text in ((tmp_path / "out.jsonl").read_text(), shown.stdout):
            rows = {r["instruction"]: r for r in map(json.loads, text.splitlines())}
            assert {q: r["label"] for q, r in rows.items()} == {"First question here?": 1, "Second question here?": "high",
                                                              "Third question here?": "1", "Fourth question?": 8}
            assert rows["First question here?"]["tags"] == ["x"] and rows["Fourth question?"]["tags"] is None
    # a workspace whose later load added plain text beside JSON text (before loads conformed): named, never guessed
    from curate.errors import WorkspaceError

    old = Workspace(tmp_path / "old", create=True)
    old.load(write_jsonl(tmp_path / "plain.jsonl", [{"instruction": "Fifth question?", "output": "e", "label": "high"}]))
    old.update_manifest(lambda m: m["sources"][0].update(columns_kept_as_json=["label"]))
    with pytest.raises(WorkspaceError, match=r"field 'label' holds 'high', not the JSON text"):
        old.export(tmp_path / "out.jsonl")
    # ... and a failed export leaves the earlier file at that path whole (it was written in place: half a file)
    assert (tmp_path / "out.jsonl").read_text() == text and not list(tmp_path.glob(".out.jsonl*"))


def test_fields_parquet_or_orjson_cannot_write_export_to_every_format(tmp_path):
    """An always-empty object (`"metadata": {}`) crashed every Parquet export (Arrow's struct of no fields), so `curate
    run` died at its export; an integer beyond 64 bits crashed JSON Lines exports in orjson; and a field that was a
    number in one load and text in the next was refused, though a load holds such a field as JSON text."""
    import pyarrow.parquet as pq

    from curate.storage.workspace import Workspace

    ws = Workspace(tmp_path / "ws", create=True)
    ws.load(write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "First question?", "output": "a", "meta": {}, "n": 10**20, "label": 1, "score": 1,
         "note": "hi", "rating": float("nan")},
        {"instruction": "Second question?", "output": "b", "meta": {}, "n": [-(10**20), {"x": 2**64 - 1}], "label": 2,
         "score": 2, "note": "ho", "rating": 4.5}]))
    ws.load(write_jsonl(tmp_path / "b.jsonl", [{"instruction": "Third question?", "output": "c", "label": "high",
                                                "score": 2.5, "note": None}]))
    ws.export(tmp_path / "out.jsonl")
    ws.export(tmp_path / "out.parquet")

    def strict(constant):  # NaN is not JSON: a row with a big int was written by another encoder, as "NaN"
        raise ValueError(constant)

    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    rows = {r["instruction"]: r for r in (json.loads(line, parse_constant=strict) for line in lines)}
    assert [(r["meta"], r["n"], r["label"], r["rating"]) for r in rows.values()] == [
        ({}, 10**20, 1, None), ({}, [-(10**20), {"x": 2**64 - 1}], 2, 4.5), (None, None, "high", None)]
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("meta").to_pylist() == ["{}", "{}", None]
    assert table.column("label").to_pylist() == ["1", "2", '"high"']
    # the label clash makes label JSON text, not the fields a promotion joins (int with a float, text with a null)
    assert (str(table.schema.field("score").type), str(table.schema.field("note").type)) == ("double", "string")


def test_a_source_read_again_refreshes_only_what_changed_nan_included(tmp_path):
    """Arrow's equals holds NaN unequal to itself: a source with a NaN rating read as changed on every re-run."""
    from curate.storage.workspace import Workspace

    ws = Workspace(tmp_path / "ws", create=True)
    records = [{"instruction": f"Question {i}?", "output": "ok", "rating": float("nan") if i % 2 else 4.5}
               for i in range(4)]
    first = ws.load(write_jsonl(tmp_path / "p.jsonl", records), keep_only_source=True)
    again = ws.load(tmp_path / "p.jsonl", keep_only_source=True)
    assert (first["fields_refreshed"], again["fields_refreshed"]) == (False, False)
    edited = ws.load(write_jsonl(tmp_path / "p.jsonl", [{**records[0], "rating": 1.0}, *records[1:]]),
                     keep_only_source=True)
    assert edited["fields_refreshed"] and ws.column("rating")[0] == 1.0


def test_a_json_lines_export_writes_floats_as_they_are_held(tmp_path):
    """Dataset.to_json (pandas) rounds floats to 10 decimals: 3e-12 was exported as 0.0, and a score lost its last
    digits, in every JSON Lines export (curate run's selected.jsonl too); Parquet kept them."""
    from curate.storage.workspace import Workspace

    weights = [3e-12, 0.1234567890123456, 1.5e-07, 4.740651518834285, 1e300]
    ws = Workspace(tmp_path / "ws", create=True)
    ws.load([{"instruction": f"Question {i}?", "output": "ok", "weight": w} for i, w in enumerate(weights)])
    ws.export(tmp_path / "out.jsonl")
    assert [json.loads(line)["weight"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == weights


def test_a_training_format_export_carries_a_pool_field_asked_for_by_name(tmp_path):
    """`curate export --format messages --column split` failed opening columns/split.arrow, an internal path: split
    is a field of the pool file, not a derived column."""
    from curate.storage.workspace import Workspace

    ws = Workspace(tmp_path / "ws", create=True)
    ws.load([{"instruction": "Question one?", "output": "a", "split": "train"},
             {"instruction": "Question two?", "output": "b", "split": "test"}])
    ws.export(tmp_path / "m.jsonl", format="messages", columns=["split"])
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [(r["messages"][0]["content"], r["split"]) for r in rows] == [("Question one?", "train"),
                                                                          ("Question two?", "test")]


def test_export_columns_and_out_dash_mean_on_the_command_line_what_they_mean_in_python(tmp_path, monkeypatch):
    """`curate export --column quality` without --format was refused ("without --format every column is exported")
    where ws.export(columns=["quality"]) exports the pool fields and quality alone: the command line now does what
    Python does. `ws.export("-")` wrote a datasets folder named ./- where `curate export --out -` writes JSON Lines
    to standard output: Python refuses it, naming what to do instead."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.errors import WorkspaceError
    from curate.storage.workspace import Workspace

    ws = Workspace(tmp_path / "ws", create=True)
    ws.load([{"instruction": "Question one?", "output": "a", "split": "train"},
             {"instruction": "Question two?", "output": "b", "split": "test"}])
    ws.add_column("quality", [[4.0], [2.0]], {"kind": "test", "granularity": "turn", "reducer": "sum"})
    ws.add_column("complexity", [[1.0], [3.0]], {"kind": "test", "granularity": "turn", "reducer": "sum"})
    api = [json.loads(line) for line in ws.export(tmp_path / "api.jsonl", columns=["quality"]).read_text().splitlines()]
    assert [(r["split"], r["quality"], r["quality_turns"]) for r in api] == [("train", 4.0, [4.0]), ("test", 2.0, [2.0])]
    assert all("complexity" not in r for r in api)
    shown = CliRunner().invoke(app, ["export", str(ws.path), "--out", str(tmp_path / "cli.jsonl"), "--column", "quality"])
    assert shown.exit_code == 0, shown.output
    assert [json.loads(line) for line in (tmp_path / "cli.jsonl").read_text().splitlines()] == api
    piped = CliRunner().invoke(app, ["export", str(ws.path), "--out", "-", "--column", "quality"])
    assert [json.loads(line) for line in piped.stdout.splitlines()] == api
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkspaceError, match=r"out='-' is the command line's standard output .* ws.to_dataset"):
        ws.export("-", columns=["quality"])
    assert not (tmp_path / "-").exists()


def test_a_training_format_export_keeps_json_text_fields_as_values_and_refuses_a_column_named_like_its_field(
        tmp_path):
    """With --format, a pool field held as JSON text (its values mix types) was written as that text ("1",
    "\"web\""); a --column named like a field of the records (messages, instruction) replaced it, in silence."""
    from curate.errors import WorkspaceError
    from curate.storage.workspace import Workspace

    ws = Workspace(tmp_path / "ws", create=True)
    ws.load([{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "src": 1},
             {"messages": [{"role": "user", "content": "Yo"}, {"role": "assistant", "content": "Hey"}], "src": "web"}])
    for out in (tmp_path / "m.jsonl", tmp_path / "m.parquet"):
        ws.export(out, format="messages", columns=["src"])
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["src"] for r in rows] == [1, "web"] and rows[0]["messages"][1] == {"role": "assistant",
                                                                                 "content": "Hello"}
    with pytest.raises(WorkspaceError, match="column 'messages': messages records have a field 'messages' of their"):
        ws.export(tmp_path / "x.jsonl", format="messages", columns=["messages"])
    with pytest.raises(WorkspaceError, match="column 'format': curate's own .* kept as original_format"):
        ws.export(tmp_path / "x.jsonl", format="messages", columns=["src", "format"])  # was dropped in silence
    alpaca = Workspace(tmp_path / "alpaca", create=True)
    alpaca.load([{"instruction": "Translate.", "input": "Bonjour", "output": "Hello"}])
    with pytest.raises(WorkspaceError, match="column 'instruction': alpaca records have a field 'instruction'"):
        alpaca.export(tmp_path / "a.jsonl", format="alpaca", columns=["instruction", "input"])
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "a.jsonl").exists()


def test_turn_keys_the_conversation_drops_are_counted_at_load_and_an_export_with_format_refuses_their_rows(tmp_path):
    """A ShareGPT turn's ``weight: 0`` (not trained on, in axolotl) was dropped from the conversation without a word,
    and a --format export wrote the turn as one to train on."""
    from curate.errors import WorkspaceError
    from curate.storage.workspace import Workspace

    ws = Workspace(tmp_path / "ws", create=True)
    summary = ws.load([
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Bad reply", "weight": 0},
                           {"from": "human", "value": "Again"}, {"from": "gpt", "value": "Good reply", "weight": 1}]},
        {"conversations": [{"from": "human", "value": "Plain"}, {"from": "gpt", "value": "Plain reply"}]},
        {"messages": [{"role": "user", "content": "Named", "name": "ann"}, {"role": "assistant", "content": "Yes",
                                                                            "name": None}]},
    ])
    assert summary["turn_keys_not_kept"] == {"weight": 1, "name": 1}  # a null value is no value
    with pytest.raises(WorkspaceError, match=r"2 of 3 rows have turns with keys a sharegpt record of their "
                                             r"conversation would drop \(row .*: weight\); export without "
                                             r"format= \(CLI: --format\) to keep"):
        ws.export(tmp_path / "s.jsonl", format="sharegpt")
    ws.export(tmp_path / "all.jsonl")  # without --format: the source's own field, weights and all
    kept = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert kept[0]["conversations"][1]["weight"] == 0


def test_an_empty_pool_in_memory_and_a_missing_folder_are_named_as_what_they_are(tmp_path, monkeypatch):
    """ws.load([]) spoke of a file ("file: no records (it is empty or holds only blank lines)"), and a path ending
    in "/" (or starting with ~) was tried as a Hub id ("hub: not a local file, and loading it from the Hub failed")."""
    import re

    ws = curate.Workspace(tmp_path / "ws")
    with pytest.raises(InputError, match=r"^<list of 0 records, sha256 \w+>: records: no records: the pool given in "
                                         r"memory is empty$"):
        ws.load([])
    monkeypatch.chdir(tmp_path)
    for source in ("missing_dir/", "org/missing_dir/"):
        with pytest.raises(InputError, match=f"^{re.escape(source)}: folder: no such folder$"):
            curate.load(source)
    home = re.escape(os.path.expanduser("~"))  # the home folder's path, as a shell expands it
    with pytest.raises(InputError, match=f"^{home}/no-such-pool-dir/pool: file: no such file or folder$"):
        curate.load("~/no-such-pool-dir/pool")


def test_a_path_starting_with_a_tilde_is_read_from_the_home_folder(tmp_path, monkeypatch):
    """curate.load("~/pool.jsonl") said "no such file or folder" of a file there: the Python API gets the path as
    typed, unexpanded."""
    monkeypatch.setenv("HOME", str(tmp_path))
    write_jsonl(tmp_path / "pool.jsonl", [{"instruction": "Name a prime.", "output": "7"}])
    assert curate.load("~/pool.jsonl")["conversation"][0][0]["content"] == "Name a prime."


def test_turn_keys_of_a_mapped_chat_field_are_counted_and_refused_as_the_default_fields_are(tmp_path):
    """With --mapping '{"conversations": "chat"}' the turn keys were looked for in the default field names only:
    the load line said nothing and an export --format wrote a weight-0 turn as one to train on."""
    from curate.errors import WorkspaceError
    from curate.storage.workspace import Workspace

    ws = Workspace(tmp_path / "ws", create=True)
    summary = ws.load([{"chat": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Bad", "weight": 0}]},
                       {"chat": [{"from": "human", "value": "Yo"}, {"from": "gpt", "value": "Fine"}]}],
                      format="sharegpt", mapping={"conversations": "chat"})
    assert summary["turn_keys_not_kept"] == {"weight": 1}
    with pytest.raises(WorkspaceError, match=r"1 of 2 rows have turns with keys a messages record .*: weight\)"):
        ws.export(tmp_path / "m.jsonl", format="messages")


def test_export_format_counts_each_row_whose_turn_keys_it_would_drop_once_and_names_the_first(tmp_path):
    """The refusal went field by field over a set of names: a row with keys in two chat fields was counted twice
    ("2 of 1 rows") and the row it named hung on the hash seed (a messages row's name, or a later sharegpt row's
    weight)."""
    from curate.errors import WorkspaceError
    from curate.storage.workspace import Workspace

    ws = Workspace(tmp_path / "ws", create=True)
    ws.load([{"messages": [{"role": "user", "content": "Hi", "name": "ann"}, {"role": "assistant", "content": "Hey"}],
              "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hey", "weight": 0}]}],
            format="messages")
    with pytest.raises(WorkspaceError, match=r"^1 of 1 rows have turns with keys .* \(row \w+: name, weight\)"):
        ws.export(tmp_path / "m.jsonl", format="messages")

def test_turn_keys_of_a_mapped_chat_field_are_counted_when_the_rows_were_read_before_the_load(tmp_path):
    """ws.load(pools.read(..., mapping=...)) looked for turn keys in the default field names only: the weight-0 turn
    was not counted and an export --format wrote it as one to train on."""
    from curate.errors import WorkspaceError
    from curate.storage.workspace import Workspace

    records = [{"chat": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Bad", "weight": 0}]},
               {"chat": [{"from": "human", "value": "Yo"}, {"from": "gpt", "value": "Fine"}]}]
    read = pools.read(records, format="sharegpt", mapping={"conversations": "chat"})
    ws = Workspace(tmp_path / "ws", create=True)
    summary = ws.load(read)
    assert summary["turn_keys_not_kept"] == {"weight": 1}
    assert ws.manifest["sources"][0]["turn_fields"]["sharegpt"] == "chat"
    with pytest.raises(WorkspaceError, match=r"1 of 2 rows have turns with keys a sharegpt record .*: weight\)"):
        ws.export(tmp_path / "s.jsonl", format="sharegpt")
    assert not (tmp_path / "s.jsonl").exists()


def test_loading_rows_read_already_refuses_reading_options_it_would_ignore(tmp_path):
    """ws.load(pools.read(...), mapping=...) dropped the mapping in silence: the rows were read without it."""
    from curate.errors import OptionError
    from curate.storage.workspace import Workspace

    read = pools.read([{"prompt": "Hi", "answer": "Yo"}], format="auto", on_error="skip")
    ws = Workspace(tmp_path / "ws", create=True)
    for options in ({"mapping": {"instruction": "prompt"}}, {"format": "alpaca"}, {"on_error": "skip"},
                    {"max_field_chars": 10}):
        with pytest.raises(OptionError, match=f"load: {next(iter(options))} apply when a source is read"):
            ws.load(read, **options)
    assert not ws.has_pool


def test_turn_keys_of_a_chat_field_named_as_curates_own_are_counted_where_the_field_is_kept(tmp_path):
    """A mapped chat field named ``conversation`` is kept as ``original_conversation``, but its keys were looked for
    under ``conversation`` (curate's own, which has none): the load counted nothing and export --format let a
    message's ``name`` go without a word."""
    from curate.errors import WorkspaceError
    from curate.storage.workspace import Workspace

    assert pools.formats.turn_fields({"messages": "conversation"})["messages"] == "original_conversation"
    records = [{"conversation": [{"role": "user", "content": "Hi", "name": "ann"},
                                 {"role": "assistant", "content": "Hey"}]}]
    ws = Workspace(tmp_path / "ws", create=True)
    summary = ws.load(records, format="messages", mapping={"messages": "conversation"})
    assert summary["turn_keys_not_kept"] == {"name": 1}
    assert '"name": "ann"' in ws.to_dataset()[0]["original_conversation"]  # kept (as JSON text: uneven turns)
    with pytest.raises(WorkspaceError, match=r"1 of 1 rows have turns with keys a messages record .*: name\)"):
        ws.export(tmp_path / "m.jsonl", format="messages")
    again = Workspace(tmp_path / "again", create=True)  # read first, loaded after: the same count
    assert again.load(pools.read(records, format="messages", mapping={"messages": "conversation"})
                      )["turn_keys_not_kept"] == {"name": 1}


def test_reading_a_parquet_file_prints_no_library_bar_or_log_line(tmp_path, capfd):
    """A valid Parquet file showed datasets' "Generating train split" bar (its other bars are hidden), and a truncated
    one printed datasets' log line "Failed to read schema from ..." before curate's one-line error."""
    import pandas as pd

    path = tmp_path / "p.parquet"
    pd.DataFrame({"instruction": [f"q{i}" for i in range(5)], "output": ["a"] * 5}).to_parquet(path)
    assert len(pools.read(path).rows) == 5
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match=r"cut\.parquet: file: cannot read parquet: Parquet magic bytes not found"):
        pools.read(cut)
    said = capfd.readouterr()
    assert "Generating train split" not in said.err and "Failed to read schema" not in said.err + said.out


def test_a_reload_of_an_edited_source_says_the_rows_it_no_longer_holds_stay_in_the_pool(tmp_path):
    """`curate load` of a file edited since its load added the edited rows and kept the old ones beside them without
    a word ('loaded 1 rows ...; 2 already present'): the pool then held 4 rows of a 3-row file. Rows appended to the
    file, or a re-load of the same file, say nothing."""
    from curate.session import Workspace
    from tests.cli_in_process import curate_in_process

    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(3)]
    source, ws = write_jsonl(tmp_path / "p.jsonl", rows), tmp_path / "ws"
    for _ in range(2):  # the first load and a re-load
        proc = curate_in_process("load", source, "-w", ws)
        assert proc.returncode == 0 and "changed since" not in proc.stdout, proc.stdout + proc.stderr
    write_jsonl(source, [*rows, {"instruction": "q3", "output": "a3"}])  # appended: nothing gone
    assert "changed since" not in curate_in_process("load", source, "-w", ws).stdout
    write_jsonl(source, [rows[0], {"instruction": "q1", "output": "a1, edited"}, rows[2]])
    proc = curate_in_process("load", source, "-w", ws)
    assert proc.returncode == 0 and re.search(rf"{re.escape(str(source))} changed since its load at \S+: at least "
                                              r"2 row\(s\) that load read are not in it now", proc.stdout), proc.stdout
    assert len(Workspace.open(ws)) == 5  # q0..q3 and the edited q1: the rows gone from the file stay
    summary = Workspace.open(ws).load(source)
    assert "rows_gone_from_source" not in summary and summary["unchanged"]  # said once, for the load that saw it


def test_rows_removed_from_the_pool_and_loaded_again_are_not_said_to_be_gone_from_their_source(tmp_path):
    """A source whose rows left the pool (another source's keep_only_source load, ws.keep_rows) and loaded again, as
    it was, was said to have changed ('at least 3 rows its load at ... read not in it now (kept in the pool)'): the
    rows were the pool's loss, and added again. A source edited after that removal is still named."""
    from curate.session import Workspace

    a = write_jsonl(tmp_path / "a.jsonl", [{"instruction": f"a{i}", "output": "x"} for i in range(3)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"instruction": f"b{i}", "output": "x"} for i in range(2)])
    ws = Workspace(tmp_path / "ws")
    ws.load(a)
    ws.load(b, keep_only_source=True)  # a's rows leave the pool
    again = ws.load(a)
    assert again["rows_added"] == 3 and "rows_gone_from_source" not in again, again
    assert ws.keep_rows(ws.ids[:2]) == 3  # the rows of a leave again
    again = ws.load(a)
    assert again["rows_added"] == 3 and "rows_gone_from_source" not in again, again
    write_jsonl(a, [{"instruction": "a0", "output": "x"}, {"instruction": "a1", "output": "edited"}])
    edited = ws.load(a)
    assert edited["rows_gone_from_source"] == 2, edited  # a1 edited, a2 deleted: named as before


def test_json_lines_whose_first_line_is_a_stray_array_read_the_other_lines(tmp_path):
    """A .jsonl file starting with `[` was read whole as one JSON array: JSON Lines whose first line is an array (a
    bad record) failed at 'line 2: malformed JSON: Extra data', on_error="skip" or not, where the line was one
    rejected record and the others loaded."""
    path = tmp_path / "p.jsonl"
    path.write_text('["stray"]\n{"instruction": "q1", "output": "a1"}\n\n{"instruction": "q2", "output": "a2"}\n')
    read = pools.read(path, on_error="skip")
    assert [r["instruction"] for r in read.rows] == ["q1", "q2"]
    assert [(r.location, r.reason) for r in read.rejects] == [("line 1", "expected a JSON object, got an array")]
    (tmp_path / "gap.jsonl").write_text('\n[{"instruction": "q", "output": "a"}]\n')  # one array, after a blank line
    assert [r["instruction"] for r in pools.read(tmp_path / "gap.jsonl").rows] == ["q"]
