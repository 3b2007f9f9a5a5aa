"""`curate run --dry-run` on an out folder that already holds a workspace writes nothing there (against the project's
fault-injecting loopback server): the filter steps it runs to find the rows a run would judge ran in the workspace."""

import hashlib
import re
from pathlib import Path

from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer


def _tree(folder: Path) -> dict[str, tuple]:
    """Every path under ``folder`` (and itself): size, mtime in ns and, for a file, its SHA-256."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns,
                                         hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder")
            for p in sorted([folder, *folder.rglob("*")])}


def _to_send(said: str) -> int:
    return int(re.search(r"total: ([\d,]+) requests to send", " ".join(said.split()))[1].replace(",", ""))


def test_dry_runs_with_each_filter_option_leave_an_existing_out_as_it_was(tmp_path, monkeypatch):
    """The old dry run ran load, dedup and the filter steps in OUT/workspace itself: after a real run, `--dry-run
    --heuristics` added selections/heuristics.arrow, `--language en` rewrote it, `--minhash` added minhash.arrow,
    `--decontaminate` added decontaminated.arrow, and every dry run touched OUT/workspace and its staging folder.
    The estimate is unchanged: a real run with the options sends what the dry run counted. Every file the copy
    may link instead of copying is linked here (a pool of gigabytes is not copied): the links are written through
    nowhere."""
    from curate import dry_run

    monkeypatch.setattr(dry_run, "SHARED_FROM_BYTES", 1)
    rows = [{"instruction": f"Explain topic {i} in two sentences.", "output": f"Topic {i} is about item {i}."}
            for i in range(6)]
    rows += [{"instruction": "Write a poem about the sea.", "output": "I'm sorry, but as an AI I cannot do that."},
             {"instruction": "What is the capital of France?", "output": "Paris."}, '{"instruction": broken']
    pool, out = write_jsonl(tmp_path / "pool.jsonl", rows), tmp_path / "out"
    target = write_jsonl(tmp_path / "evals.jsonl", [{"instruction": "What is the capital of France?", "output": "x"}])
    real = curate_in_process("run", pool, "--budget", "3", "--out", out, "--no-report")
    assert real.returncode == 0, real.stderr[-2000:]
    write_jsonl(pool, [*rows, '{"instruction": broken again'])  # a new reject: appended to rejects.jsonl in place
    with FaultServer() as srv:
        llm = ["--base-url", srv.base_url, "--model", "fault", "--api-key-env", "HOME", "--max-retries", "0"]
        counted = {}
        for option in ([], ["--heuristics"], ["--no-heuristics"], ["--language", "en"], ["--minhash"], ["--decontaminate", target],
                       ["--heuristics", "--minhash", "--decontaminate", target, "--tags"]):
            before = _tree(out)
            dry = curate_in_process("run", pool, "--out", out, *llm, "--dry-run", *option)
            assert dry.returncode == 0, dry.stderr[-2000:]
            assert _tree(out) == before, option
            counted[tuple(map(str, option))] = _to_send(dry.stdout)
        (out / "workspace" / ".killed-writer.tmp").write_text("x")  # Workspace.open removes it: the real one isn't
        before = _tree(out)
        batch = curate_in_process("run", pool, "--out", out, "--backend", "openai-batch", "--base-url", srv.base_url,
                                  "--model", "gpt-4o-mini", "--api-key-env", "HOME", "--dry-run")
        assert batch.returncode == 0 and _to_send(batch.stdout) == counted[()], batch.stderr[-2000:]
        assert _tree(out) == before  # it opened the real workspace to read its open batches, which tidied it
        strict = curate_in_process("run", pool, "--out", out, *llm, "--dry-run", "--on-error", "raise")
        assert strict.returncode == 65 and "line 9" in strict.stderr, strict.stderr  # as the real run reads it
        assert _tree(out) == before
        assert srv.total == 0
        assert counted[("--heuristics",)] == counted[()]  # the text rules run by default: the refusal is left out
        assert counted[("--no-heuristics",)] == counted[()] + 2  # ... and judged without them: complexity, quality
        everything = ("--heuristics", "--minhash", "--decontaminate", str(target), "--tags")
        paid = curate_in_process("run", pool, "--budget", "3", "--out", out, *llm, "--no-report", *everything)
        assert paid.returncode == 0, paid.stderr[-2000:]
        assert srv.total == counted[everything] > 0


def test_a_dry_run_reads_the_response_cache_without_touching_its_folder(tmp_path):
    """The dry run looked requests up in OUT/workspace/cache/responses.sqlite where it is: SQLite made and removed
    the -wal and -shm beside it (read-only too), so OUT/workspace/cache's mtime changed. It reads the file as it is
    now (no writer: immutable, nothing made beside it); the same requests are found."""
    import gc

    rows = [{"instruction": f"Explain topic {i} in two sentences.", "output": f"Topic {i} is about item {i}."}
            for i in range(4)]
    pool, out = write_jsonl(tmp_path / "pool.jsonl", rows), tmp_path / "out"
    assert curate_in_process("load", pool, "-w", out / "workspace").returncode == 0
    with FaultServer() as srv:
        llm = ["--base-url", srv.base_url, "--model", "fault", "--api-key-env", "HOME", "--max-retries", "0"]
        seen = curate_in_process("score", out / "workspace", "--judge", "quality", "--column", "seen", *llm)
        assert seen.returncode == 0 and srv.total == 4, seen.stderr[-2000:]  # the run's quality requests, cached
        gc.collect()  # its connections closed, as a process ending closes them: the -wal and -shm removed
        assert sorted(p.name for p in (out / "workspace" / "cache").iterdir()) == ["prompts", "responses.sqlite"]
        before = _tree(out)
        dry = curate_in_process("run", pool, "--out", out, *llm, "--dry-run")
        gc.collect()
        assert dry.returncode == 0, dry.stderr[-2000:]
        assert "4 answered by the on-disk cache" in " ".join(dry.stdout.split()), dry.stdout
        assert _tree(out) == before
        assert srv.total == 4


# A writer in another process: two answers committed (in its -wal alone, not yet moved into the file), a third in a
# transaction still open; it says "ready" and holds the cache so until its standard input closes.
WRITER = """
import sys
from curate.llm.cache import ResponseCache
cache = ResponseCache(sys.argv[1])
for key in sys.argv[2:]:
    cache.put(key, {"text": key})
