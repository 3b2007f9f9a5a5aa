"""The Ray engine's parts that run without Ray (outside the xdist group of the tests that start Ray, so another worker
runs them): the shard reader its tasks call, the actor's Inference class called in this process, its batch folders'
cleanup, and the refusals made before Ray starts. The runs on Ray: tests/test_ray_engine.py and test_ray_cluster.py."""

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from curate import pools
from curate.cli import sample_path
from curate.errors import CurateWarning
from curate.pools.shards import shard_paths
from curate.scale.sources import REJECT, ROW, read_shards
from tests.conftest import write_jsonl
from tests.ray_pools import generated_pool, write_shards
from tests.train_fixtures import tiny_lm  # noqa: F401  (the session fixture, used through request.getfixturevalue)


def test_shards_are_read_by_pools_read_in_name_order(tmp_path):
    folder = write_shards(tmp_path / "shards", generated_pool(300), 3)
    (folder / "notes.txt").write_text("not a shard")
    paths = shard_paths(str(folder))
    assert paths == sorted(str(p) for p in folder.glob("*.jsonl"))
    assert shard_paths(str(folder / "part-*.jsonl")) == paths
    # the read task is pools.read per shard: same rows (in order), same rejects, keys of the exact selector
    tables = list(read_shards({"shard": np.arange(3), "path": np.array(paths)}))
    rows = [pickle.loads(b) for t in tables
            for b, k in zip(t["data"].to_pylist(), t["kind"].to_pylist(), strict=True) if k == ROW]
    rejects = [pickle.loads(b) for t in tables for b, k in zip(t["data"].to_pylist(), t["kind"].to_pylist(), strict=True)
               if k == REJECT]
    expected = [pools.read(p, on_error="skip") for p in paths]
    assert rows == [r for res in expected for r in res.rows]
    assert [(r.path, r.location) for r in rejects] == [(r.path, r.location) for res in expected for r in res.rejects]
    orders = [o for t in tables for o, k in zip(t["order"].to_pylist(), t["kind"].to_pylist(), strict=True) if k == ROW]
    assert orders == sorted(orders) and len(set(orders)) == len(rows)


def test_parquet_shards_read_like_a_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [{k: v for k, v in r.items() if k != "source"} for r in generated_pool(200, seed=3)
            if isinstance(r, dict) and "instruction" in r and "output" in r]
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "one.parquet")
    tables = list(read_shards({"shard": np.arange(1), "path": np.array([str(tmp_path / "one.parquet")])}))
    rows = [pickle.loads(b) for t in tables for b in t["data"].to_pylist()]
    assert rows == pools.read(str(tmp_path / "one.parquet")).rows


def test_an_actor_for_signals_alone_loads_no_encoder_and_computes_what_ws_apply_does(request, tmp_path, monkeypatch):
    """The signals' own pass (a run whose scores are already stored): `Inference(embed=False)` on a read block;
    it leaves no cache behind (Ray kills actors, so nothing may wait for the actor's end to clean up)."""
    from curate.scale.infer import Inference
    from curate.session import Workspace
    from curate.signals import IFD

    model = request.getfixturevalue("tiny_lm")
    shard = write_jsonl(tmp_path / "one.jsonl", generated_pool(40, seed=2))
    block = next(iter(read_shards({"shard": np.arange(1), "path": np.array([str(shard)])})))
    actor_tmp = tmp_path / "actor-tmp"
    actor_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(actor_tmp))
    actor = Inference(signals=["ifd", "perplexity"], signal_model=str(model), embed=False)
    out = actor(block)
    assert not any(actor_tmp.iterdir())
    assert "embedding" not in out and not hasattr(actor, "device")  # no encoder on this actor
    ws = Workspace(tmp_path / "ws")
    with pytest.warns(CurateWarning, match=r"1 record\(s\) left out"):
        ws.load(shard, on_error="skip")
    with pytest.warns(CurateWarning, match=r"ifd: 1 of the 39 rows computed now failed"):
        ws.apply(IFD(str(model)), progress=False)
    assert len(out["order"]) == len(ws) and list(out["order"]) == sorted(out["order"])
    got = [json.loads(v) for v in out["ifd__values"]]
    assert sum(v is not None for row in got for v in row) > 25 and any(json.loads(f) for f in out["ifd__failures"])
    for x, y in zip(got, ws.turn_values("ifd"), strict=True):
        np.testing.assert_allclose(np.array(x, dtype=float), np.array(y, dtype=float), rtol=1e-5)
    assert all("loss_conditioned" in json.loads(e) for e in out["ifd__extra"])


