"""Lock takers re-check, once they hold a lock, that the file they locked is still the one at its path (a workspace
moved aside by a failed first load's take-back, or a lock file removed by its holder, while they waited for it):
the identity comes from filelock's public ``on_acquired`` hook (storage.lock_holders), and the takers that skipped
the re-check (pool.remove_leftovers, the dry run's pause of the writers, a trainer's run-folder lock) are raced here
by real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import curate
from curate.session import Workspace
from curate.storage.files import LOCK_FILE, file_lock
from curate.storage.lock_holders import locks_file_at


def test_a_held_lock_knows_whether_its_file_is_still_the_one_at_its_path(tmp_path):
    path = tmp_path / ".lock"
    lock = file_lock(path)
    with lock:
        assert locks_file_at(lock, path)
        path.unlink()
        assert not locks_file_at(lock, path)  # removed
        path.write_text("")
        assert not locks_file_at(lock, path)  # another file at the path now
    with lock:  # taken again: the new file
        assert locks_file_at(lock, path)


def test_each_thread_knows_the_file_its_own_hold_locked(tmp_path):
    """The note is per thread, as filelock's holds are: a thread that took the lock after the file was replaced
    holds the new one, and its check says so whatever the other thread's says."""
    path = tmp_path / ".lock"
    lock = file_lock(path)
    seen: list[bool] = []
    with lock:
        path.unlink()
        path.write_text("")

        def other() -> None:
            with lock:  # the file now at the path: not held by anyone
                seen.append(locks_file_at(lock, path))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=30)
        assert seen == [True] and not locks_file_at(lock, path)


PAUSED_TAKER = """
import fcntl, os, sys, time
from pathlib import Path

lock, pauses, what = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
real_flock, paused = fcntl.flock, []


def pause(name):  # say where this process is, then wait to be let go on
    (pauses / name).write_text(name)
    while not (pauses / f"{name}.go").exists():
        time.sleep(0.01)


def flock(fd, operation):  # the first lock of `lock`: between the open of the file and its lock
    if not paused and os.readlink(f"/proc/self/fd/{fd}") == lock:
        paused.append(fd)
        pause("opened")
    return real_flock(fd, operation)


fcntl.flock = flock
workspace = Path(lock).parent
if what == "open":  # opening a workspace removes what killed writers left (storage.pool.remove_leftovers)
    import curate.storage.pool as pool
    from curate.session import Workspace

    real_restore = pool.restore_moved_aside

    def restore_moved_aside(ws):  # its first step once it holds the lock: a slow process, here
        pause("locked")
        return real_restore(ws)

    pool.restore_moved_aside = restore_moved_aside
    Workspace.open(workspace)
elif what == "run":  # a whole `curate run`'s lock on OUT (storage.run_lock); `lock` is OUT/workspace/locks/run.lock
    from curate.storage.run_lock import run_lock

    with run_lock(workspace.parent.parent):
        pause("locked")
elif what == "train":  # a trainer's lock on its run folder (train.runfile.train_lock); `lock` is RUN/.train.lock
    from curate.train.runfile import train_lock

    with train_lock(workspace):
        pause("locked")
else:  # the dry run's copy of OUT/workspace, the writers paused
    import shutil

    from curate.dry_run import _writers_paused

    with _writers_paused(workspace) as there:
        pause("locked")
        if there:
            shutil.copytree(workspace, what, symlinks=True)
"""


