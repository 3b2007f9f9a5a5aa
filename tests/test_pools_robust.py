"""Hostile input for `curate load` / `curate.pools`: every bad line is a clean, line-level error (issue 11)."""

import json
import subprocess
from pathlib import Path

import datasets
import pytest

import curate
from curate import pools
from curate.codes import FailureCode
from curate.errors import CurateWarning, InputError
from curate.llm.judges import Judge
from curate.rows import row_text, turns
from curate.scorers import load_default
from curate.session import Workspace
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer

GOOD = {"instruction": "A fine row.", "output": "Fine."}
DEEP = 100_000
BIG_INT = "123456789012345678901234567890"  # 30 digits: beyond int64
HUGE_INT = "9" * 5_000  # beyond Python's default int-string conversion limit (4,300 digits)

# Lines that must each be rejected on their own, with a reason that says what is wrong.
BAD_LINES = {
    "deep": ('{"instruction": "x", "output": "y", "meta": ' + "[" * DEEP + "]" * DEEP + "}", "nested"),
    "huge_int": ('{"instruction": "x", "output": "y", "n": ' + HUGE_INT + "}", "digits"),
    "big_int_output": ('{"instruction": "x", "output": ' + BIG_INT + "}", "output must be a string"),
    "surrogate": ('{"instruction": "x\\ud800", "output": "y"}', "'instruction'"),
    "surrogate_extra": ('{"instruction": "x", "output": "y", "note": "\\udc00"}', "'note'"),
    "two_users": (json.dumps({"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"},
                                                {"from": "gpt", "value": "c"}]}), "turn 1"),
    "two_assistants": (json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                                {"role": "assistant", "content": "c"}]}), "turn 2"),
}


def _pool(tmp_path, bad_line: str, name: str = "p.jsonl") -> Path:
    """Three lines: good, bad, good."""
    return write_jsonl(tmp_path / name, [GOOD, bad_line, {"instruction": "Another row.", "output": "Yes."}])


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A command's exit code and words, from curate.cli.main() in this process (see tests/cli_in_process.py)."""
    return curate_in_process(*args, cwd=cwd)


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_line_raises_a_clean_error_naming_file_and_line(tmp_path, kind):
    line, needle = BAD_LINES[kind]
    path = _pool(tmp_path, line)
    with pytest.raises(InputError) as err:
        pools.read(path)
    assert str(err.value).startswith(f"{path}: line 2: ") and needle in str(err.value)


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_skip_rejects_only_the_bad_line_and_keeps_its_raw_text(tmp_path, kind):
    line, needle = BAD_LINES[kind]
    path = _pool(tmp_path, line)
    result = pools.read(path, on_error="skip")
    assert len(result.rows) == 2
    (reject,) = result.rejects
    assert reject.location == "line 2" and needle in reject.reason
    assert reject.raw == line[: pools.REJECT_RAW_MAX_CHARS]


@pytest.mark.parametrize("kind", ["deep", "huge_int", "surrogate", "two_users"])
def test_cli_load_reports_one_line_and_exit_1(tmp_path, kind):
    path = _pool(tmp_path, BAD_LINES[kind][0])
    proc = _cli("load", str(path), "--workspace", str(tmp_path / "ws"), cwd=tmp_path)
    assert proc.returncode == 65, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert f"{path}: line 2:" in proc.stderr