conn = cache._conn()
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO responses VALUES ('uncommitted', '{}', 0)")
print("ready", flush=True)
sys.stdin.read()
conn.execute("COMMIT")
"""


def _writer(cache_file: Path, *keys: str):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(cache_file), *keys], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_lookup_beside_a_writer_sees_its_committed_answers_and_changes_no_file(tmp_path):
    """The dry run read a copy of the cache (copied again, up to 5 times, while a writer changed it; 985 MB copied
    in 4 s per run on a big cache). It reads the cache where it is, read-only through the writer's -wal: what the
    writer committed is found, its open transaction is not, and no file or mtime of the folder changes."""
    import gc

    from curate.llm.cache import CACHE_FILE, LookupOnlyCache

    cache = tmp_path / "cache"
    writer = _writer(cache / CACHE_FILE, "k1", "k2")
    try:
        before = _tree(cache)
        assert f"{CACHE_FILE}-wal" in before and f"{CACHE_FILE}-shm" in before
        reader = LookupOnlyCache(cache)
        assert reader.get_many(["k1", "k2", "uncommitted"]) == {"k1": {"text": "k1"}, "k2": {"text": "k2"}}
        assert len(reader) == 2
        reader.close()
        gc.collect()
        assert _tree(cache) == before
    finally:
        writer.communicate("")
    assert writer.returncode == 0


def test_a_lookup_reads_again_after_a_writer_moved_answers_into_the_file(tmp_path):
    """With no writer the file is read as it is (no -wal or -shm made beside it); a writer that then writes and closes
    moves its answers into the file (a checkpoint): the next lookup sees the file changed and reads it again."""
    from curate.llm.cache import CACHE_FILE, LookupOnlyCache, ResponseCache

    cache = tmp_path / "cache"
    first = ResponseCache(cache / CACHE_FILE)
    first.put("k1", {"text": "k1"})
    first.close()
    assert sorted(p.name for p in cache.iterdir()) == [CACHE_FILE]
    before = _tree(cache)
    reader = LookupOnlyCache(cache)
    assert reader.get_many(["k1", "k2"]) == {"k1": {"text": "k1"}}
    assert _tree(cache) == before
    second = ResponseCache(cache / CACHE_FILE)
    second.put("k2", {"text": "k2"})
    second.close()
    assert sorted(p.name for p in cache.iterdir()) == [CACHE_FILE]
    assert reader.get_many(["k1", "k2"]) == {"k1": {"text": "k1"}, "k2": {"text": "k2"}}
    reader.close()


def test_score_and_run_dry_runs_beside_a_writer_count_its_answers_and_leave_the_workspace_as_it_was(tmp_path):
    """`curate score --dry-run` opened the cache in place read-write (SQLite made and removed its -wal and -shm: the
    cache folder's mtime changed); `curate run --dry-run` copied it whole. Both read it where it is now: with no
    writer, and beside one holding answers in its -wal and a transaction open, the workspace's files, sizes and
    mtimes stay as they were, and the answers the writer committed count as cached."""
    import gc

    from curate.llm.cache import CACHE_FILE
    from curate.llm.judges import PROMPTS_KEPT

    rows = [{"instruction": f"Explain topic {i} in two sentences.", "output": f"Topic {i} is about item {i}."}
            for i in range(4)]
    pool, out = write_jsonl(tmp_path / "pool.jsonl", rows), tmp_path / "out"
    ws = out / "workspace"
    assert curate_in_process("load", pool, "-w", ws).returncode == 0
    with FaultServer() as srv:
        llm = ["--base-url", srv.base_url, "--model", "fault", "--api-key-env", "HOME", "--max-retries", "0"]
        seen = curate_in_process("score", ws, "--judge", "quality", "--column", "seen", *llm)
        assert seen.returncode == 0 and srv.total == 4, seen.stderr[-2000:]
        gc.collect()
        assert sorted(p.name for p in (ws / "cache").iterdir()) == sorted([CACHE_FILE, PROMPTS_KEPT])  # no -wal, -shm
        for writing in (False, True):
            writer = _writer(ws / "cache" / CACHE_FILE, "unrelated") if writing else None
            try:
                before = _tree(out)
                for args in (("score", ws, "--judge", "quality"), ("run", pool, "--out", out)):
                    dry = curate_in_process(*args, *llm, "--dry-run")
                    gc.collect()
                    assert dry.returncode == 0, dry.stderr[-2000:]
                    assert "4 answered by the on-disk cache" in " ".join(dry.stdout.split()), dry.stdout
                    assert _tree(out) == before, (writing, args)
            finally:
                if writer is not None:
                    writer.communicate("")
        assert srv.total == 4
