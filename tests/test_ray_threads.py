"""The Ray engine used by several threads of one process (a notebook, the Python API in threads): Ray and Ray Data's
settings are process-wide, so the engines share one Ray, started once and stopped when the last of them closes."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import write_jsonl

ray = pytest.importorskip("ray")


def _shards(folder, rows: int, shards: int):
    folder.mkdir()
    size = -(-rows // shards)
    for i in range(shards):
        write_jsonl(folder / f"part-{i:05d}.jsonl",
                    [{"instruction": f"Task {k % (rows - 3)}: explain step {k % (rows - 3)}.", "output": f"Step {k % (rows - 3)}."}
                     for k in range(i * size, min(rows, (i + 1) * size))])  # the last 3 rows repeat earlier ones
    return folder


def _left_running(pids, names: tuple[str, ...] = ("raylet", "gcs_server"), seconds: float = 2.0) -> list[int]:
    """Of ``pids`` (Ray's raylet and GCS a child started), those still running as one of ``names`` (not a zombie)
    after ``seconds``; returns as soon as none is (no fixed wait when all have ended)."""
    import psutil

    def running(pid: int) -> bool:
        try:
            proc = psutil.Process(pid)
            return proc.name() in names and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + seconds
    while True:
        left = [pid for pid in pids if running(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def no_ray_running():
    """Each test starts from a process with no Ray initialised (one an earlier test of the worker left is stopped)."""
    if ray.is_initialized():
        ray.shutdown()
    yield


def test_two_threads_starting_the_engine_at_once_start_one_ray_which_the_starters_close_leaves_to_the_other(
        tmp_path, monkeypatch):
    """Two threads checked ray.is_initialized() and called ray.init() without a lock: both started a Ray, and one
    failed about 75 s later with Ray's raw "Perhaps you called ray.init twice by accident?", its Ray left behind.

    And the engine that started Ray stopped it in its close() while another thread's engine was mid-pass: Ray Data
    then started a new local Ray from that thread, and about 70 s later Ray's core killed the whole process ("Failed
    to connect to GCS"); the closing engine also put Ray Data's settings back under the running one. (One Ray start
    for both: each test started and stopped a Ray of its own.)"""
    from curate.pipeline import Run, dedup
    from curate.scale import RayEngine

    assert not ray.is_initialized()
    context = ray.data.DataContext.get_current()
    before = context.raise_original_map_exception
    real_init, calls, in_flight, starter = ray.init, [], threading.Lock(), []

    def init(*args, **kwargs):  # the real ray.init, watched: a call while another runs is the race
        if not in_flight.acquire(blocking=False):
            calls.append("while another ran")
            raise RuntimeError("ray.init called while another thread's ray.init was running")
        try:
            calls.append("init")
            starter.append(threading.get_ident())
            time.sleep(0.5)  # the window Ray's own start-up (seconds) leaves the other thread
            return real_init(*args, **kwargs)
        finally:
            in_flight.release()

    monkeypatch.setattr(ray, "init", init)
    engines = [RayEngine(), RayEngine()]
    start = threading.Barrier(2)

    def connect(engine):
        start.wait()
        return engine.connect(), threading.get_ident()

    shards = _shards(tmp_path / "shards", 24, 2)
    runs = [Run(str(shards), tmp_path / name, budget=0, report=False) for name in ("first", "second")]
    try:
        with ThreadPoolExecutor(2) as threads:  # threads living through the test (see the test below for others)
            connected = [f.result() for f in [threads.submit(connect, e) for e in engines]]
            assert calls == ["init"] and [got for got, _ in connected] == [ray, ray]
            # the engine whose thread started Ray closes first
            first, second = engines if connected[0][1] == starter[0] else engines[::-1]
            threads.submit(first.load, runs[0]).result()
            threads.submit(second.load, runs[1]).result()
            threads.submit(first.close).result()
            assert ray.is_initialized()  # the second engine still uses it
            assert context.raise_original_map_exception is True  # and still runs under the engine's settings
            selection = threads.submit(second.dedup, runs[1], dedup).result()
        assert selection.decisions()["duplicate"] == 3
    finally:
        for engine in engines:
            engine.close()
    assert not ray.is_initialized()  # the last engine to close stopped the Ray an engine started
    assert context.raise_original_map_exception == before
    second.close()  # a second close changes nothing


def test_ray_started_by_an_engine_on_a_thread_that_ended_still_runs(tmp_path):
    """Ray's processes die with the thread that started them (PR_SET_PDEATHSIG): a step run on a short-lived thread
    started Ray, the thread ended, and the next step's Ray call killed the whole process (exit 1, no message; Ray's
    log: "The connection to the plasma store is failed. Terminate the process."). A process of its own: on the old
    code this is what dies."""
    import subprocess
    import sys

    shards = _shards(tmp_path / "shards", 24, 2)
    script = f"""
