import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from curate.embed import encode, encode_cached
from curate.embed.cache import cache_folder
from curate.storage.vector_shards import VectorStore

REPO = Path(__file__).resolve().parents[1]


def test_encode_cached_encodes_each_text_once(tmp_path):
    # 600 texts: with raw 16-byte digests about two keys would end in NUL, which numpy's bytes dtype drops.
    texts = [f"row number {i} about topic {i % 7}" for i in range(600)]
    first, encoded, cache = encode_cached(texts, tmp_path)
    assert encoded == 600 and cache.exists()
    again, encoded_again, _ = encode_cached(texts[::-1] + ["a new text"], tmp_path)
    assert encoded_again == 1
    assert np.allclose(again[:600], first[::-1], atol=1e-6)
    assert np.allclose(again[600], encode(["a new text"])[0], atol=1e-5)


# Loads the model, says it is ready, waits for the go file, then adds its own texts to the shared cache.
_WRITER = """
import pathlib, sys, time
from curate.embed import encode_cached, load_model
from curate.embed.encoder import auto_device, model_id
load_model(model_id(None), auto_device())
cache, prefix, ready, go = sys.argv[1:]
pathlib.Path(ready).touch()
while not pathlib.Path(go).exists():
    time.sleep(0.005)
texts = [f"{prefix} text number {i}" for i in range(300)]
print(encode_cached(texts, cache)[1])
"""


def test_two_processes_adding_to_one_cache_keep_both_sets(tmp_path):
    """Read-merge-write under a file lock: neither process drops the other's vectors."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "cache"), prefix,
                               str(tmp_path / f"ready-{prefix}"), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
             for prefix in ("alpha", "beta")]
    while not all((tmp_path / f"ready-{p}").exists() for p in ("alpha", "beta")):
        assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-2000:]
        time.sleep(0.01)  # a bare loop here took a core from the two model loads it waits for
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert sorted(int(out.split()[-1]) for out, _ in outs) == [300, 300]
    both = [f"{prefix} text number {i}" for prefix in ("alpha", "beta") for i in range(300)]
    assert len(VectorStore(cache_folder(tmp_path / "cache", None))) == 600
    assert encode_cached(both, tmp_path / "cache")[1] == 0


_KILLED = """
import sys
import curate.embed.cache as cache
cache.PART_EVERY_S = 0.0  # keep every chunk as soon as it is done
texts = [f"killed pass text {i} on subject {i % 13}" for i in range(400)]
cache.encode_cached(texts, sys.argv[1], batch_size=8)
"""


def test_a_killed_encoding_pass_keeps_what_it_encoded(tmp_path):
    texts = [f"killed pass text {i} on subject {i % 13}" for i in range(400)]  # 248 in the first 5 parts: the
    # kill comes mid-way through the sixth chunk (128 texts), 152 left to encode (800 had this test encode 552 again)
    store = VectorStore(cache_folder(tmp_path, None))
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(tmp_path)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.time() + 240
        while len(store.shards()) < 5:  # chunks of 8, 16, 32, 64, 128 texts: 248
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.time() < deadline, "no part written"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    matrix, encoded, cache = encode_cached(texts, tmp_path, batch_size=8)
    assert 0 < encoded <= len(texts) - 248  # the killed pass's chunks came from its shards
    assert cache == store.folder and not list(cache.glob(".tmp-*"))
    sample = [0, 199, 399]
    np.testing.assert_allclose(matrix[sample], encode([texts[i] for i in sample]), atol=1e-5)
    assert encode_cached(texts, tmp_path)[1] == 0


_INTERRUPTED = """
import sys
import curate.embed.cache as cache
cache.PART_EVERY_S = 3600.0  # no part before the Ctrl-C, however slow a loaded machine makes the first chunk
chunk = cache._PartWriter.__call__
def told(self, positions, vectors):  # say when a chunk is done (a part is written only every PART_EVERY_S)
    chunk(self, positions, vectors)
    print(len(positions), flush=True)
