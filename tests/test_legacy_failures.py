"""Failure columns written by the first curate (2026-11: one text cell per failed row, no reason code) read as data.

The cells and provenance below are written the way that curate wrote them (commit 1580ef3: ``curate/judges.py``
``score_workspace``, ``curate/tags.py`` ``tag_workspace``, ``curate/scorers.py`` ``score_workspace``); today's
``curate info``, ``report`` and ``select`` died on them with "TypeError: string indices must be integers", and a
re-run of the same judge or tagger was refused as "another step's values". The re-runs talk to the project's fault
server on loopback (tests/fault_server.py). Its selections (each reason in words, no detail column) read as
``legacy_reason`` rows, their words kept.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.codes import FailureCode
from curate.errors import CurateWarning
from curate.llm.backends import OpenAIBackend
from curate.session import Workspace
from curate.tags.tagger import Tagger
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer

JUDGE_TEXT = "no logprobs and no digit at the start of the output 'banana'"
TAG_TEXT = ("turn 1: HTTP 400: Error code: 400 - {'error': {'message': 'bad request', 'type': "
            "'invalid_request_error'}}; raw output: {\"failure\": \"HTTP 400\"}")
SCORER_TEXT = "row has no user turn"


def _first_curate_workspace(tmp_path) -> Workspace:
    """Four rows; the second failed at the judge and the tagger ([always400]) and the scorer."""
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", [
        {"instruction": "Explain photosynthesis simply", "input": "", "output": "Plants turn light into sugar."},
        {"instruction": "Describe rain [always400]", "input": "", "output": "Water falls."},
        {"instruction": "Name three colors", "input": "", "output": "Red, green, blue."},
        {"instruction": "Write a haiku about snow", "input": "", "output": "White hush on the hills."},
    ]))
    fp = "0377f21e35e82641"
    ws.add_column("alpagasus", [3.5, None, 4.0, 2.5], {"kind": "judge", "judge": "alpagasus", "prompt": "alpagasus",
                                                       "prompt_fingerprint": fp, "backend": "openai", "model": "fault",
                                                       "rows": 4, "requests": 4, "cost_usd": 0.0})
    ws.add_column("alpagasus_failure", [None, JUDGE_TEXT, None, None],
                  {"kind": "judge_failure", "judge": "alpagasus", "prompt_fingerprint": fp})
    ws.add_column("alpagasus_digit_mass", [0.8, None, 0.7, 0.9],
                  {"kind": "judge_digit_mass", "judge": "alpagasus", "prompt_fingerprint": fp})
    tag_prov = {"kind": "instag_tags", "prompt": "instag", "prompt_version": 1, "prompt_fingerprint": "c201e4c522174ba6",
                "model": "fault", "turns": 4, "failed_rows": 1, "cost_usd": 0.0}
    ws.add_column("tags_raw", [["explain", "photosynthesis"], None, ["name", "three"], ["write", "a"]], tag_prov)
    ws.add_column("tags_raw_failure", [None, TAG_TEXT, None, None], {**tag_prov, "kind": "instag_failures"})
    ws.add_column("quality", [4.0, None, 3.0, 1.0], {"kind": "scorer", "scorer": "quality"})
    ws.add_column("quality_failure", [None, SCORER_TEXT, None, None], {"kind": "scorer", "failures_of": "quality"})
    return ws


def cli(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.mark.parametrize(("column", "text"), [("alpagasus", JUDGE_TEXT), ("tags_raw", TAG_TEXT),
                                              ("quality", SCORER_TEXT)])
def test_each_old_failure_cell_reads_as_a_legacy_failure_keeping_its_text(tmp_path, column, text):
    ws = _first_curate_workspace(tmp_path)
    fails = ws.failures(column)
    assert [len(f) for f in fails] == [0, 1, 0, 0]
    [failure] = fails[1]
    assert failure.code is FailureCode.LEGACY_FAILURE and text in failure.message
    assert "before reason codes" in failure.message


def test_info_report_and_select_read_a_workspace_holding_old_failures(tmp_path):
    ws = _first_curate_workspace(tmp_path)
    info = cli("info", ws.path)
    assert "alpagasus_failure" in info and "tags_raw_failure" in info
    cli("report", ws.path, "--out", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "legacy_failure" in page and "no digit at the start of the output" in page
    cli("select", ws.path, "--method", "threshold", "--sort-by", "alpagasus", "--min-score", "2", "--name", "t")
    [row] = ws.selection("t").rows(decision="unscored")
    assert row["id"] == ws.ids[1] and row["detail"]["failure"] == "legacy_failure"


@pytest.fixture
def fault_server():
    srv = FaultServer().start()
    yield srv
    srv.stop()


def test_the_same_judge_run_again_takes_its_old_failure_column_back_in_todays_form(tmp_path, fault_server):
    ws = _first_curate_workspace(tmp_path)
    with pytest.warns(CurateWarning, match=r"alpagasus: 1 of the 4 rows computed now failed"):
        out = CliRunner().invoke(app, ["score", str(ws.path), "--judge", "alpagasus", "--base-url", fault_server.base_url,
                                       "--model", "fault", "--api-key-env", "HOME"])
    assert out.exit_code in (0, 1) and isinstance(out.exception, SystemExit | None), (out.output, out.exception)
    assert "another step" not in out.output
    # the old column's rows have no fingerprint: computed again (their answers from the cache), and said so
    assert "4 of the rows computed again: stored under other settings or by an earlier curate" in " ".join(
        out.output.split())
    prov = ws.column_provenance("alpagasus_failure")
    assert (prov["kind"], prov["of"]) == ("failure", "alpagasus")
    fails = ws.failures("alpagasus")
    assert [len(f) for f in fails] == [0, 1, 0, 0] and fails[1][0].code is FailureCode.HTTP_ERROR
    assert [v is not None for v in ws.row_values("alpagasus")] == [True, False, True, True]


def test_the_tagger_run_again_takes_its_old_failure_column_back_in_todays_form(tmp_path, fault_server):
    ws = _first_curate_workspace(tmp_path)
    backend = OpenAIBackend(fault_server.base_url, "fault", api_key="k", timeout=5.0, max_retries=1, backoff_base=0.01)
    with pytest.warns(CurateWarning, match=r"tags_raw: 1 of the 4 rows computed now failed"):
        result = ws.apply(Tagger(backend), progress=False)
    assert result.failed == 1
    prov = ws.column_provenance("tags_raw_failure")
    assert (prov["kind"], prov["of"]) == ("failure", "tags_raw")
    assert ws.failures("tags_raw")[1][0].code is FailureCode.HTTP_ERROR
    assert ws.column("tags_raw")[0] == [["explain", "photosynthesis"]]  # today's shape: one tag list per turn


class _Words:
    """A row step: the instruction's word count; its fingerprint is ``version``."""
    column, granularity, reducer, inputs = "words", "row", None, ()

    def __init__(self, version: str):
        self.version = version

    def fingerprint(self) -> str:
        return self.version

    def describe(self) -> dict:
        return {"kind": "test"}

    def run(self, rows, ctx):
        from curate.storage.step import StepOutput

        return StepOutput([float(len(row.turns[0].instruction.split())) for row in rows], [[] for _ in rows])


