"""A vLLM process group (local server, batch runner) does not outlive the curate process that started it.

Each test's "vLLM" is a stand-in process group (a leader and a worker it starts, both sleeping) launched through the
code the real ones go through; its owner, a Python process, is SIGKILLed as `kill -9` of `curate` would be.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate.errors import CurateError
from tests.cli_in_process import curate_in_process

REPO = Path(__file__).resolve().parents[1]
# the stand-in: a leader writing its PID, its worker's and its TMPDIR to argv[1], then sleeping
GROUP = ("import json, os, subprocess, sys, time\n"
         "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
         "tmp = sys.argv[1] + '.tmp'\n"
         "open(tmp, 'w').write(json.dumps([os.getpid(), w.pid, os.environ.get('TMPDIR')]))\n"
         "os.replace(tmp, sys.argv[1])\n"
         "time.sleep(600)\n")
SERVER_OWNER = """
import sys, time
from pathlib import Path
import curate.llm.local as local
local.prepare_model = lambda home=None: Path(home)  # no weights: the stand-in serves nothing
class StandIn(local.LocalServer):
    def command(self):
        return [sys.executable, "-c", sys.argv[3], sys.argv[4]]
StandIn(home=sys.argv[1], log_path=sys.argv[2]).launch()
time.sleep(600)
"""
RUNNER_OWNER = """
import sys
from curate.llm.vllm_batch import VLLMBatchBackend
class StandIn(VLLMBatchBackend):
    def command(self, input_path, output_path):
        return [sys.executable, "-c", sys.argv[2], sys.argv[3]]
StandIn(model_dir=sys.argv[1], timeout=600).run_lines([])
"""
# the owners below run the backend's async run() as a command does (asyncio.run), with Ctrl-C as Python's default
# (SIGINT as a terminal leaves it: a process started from a test may inherit it ignored)
ASYNC_REQUEST = ("import asyncio, signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
                 "from curate.llm.base import Request\n"
                 "ask = lambda backend: asyncio.run(backend.run([Request('k', [{'role': 'user', 'content': 'x'}], {})], "
                 "lambda request, result: None))\n")
LAZY_SERVER_OWNER = ASYNC_REQUEST + """
import sys
from pathlib import Path
import curate.llm.local as local
local.prepare_model = lambda home=None: Path(home)
class StandIn(local.LocalServer):  # a server that never answers: its start-up lasts startup_timeout
    def command(self):
        return [sys.executable, "-c", sys.argv[3], sys.argv[4]]
ask(StandIn(home=sys.argv[1], log_path=sys.argv[2], startup_timeout=600).lazy_backend())
"""
BATCH_OWNER = ASYNC_REQUEST + """
import sys
from curate.llm.vllm_batch import VLLMBatchBackend
class StandIn(VLLMBatchBackend):  # a batch that takes 600 s
    def command(self, input_path, output_path):
        return [sys.executable, "-c", sys.argv[2], sys.argv[3]]