cache._PartWriter.__call__ = told
texts = [f"interrupted pass text {i} on subject {i % 13}" for i in range(300)]
cache.encode_cached(texts, sys.argv[1], batch_size=8)
"""


def _interrupted(proc: subprocess.Popen) -> str:
    """Ctrl-C ``proc`` until it ends (again, if one landed where Python swallows it: a finaliser, a C callback);
    its standard error."""
    for _ in range(60):
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
            break
    return proc.communicate(timeout=120)[1]


def test_ctrl_c_mid_pass_keeps_the_chunks_encoded_since_the_last_part(tmp_path):
    texts = [f"interrupted pass text {i} on subject {i % 13}" for i in range(300)]  # Ctrl-C after the first
    # chunk's 8: the rest is this test's to encode again (600 had it encode ~590); 292 left still take the killed
    # pass seconds, past _interrupted's 1 s before a Ctrl-C Python swallowed is sent again
    store = VectorStore(cache_folder(tmp_path, None))
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal:
    # pytest started in the background (`cmd &`) runs with SIGINT ignored, and a child inherits that
    done = int(proc.stdout.readline())  # one chunk encoded, none on disk yet
    assert not store.shards()
    err = _interrupted(proc)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert done > 0 and len(store.shards()) == 1
    _, encoded, _ = encode_cached(texts, tmp_path, batch_size=8)
    assert encoded <= len(texts) - done


def test_encoding_chunks_start_small_and_depend_on_the_set_of_texts_alone():
    """Chunks were 16 batches of the longest texts first: on a busy 2-core machine the first took 150 s, so a kill
    before it kept nothing. Then they were sized by time, which made a text's batch-mates (and its vector's last
    digits) depend on the machine's load. Now: one batch first, doubling up to 16 batches and ``CHUNK_CHARS``
    characters, over the distinct texts in one order (longest first, ties by text)."""
    from curate.embed.encoder import CHUNK_CHARS, TEXT_CHARS, chunk_plan

    texts = [f"chunk sizing text {i} " + "word " * (i % 40) for i in range(300)]
    sizes: list[int] = []
    encode(texts, batch_size=8, on_chunk=lambda idx, _: sizes.append(len(idx)))
    assert sizes == [8, 16, 32, 64, 128, 52]
    long_texts = [f"{i} " + "x" * TEXT_CHARS for i in range(200)]  # a chunk of them stops at CHUNK_CHARS
    assert max(len(idx) for idx, _ in chunk_plan(long_texts, 64)) <= CHUNK_CHARS // TEXT_CHARS
    twice = texts + texts[::-1]
    plan = chunk_plan(twice, 8)
    assert sum(len(idx) + len(same) for idx, same in plan) == 600 and sum(len(idx) for idx, _ in plan) == 300
    assert [[twice[i] for i in idx] for idx, _ in plan] == [[texts[i] for i in idx] for idx, _ in chunk_plan(texts, 8)]


def test_loading_the_default_model_leaves_the_environment_alone():
    code = ("import os; from curate.embed import encode; v = encode(['hi']); "
            "print(v.shape[1], os.environ.get('HF_HUB_OFFLINE'))")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True,
                         env={**env, "PYTHONPATH": str(REPO)}).stdout
    assert out.split() == ["384", "None"]


def test_token_budget_batches_cover_every_row_once_and_keep_long_rows_in_narrow_batches():
    from curate.embed.batching import token_budget_batches

    lengths = [256, 12, 40, 256, 7, 130, 12, 90] * 20
    batches = token_budget_batches(lengths, max_tokens=1024, max_rows=64)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for idx in batches:  # padded to its longest row, every batch fits the budget (a row alone may exceed it)
        assert len(idx) == 1 or max(lengths[i] for i in idx) * len(idx) <= 1024
        assert len(idx) <= 64
    assert len(batches[0]) == 4  # the 256-token rows go 4 a batch
    widths = [len(b) for b in token_budget_batches([256] * 8 + [7] * 200, max_tokens=1024, max_rows=64)]
    assert widths == [4, 4, 64, 64, 64, 8]  # 7-token rows are held to max_rows, not the budget's 146


def test_cpu_encode_in_token_budget_batches_matches_sentence_transformers_fixed_batches():
    from curate.embed import load_model
    from curate.embed.encoder import model_id

    texts = [("a long paragraph about rivers and the sea " * (i % 9 * 8 + 1)) + str(i) for i in range(72)]
    ours = encode(texts, device="cpu")
    theirs = load_model(model_id(None), "cpu").encode(texts, batch_size=64, normalize_embeddings=True)
    assert ours.shape == theirs.shape
    assert float((ours * theirs).sum(1).min()) > 0.99999


def test_a_model_folder_saved_again_with_other_weights_is_another_model_to_the_cache(tmp_path):
    import shutil

    import torch
    from sentence_transformers import SentenceTransformer

    from curate.embed.encoder import default_model_path

    folder = tmp_path / "my-model"
    shutil.copytree(default_model_path(), folder)
    texts = ["a first text", "a second one"]
    before, encoded, _ = encode_cached(texts, tmp_path / "cache", model=str(folder))
    assert encoded == 2 and encode_cached(texts, tmp_path / "cache", model=str(folder))[1] == 0
    model = SentenceTransformer(str(folder), device="cpu")  # not the instance encode holds
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.9).add_(0.01)
    model.save(str(folder))  # fine-tuned in place: the same path, other weights
    after, encoded, _ = encode_cached(texts, tmp_path / "cache", model=str(folder))
    assert encoded == 2 and not np.allclose(after, before, atol=1e-3)


def test_embed_settings_that_cannot_work_are_one_error_before_any_encoding(tmp_path):
    """A bogus device and a CUDA device on a machine without one were raw torch tracebacks (or, with every text
    cached, a success recording the device); a batch size of 0 was "range() arg 3 must not be zero"; a model path
    that is no folder was read as a Hub repo id."""
    import pytest
    import torch

    from curate.errors import CurateError
    from curate.session import Workspace
    from tests.conftest import write_jsonl

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "hi", "output": "there"}]))
    cases = [({"device": "bogus"}, "device 'bogus': use cpu, cuda"), ({"batch_size": 0}, "batch_size must be a whole"),
             ({"device": "meta"}, "device 'meta': curate runs on cpu, cuda"), ({"device": "mps"}, "curate runs on"),
             # sentence-transformers read a path that is no folder as a Hub repo id: "Repo id must use alphanumeric..."
             ({"model": str(tmp_path / "no-such-model")}, "no-such-model: no such model folder")]
    if not torch.cuda.is_available():
        cases.append(({"device": "cuda"}, "torch sees no CUDA device"))
    for kwargs, message in cases:
        with pytest.raises(CurateError, match=message):
            ws.embed(progress=False, **kwargs)
    assert not ws.embedding_sets


def test_a_cache_in_the_layout_before_shards_is_read_and_moved_into_the_store(tmp_path):
    from curate.embed.cache import text_key

    texts = ["an old cached text", "another old one", "one from a killed pass's part"]
    vectors = encode(texts)
    folder = cache_folder(tmp_path, None)
    folder.parent.mkdir(parents=True)
    single = folder.with_name(folder.name + ".npz")  # one file, plus the parts a killed pass left beside it
    np.savez(single, keys=np.array([text_key(t) for t in texts[:2]], dtype="S32"), vectors=vectors[:2])
    parts = single.with_name(single.name + ".parts")
    parts.mkdir()
    np.savez(parts / "part-1.npz", keys=np.array([text_key(texts[2])], dtype="S32"), vectors=vectors[2:])
    matrix, encoded, cache = encode_cached(texts + ["a new text"], tmp_path)
    assert encoded == 1 and cache == folder
    np.testing.assert_allclose(matrix[:3], vectors, atol=1e-6)
    assert not single.exists() and not parts.exists() and len(VectorStore(folder)) == 4


def test_an_old_cache_of_many_parts_is_merged_as_it_moves_in_and_the_ray_driver_moves_it_for_its_actors(tmp_path):
    """A call that moved an old .npz and its parts but had nothing to encode left one shard per old file; and Ray
    actors, which only read the store, ignored an old cache and encoded every text again."""
    from curate.embed.cache import text_key
    from curate.scale.infer import embed_cache

    texts = [f"old cached text {i}" for i in range(4)]
    vectors = np.random.default_rng(0).standard_normal((4, 384)).astype(np.float32)
    for cache_dir in (tmp_path / "single", tmp_path / "ray"):
        folder = cache_folder(cache_dir, None)
        parts = folder.with_name(folder.name + ".npz.parts")
        parts.mkdir(parents=True)
        np.savez(folder.with_name(folder.name + ".npz"), keys=np.array([text_key(texts[0])], dtype="S32"),
                 vectors=vectors[:1])
        for i in range(1, 4):
            np.savez(parts / f"part-{i}.npz", keys=np.array([text_key(texts[i])], dtype="S32"), vectors=vectors[i:i + 1])
    matrix, encoded, folder = encode_cached(texts, tmp_path / "single")
    assert encoded == 0 and np.array_equal(matrix, vectors) and len(VectorStore(folder).shards()) == 1
    store = VectorStore(embed_cache(tmp_path / "ray"))  # what the actors are handed
    assert store.get(np.array([text_key(t) for t in texts], dtype="S32"))[1].all()
    assert not list((tmp_path / "ray" / "embeddings").glob("*.npz*"))


def test_an_embedding_model_name_neither_a_folder_nor_on_the_hub_is_one_line_naming_it(tmp_path):
    """ws.embed(model="nosuch-model") offline raised transformers' OSError ("We couldn't connect to
    'https://huggingface.co'...", two lines naming neither the model nor curate)."""
    import pytest

    from curate.errors import CurateError
    from curate.session import Workspace
    from tests.conftest import write_jsonl

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "hi", "output": "there"}]))
    with pytest.raises(CurateError) as raised:
        ws.embed(model="nosuch-model", progress=False)
    message = str(raised.value)
    assert message == ("embedding model nosuch-model: not a local folder, and not in the Hugging Face cache "
                       "(HF_HUB_OFFLINE is set); give a model folder, or download it first")
    assert not ws.embedding_sets