def test_a_rerun_under_other_settings_says_why_it_computed_rows_again(tmp_path):
    """A befc29a judge column run again said "computed 200, reused 0" with every answer from the cache: its
    fingerprint lacks today's digit rule (the scores are parsed again, rightly), but the line did not say why."""
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"row {i}", "output": "ok"} for i in range(3)]))
    assert ws.apply(_Words("v1"), progress=False).redone == 0
    again = ws.apply(_Words("v2"), ws.ids, progress=False)
    assert (again.computed, again.redone) == (3, 3)
    assert "reused 0 (3 of the rows computed again: stored under other settings" in again.counts_text()
    from curate.cli.run import (
        _done,  # curate run's line said "(3 now, 0 reused)", no word of why (upgrade audit)
    )

    assert _done(again, "scored") == ("3 of 3 rows scored (3 now, 0 reused; 3 of the rows computed again: stored "
                                      "under other settings or by an earlier curate)")
    assert ws.apply(_Words("v2"), progress=False).redone == 0


class _Unkinded(_Words):
    """``_Words`` whose provenance names no kind (a user's own step)."""

    def describe(self) -> dict:
        return {"step": "words"}


def test_a_step_taking_over_a_column_with_no_kind_in_its_provenance_names_what_wrote_it(tmp_path):
    """A step replacing a column whose provenance names no kind (human labels added with ``ws.add_column``, or a
    user's step whose ``describe()`` names none) said "words: the loaded's column (?) is replaced by the test's
    values": it was never loaded, and "?" names nothing."""
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"row {i}", "output": "ok"} for i in range(3)]))
    ws.add_column("words", [1.0, 2.0, 3.0], {"source": "human labels"})
    taken = ws.apply(_Words("v1"), progress=False)
    assert taken.took_over["source"] == "human labels"
    said = "words: the column added with ws.add_column is replaced by the test's values"
    assert taken.takeover_text() == said and said in taken.summary()
    ws.apply(_Unkinded("v1"), force=True, progress=False)
    again = ws.apply(_Words("v2"), progress=False)
    assert again.takeover_text() == "words: the column written by a step naming no kind is replaced by the test's values"


