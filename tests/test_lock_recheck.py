"""Lock takers re-check, once they hold a lock, that the file they locked is still the one at its path (a workspace
moved aside by a failed first load's take-back, or a lock file removed by its holder, while they waited for it):
the identity comes from filelock's public ``on_acquired`` hook (storage.lock_holders), and the takers that skipped
the re-check (pool.remove_leftovers, the dry run's pause of the writers) are raced here by real processes."""

from __future__ import annotations

import threading

from curate.storage.files import file_lock
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