ask(StandIn(model_dir=sys.argv[1], timeout=600))
"""
GONE_WITHIN_S = 15.0  # the watchdog looks every second; a loaded 2-core machine may take a few more to schedule it


def _owner(tmp_path: Path, script: str, *args: str) -> tuple[subprocess.Popen, list]:
    """Start an owner running ``script``; wait until its stand-in group runs and its watchdog watches it (the group
    writes its PIDs before its owner starts the watchdog: on two busy cores a test looked for the watchdog in
    between, CI's one failure): (owner, [leader, worker, TMPDIR])."""
    pids = tmp_path / "group.json"
    env = {**os.environ, "CURATE_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    owner = subprocess.Popen([sys.executable, "-c", script, *args, GROUP, str(pids)], env=env)
    deadline = time.monotonic() + 60
    while not pids.exists() or not _watching(json.loads(pids.read_text())[0]):
        assert owner.poll() is None and time.monotonic() < deadline, "the stand-in group or its watchdog did not start"
        time.sleep(0.1)
    return owner, json.loads(pids.read_text())


def _watching(leader: int) -> bool:
    """The watchdog of group ``leader`` has said it watches: it closed the descriptor its spec names for that."""
    watchdog = watchdog_of(leader)
    if watchdog is None:
        return False
    with contextlib.suppress(OSError, ValueError, IndexError):
        spec = json.loads(Path(f"/proc/{watchdog}/cmdline").read_bytes().split(b"\0")[-2])
        return not Path(f"/proc/{watchdog}/fd/{spec['ready_fd']}").exists()
    return False


def group_alive(pgid: int) -> bool:
    """A process of group ``pgid`` runs (not a zombie): the test's own look, independent of the code under test."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[2] == str(pgid) and fields[0] != "Z":
                return True
    return False


def _kill(owner: subprocess.Popen) -> None:
    owner.send_signal(signal.SIGKILL)
    owner.wait()


def _gone_after(pgid: int, limit: float) -> float | None:
    """Seconds until process group ``pgid`` has no process left; None if it still has one after ``limit``."""
    start = time.monotonic()
    while group_alive(pgid):
        if time.monotonic() - start > limit:
            return None
        time.sleep(0.1)
    return time.monotonic() - start


def watchdog_of(pid: int) -> int | None:
    """The PID of the watchdog watching the group ``pid`` leads (its spec names it), if one runs."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if "curate.llm.watchdog" in (text := cmdline.read_bytes().decode(errors="replace")) \
                    and f'"pid": {pid},' in text:
                return int(cmdline.parent.name)
    return None


@contextlib.contextmanager
def _cleanup(tmp_path: Path):
    """Whatever a failing test left: the stand-in group (SIGKILL), its watchdog, its temporary folder."""
    try:
        yield
    finally:
        pids = tmp_path / "group.json"
        if pids.exists():
            leader, _, tmpdir = json.loads(pids.read_text())
            for kill in (lambda: os.killpg(leader, signal.SIGKILL), lambda: os.kill(watchdog_of(leader), 9)):
                with contextlib.suppress(ProcessLookupError, TypeError):
                    kill()
            if tmpdir and Path(tmpdir).name.startswith("curate-vllm"):
                shutil.rmtree(tmpdir, ignore_errors=True)


def test_a_local_server_whose_curate_process_was_killed_stops_with_no_further_command(tmp_path):
    """`kill -9` of a curate process left its local vLLM server (its own session) running, 1.7 GB and a core, until
    a later command launched one; with no later command, for good. Its watchdog stops it within seconds now, and
    removes its temporary folder and record."""
    with _cleanup(tmp_path):
        owner, (leader, worker, tmpdir) = _owner(tmp_path, SERVER_OWNER, str(tmp_path / "home"),
                                                 str(tmp_path / "server.log"))
        record = tmp_path / "home" / "servers" / f"{leader}.json"
        assert record.exists() and Path(tmpdir).is_dir()
        _kill(owner)
        took = _gone_after(leader, GONE_WITHIN_S)
        assert took is not None, f"the server's group outlived its owner by {GONE_WITHIN_S:g} s"
        print(f"group gone {took:.1f} s after its owner's SIGKILL")
        assert _watchdog_ended(leader)  # after removing the folder and the record
        assert not Path(tmpdir).exists() and not record.exists()
        assert "curate watchdog: owner" in (tmp_path / "server.log").read_text()  # it says what it did


def _watchdog_ended(leader: int) -> bool:
    """The watchdog of the group ``leader`` led has exited (within 5 s)."""
    deadline = time.monotonic() + 5
    while watchdog_of(leader) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_batch_runner_whose_curate_process_was_killed_stops_with_no_further_command(tmp_path):
    """The vllm-batch runner (and its engine) ran on after `kill -9` of curate, and the re-run started a second one
    beside it on the same requests; its /tmp/curate-vllm-batch-* folder stayed. Its watchdog stops it now."""
    with _cleanup(tmp_path):
        owner, (leader, worker, tmpdir) = _owner(tmp_path, RUNNER_OWNER, str(tmp_path))
        assert Path(tmpdir).name.startswith("curate-vllm-batch-")
        _kill(owner)
        took = _gone_after(leader, GONE_WITHIN_S)
        assert took is not None, f"the runner's group outlived its owner by {GONE_WITHIN_S:g} s"
        print(f"group gone {took:.1f} s after its owner's SIGKILL")
        assert _watchdog_ended(leader)
        assert not Path(tmpdir).exists() and not (tmp_path / "home" / "servers" / f"{leader}.json").exists()


def test_a_batch_runner_is_recorded_and_swept_when_its_watchdog_died_too(tmp_path, monkeypatch):
    """The runner was never recorded, so not even the sweep before a later launch stopped it. It is recorded as a
    local server is: with its watchdog killed as well, the next batch run stops it before it launches its own, and
    removes its folder and record."""
    from curate.llm.server_records import SERVERS_DIR
    from curate.llm.vllm_batch import VLLMBatchBackend

    class QuickRunner(VLLMBatchBackend):  # a runner that answers nothing at once
        def command(self, input_path, output_path):
            return [sys.executable, "-c", f"open({str(output_path)!r}, 'w').close()"]

    with _cleanup(tmp_path):
        owner, (leader, worker, tmpdir) = _owner(tmp_path, RUNNER_OWNER, str(tmp_path))
        record = tmp_path / "home" / SERVERS_DIR / f"{leader}.json"
        assert record.exists(), "the batch runner is not recorded"
        assert json.loads(record.read_text())["owner_pid"] == owner.pid
        watchdog = watchdog_of(leader)
        assert watchdog is not None
        os.kill(watchdog, signal.SIGKILL)
        _kill(owner)
        monkeypatch.setenv("CURATE_HOME", str(tmp_path / "home"))
        assert QuickRunner(model_dir=tmp_path, timeout=60).run_lines([]) == []
        assert not group_alive(leader) and not Path(tmpdir).exists() and not record.exists()


def test_each_batch_run_writes_and_quotes_its_own_log(tmp_path, monkeypatch):
    """Every vllm-batch run wrote one $CURATE_HOME/logs/vllm-batch.log: a runner another curate left running wrote
    into the live run's log, and a failing run quoted its tail, maybe another run's error. A run's log is its
    process's own now (as a local server's is its port's)."""
    from curate.llm.vllm_batch import VLLMBatchBackend

    monkeypatch.setenv("CURATE_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "logs").mkdir(parents=True)
    (tmp_path / "home" / "logs" / "vllm-batch.log").write_text("Traceback: another run's runner crashed\n")

    class FailingRunner(VLLMBatchBackend):
        def command(self, input_path, output_path):
            return [sys.executable, "-c", "import sys; print('this run failed'); sys.exit(3)"]

    backend = FailingRunner(model_dir=tmp_path, timeout=60)
    with pytest.raises(CurateError) as failure:
        backend.run_lines([])
    (own,) = backend.log_paths
    assert own.parent == tmp_path / "home" / "logs" and own.name.startswith(f"vllm-batch-{os.getpid()}-")
    assert f"log {own}" in str(failure.value) and "this run failed" in str(failure.value)
    assert "another run" not in str(failure.value)
    assert not list((tmp_path / "home" / "servers").glob("*.json"))  # its record went with it


def test_each_launch_keeps_its_own_log_and_is_announced_naming_it(tmp_path, monkeypatch):
    """A multi-round step launches the runner several times in one process: each launch truncated the process's one
    log, so the first launch's log was gone once the second started, and nothing was said while vLLM loaded the model
    (minutes of `0%`). Each launch writes a log of its own now, and is announced, naming it, before the runner runs;
    a failing launch quotes its own log, not an earlier launch's."""
    from curate.llm.vllm_batch import VLLMBatchBackend

    monkeypatch.setenv("CURATE_HOME", str(tmp_path / "home"))
    said: list[tuple[str, bool]] = []  # each event, and whether the runner had written its log yet

    class TwoRunsRunner(VLLMBatchBackend):
        def command(self, input_path, output_path):
            if len(self.log_paths) == 1:
                return [sys.executable, "-c", f"print('first launch answered'); open({str(output_path)!r}, 'w')"]
            return [sys.executable, "-c", "import sys; print('second launch failed'); sys.exit(3)"]

    backend = TwoRunsRunner(model_dir=tmp_path, timeout=60, on_event=lambda text: said.append(
        (text, backend.log_paths[-1].exists() and backend.log_paths[-1].stat().st_size > 0)))
    assert backend.run_lines([]) == []
    with pytest.raises(CurateError) as failure:
        backend.run_lines([])
    first, second = backend.log_paths
    assert first != second and first.parent == second.parent == tmp_path / "home" / "logs"
    assert "first launch answered" in first.read_text()  # kept after the second launch
    assert "second launch failed" in second.read_text() and "first launch" not in second.read_text()
    assert f"log {second}" in str(failure.value) and "first launch" not in str(failure.value)
    assert [text for text, _ in said] == [
        f"starting vLLM's batch runner on 0 request(s) ({backend.model}; it loads the model first: a few minutes on a "
        f"small CPU); log {log}" for log in (first, second)]
    assert not any(written for _, written in said)  # told before the runner wrote a line


def test_the_cli_prints_the_batch_runners_start_naming_its_log(tmp_path, monkeypatch):
    """`--backend vllm-batch` showed only `quality: 0%` for the minutes vLLM loads the model; `--backend local` says
    it starts a server. The CLI prints the runner's start now, naming its log (here the stand-in fails at once)."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.llm.vllm_batch import VLLMBatchBackend
    from curate.session import Workspace
    from tests.conftest import write_jsonl

    monkeypatch.setenv("CURATE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(VLLMBatchBackend, "command", lambda self, i, o: [
        sys.executable, "-c", "import sys; print('stand-in runner failed'); sys.exit(3)"])
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "Name a prime.", "output": "2"}]))
    (model := tmp_path / "model").mkdir()
    result = CliRunner().invoke(app, ["score", str(ws.path), "--judge", "complexity", "--backend", "vllm-batch",
                                      "--model", str(model)])
    said = " ".join(f"{result.output} {result.exception}".split())
    logs = list((tmp_path / "home" / "logs").glob(f"vllm-batch-{os.getpid()}-*.log"))
    assert len(logs) == 1, said
    assert f"starting vLLM's batch runner on 1 request(s) (model; it loads the model first: a few minutes on a " \
           f"small CPU); log {logs[0]}" in said, said


@pytest.mark.llm
def test_kill_9_of_a_local_run_leaves_no_vllm_server(tmp_path):
    """The audit's case, end to end: `kill -9` of `curate score --backend local` while its vLLM server runs left the
    server (and its engine) running with parent 1; no further curate command is needed now."""
    from curate.llm.local import prepare_model

    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(prepare_model().parent)  # converted once; the rest of this home is the test's own
    env = {**os.environ, "CURATE_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("OPENAI_API_KEY", None)
    cli = [sys.executable, "-m", "curate.cli"]
    ws = tmp_path / "ws"
    loaded = curate_in_process("load", "sample", "--workspace", ws, env=env)  # the setup: no process of its own
    assert loaded.returncode == 0, loaded.stderr
    run = subprocess.Popen([*cli, "score", ws, "--judge", "quality", "--backend", "local"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    leader = None
    try:
        deadline = time.monotonic() + 300
        while leader is None or _group_size(leader) < 2:  # the server and its engine process run
            assert run.poll() is None and time.monotonic() < deadline, "no local server with an engine started"
            records = list((home / "servers").glob("*.json"))
            leader = json.loads(records[0].read_text())["pid"] if records else None
            time.sleep(0.2)
        _kill(run)
        took = _gone_after(leader, GONE_WITHIN_S)
        assert took is not None, f"the local server outlived `curate score` by {GONE_WITHIN_S:g} s"
        print(f"server group gone {took:.1f} s after the run's SIGKILL")
        assert _watchdog_ended(leader) and not list((home / "servers").glob("*.json"))
    finally:
        if run.poll() is None:
            _kill(run)
        if leader is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(leader, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(watchdog_of(leader), signal.SIGKILL)
            for record in (home / "servers").glob("*.json"):
                shutil.rmtree(json.loads(record.read_text()).get("tmpdir") or tmp_path / "none", ignore_errors=True)


def _group_size(pgid: int) -> int:
    """Processes of group ``pgid`` running (not zombies)."""
    size = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            size += fields[2] == str(pgid) and fields[0] != "Z"
    return size


def test_a_watchdog_started_beside_a_curate_py_still_watches_and_one_that_cannot_start_fails_the_launch(
        tmp_path, monkeypatch):
    """``python -m curate.llm.watchdog`` searched the current folder first: beside a ``curate.py`` it imported that,
    died, and the launch went on with the group unguarded, nothing said. It starts with ``-P`` now, and the launch
    waits for its word that it watches: a watchdog that cannot start stops the group and fails the launch."""
    from curate.llm import guarded_group
    from curate.llm.server_records import SERVERS_DIR

    shadow = tmp_path / "shadow"
    (shadow / "curate").mkdir(parents=True)
    (shadow / "curate.py").write_text("raise SystemExit('the wrong curate')\n")
    (shadow / "curate" / "__init__.py").write_text("raise SystemExit('the wrong curate')\n")
    monkeypatch.chdir(shadow)
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)", str(tmp_path)]  # its own command line
    home, log = tmp_path / "home", tmp_path / "group.log"
    group = guarded_group.launch_guarded(sleeper, home=home, log_path=log, env=dict(os.environ), tmpdir=None)
    try:
        time.sleep(2)
        assert group.watchdog.poll() is None, log.read_text()
    finally:
        group.stop(timeout=5)
    wrong = dict(os.environ, PYTHONPATH=str(shadow))  # its curate is one that cannot be imported
    monkeypatch.setattr(guarded_group, "_watchdog_env", lambda: wrong)
    with pytest.raises(CurateError, match=f"watchdog .* did not start .*log {log}"):
        guarded_group.launch_guarded(sleeper, home=home, log_path=log, env=dict(os.environ), tmpdir=None)
    assert not list((home / SERVERS_DIR).glob("*.json"))  # the group went with it
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if _reads(p) == sleeper]


def _reads(cmdline: Path) -> list[str]:
    with contextlib.suppress(OSError):
        return cmdline.read_bytes().decode(errors="replace").split("\0")[:-1]
    return []


@pytest.mark.parametrize("owner_script", ["local server starting", "batch running"])
def test_the_first_ctrl_c_stops_a_local_server_start_up_or_a_batch_at_once(tmp_path, owner_script):
    """A Ctrl-C while a local server started (up to its 240 s start-up timeout) or while vllm-batch's runner ran (the
    whole batch, its answers then thrown away) did nothing until that wait ended: the waits ran in threads, and
    asyncio's shutdown waits for its threads. They wait in the event loop now, which a Ctrl-C cancels."""
    script, args = ((LAZY_SERVER_OWNER, (str(tmp_path / "home"), str(tmp_path / "server.log")))
                    if owner_script.startswith("local") else (BATCH_OWNER, (str(tmp_path),)))
    with _cleanup(tmp_path):
        owner, (leader, _, _) = _owner(tmp_path, script, *args)
        time.sleep(1)  # into the wait
        started = time.monotonic()
        owner.send_signal(signal.SIGINT)
        try:
            owner.wait(GONE_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the {owner_script}'s owner still ran {GONE_WITHIN_S:g} s after a Ctrl-C")
        assert owner.returncode != 0  # KeyboardInterrupt
        assert _gone_after(leader, GONE_WITHIN_S) is not None
        print(f"{owner_script}: owner ended {time.monotonic() - started:.1f} s after Ctrl-C")


def test_a_run_on_an_announced_server_that_stops_ends_at_the_first_refused_connection(tmp_path):
    """A `curate serve-local` killed mid-run (its watchdog stops its server) left the run retrying every remaining row
    7 times against the closed port, about 4.5 minutes; the server's process is known, so once it is gone the first
    refused connection ends the run, each row failing transient (a re-run sends them)."""
    import asyncio
    import socket

    from curate.llm.base import Request
    from curate.llm.local import LocalBackend

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    backend = LocalBackend.announced({"base_url": f"http://127.0.0.1:{port}/v1", "pid": gone.pid, "dtype": "auto"},
                                     max_retries=6, concurrency=1)
    results: list[dict] = []
    requests = [Request(f"k{i}", [{"role": "user", "content": f"row {i}"}], {}) for i in range(3)]
    asyncio.run(backend.run(requests, lambda request, result: results.append(result)))
    assert len(results) == 3 and all(r.get("reason_code") == "transient" for r in results)
    assert all(f"(pid {gone.pid}) has stopped" in r["failure"] for r in results), results
    assert not any("gave up after" in r["failure"] for r in results)


def test_a_watchdog_whose_launcher_dies_while_waiting_for_it_still_stops_the_group(tmp_path):
    """A launcher killed while it waited for its watchdog's word (a `kill -9` moments after a launch) closed the
    pipe: the watchdog's word met EPIPE, it died, and the group ran on unguarded."""
    from curate.llm.watchdog import watchdog_spec
    from curate.storage.processes import start_time

    group = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(tmp_path)],
                             start_new_session=True)
    try:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])  # the launcher, dead
        gone.wait()
        ready_read, ready_write = os.pipe()
        os.close(ready_read)  # nobody waits for the word any more
        spec = watchdog_spec(tmp_path, group.pid, start_time(group.pid), gone.pid, None, None, ready_write,
                             poll_s=0.1, grace_s=5)
        watchdog = subprocess.Popen([sys.executable, "-P", "-m", "curate.llm.watchdog", json.dumps(spec)],
                                    pass_fds=(ready_write,), env={**os.environ, "PYTHONPATH": str(REPO)},
                                    stderr=subprocess.PIPE, text=True)
        os.close(ready_write)
        _, stderr = watchdog.communicate(timeout=60)
        assert watchdog.returncode == 0, stderr
        assert _gone_after(group.pid, GONE_WITHIN_S) is not None, stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group.pid, signal.SIGKILL)
        group.wait()