def test_the_counts_of_signals_computed_on_actors_reach_their_run_records_as_on_one_process(request, tmp_path):
    """The actors' batches carry each step's run counts (turns truncated and scored, the run's IFD >= 1 turns and
    rows, requests and those the log-prob cache answered); the driver sums them into each write's run record: the
    pass's record holds the single engine's counts (they were thrown away: no 'N of their M requests answered by
    the on-disk cache' line on Ray). Two batches, stored by two writes: the counts are summed, not repeated."""
    import warnings

    from curate.scale.collect import PassResults, VectorCommits
    from curate.scale.commits import ColumnCommits, store_rest
    from curate.scale.infer import Inference, _NoProgress
    from curate.session import Workspace
    from curate.signals.steps import signal_steps

    model = str(request.getfixturevalue("tiny_lm"))
    shard = write_jsonl(tmp_path / "one.jsonl", generated_pool(24, seed=2))
    block = next(iter(read_shards({"shard": np.arange(1), "path": np.array([str(shard)])})))
    actor = Inference(signals=["ifd", "perplexity"], signal_model=model, embed=False)
    single, ray = Workspace(tmp_path / "single"), Workspace(tmp_path / "ray")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CurateWarning)  # the pool's bad record, the rows failed: not what is tested
        for ws in (single, ray):
            ws.load(shard, on_error="skip")
        for step in signal_steps(["ifd", "perplexity"], model):
            single.apply(step, progress=False)
        steps, ids = signal_steps(["ifd", "perplexity"], model), ray.ids
        columns = ColumnCommits(ray, steps, ids, {"name": "ray", "pass": "p1"})
        collected = PassResults(ids, np.sort(block.column("order").to_numpy()), steps, [s.column for s in steps],
                                False, VectorCommits(None), {}, "signals", _NoProgress(), columns)
        half = block.num_rows // 2
        for part in (block.slice(0, half), block.slice(half)):  # two actor calls, each stored by its own write
            collected.add(actor(part))
            columns.commit()
        for step in steps:
            store_rest(ray, step, collected.results[step.column], collected.extra[step.column], {"name": "ray"},
                       ids, False, columns.stored.get(step.column), collected.counts.get(step.column))
    for column in ("ifd", "perplexity"):
        (one,), (pass_,) = single.column_provenance(column)["runs"], ray.column_provenance(column)["runs"]
        keys = ["turns_scored", "turns_truncated", "requests", "cached_requests"]
        keys += ["ifd_at_least_one", "rows_with_ifd_at_least_one"] if column == "ifd" else []
        assert {k: pass_.get(k) for k in keys} == {k: one[k] for k in keys}, column
        assert pass_["engine"]["pass"] == "p1" and one["turns_scored"] > 10 and one["requests"] > 10
    assert ray.column_provenance("perplexity")["runs"][0]["cached_requests"] > 0  # IFD's forward passes, reused


def test_an_actors_scorer_counts_the_texts_it_encoded_not_those_its_embed_step_encoded_in_the_call(tmp_path):
    """One process's scorers encode their texts before its embed step; an actor encoded the rows' texts for the
    embedding first, and its scorer then counted them as read from the embedding cache (Ray printed '2 distinct
    texts encoded, 9 from the embedding cache' where one process records 11 encoded, none from it)."""
    from curate.scale.infer import Inference
    from curate.scorers import load_default
    from curate.session import Workspace

    shard = write_jsonl(tmp_path / "one.jsonl", [r for r in generated_pool(14, seed=5) if isinstance(r, dict)][:10])
    block = next(iter(read_shards({"shard": np.arange(1), "path": np.array([str(shard)])})))
    out = Inference(scores=["quality"])(block)
    ws = Workspace(tmp_path / "ws")
    ws.load(shard, on_error="skip")
    ws.apply(load_default("quality"), progress=False)
    one = ws.column_provenance("quality")["runs"][-1]
    counts = json.loads(out["quality__stats"][0])
    assert one["texts_encoded"] > 5 and one["texts_from_embedding_cache"] == 0
    assert {k: counts.get(k) for k in ("texts_encoded", "texts_from_embedding_cache")} == {
        k: one[k] for k in ("texts_encoded", "texts_from_embedding_cache")}
    assert out["embedding"].shape[0] == len(ws)


