"""Start a vLLM process group (a server, a batch runner) that cannot outlive the curate process starting it.

:func:`launch_guarded` starts the command in a session of its own (stopping the group takes vLLM's engine and worker
processes along), records it (curate.llm.server_records: a later launch sweeps it should everything else fail) and
starts its watchdog (curate.llm.watchdog: it stops the group within about ``guard_poll_s`` of this process's death,
a SIGKILL or the OOM killer included). :meth:`GuardedGroup.stop` stops the group, its watchdog, and removes its
temporary folder and record.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from curate.defaults import BACKEND
from curate.errors import CurateError
from curate.llm.server_records import forget, record
from curate.llm.watchdog import watchdog_spec
from curate.storage.processes import start_time


@dataclass
class GuardedGroup:
    """A launched process group: its leader ``proc``, its ``watchdog``, where its record lies, its temporary folder."""
    proc: subprocess.Popen
    watchdog: subprocess.Popen
    home: Path
    tmpdir: str | None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = BACKEND.server_stop_grace_s, remove_tmpdir: bool = True) -> None:
        """Stop the group (:func:`stop_process_group`), remove the temporary folder (unless its maker removes it) and
        the record, then stop the watchdog (which removes them itself if this process is killed before it has)."""
        stop_process_group(self.proc, timeout)
        if remove_tmpdir and self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        forget(self.home, self.proc.pid)
        if self.watchdog.poll() is None:
            self.watchdog.send_signal(signal.SIGKILL)  # it holds nothing; waiting for its next look costs a second
        self.watchdog.wait()


def launch_guarded(command: list[str], *, home: Path, log_path: Path, env: dict[str, str],
                   tmpdir: str | None) -> GuardedGroup:
    """Start ``command`` (output to ``log_path``, truncated) in its own session, record it under ``home`` and start
    its watchdog, whose line (if it stops the group) lands in the same log: both append."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            record(home, proc.pid, tmpdir, command)
            watchdog = _start_watchdog(home, proc.pid, tmpdir, log, log_path)
        except BaseException:
            stop_process_group(proc, 0.0)
            forget(home, proc.pid)
            raise
    finally:
        os.close(log)
    return GuardedGroup(proc, watchdog, Path(home), tmpdir)


def _start_watchdog(home: Path, pid: int, tmpdir: str | None, log: int, log_path: Path) -> subprocess.Popen:
    """The watchdog of group ``pid``, once it says it watches (a byte on a pipe, after its imports): one that cannot
    start (an import that fails, a killed process) is an error naming the log, not a group left unguarded. ``-P``:
    the current folder is not searched first, where a ``curate.py`` or another checkout would be imported instead."""
    ready_read, ready_write = os.pipe()
    try:
        spec = watchdog_spec(home, pid, start_time(pid), os.getpid(), start_time(os.getpid()), tmpdir, ready_write)
        watchdog = subprocess.Popen([sys.executable, "-P", "-m", "curate.llm.watchdog", json.dumps(spec)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                    env=_watchdog_env(), start_new_session=True, pass_fds=(ready_write,))
        os.close(ready_write)
        ready_write = -1
        poller = select.poll()  # not select.select: it refuses a descriptor numbered 1024 or more
        poller.register(ready_read, select.POLLIN)
        said = poller.poll(BACKEND.guard_start_timeout_s * 1000) and os.read(ready_read, 1)
    finally:
        os.close(ready_read)
        if ready_write != -1:
            os.close(ready_write)
    if not said:
        if watchdog.poll() is None:
            watchdog.kill()
        watchdog.wait()
        raise CurateError(f"the watchdog of a vLLM process group did not start within "
                          f"{BACKEND.guard_start_timeout_s:g} s (exit {watchdog.returncode}); log {log_path}")
    return watchdog


def _watchdog_env() -> dict[str, str]:
    """This process's environment, with curate importable where it is imported from (a checkout on no path)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def stop_process_group(proc: subprocess.Popen, timeout: float = BACKEND.server_stop_grace_s) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``start_new_session=True``), wait up to ``timeout``
    seconds, then SIGKILL what is left of the group: vLLM's engine and worker processes go with their parent
    instead of lingering (a SIGKILL of the parent alone leaves them running, holding memory and a core)."""
    def signal_group(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    if proc.poll() is None:
        signal_group(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    signal_group(signal.SIGKILL)
    proc.wait(10)  # a SIGKILLed leader that still has not exited is a real fault: let TimeoutExpired say so