def test_engine_processes_left_by_a_dead_server_are_swept_when_its_watchdog_died_too(tmp_path):
    """A server (the group's leader) that died while its engine processes ran on, its owner and watchdog killed as
    well: the sweep saw no recorded server, removed the record and left the engine processes running for good (a
    real vLLM's engine core holds the model's memory). They are the recorded group's, and stopped now."""
    from curate.llm.server_records import SERVERS_DIR, stop_orphans

    with _cleanup(tmp_path):
        owner, (leader, worker, tmpdir) = _owner(tmp_path, SERVER_OWNER, str(tmp_path / "home"),
                                                 str(tmp_path / "server.log"))
        record = tmp_path / "home" / SERVERS_DIR / f"{leader}.json"
        assert record.exists()
        os.kill(watchdog_of(leader), signal.SIGKILL)
        _kill(owner)
        os.kill(leader, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{leader}/stat").exists() and "Z" not in Path(f"/proc/{leader}/stat").read_text()[-80:]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert group_alive(leader)  # the worker runs on without its leader
        assert stop_orphans(tmp_path / "home", timeout=5) == [leader]
        assert not group_alive(leader) and not record.exists() and not Path(tmpdir).exists()


def test_the_sweep_leaves_a_group_whose_processes_run_another_program(tmp_path):
    """The members' executable must be the recorded command's interpreter: a group under that ID running another
    program is not signalled."""
    from curate.llm.server_records import SERVERS_DIR, machine, stop_orphans

    sleeper = subprocess.Popen(["sh", "-c", "sleep 600 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not [p for p in Path("/proc").glob("[0-9]*/stat")
                   if p.read_text().rsplit(")", 1)[1].split()[2] == str(sleeper.pid) and p.parent.name != str(sleeper.pid)]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        home = tmp_path / "home"
        (home / SERVERS_DIR).mkdir(parents=True)
        started = int(Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        os.kill(sleeper.pid, signal.SIGKILL)   # the leader gone, its `sleep` child left in the group
        sleeper.wait()
        (home / SERVERS_DIR / f"{sleeper.pid}.json").write_text(json.dumps(
            {"pid": sleeper.pid, "owner_pid": 999999999, "owner_started": None, "tmpdir": None, "started": started,
             "machine": machine(), "command": "\0".join([sys.executable, "-m", "vllm.entrypoints.openai.api_server"])}))
        assert group_alive(sleeper.pid)
        assert stop_orphans(home, timeout=5) == []
        assert group_alive(sleeper.pid)   # sleep is not the recorded interpreter: left alone
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sleeper.pid, signal.SIGKILL)


def test_an_owner_killed_just_after_its_group_ended_leaves_no_record_or_folder(tmp_path):
    """A notebook kernel shut down while it stopped its local server is killed seconds into the stop: the group had
    ended, its watchdog had exited on seeing that, and the kill came before the kernel removed the record and the
    temporary folder, which stayed until a later launch swept them. The watchdog now waits for the record to go."""
    with _cleanup(tmp_path):
        owner, (leader, worker, tmpdir) = _owner(tmp_path, SERVER_OWNER, str(tmp_path / "home"),
                                                 str(tmp_path / "server.log"))
        record = tmp_path / "home" / "servers" / f"{leader}.json"
        watchdog = watchdog_of(leader)
        os.killpg(leader, signal.SIGKILL)   # the group ends (as the owner's stop ends it) ...
        assert _gone_after(leader, GONE_WITHIN_S) is not None
        time.sleep(1.5)                     # ... the watchdog has looked again ...
        _kill(owner)                        # ... and the owner is killed before it removed the record and folder
        deadline = time.monotonic() + GONE_WITHIN_S
        while (record.exists() or Path(tmpdir).exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not record.exists() and not Path(tmpdir).exists()
        assert watchdog is not None and _watchdog_ended(leader)