def test_a_fine_tuned_scorer_on_an_actor_writes_no_prediction_cache_the_batch_throws_away(tiny_base, tmp_path,
                                                                                          monkeypatch):
    """Each batch's fine-tuned scorer wrote its forward passes as shards (and merged them) into the batch's folder,
    removed with the batch: disk writes for nothing. On an actor it scores without that cache; in a workspace the
    cache is kept as before."""
    import curate.scorers.prediction_cache as prediction_cache
    from curate.scale.infer import Inference, pack_scorer
    from curate.scorers.finetuned import CrossEncoderScorer
    from curate.session import Workspace

    pool = generated_pool(20, seed=4)
    train = [{"instruction": f"Explain topic {i}.", "response": "reasoning " * (1 + 3 * (i % 4))} for i in range(12)]
    sc = CrossEncoderScorer(name="q_ce", max_length=32, base=tiny_base).fit(train, [1.0 + 2 * (i % 4) for i in range(12)],
                                                                            epochs=1, batch_size=4)
    shard = write_jsonl(tmp_path / "one.jsonl", pool)
    block = next(iter(read_shards({"shard": np.arange(1), "path": np.array([str(shard)])})))
    stored: list[str] = []
    store = prediction_cache.store

    def recorded(folder, keys, values):
        stored.append(str(folder))
        return store(folder, keys, values)

    monkeypatch.setattr(prediction_cache, "store", recorded)
    out = Inference(scores=[pack_scorer(sc)], embed=False)(block)
    assert stored == []
    got = [json.loads(v) for v in out["q_ce__values"]]
    ws = Workspace(tmp_path / "ws")
    ws.load(shard, on_error="skip")
    ws.apply(sc, progress=False)
    assert stored and all(str(ws.cache_dir) in folder for folder in stored)  # the workspace keeps its cache
    # the batch's run counts travel with it (sent back once, on its first row): the turns the model scored, as the
    # single engine's run record counts them (a fresh cache: none from it)
    counts = [json.loads(c) for c in out["q_ce__stats"]]
    assert all(c == {} for c in counts[1:]) and counts[0]["turns_predicted"] > 10
    one = ws.column_provenance("q_ce")["runs"][-1]
    assert {k: counts[0].get(k) for k in ("turns_predicted", "turns_from_prediction_cache", "turns_scored")} == {
        k: one.get(k) for k in ("turns_predicted", "turns_from_prediction_cache", "turns_scored")}
    for x, y in zip(got, ws.turn_values("q_ce"), strict=True):
        np.testing.assert_allclose(np.array(x, dtype=float), np.array(y, dtype=float), rtol=1e-5)


def test_learnability_in_a_run_without_a_reference_selection_is_refused(tmp_path):
    from curate.pipeline import run_pipeline

    whole = write_jsonl(tmp_path / "pool.jsonl", generated_pool(50, seed=3))
    with pytest.raises(Exception, match="learnability needs a reference selection"):
        run_pipeline(str(whole), out=tmp_path / "single", budget=20, report=False, signals=("learnability",))


def test_engine_errors_are_named(tmp_path):
    from curate.errors import CurateError
    from curate.pipeline import run_pipeline
    from curate.scorers import Scorer

    with pytest.raises(CurateError, match="unknown engine"):
        run_pipeline(str(sample_path()), out=tmp_path / "x", budget=5, engine="spark")
    with pytest.raises(CurateError, match=r"address '.*' \(--address\) .* needs engine='ray' \(--engine ray\)"):
        run_pipeline(str(sample_path()), out=tmp_path / "y", budget=5, address="127.0.0.1:1")
    reads_ifd = Scorer(reads=["instruction", "response"], name="q_ifd", columns=["ifd"], features=["length"])
    reads_ifd.fit([{"instruction": f"q{i}", "response": "a" * (i + 1), "ifd": i / 10} for i in range(12)],
                  [float(i % 5) for i in range(12)])
    with pytest.raises(CurateError, match="scorer 'q_ifd' reads the columns ifd: .* runs on the single engine"):
        run_pipeline(str(sample_path()), out=tmp_path / "z", budget=5, engine="ray", scorers={"quality": reads_ifd},
                     signals=("ifd",))
    assert not any((tmp_path / name).exists() for name in "xyz")


def test_an_error_inside_a_ray_task_reaches_the_driver_as_a_curate_error():
    import pickle as pk

    from curate.errors import CurateError, InputError
    from curate.scale.sources import RemoteError, remote_errors

    with pytest.raises(RemoteError) as caught, remote_errors():
        raise InputError("a.jsonl", "file", "no records")
    carried = pk.loads(pk.dumps(caught.value))  # what Ray sends back (InputError itself does not unpickle)
    assert str(carried) == "a.jsonl: file: no records" and carried.kind == "InputError"
    from curate.scale import RayEngine

    engine = RayEngine()
    with pytest.raises(CurateError, match="a.jsonl: file: no records"), engine.stage():
        raise RuntimeError("task failed") from carried


