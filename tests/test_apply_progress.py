"""``ws.apply``'s row bar (a real tqdm bar, read from stderr) for the steps that send LLM requests, against the fault
server on loopback: judges and the tagger show ``failed=`` (rows, as the summary line counts them), ``cached=`` and
``paid_by_stopped_run=`` (requests, as the run record counts them); the bar said nothing of either until the summary."""

from __future__ import annotations

import os
import re

import pytest

from curate.codes import Failure, FailureCode
from curate.errors import CurateWarning
from curate.llm.judges import Judge
from curate.session import Workspace
from curate.storage.progress import progress_bar
from curate.storage.step import StepContext, StepOutput
from curate.tags import Tagger
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl
from tests.test_llm_progress import _backend

ROWS = ["plain one", "[always500] broken", "[badtext] fruit", "plain two"]  # two rows end failed


def _workspace(tmp_path, instructions, name="ws") -> Workspace:
    ws = Workspace(tmp_path / name)
    ws.load(write_jsonl(tmp_path / f"{name}.jsonl", [{"instruction": t, "output": "ok"} for t in instructions]))
    return ws


def _last_postfix(err: str, desc: str) -> dict[str, str]:
    """The counts the bar ``desc`` showed last (its final postfix, written when it closed); {} if it showed none."""
    lines = [part for part in re.split(r"[\r\n]", err) if part.startswith(f"{desc}:")]
    assert lines, err[-2000:]
    return dict(re.findall(r"(\w+)=([^,\]\s]+)", lines[-1]))


def _record(result) -> dict:
    return result.provenance["runs"][-1]


def test_a_judges_row_bar_counts_failed_rows_and_cached_requests_as_its_summary_does(tmp_path, fault_server, capsys):
    ws = _workspace(tmp_path, ROWS)
    capsys.readouterr()
    with pytest.warns(CurateWarning, match=r"complexity: 2 of the 4 rows computed now failed"):
        first = ws.apply(Judge("complexity", _backend(fault_server)), progress=True)
    shown = _last_postfix(capsys.readouterr().err, "complexity")
    assert (first.failed_now, _record(first)["cached_requests"]) == (2, 0)
    assert (shown["failed"], shown["cached"]) == ("2", "0") and "paid_by_stopped_run" not in shown

    with pytest.warns(CurateWarning, match=r"complexity: 2 of the 4 rows computed now failed"):
        again = ws.apply(Judge("complexity", _backend(fault_server)), progress=True, force=True)
    shown = _last_postfix(capsys.readouterr().err, "complexity")
    cached = _record(again)["cached_requests"]
    assert cached == 3  # the 500 is no answer: sent again, failed again; the unparsable reply is the cache's
    assert (shown["failed"], shown["cached"]) == (str(again.failed_now), str(cached)) == ("2", "3")
    # the result says the cached requests the bar showed (it said "reused 0" only: the rows, not the requests)
    assert "3 answered by the on-disk cache" in again.summary() and "3 answered by the on-disk cache" in \
        again._repr_html_(), again.summary()


def test_a_judges_row_bar_counts_what_a_stopped_run_paid_for(tmp_path, fault_server, capsys):
    """A run killed after its answers were cached and before its column was stored: the next run's bar counts them
    paid_by_stopped_run=, as its record does, and not cached=."""
    ws = _workspace(tmp_path, ROWS)
    judge = Judge("complexity", _backend(fault_server))
    judge.run(ws.row_inputs(ws.ids, judge.inputs), StepContext(progress_bar(len(ws), "killed", False), ws.cache_dir, ws.path))  # never stored
    sent = fault_server.total
    capsys.readouterr()
    with pytest.warns(CurateWarning, match=r"complexity: 2 of the 4 rows computed now failed"):
        resumed = ws.apply(judge, progress=True)
    shown = _last_postfix(capsys.readouterr().err, "complexity")
    record = _record(resumed)
    assert fault_server.total > sent  # only the [always500] row is sent again
    assert (record["requests_paid_by_stopped_run"], record["cached_requests"], resumed.failed_now) == (3, 0, 2)
    assert (shown["failed"], shown["cached"], shown["paid_by_stopped_run"]) == ("2", "0", "3")
    # and so does the result, in the words of `curate judge` (it said "computed 2, reused 0" only)
    said = "3 answered by the on-disk cache, 0 repeat"  # not "3 new": this run sent them not
    assert said in resumed.summary(), resumed.summary()
    said = "of those the on-disk cache answered, 3 a stopped run paid for and never recorded"
    assert said in resumed.summary() and said in resumed._repr_html_() and said in repr(resumed), resumed.summary()


