"""A row's scores follow its conversation alone: the same rows give byte-identical scores in every fresh pass,
whatever their order and however long each chunk of a pass takes (a row's value moves in its last digits with the
rows padded into its batch, so the batches must depend on the set of rows only)."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest

from curate import pools
from curate.session import Workspace
from tests.conftest import write_jsonl


@pytest.fixture(scope="module")
def sample_rows() -> list[dict]:
    """The bundled sample's records, plus variants of them (more rows than one batch, many of equal length)."""
    recs = [json.loads(line) for line in pools.SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return recs + [{**r, **_edited(r, i)} for i, r in enumerate(recs)]


def _edited(rec: dict, i: int) -> dict:
    """The record with one word added to its first user turn (a new row of about the same length)."""
    if "conversations" in rec or "messages" in rec:
        key = "conversations" if "conversations" in rec else "messages"
        turns = [dict(t) for t in rec[key]]
        text_key = "value" if "value" in turns[0] else "content"
        turns[0][text_key] = f"{turns[0][text_key]} ({i})"
        return {key: turns}
    field = next(k for k in ("instruction", "prompt", "question") if k in rec)
    return {field: f"{rec[field]} ({i})"}


def _turns(rows: list[dict], tmp_path) -> list:
    """The user turns of the rows as curate reads them (what a scorer scores)."""
    import curate
    from curate.rows import turns

    ds = curate.load(write_jsonl(tmp_path / "turns.jsonl", rows))
    return [turn for i in range(len(ds)) for turn in turns(ds[i]["conversation"])]


def test_complexity_scores_do_not_depend_on_row_order_or_on_how_long_a_chunk_takes(sample_rows, tmp_path):
    """Measured before: chunks of the rows to score were one batch in the caller's order, then sized by the time the
    last one took; 96 sample rows scored in reverse order, or with a slow first chunk, differed from the plain pass
    by up to ~2e-6 on most rows."""
    from curate.scorers import load_default
    from curate.scorers import prediction_cache as cache
    from curate.scorers.crossencoder import predict_net

    sc = load_default("complexity")
    rows = _turns(sample_rows, tmp_path)
    plain = sc.predict_raw(rows, cache_dir=tmp_path / "a")
    order = list(range(len(rows)))
    random.Random(1).shuffle(order)
    shuffled = sc.predict_raw([rows[i] for i in order], cache_dir=tmp_path / "b")
    np.testing.assert_array_equal(shuffled, plain[order])
    np.testing.assert_array_equal(sc.predict_raw(rows[::-1]), plain[::-1])  # no cache: the same chunks

    ins, res = sc._texts(rows)
    net, tok = sc._inference_net()
    calls = [0]

    def busy_first_chunk(positions: list[int]) -> np.ndarray:  # a machine busy while the first chunk ran
        calls[0] += 1
        if calls[0] == 1:
            time.sleep(1.0)
        return predict_net(net, tok, [ins[i] for i in positions], None if res is None else [res[i] for i in positions],
                           max_length=sc.max_length, batch_size=sc.batch_size, plan=sc._plan(), device="cpu")

    keys = cache.row_keys(ins, res)
    chars = [len(t) + (0 if res is None else len(res[i])) for i, t in enumerate(ins)]
    slow = cache.predict_cached(busy_first_chunk, keys, tmp_path / "c", first_rows=sc.batch_size, lengths=chars)
    np.testing.assert_array_equal(slow, plain)


def test_the_chunk_plan_is_the_same_for_the_same_set_of_rows():
    from curate.scorers.prediction_cache import chunk_plan

    keys = [f"{i % 90:032x}".encode() for i in range(100)]  # ten rows twice
    lengths = [(i % 90) % 7 for i in range(100)]  # a row's length is its own
    plan = chunk_plan(keys, list(range(100)), lengths, first_rows=8, chunk_rows=32)
    assert [len(c) for c in plan] == [8, 16, 32, 32, 2]
    perm = list(range(100))
    random.Random(0).shuffle(perm)
    again = chunk_plan([keys[i] for i in perm], list(range(100)), [lengths[i] for i in perm], first_rows=8,
                       chunk_rows=32)
    assert [[keys[perm[i]] for i in c] for c in again] == [[keys[i] for i in c] for c in plan]
    from curate.scorers.prediction_cache import CHUNK_CHARS, ROW_CHARS

    long_rows = chunk_plan(keys, list(range(100)), [10 * ROW_CHARS] * 100, first_rows=8, chunk_rows=512)
    assert max(map(len, long_rows)) <= CHUNK_CHARS // ROW_CHARS and sum(map(len, long_rows)) == 90


def test_embeddings_do_not_depend_on_text_order_or_on_the_cache(sample_rows, tmp_path):
    """Measured before: encode_cached took chunks longest first in the caller's order (ties by position) and sized
    by time, and encode without a cache one pass in the caller's order: the same text's vector differed between
    them in its last digits."""
    from curate.embed import encode, encode_cached

    texts = [t for turn in _turns(sample_rows, tmp_path) for t in (turn.instruction, turn.response or "")]
    texts += [f"short text number {i}" for i in range(150)]  # many of one length: batch-mates decided by ties
    order = list(range(len(texts)))
    random.Random(2).shuffle(order)
    plain, _, _ = encode_cached(texts, tmp_path / "a", batch_size=16)
    shuffled, _, _ = encode_cached([texts[i] for i in order], tmp_path / "b", batch_size=16)
    np.testing.assert_array_equal(shuffled, plain[order])
    np.testing.assert_array_equal(encode(texts[::-1], batch_size=16), plain[::-1])


def test_two_fresh_workspaces_on_shuffled_rows_store_byte_identical_scores(sample_rows, tmp_path):
    """The audit's two identical `curate run sample` runs exported different complexity values (4.9924296931239684
    vs 4.992429208192936): the default scorers' columns, in two workspaces of the same rows in another order."""
    from curate.scorers import load_default

    shuffled = list(sample_rows)
    random.Random(3).shuffle(shuffled)
    columns = []
    for name, recs in (("a", sample_rows), ("b", shuffled)):
        ws = Workspace(tmp_path / name)
        ws.load(write_jsonl(tmp_path / f"{name}.jsonl", recs))
        for scorer in ("complexity", "quality"):
            ws.apply(load_default(scorer), progress=False)
        ids = sorted(ws.ids)
        columns.append({c: json.dumps(dict(zip(ids, ws.column(c, ids), strict=True))) for c in ("complexity", "quality")})
    assert columns[0] == columns[1]


def test_a_fast_pass_keeps_its_chunks_in_few_shards_not_one_each(tmp_path):
    """Each chunk of the plan (256 rows at most) was kept as a shard of its own: on a fast device the stores (their
    fsyncs and merges) took 5.6x the scoring (review). Chunks are kept together every PART_EVERY_S seconds."""
    from curate.scorers.prediction_cache import chunk_plan, predict_cached, row_keys

    keys = row_keys([f"instruction {i} " * (i % 7 + 1) for i in range(3000)], None)
    assert len(chunk_plan(keys, list(range(len(keys))), None, first_rows=8)) > 10
    stored = []
    import curate.scorers.prediction_cache as cache

    keep = cache.store

    def counted(folder, part_keys, values):
        stored.append(len(part_keys))
        return keep(folder, part_keys, values)

    cache.store = counted
    try:
        values = predict_cached(lambda part: np.asarray(part, dtype=np.float32), keys, tmp_path / "c", first_rows=8)
    finally:
        cache.store = keep
    assert stored == [3000], stored  # was one store per chunk
    again = predict_cached(lambda part: np.full(len(part), -1.0, np.float32), keys, tmp_path / "c", first_rows=8)
    np.testing.assert_array_equal(again, values)  # every row read back
