"""Two processes scoring one workspace at once: a request one of them is sending is not paid for by the other.

Real processes (a child ``python`` each) against the fault-injecting server on loopback; the column lock covers a
second process scoring the *same* column, so these score one prompt into two columns.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from curate.llm.cache import response_cache
from curate.session import Workspace
from curate.storage.run_records import requests_sent
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer

REPO = Path(__file__).resolve().parents[1]

SCORE = textwrap.dedent("""
    import sys
    from curate.llm.backends import OpenAIBackend
    from curate.llm.judges import Judge
    from curate.session import Workspace
    ws_path, url, column = sys.argv[1:4]
    if len(sys.argv) > 4:  # this process's sending-claim expiry (a test's: seconds, not minutes)
        import curate.llm.cache_claims
        curate.llm.cache_claims.SENDING_CLAIM_EXPIRY_S = float(sys.argv[4])
    ws = Workspace(ws_path)
    print("ready", flush=True)
    ws.score(Judge("complexity", column=column), OpenAIBackend(url, "fault", timeout=60.0, max_retries=0),
             progress=False)
""")


def _workspace(tmp_path, instructions):
    src = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": t, "input": "", "output": "ok"} for t in instructions])
    ws = Workspace(tmp_path / "ws")
    ws.load(src)
    return ws


def _scorer(ws, srv, column, expiry_s: float | None = None, log: Path | None = None) -> subprocess.Popen:
    """A child process scoring ``column``; its output to ``log`` where given (read while it runs), else a pipe."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "CURATE_PROGRESS": "0"}
    extra = [] if expiry_s is None else [str(expiry_s)]
    args = [sys.executable, "-c", SCORE, str(ws.path), srv.base_url, column, *extra]
    if log is None:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with log.open("w") as out:  # the child writes to its own copy of the file
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_second_process_waits_for_the_requests_the_first_is_sending_and_pays_for_none(tmp_path):
    """Process B starts while process A's requests are held at the server: both score the complexity prompt (into two
    columns), B reads A's answers from the cache; the server sees each request once (it saw each twice: every row
    paid for twice)."""
    rows = [f"shared row {i}" for i in range(4)]
    ws = _workspace(tmp_path, rows)
    with FaultServer() as srv:
        srv.hold_chat.set()  # A's requests stay at the server until B has looked for them
        a = _scorer(ws, srv, "cx_a")
        _wait_for(lambda: srv.total == len(rows), "process A's requests at the server")
        log_b = tmp_path / "b.log"
        b = _scorer(ws, srv, "cx_b", log=log_b)
        # B waits for A's requests (says so), or sends its own at once (the bug: the server sees 8)
        _wait_for(lambda: "waiting for" in log_b.read_text() or srv.total > len(rows), "process B's look-up")
        srv.hold_chat.clear()
        out_a, _ = a.communicate(timeout=120)
        b.wait(timeout=120)
        out_b = log_b.read_text()
        assert a.returncode == 0 and b.returncode == 0, out_a + out_b
        assert srv.total == len(rows), f"{srv.total} requests for {len(rows)} prompts: {dict(srv.counts)}"
        assert "waiting for 4 request(s) another process is sending" in out_b, out_b  # said, not a silent hang
    ws = Workspace(ws.path)
    assert ws.row_values("cx_a") == ws.row_values("cx_b") and None not in ws.row_values("cx_a")
    runs_b = ws.column_provenance("cx_b")["runs"]
    assert [requests_sent(r) for r in runs_b] == [0], runs_b  # B sent nothing: its answers were A's


