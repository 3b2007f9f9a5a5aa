"""The driver's side of an inference pass on Ray (:func:`inference_pass`): the actors' batches as they come back.

:class:`PassResults` files each batch's embeddings, scorer and signal results and worker memory, counts its rows on
curate's progress bar, and hands the vectors the actors encoded to :class:`VectorCommits`, which adds them to the
workspace's embedding cache as the pass goes (at most every ``curate.embed.cache.PART_EVERY_S`` seconds, as the
single engine's encoder keeps its chunks): a pass killed part way keeps what it encoded, and the next run's actors
read those vectors back instead of encoding them again. The rows scored go to the workspace's columns the same way
(:class:`curate.scale.commits.ColumnCommits`): the next run's actors score only the rows not stored.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class VectorCommits:
    """New vectors for the embedding cache ``folder``, added to it at most every ``PART_EVERY_S`` seconds (under the
    store's lock, one shard per commit) and on :meth:`close`; ``encoded``: the distinct texts handed in."""

    def __init__(self, folder: Path | None):
        from curate.storage.vector_shards import VectorStore

        self.store = VectorStore(folder) if folder is not None else None
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.seen: set[bytes] = set()
        self.last = time.monotonic()

    @property
    def encoded(self) -> int:
        return len(self.seen)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        from curate.embed import cache

        first = []  # a text's first vector in this pass (rows and batches may repeat a text)
        for i, key in enumerate(keys.tolist()):
            if key not in self.seen:
                self.seen.add(key)
                first.append(i)
        if first:
            self.pending.append((keys[first], vectors[first]))
        if time.monotonic() - self.last >= cache.PART_EVERY_S:
            self.commit()

    def commit(self, compact: bool = False) -> None:
        """Add the pending vectors to the store as one shard (merging its shards when ``compact`` or when it holds
        more than the cache's ``MERGE_PAST_SHARDS``)."""
        from curate.embed.cache import MERGE_PAST_SHARDS

        self.last = time.monotonic()
        if self.store is None or not (self.pending or compact):
            return
        self.store.folder.parent.mkdir(parents=True, exist_ok=True)
        with self.store.lock():
            if self.pending:
                self.store.add(np.concatenate([k for k, _ in self.pending]),
                               np.concatenate([v for _, v in self.pending]))
                self.pending = []
            if compact or len(self.store.shards()) > MERGE_PAST_SHARDS:
                self.store.compact()

    def close(self) -> None:
        """Commit what is pending and merge the store's shards."""
        self.commit(compact=bool(self.seen))


class PassResults:
    """One pass's results on the driver. ``ids`` / ``orders``: the pool's row ids and their read order keys (sorted,
    pool order); ``steps``: the scorers and signal steps run (``signal_columns``: those with side values);
    ``embed``: whether the batches carry embeddings; ``commits``: where new vectors go; ``workers``: ``"<stage> pid
    <pid>" -> peak MiB``, updated in place; ``bar``: a progress bar counting the rows come back; ``columns``: a
    :class:`~curate.scale.commits.ColumnCommits` the rows scored go to (None: none)."""

    def __init__(self, ids: Sequence[str], orders: np.ndarray, steps: Sequence[Any], signal_columns: Sequence[str],
                 embed: bool, commits: VectorCommits, workers: dict[str, float], stage: str, bar: Any,
                 columns: Any = None):
        self.ids, self.orders, self.embed, self.commits, self.columns_stored = ids, orders, embed, commits, columns
        self.columns = [s.column for s in steps]
        self.workers, self.stage, self.bar = workers, stage, bar
        self.matrix: np.ndarray | None = None
        self.results: dict[str, dict[str, tuple[Any, list]]] = {c: {} for c in self.columns}
        self.extra: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in signal_columns}
        # column -> the run counts of the batches come back whose rows no write has stored yet (a write takes them)
        self.counts: dict[str, dict[str, Any]] = {c: {} for c in self.columns}

    def add(self, batch: dict[str, np.ndarray]) -> None:
        """File one batch the actors returned (numpy columns, see :class:`curate.scale.infer.Inference`)."""
        from curate.scale.infer import add_batch_counts

        pos = np.searchsorted(self.orders, batch["order"])
        ids = [self.ids[p] for p in pos.tolist()]
        if self.embed:
            emb = np.asarray(batch["embedding"], dtype=np.float32)
            if self.matrix is None:
                self.matrix = np.empty((len(self.ids), emb.shape[1]), dtype=np.float32)
            self.matrix[pos] = emb
            new = np.asarray(batch["embedding_new"], dtype=bool)
            self.commits.add(np.asarray(batch["embedding_key"])[new], emb[new])
        computed = np.flatnonzero(batch["computed"]).tolist()
        for column in self.columns:
            values, fails = batch[f"{column}__values"], batch[f"{column}__failures"]
            self.results[column].update((ids[j], (json.loads(values[j]), json.loads(fails[j]))) for j in computed)
            if column in self.extra:
                sides = batch[f"{column}__extra"]
                self.extra[column].update((ids[j], json.loads(sides[j])) for j in computed)
            for counts in batch[f"{column}__stats"].tolist():
                add_batch_counts(self.counts[column], json.loads(counts))
        if self.columns_stored is not None:
            self.columns_stored.add([ids[j] for j in computed], self.results, self.extra, self.counts)
        for pid, rss in zip(batch["pid"].tolist(), batch["rss_mb"].tolist(), strict=True):
            key = f"{self.stage} pid {pid}"
            self.workers[key] = max(self.workers.get(key, 0.0), float(rss))
        self.bar.update(len(pos))