class PausedTaker:
    """A process that takes the workspace lock ``lock`` (``what``: "open", or a folder to copy the workspace to under
    the dry run's ``_writers_paused``), paused once it has opened the lock file (before it locks it), and once it
    holds the lock (before it acts): :meth:`reached` says whether it got to a pause, :meth:`go_on` lets it on."""

    def __init__(self, lock: Path, what: str, pauses: Path):
        self.pauses = pauses
        pauses.mkdir()
        env = {**os.environ, "PYTHONPATH": str(Path(curate.__file__).resolve().parents[1])}
        self.process = subprocess.Popen([sys.executable, "-c", PAUSED_TAKER, os.path.realpath(lock), str(pauses),
                                         what], env=env, stderr=subprocess.PIPE)

    def reached(self, name: str) -> bool:
        """Wait until the process is at pause ``name`` (True) or has ended (False)."""
        deadline = time.monotonic() + 120
        while not (self.pauses / name).exists():
            if self.process.poll() is not None:
                return False
            assert time.monotonic() < deadline, f"not at {name!r} within 120 s"
            time.sleep(0.02)
        return True

    def go_on(self, name: str) -> None:
        (self.pauses / f"{name}.go").write_text("go")

    def ended(self) -> None:
        assert self.process.wait(120) == 0, self.process.stderr.read().decode()[-3000:]


def waits_for_the_new_holder(waiter: PausedTaker, take, two_at_once: str) -> None:
    """While ``take()`` holds the lock made anew at the path, ``waiter`` (paused after opening the file moved aside)
    is let go on and must not lock; it locks once the new holder lets go."""
    with take():
        waiter.go_on("opened")
        time.sleep(2)  # time for the waiter to reach its next pause, were it not waiting
        assert not (waiter.pauses / "locked").exists(), two_at_once
    assert waiter.reached("locked")
    waiter.go_on("locked")
    waiter.ended()


def moved_aside(path: Path, remade: bool = True) -> None:
    """A failed first load's take-back of the workspace at ``path`` as far as its rename: ``remove_unused`` renames
    it aside under its lock and deletes it once it let go (in between, the lock file is whole in the folder moved
    aside, and a process that opened it before can lock it); ``remade``: then another load's first step, the
    folder made anew (filelock locks a file only where its folder is at the path)."""
    with Workspace(path).lock():
        path.rename(path.with_name(f".{path.name}.{'cd' * 16}.old"))
    if remade:
        path.mkdir()


def test_opening_a_workspace_removes_no_live_file_of_the_one_made_anew_at_its_path(tmp_path):
    """Opening a workspace removes what killed writers left, under its lock: a process that opened the lock file
    before a take-back moved the workspace aside, and locked it after, held the lock of no workspace; it removed the
    temporary pool of a load writing into the new workspace at the path meanwhile (whose rename then failed). Now
    it sees the file it locked is not the one at the path and leaves everything."""
    path = tmp_path / "ws"
    Workspace(path)._make()  # a first load's new workspace, before it reads its source
    opener = PausedTaker(path / LOCK_FILE, "open", tmp_path / "pauses")
    assert opener.reached("opened")
    moved_aside(path)
    opener.go_on("opened")
    holds_old = opener.reached("locked")  # the old code: it holds the lock of the file moved aside
    Workspace(path)._make()  # the other load makes the workspace in it (the folder moved aside goes) ...
    with Workspace(path).lock():  # ... and writes its pool
        live = path / f".pool.{'ab' * 16}.tmp"
        live.write_bytes(b"rows being written")
        if holds_old:
            opener.go_on("locked")
        opener.ended()
        assert live.read_bytes() == b"rows being written"
    assert not holds_old


def test_the_dry_runs_copy_pauses_the_writers_of_the_workspace_at_the_path_not_of_one_moved_aside(tmp_path):
    """The dry run copies OUT/workspace with its writers paused (its lock held). It held the lock of a file moved
    aside with the workspace (a take-back) after it was opened, and copied the new workspace at the path while its
    load wrote. Now it takes the lock of the file at the path: here none (no workspace to copy, at that moment)."""
    path, copy = tmp_path / "out" / "workspace", tmp_path / "copy"
    Workspace(path)._make()
    copier = PausedTaker(path / LOCK_FILE, str(copy), tmp_path / "pauses")
    assert copier.reached("opened")
    moved_aside(path)
    copier.go_on("opened")
    assert copier.reached("locked")
    Workspace(path)._make()
    with Workspace(path).lock():  # the new workspace's load, mid-write: a file only its finished write removes
        (path / "half-written").write_text("")
        copier.go_on("locked")
        copier.ended()
        (path / "half-written").unlink()
    assert not (copy / "half-written").exists()


