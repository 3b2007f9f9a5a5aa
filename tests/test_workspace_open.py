"""Opening a workspace writes nothing: ``Workspace(path)`` at a path holding none is a new workspace that its first
write makes (``ws.load``), its reads say ``no workspace at PATH (did you mean ...?)``; a first load that fails takes
back the folder it made, never rows another load put there meanwhile; ``curate info`` of a typo makes nothing."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os

import pytest

from curate import pools
from curate.errors import InputError, NotInWorkspaceError, WorkspaceError
from curate.exit_codes import EXIT_CONFIG
from curate.session import Workspace
from curate.storage import creation
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl


def _pool(path, prefix: str, n: int = 3):
    return write_jsonl(path, [{"instruction": f"{prefix} question {i}", "input": "", "output": f"{prefix} answer {i}"}
                              for i in range(n)])


def test_opening_a_typo_writes_nothing_and_its_reads_name_the_workspace_meant(tmp_path):
    Workspace(tmp_path / "session").load(_pool(tmp_path / "pool.jsonl", "a"))
    typo = Workspace(tmp_path / "sesion")
    assert not (tmp_path / "sesion").exists() and not typo.exists
    assert "new: its first write" in repr(typo) and "new: its first write" in typo._repr_html_()  # Jupyter's view
    for read in (typo.info, lambda: typo.columns, lambda: typo.selections, lambda: typo.pool,
                 lambda: typo.manifest, lambda: typo.selection("deita")):
        with pytest.raises(NotInWorkspaceError) as err:
            read()
        assert str(err.value).startswith(f"no workspace at {tmp_path / 'sesion'} (did you mean "
                                         f"'{tmp_path / 'session'}'?)"), err.value
    assert not (tmp_path / "sesion").exists()  # the reads wrote nothing either


def test_the_first_write_makes_the_workspace(tmp_path):
    ws = Workspace(tmp_path / "new")
    summary = ws.load(_pool(tmp_path / "pool.jsonl", "a"))
    assert summary["rows_added"] == 3 and ws.exists and len(Workspace.open(tmp_path / "new")) == 3
    bare = Workspace(tmp_path / "bare")  # any write under the lock makes it, not only a load
    bare.add_column("score", [1.0], {"kind": "test"}, ids=["r1"])
    assert Workspace.open(tmp_path / "bare").columns["score"]["kind"] == "test"


def test_a_failed_first_load_leaves_no_folder_and_no_parent_it_made(tmp_path):
    ws = Workspace(tmp_path / "a" / "b" / "ws")
    with pytest.raises(InputError, match="missing.jsonl"):
        ws.load(tmp_path / "missing.jsonl")
    assert list(tmp_path.iterdir()) == []
    ws.load(_pool(tmp_path / "pool.jsonl", "a"))  # the same object loads once the source is there
    assert len(ws) == 3


def test_a_failed_first_load_keeps_the_rows_another_load_put_there(tmp_path):
    """Two loads into one new workspace: the one that fails after the other has loaded takes nothing back (the
    command line's cleanup removed the whole folder, the other load's rows with it)."""
    path = tmp_path / "ws"
    good = _pool(tmp_path / "b.jsonl", "b")

    def rows_then_failure():
        yield from pools.read(_pool(tmp_path / "a.jsonl", "a")).rows[:2]
        Workspace(path).load(good)  # another loader, while this one is still reading its source
        raise InputError(tmp_path / "a.jsonl", "line 3", "malformed")

    with pytest.raises(InputError, match="malformed"):
        Workspace(path).load(pools.RowStream(str(tmp_path / "a.jsonl"), rows_then_failure()))
    ws = Workspace.open(path)
    assert len(ws) == 3 and [s["source"] for s in ws.manifest["sources"]] == [str(good)]


def test_curate_info_of_a_typo_makes_nothing_and_names_the_workspace_meant(tmp_path):
    Workspace(tmp_path / "session").load(_pool(tmp_path / "pool.jsonl", "a"))
    r = curate_in_process("info", tmp_path / "sesion")
    assert r.returncode == EXIT_CONFIG, r.stderr
    assert f"(did you mean '{tmp_path / 'session'}'?)" in r.stderr
    assert not (tmp_path / "sesion").exists()


def test_curate_load_of_a_missing_source_makes_no_folder(tmp_path):
    r = curate_in_process("load", tmp_path / "missing.jsonl", "-w", tmp_path / "out" / "ws")
    assert r.returncode == 65, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_curate_info_of_a_runs_out_folder_names_its_workspace(tmp_path):
    """`curate info OUT` of a run said 'not a curate workspace (no manifest.json); make one: curate load ...'."""
    Workspace(tmp_path / "out" / "workspace").load(_pool(tmp_path / "pool.jsonl", "a"))
    r = curate_in_process("info", tmp_path / "out")
    assert r.returncode == EXIT_CONFIG
    assert r.stderr == (f"error: {tmp_path / 'out'}: a run's out folder, not a workspace; its workspace is "
                        f"{tmp_path / 'out' / 'workspace'} (e.g. curate info {tmp_path / 'out' / 'workspace'})\n")


def test_a_failed_first_load_into_an_empty_folder_keeps_the_folder(tmp_path):
    """The take-back of a failed first load must not remove a folder the user made for the workspace."""
    (tmp_path / "ws").mkdir()
    with pytest.raises(InputError):
        Workspace(tmp_path / "ws").load(tmp_path / "missing.jsonl")
    assert [p.name for p in tmp_path.iterdir()] == ["ws"] and list((tmp_path / "ws").iterdir()) == []


def test_a_removal_at_a_typo_makes_no_workspace(tmp_path):
    """ws.keep_rows and ws.remove_selection at a path holding no workspace have nothing to remove: they took the
    lock, whose first write made an empty workspace there (a typo'd path on disk, its later reads 'no pool')."""
    typo = Workspace(tmp_path / "sesion")
    assert typo.keep_rows(["r1"]) == 0
    typo.remove_selection("deita")
    assert not (tmp_path / "sesion").exists() and not typo.exists


def test_a_new_workspace_pickles_and_copies_as_a_new_one(tmp_path):
    """A copy reopened its path with create=False: deepcopy or pickle of Workspace(new path) (a worker's copy,
    multiprocessing, joblib) raised 'not a curate workspace' once Workspace(path) stopped making the folder."""
    import copy
    import pickle
    import shutil

    ws = Workspace(tmp_path / "new")
    twins = pickle.loads(pickle.dumps(ws)), copy.deepcopy(ws)
    assert all(twin.path == ws.path and not twin.exists for twin in twins)
    twins[0].load(_pool(tmp_path / "pool.jsonl", "a"))  # a copy's first write makes it, as the original's would
    assert len(Workspace.open(tmp_path / "new")) == 3 and len(twins[1]) == 3
    (tmp_path / "gone").mkdir()
    made = Workspace(tmp_path / "gone" / "ws")
    made.load(_pool(tmp_path / "pool.jsonl", "a"))
    state = pickle.dumps(made)
    shutil.rmtree(tmp_path / "gone")
    with pytest.raises(NotInWorkspaceError):  # a workspace that was there and is gone is still an error, not new
        pickle.loads(state)


def test_a_workspace_opened_during_a_failed_first_load_loads_afterwards(tmp_path):
    """Another session opened the new workspace while its first load ran; the load failed and took it back. That
    session's ws.load said 'the workspace disappeared during this run ... run the command again to start anew',
    and said it again at every retry: its object still took the workspace for made."""
    path, opened = tmp_path / "ws", []

    def rows_then_failure():
        yield from pools.read(_pool(tmp_path / "a.jsonl", "a")).rows[:2]
        opened.append(Workspace(path))  # a notebook opens it now: it is there, made by the load under way
        raise InputError(tmp_path / "a.jsonl", "line 3", "malformed")

    with pytest.raises(InputError, match="malformed"):
        Workspace(path).load(pools.RowStream(str(tmp_path / "a.jsonl"), rows_then_failure()))
    assert not path.exists() and opened[0].exists is False  # taken back: the object that opened it made sees it gone
    assert opened[0].load(_pool(tmp_path / "b.jsonl", "b"))["rows_added"] == 3
    assert len(Workspace.open(path)) == 3


class _Waiting(logging.Handler):
    """Sets ``event`` once curate logs that this process waits for the workspace lock (after lock_notice_s)."""

    def __init__(self, event):
        super().__init__()
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if "waiting for the workspace lock" in record.getMessage():
            self.event.set()


def _wait_for_the_lock(path, waiting, results) -> None:
    """(another process) Hold the workspace lock at ``path``: ``results`` gets what happened."""
    try:
        with Workspace(path).lock(on_wait=waiting.set):
            results.put(("entered", None))
    except WorkspaceError as exc:
        results.put(("error", str(exc)))


def _load_into(path, source, waiting, results) -> None:
    """(another process) Load ``source`` into the workspace at ``path``: ``results`` gets the summary or the error."""
    logging.getLogger("curate").addHandler(_Waiting(waiting))
    try:
        results.put(("summary", Workspace(path).load(source)))
    except Exception as exc:  # noqa: BLE001  (the test's assertion names it)
        results.put(("error", repr(exc)))


def _take_back_while_waited_on(path, wait, *args, keep_folder: bool = False):
    """A failed first load's take-back (``remove_unused``: the unused new workspace renamed aside, then deleted; with
    ``keep_folder``, emptied) while ``wait(path, *args, waiting, results)`` in another process waits for the
    workspace's lock; what it put."""
    first = Workspace(path)
    first._make()  # what a first load makes before it reads its source
    context = multiprocessing.get_context("spawn")
    waiting, results = context.Event(), context.Queue()
    with first.lock():
        process = context.Process(target=wait, args=(path, *args, waiting, results))
        process.start()
        assert waiting.wait(120)
        assert creation.remove_unused(first, keep_folder=keep_folder)  # the take-back, while the other process waits
    try:
        return results.get(timeout=120)
    finally:
        process.join(60)


def test_a_lock_waited_on_in_a_workspace_a_take_back_moved_aside_is_not_held(tmp_path):
    """The waiter held the lock of the file moved aside with the folder and went on as if it held the workspace's
    (a third process making the workspace anew holds the real one at the same time), or, its wait started as the
    folder went, the lock of a bare folder filelock made anew there, and wrote there."""
    what, detail = _take_back_while_waited_on(tmp_path / "ws", _wait_for_the_lock)
    assert what == "error" and "the workspace disappeared during this run" in detail, (what, detail)
    assert not Workspace(tmp_path / "ws").exists


def test_a_second_load_waiting_while_the_first_takes_the_new_workspace_back_makes_it_anew(tmp_path):
    """The second load registers its staging folder under the lock: taken back before it did, it makes the workspace
    anew (it failed with 'the workspace disappeared during this run')."""
    good = _pool(tmp_path / "b.jsonl", "b")
    what, detail = _take_back_while_waited_on(tmp_path / "ws", _load_into, good)
    assert what == "summary" and detail["rows_added"] == 3, (what, detail)
    assert len(Workspace.open(tmp_path / "ws")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.jsonl", "ws"]  # nothing hidden left beside it


def test_a_folder_a_take_back_left_aside_goes_when_the_workspace_is_made_again(tmp_path):
    """A take-back killed part way (or whose delete failed) left the hidden ``.NAME.<hex>.old``: for good."""
    aside = tmp_path / f".ws.{'ab' * 16}.old"
    (aside / "columns").mkdir(parents=True)
    (aside / "manifest.json").write_text("{}")
    other = tmp_path / ".ws.notours.old"
    other.mkdir()
    Workspace(tmp_path / "ws").load(_pool(tmp_path / "pool.jsonl", "a"))
    assert not aside.exists() and other.exists()  # only the names a take-back gives


def test_a_second_load_waiting_while_the_first_empties_a_folder_that_was_there_makes_the_workspace_anew(tmp_path):
    """A first load into an empty folder that was there takes back what it made and keeps the folder: the second
    load, which got the lock then, registered its staging folder in a folder that was no workspace (no manifest)."""
    (tmp_path / "ws").mkdir()
    good = _pool(tmp_path / "b.jsonl", "b")
    what, detail = _take_back_while_waited_on(tmp_path / "ws", _load_into, good, keep_folder=True)
    assert what == "summary" and detail["rows_added"] == 3, (what, detail)
    assert len(Workspace.open(tmp_path / "ws")) == 3


def _hold_the_lock_file(lock_path, holding, release) -> None:
    """(another process) Hold the lock at ``lock_path`` as every workspace writer does, until ``release``."""
    from curate.storage.files import held
    with held(lock_path, None):
        holding.set()
        release.wait(120)


def test_a_take_back_that_keeps_the_folder_removes_its_lock_file_while_it_holds_it(tmp_path, monkeypatch):
    """The lock file went after the lock was let go: a process that took the lock in between held that file's lock,
    while a third, finding no file, made a new one and took its lock too: two held the workspace's lock."""
    fcntl = pytest.importorskip("fcntl")
    (tmp_path / "ws").mkdir()
    first = Workspace(tmp_path / "ws")
    first._make()
    lock_path = tmp_path / "ws" / ".lock"
    context = multiprocessing.get_context("spawn")
    holding, release = context.Event(), context.Event()
    other = context.Process(target=_hold_the_lock_file, args=(lock_path, holding, release))
    real_lock = creation.workspace_lock

    @contextlib.contextmanager
    def taken_as_soon_as_let_go(ws, on_wait):
        with real_lock(ws, on_wait):
            yield
        other.start()  # the other process takes the lock the moment the take-back lets go of it
        assert holding.wait(120)

    monkeypatch.setattr(creation, "workspace_lock", taken_as_soon_as_let_go)
    try:
        assert creation.remove_unused(first, keep_folder=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)  # a third process's first step: the file at the path
        try:
            with pytest.raises(BlockingIOError):  # ... whose lock the other process holds
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        release.set()
        if other.pid is not None:  # started
            other.join(60)
