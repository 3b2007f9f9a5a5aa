"""The Ray pass's column commits (curate.scale.commits) counted against what each column already holds."""

from curate.scale.commits import ColumnCommits, store_rest
from curate.session import Workspace
from curate.storage.step import StepOutput
from tests.conftest import write_jsonl


class _Constant:
    """A per-turn step writing one value (``value``) to ``column``."""

    granularity, reducer, inputs = "turn", "mean", ()

    def __init__(self, column: str, value: float):
        self.column, self.value = column, value

    def fingerprint(self) -> str:
        return f"{self.column}-v1"

    def describe(self) -> dict:
        return {"kind": "test"}

    def run(self, rows, ctx) -> StepOutput:
        return StepOutput([[self.value] for _ in rows], [[] for _ in rows])


def test_a_column_already_stored_is_not_counted_as_computed_by_a_pass_another_column_needed(tmp_path):
    """A pass computes the rows any of its steps needs (here: b, new); a column holding them all under the same
    settings (a) was stored again and reported as computed now, where the single-process step skips it."""
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"row {i}", "output": "ok"} for i in range(6)]))
    a, b = _Constant("a", 1.0), _Constant("b", 3.0)
    ws.apply(a, progress=False)
    ids = list(ws.ids)
    results = {"a": {rid: ([2.0], []) for rid in ids}, "b": {rid: ([3.0], []) for rid in ids}}
    commits = ColumnCommits(ws, [a, b], ids, {"name": "ray"})
    commits.add(ids[:4], results, {})
    commits.commit()
    stored_a = store_rest(ws, a, results["a"], None, {"name": "ray"}, ids, False, commits.stored["a"])
    stored_b = store_rest(ws, b, results["b"], None, {"name": "ray"}, ids, False, commits.stored["b"])
    assert (stored_a.computed, stored_a.skipped) == (0, 6)
    assert (stored_b.computed, stored_b.skipped) == (6, 0)
    assert ws.column("a") == [[1.0]] * 6 and ws.column("b") == [[3.0]] * 6
    assert len(ws.column_provenance("a")["runs"]) == 1  # nothing written to a


def test_a_pass_stored_in_parts_is_one_run_record(tmp_path):
    """Each commit of a pass added a run record: a pass of many writes crowded the column's history (50 records kept)
    with parts, and its last record counted only the last part. The parts of one pass make one record; another
    pass (another ``engine.pass``) its own."""
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"row {i}", "output": "ok"} for i in range(6)]))
    step, ids = _Constant("b", 3.0), list(ws.ids)
    results = {"b": {rid: ([3.0], []) for rid in ids}}
    for run, rows in (("first", ids[:3]), ("second", ids)):  # the second pass stores the rows the first did not
        info = {"name": "ray", "pass": run}
        commits = ColumnCommits(ws, [step], rows, info)
        commits.add(rows[:1], results, {})
        commits.commit()
        commits.add(rows[1:2], results, {})
        commits.commit()
        store_rest(ws, step, {rid: results["b"][rid] for rid in rows}, None, info, rows, False, commits.stored["b"])
    runs = ws.column_provenance("b")["runs"]
    assert [(r["rows"], r["turns_scored"], r["engine"]["pass"]) for r in runs] == [(3, 3, "first"), (3, 3, "second")]
    assert [r["engine"]["pass_rows"] for r in runs] == [3, 3]  # each finished: as many rows as it set out to store


def test_the_run_record_of_a_pass_killed_part_way_says_it_did_not_finish(tmp_path):
    """A killed pass's last run record looked like a finished one (its rows, its seconds): nothing said the pass
    stopped part way. Each record of a pass stored in parts names the rows it set out to store (engine.pass_rows)."""
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"row {i}", "output": "ok"} for i in range(6)]))
    step, ids = _Constant("b", 3.0), list(ws.ids)
    results = {"b": {rid: ([3.0], []) for rid in ids}}
    commits = ColumnCommits(ws, [step], ids, {"name": "ray", "pass": "killed"})
    commits.add(ids[:2], results, {})
    commits.commit()  # then the kill: store_rest never runs
    [run] = ws.column_provenance("b")["runs"]
    assert (run["rows"], run["engine"]["pass_rows"]) == (2, 6)


