"""`curate run` in unattended pipelines (cron, Airflow): two runs on one folder take turns, ``OUT/run.json``, exit
codes a scheduler can act on, whole error messages. Judges talk to the fault-injecting server on loopback."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fault_server():
    with FaultServer(retry_after="1") as srv:
        yield srv


def _pool(path: Path, n: int, marker: str = "", every: int = 0) -> Path:
    return write_jsonl(path, [{"instruction": f"Question {i}: explain topic {i} briefly"
                               + (f" {marker}" if every and i % every == 2 else ""),
                               "output": f"Answer {i}: words about topic {i} and more"} for i in range(n)])


def _run_args(pool: Path, out: Path, budget: int, srv: FaultServer | None, *more: str) -> list[str]:
    judge = ["--base-url", srv.base_url, "--model", "fault", "--max-retries", "0"] if srv is not None else []
    return [sys.executable, "-m", "curate.cli", "run", str(pool), "--out", str(out), "--budget", str(budget),
            "--no-report", *judge, *more]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    env.pop("OPENAI_API_KEY", None)
    return env


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m curate.cli ARGS`` (from :func:`_run_args`) run in this process: these tests check what a run
    says, writes and exits with, not process behaviour (a fresh interpreter and scorer load cost ~10 s of CPU)."""
    assert list(args[:3]) == [sys.executable, "-m", "curate.cli"], args
    return curate_in_process(*args[3:], env=_env())