class _CountingWorkspace(Workspace):
    """A workspace that counts the reads of a column's stored fingerprints (each one reads the whole column file)."""

    reads = 0

    def column_fingerprints(self, name):
        type(self).reads += 1
        return super().column_fingerprints(name)


@pytest.mark.parametrize("force", [False, True])
def test_an_apply_reads_the_columns_fingerprints_once_and_still_counts_the_rows_redone(tmp_path, force):
    """``apply`` read the column's fingerprints three times on a run under other settings: to find the rows to do,
    to count those computed again (``redone``), and to check the rows outside those asked for."""
    ws = _CountingWorkspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"row {i}", "output": "ok"} for i in range(3)]))
    ws.apply(_Words("v1"), progress=False)
    _CountingWorkspace.reads = 0
    again = ws.apply(_Words("v2"), ws.ids, force=force, progress=False)
    assert (again.computed, again.redone, _CountingWorkspace.reads) == (3, 3, 1)
    _CountingWorkspace.reads = 0
    same = ws.apply(_Words("v2"), ws.ids, force=force, progress=False)
    assert (same.computed, same.redone, _CountingWorkspace.reads) == (3 if force else 0, 0, 1)


def test_a_selection_of_the_first_curate_reads_with_its_reasons_in_words(tmp_path):
    """That curate stored a selection's reasons as words, without a detail column (old21 ``add_selection``); the
    report, reached once the failures read, died with "KeyError: 'detail'"."""
    import json

    import pyarrow as pa

    from curate.codes import Reason
    from curate.storage.files import write_arrow

    ws = _first_curate_workspace(tmp_path)
    words = ["score 11.11; admitted #1: max similarity to earlier admitted rows <= 0.9",
             "score 9.2; too close to row 0 at similarity 0.9065", None, "score 7.7; not reached: budget filled"]
    prov = {"name": "deita2", "created": "2026-11-21T10:00:00+00:00", "method": "deita", "params": {"budget": 2},
            "candidates": 4, "counts": {"kept": 2, "rejected": 1, "not_reached": 1}}
    table = pa.table({"id": pa.array(ws.ids, pa.string()), "decision": ["kept", "rejected", "kept", "not_reached"],
                      "reason": pa.array(words, pa.string()), "rank": pa.array(range(4), pa.int64())})
    write_arrow(ws.path / "selections" / "deita2.arrow",
                table.replace_schema_metadata({b"curate": json.dumps(prov).encode()}))
    rows = ws.selection("deita2").rows()
    assert [r["reason"] for r in rows] == [Reason.LEGACY_REASON] * 4
    assert [r["why"] for r in rows][:2] == words[:2] and ws.selection("deita2").ids == [ws.ids[0], ws.ids[2]]
    cli("report", ws.path, "--out", tmp_path / "r.html")
    assert "too close to row 0 at similarity 0.9065" in (tmp_path / "r.html").read_text()
    cli("select", ws.path, "--method", "random", "--budget", "1", "--from", "deita2", "--name", "one")
    assert len(ws.selection("one").ids) == 1