def _holding(ws, column: str, seconds: float):
    """A thread holding ``column``'s lock for ``seconds`` (another writer); started once it holds it."""
    import threading
    import time

    holds = threading.Event()

    def hold():
        with ws.column_lock(column):
            holds.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold)
    thread.start()
    holds.wait()
    return thread


def test_a_pass_commit_spaces_the_next_by_its_writing_alone_and_never_waits_on_another_writer_part_way(
        tmp_path, monkeypatch):
    """The next commit waited 9x the last write's time, and that time included the wait for another writer's column
    lock: a write that waited 35 s held the next back ~5 minutes (all lost to a kill). And a commit part way waited
    for the lock on the driver's loop pulling the actors' batches. Now the writing alone counts (the wait capped at
    SCALE.commit_wait_max_s), and a commit part way that finds the lock held is put off to the next batch."""

    from curate.defaults import SCALE
    from curate.embed import cache

    monkeypatch.setattr(cache, "PART_EVERY_S", 0.0)  # a commit per batch
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"row {i}", "output": "ok"} for i in range(6)]))
    step, ids = _Constant("b", 3.0), list(ws.ids)
    results = {"b": {rid: ([3.0], []) for rid in ids}}
    commits = ColumnCommits(ws, [step], ids, {"name": "ray", "pass": "p"})
    other = _holding(ws, "b", 4.0)
    commits.pending = ids[:2]
    commits.results = results
    commits.commit()  # the end of a pass: waits for the lock, then writes
    other.join()
    assert len(commits.stored["b"][0]) == 2
    assert commits.wait <= SCALE.commit_wait_max_s and commits.wait < 9.0  # 9 x the write, not x (4 s waited + it)
    other = _holding(ws, "b", 4.0)
    commits.wait = 0.0
    commits.add(ids[2:4], results, {})  # part way: the lock is held, the rows stay pending
    # had it waited for the lock (4 s), it would have written them: still pending, none stored, holder still on
    assert commits.pending == ids[2:4] and len(commits.stored["b"][0]) == 2 and other.is_alive()
    other.join()
    commits.add(ids[4:], results, {})  # the next batch: stored with the rows put off
    assert not commits.pending and commits.stored["b"] == (set(ids), 0)
    assert ws.column("b") == [[3.0]] * 6


def test_a_column_stored_in_parts_states_the_whole_pass_at_the_top_of_its_provenance(tmp_path):
    """The provenance's top-level stats are the last run's; for a pass stored in parts they were its last part's only
    (the suite: turns_scored 105 of the 139 the pass stored), while the folded run record held the pass's sum."""
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"row {i}", "output": "ok"} for i in range(6)]))
    step, ids = _Constant("b", 3.0), list(ws.ids)
    results = {"b": {rid: ([3.0], []) for rid in ids}}
    info = {"name": "ray", "pass": "whole"}
    commits = ColumnCommits(ws, [step], ids, info)
    commits.add(ids[:2], results, {})
    commits.commit()
    store_rest(ws, step, results["b"], None, info, ids, False, commits.stored["b"])
    prov = ws.column_provenance("b")
    assert prov["runs"][-1]["turns_scored"] == 6 and prov["turns_scored"] == 6


def test_a_commit_part_way_stores_the_columns_whose_lock_is_free_and_keeps_the_rest_pending(tmp_path, monkeypatch):
    """A commit part way finding one column's lock held by another writer stored nothing (every column waited for
    that one); now the free columns are stored, and the held one's rows stay pending for a later batch."""
    from curate.embed import cache

    monkeypatch.setattr(cache, "PART_EVERY_S", 0.0)  # a commit per batch
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"row {i}", "output": "ok"} for i in range(6)]))
    a, b, ids = _Constant("a", 1.0), _Constant("b", 3.0), list(ws.ids)
    results = {"a": {rid: ([1.0], []) for rid in ids}, "b": {rid: ([3.0], []) for rid in ids}}
    commits = ColumnCommits(ws, [a, b], ids, {"name": "ray", "pass": "p"})
    other = _holding(ws, "b", 3.0)
    commits.add(ids[:3], results, {})  # b is held: a is stored, b's rows stay
    assert commits.stored["a"] == (set(ids[:3]), 0) and commits.stored["b"] == (set(), 0)
    assert commits.pending == ids[:3] and ws.has_column("a") and not ws.has_column("b")
    other.join()
    commits.add(ids[3:], results, {})
    assert commits.stored["a"] == commits.stored["b"] == (set(ids), 0) and not commits.pending
    assert ws.column("a") == [[1.0]] * 6 and ws.column("b") == [[3.0]] * 6