def test_a_row_failed_in_one_turn_and_before_any_request_counts_once(tmp_path, fault_server, capsys):
    """Rows, not turns: a row with two failed turns is one failed row; a turn without a reply fails before any
    request and is counted too."""
    ws = Workspace(tmp_path / "ws")
    two_bad = {"conversations": [{"from": "human", "value": "[always500] a"}, {"from": "gpt", "value": "x"},
                                 {"from": "human", "value": "[badtext] b"}, {"from": "gpt", "value": "y"}]}
    no_reply = {"conversations": [{"from": "human", "value": "plain c"}, {"from": "gpt", "value": "z"},
                                  {"from": "human", "value": "plain d"}, {"from": "gpt", "value": " "}]}
    ws.load(write_jsonl(tmp_path / "p.jsonl", [two_bad, no_reply, {"instruction": "plain e", "output": "ok"}]))
    capsys.readouterr()
    with pytest.warns(CurateWarning, match=r"quality: 2 of the 3 rows computed now failed"):
        result = ws.apply(Judge("quality", _backend(fault_server)), progress=True)
    shown = _last_postfix(capsys.readouterr().err, "quality")
    assert result.failed_now == 2 and shown["failed"] == "2"


def test_the_taggers_row_bar_counts_failed_rows_and_cached_requests(tmp_path, fault_server, capsys):
    ws = _workspace(tmp_path, ["Sort a list.", "[always500] Reverse it.", "Name a prime."])
    capsys.readouterr()
    with pytest.warns(CurateWarning, match=r"tags_raw: 1 of the 3 rows computed now failed"):
        first = ws.apply(Tagger(_backend(fault_server)), progress=True)
    shown = _last_postfix(capsys.readouterr().err, "tags_raw")
    assert first.failed_now == 1 and (shown["failed"], shown["cached"]) == ("1", "0")
    with pytest.warns(CurateWarning, match=r"tags_raw: 1 of the 3 rows computed now failed"):
        again = ws.apply(Tagger(_backend(fault_server)), progress=True, force=True)
    shown = _last_postfix(capsys.readouterr().err, "tags_raw")
    assert (again.failed_now, _record(again)["cached_requests"]) == (1, 2)
    assert (shown["failed"], shown["cached"]) == ("1", "2")


class Lengths:
    """A step that sends no request: the characters of each row's first instruction (one row fails)."""

    column, granularity, reducer, inputs = "lengths", "row", None, ()

    def fingerprint(self) -> str:
        return "lengths-1"

    def describe(self) -> dict:
        return {"kind": "test_lengths"}

    def run(self, rows, ctx: StepContext) -> StepOutput:
        ctx.progress.update(len(rows))
        values = [None if "broken" in row.turns[0].instruction else len(row.turns[0].instruction) for row in rows]
        return StepOutput(values, [[] if v is not None else [Failure(FailureCode.EMPTY_INPUT, "broken")]
                                   for v in values])


def test_a_step_that_sends_no_request_keeps_its_bar_without_counts(tmp_path, capsys):
    ws = _workspace(tmp_path, ["plain one", "[always500] broken"])
    capsys.readouterr()
    with pytest.warns(CurateWarning, match=r"lengths: 1 of the 2 rows computed now failed"):
        result = ws.apply(Lengths(), progress=True)
    err = capsys.readouterr().err
    assert result.failed_now == 1 and "lengths:" in err and "failed=" not in err and "cached=" not in err