def test_an_old_cache_on_a_read_only_workspace_is_read_where_it_is(tmp_path, monkeypatch):
    """Moving an old cache into the store takes the lock and writes; on a read-only workspace every call failed
    (Read-only file system: ....lock), where the old cache had answered with nothing to encode."""
    import errno

    import pytest

    from curate.embed.cache import text_key

    texts = ["read only text one", "read only text two"]
    vectors = np.random.default_rng(1).standard_normal((2, 384)).astype(np.float32)
    folder = cache_folder(tmp_path, None)
    folder.parent.mkdir(parents=True)
    np.savez(folder.with_name(folder.name + ".npz"), keys=np.array([text_key(t) for t in texts], dtype="S32"),
             vectors=vectors)

    def read_only(self):
        raise OSError(errno.EROFS, "Read-only file system", str(self.folder) + ".lock")

    monkeypatch.setattr(VectorStore, "lock", read_only)
    matrix, encoded, _ = encode_cached(texts[::-1], tmp_path)
    assert encoded == 0 and np.array_equal(matrix, vectors[::-1])
    with pytest.raises(OSError, match="Read-only"):  # a text to encode needs the writable cache it cannot have
        encode_cached([*texts, "a new text"], tmp_path)


def test_a_cache_shard_whose_vectors_rotted_or_were_zeroed_is_named_with_what_to_do(tmp_path):
    """A shard's vectors.npy with NaN or zeros after its header: every `curate embed` refused the set it made, naming
    rows, never the shard."""
    import pytest

    from curate.embed.cache import lookup_or_encode
    from curate.errors import WorkspaceError

    def ones(todo, on_chunk):  # an encoder: its chunks are what the store keeps
        vectors = np.ones((len(todo), 4), np.float32)
        on_chunk(np.arange(len(todo)), vectors)
        return vectors

    store = VectorStore(tmp_path / "store")
    texts = ["a", "b", "c"]
    vectors, encoded = lookup_or_encode(store, texts, ones)
    assert encoded == 3
    fresh = lookup_or_encode(store, texts + ["d"], ones)[0]
    assert np.isfinite(fresh).all()
    for rot in (np.nan, 0.0):
        for shard in store.shards():
            vec = shard / "vectors.npy"
            size = np.load(vec).nbytes
            vec.write_bytes(vec.read_bytes()[:-size] + np.full(size // 4, rot, np.float32).tobytes())
        with pytest.raises(WorkspaceError) as err:
            lookup_or_encode(store, texts, ones)
        assert str(err.value).startswith(f"{store.shards()[0]}: a damaged shard of the embedding cache")
        assert str(err.value).endswith("remove this folder: its vectors are encoded again")


_RERUN = """
import sys
from curate.session import Workspace
summary = Workspace.open(sys.argv[1]).embed(progress=False)
print(summary["encoded"], summary["device"], "torch" in sys.modules)
"""


def test_an_embed_step_whose_vectors_are_all_cached_does_not_import_torch(tmp_path):
    """Choosing the device imported torch (4-5 s) before the cache was read, on a re-run that encodes nothing; a
    first run still encodes, and the re-run's set keeps the device the vectors were encoded on."""
    from curate.session import Workspace
    from tests.conftest import write_jsonl

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"question {i}", "output": "an answer"}
                                               for i in range(5)]))

    def embed_in_a_fresh_process() -> list[str]:
        done = subprocess.run([sys.executable, "-c", _RERUN, str(tmp_path / "ws")], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()

    first = ws.embed(progress=False)  # the first run, here: only the re-run's imports need a fresh process
    encoded, device = first["encoded"], first["device"]
    assert int(encoded) == 5 and device in ("cpu", "cuda")
    assert embed_in_a_fresh_process() == ["0", device, "False"]
    # the same set: stored as the first run wrote it (encoded counts the vectors encoded when it was written)
    assert ws.embedding_sets["default"]["device"] == device and ws.embedding_sets["default"]["encoded"] == 5


def test_embedding_texts_the_model_cannot_read_records_the_unknown_share_and_warns(tmp_path):
    """The packaged MiniLM has an English vocabulary: 73% of the audit pool's Chinese instruction tokens were
    [UNK], unrelated Chinese texts embedded alike (cosine 0.44 against 0.075 in English), and the run said
    nothing. The share is in the set's metadata now, and above EMBED.max_unknown_token_share the step warns."""
    from curate.defaults import EMBED
    from curate.session import Workspace
    from tests.conftest import write_jsonl

    zh = [{"instruction": "请解释光合作用的过程，以及叶绿素在其中的作用。", "output": "好"},
          {"instruction": "什么是通货膨胀？它如何影响普通家庭的购买力？", "output": "好"}]
    en = [{"instruction": "Explain how photosynthesis works.", "output": "ok"},
          {"instruction": "What is inflation and how does it affect households?", "output": "ok"}]
    for rows, warned in ((zh, True), (en, False)):
        ws = Workspace(tmp_path / f"ws{warned}")
        ws.load(write_jsonl(tmp_path / f"p{warned}.jsonl", rows))
        summary = ws.embed(progress=False)
        share = ws.embedding_sets[EMBED.name]["unknown_token_share"]
        assert share == summary["unknown_token_share"]
        assert (share > EMBED.max_unknown_token_share) is warned
        assert ("unknown to embedding model all-MiniLM-L6-v2" in summary["warning"]) if warned else \
            summary["warning"] is None


def test_unknown_token_share_reads_wordpiece_and_unigram_vocabularies(tmp_path):
    """WordPiece names its unknown token by text (``unk_token``), Unigram (XLM-R's SentencePiece) by id (``unk_id``):
    both are read, from tiny hand-made tokenizers."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from curate.embed.vocabulary import unknown_token_share

    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    for name, model in (("wordpiece", models.WordPiece(vocab, unk_token="[UNK]")),
                        ("unigram", models.Unigram([("<unk>", 0.0), ("hello", -1.0), ("world", -1.0)], 0, False))):
        tokenizer = Tokenizer(model)
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        (tmp_path / name).mkdir()
        tokenizer.save(str(tmp_path / name / "tokenizer.json"))
        assert unknown_token_share(["hello world", "hello 你好"], str(tmp_path / name)) == pytest.approx(0.25), name


_EMBED_INTERRUPTED = """
import sys
import curate
import curate.embed.cache as cache
cache.PART_EVERY_S = 0.0  # each chunk kept as it is done
chunk = cache._PartWriter.__call__
def told(self, positions, vectors):
    chunk(self, positions, vectors)
    print(len(positions), flush=True)
cache._PartWriter.__call__ = told
curate.Workspace(sys.argv[1]).embed(batch_size=8, progress=False)
"""


def test_ctrl_c_in_ws_embed_says_the_finished_work_is_kept_and_a_rerun_encodes_only_the_rest(tmp_path):
    """A stopped ws.embed showed 43 frames of torch and none of the note a stopped ws.apply adds."""
    import curate
    from tests.conftest import write_jsonl

    ws = curate.Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "rows.jsonl", [{"instruction": f"stopped embedding text {i} on subject {i % 7}",
                                                   "input": "", "output": "ok"} for i in range(400)]))
    proc = subprocess.Popen([sys.executable, "-c", _EMBED_INTERRUPTED, str(ws.path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    done = int(proc.stdout.readline())  # one chunk encoded and kept
    err = _interrupted(proc)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert ("curate: ws.embed of 'default' stopped before storing the set (it is as it was); finished work is kept"
            in err), err[-2000:]
    assert "run the same call again to encode only the rest" in err
    assert not ws.embedding_sets
    again = ws.embed(batch_size=8, progress=False)
    assert done > 0 and again["reused"] >= done and again["encoded"] == 400 - again["reused"]



_MODELS_THAT_DO_NOT_LOAD = """
import json, os, shutil, sys
from pathlib import Path
import curate
from curate.embed.encoder import default_model_path
from curate.errors import CurateError
repo = Path(os.environ["HF_HOME"]) / "hub" / "models--someorg--mini"
snapshot = repo / "snapshots" / ("a" * 40)
shutil.copytree(default_model_path(), snapshot)
(repo / "refs").mkdir()
(repo / "refs" / "main").write_text("a" * 40)
(snapshot / "config.json").write_text("{ not json")
said = {}
for name, offline in (("no-such-model", None), ("someorg/mini", "1")):
    if offline:
        os.environ["HF_HUB_OFFLINE"] = offline  # read where curate asks the Hub (the online case's import read none)
    try:
        curate.Workspace(sys.argv[1]).embed(model=name, progress=False)
    except CurateError as exc:
        said[name] = str(exc)
print(json.dumps(said))
"""


def test_embedding_models_not_cached_or_not_loading_are_refused_in_their_own_words_after_one_question_at_most(tmp_path):
    """Online (HF_HUB_OFFLINE unset) with no way to the Hub, ws.embed(model="no-such-model") showed ~70 s of
    huggingface_hub's "Retrying in Ns [Retry k/5]" before its error: now the Hub is asked once (``model_info``).

    A model in the Hugging Face cache whose config.json is corrupt (offline): any error of the cache-only load sent it
    to the Hub check, which offline said "not in the Hugging Face cache" though it is there. Only a cache miss asks
    the Hub; another load error is one line with its own words (here transformers' "... is not a valid JSON file").
    (One process for both: each is a cold interpreter importing torch and sentence-transformers, ~7 s of CPU.)"""
    import json

    import curate
    from tests.conftest import write_jsonl

    ws = curate.Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "rows.jsonl", [{"instruction": "one", "input": "", "output": "ok"}]))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    done = subprocess.run([sys.executable, "-c", _MODELS_THAT_DO_NOT_LOAD, str(ws.path)], capture_output=True,
                          text=True, env={**env, "PYTHONPATH": str(REPO), "HF_HOME": str(tmp_path / "hf")}, timeout=600)
    said = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    assert said.get("no-such-model", "").startswith(
        "embedding model no-such-model: not a local folder, and not in the Hugging Face cache, and the Hugging Face "
        "Hub cannot give it: "), done.stdout + done.stderr[-2000:]
    assert "Retry" not in done.stderr
    message = said.get("someorg/mini", "")
    assert message.startswith("embedding model someorg/mini: loading it from the Hugging Face cache failed: "
                              "It looks like the config file at "), done.stdout + done.stderr[-2000:]
    assert message.endswith("config.json' is not a valid JSON file.") and "not in the Hugging Face cache" not in message
    assert not ws.embedding_sets
