"""Curate's Python API used from several threads of one process: one Workspace object shared by threads, or one
object per thread over the same folder. Each test forces its interleaving with events (no sleeps to hope for it),
and every wait is bounded."""

import json
import logging
import threading

import numpy as np

from curate.session import Workspace
from curate.storage import columns
from tests.conftest import write_jsonl

WAIT_S = 60


def _rows(n: int, start: int = 0) -> list[dict]:
    return [{"instruction": f"task {i}", "output": f"answer {i}"} for i in range(start, start + n)]


def _in_thread(target) -> tuple[threading.Thread, list]:
    """``target()`` in a started thread; the list gets its result, or the exception it raised."""
    got: list = []

    def run():
        try:
            got.append(target())
        except BaseException as exc:  # noqa: BLE001 (handed to the test, which fails on it)
            got.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, got


def test_a_reading_stretch_belongs_to_its_thread(tmp_path, monkeypatch):
    """Thread A starts ``reading()``, then thread B starts its own; A's stretch ends while B is inside a read: B's
    stretch goes on (it was treated as nested in A's, which set the memo to None under it: a TypeError)."""
    ws = Workspace(tmp_path / "ws")
    ws.load(_rows(200))
    for name in ("a", "b"):
        ws.add_column(name, [[float(i % 6)] for i in range(200)], {"kind": "user", "reducer": "mean"})
    in_read, a_done = threading.Event(), threading.Event()
    real_read = columns.read_arrow

    def read_arrow(path):  # B's first read of column b waits until A's stretch has ended
        if threading.current_thread().name == "B" and path.name == "b.arrow" and not in_read.is_set():
            in_read.set()
            assert a_done.wait(WAIT_S)
        return real_read(path)

    monkeypatch.setattr(columns, "read_arrow", read_arrow)

    def b_reads():
        with ws.reading():
            first = ws.row_values("b")
            reads = []
            monkeypatch.setattr(columns, "read_arrow", lambda path: reads.append(path) or real_read(path))
            assert ws.row_values("b") == first
            return first, reads

    with ws.reading():
        assert ws.row_values("a")[:3] == [0.0, 1.0, 2.0]
        b = threading.Thread(target=lambda: got.append(_caught(b_reads)), name="B", daemon=True)
        got: list = []
        b.start()
        assert in_read.wait(WAIT_S)
    a_done.set()
    b.join(WAIT_S)
    assert not b.is_alive()
    assert not isinstance(got[0], BaseException), repr(got[0])
    values, reads = got[0]
    assert values[:7] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0]
    assert reads == []  # B's stretch kept what it read after A's ended


def _caught(call):
    try:
        return call()
    except BaseException as exc:  # noqa: BLE001
        return exc


def test_two_threads_reading_in_stretches_on_one_workspace(tmp_path):
    """The audit's repro, bounded: two threads loop ``with ws.reading(): ws.row_values(name)`` on one object."""
    n = 50_000
    ws = Workspace(tmp_path / "ws")
    ws.load(_rows(n))
    for name in ("a", "b"):
        ws.add_column(name, [[float(i % 6)] for i in range(n)], {"kind": "user", "reducer": "mean"})
    stop = threading.Event()

    def loop(name):
        rounds = 0
        while not stop.is_set() and rounds < 200:
            with ws.reading():
                assert len(ws.row_values(name)) == n
            rounds += 1
        return rounds

    threads = [_in_thread(lambda name=name: loop(name)) for name in ("a", "b")]
    stop.wait(3)
    stop.set()
    for thread, got in threads:
        thread.join(WAIT_S)
        assert not thread.is_alive() and not isinstance(got[0], BaseException), repr(got)


def test_the_column_lock_wait_names_a_thread_too(tmp_path, caplog):
    ws = Workspace(tmp_path / "ws")
    held, release = threading.Event(), threading.Event()

    def hold():
        with ws.column_lock("quality"):
            held.set()
            release.wait(WAIT_S)

    thread, _ = _in_thread(hold)
    assert held.wait(WAIT_S)
    threading.Timer(0.3, release.set).start()
    with caplog.at_level(logging.WARNING, logger="curate"), ws.column_lock("quality"):
        pass
    thread.join(WAIT_S)
    assert "waiting for another process or thread writing column 'quality'" in caplog.text


