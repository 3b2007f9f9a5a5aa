"""The Ray engine's start and release as the CLI sees them: SIGTERM reaches curate's handler while Ray is up and
after it stopped (a `curate run --engine ray` killed during its report exited 143 with no line and no run.json),
and a cluster address with nothing behind it fails at once with one line (it hung for minutes)."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import write_jsonl

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]
HANG_GUARD_S = 240  # only a guard: the old code waited on ray.init for minutes (killed by this, the test fails)


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=HANG_GUARD_S)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


@pytest.mark.xdist_group("ray")
def test_sigterm_reaches_curates_handler_while_ray_runs_and_a_reaper_that_fails_to_start_leaves_ray_to_its_release(
        tmp_path):
    """Ray's core worker put Abseil's failure handler on SIGTERM in the driver: a SIGTERM during a pass printed a
    C++ stack trace ("*** SIGTERM received ... PC: @") before curate's line, and ray.shutdown() left SIGTERM at its
    default, so one after the Ray steps killed the process outright (status -15: no line, no run.json).

    A reaper start failing with anything but OSError failed the engine's start while the Ray it had started ran
    on, counted by no engine: nothing ever stopped it. (The reaper's own start made to fail, not Ray's.) One child,
    one Ray start, for both (each was an interpreter and a Ray start of its own)."""
    proc = _python("""
        import os, signal, time
        import ray
        from curate.cli.common import on_sigint
        from curate.errors import Terminated
        from curate.scale import reaper
        from curate.scale.cluster import start_ray

        signal.signal(signal.SIGTERM, on_sigint)  # as curate.cli.main() does

        def stopped_by_sigterm(when):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                while True:
                    time.sleep(0.05)
            except Terminated:
                print(when, flush=True)

        def refused(roots):
            raise RuntimeError("refused by the test")
        reaper.watch = refused

        try:
            _, release = start_ray(None)
        except RuntimeError as exc:
            print(f"start failed ({exc}), Ray up: {ray.is_initialized()}")
        else:
            print(f"started, Ray up: {ray.is_initialized()}", flush=True)
            stopped_by_sigterm("while Ray runs")
            release()
            print(f"released, Ray up: {ray.is_initialized()}", flush=True)
            stopped_by_sigterm("after Ray stopped")
        """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["started, Ray up: True", "while Ray runs", "released, Ray up: False",
                                        "after Ray stopped"], proc.stdout + proc.stderr[-3000:]
    assert "SIGTERM received" not in proc.stderr and "PC: @" not in proc.stderr
    assert "no reaper for the Ray started here (refused by the test)" in proc.stderr, proc.stderr[-3000:]


@pytest.mark.xdist_group("ray")
def test_the_ray_processes_of_a_run_killed_with_sigkill_go_with_it(tmp_path):
    """Ray's processes die with the driver that started them, but the raylet's two agents (ray::DashboardAgent,
    ray::RuntimeEnvAgent) spent Ray's 60 s timeout reporting the raylet's death to the dead GCS first: a
    `curate run --engine ray` killed -9 left them running a minute or more (2.5 min on a loaded machine)."""
    import signal
    import time

    import psutil

    pool = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"Task {i}: explain item {i}.", "input": "",
                                                  "output": f"Item {i} works like this."} for i in range(12)])
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "run", str(pool), "--out", str(tmp_path / "out"),
                                 "--budget", "5", "--no-report", "--engine", "ray"], stdout=out, stderr=subprocess.STDOUT,
                                cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), "CURATE_PROGRESS": "0"})
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while "dedup" not in log.read_text().split():  # the load's Ray is up
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(3)  # the raylet has started its agents
        started = psutil.Process(proc.pid).children(recursive=True)
        assert any(p.name() == "ray::DashboardAgent" for p in started), [p.name() for p in started]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _, alive = psutil.wait_procs(started, timeout=30)  # a guard, not a timing: they waited 60 s or more before
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [(p.pid, p.name()) for p in alive]


def test_a_cluster_address_nothing_listens_at_fails_at_once_with_75(tmp_path):
    """`curate run --engine ray --address 127.0.0.1:<closed>` printed only Ray's "Failed to connect to GCS" lines
    for minutes; now one line naming the address, exit 75 (retry later) and a run.json saying so, Ray not started."""
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"Task {i}.", "output": f"Done {i}."} for i in range(4)])
    address = f"127.0.0.1:{_closed_port()}"
    proc = _python(f"""
        import sys
        from curate.cli import main
        sys.argv = ["curate", "run", {str(pool)!r}, "--budget", "2", "--out", "out", "--engine", "ray",
                    "--address", {address!r}]
        try:
            main()
        finally:
            assert not sys.modules["ray"].is_initialized()
        """, tmp_path)
    assert proc.returncode == 75, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: no Ray cluster at {address}: nothing listens there (connection refused); start its "
                      f"head there (`ray start --head --port={address.split(':')[1]}`) or give the head's address"]
    assert "Failed to connect to GCS" not in proc.stderr
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert (record["status"], record["exit_code"], record["error"]["type"]) == ("failed", 75, "RetryLaterError")


def test_a_cluster_address_where_something_else_listens_fails_after_the_deadline_with_78(tmp_path):
    """A port that accepts connections but is no Ray GCS (a wrong port): ray.init retried for minutes; now the join
    is given up after ``JOIN_DEADLINE_S`` (set short here) with a line saying so, exit 78 (the setting is wrong)."""
    with socket.socket() as listener:  # accepts (the kernel's backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        proc = _python(f"""
            import sys
            import curate.scale.cluster as cluster
            from curate.cli import main
            cluster.JOIN_DEADLINE_S = 3
            sys.argv = ["curate", "run", "pool.jsonl", "--budget", "2", "--out", "out", "--engine", "ray",
                        "--address", {address!r}]
            main()
            """, write_jsonl(tmp_path / "pool.jsonl", [{"instruction": "Task.", "output": "Done."}]).parent)
    assert proc.returncode == 78, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: no Ray cluster answered at {address} within 3 s: something listens there, but not a "
                      "Ray cluster's GCS (the head's `ray start --head --port`, 6379 by default)"]