def test_cli_skip_loads_the_other_lines_and_lists_the_bad_one(tmp_path):
    path = _pool(tmp_path, BAD_LINES["deep"][0])
    proc = _cli("load", str(path), "--workspace", str(tmp_path / "ws"), "--on-error", "skip", cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(Workspace.open(tmp_path / "ws")) == 2
    (reject,) = [json.loads(x) for x in (tmp_path / "ws" / "rejects.jsonl").read_text().splitlines()]
    assert reject["location"] == "line 2" and "nested" in reject["reason"]


def test_nesting_arrow_cannot_store_is_kept_as_json_text(tmp_path):
    """Nesting Python parses but datasets cannot store (~50 levels) stays data: the column becomes JSON text."""
    nested = json.loads("[" * 200 + "]" * 200)
    path = write_jsonl(tmp_path / "n.jsonl", [GOOD, {**GOOD, "instruction": "Nested.", "meta": nested}])
    ws = Workspace(tmp_path / "ws")
    summary = ws.load(path)
    assert summary["rows_added"] == 2 and summary["columns_kept_as_json"] == ["meta"]
    assert json.loads(ws.pool["meta"][1]) == nested


def test_deep_nesting_in_a_json_array_names_the_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[\n" + json.dumps(GOOD) + ",\n" + BAD_LINES["deep"][0] + "\n]\n")
    with pytest.raises(InputError, match=r"deep\.json: line 3: .*nested"):
        pools.read(path)


def test_huge_int_in_a_json_array_names_the_line(tmp_path):
    path = tmp_path / "big.json"
    path.write_text("[\n" + json.dumps(GOOD) + ",\n" + BAD_LINES["huge_int"][0] + "\n]\n")
    with pytest.raises(InputError, match=r"big\.json: line 3: .*digits"):
        pools.read(path)


def test_lone_surrogate_in_a_json_array_is_rejected_and_the_reject_is_writable(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("[" + json.dumps(GOOD) + ", " + BAD_LINES["surrogate"][0] + "]")
    result = pools.read(path, on_error="skip")
    assert len(result.rows) == 1
    (reject,) = result.rejects
    assert reject.location == "record 2" and "'instruction'" in reject.reason and "\\ud800" in reject.raw
    pools.write_rejects(result.rejects, tmp_path / "rejects.jsonl")
    assert json.loads((tmp_path / "rejects.jsonl").read_text())["location"] == "record 2"


def test_big_int_in_an_original_column_loads_as_text(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", [{**GOOD, "n": 1}, '{"instruction": "x", "output": "y", "n": ' + BIG_INT + "}"])
    ds = curate.load(path)
    assert ds["n"] == ["1", BIG_INT]  # kept exactly, as JSON text
    ws = Workspace(tmp_path / "ws")
    assert ws.load(path)["columns_kept_as_json"] == ["n"] and ws.pool["n"] == ["1", BIG_INT]


def test_an_in_memory_pool_with_a_lone_surrogate_or_a_number_for_a_field_name_is_refused_by_row(tmp_path):
    """In memory these crashed in the id hash (UnicodeEncodeError) or in Arrow (a DataFrame read with header=None has
    0, 1, ... for field names), and a mapping given as text failed on .items()."""
    import pandas as pd

    from curate.errors import OptionError

    records = [{"instruction": "x\ud800", "output": "a"}, GOOD]
    with pytest.raises(InputError, match=r"<list of 2 records, .*>: row 1: field 'instruction' holds a lone surrogate"):
        curate.load(records)
    got = pools.read(records, on_error="skip")
    assert len(got.rows) == 1 and [r.location for r in got.rejects] == ["row 1"]
    with pytest.raises(InputError, match=r"row 1: field name 0 \(int\) is not text: name the columns"):
        curate.load(pd.DataFrame({"instruction": ["q"], "output": ["a"], 0: ["x"]}))
    with pytest.raises(OptionError, match="mapping 'instruction=query': a dict"):
        curate.load([GOOD], mapping="instruction=query")
    from types import MappingProxyType  # a read-only mapping is a mapping

    mapped = pools.read([{"query": "q", "reply": "r"}], mapping=MappingProxyType({"instruction": "query", "output": "reply"}))
    assert len(mapped.rows) == 1
    import datetime  # a value JSON cannot write beside the surrogate, and a field name that is a tuple

    dated = [{"when": datetime.datetime(2024, 1, 1), "instruction": "x\ud800", "output": "a"}, GOOD]
    assert [r.location for r in pools.read(dated, on_error="skip").rejects] == ["row 1"]
    with pytest.raises(InputError, match=r"row 1: field name \('a', 'b'\) \(tuple\) is not text"):
        pools.read([{**GOOD, ("a", "b"): 1}])
    path = write_jsonl(tmp_path / "nul.jsonl", [GOOD, {**GOOD, "output": "2", "k\x00": 1}])
    with pytest.warns(UserWarning, match="1 record"):
        assert len(curate.load(path, on_error="skip")) == 1  # the whole load failed in Arrow, naming no line
    with pytest.raises(InputError, match=r"line 2: field name 'k\\x00' contains a NUL byte"):
        curate.load(path)


def test_utf8_bom_is_accepted_in_jsonl_and_json(tmp_path):
    jsonl, arr = tmp_path / "bom.jsonl", tmp_path / "bom.json"
    jsonl.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n"  # the second line's BOM: `cat a.jsonl b.jsonl`
                      + b"\xef\xbb\xbf" + json.dumps({**GOOD, "output": "2"}).encode())
    arr.write_bytes(b"\xef\xbb\xbf" + json.dumps([GOOD, {**GOOD, "output": "2"}]).encode())
    for path in (jsonl, arr):
        ds = curate.load(path)
        assert len(ds) == 2 and ds[0]["conversation"][0]["content"] == GOOD["instruction"], path


def test_a_json_file_of_one_record_or_of_json_lines_with_a_bad_first_line(tmp_path):
    """One record with a list field (a one-row export) was read as a wrapper of that list; JSON Lines in a .json
    file whose first line is bad stopped the load whatever --on-error said."""
    one = tmp_path / "one.json"
    one.write_text(json.dumps({**GOOD, "tags": ["a", "b"]}))
    assert [r["conversation"][0]["content"] for r in pools.read(one).rows] == [GOOD["instruction"]]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [GOOD, GOOD]}))
    assert len(pools.read(wrapped).rows) == 2
    lines = tmp_path / "lines.json"
    lines.write_text("{broken\n" + json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "output": "2"}) + "\n")
    got = pools.read(lines, on_error="skip")
    assert len(got.rows) == 2 and [r.location for r in got.rejects] == ["line 1"]
    with pytest.raises(InputError, match="lines.json: line 1: malformed JSON"):
        pools.read(lines)
    cut = tmp_path / "cut.jsonl"  # a record cut off after its comma: the column where it ends, not column 1
    cut.write_text(json.dumps(GOOD) + '\n{"instruction": "abc",\r\n')
    with pytest.raises(InputError, match=r"cut.jsonl: line 2: malformed JSON: Expecting property name .*\(column 23\)"):
        pools.read(cut)