def pass_batch_size(rows: int, actors: int, signals: bool) -> int:
    """Rows per actor call of a pass over ``rows`` rows on ``actors`` actors: split into ``SCALE.calls_per_actor``
    calls per actor at least (a pool of a few hundred rows was one call), each at most
    ``SCALE.batch_rows`` rows (``SCALE.signal_batch_rows`` when the pass computes token ``signals``): a killed pass
    loses at most a call's rows per actor."""
    from curate.defaults import SCALE

    ceiling = SCALE.signal_batch_rows if signals else SCALE.batch_rows
    return max(1, min(ceiling, -(-rows // (max(1, actors) * SCALE.calls_per_actor))))


def inference_pass(engine: Any, scorers: list, signal_steps: Sequence, signal_model: str | None, embed: bool,
                   trained: dict[str, dict[str, bytes]] | None, only: Sequence[str] | None,
                   cache_dir: os.PathLike | None, progress: bool, ws: Any, ids: Sequence[str]) -> tuple:
    """``(results, vector commits, column commits or None, actor pool)`` of one pass of ``engine``'s rows over its
    actor pool (the arguments: ``RayEngine._infer``'s); the caller runs it in the engine's ``_stage``."""
    from curate.scale.commits import ColumnCommits
    from curate.scale.infer import Inference, actor_pool, embed_cache
    from curate.storage.progress import progress_bar

    score_orders = None
    if only is not None:  # a duplicate or a dropped row costs no scorer or LM forward pass
        position = {rid: i for i, rid in enumerate(engine._ids)}
        score_orders = np.sort(engine._orders[[position[rid] for rid in only]])
    steps = [*scorers, *signal_steps]
    specs = [(trained or {}).get(s.column, s.column) for s in scorers]  # a shipped scorer travels by its name
    ray = engine.connect()
    actors, options, threads, info = actor_pool(ray, engine.cpus_per_actor, engine.rows().num_blocks())
    info["pass"] = uuid.uuid4().hex[:12]  # the run records of this pass's column commits make one record
    info["pass_started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # a record's seconds are its writes'
    call_rows = engine.batch_size or pass_batch_size(len(engine._ids), actors, bool(signal_steps))
    info["batch_rows"] = call_rows
    # Ray Data's actors restart (its default): one the OOM killer or Ray's memory monitor stopped is replaced
    # and the pass goes on. (Ray Core then says once a run, at E level, that their constructor arguments are in the
    # object store while they may restart: Ray Data itself passes its map transformer and DataContext to each actor
    # by ObjectRef, whatever fn_constructor_kwargs hold, so only max_restarts=0, no restarts, would avoid the line;
    # Ray issue 57733: `ray.data.range(1).map_batches(AnyClass)` prints it. Ray's noise, left shown: muting it
    # would take RAY_BACKEND_LOG_LEVEL, which mutes every C++ error line of the driver.)
    out = engine.rows().map_batches(
        Inference, fn_constructor_kwargs={
            "scores": specs, "signals": [s.kind for s in signal_steps],
            "signal_model": signal_model, "embed": embed, "threads": threads, "score_orders": score_orders,
            "embed_cache": str(embed_cache(cache_dir)) if embed and cache_dir else None},
        batch_size=call_rows, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors), **options)
    stage = "inference" if embed or scorers else "signals"
    commits = VectorCommits(embed_cache(cache_dir) if embed and cache_dir is not None else None)
    columns = ColumnCommits(ws, steps, ids, info) if ws is not None and steps else None
    bar = progress_bar(len(engine._ids), stage, progress)
    collected = PassResults(engine._ids, engine._orders, steps, [s.column for s in signal_steps], embed, commits,
                            engine.workers, stage, bar, columns)
    try:  # the vectors encoded and the rows scored go to the workspace as batches come back: a killed pass keeps them
        for batch in out.iter_batches(batch_format="numpy", batch_size=None):
            collected.add(batch)
    except BaseException as exc:
        for kept, what in ((commits, "vectors encoded"), (columns, "rows scored")):
            try:
                if kept is not None:
                    kept.commit()  # what was computed is kept; no merge of vector shards while the pass fails
            except Exception as late:  # noqa: BLE001  (the pass's own error is the one to raise)
                exc.add_note(f"the {what} before it were not kept: {late}")
        raise
    else:
        commits.close()
        if columns is not None:
            columns.commit()
    finally:
        bar.close()
    return collected, commits, columns, info