def test_a_bad_input_inside_a_ray_task_exits_65_as_on_the_single_engine():
    """An InputError raised in a Ray task (a shard that does not read) came to the driver as a plain CurateError, so
    `curate run --engine ray` exited 1 ("any other failure") where the single engine exits 65 (bad input); an option
    refused in a task exited 1 where it exits 78."""
    import pickle as pk

    from curate.errors import InputError, OptionError
    from curate.exit_codes import EXIT_CONFIG, EXIT_DATAERR, exit_code
    from curate.scale import RayEngine
    from curate.scale.sources import RemoteError, remote_errors

    for raised, kind, code in ((InputError("emp/z.jsonl", "file", "no records"), InputError, EXIT_DATAERR),
                               (OptionError("mapping 'x': ..."), OptionError, EXIT_CONFIG)):
        with pytest.raises(RemoteError) as caught, remote_errors():
            raise raised
        carried = pk.loads(pk.dumps(caught.value))
        with pytest.raises(kind) as driver, RayEngine().stage():
            raise RuntimeError("task failed") from carried
        assert str(driver.value) == str(raised) and exit_code(driver.value) == code


def test_an_actor_removes_the_batch_folders_killed_actors_left_and_keeps_live_ones(tmp_path, monkeypatch):
    """A Ray actor killed mid-batch (kill -9, a node's OOM killer) left its curate-ray-* folder in /tmp for good."""
    import tempfile

    from curate.scale.infer import BATCH_FOLDER_PREFIX, Inference, batch_folder_prefix

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()  # a pid that has exited
    dead = tmp_path / f"{batch_folder_prefix(int(gone))}abc123"
    live = tmp_path / f"{batch_folder_prefix(os.getppid())}def456"
    elsewhere = tmp_path / f"{BATCH_FOLDER_PREFIX}0badc0de-{gone}-789abc"  # another container's, in a shared /tmp
    for folder in (dead, live, elsewhere):
        (folder / "embeddings").mkdir(parents=True)
    Inference(embed=False)
    assert not dead.exists() and live.exists() and elsewhere.exists()


def test_batch_folders_named_before_the_host_was_in_them_go_when_their_actor_is_gone(tmp_path, monkeypatch):
    """Folders of the older name curate-ray-<pid>-* (no host) were never removed: the cleanup looked for this host's
    names only. They go when their pid runs no process here and no batch could still be using them (untouched for a
    day: the name gives no host, and in a /tmp shared by containers the pid may be another's)."""
    import tempfile

    from curate.scale.infer import BATCH_FOLDER_PREFIX, HOSTLESS_STALE_AFTER_S, remove_stale_batch_folders

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()  # a pid that has exited
    dead = tmp_path / f"{BATCH_FOLDER_PREFIX}{gone}-abc_1234"
    live = tmp_path / f"{BATCH_FOLDER_PREFIX}{os.getppid()}-def45678"
    young = tmp_path / f"{BATCH_FOLDER_PREFIX}{gone}-ghi90123"  # maybe a live batch of another host's
    other_host = tmp_path / f"{BATCH_FOLDER_PREFIX}12345678-{gone}-jkl45678"  # today's name, an all-digit host
    for folder in (dead, live, young, other_host):
        (folder / "embeddings").mkdir(parents=True)
    old = time.time() - 2 * HOSTLESS_STALE_AFTER_S
    for folder in (dead, live, other_host):
        os.utime(folder, (old, old))
    assert remove_stale_batch_folders() == [dead]
    assert not dead.exists() and live.exists() and young.exists() and other_host.exists()