import threading, time
from pathlib import Path
from curate.pipeline import Run, dedup
from curate.scale import RayEngine
engine, run = RayEngine(), Run({str(shards)!r}, Path({str(tmp_path / "run")!r}), budget=0, report=False)
loader = threading.Thread(target=engine.load, args=(run,))
loader.start()
loader.join()
time.sleep(2)  # Ray's processes, had they died with the loader's thread, are gone by now
try:
    print(engine.dedup(run, dedup).decisions()["duplicate"])
finally:
    engine.close()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert (done.returncode, done.stdout.strip()) == (0, "3"), done.stderr[-2000:]


_CTRL_C_DURING_INIT = """
import json, signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as a terminal gives it (xdist's children ignore it)
import psutil, ray
from curate.scale import RayEngine, cluster

def ray_processes():
    return sorted(p.name() for p in psutil.Process().children(recursive=True)
                  if p.name() in ("raylet", "gcs_server") and p.status() != psutil.STATUS_ZOMBIE)

def settled(check, seconds):
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.2)

print("starting", flush=True)
try:
    RayEngine().connect()
    sys.exit("connected before the Ctrl-C came")
except KeyboardInterrupt:
    still = not getattr(getattr(cluster._Users, "starting", None), "started", threading.Event()).is_set()
    print("interrupted", "during init" if still else "after init", flush=True)
after_ctrl_c = {"init still under way": still}
if sys.argv[1] == "later":  # the ray.init left running on the engine's thread ends in its time
    settled(lambda: not any(t.name == "curate-ray" for t in threading.enumerate()), 60)
    after_ctrl_c = {"initialized": ray.is_initialized(), "ray": ray_processes()}
engine = RayEngine()  # "at once": while that ray.init still runs
engine.connect()
engine.close()
settled(lambda: not ray_processes(), 20)
print(json.dumps({"after_ctrl_c": after_ctrl_c, "after_the_next_engine": {"initialized": ray.is_initialized(),
                                                                       "ray": ray_processes()}}), flush=True)
"""


@pytest.mark.parametrize("next_engine", ["later", "at once"])
def test_a_ctrl_c_while_an_engine_starts_ray_leaves_no_ray_running_and_the_next_engine_starts_and_stops_one(
        next_engine):
    """A Ctrl-C while the engine's thread ran ray.init (seconds) interrupted only the wait for it: the init went on,
    and its Ray ran with no engine counting it (its raylet and GCS living as long as the process, a notebook's
    kernel); the next engine took it for one the user started and left it running when it closed. Now the Ctrl-C
    ends the wait at once, as before, and the engine's thread stops that Ray once it is up, unless an engine came for
    it meanwhile: that one uses it and stops it. A process of its own, sent SIGINT once Ray's GCS is up and before
    ray.init has returned."""
    import json
    import signal
    import subprocess
    import sys

    import psutil

    child = subprocess.Popen([sys.executable, "-c", _CTRL_C_DURING_INIT, next_engine], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen: dict[int, str] = {}  # the Ray processes the child started: pid -> name
    try:
        assert child.stdout.readline().strip() == "starting", child.stderr.read()
        deadline = time.monotonic() + 120
        while "gcs_server" not in seen.values() and time.monotonic() < deadline and child.poll() is None:
            for p in psutil.Process(child.pid).children(recursive=True):
                try:
                    if p.name() in ("raylet", "gcs_server"):
                        seen[p.pid] = p.name()
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.05)
        assert "gcs_server" in seen.values(), "Ray's GCS never started"
        child.send_signal(signal.SIGINT)
        # the Ctrl-C waits for nothing: the wait ended while ray.init still ran (a state, not a time under load)
        assert child.stdout.readline().strip() == "interrupted during init", child.stderr.read()
        said, errors = child.communicate(timeout=240)
    finally:
        child.kill()
    assert child.returncode == 0, errors[-3000:]
    states = json.loads(said.strip().splitlines()[-1])
    first = {"initialized": False, "ray": []} if next_engine == "later" else {"init still under way": True}
    assert states == {"after_ctrl_c": first, "after_the_next_engine": {"initialized": False, "ray": []}}, errors[-3000:]
    left = [seen[pid] for pid in _left_running(seen)]  # given 2 s to end
    assert not left, f"Ray processes of the child left running after it ended: {left}"