def test_a_json_array_or_wrapper_with_a_typo_names_its_line_and_is_not_read_as_json_lines(tmp_path):
    """A .json array followed by a comment, or a wrapper missing a comma, was read as JSON Lines: the error named line
    1, and --on-error skip loaded one record and rejected the others as "Extra data"."""
    records = [json.dumps({**GOOD, "output": str(i)}) for i in range(3)]
    cases = {"array.json": ("[\n" + ",\n".join(records) + "\n]\n// exported by tool X\n", "line 6: malformed JSON: Extra"),
             "wrapper.json": ('{"data": [\n' + records[0] + ",\n" + records[1] + "\n" + records[2] + "\n]}\n",
                              "line 4: malformed JSON: Expecting ','"),
             "then.json": ("[" + records[0] + "]\n" + records[1] + "\n", "line 2: malformed JSON: Extra")}
    for name, (text, error) in cases.items():
        (tmp_path / name).write_text(text)
        for on_error in ("raise", "skip"):
            with pytest.raises(InputError, match=f"{name}: {error}"):
                pools.read(tmp_path / name, on_error=on_error)
    # JSON holds U+2028 raw in strings; str.splitlines broke the first record there and refused the file
    lines = tmp_path / "lines.json"
    lines.write_text(json.dumps({**GOOD, "instruction": "Say hi\u2028there"}, ensure_ascii=False) + "\n"
                     + json.dumps(GOOD) + "\n", encoding="utf-8")
    assert len(pools.read(lines).rows) == 2


