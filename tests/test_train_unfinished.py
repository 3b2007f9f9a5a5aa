"""Which unfinished runs `curate train run` names beside a run (``unfinished_beside``): hand-written run records."""

import threading

from curate.storage.files import file_lock
from curate.train.runfile import TRAIN_LOCK, unfinished_beside, write_run_json


def _run(root, name, *, model="m1", ids=("a", "b"), lr=0.03, done=1, epochs=2):
    folder = root / name
    folder.mkdir(parents=True)
    write_run_json(folder / "run.json", {"model_fingerprint": model, "ids": list(ids), "skipped": {},
                                         "epochs_done": done, "config": {"epochs": epochs, "learning_rate": lr}})
    return folder


def test_only_runs_of_the_same_model_and_rows_are_named_beside_a_run(tmp_path):
    """The cache holds unfinished runs of this model and rows (other settings), of another model, of other rows:
    only the first is this run "with other settings" (all three were named, the others as if they were)."""
    this = _run(tmp_path, "this", lr=0.05, done=2)
    settings = _run(tmp_path, "settings", lr=0.03)
    _run(tmp_path, "model", model="m2")
    _run(tmp_path, "rows", ids=("a", "c"))
    _run(tmp_path, "finished", lr=0.01, done=2)
    [kept] = unfinished_beside(this)
    assert kept.folder == settings and kept.differs == {"learning_rate": 0.03} and not kept.training


def test_a_trainer_lock_held_by_the_calling_thread_is_training(tmp_path):
    """The trainer's lock is re-entrant per thread: taking it again to test it succeeded in the thread that holds it,
    which read "not training". Held here, or by another thread of this process, it is training."""
    this = _run(tmp_path, "this", lr=0.05, done=2)
    other = _run(tmp_path, "other")
    lock = file_lock(other / TRAIN_LOCK)
    with lock:
        assert unfinished_beside(this)[0].training
        seen = []
        reader = threading.Thread(target=lambda: seen.append(unfinished_beside(this)[0].training))
        reader.start()
        reader.join()
        assert seen == [True]
    assert not unfinished_beside(this)[0].training
