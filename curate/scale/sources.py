"""The read stage of the Ray engine: a source's shards, and one shard read and normalised in a Ray task.

A shard is read by :func:`curate.pools.read` itself (``on_error="skip"``): the same parser, the same
per-record normalisation into a conversation, the same reject locations (``line 7``) as the
single-process engine. Nothing is re-implemented here; the task only packs its rows into Arrow columns:

* ``order``: the row's place in the source (shard number << 32 | record number), so the pool is
  written in the order a single-process read gives (shards in name order, records in file order);
* ``kind``: 0 a row, 1 a reject (``data`` then holds the :class:`curate.pools.Reject`);
* ``key``: the exact-dedup key (sha256 of the normalised conversation text, as the ``exact`` selector);
* ``data``: the whole row (conversation, format, original columns) pickled: original columns keep
  their Python values exactly, whatever their types, until the pool writes them on the driver;
* ``pid``, ``rss_mb``: the worker that read it and its peak memory (reported by the engine).

The exact-dedup stage reads these blocks with :func:`rows_only` and :func:`duplicate_orders`.
"""

from __future__ import annotations

import dataclasses
import heapq
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from curate.defaults import POOL

ROWS_PER_BLOCK = 2048  # rows per Arrow block the read yields: the unit the actor pool spreads
RECORD_BITS = 32  # order = shard << RECORD_BITS | record: up to 4e9 records per shard
ROW, REJECT = 0, 1


class RemoteError(Exception):
    """A CurateError raised inside a Ray task or actor, carried to the driver by its message and class name
    (curate's errors take several constructor arguments and do not unpickle); the engine raises it there as
    a CurateError again."""

    def __init__(self, message: str, kind: str = "CurateError", where: tuple[str, str, str] | None = None):
        super().__init__(message, kind, where)
        self.message, self.kind, self.where = message, kind, where  # where: an InputError's path, location, reason

    def __str__(self) -> str:
        return self.message


def carried_error(remote: RemoteError) -> Exception:
    """The driver's error for a :class:`RemoteError`: the class curate raised in the task, so the command exits by
    what failed (an InputError 65, an OptionError 78, as on the single engine); a class curate.errors does not
    hold, or one not made from its message alone, a CurateError of that message."""
    from curate import errors

    if remote.kind == "InputError" and remote.where is not None:
        return errors.InputError(*remote.where)
    kind = getattr(errors, remote.kind, None)
    if isinstance(kind, type) and issubclass(kind, errors.CurateError) and kind is not errors.InputError:
        try:
            return kind(remote.message)
        except TypeError:  # NoLabelsError's counts did not come along
            pass
    return errors.CurateError(remote.message)


@contextmanager
def remote_errors() -> Iterator[None]:
    """Inside Ray work: a CurateError leaves as a :class:`RemoteError`."""
    from curate.errors import CurateError, InputError

    try:
        yield
    except CurateError as exc:
        where = (exc.path, exc.location, exc.reason) if isinstance(exc, InputError) else None
        raise RemoteError(str(exc), type(exc).__name__, where) from None


def dedup_key(conversation: list[dict[str, str]]) -> str:
    """The ``exact`` selector's key (its defaults) of a conversation, as hex."""
    from curate.rows import row_text
    from curate.select.dedup import exact_key

    return exact_key(row_text(conversation, "conversation")).hex()


def read_shards(batch: dict[str, Any], format: str = POOL.format, mapping: dict[str, str] | None = None) -> Iterator[Any]:
    """A ``map_batches`` function: read the shards named in ``batch`` (columns ``shard``, ``path``; records of
    ``format`` with ``mapping``, as ``curate.pools.read`` reads them) and yield their rows and rejects as Arrow
    tables of at most ``ROWS_PER_BLOCK`` rows."""
    from curate import pools
    from curate.errors import InputError

    for shard, path, shown in zip(batch["shard"], batch["path"], batch.get("shown", batch["path"]), strict=True):
        with remote_errors():  # the path as the user gave it, not as the workers read it (absolute)
            try:
                result = pools.read(str(path), format=format, mapping=mapping, on_error="skip")
            except InputError as exc:
                if exc.path != str(path):
                    raise
                raise InputError(str(shown), exc.location, exc.reason) from None
        result.rejects = [dataclasses.replace(r, path=str(shown)) if r.path == str(path) else r for r in result.rejects]
        base = int(shard) << RECORD_BITS
        for start in range(0, len(result.rows), ROWS_PER_BLOCK):
            yield _pack(result.rows[start:start + ROWS_PER_BLOCK], base, start)
        if result.rejects:
            yield _pack_rejects(result.rejects, base)


