"""Workspace files damaged in place (bytes overwritten, the size kept) and runs cut off (kill -9, the workspace
removed underneath): each is found and named, never read as data."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from curate.errors import CurateWarning
from curate.session import Workspace
from curate.storage.damage import DamagedFileError


def _pool(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"r{i}", "messages": [{"role": "user", "content": f"q{i}"},
                                                                   {"role": "assistant", "content": f"a{i}"}]}) + "\n")
    return path


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.load(_pool(tmp_path / "pool.jsonl", 2000))
    return ws


def _zero_middle(path: Path) -> None:
    """4 KB of zeros in the middle of the file, its size kept (what the robustness audit did to quality.arrow)."""
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\0" * 4096)
    assert path.stat().st_size == size


def test_a_score_column_overwritten_in_place_is_named_damaged_not_read_as_zeros(ws):
    """4 KB of zeros in the middle of columns/quality.arrow read as rows of quality 0.0 (outside the judge's scale)
    and `curate run` changed its selection, exit 0, no warning; now reading it names the file and the fix."""
    ws.add_column("quality", [float(1 + i % 5) for i in range(len(ws.ids))], {"kind": "test"})
    path = ws.path / "columns" / "quality.arrow"
    assert ws.column("quality")[:3] == [1.0, 2.0, 3.0]  # read once whole: the verdict is kept by size and mtime
    _zero_middle(path)
    with pytest.raises(DamagedFileError) as err:
        Workspace(ws.path).column("quality")
    assert str(err.value).startswith(f"{path}: damaged: its rows are not the bytes curate wrote (checksum ")
    assert f"`rm {path}`" in str(err.value) and "compute the column again" in str(err.value)


def test_a_selection_overwritten_in_place_is_named_damaged(ws):
    ids = ws.ids
    ws.add_selection("s", ids, ["kept"] * len(ids), ["selected"] * len(ids), [None] * len(ids), {"method": "t"})
    path = ws.path / "selections" / "s.arrow"
    _zero_middle(path)
    with pytest.raises(DamagedFileError, match=r"damaged: its rows are not the bytes curate wrote"):
        Workspace(ws.path).selection("s")


def test_a_column_written_without_a_checksum_is_read_as_before(ws):
    """Files an older curate wrote carry no checksum: read as they were."""
    from curate.storage.checksums import CHECKSUM_KEY

    ws.add_column("quality", [2.0] * len(ws.ids), {"kind": "test"})
    path = ws.path / "columns" / "quality.arrow"
    table = pa.ipc.open_file(pa.BufferReader(path.read_bytes())).read_all()
    meta = {k: v for k, v in table.schema.metadata.items() if k != CHECKSUM_KEY}
    table = table.replace_schema_metadata(meta)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    assert Workspace(ws.path).column("quality") == [2.0] * len(ws.ids)
    assert Workspace(ws.path).column_provenance("quality")["kind"] == "test"


def test_a_column_rewritten_again_and_again_at_one_size_is_never_called_damaged(tmp_path):
    """The verdicts were kept by (path, size, mtime): a file rewritten at the same size within one tick of the file
    system's clock got the earlier file's checksum, and a healthy column read as damaged (93 of 200 rewrites)."""
    from curate.storage.files import read_arrow, write_arrow

    path = tmp_path / "c.arrow"
    for i in range(200):
        write_arrow(path, pa.table({"x": [float(i)] * 100}))
        assert read_arrow(path)["x"][0].as_py() == float(i)


def test_a_read_racing_a_writer_that_replaces_the_file_checks_the_bytes_it_read(tmp_path):
    """The check opened the path again after the schema was read: a writer's replacement in between was compared
    with the old schema's checksum and called damaged. The bytes checked are those the schema came from."""
    from curate.storage.checksums import check_written
    from curate.storage.files import write_arrow

    path = tmp_path / "c.arrow"
    write_arrow(path, pa.table({"x": [1.0] * 100}))
    with pa.memory_map(str(path), "r") as source:
        schema = pa.ipc.open_file(source).schema
        write_arrow(path, pa.table({"x": [2.0] * 100}))  # another process's write, replacing the file
        check_written(path, schema, source)


def test_a_run_killed_9_is_told_apart_from_one_running_by_its_pid(tmp_path, caplog):
    """After kill -9, OUT/run.json said "running" forever, with no pid or host to tell; the record holds both now,
    and the next run in that folder says the earlier one was killed."""
    import socket
    import subprocess
    import sys
    from types import SimpleNamespace

    from curate.run_record import RUN_RECORD, killed_run, run_steps

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    out = tmp_path / "out"
    out.mkdir()
    left = {"status": "running", "pid": gone.pid, "hostname": socket.gethostname(), "started_at": "2026-12-07"}
    (out / RUN_RECORD).write_text(json.dumps(left))
    assert killed_run(left) == f"killed (its process {gone.pid} is gone)"
    run = SimpleNamespace(out=out, budget=None, outputs={})
    seen = []
    with caplog.at_level("WARNING", logger="curate"):
        run_steps(run, [("embed", lambda r: {"rows": 0, "encoded": 0})],
                  lambda name: seen.append(json.loads((out / RUN_RECORD).read_text())), None)
    assert f"the run before this one was killed (its process {gone.pid} is gone)" in caplog.text
    running = seen[0]
    assert running["status"] == "running" and running["started_at"]
    assert (running["pid"], running["hostname"]) == (__import__("os").getpid(), socket.gethostname())
    assert killed_run(running) is None  # this process is alive
    assert killed_run({**left, "hostname": "another-host"}) is None  # another host's pid cannot be looked at


def test_a_workspace_removed_during_score_is_said_so_and_not_made_anew(tmp_path):
    """rm -rf WS while `curate score` ran gave `WS: no pool yet; run curate load ...` (exit 78, a setting to fix) and
    the process made WS/ anew holding an empty .lock (filelock creates the lock's folders)."""
    import shutil
    import subprocess
    import sys
    import time

    from tests.fault_server import FaultServer

    ws_path = tmp_path / "ws"
    Workspace(ws_path).load(_pool(tmp_path / "pool.jsonl", 30))
    with FaultServer(latency=0.2) as srv:
        proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "score", str(ws_path), "--judge", "quality",
                                 "--base-url", srv.base_url, "--model", "fault", "--concurrency", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**__import__("os").environ, "OPENAI_API_KEY": "k"})
        while srv.total < 2 and proc.poll() is None:  # waits for the run to be sending (no time asserted)
            time.sleep(0.05)
        shutil.rmtree(ws_path)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-2000:]
    assert f"{ws_path}: the workspace disappeared during this run" in err, err[-2000:]
    assert "no pool" not in err
    assert not ws_path.exists()