@pytest.mark.parametrize("content", ["", "\n   \n\n"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=r"empty\.jsonl: .*no records"):
        pools.read(path, on_error="skip")
    proc = _cli("load", str(path), "--workspace", str(tmp_path / "ws"), cwd=tmp_path)
    assert proc.returncode == 65 and "no records" in proc.stderr and "Traceback" not in proc.stderr


def test_alternation_rules_leave_legal_conversations_alone():
    ok = [{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
          {"role": "assistant", "content": "calling"}, {"role": "tool", "content": "42"},
          {"role": "assistant", "content": "It is 42."}, {"role": "user", "content": "thanks"}]
    assert [t["role"] for t in pools.to_conversation({"messages": ok}, "messages")] == [t["role"] for t in ok]
    with pytest.raises(pools._RowError, match="turn 2"):  # a system turn between two user turns does not help
        pools.to_conversation({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"},
                                            {"role": "user", "content": "b"}]}, "messages")


def test_instruction_only_rows_load_with_no_assistant_turn(tmp_path):
    records = [{"instruction": "Write a haiku about rain."}, {"prompt": "Name three primes."},
               {"question": "Why is the sky blue?"}, GOOD]
    path = write_jsonl(tmp_path / "io.jsonl", records)
    result = pools.read(path)
    assert len(result.rows) == 4 and result.instruction_only == 3 and result.empty_responses == 0
    assert result.rows[0]["conversation"] == [{"role": "user", "content": "Write a haiku about rain."}]
    assert [(t.instruction, t.response) for t in turns(result.rows[1]["conversation"])] == [("Name three primes.", None)]
    assert row_text(result.rows[2]["conversation"], "response") == ""
    assert len(curate.load(path)) == 4
    with pytest.raises(InputError, match="line 1: missing field 'reply'"):  # an explicit mapping is still checked
        pools.read(path, format="alpaca", mapping={"output": "reply"})


@pytest.mark.parametrize(("record", "mapped"), [({"prompt": "Explain tides.", "output": "The moon."}, "completion"),
                                                ({"query": "Explain tides.", "reply": "The moon."}, "answer"),
                                                ({"instruction": "Explain tides.", "completion": "The moon."}, "output")])
def test_a_reply_in_a_field_the_shape_does_not_read_is_named_not_dropped(tmp_path, record, mapped):
    """{"prompt", "output"} was read as prompt_completion with no reply: every row instruction-only, in silence (and
    curate run advised --sort-by complexity); the reply field is named with the mapping that reads it."""
    path = write_jsonl(tmp_path / "p.jsonl", [record])
    field = next(k for k in record if k not in ("prompt", "query", "instruction"))
    with pytest.raises(InputError, match=rf"line 1: .* no .* reply, but a field '{field}' .* --mapping "
                                         rf"'{{\"{mapped}\": \"{field}\"}}'"):
        pools.read(path)
    rows = pools.read(path, mapping={mapped: field}).rows
    assert [(t.instruction, t.response) for t in turns(rows[0]["conversation"])] == [("Explain tides.", "The moon.")]
    with pytest.raises(InputError, match="line 1: system must be a string, got bool"):  # was read as no system prompt
        pools.read(write_jsonl(tmp_path / "s.jsonl", [{"instruction": "Explain tides.", "system": False}]))


def test_instruction_only_rows_score_complexity_and_fail_quality_with_a_reason(tmp_path):
    path = write_jsonl(tmp_path / "io.jsonl", [{"instruction": "Write a haiku about rain."}, GOOD])
    ws = Workspace(tmp_path / "ws")
    ws.load(path)
    order = [c[0]["content"] for c in ws.conversations()]
    only = order.index("Write a haiku about rain.")
    ws.apply(load_default("complexity"), progress=False)
    assert ws.failures("complexity") == [[], []] and all(v is not None for v in ws.row_values("complexity"))
    with pytest.warns(CurateWarning, match=r"quality: 1 of the 2 rows computed now failed"):
        ws.apply(load_default("quality"), progress=False)
    (failure,) = ws.failures("quality")[only]
    assert failure.code == FailureCode.NO_RESPONSE and ws.row_values("quality")[only] is None
    with FaultServer() as srv:
        from curate.llm.backends import OpenAIBackend

        backend = OpenAIBackend(srv.base_url, "fault", api_key="test-key", timeout=5.0, max_retries=1)
        with pytest.warns(CurateWarning, match=r"quality: 1 of the 2 rows computed now failed"):
            ws.apply(Judge("quality", backend), progress=False)  # another fingerprint: every row is judged again
        ws.apply(Judge("complexity", backend), progress=False)
    (failure,) = ws.failures("quality")[only]
    assert failure.code == FailureCode.NO_RESPONSE and ws.column_provenance("quality")["kind"] != "scorer"
    assert ws.failures("complexity") == [[], []]


def test_malformed_line_reject_keeps_the_raw_line_truncated(tmp_path):
    broken = '{"instruction": "broken", "output": ' + '"' + "x" * 5_000
    path = write_jsonl(tmp_path / "m.jsonl", [GOOD, broken, '{"instruction": "cut", "output": '])
    result = pools.read(path, on_error="skip")
    assert [r.location for r in result.rejects] == ["line 2", "line 3"]
    assert result.rejects[0].raw == broken[: pools.REJECT_RAW_MAX_CHARS]
    assert result.rejects[1].raw == '{"instruction": "cut", "output": '


def test_invalid_utf8_reject_keeps_the_raw_bytes_visible(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"instruction": "\xff", "output": "b"}\n')
    (reject,) = pools.read(path, on_error="skip").rejects
    assert reject.location == "line 2" and reject.raw == '{"instruction": "\\xff", "output": "b"}'


def test_objects_with_other_keys_export_as_they_came_in_one_load_and_across_loads(tmp_path):
    """Arrow types dicts as one struct of every key: a chat message without "name" came back with "name": null."""
    chats = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo", "name": "bot"}],
              "meta": {"a": [1, 2]}},
             {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], "meta": {"b": "z"}}]
    later = [{"instruction": "Task.", "output": "Done.", "meta": {"c": 1.5}}]
    ws = Workspace(tmp_path / "ws")
    first = ws.load(write_jsonl(tmp_path / "chats.jsonl", chats))
    assert first["columns_kept_as_json"] == ["messages", "meta"]
    ws.load(write_jsonl(tmp_path / "later.jsonl", later))
    out = ws.export(tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["messages"] for r in rows[:2]] == [c["messages"] for c in chats]
    assert [r["meta"] for r in rows] == [c["meta"] for c in chats + later]
    two = Workspace(tmp_path / "two")  # each load even, the two uneven: the pool's rows become JSON text too
    two.load(write_jsonl(tmp_path / "a.jsonl", [{"instruction": "x", "output": "y", "meta": {"a": 1}}]))
    assert two.load(write_jsonl(tmp_path / "b.jsonl", later))["columns_kept_as_json"] == ["meta"]
    rows = [json.loads(line) for line in two.export(tmp_path / "two.jsonl").read_text().splitlines()]
    assert [r["meta"] for r in rows] == [{"a": 1}, {"c": 1.5}]
    # no object at all is no other key: a later load of nulls, or a first part of empty lists, leaves a field typed
    typed = Workspace(tmp_path / "typed")
    typed.load(write_jsonl(tmp_path / "t1.jsonl", [{"instruction": "x", "output": "y", "meta": {"a": 1}}]))
    assert typed.load(write_jsonl(tmp_path / "t2.jsonl", [{"instruction": "z", "output": "y", "meta": None}])
                      )["columns_kept_as_json"] == []
    assert typed.pool.features["meta"] == {"a": datasets.Value("int64")}
    staged = pools.stage(write_jsonl(tmp_path / "refs.jsonl", [{"instruction": f"t {i}", "output": "ok", "refs": []}
                                                                for i in range(2)] + [
        {"instruction": "t 9", "output": "ok", "refs": [{"url": "u", "k": 1}]}]), tmp_path / "stage", part_rows=2)
    assert staged.columns_kept_as_json == []
