import shutil
import threading

import numpy as np

from curate.storage.vector_shards import MERGE_FANIN, VectorStore


def _keys(start: int, n: int) -> np.ndarray:
    return np.array([f"{i:032x}".encode() for i in range(start, start + n)], dtype="S32")


def _vectors(start: int, n: int, dim: int = 8) -> np.ndarray:
    return (np.arange(start, start + n, dtype=np.float32)[:, None] * np.ones(dim, dtype=np.float32))


def test_adding_vectors_writes_a_new_shard_and_leaves_the_stored_ones_untouched(tmp_path):
    store = VectorStore(tmp_path / "store")
    with store.lock():
        big = store.add(_keys(0, 5000), _vectors(0, 5000))
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in big.iterdir()}
    with store.lock():
        store.add(_keys(5000, 1), _vectors(5000, 1))
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in big.iterdir()} == before
    asked = np.concatenate([_keys(4999, 2), _keys(7, 1), _keys(9000, 1), _keys(7, 1)])
    vectors, found = store.get(asked)
    assert found.tolist() == [True, True, True, False, True]
    assert vectors[:, 0].tolist() == [4999, 5000, 7, 0, 7]


def test_many_small_adds_keep_few_shards_and_every_vector(tmp_path):
    store = VectorStore(tmp_path / "store")
    for i in range(60):
        with store.lock():
            store.add(_keys(i * 10, 10), _vectors(i * 10, 10))
            store.compact()
    assert len(store.shards()) <= 2 * (MERGE_FANIN - 1)  # 600 rows: tiers of 10-15, 40-63, 160-255 rows
    vectors, found = store.get(_keys(0, 600))
    assert found.all() and vectors[:, 0].tolist() == list(range(600)) and len(store) == 600


def test_a_shard_left_twice_by_a_killed_merge_is_read_once_and_merged_away(tmp_path):
    store = VectorStore(tmp_path / "store")
    with store.lock():
        shard = store.add(_keys(0, 100), _vectors(0, 100))
        store.add(_keys(100, 3), _vectors(100, 3))
    shutil.copytree(shard, store.folder / "shard-99999999999999999999-copy")  # merged, sources not yet removed
    (store.folder / ".tmp-killed-writer").mkdir()
    vectors, found = store.get(_keys(0, 103))
    assert found.all() and vectors[:, 0].tolist() == list(range(103))
    with store.lock():
        for i in range(MERGE_FANIN):  # fill shard 0's tier so the merge runs
            store.add(_keys(1000 + 100 * i, 100), _vectors(1000 + 100 * i, 100))
        store.compact()
    assert len(store) == 103 + MERGE_FANIN * 100  # each key once
    assert not list(store.folder.glob(".tmp-*"))


def test_readers_see_every_vector_while_a_writer_adds_and_merges(tmp_path):
    store = VectorStore(tmp_path / "store")
    with store.lock():
        store.add(_keys(0, 50), _vectors(0, 50))
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                vectors, found = store.get(_keys(0, 50))
                assert found.all() and vectors[:, 0].tolist() == list(range(50))
            except BaseException as e:  # noqa: BLE001 - handed to the test's thread
                errors.append(e)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 120):
            with store.lock():
                store.add(_keys(i * 50, 50), _vectors(i * 50, 50))
                store.compact()
    finally:
        stop.set()
        reader.join()
    assert not errors, errors[0]
    assert len(store) == 120 * 50


def test_a_damaged_shard_is_named_with_what_to_do(tmp_path):
    import pytest

    from curate.errors import WorkspaceError

    store = VectorStore(tmp_path / "store")
    with store.lock():
        shard = store.add(_keys(0, 10), _vectors(0, 10))
    (shard / "vectors.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(WorkspaceError, match=r"vectors\.npy: a damaged shard of the embedding cache .*remove its folder"):
        store.get(_keys(0, 10))
    (shard / "keys.npy").write_bytes(b"PK\x03\x04 not numpy at all")
    with pytest.raises(WorkspaceError, match=r"keys\.npy: a damaged shard"):
        store.contains(_keys(0, 10))