class _Length:
    """A row step: the instruction's length; on its first run another thread loads a source that keeps only
    half of the pool's rows (``keep_only_source``), through a Workspace object of its own."""
    column, granularity, reducer, inputs = "length", "row", None, ()

    def __init__(self, path, source):
        self.path, self.source, self.loaded = path, source, None

    def fingerprint(self) -> str:
        return "length-v1"

    def describe(self) -> dict:
        return {"kind": "test"}

    def run(self, rows, ctx):
        from curate.storage.step import StepOutput

        if self.loaded is None:
            thread, self.loaded = _in_thread(lambda: Workspace.open(self.path).load(self.source, keep_only_source=True))
            thread.join(WAIT_S)
        return StepOutput([float(len(row.turns[0].instruction)) for row in rows], [[] for _ in rows])


def test_apply_finishes_when_a_load_removes_rows_during_the_run(tmp_path):
    """The rows another load removed while the step ran are not written (merge_column keeps the pool's rows) and
    the result counts them apart: the run used to fail after writing ('150 of the ids asked for are not in the
    pool')."""
    ws = Workspace(tmp_path / "ws")
    ws.load(_rows(300))
    source = write_jsonl(tmp_path / "half.jsonl", _rows(150, start=150))
    step = _Length(ws.path, source)
    result = ws.apply(step, progress=False)
    assert not isinstance(step.loaded[0], BaseException), repr(step.loaded)
    assert step.loaded[0]["rows_removed"] == 150
    assert len(ws) == 150
    assert (result.rows, result.computed, result.skipped, result.failed, result.left_pool) == (150, 150, 0, 0, 150)
    assert "150 left the pool during the run" in result.summary()
    assert ws.column("length") == [float(len(f"task {i}")) for i in range(150, 300)]
    again = ws.apply(step, progress=False)
    assert (again.rows, again.computed, again.skipped, again.left_pool) == (150, 0, 150, 0)


