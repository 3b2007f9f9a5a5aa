"""A source's shards: a file is one; a folder or a glob pattern of data files is one per file, in path order.

Both engines read a sharded source the same way: :func:`curate.pools.read` reads the shards one after the
other, the Ray engine one per task (:mod:`curate.scale.sources`).
"""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path

from curate.errors import InputError

SHARD_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".tsv")
GZIPPED = (".jsonl.gz", ".ndjson.gz", ".json.gz")  # what the readers gunzip


def is_shard(path: Path, folder: Path) -> bool:
    """A data file of a shard folder: a regular file :func:`named as a shard <is_shard_name>`."""
    return path.is_file() and is_shard_name(path, folder)


def is_shard_name(path: Path, folder: Path) -> bool:
    """Named as a data file of a shard folder: a known suffix (or gzipped JSON Lines/JSON), outside hidden files and
    folders (``.ipynb_checkpoints``, ``.git``: copies and other data that is not the pool)."""
    name = path.name.lower()
    hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
    return not hidden and (path.suffix.lower() in SHARD_SUFFIXES or name.endswith(GZIPPED))


def _compressed_data(path: Path, folder: Path) -> bool:
    """A data file of a shard folder compressed other than by gzip (``part-0.jsonl.bz2``, ``.zst``, ``.xz``)."""
    inner = Path(path.stem).suffix.lower()
    return (path.suffix.lower() in (".bz2", ".xz", ".zst", ".zip", ".lz4", ".gz") and inner in SHARD_SUFFIXES
            and not is_shard(path, folder) and not any(p.startswith(".") for p in path.relative_to(folder).parts)
            and path.is_file())


_SPECIAL = ((stat.S_ISFIFO, "a pipe (FIFO)"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
            (stat.S_ISSOCK, "a socket"))


def _not_a_file(path: Path) -> InputError | None:
    """The error for ``path`` when it exists but is neither a regular file nor a folder (a pipe, a device, or a link
    to one), else None. A pool is read from regular files only: a pipe read once is gone, and a device is no data."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    kind = next((name for is_kind, name in _SPECIAL if is_kind(mode)), None)
    if kind is None:
        return None
    real = os.path.realpath(path)  # a link's target; not /dev/fd/63's: /proc/PID/fd/pipe:[N] names no file
    target = f" ({real})" if path.is_symlink() and os.path.exists(real) else ""
    return InputError(str(path), "file", f"not a regular file but {kind}{target}; curate reads a pool from regular "
                      "files only: write it to a file first (e.g. zcat pool.jsonl.gz > pool.jsonl)")


def _regular(paths: list[Path]) -> None:
    """Refuse the first of ``paths`` (named like a shard) that is a pipe or a device: it was left out in silence."""
    for path in paths:
        if (error := _not_a_file(path)) is not None:
            raise error


DATASETS_FOLDER_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")


def shard_paths(source: str) -> list[str]:
    """The shards of ``source``, in read order.

    A file is one shard; a folder of ``.jsonl``/``.json`` (either gzipped)/``.parquet``/``.csv`` files (searched
    recursively, hidden files and folders aside) is one shard per file, in path order; a glob pattern
    (``data/part-*.jsonl``) likewise.
    A ``datasets`` folder (``save_to_disk``) or a Hub name is read as one shard.
    """
    path = Path(source)
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        if any((path / name).exists() for name in DATASETS_FOLDER_FILES):
            return [str(path)]
        found = list(path.rglob("*"))
        _regular([p for p in found if not p.is_dir() and is_shard_name(p, path)])
        files = sorted(str(p) for p in found if is_shard(p, path))
        # data compressed another way than gzip was left out in silence beside the shards curate reads
        if unread := sorted(p for p in found if _compressed_data(p, path)):
            raise InputError(str(unread[0]), "file", f"compressed as {unread[0].suffix}, which curate does not read "
                             "(gzip is read for .jsonl, .ndjson and .json): decompress it, or move it out of the folder")
        if not files:
            raise InputError(source, "folder", f"no shards ({', '.join(SHARD_SUFFIXES + GZIPPED)} files, hidden "
                             "ones aside) in this folder")
        return files
    if (error := _not_a_file(path)) is not None:
        raise error
    if glob.has_magic(source):
        matched = sorted(glob.glob(source, recursive=True))
        _regular([Path(p) for p in matched if not os.path.isdir(p)])
        files = [p for p in matched if Path(p).is_file()]
        if not files:
            raise InputError(source, "glob", "matches no files")
        return files
    if path.suffix.lower() in SHARD_SUFFIXES:  # before any Ray work: the error pools.read would give
        raise InputError(source, "file", "no such file or folder")
    return [source]  # a Hub name: pools.read loads it