def test_a_request_of_a_process_killed_while_sending_it_is_sent_by_the_next(tmp_path):
    """A process killed (SIGKILL) while its request is at the server leaves its claim in the cache; the next process
    takes it over at once and sends the request itself, rather than waiting for a process that is gone."""
    ws = _workspace(tmp_path, ["[sleep1:60] slow row"])
    with FaultServer() as srv:
        a = _scorer(ws, srv, "cx_a")
        _wait_for(lambda: srv.total == 1, "process A's request at the server")
        os.kill(a.pid, signal.SIGKILL)
        a.wait(30)
        cache = response_cache(ws.cache_dir)
        assert cache._conn().execute("SELECT COUNT(*) FROM sending").fetchone()[0] == 1  # A's claim, left behind
        b = _scorer(ws, srv, "cx_b")
        out_b, _ = b.communicate(timeout=50)  # waiting for A's claim would hang: A is gone (its request takes 60 s)
        assert b.returncode == 0, out_b
        assert "waiting for" not in out_b, out_b
        ws = Workspace(ws.path)
        assert srv.total == 2 and ws.row_values("cx_b")[0] is not None
        assert cache._conn().execute("SELECT COUNT(*) FROM sending").fetchone()[0] == 0


def test_a_live_sender_keeps_its_claim_and_one_stopped_loses_it_after_the_expiry(tmp_path):
    """Process A sends a slow request and refreshes its claim; process B waits for it, naming A's pid, past its claim
    expiry (A is alive and refreshing). A is then stopped (SIGSTOP: alive, but refreshing no more, as a sender stopped
    with Ctrl-Z): B takes the claim over once it is not refreshed for the expiry and sends the request itself (it
    waited for A until A exited, which a stopped A never does)."""
    expiry_a, expiry_b = 1.0, 3.0  # A refreshes every quarter of its own; B takes over a claim unrefreshed for its own
    ws = _workspace(tmp_path, ["[sleep1:120] slow row"])
    with FaultServer() as srv:
        a = _scorer(ws, srv, "cx_a", expiry_a)
        try:
            _wait_for(lambda: srv.total == 1, "process A's request at the server")
            log_b = tmp_path / "b.log"
            b = _scorer(ws, srv, "cx_b", expiry_b, log=log_b)
            _wait_for(lambda: "waiting for 1 request(s)" in log_b.read_text(), "process B's wait for A's request")
            assert f"pid {a.pid} (1 request(s), claim refreshed" in log_b.read_text(), log_b.read_text()
            time.sleep(2 * expiry_b)  # longer than B's expiry: A's refreshes keep its claim
            assert srv.total == 1 and b.poll() is None, log_b.read_text()
            os.kill(a.pid, signal.SIGSTOP)
            b.wait(timeout=60)  # a hang guard: without the expiry B waits as long as A lives
            assert b.returncode == 0, log_b.read_text()
            assert srv.total == 2, dict(srv.counts)  # B sent it itself
        finally:
            a.kill()
            a.wait(30)
    assert Workspace(ws.path).row_values("cx_b")[0] is not None


def test_answers_a_live_process_paid_for_are_not_counted_as_a_stopped_runs_by_another(tmp_path):
    """Process A has stored two answers (its run record not yet written) and waits on two more when process B starts:
    B read A's two as answers "paid by a stopped run" and billed them in its own record, so the workspace counted
    them twice. They are cached answers for B; only a payer that is gone leaves its answers to the next run."""
    rows = ["quick row 1", "quick row 2", "[sleep1:6] slow row 3", "[sleep1:6] slow row 4"]
    ws = _workspace(tmp_path, rows)
    with FaultServer() as srv:
        a = _scorer(ws, srv, "cx_a")
        cache = response_cache(ws.cache_dir)
        _wait_for(lambda: srv.total == 4 and len(cache) == 2, "A's two quick answers in the cache")
        b = _scorer(ws, srv, "cx_b")
        out_a, _ = a.communicate(timeout=120)
        out_b, _ = b.communicate(timeout=120)
        assert a.returncode == 0 and b.returncode == 0, out_a + out_b
        assert srv.total == 4
    ws = Workspace(ws.path)
    (run_a,), (run_b,) = ws.column_provenance("cx_a")["runs"], ws.column_provenance("cx_b")["runs"]
    assert requests_sent(run_a) == 4 and run_a["tokens"]["prompt"] > 0
    assert run_b["requests_paid_by_stopped_run"] == 0 and run_b["tokens"] == {"prompt": 0, "completion": 0}, run_b
