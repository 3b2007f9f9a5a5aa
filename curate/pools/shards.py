"""A source's shards: a file is one; a folder or a glob pattern of data files is one per file, in path order.

Both engines read a sharded source the same way: :func:`curate.pools.read` reads the shards one after the
other, the Ray engine one per task (:mod:`curate.scale.sources`).
"""

from __future__ import annotations

import glob
from pathlib import Path

from curate.errors import InputError

SHARD_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".tsv")
DATASETS_FOLDER_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")


def shard_paths(source: str) -> list[str]:
    """The shards of ``source``, in read order.

    A file is one shard; a folder of ``.jsonl``/``.json``/``.parquet``/``.csv`` files (searched
    recursively) is one shard per file, in path order; a glob pattern (``data/part-*.jsonl``) likewise.
    A ``datasets`` folder (``save_to_disk``) or a Hub name is read as one shard.
    """
    path = Path(source)
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        if any((path / name).exists() for name in DATASETS_FOLDER_FILES):
            return [str(path)]
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SHARD_SUFFIXES)
        if not files:
            raise InputError(source, "folder", f"no shards ({', '.join(SHARD_SUFFIXES)} files) in this folder")
        return files
    if glob.has_magic(source):
        files = sorted(p for p in glob.glob(source, recursive=True) if Path(p).is_file())
        if not files:
            raise InputError(source, "glob", "matches no files")
        return files
    if path.suffix.lower() in SHARD_SUFFIXES:  # before any Ray work: the error pools.read would give
        raise InputError(source, "file", "no such file or folder")
    return [source]  # a Hub name: pools.read loads it
