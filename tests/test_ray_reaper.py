"""The reaper of a driver's Ray (curate.scale.reaper) kills, once the driver is gone, what it noted of the Ray
processes' trees, and what they forked since: here with plain processes standing for Ray's (the reaper follows any
pids it is given), so the timing is the test's, not Ray's."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil

from curate.scale import reaper

FORKER = """
import os, sys, time
from pathlib import Path

trigger, out = Path(sys.argv[1]), Path(sys.argv[2])
while not trigger.exists():
    time.sleep(0.005)
pid = os.fork()  # no exec: the child runs on as a copy of this process (a task's own worker process, say)
if pid == 0:
    time.sleep(300)
    os._exit(0)
out.write_text(str(pid))
time.sleep(300)
"""


def test_a_child_forked_since_the_reapers_last_look_is_killed_with_its_parent(tmp_path):
    """The reaper notes the Ray processes' descendants once a second and, the driver gone, killed only those noted:
    a child forked in the last second outlived them (its parent, a Ray worker, killed before it could end its
    children). Now it notes again, stopping what it finds until nothing new comes, then kills."""
    trigger, out = tmp_path / "fork-now", tmp_path / "forked"
    root = subprocess.Popen([sys.executable, "-c", FORKER, str(trigger), str(out)])
    child = None
    try:
        watcher = reaper.watch({root.pid: psutil.Process(root.pid).create_time()})
        time.sleep(3 * reaper.WATCH_EVERY_S)  # the reaper has noted the root (and its start)
        trigger.write_text("")
        deadline = time.monotonic() + 60
        while not out.exists() or not out.read_text():
            assert root.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
        child = psutil.Process(int(out.read_text()))
        watcher.process.stdin.close()  # the driver's end of the pipe closes: as when it is killed
        assert watcher.process.wait(60) == 0
        assert root.wait(60) != 0  # killed
        gone, alive = psutil.wait_procs([child], timeout=30)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, "the forked child outlived the reaper"
    finally:
        for process in (root, child):
            try:
                process.kill()
            except (OSError, psutil.Error, AttributeError):
                pass
        root.wait(30)


def test_a_reaper_told_ray_was_stopped_kills_nothing(tmp_path):
    """``done``: the driver stopped Ray itself; the reaper ends and leaves every process it noted running."""
    root = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        watcher = reaper.watch({root.pid: psutil.Process(root.pid).create_time()})
        time.sleep(2 * reaper.WATCH_EVERY_S)
        watcher.done()
        assert watcher.process.poll() is not None and root.poll() is None
    finally:
        root.kill()
        root.wait(30)


def test_processes_the_reaper_stopped_are_killed_when_its_kill_pass_fails_midway(tmp_path, monkeypatch):
    """The kill pass stops (SIGSTOP) what it notes, then kills it: an error in a later look (psutil, memory) ended the
    reaper between the two and left the Ray processes stopped for good, neither running nor gone. They are killed."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    looks = []
    note = reaper._note

    def failing_note(roots, known):
        looks.append(len(known))
        if len(looks) > 1:
            raise RuntimeError("the reaper's second look fails")
        note(roots, known)

    monkeypatch.setattr(reaper, "_note", failing_note)
    try:
        root = psutil.Process(process.pid)
        try:
            reaper._kill({process.pid: root.create_time()}, {})
        except RuntimeError:
            pass
        assert len(looks) == 2  # stopped after the first look, then the second failed
        assert process.wait(30) == -9, root.status()  # killed, not left stopped
    finally:
        process.kill()
        process.wait(30)


SLOW_REAPER = """
import signal, sys, time
from pathlib import Path
from curate.scale import reaper

stopping, signal_them = Path(sys.argv[1]), reaper._signal

def slow_signal(known, pids, signum):  # a slow pass: the stopped ones wait a while for their SIGKILL
    signal_them(known, pids, signum)
    if signum == signal.SIGSTOP:
        stopping.write_text("")
        time.sleep(3)

reaper._signal = slow_signal
reaper.main(sys.argv[1:])
"""


def test_a_sigterm_to_the_reaper_between_its_stop_and_its_kill_leaves_nothing_stopped(tmp_path):
    """The reaper ended by a SIGTERM (a service manager, a user's kill) after it stopped the driver's Ray processes
    and before it killed them left them stopped for good. It lets no such signal end it while it kills."""
    stopping = tmp_path / "stopped"
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        root = psutil.Process(process.pid)
        proc = subprocess.Popen([sys.executable, "-c", SLOW_REAPER, str(stopping),
                                 f"{process.pid}:{root.create_time()!r}"], stdin=subprocess.PIPE)
        time.sleep(2 * reaper.WATCH_EVERY_S)
        proc.stdin.close()  # the driver is gone: the kill pass starts
        deadline = time.monotonic() + 60
        while not stopping.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        assert process.wait(30) == -9, root.status()  # killed, not left stopped
    finally:
        process.kill()
        process.wait(30)
