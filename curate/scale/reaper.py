"""The Ray processes a driver started on this machine, stopped when the driver dies without stopping them.

``ray.init`` on this machine starts Ray's processes as children of the driver, which die with it (Linux's
PR_SET_PDEATHSIG), but the two agents the raylet starts (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) only
notice the raylet is gone, then spend a minute or more (Ray's 60 s timeout) trying to report that to the dead GCS:
a driver killed with SIGKILL (the OOM killer, ``kill -9``) left them running after it. :func:`watch` starts a small
process that notes the driver's Ray processes and their children as they come, and kills those still running when
the driver's end of a pipe closes without the driver saying it stopped Ray itself (:meth:`Reaper.done`).

    python -m curate.scale.reaper DRIVER_PID ROOT_PID ...   (stdin: the pipe; ``done`` ends it quietly)
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


def watch(roots: list[int]) -> Reaper:
    """Start the reaper for the Ray processes ``roots`` (pids: the ones ray.init started, children of this process)."""
    process = subprocess.Popen([sys.executable, "-m", "curate.scale.reaper", str(os.getpid()), *map(str, roots)],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # a Ctrl-C to the terminal's group leaves it to its work
    return Reaper(process)


def ray_children(before: set[int]) -> list[int]:
    """The children of this process not in ``before`` whose command line is Ray's (gcs_server, raylet, its monitors)."""
    import psutil

    found = []
    for child in psutil.Process().children():
        try:
            if child.pid not in before and "ray" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def _note(roots: list[int], known: dict[int, float]) -> None:
    import psutil

    for pid in roots:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                known.setdefault(process.pid, process.create_time())
        except psutil.Error:
            continue


def _kill(known: dict[int, float]) -> None:
    import psutil

    for pid, created in known.items():
        try:
            if psutil.Process(pid).create_time() == created:  # not a later process given the same pid
                os.kill(pid, signal.SIGKILL)
        except (psutil.Error, OSError):
            continue


def main(argv: list[str]) -> None:
    roots = [int(pid) for pid in argv[1:]]
    known: dict[int, float] = {}
    while True:
        _note(roots, known)
        readable, _, _ = select.select([sys.stdin.buffer], [], [], WATCH_EVERY_S)
        if readable:
            said = os.read(sys.stdin.fileno(), 64)
            if said.startswith(b"done"):
                return
            if not said:  # the driver is gone and did not stop Ray: what it started goes too
                _kill(known)
                return


if __name__ == "__main__":
    main(sys.argv[1:])