def test_a_failure_detail_cut_for_a_summary_says_it_was_cut():
    """A result's summary cut a long detail at 160 characters mid-sentence ("...2300 input tokens, );"), read as the
    whole message: the cut now ends in an ellipsis; a short one is whole."""
    from curate.codes import Failure, FailureCode
    from curate.storage.failures import failure_reasons

    long = Failure(FailureCode.CONTEXT_TOO_LONG, "the server says: " + "your prompt contains 2300 input tokens, " * 8)
    short = Failure(FailureCode.TRANSIENT, "timed out")
    reasons = failure_reasons([[long], [short], [long]])
    (n, detail), (m, whole) = reasons[FailureCode.CONTEXT_TOO_LONG], reasons[FailureCode.TRANSIENT]
    assert n == 2 and len(detail) == 160 and detail.endswith("…")  # was 160 characters ending mid-word
    assert m == 1 and whole == str(short)


def test_an_empty_reply_stored_as_no_logprobs_reads_as_empty_output(tmp_path):
    """A digit judge's empty reply (no text, no logprobs) was stored as no_logprobs before 2026-12-07, as if a proxy
    had dropped the logprobs of a digit it sent; those rows kept that code (DIGIT_RULE was not bumped), so info, the
    report and select counted them under no_logprobs. They read as empty_output now, with the raw output and the
    stored words; a no_logprobs reply that has text stays one."""
    from curate.storage.failures import failure_arrow_type, failure_reasons

    ws = _first_curate_workspace(tmp_path)
    stored = "logprobs were requested and the reply has none (a proxy that drops them?); no score parsed from the text"
    cells = [None, [{"code": "no_logprobs", "message": f"{stored} (output '')", "raw": "", "turn": 1}],
             [{"code": "no_logprobs", "message": f"{stored} (output '4')", "raw": "4", "turn": 1}], None]
    ws.add_column("deita_failure", cells, {"kind": "failure", "of": "deita"}, value_type=failure_arrow_type())
    failures = ws.failures("deita")
    (empty,), (dropped,) = failures[1], failures[2]
    assert empty.code is FailureCode.EMPTY_OUTPUT and empty.raw == "" and empty.turn == 1
    assert empty.message.startswith("the reply has no text and no logprobs (raw output ''; stored as no_logprobs by "
                                    "a curate before 2026-12-07: logprobs were requested"), empty.message
    assert dropped.code is FailureCode.NO_LOGPROBS and dropped.raw == "4"
    assert set(failure_reasons(failures)) == {"empty_output", "no_logprobs"}


def test_a_digit_judges_empty_reply_says_how_it_ended():
    """The failure said only 'the reply has no text and no logprobs': the reply's finish_reason tells a model that
    stopped at once from one cut at max_tokens."""
    from curate.llm.digits import digit_score

    _, _, failure = digit_score({"text": " ", "top_logprobs": None, "finish_reason": "length"}, (1, 6),
                                logprobs_requested=True)
    assert failure.code is FailureCode.EMPTY_OUTPUT and failure.raw == " "
    assert failure.message == "the reply has no text and no logprobs (raw output ' ', finish_reason 'length')"


def test_a_multi_line_failure_detail_reads_as_one_line_in_a_summary():
    """A pydantic ValidationError's detail ("...1 validation error for IntentTags\\n  Invalid JSON: ...") broke
    `curate tag`'s failure line and ws.apply's warning over several lines: the summary's example is one line now;
    the failure column keeps the detail whole."""
    from curate.codes import Failure, FailureCode
    from curate.storage.failures import failure_reasons

    multi = Failure(FailureCode.INVALID_OUTPUT, "output failed validation after 3 attempt(s): ValidationError: 1 "
                    "validation error for IntentTags\n  Invalid JSON: expected ident at line 1 column 2\n    "
                    "[type=json_invalid]")
    (_, detail), = failure_reasons([[multi]]).values()
    assert "\n" not in detail and "IntentTags Invalid JSON: expected ident" in detail
