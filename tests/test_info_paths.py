"""What `curate info` and ``ws.info()`` tell of a workspace beyond its files: the last run whose workspace it is
(``OUT/run.json``: running, finished, killed, failed and why, its command and times), and the column and selection
files whose checksums do not match the bytes curate wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from curate.errors import RetryLaterError
from curate.run_record import RUN_RECORD, run_steps
from curate.session import Workspace
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl


def _run_workspace(tmp_path):
    out = tmp_path / "out"
    ws = Workspace(out / "workspace")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"question {i}", "input": "", "output": f"answer {i}"}
                                                  for i in range(4)]))
    return out, ws


def _failed_run(out) -> None:
    """A run whose score step failed after its embed step finished, recorded as `curate run` records it."""
    def score(_run):
        raise RetryLaterError("the LLM server did not answer (connection refused)")

    with pytest.raises(RetryLaterError):
        run_steps(SimpleNamespace(out=out, budget=None, outputs={}),
                  [("embed", lambda _run: {"rows": 4, "encoded": 0}), ("score", score)], None, None)


def test_info_shows_the_last_run_that_failed_with_its_reason_command_and_time(tmp_path):
    out, ws = _run_workspace(tmp_path)
    _failed_run(out)
    run = ws.info()["last_run"]
    assert run["status"] == "failed" and run["exit_code"] == 75 and run["steps_finished"] == ["embed"]
    assert run["state"] == "failed (exit 75): RetryLaterError: the LLM server did not answer (connection refused)"
    assert run["command"] and run["started_at"] and run["finished_at"] and run["record"] == str(out / RUN_RECORD)
    said = curate_in_process("info", out / "workspace")
    assert said.returncode == 0, said.stderr
    line = said.stdout.splitlines()[-1]
    assert line.startswith("  last run: failed (exit 75): RetryLaterError: the LLM server did not answer"), line
    assert f"steps finished: embed; command: {run['command']} ({out / RUN_RECORD})" in line
    view = ws._repr_html_()  # the notebook's view says it too (the dict had it, the view did not)
    assert "<li class='curate-warn'>last run: failed (exit 75): RetryLaterError: the LLM server did not" in view


def test_info_tells_a_run_killed_9_from_one_running(tmp_path):
    out, ws = _run_workspace(tmp_path)
    _failed_run(out)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = json.loads((out / RUN_RECORD).read_text())
    record.update(status="running", pid=gone.pid, exit_code=None, finished_at=None, error=None)
    (out / RUN_RECORD).write_text(json.dumps(record))
    assert ws.info()["last_run"]["status"] == "killed"
    assert ws.info()["last_run"]["state"] == f"killed (its process {gone.pid} is gone)"
    record["pid"] = __import__("os").getpid()  # this process: alive
    (out / RUN_RECORD).write_text(json.dumps(record))
    assert ws.info()["last_run"]["status"] == "running"
    (out / RUN_RECORD).write_text("{not json")
    assert ws.info()["last_run"]["status"] == "unreadable"
    said = curate_in_process("info", out / "workspace", "--json")
    assert said.returncode == 0 and json.loads(said.stdout)["last_run"]["status"] == "unreadable"


def test_a_workspace_no_run_made_has_no_last_run(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", [{"instruction": "q", "input": "", "output": "a"}]))
    (tmp_path / RUN_RECORD).write_text("{}")  # a run.json beside a workspace not named as a run's: not its run
    assert ws.info()["last_run"] is None
    assert "last run" not in curate_in_process("info", tmp_path / "ws").stdout


def _overwrite_in_place(path) -> None:
    """Zero 16 bytes inside the record batches of an Arrow file, its size kept (a disk or a tool writing over it)."""
    from curate.storage.checksums import batches_span

    data = bytearray(path.read_bytes())
    start, end = batches_span(data)
    data[end - 24:end - 8] = bytes(16)
    path.write_bytes(bytes(data))


def test_info_finds_column_and_selection_files_overwritten_in_place_and_verify_exits_1(tmp_path):
    """ws.info() and curate info --json listed such a file as sound (only the text listing, reading every value, found
    it); --verify makes the finding an exit code."""
    from curate.exit_codes import EXIT_FAILURE

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"q{i}", "input": "", "output": f"a{i}"}
                                                  for i in range(6)]))
    ws.add_column("score", [float(i) for i in range(6)], {"kind": "test"})
    ws.select(method="exact", name="dedup")
    assert curate_in_process("info", tmp_path / "ws", "--verify").returncode == 0  # sound: exit 0
    for name in ("columns/score.arrow", "selections/dedup.arrow"):
        _overwrite_in_place(tmp_path / "ws" / name)
    fresh = Workspace.open(tmp_path / "ws")
    damaged = {d["name"]: d for d in fresh.info()["damaged"]}
    assert {n: d["code"] for n, d in damaged.items()} == {"score": "not_written", "dedup": "not_written"}
    assert damaged["score"]["fix"].startswith(f"remove it (`rm {tmp_path / 'ws' / 'columns' / 'score.arrow'}`) and "
                                              "compute the column again")
    assert "score" not in fresh.info()["columns"] and "dedup" not in fresh.info()["selections"]
    said = curate_in_process("info", tmp_path / "ws", "--json")
    assert said.returncode == 0 and len(json.loads(said.stdout)["damaged"]) == 2
    for extra in ((), ("--json",)):
        said = curate_in_process("info", tmp_path / "ws", "--verify", *extra)
        assert said.returncode == EXIT_FAILURE, said.stderr
        assert said.stderr.startswith(f"error: {tmp_path / 'ws'}: 2 damaged file(s), listed with the fix of each"), \
            said.stderr
        assert str(tmp_path / "ws" / "columns" / "score.arrow") in said.stderr


def test_a_run_json_that_is_no_curate_runs_record_is_named_so(tmp_path):
    """A run.json beside OUT/workspace that curate run did not write (a training run's record, `curate train run
    --out OUT`) read as a run: curate info printed 'last run: None (exit None); started None'."""
    out, ws = _run_workspace(tmp_path)
    (out / RUN_RECORD).write_text(json.dumps({"fingerprint": "ab12", "config": {"epochs": 1}, "epochs_done": 1}))
    run = ws.info()["last_run"]
    assert run["status"] == "unreadable" and "not a curate run's record" in run["state"], run
    said = curate_in_process("info", out / "workspace")
    assert said.returncode == 0 and "None" not in said.stdout.splitlines()[-1], said.stdout
