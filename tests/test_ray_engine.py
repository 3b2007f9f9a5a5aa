"""The Ray Data engine (curate/scale) on one in-process Ray on this machine: its passes, checks, errors and
interrupted passes against what one process does. On a two-node cluster: tests/test_ray_cluster.py."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from curate.errors import CurateWarning
from tests.conftest import write_jsonl
from tests.ray_pools import generated_pool, instructions, write_shards

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """One Ray on this machine (2 CPUs, whatever its cores) for this module's engines started without an address:
    an engine reuses a Ray already initialised and leaves it running, so a test skips Ray's start and stop and its
    workers' imports (seconds each on two busy cores). An engine starting and stopping its own Ray:
    tests/test_ray_threads.py and the first CLI run of the error test below."""
    import logging

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


# -- the tests ------------------------------------------------------------------------------------------------


def test_minhash_lsh_on_ray_decides_what_the_minhash_selector_decides(local_ray, tmp_path):
    from curate.pipeline import Run, dedup
    from curate.scale import RayEngine
    from curate.session import Workspace

    names = {"instruction": "task", "output": "reply"}  # fields of the user's own: the Ray tasks read --mapping too
    records = [{names.get(k, k): v for k, v in r.items()} if isinstance(r, dict) else r
               for r in generated_pool(300, seed=23)]  # 14 near-duplicates after the exact ones
    shards = write_shards(tmp_path / "shards", records, 3)
    import logging

    import ray.data

    context = ray.data.DataContext.get_current()  # process-wide: a notebook's own Ray Data work reads it too
    before = (context.raise_original_map_exception, context.enable_progress_bars, context.shuffle_strategy,
              logging.getLogger("ray.data.exceptions").level)
    engine = RayEngine()  # on the module's Ray
    # the pool holds malformed records on purpose: with a mapping a run stops at the first unless told to skip
    run = Run(str(shards), tmp_path / "ray", budget=0, report=False, mapping=dict(names), on_error="skip")
    try:
        with pytest.warns(CurateWarning, match=r"19 record\(s\) left out"):
            engine.load(run)
        from ray.data.context import ShuffleStrategy

        # a small pool groups in tasks: Ray Data's hash shuffle started aggregator actors for each groupby (5-7 s)
        assert engine.rows().context.shuffle_strategy == ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
        engine.dedup(run, dedup)
        params = {"threshold": 0.7, "text": "conversation", "shingle": 3, "num_perm": 128, "seed": 1,
                  "false_positive_weight": 0.05}
        ours = engine.minhash_dedup(run.ws, name="near", input_selection="dedup", **params)
        plain = engine.minhash_dedup(run.ws, name="near_plain", input_selection="dedup")  # as `curate run --minhash`
        assert logging.getLogger("ray.data.exceptions").level == logging.CRITICAL  # quiet while the engine runs
    finally:
        engine.close()
    context = ray.data.DataContext.get_current()
    assert (context.raise_original_map_exception, context.enable_progress_bars, context.shuffle_strategy,
            logging.getLogger("ray.data.exceptions").level) == before  # the engine's settings went with it
    ws = Workspace(tmp_path / "single")  # the same rows, the selector on one process
    with pytest.warns(CurateWarning, match=r"19 record\(s\) left out"):
        ws.load(write_jsonl(tmp_path / "pool.jsonl", records), on_error="skip", mapping=dict(names))
    assert len(ws) > 250 and len(run.ws) == len(ws)  # without the mapping most rows would be rejects
    ws.select(method="exact", name="dedup")
    theirs = ws.select(method="minhash", name="near", input_selection="dedup", **params)
    assert ours.table.to_pylist() == theirs.table.to_pylist()
    assert ours.decisions()["duplicate"] > 10
    assert {k: v for k, v in ours.provenance.items() if k not in ("created", "engine")} == \
        {k: v for k, v in theirs.provenance.items() if k != "created"}
    # given no parameters, the selector records none (its defaults): the Ray selection recorded every default
    theirs_plain = ws.select(method="minhash", name="near_plain", input_selection="dedup")
    assert plain.table.to_pylist() == theirs_plain.table.to_pylist() and theirs_plain.provenance["params"] == {}
    assert {k: v for k, v in plain.provenance.items() if k not in ("created", "engine")} == \
        {k: v for k, v in theirs_plain.provenance.items() if k != "created"}


def test_a_ray_worker_reading_shards_imports_no_engine_nor_workspace_storage():
    """A worker unpickling the read's function (curate.scale.sources) imported the package's engine and, with it, the
    workspace's storage: ~0.7 s of each new Ray worker on two busy cores, before its first row."""
    code = ("import sys, curate.scale.sources, curate.scale.minhash; "
            "print(sorted(m for m in ('curate.scale.ray_engine', 'curate.storage.apply') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
    from curate.scale import RayEngine  # still there for those who ask for it

    assert RayEngine.__module__ == "curate.scale.ray_engine"


def test_the_ray_load_counts_the_turn_keys_of_a_mapped_chat_field(local_ray, tmp_path):
    """The Ray engine's load staged the rows with the default chat field names: with --mapping '{"conversations":
    "chat"}' a weight-0 turn was not counted, and an export --format wrote it as one to train on."""
    from curate.errors import WorkspaceError
    from curate.pipeline import Run
    from curate.scale import RayEngine

    records = [{"chat": [{"from": "human", "value": f"Question {i}?"},
                         {"from": "gpt", "value": f"Answer {i}.", **({"weight": 0} if i == 1 else {})}]}
               for i in range(4)]
    shards = write_shards(tmp_path / "shards", records, 2)
    engine = RayEngine()  # on the module's Ray
    run = Run(str(shards), tmp_path / "ray", budget=0, report=False, mapping={"conversations": "chat"})
    try:
        summary = engine.load(run)
    finally:
        engine.close()
    assert summary["turn_keys_not_kept"] == {"weight": 1} and summary["turn_fields"]["sharegpt"] == "chat"
    with pytest.raises(WorkspaceError, match=r"1 of 4 rows have turns with keys a sharegpt record .*: weight\)"):
        run.ws.export(tmp_path / "s.jsonl", format="sharegpt")


def test_the_ray_engine_makes_the_checks_after_load_that_one_process_makes(local_ray, tmp_path):
    """Ray's load replaced the single-process load step whole, so its checks were skipped: a pool with a field named
    quality stopped the run at the score step (the shipped scorer would write over the field: its run on Ray, in the
    embed step's test below), and a pool of instructions alone was scored before the selection found nothing to
    select."""
    from curate.errors import CurateError
    from curate.pipeline import run_pipeline

    bare = write_jsonl(tmp_path / "bare.jsonl", [{"instruction": f"Task {i}: explain how a {w} works, step by step."}
                                                 for i, w in enumerate(["pump", "clock", "lock", "valve", "lens", "gear"])])
    with pytest.raises(CurateError, match="every row is an instruction without a response"):
        run_pipeline(bare, out=tmp_path / "bare", budget=3, report=False, engine="ray", progress=False)
    assert not (tmp_path / "bare" / "workspace" / "columns" / "complexity.arrow").exists()  # nothing was scored


def test_the_embed_step_on_ray_says_the_score_steps_pass_encoded_its_vectors_and_the_pass_is_sized_by_the_pool(
        local_ray, tmp_path):
    """The Ray engine encodes the vectors in the score step's pass and stores them in the embed step, which said
    "6 rows, 6 newly encoded" as if it had encoded them itself. (`curate run` through the CLI's main() here, on the
    module's Ray: a process of its own started and stopped a Ray of its own, 26 s of the test's 27 on two busy cores.)

    The same pass, sized: each actor call took up to 512 rows (512 rows of SmolLM2 signals are 4-8 minutes on 2 CPU
    cores, lost to a kill); a pass now asks SCALE.calls_per_actor calls per actor at least, each at most
    SCALE.batch_rows rows, and records the size (the sizing rule alone: tests/test_scale_without_ray.py). (Ray Data
    still hands an actor a whole block, one shard's rows: a pool of one small file comes back as one block.) And a
    pass starts no more actors than its blocks: on two CPUs a pool of one file started two, and one of them loaded
    the encoder and the scorers (7 s of a core) and was handed no row. (Its own embed pass on 40 rows before: the
    same inference pass, and an actor's start, a second time.)"""
    from curate.defaults import SCALE
    from curate.session import Workspace
    from tests.cli_in_process import curate_in_process

    # the pool has a field named quality: the checks after Ray's load (the test above) let the run go on, the
    # shipped scorer writing to a column of another name (one Ray run for both tests: its actors' starts)
    rows = [{"instruction": f"Task {i}: explain step {i} of the {w} plan.",
             "output": f"Step {i} of the {w} plan is done like this.", "quality": ["good", "bad"][i % 2]}
            for i, w in enumerate("alpha beta gamma delta omega sigma".split())]
    pool = write_jsonl(tmp_path / "pool.jsonl", rows)
    proc = curate_in_process("run", pool.name, "--budget", "3", "--out", "out", "--engine", "ray", "--no-report",
                             cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert local_ray.is_initialized()  # the run used the module's Ray, and left it running
    lines = (proc.stdout + proc.stderr).splitlines()
    assert lines[lines.index("embed") + 1] == "  6 rows, 6 newly encoded by the score step's pass"
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["steps"]["embed"]["encoded"] == 6
    ws = Workspace.open(tmp_path / "out" / "workspace")
    assert ws.selections["deita"]["params"]["sort_by"] == "complexity*quality_score"
    assert ws.column("quality") == [r["quality"] for r in rows] and len(ws.selection("deita").ids) == 3
    for name, engine in (("the vectors", ws.embedding_sets["default"]["engine"]),
                         ("the quality column", ws.column_provenance("quality_score")["engine"])):
        # one file, one block, one actor, though the module's Ray has 2 CPUs
        assert local_ray.cluster_resources()["CPU"] == 2 and engine["actors"] == 1, (name, engine)
        assert engine["batch_rows"] == -(-6 // (1 * SCALE.calls_per_actor)), (name, engine)  # 6 rows in 4 calls


def test_an_error_inside_a_ray_actor_or_task_is_the_clis_one_line_naming_the_workspace_file(local_ray, tmp_path):
    """An error an actor raised reached the user as an 89-line RayTaskError(UserCodeException) traceback (its cause, the
    RemoteError, does not survive Ray's pickling), naming the actor's deleted batch folder instead of the workspace's
    damaged cache shard; a task's error (an empty shard) came after Ray Data's own 115-line traceback; and every run
    printed Ray Core's core_worker.cc line about the actors' constructor arguments."""
    from curate.pipeline import Run, embed, load
    from curate.scale.infer import embed_cache
    from curate.storage.vector_shards import VectorStore

    pool = write_jsonl(tmp_path / "pool.jsonl", instructions(6))
    # the cache the run's actors will read, filled by the single-process embed step (the same cache folder and shards
    # as an actor's: a Ray pass here cost an actor's start, torch and MiniLM, to write 6 vectors)
    filled = Run(str(pool), tmp_path / "run", budget=0, report=False, progress=False)
    load(filled)
    embed(filled)
    store = VectorStore(embed_cache(tmp_path / "run" / "workspace" / "cache"))
    for shard in store.shards():  # rotted vectors, as tests/test_embed.py damages them
        vec = shard / "vectors.npy"
        size = np.load(vec).nbytes
        vec.write_bytes(vec.read_bytes()[:-size] + np.full(size // 4, np.nan, np.float32).tobytes())
    write_jsonl(pool, instructions(7))  # one row more: the run embeds again, reading the cache
    cli = [sys.executable, "-m", "curate", "run", "--budget", "3", "--engine", "ray"]
    damaged = subprocess.run([*cli, "pool.jsonl", "--out", "run"], cwd=tmp_path, capture_output=True, text=True)
    empty = tmp_path / "emp"
    empty.mkdir()
    write_jsonl(empty / "a.jsonl", instructions(3))
    (empty / "z.jsonl").write_text("")
    # the first run started a Ray of its own, as a user's does; this one joins the module's (a Ray start less)
    address = local_ray.get_runtime_context().gcs_address
    unread = subprocess.run([*cli, "emp", "--out", "e", "--address", address], cwd=tmp_path, capture_output=True,
                            text=True)
    names = sorted(s.name for s in store.shards())
    for result, error, code in ((damaged, rf"run/workspace/cache/embeddings/[^/]+/({'|'.join(names)}): a damaged "
                                          "shard of the embedding cache: .*; remove this folder: its vectors are "
                                          "encoded again", 1),
                                (unread, "emp/z.jsonl: file: no records", 65)):  # bad input: 65, as on one engine
        assert result.returncode == code, result.stderr
        said = [line for line in result.stderr.splitlines()  # bars (a line each in a log) and Ray's own log lines aside
                if line.strip() and "row/s]" not in line and not re.match(r"\[\d{4}-\d\d-\d\d ", line)]
        assert len(said) == 1 and re.fullmatch(f"error: {error}.*", said[0]), result.stderr
    # a source that does not read leaves no folder the run made, on either engine: the Ray run left e/run.json and
    # e/workspace/locks/run.lock (its read on Ray ran before the part of its load that took them back)
    from tests.cli_in_process import curate_in_process

    single = curate_in_process("run", "emp", "--budget", "3", "--out", "s", cwd=tmp_path)
    assert single.returncode == 65 and not (tmp_path / "s").exists()
    assert not (tmp_path / "e").exists()


class _StopAfter(Exception):
    pass


def _score_on_ray(source, out, batch_size: int) -> tuple:
    """The Ray engine's load and score steps (the shipped quality scorer) on ``source``, written to ``out``: (the
    engine, the score step's results). The exact dedup the score step needs (it scores the rows dedup kept) is the
    single-process selector's: Ray's groupby (its own test: the cluster tests) cost a Ray Data job per pass here."""
    from curate.pipeline import Run, dedup
    from curate.scale import RayEngine

    engine = RayEngine(batch_size=batch_size)
    run = Run(str(source), out, budget=0, report=False, scores=("quality",), heuristics=False)
    try:
        engine.load(run)
        dedup(run)
        return engine, engine.score(run, fallback=None)
    finally:
        engine.close()


def test_a_ray_score_pass_stopped_part_way_keeps_the_scores_and_vectors_of_the_batches_come_back_and_a_rerun_does_the_rest(
        local_ray, tmp_path, monkeypatch):
    """The driver stored the actors' scores (and signals) through ws.apply only after the whole pass: a run killed at
    90% lost every score, and the re-run scored every row again. Now each batch's values reach the column as it comes
    back (at most every PART_EVERY_S seconds, as the vectors): the re-run's actors score only the rows not stored,
    and the column is what one unbroken pass stores.

    The vectors of the same pass: the driver kept every vector in memory and added them to the workspace's embedding
    cache after the whole pass (the actors' caches are their batches' temporary folders), so a pass killed part way
    lost all its encoding; they go to the cache as batches come back, and the re-run's actors encode only the rest.
    And no progress was shown while the actors worked: a bar counts the rows as batches come back. (An embed-only
    pass stopped part way had a test of its own: the same pass, VectorCommits and bar, with two more actor starts.)"""
    from curate.embed import cache
    from curate.scale.infer import embed_cache
    from curate.scorers import load_default
    from curate.session import Workspace
    from curate.storage import progress
    from curate.storage.vector_shards import VectorStore

    def vectors_stored() -> int:
        return len(VectorStore(embed_cache(tmp_path / "run" / "workspace" / "cache")))

    monkeypatch.setattr(cache, "PART_EVERY_S", 0.0)  # a commit per batch (the default: every 10 s)
    stored_at_stop: list = []

    class StoppingBar:
        def __init__(self, total, desc, enabled, unit="row"):
            self.updates = 0

        def update(self, n=1):
            self.updates += 1
            if self.updates == 2:  # as kill -9 would: what is in the workspace now is all that stays
                ws = Workspace.open(tmp_path / "run" / "workspace")
                stored_at_stop.append((len(ws.column_fingerprints("quality")) if ws.has_column("quality") else 0,
                                       vectors_stored()))
                raise _StopAfter

        def close(self):
            pass

    pool = write_shards(tmp_path / "shards", instructions(48), 6)  # a block, an actor's task, per shard
    monkeypatch.setattr(progress, "progress_bar", StoppingBar)
    with pytest.raises(_StopAfter):
        _score_on_ray(pool, tmp_path / "run", batch_size=8)
    [(at_stop, vectors_at_stop)] = stored_at_stop
    # the batches come back before the stop are in the workspace (and those the failing pass still held: its last
    # commit stores them, so the count is read again after it)
    stored = len(Workspace.open(tmp_path / "run" / "workspace").column_fingerprints("quality"))
    assert 8 <= at_stop <= stored < 48
    assert 8 <= vectors_at_stop <= vectors_stored() < 48, "the vectors of the batches come back were not kept"
    monkeypatch.undo()
    bars: list = []

    class Bar:
        def __init__(self, total, desc, enabled, unit="row"):
            self.total, self.desc, self.counted = total, desc, 0
            bars.append(self)

        def update(self, n=1):
            self.counted += n

        def close(self):
            pass

    monkeypatch.setattr(progress, "progress_bar", Bar)
    engine, resumed = _score_on_ray(pool, tmp_path / "run", batch_size=8)
    assert [(b.total, b.counted, b.desc) for b in bars] == [(48, 48, "inference")], "the bar counts every row"
    assert 48 - engine._encoded >= vectors_at_stop, "the re-run's actors encoded again vectors the cache held"
    assert vectors_stored() == 48
    assert len(engine._results["quality"]) == 48 - stored  # the actors scored only the rows not stored
    assert (resumed["quality"].computed, resumed["quality"].skipped) == (48 - stored, stored)
    ws = Workspace.open(tmp_path / "run" / "workspace")
    runs = ws.column_provenance("quality")["runs"]
    assert sum(r["rows"] for r in runs) == 48 and all(r["engine"]["name"] == "ray" for r in runs)
    assert runs[0]["rows"] < runs[0]["engine"]["pass_rows"] == 48  # the killed pass's record says it did not finish
    assert runs[-1]["rows"] == runs[-1]["engine"]["pass_rows"] and all("pass_started" in r["engine"] for r in runs)
    shutil.copytree(tmp_path / "run" / "workspace", tmp_path / "whole")  # the column an unbroken pass stores
    whole = Workspace.open(tmp_path / "whole")
    assert whole.apply(load_default("quality"), force=True, progress=False).computed == 48
    assert ws.column_fingerprints("quality") == whole.column_fingerprints("quality")
    np.testing.assert_allclose(ws.column_array("quality"), whole.column_array("quality"), rtol=0, atol=1e-6)
    assert ws.failures("quality") == whole.failures("quality")