def test_a_pass_sizes_its_actor_calls_by_the_pool_and_the_actors():
    """Each actor call of a Ray pass took up to 512 rows: a pass asks SCALE.calls_per_actor calls per actor at least,
    each at most SCALE.batch_rows rows (SCALE.signal_batch_rows with signals). (A pass on Ray records the size it
    used: tests/test_ray_engine.py's embed-step test.)"""
    from curate.defaults import SCALE
    from curate.scale.collect import pass_batch_size

    assert pass_batch_size(100_000, 2, signals=False) == SCALE.batch_rows  # a large pool keeps the encoder's batches
    assert pass_batch_size(100_000, 2, signals=True) == SCALE.signal_batch_rows
    assert pass_batch_size(40, 2, signals=False) == -(-40 // (2 * SCALE.calls_per_actor))


def _sleeper(*args: str) -> subprocess.Popen:
    """A child of this process that sleeps, with ``args`` on its command line."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])


def test_the_reaper_takes_only_children_running_rays_programs_as_rays():
    """Any child whose command line had "ray" in it (an `array` argument, a /home/raymond path) was taken for one of
    Ray's processes and killed with them when the driver died."""
    import importlib.util

    from curate.scale.reaper import ray_children

    ray_dir = importlib.util.find_spec("ray").submodule_search_locations[0]
    before = {child.pid for child in __import__("psutil").Process().children()}
    other, ray_like = _sleeper("array"), _sleeper(os.path.join(ray_dir, "dashboard", "dashboard.py"))
    try:
        found = ray_children(before)
        assert other.pid not in found
        assert ray_like.pid in found
    finally:
        for child in (other, ray_like):
            child.kill()
            child.wait()


def test_the_reaper_leaves_a_process_that_took_a_ray_processs_pid_and_kills_the_rest():
    """A root the reaper followed by pid alone: once that Ray process died and its pid went to another program, the
    reaper noted that program (and its children) and killed it when the driver died."""
    import psutil

    from curate.scale.reaper import _note, watch

    ray_root, reused = _sleeper(), _sleeper()
    try:
        started = {p.pid: psutil.Process(p.pid).create_time() for p in (ray_root, reused)}
        known: dict[int, float] = {}
        _note({ray_root.pid: started[ray_root.pid], reused.pid: started[reused.pid] - 5.0}, known)
        assert ray_root.pid in known and reused.pid not in known
        reaper = watch({ray_root.pid: started[ray_root.pid], reused.pid: started[reused.pid] - 5.0})
        time.sleep(1.0)
        reaper.process.stdin.close()  # the driver's end of the pipe, as at a SIGKILL: no "done"
        reaper.process.wait(timeout=30)
        assert ray_root.wait(timeout=30) == -9
        assert reused.poll() is None
    finally:
        for child in (ray_root, reused):
            child.kill()
            child.wait()


def test_the_reaper_notes_a_ray_process_that_got_the_pid_of_one_it_saw_end():
    """A worker started under a Ray root with the pid of one that had ended kept the ended one's start time: the
    reaper then left it running when the driver died (its start time did not match)."""
    import psutil

    from curate.scale.reaper import _note

    root = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                             "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"])
    try:
        deadline = time.monotonic() + 30
        while not psutil.Process(root.pid).children():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        [worker] = psutil.Process(root.pid).children()
        known = {worker.pid: worker.create_time() - 100.0}  # the pid's earlier process, seen and ended
        _note({root.pid: psutil.Process(root.pid).create_time()}, known)
        assert known[worker.pid] == worker.create_time()
    finally:
        for process in psutil.Process(root.pid).children():
            process.kill()
        root.kill()
        root.wait()


def test_the_ray_embed_step_records_and_warns_of_the_models_unknown_tokens_as_the_single_engine_does(tmp_path):
    """The Ray engine's embed step, given the vectors its pass left (no Ray is needed to store them), writes the set's
    metadata the single engine's embed step writes: backend and unknown_token_share too, and the run's warning for a
    pool in a language the packaged model does not read (the Ray run said nothing of it)."""
    from types import SimpleNamespace

    from curate.scale.ray_engine import RayEngine
    from curate.session import Workspace

    words = ["翻译", "编程", "物理", "数学", "历史", "音乐"]
    records = [{"instruction": f"请{a}和{b}第{i}题", "output": f"{a}{b}答案"} for i, (a, b) in
               enumerate((a, b) for a in words for b in words if a != b)][:12]
    source = write_jsonl(tmp_path / "zh.jsonl", records)
    single, on_ray = Workspace(tmp_path / "single"), Workspace(tmp_path / "ray")
    single.load(str(source))
    on_ray.load(str(source))
    done = single.embed(progress=False)
    assert done["warning"] and done["unknown_token_share"] > 0.05
    engine = RayEngine()
    engine._whole_pool, engine._ids = True, on_ray.ids
    engine._embedding, engine._encoded = single.embeddings("default"), len(on_ray)
    engine._inference_info = {"name": "ray", "device": "cpu"}
    result = engine.embed(SimpleNamespace(ws=on_ray, progress=False), fallback=None)
    assert result["warning"] == done["warning"]
    history = ("created", "file", "ids_file", "encoded", "cache", "engine")
    meta = {name: {k: v for k, v in ws.embedding_sets["default"].items() if k not in history}
            for name, ws in (("single", single), ("ray", on_ray))}
    assert meta["ray"] == meta["single"] and meta["ray"]["unknown_token_share"] == done["unknown_token_share"]
