"""The Ray Data engine (curate/scale) on a real two-node Ray cluster on 127.0.0.1: `curate run --engine ray
--address ...` selects exactly what the single-process engine selects. (Its own file: the cluster, a module
fixture, is stopped before tests/test_ray_engine.py starts its in-process Ray; one Ray at a time on two cores.)"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from curate.errors import CurateWarning
from tests.conftest import write_jsonl
from tests.ray_pools import generated_pool, write_shards
from tests.train_fixtures import tiny_lm  # noqa: F401  (the session fixture, used through request.getfixturevalue)

ray = pytest.importorskip("ray")

CLUSTER_START_S = 120  # the two nodes must be up within this


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, log, env):
    return subprocess.Popen(["ray", "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                             "--disable-usage-stats", *args], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)


def _stop(proc) -> None:
    """Stop one `ray start --block` and everything it started: its raylet, GCS and workers share its own
    process group, which is killed by id (a SIGTERM would drain the node for 30 s first)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("ray-logs")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # the cluster's own token (never ~/.ray/auth_token): every process of the test gets it in its environment
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    head = _start(["--head", f"--port={port}", "--include-dashboard=false"], logs / "head.log", env)
    worker = None
    try:
        deadline = time.time() + CLUSTER_START_S
        while True:  # the head's GCS port answers
            assert head.poll() is None, (logs / "head.log").read_text()[-2000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "the Ray head did not start"
                time.sleep(0.5)
        worker = _start([f"--address={address}"], logs / "worker.log", env)
        # `ray start` says "Ray runtime started." once its node is registered with the GCS (Ray's Node waits for the
        # GCS to know it first): read from its log, not by a driver of its own polling ray.nodes() (a Python
        # process, Ray imported and a job joined: 14 s of the fixture's 17 on two busy cores)
        while "Ray runtime started." not in (logs / "worker.log").read_text():
            assert worker.poll() is None, (logs / "worker.log").read_text()[-3000:]
            assert time.time() < deadline, "the Ray worker node did not start: " + (logs / "worker.log").read_text()[-2000:]
            time.sleep(0.2)
        yield address, env
    finally:
        for proc in (worker, head):
            if proc is not None:
                _stop(proc)
        current = "/tmp/ray/ray_current_cluster"  # `ray start --head` leaves our address here: remove only ours
        try:
            if open(current).read().strip().endswith(f":{port}"):
                os.unlink(current)
        except OSError:
            pass


@pytest.fixture(scope="module")
def joined(cluster):
    """This process joined to the cluster as a Ray driver for the module, for the `curate run --engine ray --address`
    calls run in-process (curate_in_process): an engine reuses a Ray already initialised and leaves it running, so
    those runs share one Ray job, and no fresh interpreter imports torch, Ray and curate for each. A driver of its own
    joining with --address (Ray's notices on that process's stderr, the token from its environment): the first
    test's run."""
    import logging

    # Ray reads its auth mode and token once per process (RayConfig, the token loader's cache): read again as Ray's
    # own token-auth tests do, with the cluster's token here, and without it after (this worker's later local Rays)
    from ray._private.authentication_test_utils import reset_auth_token_state

    address, env = cluster
    if ray.is_initialized():
        ray.shutdown()
    with pytest.MonkeyPatch.context() as mp:  # the cluster's token, for this process's ray.init
        for name in ("RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
            mp.setenv(name, env[name])
        mp.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
        reset_auth_token_state()
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
            yield address, env
        finally:
            ray.shutdown()
    reset_auth_token_state()


def test_curate_run_engine_ray_on_a_two_node_cluster_writes_and_selects_what_the_single_process_engine_does(
        request, cluster, tmp_path):
    """`curate run --engine ray --address A --scorer quality=DIR --scorer complexity=complexity_ridge --signal ifd
    --signal perplexity`: the rows, dedup, the scores (the actors load the run's scorers from their packed folders: no
    node reads DIR), the token signals (one causal LM per actor), the embeddings and the selection are what one
    process writes. (One run for both: the trained scorers had a cluster run of their own, 35 s. The shipped scorers
    on the cluster: the text-rules test below.)"""
    from curate.pipeline import run_pipeline
    from curate.scorers import Scorer
    from curate.session import Workspace
    from tests.cli_in_process import curate_in_process

    model = request.getfixturevalue("tiny_lm")  # the session's (the judges' test below uses it too)
    # 120 rows (seed 2: 14 exact repeats, 4 instruction-only rows, 4 malformed records, a near-duplicate the selection
    # refuses): equality with one process holds at any size (300 rows: the single run 15.5 s -> 11.3 s here; the Ray
    # run's time is mostly its fixed costs, its jobs' workers and actors starting)
    records = generated_pool(120, seed=2)
    whole = write_jsonl(tmp_path / "pool.jsonl", records)
    shards = write_shards(tmp_path / "shards", records, 4)
    budget = 25
    signals = ["--signal", "ifd", "--signal", "perplexity", "--signal-model", str(model)]
    rows = [r for r in records if isinstance(r, dict) and r.get("output")][:30]
    mine = Scorer(reads=["instruction", "response"], name="my_quality", features=["length"],
                  imitates={"judge": "quality", "model": "hand"})
    mine.fit([{"instruction": r["instruction"], "response": r["output"]} for r in rows],
             [1.0 + (len(r["output"]) % 5) for r in rows])
    folder = mine.save(tmp_path / "my-scorer")
    scorers = {"quality": str(folder), "complexity": "complexity_ridge"}

    address, env = cluster
    # without the text rules (on by default): their empty-reply rule would leave out the instruction-only rows whose
    # score and signal failures both engines must record alike (the rules on Ray: the text-rules test below)
    r = subprocess.run([sys.executable, "-m", "curate.cli", "run", str(shards), "--engine", "ray", "--address", address,
                        "--budget", str(budget), "--out", str(tmp_path / "ray"), "--no-report", "--no-heuristics",
                        "--scorer", f"quality={folder}", "--scorer", "complexity=complexity_ridge", *signals],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "ifd:" in r.stdout and "perplexity:" in r.stdout
    assert not any(notice in r.stderr for notice in ("Token authentication", "Progress bars disabled", "concurrent actors"))
    with (
        pytest.warns(CurateWarning, match=r"4 record\(s\) left out"),
        pytest.warns(CurateWarning, match=r"ifd: 3 of the 102 rows computed now failed"),
        pytest.warns(CurateWarning, match=r"my_quality: 3 of the 102 rows computed now failed"),
        pytest.warns(CurateWarning, match=r"perplexity: 3 of the 102 rows computed now failed"),
    ):
        single = run_pipeline(str(whole), out=tmp_path / "single", budget=budget, report=False,
                              signals=("ifd", "perplexity"), signal_model=str(model), heuristics=False, scorers=scorers)

    ray_ws, ws = Workspace.open(tmp_path / "ray" / "workspace"), single.workspace
    assert ray_ws.ids == ws.ids and len(ws) > 100                         # the pool: same rows, ids, order
    assert ray_ws.manifest["sources"][0]["rejects"] == ws.manifest["sources"][0]["rejects"] > 0
    # asked to stop at a bad record, both engines stop at the same first one, naming its file and line
    strict = [sys.executable, "-m", "curate.cli", "run", "--budget", "6", "--on-error", "raise",
              "--out", str(tmp_path / "strict")]
    one = curate_in_process(*strict[3:], whole, env=env)  # one process: the CLI's main() here (no interpreter start)
    request.getfixturevalue("joined")  # (after the run above, whose driver is a process of its own)
    on_ray = curate_in_process(*strict[3:], shards, "--engine", "ray", "--address", address, env=env)
    assert one.returncode == on_ray.returncode == 65 and not (tmp_path / "strict").exists()
    errors = [[line.split(": ", 3) for line in p.stderr.splitlines() if line.startswith("error:")] for p in (one, on_ray)]
    (_, one_path, one_line, one_reason), (_, ray_path, ray_line, ray_reason) = errors[0][0], errors[1][0]
    assert one_path == str(whole) and ray_path.startswith(str(shards)) and one_line.startswith("line ")
    assert ray_line.startswith("line ") and one_reason == ray_reason
    assert ray_ws.selection("dedup").table.to_pylist() == ws.selection("dedup").table.to_pylist()
    assert ray_ws.selection("dedup").decisions()["duplicate"] > 10
    for column in ("my_quality", "complexity_ridge"):                        # the scores: as ws.apply writes them
        a, b = ray_ws.column_provenance(column), ws.column_provenance(column)
        assert a["fingerprint"] == b["fingerprint"] and a["scorer"] == b["scorer"] and a["engine"]["name"] == "ray"
        assert a["engine"].get("rows_computed_on_driver", 0) == 0
        assert ray_ws.column_fingerprints(column) == ws.column_fingerprints(column)
        np.testing.assert_allclose(ray_ws.column_array(column), ws.column_array(column), rtol=0, atol=1e-5)
        assert ray_ws.failures(column) == ws.failures(column)
    assert any(ray_ws.failures("my_quality"))                                # instruction-only rows
    assert "quality" not in ray_ws.columns and "complexity" not in ray_ws.columns
    assert ray_ws.selections["deita"]["params"]["sort_by"] == "complexity_ridge*my_quality"
    np.testing.assert_allclose(ray_ws.embeddings("default"), ws.embeddings("default"), rtol=0, atol=1e-5)
    # the selection: exactly the same ids in the same order, with the same decisions for every row
    kept = ws.selection("deita").ids
    assert len(kept) == budget and ray_ws.selection("deita").ids == kept
    assert ray_ws.selection("deita").decisions() == ws.selection("deita").decisions()
    assert ws.selection("deita").decisions()["rejected"] > 0                 # near-duplicates were refused
    exported = [json.loads(x)["id"] for x in (tmp_path / "ray" / "selected.jsonl").read_text().splitlines()]
    assert exported == kept
    assert "engine" not in ws.column_provenance("my_quality")                # single process stays the default
    for column in ("ifd", "perplexity"):                                     # the signals: same values, failures
        a, b = ray_ws.column_provenance(column), ws.column_provenance(column)
        assert a["fingerprint"] == b["fingerprint"] and a["engine"]["name"] == "ray" and "engine" not in b
        assert ray_ws.failures(column) == ws.failures(column)
        assert any(ray_ws.failures(column))                                  # instruction-only rows: no response
        got, want = ray_ws.turn_values(column), ws.turn_values(column)
        assert sum(v is not None for row in want for v in (row or [])) > 80
        for x, y in zip(got, want, strict=True):
            np.testing.assert_allclose(np.array(x or [], dtype=float), np.array(y or [], dtype=float), rtol=1e-4)
    side = [c for c in ws.columns if c.startswith("ifd_") and c != "ifd_failure"]
    assert side and all(ray_ws.has_column(c) for c in side)                  # the losses behind IFD come home too


def test_text_rules_on_the_ray_engine_keep_and_score_what_the_single_process_engine_does(joined, tmp_path):
    """`curate run --engine ray --minhash --heuristics`: MinHash on Ray, then the text rules on the driver, between
    Ray's dedup and Ray's scoring; the actors score only the rows both kept, as one process does. (The runs: in
    this process, on the module's driver joined to the cluster.)"""
    from curate.pipeline import run_pipeline
    from curate.session import Workspace
    from tests.cli_in_process import curate_in_process

    failing = [{"instruction": "Tell me a joke about sorting.", "output": "I'm sorry, but I can't help with that."},
               {"instruction": "Explain the query cache.", "output": "The cache keeps the query. " * 30},
               {"instruction": "Summarise the schema.", "output": "As an AI language model, I cannot see your schema."}]
    # 90 rows (seed 23: 8 near-duplicates, 4 rows the rules drop): equality with one process holds at any size
    records = generated_pool(90, seed=23) + failing
    whole = write_jsonl(tmp_path / "pool.jsonl", records)
    shards = write_shards(tmp_path / "shards", records, 3)
    address, env = joined
    # a relative source, from a folder the cluster's workers do not run in: they are given its absolute path
    r = curate_in_process("run", shards.name, "--engine", "ray", "--address", address, "--minhash", "--heuristics",
                          "--budget", "20", "--out", "ray", "--no-report", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with pytest.warns(CurateWarning, match=r"3 record\(s\) left out"):
        single = run_pipeline(str(whole), out=tmp_path / "single", budget=20, report=False, heuristics=True, minhash=True)

    ray_ws, ws = Workspace.open(tmp_path / "ray" / "workspace"), single.workspace
    assert ray_ws.ids == ws.ids
    near = ws.selection("minhash")  # the generated pool's one-word-changed rows
    assert ray_ws.selection("minhash").table.to_pylist() == near.table.to_pylist() and near.decisions()["duplicate"] > 3
    assert ray_ws.selection("minhash").provenance["engine"]["name"] == "ray"  # computed on the cluster
    rules = ws.selection("heuristics")
    assert ray_ws.selection("heuristics").table.to_pylist() == rules.table.to_pylist()
    failed = {row_id for row_id, reason in zip(rules.table["id"].to_pylist(), rules.table["reason"].to_pylist(),
                                               strict=True) if reason == "fails_heuristic"}
    assert len(failed) >= 3  # the three above at least (the instruction-only rows have no reply)
    for column in ("complexity", "quality"):  # the shipped scorers, as ws.apply writes them; NaN where a row was not scored
        a, b = ray_ws.column_provenance(column), ws.column_provenance(column)
        assert a["fingerprint"] == b["fingerprint"] and a["scorer"] == b["scorer"] and a["engine"]["name"] == "ray"
        assert "engine" not in b  # single process stays the default
        assert ray_ws.column_fingerprints(column) == ws.column_fingerprints(column)
        np.testing.assert_allclose(ray_ws.column_array(column), ws.column_array(column), rtol=0, atol=1e-5)
        assert ray_ws.failures(column) == ws.failures(column)
    quality = dict(zip(ws.ids, ws.column_array("quality"), strict=True))
    assert all(np.isnan(quality[row_id]) for row_id in failed)  # a row the rules drop is never scored
    for column in ("complexity", "quality"):  # nor computed by the actors: every turn they scored was stored
        stored = sum(v is not None for row in ray_ws.turn_values(column) for v in (row or []))
        assert ray_ws.column_provenance(column)["turns_scored"] == stored
    assert sum(not np.isnan(v) for v in quality.values()) > 50
    assert ray_ws.selection("deita").ids == ws.selection("deita").ids and not failed & set(ws.selection("deita").ids)
    # a row added at the top of the source: the actors score it alone (they scored every kept row again)
    added = {"instruction": "Describe how an open-addressing hash map grows when its load factor passes 0.7.",
             "output": "It allocates a larger table, usually twice the size, and reinserts every live entry."}
    before = len(Workspace.open(tmp_path / "ray" / "workspace"))
    first_ids, first_vectors = list(ray_ws.ids), np.array(ray_ws.embeddings("default"))
    shutil.rmtree(shards)
    # one shard now (the same rows in the same order: the same ids): a block, one actor for the one row to score
    # (three blocks started two actors, each loading torch, the encoder and the scorers, for one row)
    write_shards(shards, [added, *records], 1)
    r = curate_in_process("run", shards, "--engine", "ray", "--address", address, "--minhash", "--heuristics",
                          "--budget", "20", "--out", tmp_path / "ray", "--no-report", env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    again = Workspace.open(tmp_path / "ray" / "workspace")
    assert len(again) == before + 1
    assert [again.column_provenance(c)["turns_scored"] for c in ("complexity", "quality")] == [1, 1]
    # nor embed the rows again: the actors read the workspace's embedding cache the first run filled
    assert again.embedding_sets["default"]["encoded"] == 1
    position = {row_id: i for i, row_id in enumerate(again.ids)}
    np.testing.assert_allclose(again.embeddings("default")[[position[row_id] for row_id in first_ids]],
                               first_vectors, rtol=0, atol=1e-6)


def test_with_llm_judges_the_ray_engine_decontaminates_before_scoring_and_keeps_ray_for_its_signals(
        request, joined, tmp_path):
    """`curate run --engine ray --base-url ... --decontaminate F --signal ifd`: Ray embeds before the judges (no
    request for a leaked row), the judges run on the driver, and Ray stays open for the signals' pass after them.
    (The run: in this process, on the module's driver joined to the cluster.)"""
    from curate.session import Workspace
    from tests.cli_in_process import curate_in_process
    from tests.fault_server import FaultServer

    model = request.getfixturevalue("tiny_lm")
    records = [r for r in generated_pool(40, seed=5) if isinstance(r, dict) and r.get("output")]
    leaked = {"instruction": "Quiz: which gas do plants take in from the air to make their food by photosynthesis?",
              "output": "Carbon dioxide."}
    # one shard: a block, one actor per pass (what this test proves is the order of the steps and where they run;
    # the passes spread over both nodes: the test above)
    shards = write_shards(tmp_path / "shards", [*records, leaked], 1)
    evalset = tmp_path / "eval.txt"
    evalset.write_text("Which gas do plants take in from the air to make their food by photosynthesis?\n")
    address, env = joined
    with FaultServer() as srv:
        r = curate_in_process("run", shards, "--engine", "ray", "--address", address, "--base-url", srv.base_url,
                              "--model", "judge", "--decontaminate", evalset, "--signal", "ifd", "--signal-model",
                              model, "--budget", "10", "--out", tmp_path / "ray", "--no-report",
                              env={**env, "OPENAI_API_KEY": "k"})
        asked = [m[-1]["content"] for m in srv.messages]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ws = Workspace.open(tmp_path / "ray" / "workspace")
    kept = ws.selection("decontaminated").ids
    assert ws.selection("decontaminated").decisions()["rejected"] == 1 and len(asked) == 2 * len(kept)
    assert not any("photosynthesis" in text for text in asked)
    assert ws.embedding_sets["default"]["engine"]["name"] == "ray"
    assert ws.column_provenance("ifd")["engine"]["name"] == "ray"
    ifd = dict(zip(ws.ids, ws.turn_values("ifd"), strict=True))
    assert all(ifd[i] is not None for i in kept) and sum(v is None for v in ifd.values()) == len(ws) - len(kept)
