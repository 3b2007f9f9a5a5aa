"""The Ray processes a driver started on this machine, stopped when the driver dies without stopping them.

``ray.init`` on this machine starts Ray's processes as children of the driver, which die with it (Linux's
PR_SET_PDEATHSIG), but the two agents the raylet starts (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) only
notice the raylet is gone, then spend a minute or more (Ray's 60 s timeout) trying to report that to the dead GCS:
a driver killed with SIGKILL (the OOM killer, ``kill -9``) left them running after it. :func:`watch` starts a small
process that notes the driver's Ray processes and their children as they come, and kills those still running when
the driver's end of a pipe closes without the driver saying it stopped Ray itself (:meth:`Reaper.done`). The
descendants are followed whatever they run (a child a worker forked without exec runs Ray's command line, or its
task's); a Ray worker ends its own children as it exits (Ray's ``kill_child_processes_on_worker_exit``), but one the
reaper kills cannot, so before the kill the reaper notes once more and stops what it finds until nothing new comes
(:func:`_kill`): a child forked since its last look goes too. A process that detached itself (a double fork, its
parent gone before a look) is no descendant any more and is not followed.

A pid is only followed while it is the process noted under it (its start time): a Ray process that died and whose
pid went to another program is not that program's reaper.

    python -m curate.scale.reaper DRIVER_PID ROOT_PID:START_TIME ...   (stdin: the pipe; ``done`` ends it quietly)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

DONE_WAIT_S = 5.0  # the most the driver waits for the reaper to end once told Ray was stopped
WATCH_EVERY_S = 1.0  # how often the reaper notes the Ray processes' children (the agents start after ray.init)


class Reaper:
    """The reaper process of one Ray start (see the module doc)."""

    def __init__(self, process: subprocess.Popen):
        self.process = process

    def done(self) -> None:
        """Ray was stopped by the driver: the reaper ends without killing anything."""
        try:
            self.process.stdin.write(b"done\n")
            self.process.stdin.close()
            self.process.wait(timeout=DONE_WAIT_S)  # it ends at once: not left a zombie for the process's life
        except (OSError, subprocess.TimeoutExpired):  # already gone, or slow to end: it ends on its own
            pass


def watch(roots: dict[int, float]) -> Reaper:
    """Start the reaper for the Ray processes ``roots`` (pid: start time; the ones ray.init started, children of this
    process)."""
    process = subprocess.Popen([sys.executable, "-m", "curate.scale.reaper", str(os.getpid()),
                                *(f"{pid}:{created!r}" for pid, created in roots.items())],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # a Ctrl-C to the terminal's group leaves it to its work
    return Reaper(process)


def ray_children(before: set[int]) -> dict[int, float]:
    """The children of this process not in ``before`` that run a program of Ray's installed package (gcs_server,
    raylet, its dashboard and monitors: each names a file under that folder), with their start times. A command line
    that only has "ray" in it (``array``, ``/home/raymond``) is not Ray's."""
    import importlib.util

    import psutil

    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        return {}
    ray_dirs = tuple(os.path.join(os.path.realpath(d), "") for d in spec.submodule_search_locations)
    found = {}
    for child in psutil.Process().children():
        try:
            if child.pid not in before and any(os.path.realpath(arg).startswith(ray_dirs)
                                               for arg in child.cmdline() if arg.startswith(os.sep)):
                found[child.pid] = child.create_time()
        except psutil.Error:
            continue
    return found


def _note(roots: dict[int, float], known: dict[int, float]) -> None:
    """Add the ``roots`` still running (the same start time: not a later process given the pid) and their
    descendants to ``known`` (pid: start time), and the descendants of the ``known`` still running (a worker whose
    raylet is gone: its children are no root's descendants any more)."""
    import psutil

    # one pass over the process table a look: psutil's children() reads the whole table per call, and a call per
    # known process (every Ray worker) cost the reaper a look per worker each second
    table: dict[int, tuple[int, float]] = {}  # pid: (parent pid, start time)
    for process in psutil.process_iter(["ppid", "create_time"]):
        table[process.pid] = (process.info["ppid"], process.info["create_time"])
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    # still running, and the process noted (not a later one given the pid)
    todo = [pid for pid, created in [*roots.items(), *known.items()] if pid in table and table[pid][1] == created]
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            known[pid] = table[pid][1]  # a pid noted before and reused since by a descendant: the new one's
            todo.extend(children.get(pid, ()))


def _signal(known: dict[int, float], pids: list[int], signum: int) -> None:
    import psutil

    for pid in pids:
        try:
            if psutil.Process(pid).create_time() == known[pid]:  # not a later process given the same pid
                os.kill(pid, signum)
        except (psutil.Error, OSError):
            continue


def _kill(roots: dict[int, float], known: dict[int, float]) -> None:
    """Kill what the driver's Ray started. Noted once more first, then stopped (SIGSTOP: a stopped process forks no
    more) and noted again until a pass finds none new: a child forked since the last note (up to
    ``WATCH_EVERY_S`` ago: a task's own process, forked without exec) is killed too, not left running as its
    parent, the worker that would have ended it (Ray's kill_child_processes_on_worker_exit), is killed."""
    stopped: set[int] = set()
    try:
        while True:
            _note(roots, known)
            new = [pid for pid in known if pid not in stopped]
            if not new:
                break
            _signal(known, new, signal.SIGSTOP)
            stopped.update(new)
    finally:  # whatever ended the look (an error of its own): what it stopped is killed, never left stopped
        _signal(known, list(known), signal.SIGKILL)


def main(argv: list[str]) -> None:
    roots = {int(pid): float(created) for pid, created in (arg.split(":") for arg in argv[1:])}
    known: dict[int, float] = {}
    while True:
        _note(roots, known)
        readable, _, _ = select.select([sys.stdin.buffer], [], [], WATCH_EVERY_S)
        if readable:
            said = os.read(sys.stdin.fileno(), 64)
            if said.startswith(b"done"):
                return
            if not said:  # the driver is gone and did not stop Ray: what it started goes too
                for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # ended between its SIGSTOPs and
                    signal.signal(signum, signal.SIG_IGN)  # SIGKILLs, it left them stopped for good; it ends in moments
                _kill(roots, known)
                return


if __name__ == "__main__":
    main(sys.argv[1:])