def test_the_dry_runs_copy_waits_for_the_writer_of_a_lock_file_made_anew_and_writes_nothing(tmp_path):
    """Its lock file replaced while it was opened (the workspace moved aside and made anew), the copy waits for the
    new workspace's writer, then copies it; and the lock file is never made by the copy (it wrote under OUT)."""
    path, copy = tmp_path / "out" / "workspace", tmp_path / "copy"
    Workspace(path)._make()
    copier = PausedTaker(path / LOCK_FILE, str(copy), tmp_path / "pauses")
    assert copier.reached("opened")
    moved_aside(path, remade=False)
    Workspace(path)._make()
    with Workspace(path).lock():
        (path / "half-written").write_text("")
        copier.go_on("opened")
        time.sleep(2)  # time for it to reach its next pause, were it not waiting
        assert not (copier.pauses / "locked").exists()
        (path / "half-written").unlink()
    assert copier.reached("locked")
    copier.go_on("locked")
    copier.ended()
    assert (copy / "manifest.json").exists() and not (copy / "half-written").exists()
    bare = tmp_path / "bare"
    bare.mkdir()
    copier = PausedTaker(bare / LOCK_FILE, str(tmp_path / "copy2"), tmp_path / "pauses2")
    assert copier.reached("locked")  # no lock file: nothing to open, nothing paused, nothing made
    copier.go_on("locked")
    copier.ended()
    assert list(bare.iterdir()) == [] and not (tmp_path / "copy2").exists()


def test_a_run_waiting_for_out_does_not_run_beside_the_one_holding_it_on_a_lock_file_moved_aside(tmp_path):
    """`curate run`'s lock on OUT was checked, once taken, only for a file at its path: its file moved aside with
    the workspace after it was opened (a take-back), the waiting run held the lock of that one and ran beside the
    run holding the new file at the path. Now it takes the file at the path, and waits for that run."""
    from curate.storage.run_lock import RUN_LOCK, run_lock

    out = tmp_path / "out"
    with run_lock(out):  # the lock file there, as a run before left it
        pass
    path = out / "workspace"
    Workspace(path)._make()
    waiter = PausedTaker(path / "locks" / RUN_LOCK, "run", tmp_path / "pauses")
    assert waiter.reached("opened")
    moved_aside(path, remade=False)
    waits_for_the_new_holder(waiter, lambda: run_lock(out), "two runs on OUT at once")  # another run makes OUT anew


def test_a_trainer_waiting_for_its_run_folder_does_not_train_beside_one_holding_a_lock_file_made_anew(tmp_path):
    """A trainer took its run folder's lock with no re-check: the folder moved aside (an unfinished run kept
    elsewhere) after it opened the lock file, and made anew by another trainer, it locked the file moved aside and
    trained into the folder beside that trainer. Now it takes the file at the path, and waits for that trainer."""
    from curate.train.runfile import TRAIN_LOCK, train_lock

    run = tmp_path / "runs" / "abc"
    with train_lock(run):  # the lock file there, as a trainer before left it
        pass
    waiter = PausedTaker(run / TRAIN_LOCK, "train", tmp_path / "pauses")
    assert waiter.reached("opened")
    run.rename(run.with_name("abc.kept"))
    waits_for_the_new_holder(waiter, lambda: train_lock(run), "two trainers of one run folder at once")


def test_a_trainer_waiting_for_a_run_folder_removed_meanwhile_makes_it_again(tmp_path):
    """The folder removed while a trainer waited for its lock (held by another thread here): the trainer raised
    FileNotFoundError; it makes the folder again and takes its lock there."""
    import shutil

    from curate.train.runfile import TRAIN_LOCK, train_lock

    run = tmp_path / "abc"
    done: list[bool] = []
    with train_lock(run):
        def trainer() -> None:
            with train_lock(run):
                done.append((run / TRAIN_LOCK).exists())

        thread = threading.Thread(target=trainer)
        thread.start()
        time.sleep(0.5)
        shutil.rmtree(run)
    thread.join(timeout=60)
    assert done == [True]