_CTRL_C_AND_AFTER = """
import json, logging, os, signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as a terminal gives it (xdist's children ignore it)
import psutil, ray
from curate.scale import RayEngine

real_init, in_flight, calls, seen = ray.init, threading.Lock(), [], set()

def slow_init(**kwargs):  # the engine's ray.init, watched and slowed: the Ctrl-Cs below come while it runs
    if not in_flight.acquire(blocking=False):
        calls.append("while another ran")
        raise RuntimeError("ray.init called while another ray.init was running")
    try:
        calls.append("init")
        time.sleep(4)
        return real_init(**kwargs)
    finally:
        in_flight.release()

ray.init = slow_init

def ray_processes():
    found = [p for p in psutil.Process().children(recursive=True)
             if p.name() in ("raylet", "gcs_server") and p.status() != psutil.STATUS_ZOMBIE]
    seen.update(p.pid for p in found)
    return sorted(p.name() for p in found)

def settled(check, seconds):
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.2)

def interrupted_connect():
    threading.Thread(target=lambda: (time.sleep(0.5), os.kill(os.getpid(), signal.SIGINT)), daemon=True).start()
    try:
        RayEngine().connect()
    except KeyboardInterrupt:
        return "interrupted"
    return "connected before the Ctrl-C came"

said, states = [interrupted_connect()], {}
if sys.argv[1] == "the user's own ray.init":  # after the engine's thread stopped the Ray its init started
    settled(lambda: not any(t.name == "curate-ray" for t in threading.enumerate()), 120)
    states["after_ctrl_c"] = {"initialized": ray.is_initialized(), "ray": ray_processes()}
    real_init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)  # (not
    # another Ray on this machine, as ray.init() with no address joins)
    engine = RayEngine()
    engine.connect()
    engine.close()
    states["the user's ray after the engine closed"] = {"initialized": ray.is_initialized(), "ray": ray_processes()}
    ray.shutdown()
else:  # a second engine's wait for that init, interrupted too; then a third engine while the init still runs
    said.append(interrupted_connect())
    engine = RayEngine()
    engine.connect()
    states["the third engine"] = {"initialized": ray.is_initialized(), "ray": ray_processes()}
    engine.close()
settled(lambda: not ray_processes(), 20)
states["at the end"] = {"initialized": ray.is_initialized(), "ray": ray_processes()}
print(json.dumps({"said": said, "calls": calls, "states": states, "pids": sorted(seen)}), flush=True)
"""


@pytest.mark.parametrize("then", ["the user's own ray.init", "a second Ctrl-C"])
def test_after_a_ctrl_c_while_an_engine_starts_ray_an_engine_stops_only_a_ray_an_engine_started(then):
    """Two ways the Ray of a Ctrl-C'd start went wrong. The user's own ray.init, after the engine's thread had stopped
    the Ray of that start, was taken for the engine's: the next engine to close stopped the user's Ray. A second
    Ctrl-C, while the next engine waited for that start, left nothing for the engine after it to wait for: it found
    Ray not yet up and called ray.init a second time while the first still ran ("assert not worker.connected"). A
    process of its own, its ray.init slowed by 4 s so that each Ctrl-C (SIGINT to the process, 0.5 s after an
    engine's connect began) comes while it runs."""
    import json
    import signal
    import subprocess
    import sys

    import psutil

    done = subprocess.run([sys.executable, "-c", _CTRL_C_AND_AFTER, then], capture_output=True, text=True,
                          timeout=300, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = done.stdout.strip().splitlines()
    got = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    left = _left_running(got.get("pids", []))  # given 2 s to end
    for pid in left:  # this test's own leftovers, not to outlive it
        psutil.Process(pid).kill()
    assert done.returncode == 0, done.stderr[-3000:]
    stopped = {"initialized": False, "ray": []}
    if then == "a second Ctrl-C":
        assert got["said"] == ["interrupted", "interrupted"] and got["calls"] == ["init"], got
        assert got["states"] == {"the third engine": {"initialized": True, "ray": ["gcs_server", "raylet"]},
                                 "at the end": stopped}, got
    else:
        assert got["said"] == ["interrupted"] and got["calls"] == ["init"], got
        assert got["states"] == {"after_ctrl_c": stopped, "at the end": stopped,
                                 "the user's ray after the engine closed": {"initialized": True,
                                                                            "ray": ["gcs_server", "raylet"]}}, got
    assert not left, f"Ray processes of the child left running after it ended: {left}"