def test_two_runs_on_one_folder_take_turns_and_the_folder_holds_the_last_finishers_result(tmp_path, fault_server):
    """Both exited 0 while selected.* and the workspace's selection held one run's rows and the other had logged its
    own count: the second run now waits for the whole first one (it says for whom), then runs with its budget."""
    pool, out = _pool(tmp_path / "pool.jsonl", 16), tmp_path / "run"
    procs = {budget: subprocess.Popen(_run_args(pool, out, budget, fault_server), env=_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for budget in (3, 7)}
    outputs = {budget: proc.communicate(timeout=400) for budget, proc in procs.items()}
    assert all(proc.returncode == 0 for proc in procs.values()), outputs
    waited = [budget for budget, (_, err) in outputs.items() if "waiting for another curate run" in err]
    assert len(waited) == 1, outputs  # the other run held the folder then: this one ran last (its exit may come first)
    last = waited[0]
    admitted = int(re.search(r"(\d+) rows admitted", outputs[last][0]).group(1))  # fewer than 7: similar rows left out
    assert admitted == (7 if last == 7 else 3), outputs
    selected = (out / "selected.jsonl").read_text().splitlines()
    assert len(selected) == admitted
    record = json.loads((out / "run.json").read_text())
    assert record["budget"] == last and record["steps"]["select (DEITA admission)"]["admitted"] == admitted
    from curate.session import Workspace

    assert len(Workspace.open(out / "workspace").selection("deita")) == admitted


def test_run_json_of_an_offline_run(tmp_path):
    """OUT/run.json: status, exit code, counts of each step, outputs, version; no LLM part without a judge."""
    from curate import __version__
    from curate.pipeline import run_pipeline

    pool = _pool(tmp_path / "pool.jsonl", 6)
    write_jsonl(tmp_path / "pool.jsonl", [*map(json.loads, pool.read_text().splitlines()),
                                          json.loads(pool.read_text().splitlines()[0])])  # one exact duplicate
    result = run_pipeline(str(pool), tmp_path / "run", 4, report=False, progress=False)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record == json.loads(json.dumps(result.record))
    assert record["status"] == "ok" and record["exit_code"] == 0 and record["error"] is None
    assert record["curate_version"] == __version__ and record["llm"] is None
    assert record["steps_finished"] == ["load", "dedup", "heuristics", "score", "embed", "select (DEITA admission)", "export"]
    steps = record["steps"]
    assert steps["load"]["rows_read"] == 7 and steps["load"]["rows_added"] == 7
    assert steps["dedup"]["rows_in"] == 7 and steps["dedup"]["kept"] == 6
    assert steps["score"]["columns"]["quality"] == {"rows": 6, "now": 6, "reused": 0, "failed": 0, "failed_now": 0,
                                                    "failures_by_reason": {}}
    admitted = len(result.workspace.selection("deita"))
    assert steps["select (DEITA admission)"]["admitted"] == admitted and steps["select (DEITA admission)"]["budget"] == 4
    assert len((tmp_path / "run" / "selected.jsonl").read_text().splitlines()) == admitted
    assert record["outputs"]["jsonl"] == str(tmp_path / "run" / "selected.jsonl")


def test_run_json_counts_permanent_judge_failures_and_is_printed_with_json(tmp_path, fault_server):
    """A judge failing some rows for good: their failures by reason code, the LLM requests and tokens; --json prints
    the same record on stdout, the progress lines going to stderr."""
    pool = _pool(tmp_path / "pool.jsonl", 10, "[always400]", every=4)  # rows 2 and 6
    proc = _cli(*_run_args(pool, tmp_path / "run", 5, fault_server, "--json"))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record == json.loads((tmp_path / "run" / "run.json").read_text())
    assert "rows admitted" in proc.stderr and "rows admitted" not in proc.stdout
    for column in ("complexity", "quality"):
        counts = record["steps"]["score"]["columns"][column]
        assert counts["rows"] == 10 and counts["failed"] == 2 and counts["failures_by_reason"] == {"http_error": 2}
    assert record["llm"]["requests_sent"] == 20 == fault_server.total
    assert record["llm"]["total_tokens"] > 0 and record["llm"]["cost_usd"] is None
    assert record["llm"]["unpriced_models"] == ["fault"]


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_exit_codes_say_what_failed_and_the_error_keeps_its_advice(tmp_path):
    """Every failure exited 1: now bad input 65, settings refused (401, 404) 78, a server down or failing 75; the
    record says the same code. The first failure's message was cut at 160 characters, inside its advice."""
    from curate.exit_codes import EXIT_CONFIG, EXIT_DATAERR, EXIT_TEMPFAIL

    pool = _pool(tmp_path / "pool.jsonl", 6)
    missing = _cli(*_run_args(tmp_path / "missing.jsonl", tmp_path / "r0", 3, None))
    assert missing.returncode == EXIT_DATAERR and "no such file" in _error_line(missing)
    down = FaultServer()  # nothing listens on its port until start()
    refused = _cli(*_run_args(pool, tmp_path / "r1", 3, down))
    line = _error_line(refused)
    assert refused.returncode == EXIT_TEMPFAIL, refused.stderr
    assert "check base_url= (CLI: --base-url) and that the server is running" in line  # was cut: "(CLI: )"
    assert json.loads((tmp_path / "r1" / "run.json").read_text())["exit_code"] == EXIT_TEMPFAIL
    with FaultServer(api_key="right") as srv:
        os.environ["CURATE_TEST_WRONG_KEY"] = "wrong"
        try:
            bad_key = _cli(*_run_args(pool, tmp_path / "r2", 3, srv, "--api-key-env", "CURATE_TEST_WRONG_KEY"))
        finally:
            del os.environ["CURATE_TEST_WRONG_KEY"]
        assert bad_key.returncode == EXIT_CONFIG and "HTTP 401" in _error_line(bad_key), bad_key.stderr
        record = json.loads((tmp_path / "r2" / "run.json").read_text())
        assert record["status"] == "failed" and record["exit_code"] == EXIT_CONFIG
        assert record["steps_finished"] == ["load", "dedup", "heuristics"] and record["error"]["type"] == "ConfigError"
    with FaultServer() as srv:
        wrong_path = _cli(*_run_args(pool, tmp_path / "r3", 3, None, "--base-url", srv.base_url + "/nope",
                                     "--model", "fault"))
        assert wrong_path.returncode == EXIT_CONFIG and "HTTP 404" in _error_line(wrong_path), wrong_path.stderr
        failing = _pool(tmp_path / "failing.jsonl", 6, "[always500]", every=4)
        five_hundred = _cli(*_run_args(failing, tmp_path / "r4", 3, srv))
        assert five_hundred.returncode == EXIT_TEMPFAIL and "HTTP 500" in _error_line(five_hundred), five_hundred.stderr


def test_run_help_lists_the_exit_codes():
    proc = _cli(sys.executable, "-m", "curate.cli", "run", "--help")
    assert proc.returncode == 0 and "Exit codes" in proc.stdout and "78" in proc.stdout and "75" in proc.stdout


def _started(proc: subprocess.Popen, srv: FaultServer, timeout: float = 120) -> None:
    """Wait until ``proc``'s judge has sent its first request (the run is mid-way, past its load)."""
    import time

    deadline = time.monotonic() + timeout
    while not srv.total and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert srv.total and proc.poll() is None, proc.communicate()


def test_sigterm_mid_run_exits_143_and_run_json_says_143():
    """The record said 130 (a KeyboardInterrupt's code) while the process exited 143: one source for both now."""
    import signal
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, FaultServer(latency=1.0) as srv:
        pool = _pool(Path(tmp) / "pool.jsonl", 12)
        proc = subprocess.Popen(_run_args(pool, Path(tmp) / "run", 3, srv, "--concurrency", "1"), env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _started(proc, srv)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, err
        record = json.loads((Path(tmp) / "run" / "run.json").read_text())
        assert record["status"] == "interrupted" and record["exit_code"] == 143, record


def test_a_run_waiting_on_one_whose_load_fails_runs_in_the_folder_made_again(tmp_path):
    """The holder's failed load removes the folders it made, the lock's with them: the waiter failed with
    "OUT/workspace/locks/run.lock: No such file or directory" (exit 1) though its own source was fine."""
    import shutil

    from curate.storage.run_lock import run_lock

    pool, out = _pool(tmp_path / "pool.jsonl", 8), tmp_path / "run"
    with run_lock(out):  # this test is the holder whose load fails
        proc = subprocess.Popen(_run_args(pool, out, 3, None), env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        said = []
        while not any("waiting for another curate run" in line for line in said) and proc.poll() is None:
            said.append(proc.stderr.readline())
        assert proc.poll() is None, said
        shutil.rmtree(out)  # as the failed load's removed_on_failure(*run.made) does, the lock held
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, "".join(said) + err
    assert (out / "selected.jsonl").is_file() and json.loads((out / "run.json").read_text())["status"] == "ok"


def test_folders_another_run_filled_first_are_not_this_runs_to_remove(tmp_path):
    """Made by this run's mkdir, but another run took the lock first and finished there: a failed load of this run
    removed its work."""
    from curate.storage.run_lock import _made, _still_empty

    out = tmp_path / "run"
    made = _made(out)
    assert made == (out, out / "workspace") and _made(out) == ()  # the second run made none
    assert _still_empty(made) == made
    (out / "run.json").write_text("{}")  # the other run's work
    assert _still_empty(made) == ()


def test_json_is_printed_when_the_run_fails_before_a_step_or_at_a_new_folders_load(tmp_path):
    """--json printed nothing when a check refused the run before its first step, or the load of a new folder failed
    (no OUT/run.json, the folder removed); --dry-run --json printed prose. Each record has its times."""
    pool = _pool(tmp_path / "pool.jsonl", 6)
    no_model = _cli(*_run_args(pool, tmp_path / "r1", 3, None, "--embed-model", str(tmp_path / "nope"), "--json"))
    record = json.loads(no_model.stdout)
    assert record["status"] == "failed" and record["steps"] == {} and record["exit_code"] == no_model.returncode
    assert "nope" in record["error"]["message"] and record["started_at"] <= record["finished_at"]
    missing = _cli(*_run_args(tmp_path / "missing.jsonl", tmp_path / "r2", 3, None, "--json"))
    record = json.loads(missing.stdout)
    assert missing.returncode == 65 == record["exit_code"] and record["steps_finished"] == []
    assert not (tmp_path / "r2").exists()
    dry = _cli(*_run_args(pool, tmp_path / "r3", 3, None, "--dry-run", "--json"))
    assert dry.returncode == 2 and dry.stdout == "" and "--json" in dry.stderr, dry.stderr


def test_run_json_says_running_while_the_steps_run_not_the_last_runs_ok(tmp_path):
    """A run stopped at once (SIGKILL) left the earlier run's record saying ok; it says running, with its start."""
    import signal

    pool, out = _pool(tmp_path / "pool.jsonl", 12), tmp_path / "run"
    assert _cli(*_run_args(pool, out, 3, None)).returncode == 0
    first = json.loads((out / "run.json").read_text())
    assert first["status"] == "ok" and first["started_at"] < first["finished_at"]
    with FaultServer(latency=1.0) as srv:
        proc = subprocess.Popen(_run_args(pool, out, 3, srv, "--concurrency", "1"), env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _started(proc, srv)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "running" and record["exit_code"] is None and record["finished_at"] is None
    assert record["started_at"] > first["finished_at"]


def test_a_failed_load_in_a_users_folder_leaves_no_record(tmp_path):
    """The new folder's running record is written as the run takes it; a load that fails removes the workspace it
    made, and the record with it: the user's folder is as it was."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    missing = _cli(*_run_args(tmp_path / "missing.jsonl", out, 3, None))
    assert missing.returncode == 65, missing.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_refused_settings_exit_78_in_tags_and_where_a_judge_takes_a_column_over(tmp_path):
    """A wrong API key: the tagger stored failed rows and the run exited 0 (status ok); a judge taking over the
    default scorers' column with every row failing exited 1 (a plain error)."""
    from curate.exit_codes import EXIT_CONFIG

    pool = _pool(tmp_path / "pool.jsonl", 6)
    os.environ["CURATE_TEST_WRONG_KEY"] = "wrong"
    try:
        with FaultServer(api_key="right") as srv:
            os.environ["CURATE_TEST_RIGHT_KEY"] = "right"
            scored = _cli(*_run_args(pool, tmp_path / "r1", 3, srv, "--api-key-env", "CURATE_TEST_RIGHT_KEY"))
            assert scored.returncode == 0, scored.stderr
            tags = _cli(*_run_args(pool, tmp_path / "r1", 3, srv, "--api-key-env", "CURATE_TEST_WRONG_KEY", "--tags"))
            assert tags.returncode == EXIT_CONFIG and "HTTP 401" in _error_line(tags), tags.stderr
            record = json.loads((tmp_path / "r1" / "run.json").read_text())
            assert record["status"] == "failed" and record["exit_code"] == EXIT_CONFIG and "tags" not in record["steps"]
            assert _cli(*_run_args(pool, tmp_path / "r2", 3, None)).returncode == 0  # the default scorers' columns
            takeover = _cli(*_run_args(pool, tmp_path / "r2", 3, srv, "--api-key-env", "CURATE_TEST_WRONG_KEY"))
            assert takeover.returncode == EXIT_CONFIG and "keeps its earlier values" in _error_line(takeover), \
                takeover.stderr
    finally:
        os.environ.pop("CURATE_TEST_WRONG_KEY", None)
        os.environ.pop("CURATE_TEST_RIGHT_KEY", None)


def test_option_errors_exit_78_and_an_unreadable_source_65(tmp_path):
    """--signal-model without --signal and an --embed-model folder that is not there exited 1, where the table says
    78 (an option's value); a source that cannot be read exits 65."""
    from curate.exit_codes import EXIT_CONFIG, EXIT_DATAERR

    pool = _pool(tmp_path / "pool.jsonl", 6)
    for more in (["--signal-model", str(tmp_path)], ["--embed-model", str(tmp_path / "nope")]):
        proc = _cli(*_run_args(pool, tmp_path / "r", 3, None, *more))
        assert proc.returncode == EXIT_CONFIG, (more, proc.stderr)
    if os.path.exists("/proc/self/mem"):  # reads fail (EIO), root or not
        for name in ("mem.jsonl", "mem.csv"):
            os.symlink("/proc/self/mem", tmp_path / name)
            proc = _cli(*_run_args(tmp_path / name, tmp_path / "r", 3, None))
            assert proc.returncode == EXIT_DATAERR and "cannot read" in _error_line(proc), proc.stderr


def test_a_users_run_json_in_a_folder_without_a_workspace_is_not_written_over(tmp_path):
    """The out folder's check listed the exports and the report, not run.json: a user's own was replaced."""
    from curate.errors import WorkspaceError
    from curate.pipeline import run_pipeline

    out = tmp_path / "mine"
    out.mkdir()
    (out / "run.json").write_text('{"mine": true}')
    with pytest.raises(WorkspaceError, match=r"holds run\.json, which no curate run wrote there"):
        run_pipeline(str(_pool(tmp_path / "pool.jsonl", 6)), out, 3, report=False, progress=False)
    assert (out / "run.json").read_text() == '{"mine": true}'


def test_a_json_run_leaves_the_console_following_standard_output(tmp_path):
    """`curate run --json` put the console on stderr and then back on the stream stdout was at that moment, for good:
    every later command run in the same process (tests/cli_in_process, a notebook calling curate.cli.main) printed
    into that old stream, and its output was lost."""
    from tests.cli_in_process import curate_in_process

    run = curate_in_process("run", "sample", "--budget", "3", "--out", tmp_path / "o", "--json", "--no-report")
    assert run.returncode == 0, run.stderr[-2000:]
    info = curate_in_process("info", tmp_path / "o" / "workspace")
    assert info.returncode == 0 and " rows (alpaca " in info.stdout, (info.stdout, info.stderr)


def test_a_new_folders_run_killed_mid_way_leaves_a_running_record_of_the_steps_it_finished(tmp_path):
    """A new --out killed -9 during score held only workspace/: the running record was written over an earlier
    run's folder only, a new one's first record at the end; a scheduler read no run.json at all.

    And run.json was written as the run took the folder and at its end only: a run killed -9 in its score step left
    ``"steps_finished": []``, as if it had not loaded; each finished step is in it now, with the final record's counts.
    (One run killed for both: each test started and killed a `curate run` process of its own.)"""
    import signal

    pool, out = _pool(tmp_path / "pool.jsonl", 12), tmp_path / "new"
    with FaultServer(latency=1.0) as srv:
        proc = subprocess.Popen(_run_args(pool, out, 3, srv, "--concurrency", "1"), env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _started(proc, srv)  # the judge is sending: the steps before score have finished
        record = json.loads((out / "run.json").read_text())  # while it runs
        assert record["status"] == "running" and record["exit_code"] is None, record
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "running" and record["exit_code"] is None and record["finished_at"] is None, record
    assert record["out"] == str(out), record
    finished = record["steps_finished"]
    assert finished[0] == "load" and "score" not in finished and list(record["steps"]) == finished, record
    load = record["steps"]["load"]
    assert load["rows_read"] == 12 and load["rows_added"] == 12 and load["unchanged"] is False, load
    assert load["seconds"] >= 0 and record["seconds"] >= load["seconds"], record
