import shutil
import threading

import numpy as np
import pytest

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
    with pytest.raises(WorkspaceError, match=r"vectors\.npy: a damaged shard of a cache .*remove its folder"):
        store.get(_keys(0, 10))
    (shard / "keys.npy").write_bytes(b"PK\x03\x04 not numpy at all")
    with pytest.raises(WorkspaceError, match=r"keys\.npy: a damaged shard"):
        store.contains(_keys(0, 10))


def _four_one_row_shards(store: VectorStore) -> None:
    with store.lock():
        for i in range(MERGE_FANIN):
            store.add(_keys(i, 1), _vectors(i, 1))


def test_a_kill_while_a_merge_removes_what_it_merged_leaves_no_shard_half_removed(tmp_path, monkeypatch):
    """The merged shards were removed file by file in place: a kill in between left a shard-* folder without its
    keys or vectors, and every later lookup of a new text raised FileNotFoundError until it was deleted by hand."""
    from pathlib import Path

    import curate.storage.vector_shards as vector_shards

    store = VectorStore(tmp_path / "store")
    _four_one_row_shards(store)
    rmtree = vector_shards.shutil.rmtree

    def killed_midway(path, ignore_errors=False):
        if Path(path).is_dir():
            next(Path(path).iterdir()).unlink()  # one file gone, then the process dies
            raise KeyboardInterrupt

    monkeypatch.setattr(vector_shards.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt), store.lock():
        store.compact()
    monkeypatch.setattr(vector_shards.shutil, "rmtree", rmtree)
    vectors, found = store.get(np.concatenate([_keys(0, MERGE_FANIN), _keys(99, 1)]))
    assert found.tolist() == [True] * MERGE_FANIN + [False] and vectors[:MERGE_FANIN, 0].tolist() == [0, 1, 2, 3]
    with store.lock():
        store.compact()
    assert not list(store.folder.glob(".tmp-*")) and store.get(_keys(0, MERGE_FANIN))[1].all()


def test_a_reader_whose_listing_a_merge_overtook_still_finds_every_key(tmp_path, monkeypatch):
    """A lock-free reader listed the shards, a merge replaced them before the reader looked at each entry, and the
    reader dropped the vanished entries in silence: keys stored long before came back as missing."""
    from pathlib import Path

    store = VectorStore(tmp_path / "store")
    _four_one_row_shards(store)
    listed = Path.iterdir

    def listing_then_merge(self):
        names = list(listed(self))
        if self == store.folder and not getattr(listing_then_merge, "done", False):
            listing_then_merge.done = True
            writer = VectorStore(store.folder)
            with writer.lock():
                writer.compact()
        yield from names

    monkeypatch.setattr(Path, "iterdir", listing_then_merge)
    vectors, found = store.get(_keys(0, MERGE_FANIN))
    assert listing_then_merge.done and found.all() and vectors[:, 0].tolist() == [0, 1, 2, 3]


def test_a_key_stored_again_keeps_its_first_vector_before_and_after_a_merge(tmp_path):
    """A key added again went into a new shard beside the first: a lookup answered the newest shard's vector and a
    merge kept the oldest, so an unrelated merge changed a key's answer."""
    store = VectorStore(tmp_path / "store")
    key = _keys(7, 1)
    with store.lock():
        store.add(np.concatenate([key, _keys(100, 3)]), np.array([[1.0], [0], [0], [0]], dtype=np.float32))
        assert store.add(key, np.array([[2.0]], dtype=np.float32)) is None  # nothing new to store
    assert store.get(key)[0].ravel().tolist() == [1.0]
    with store.lock():
        for i in range(MERGE_FANIN - 1):
            store.add(_keys(200 + 4 * i, 4), np.zeros((4, 1), dtype=np.float32))
        store.compact()
        assert len(store.shards()) == 1  # the merge ran
    assert store.get(key)[0].ravel().tolist() == [1.0]
    with store.lock():
        store.add(np.concatenate([_keys(300, 1), _keys(300, 1)]), np.array([[1.0], [2.0]], dtype=np.float32))
    assert store.get(_keys(300, 1))[0].ravel().tolist() == [1.0] and len(store) == 17


def test_a_shard_reaches_the_disk_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    """Shards were renamed into place unsynced: after a power loss a shard's name could stand over empty or garbage
    files. Each file is flushed under its temporary name, then the temporary folder (the files' names) and, after the
    rename, the store's folder (the rename); a merge's shard too."""
    import os

    synced: list[str] = []
    fsync = os.fsync

    def recorded(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))  # the path at the time of the call
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded)
    store = VectorStore(tmp_path / "store")
    with store.lock():
        shard = store.add(_keys(0, 3), _vectors(0, 3))
    tmp = os.path.dirname(synced[0])
    assert os.path.basename(tmp).startswith(".tmp-")
    assert synced == [f"{tmp}/keys.npy", f"{tmp}/vectors.npy", tmp, str(store.folder)] and shard.is_dir()
    synced.clear()
    with store.lock():
        for start in range(3, 3 + MERGE_FANIN):
            store.add(_keys(start, 1), _vectors(start, 1))
        store.compact()
    assert len(store.shards()) < MERGE_FANIN + 1 and len(synced) == 4 * (MERGE_FANIN + 1)