def _pack(rows: list[dict[str, Any]], base: int, start: int):
    out: dict[str, list[Any]] = {"order": [], "kind": [], "key": [], "data": []}
    for i, row in enumerate(rows, start=start):
        out["order"].append(base | i)
        out["kind"].append(ROW)
        out["key"].append(dedup_key(row["conversation"]))
        out["data"].append(pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL))
    return _arrow(out)


def _pack_rejects(rejects: list[Any], base: int):
    out: dict[str, list[Any]] = {"order": [], "kind": [], "key": [], "data": []}
    for j, reject in enumerate(rejects):
        out["order"].append(base | j)
        out["kind"].append(REJECT)
        out["key"].append("")
        out["data"].append(pickle.dumps(reject, protocol=pickle.HIGHEST_PROTOCOL))
    return _arrow(out)


def conversations(table) -> list[list[dict[str, str]]]:
    """The conversations of a block's rows (``kind`` ROW), from their pickled ``data``."""
    return [pickle.loads(blob)["conversation"] for blob in table["data"].to_pylist()]


def _arrow(columns: dict[str, list[Any]]):
    import os
    import resource

    import pyarrow as pa

    n = len(columns["order"])
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this worker's peak memory so far
    return pa.table({"pid": pa.array([os.getpid()] * n, pa.int64()), "rss_mb": pa.array([rss_mb] * n, pa.float64()),"order": pa.array(columns["order"], pa.int64()), "kind": pa.array(columns["kind"], pa.int8()),
                     "key": pa.array(columns["key"], pa.string()),
                     "data": pa.array(columns["data"], pa.large_binary())})


def rows_only(table):
    """``map_batches``: the rows (not the rejects), as (key, order)."""
    import pyarrow.compute as pc

    return table.filter(pc.equal(table["kind"], ROW)).select(["key", "order"])


def duplicate_orders(table, first: dict[str, int]):
    """``map_batches``: (order, first order) of every row whose key's first row is another row."""
    import pyarrow as pa

    keys, orders = table["key"].to_pylist(), table["order"].to_pylist()
    hit = [(o, first[k]) for k, o in zip(keys, orders, strict=True) if k in first and first[k] != o]
    return pa.table({"order": pa.array([h[0] for h in hit], pa.int64()),
                     "first": pa.array([h[1] for h in hit], pa.int64())})


def read_blocks(data: Any, workers: dict[str, float]) -> tuple[list[tuple[Any, np.ndarray]], list]:
    """The blocks of ``data`` (what :func:`read_shards` yielded, materialised) that hold rows, each as its object
    ref and its rows' order keys, and every reject in source order; each read worker's peak memory into ``workers``."""
    import ray

    blocks, rejects, reject_orders = [], [], []
    for ref in data.to_arrow_refs():
        table = ray.get(ref)
        for pid, rss in zip(table["pid"].to_pylist(), table["rss_mb"].to_pylist(), strict=True):
            workers[f"read pid {pid}"] = max(workers.get(f"read pid {pid}", 0.0), rss)
        kinds, orders = table["kind"].to_numpy(), table["order"].to_numpy()
        for i in np.flatnonzero(kinds == REJECT).tolist():
            reject_orders.append(int(orders[i]))
            rejects.append(pickle.loads(table["data"][i].as_py()))
        if (kinds != REJECT).any():
            blocks.append((ref, orders[kinds != REJECT]))
    rejects = [rejects[i] for i in np.argsort(np.asarray(reject_orders, dtype=np.int64), kind="stable").tolist()]
    return blocks, rejects


def rows_in_order(blocks: list[tuple[Any, np.ndarray]], ids: list[str]) -> Iterator[dict[str, Any]]:
    """The rows of ``blocks`` in source order (a merge of the blocks by order key), unpickled one at a time from
    the object store, so the driver never holds the pool's rows; each gets its id (appended to ``ids``), as
    ``pools.assign_ids`` gives them."""
    import ray

    from curate import pools

    tables = [ray.get(ref) for ref, _ in blocks]

    def keys(k: int, table: Any) -> Iterator[tuple[int, int, int]]:
        kinds, orders = table["kind"].to_numpy(), table["order"].to_numpy()
        rows = np.flatnonzero(kinds != REJECT)
        for i in rows[np.argsort(orders[rows], kind="stable")].tolist():
            yield int(orders[i]), k, i

    taken: set[str] = set()
    for _, k, i in heapq.merge(*(keys(k, table) for k, table in enumerate(tables))):
        row = pickle.loads(tables[k]["data"][i].as_py())
        pools.assign_ids([row], taken)
        ids.append(row["id"])
        yield row