def test_a_judge_server_that_dies_mid_run_stops_the_run_before_the_next_judge(tmp_path):
    """The judge server died while complexity was scored: its rows failed transient, then quality sent all of its
    rows to the dead endpoint (500 rows, ~24 s of retries) before the run stopped. Now the run ends after
    complexity, exit 75 (RetryLaterError), run.json failed, and the re-run sends what is missing."""
    import threading
    import time

    from curate.errors import RetryLaterError
    from curate.exit_codes import exit_code
    from curate.llm.backends import OpenAIBackend
    from curate.pipeline import run_pipeline
    from tests.conftest import write_jsonl
    from tests.fault_server import FaultServer

    pool = write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"Task {i}: explain topic {i}.", "output": "ok"}
                                              for i in range(30)])
    srv = FaultServer(latency=0.05).start()
    port = srv.port

    def stop_after_some() -> None:
        while srv.total < 5:  # waits (no time asserted): the server answers a few rows, then dies
            time.sleep(0.01)
        srv.stop()

    watcher = threading.Thread(target=stop_after_some)
    watcher.start()
    backend = OpenAIBackend(srv.base_url, "fault", api_key="k", max_retries=0, concurrency=1)
    with pytest.raises(RetryLaterError, match=r"rows not scored: the judge did not answer \(the server at .* "
                                              r"stopped answering: connection error") as stopped:
        with pytest.warns(CurateWarning, match=r"complexity: 25 of the 30 rows computed now failed"):
            run_pipeline(str(pool), out=tmp_path / "run", budget=3, backend=backend, report=False, progress=False)
    watcher.join()
    assert exit_code(stopped.value) == 75
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (record["status"], record["exit_code"]) == ("failed", 75)
    ws = Workspace.open(tmp_path / "run" / "workspace")
    answered = sum(v is not None for v in ws.row_values("complexity"))
    assert 0 < answered < 30 and sum(bool(f) for f in ws.failures("complexity")) == 30 - answered
    assert not ws.has_column("quality")  # never sent to the dead endpoint
    again = FaultServer()
    again.port = port  # the server is back where it was
    with again:
        run_pipeline(str(pool), out=tmp_path / "run", budget=3, backend=backend, report=False, progress=False)
        assert again.total == (30 - answered) + 30  # complexity's unanswered rows, then every quality row