def test_apply_on_ids_finishes_when_a_load_removes_some_of_them(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.load(_rows(300))
    step = _Length(ws.path, write_jsonl(tmp_path / "half.jsonl", _rows(150, start=150)))
    asked = ws.ids[100:200]
    result = ws.apply(step, asked, progress=False)
    assert (result.rows, result.computed, result.left_pool) == (50, 50, 50)
    assert ws.column_ids("length") == [rid for rid in ws.ids if rid in set(asked)]
    assert ws.column("length", ws.column_ids("length")) == [float(len(f"task {i}")) for i in range(150, 200)]


def test_embed_stores_the_ids_it_encoded_when_a_load_replaces_the_pool(tmp_path, monkeypatch):
    """One Workspace object shared by threads: a load in another thread replaces the pool (150 rows kept, 150 new)
    while ``embed`` encodes; the stored set pairs each id with the vector of its own row's text."""
    import curate.embed.step as embed_step

    ws = Workspace(tmp_path / "ws")
    ws.load(_rows(300))
    ws.embed(name="before", progress=False)  # every original row's vector (and the cache the run below reads)
    source = write_jsonl(tmp_path / "other.jsonl", _rows(300, start=150))
    real_encode = embed_step.encode_cached
    loads: list = []

    def encode_then_load(*args, **kwargs):
        out = real_encode(*args, **kwargs)
        thread, got = _in_thread(lambda: ws.load(source, keep_only_source=True))
        thread.join(WAIT_S)
        loads.extend(got)
        return out

    monkeypatch.setattr(embed_step, "encode_cached", encode_then_load)
    ws.embed(name="during", progress=False)
    assert not isinstance(loads[0], BaseException), repr(loads)
    assert loads[0]["rows_removed"] == 150 and loads[0]["rows_added"] == 150
    folder = ws.path / "embeddings"
    stored = {}
    for name in ("before", "during"):
        meta = json.loads((folder / f"{name}.json").read_text())
        ids = json.loads((folder / meta["ids_file"]).read_text())
        stored[name] = dict(zip(ids, np.load(folder / meta["file"]), strict=True))
    assert sorted(stored["during"]) == sorted(stored["before"])  # the rows it encoded, not the pool's new ones
    for rid, vector in stored["during"].items():
        assert np.allclose(vector, stored["before"][rid], atol=1e-6), rid


def test_a_load_by_another_thread_on_one_workspace_leaves_an_operations_pool_alone(tmp_path):
    """Threads sharing one Workspace object: thread B loads a source that keeps half the rows, then reads the pool
    (it sees the new one), while thread A is inside ``apply``: A's operation keeps the pool it started on (the load
    and B's read reset the object's one pool under it), and its writes leave out the rows that left."""
    ws = Workspace(tmp_path / "ws")
    ws.load(_rows(300))
    source = write_jsonl(tmp_path / "half.jsonl", _rows(150, start=150))
    seen: dict = {}

    class Step(_Length):
        def run(self, rows, ctx):
            seen["before"] = list(ws.ids)
            thread, got = _in_thread(lambda: (ws.load(source, keep_only_source=True), list(ws.ids)))
            thread.join(WAIT_S)
            seen["b"], seen["after"] = got[0], list(ws.ids)
            seen["conversations"] = ws.conversations(seen["before"][:3])
            self.loaded = [got[0]]
            return super().run(rows, ctx)

    result = ws.apply(Step(ws.path, source), progress=False)
    assert not isinstance(seen["b"], BaseException), repr(seen["b"])
    (load, b_ids), before = seen["b"], seen["before"]
    assert load["rows_removed"] == 150 and b_ids == before[150:]
    assert seen["after"] == before  # A's operation: the pool it started on
    assert [c[0]["content"] for c in seen["conversations"]] == ["task 0", "task 1", "task 2"]
    assert (result.rows, result.computed, result.left_pool) == (150, 150, 150)
    assert ws.ids == b_ids and ws.column_ids("length") == b_ids


# -- datasets' progress-bar switch: off while curate works, the user's setting afterwards ------------------------


def test_datasets_progress_bars_are_as_the_user_set_them_after_curate_calls(tmp_path):
    """A load and an export turn datasets' bars off while they write; each setting the user had comes back."""
    import datasets

    ws = Workspace(tmp_path / "ws")
    try:
        for user_wants_bars in (True, False, True):
            (datasets.enable_progress_bars if user_wants_bars else datasets.disable_progress_bars)()
            ws.load(write_jsonl(tmp_path / f"pool-{user_wants_bars}.jsonl", _rows(3)))
            ws.export(tmp_path / f"out-{user_wants_bars}.jsonl")
            assert datasets.is_progress_bar_enabled() is user_wants_bars
    finally:
        datasets.enable_progress_bars()


def test_datasets_progress_bars_stay_off_until_the_last_overlapping_curate_call_ends():
    """Thread A enters the quiet scope, thread B enters too, A leaves: B is still writing, so the bars stay off
    (the old per-call save and restore turned them on under B) and come back only when B leaves."""
    import datasets

    from curate.quiet import quiet_datasets

    datasets.enable_progress_bars()
    entered = {name: threading.Event() for name in "AB"}
    leave = {name: threading.Event() for name in "AB"}

    def call(name: str) -> None:
        with quiet_datasets():
            entered[name].set()
            assert leave[name].wait(WAIT_S)

    try:
        a, got_a = _in_thread(lambda: call("A"))
        assert entered["A"].wait(WAIT_S)
        b, got_b = _in_thread(lambda: call("B"))
        assert entered["B"].wait(WAIT_S)
        assert not datasets.is_progress_bar_enabled()
        leave["A"].set()
        a.join(WAIT_S)
        assert got_a == [None]
        assert not datasets.is_progress_bar_enabled(), "bars back on while thread B is still inside"
        leave["B"].set()
        b.join(WAIT_S)
        assert got_b == [None]
        assert datasets.is_progress_bar_enabled()
    finally:
        for event in leave.values():
            event.set()
        datasets.enable_progress_bars()