def test_curate_score_bar_ends_with_the_counts_its_summary_line_says(tmp_path, fault_server):
    ws = tmp_path / "ws"
    rows = ["plain one", "[badtext] fruit", "[lowmass] unsure", "plain two"]  # failed, not transient: exit 0
    pool = write_jsonl(tmp_path / "p.jsonl", [{"instruction": t, "output": "ok"} for t in rows])
    env = {**os.environ, "COLUMNS": "200"}

    def curate(*args):
        run = curate_in_process(*args, env=env)
        assert run.returncode == 0, run.stderr[-2000:]
        return " ".join(run.stdout.split()), run.stderr

    curate("load", pool, "-w", ws)
    judge = ["score", ws, "--judge", "complexity", "--base-url", fault_server.base_url, "--model", "fault",
             "--max-retries", "1"]
    for column, failed, cached in (("complexity", 2, 0), ("complexity_again", 2, 4)):
        said, err = curate(*judge, "--column", column)
        shown = _last_postfix(err, column)
        assert f"failed {failed}" in said and f"{cached} answered by the on-disk cache" in said, said
        assert (shown["failed"], shown["cached"]) == (str(failed), str(cached)), err[-2000:]


def test_a_bar_ends_with_its_average_rate_not_its_first_refreshs():
    """A notebook bar ended at "1.15s/row" for 51 rows done in a second (tqdm.notebook keeps the smoothed rate of the
    last refresh: here the first row's); the bar now shows the run's average rate."""
    bar = progress_bar(51, "rows", enabled=True)
    bar.start_t -= 2.0
    bar.last_print_t -= 2.0  # the first row came 2 s after the start (a refresh is due), the other 50 at once
    bar.update(1)
    bar.update(50)
    rate = bar.format_dict["rate"] or bar.format_dict["n"] / bar.format_dict["elapsed"]  # as tqdm's format_meter
    bar.close()
    assert rate > 20  # was 0.5 rows/s


class StopsAtSecondChunk(Lengths):
    """Lengths, two rows a call, stopped (as by Ctrl-C in a notebook) during its second call."""

    column, rows_per_call = "lengths_stopped", 2

    def __init__(self):
        self.calls = 0

    def run(self, rows, ctx: StepContext) -> StepOutput:
        self.calls += 1
        if self.calls == 2:
            ctx.progress.update(1)
            raise KeyboardInterrupt
        return super().run(rows, ctx)


def test_a_stopped_apply_says_in_the_interrupt_what_it_kept_and_how_to_go_on(tmp_path, capsys):
    """In a notebook a stopped ws.apply showed a bare KeyboardInterrupt ending in thread internals, saying nothing of
    what was kept (the CLI says it): the interrupt now carries a note naming the column, the rows done and what to do."""
    ws = _workspace(tmp_path, ["one", "two", "three", "four"])
    try:
        ws.apply(StopsAtSecondChunk(), progress=True)
    except KeyboardInterrupt as stopped:
        notes = getattr(stopped, "__notes__", [])
    assert len(notes) == 1, notes
    assert "'lengths_stopped' stopped after 3 of its 4 rows, before writing the column" in notes[0]
    assert "run the same call again to go on" in notes[0] and not ws.has_column("lengths_stopped")


class RecordsItsCalls(Lengths):
    """Lengths, two rows a call, remembering which rows each call was given."""

    column, rows_per_call = "lengths_parts", 2

    def __init__(self):
        self.calls: list[list[str]] = []

    def run(self, rows, ctx: StepContext) -> StepOutput:
        self.calls.append(sorted(row.id for row in rows))
        return super().run(rows, ctx)


def test_the_parts_apply_hands_a_step_follow_the_rows_not_the_pool_files_order(tmp_path):
    """ws.apply cut the rows into parts in pool order, so the same rows loaded from a shuffled file shared a part with
    other rows (a scorer's values moved in the last digits, the determinism audit): parts go by row id now."""
    texts = [f"row {i}" for i in range(7)]
    parts = []
    for name, order in (("a", texts), ("b", texts[::-1])):
        step = RecordsItsCalls()
        _workspace(tmp_path, order, name).apply(step, progress=False)
        parts.append(step.calls)
    assert parts[0] == parts[1]  # was other parts