_OTHER_WRITER = """
import sys, time
from curate.session import Workspace

class Busy(Exception):
    pass

def busy():
    raise Busy

path = sys.argv[1]
ws = Workspace.open(path)
with ws.column_lock("b"):  # a second writer: holds b, then wants a too
    print("holding b", flush=True)
    deadline = time.monotonic() + 15
    while not Workspace.open(path).has_column("a") and time.monotonic() < deadline:
        time.sleep(0.1)
    # a's column file appears while the pass still holds a's lock (it is written under it): a held a moment
    # longer is the pass finishing a; held for seconds, with b held here, is the pass waiting for b holding a
    deadline = time.monotonic() + 10
    while True:
        try:
            with ws.column_lock("a", on_wait=busy):
                print("a stored and free" if Workspace.open(path).has_column("a") else "a free, not stored",
                      flush=True)
            break
        except Busy:
            if time.monotonic() > deadline:
                print("a held while its commit waited for b", flush=True)
                break
            time.sleep(0.1)
"""


def test_the_end_of_a_pass_holds_no_column_lock_while_it_waits_for_another_writers(tmp_path):
    """The final commit took the columns' locks in order and held them all while it waited for one another process
    held: a second writer holding b and wanting a waited for the pass, which waited for it (a stall each side; with
    two runs' pass ends each holding one, for good). Now a is stored and let go while the commit waits for b."""
    import subprocess
    import sys
    from pathlib import Path

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"row {i}", "output": "ok"} for i in range(6)]))
    a, b, ids = _Constant("a", 1.0), _Constant("b", 3.0), list(ws.ids)
    results = {"a": {rid: ([1.0], []) for rid in ids}, "b": {rid: ([3.0], []) for rid in ids}}
    commits = ColumnCommits(ws, [a, b], ids, {"name": "ray", "pass": "p"})
    commits.pending, commits.results = list(ids), results
    repo = str(Path(__file__).resolve().parents[1])
    other = subprocess.Popen([sys.executable, "-c", _OTHER_WRITER, str(ws.path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**__import__("os").environ, "PYTHONPATH": repo})
    try:
        assert other.stdout.readline().strip() == "holding b", other.stderr.read()
        assert commits.commit() is True  # returns once the other writer lets b go
        said, errors = other.communicate(timeout=60)
    finally:
        other.kill()
    assert (other.returncode, said.strip()) == (0, "a stored and free"), errors[-2000:]
    assert commits.stored["a"] == commits.stored["b"] == (set(ids), 0) and not commits.pending
    assert ws.column("a") == [[1.0]] * 6 and ws.column("b") == [[3.0]] * 6


def test_a_pass_stored_in_parts_warns_once_with_its_total_of_failed_rows(tmp_path):
    """Each commit of a Ray pass ran ``ws.apply`` and warned for its own failed rows, each text with its own count
    (Python's registry kept them all): ``run_pipeline(engine="ray")`` in a notebook printed one CurateWarning per
    commit. The commits are quiet; the pass warns once, when it ends, with the rows failed in all its parts."""
    import warnings

    from curate.codes import Failure, FailureCode
    from curate.errors import CurateWarning

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"row {i}", "output": "ok"} for i in range(6)]))
    step, ids = _Constant("b", 3.0), list(ws.ids)
    failed = {rid: ([None], [Failure(FailureCode.NO_RESPONSE, "no reply", turn=1).to_dict()]) for rid in ids[1:5]}
    results = {"b": {rid: failed.get(rid, ([3.0], [])) for rid in ids}}
    info = {"name": "ray", "pass": "p"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        commits = ColumnCommits(ws, [step], ids, info)
        commits.add(ids[:2], results, {})
        commits.commit()
        commits.add(ids[2:4], results, {})
        commits.commit()
        result = store_rest(ws, step, results["b"], None, info, ids, False, commits.stored["b"])
    told = [str(w.message) for w in caught if issubclass(w.category, CurateWarning)]
    assert result.failed_now == 4
    assert len(told) == 1, told
    assert told[0].startswith("b: 4 of the 6 rows computed now failed (4 x no_response")
