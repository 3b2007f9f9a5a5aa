"""`curate run --engine ray`: the steps of `curate run` whose cost grows with the pool, on Ray Data.

    load   read the shards in Ray tasks (``curate.pools.read`` per shard, :mod:`.sources`); the rows come
           to the driver once, in source order, and ``ws.load`` writes the pool (ids as always);
    dedup  exact duplicates by hash: a Ray groupby (count, first row) on the `exact` selector's text hash; the
           driver stores selection ``dedup`` exactly as the ``exact`` selector would (first copy kept);
           with ``--minhash`` near-duplicates too, LSH band buckets as groupbys (:mod:`.minhash`);
    score  the scorers and the encoder in a pool of Ray actors (``map_batches``, one model per actor, one
           GPU per actor when the cluster has GPUs, :mod:`.infer`), stored through ``ws.apply``;
    signals (when asked) IFD and perplexity the same way, one causal LM per actor (:mod:`.signals`);
    embed  the vectors computed in the score pass, stored with ``ws.add_embeddings``.

When the workspace already holds rows of other sources, dedup, score, signals and embed fall back to the
single-process steps (they must see the whole pool). LLM judges (a backend) score on the driver; the run's
trained scorers (``--scorer``) travel to the actors as their saved files, except those reading signal columns.

DEITA admission, export and the report run unchanged on the driver: admission is sequential by
definition (a row is admitted against every row admitted before it), so it runs on one node over the
score-sorted stream; its cost grows with the budget, not the pool, beyond the O(n) partition of the scores
(figures at 1M/10M/100M rows and the memory it needs: evals/SCALING.md).

Without ``address`` Ray starts embedded on this machine and stops after the last Ray step of the last engine of the
process still using it (engines on several threads share one Ray; a Ray a Ctrl-C interrupted while it
started stops once up, unless the next engine takes it over); with one it
connects to that cluster (``ray start --head`` on the head, ``ray start --address`` on the others; every
node needs curate installed and the source's path visible, e.g. a shared file system; a relative path is made
absolute here, since the workers run in the cluster's folder).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from curate.codes import Decision, Reason
from curate.defaults import EMBED, SCALE
from curate.errors import CurateError, InputError
from curate.pools.shards import shard_paths
from curate.scale.cluster import start_ray
from curate.scale.commits import store_rest
from curate.scale.infer import pack_scorer, peak_rss_mb
from curate.scale.sources import (
    RemoteError,
    carried_error,
    duplicate_orders,
    read_blocks,
    read_shards,
    rows_in_order,
    rows_only,
)
from curate.storage.files import removed_on_failure

Step = tuple[str, Callable[[Any], Any]]


class _Clock:
    """``clock(part)`` records the seconds since the previous call under ``timings[step][part]``."""

    def __init__(self, timings: dict[str, dict[str, float]], step: str):
        import time

        self.now = time.perf_counter
        self.last = self.now()
        self.parts = timings.setdefault(step, {})

    def __call__(self, part: str) -> None:
        now = self.now()
        self.parts[part] = round(self.parts.get(part, 0.0) + now - self.last, 3)
        self.last = now


class RayEngine:
    """The Ray Data versions of `curate run`'s load, dedup, score and embed steps (see the module doc).

    ``address``: a Ray cluster (``host:port`` or ``ray://host:10001``); None starts Ray on this machine.
    ``cpus_per_actor``: CPU threads per inference actor when the cluster has no GPUs (one actor per
    ``cpus_per_actor`` CPUs). Without an LLM backend the actors compute the run's scores
    (``run.score_producers()``: its trained scorer for a score where it has one, else the shipped scorer).
    ``batch_size``: rows per actor call (None: :func:`curate.scale.collect.pass_batch_size` sizes each pass).
    ``dedup_name`` / ``near_dedup_name``: the selections the dedup / near-duplicates steps write.
    ``verbose``: Ray Data's progress bars and log lines on the console.
    """

    def __init__(self, address: str | None = None, cpus_per_actor: int = 1, batch_size: int | None = None, dedup_name: str = "dedup",
                 near_dedup_name: str = "minhash", verbose: bool = False):
        self.address = address
        self.verbose = verbose
        self.dedup_name, self.near_dedup_name = dedup_name, near_dedup_name
        self.cpus_per_actor = max(1, int(cpus_per_actor))
        self.batch_size = batch_size
        self.workers: dict[str, float] = {}   # "<stage> pid <pid>" -> peak resident MiB
        self.timings: dict[str, dict[str, float]] = {}  # step -> part -> seconds (where the time went)
        self._ray = None
        self._release_ray: Callable[[], None] | None = None  # this engine's hold on Ray (see cluster.start_ray)
        self._data = None                     # the read shards, materialised in the object store
        self._orders: np.ndarray | None = None  # order key of each pool row read here, in pool order
        self._ids: list[str] = []
        self._whole_pool = False
        self._embedding: np.ndarray | None = None
        self._encoded = 0                     # texts the last pass encoded (the rest came from the embedding cache)
        self._results: dict[str, dict[str, tuple[Any, list]]] = {}  # column -> row id -> (value, failures)
        self._extra: dict[str, dict[str, dict[str, Any]]] = {}      # signal column -> row id -> side values
        self._stored: dict[str, tuple[set[str], int]] = {}  # column -> (rows stored as batches came back, failed)
        self._counts: dict[str, dict[str, Any]] = {}  # column -> the actors' run counts no write of the pass took
        self._inference_info: dict[str, Any] = {}

    # -- Ray --------------------------------------------------------------------------------------
    def connect(self):
        """Ray, initialised: connected to ``address``, or started here; reused if already initialised."""
        if self._ray is None:
            self._ray, self._release_ray = start_ray(self.address, self.verbose)
        return self._ray

    def close(self) -> None:
        """Drop the data and this engine's hold on Ray: the last engine of the process to close puts Ray Data's
        settings back, and stops Ray if an engine started it."""
        self._data = None
        release, self._ray, self._release_ray = self._release_ray, None, None
        if release is not None:
            release()

    def rows(self):
        """The read shards as a Ray dataset (``kind``, ``order``, ``key``, ``data``, ``pid``, ``rss_mb``;
        see :mod:`.sources`); rows and rejects, materialised by ``load``."""
        if self._data is None:
            raise CurateError("the Ray engine has not loaded a source (or has closed)")
        return self._data

    def pool_orders(self, ws) -> np.ndarray:
        """The read order key of each pool row (pool order); an error unless ``load`` wrote the whole pool."""
        if not self._whole_pool or self._ids != ws.ids:
            raise CurateError(f"{ws.path}: its pool is not exactly what this engine loaded")
        return self._orders

    def partitions(self) -> int:
        """Partitions of a groupby's shuffle: one per CPU of the cluster."""
        return max(1, int(self.connect().cluster_resources().get("CPU", 1)))

    def minhash_dedup(self, ws, **params):
        """Near-duplicates by MinHash LSH on Ray (band buckets as groupbys); see :mod:`.minhash`."""
        from curate.scale.minhash import minhash_dedup

        return minhash_dedup(self, ws, **params)

    def near_dedup(self, run, fallback: Callable[[Any], Any]):
        """`curate run --minhash`: the ``minhash`` selection of the exactly deduplicated rows, as one process writes
        it (``fallback``: the single-process step, when the workspace holds rows of other sources too)."""
        if not self._whole_pool:
            return fallback(run)
        return self.minhash_dedup(run.ws, name=self.near_dedup_name, input_selection=self.dedup_name)

    def stage(self):
        """Context manager for a stage that runs on Ray (see ``_stage``)."""
        return self._stage()

    @contextmanager
    def _stage(self) -> Iterator[None]:
        """Run a Ray stage: on an error close Ray and raise the task's own CurateError (not Ray's wrapper)."""
        try:
            yield
        except BaseException as exc:
            self.close()
            cause = exc
            while cause is not None and not isinstance(cause, (CurateError, RemoteError)):
                cause = getattr(cause, "cause", None) or cause.__cause__
            if isinstance(cause, RemoteError):  # the message names the file and line, as the original did
                cause = getattr(cause, "cause", cause)  # Ray's RayTaskError(RemoteError) wraps the one the actor raised
                raise carried_error(cause) from None
            if cause is not None and cause is not exc:
                raise cause from None
            raise

    # -- the steps --------------------------------------------------------------------------------
    def plan(self, plan: Sequence[Step]) -> list[Step]:
        """``plan`` (pipeline.steps) with load, dedup, score, signals and embed replaced by their Ray versions;
        Ray is closed after the last of them, whatever their order."""
        original = dict(plan)
        ours = {"load": self.load, "dedup": lambda run: self.dedup(run, original["dedup"]),
                "near-duplicates": lambda run: self.near_dedup(run, original["near-duplicates"]),
                "score": lambda run: self.score(run, original["score"]),
                "signals": lambda run: self.signals(run, original.get("signals")),
                "embed": lambda run: self.embed(run, original["embed"])}
        last = [name for name, _ in plan if name in ours][-1]

        def then_close(run, step=ours[last]):
            try:
                return step(run)
            finally:
                self.close()
        ours[last] = then_close
        return [(name, ours.get(name, fn)) for name, fn in plan]

    def load(self, run) -> dict[str, Any]:
        """Read the shards on Ray, then write the pool with ``ws.load`` (nothing is created if reading fails)."""
        from curate import pools
        from curate.session import Workspace

        ids: list[str] = []
        # a source that does not read (a missing or empty one, a shard that fails) leaves no folder the run made,
        # as on one process: the read on Ray is inside too; a cluster that cannot be joined is not the source's
        # fault: the run failed (75 or 78), as OUT/run.json says, for the next run to find
        try:
            with removed_on_failure(*run.made, made_by_caller=True):
                paths = shard_paths(run.source)  # a missing source is named before Ray starts
            clock = _Clock(self.timings, "load")
            with self._stage():
                ray = self.connect()
            clock("ray_init")
            with removed_on_failure(*run.made, made_by_caller=True):
                with self._stage():
                    # the workers read absolute paths: their working folder is the cluster's, not this process's
                    # (a relative source failed on a cluster started elsewhere); rejects name the path as given
                    items = [{"shard": i, "path": os.path.abspath(p) if os.path.exists(p) else p, "shown": p}
                             for i, p in enumerate(paths)]
                    self._data = (ray.data.from_items(items, override_num_blocks=len(items))
                                  .map_batches(read_shards, batch_size=1, batch_format="numpy",
                                               fn_kwargs={"format": run.format, "mapping": run.mapping}).materialize())
                    clock("read_shards")
                    blocks, rejects = read_blocks(self._data, self.workers)
                    if sum(len(orders) for _, orders in blocks) <= SCALE.task_shuffle_max_rows:
                        # Ray Data's default hash shuffle starts a pool of aggregator actors per groupby: 5-7 s of each
                        # 40-row run's dedup and MinHash passes on 2 cores (evals/bench_ray_fixed.py); its task-based sort
                        # shuffle starts none, and above the bound the actors' start is small beside the data's. The
                        # datasets of the passes derive from this one and share its DataContext (a copy of the process's
                        # made when it was created): the setting is this engine's, no other Ray Data work's
                        from ray.data.context import ShuffleStrategy

                        self._data.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
                    self._note_worker("driver")
                    clock("to_driver")
                if rejects and run.on_error == "raise":  # the first bad record, in source order, before anything is made
                    raise InputError(rejects[0].path, rejects[0].location, rejects[0].reason)
                run.workspace = Workspace(run.out / "workspace")
                # ids as pools.assign_ids gives them; only the source's rows stay, as the single-process load
                summary = run.workspace.load(pools.RowStream(str(run.source), rows_in_order(blocks, ids), rejects,
                                                             pools.formats.turn_fields(run.mapping)), keep_only_source=True)
        except BaseException:
            self.close()
            raise
        self._ids = ids
        clock("write_pool")
        self._orders = np.sort(np.concatenate([orders for _, orders in blocks] or [np.zeros(0, np.int64)]))
        self._whole_pool = self._ids == run.workspace.ids
        return run.loaded({**summary, "engine": "ray", "shards": len(paths)})  # the single-process load's checks

    def dedup(self, run, fallback: Callable[[Any], Any]):
        """Exact duplicates out (selection ``dedup``): a groupby on the text hash; the first copy is kept."""
        from ray.data.aggregate import Count, Min

        if not self._whole_pool:  # the pool holds rows of other sources too: the selector sees them all
            return fallback(run)
        clock = _Clock(self.timings, "dedup")
        with self._stage():
            groups = (self.rows().map_batches(rows_only, batch_format="pyarrow")
                      .groupby("key", num_partitions=self.partitions()).aggregate(Count(), Min("order")))
            first: dict[str, int] = {}
            for batch in groups.iter_batches(batch_format="pyarrow", batch_size=None):
                counts = batch["count()"].to_numpy()
                many = np.flatnonzero(counts > 1)
                keys, mins = batch["key"].to_pylist(), batch["min(order)"].to_numpy()
                first.update((keys[i], int(mins[i])) for i in many.tolist())
            clock("groupby")
            pairs = (self.rows().map_batches(rows_only, batch_format="pyarrow")
                     .map_batches(duplicate_orders, fn_kwargs={"first": first}, batch_format="pyarrow")
                     .take_all()) if first else []
            clock("duplicates")
        ids = self._ids
        witness = {int(p["order"]): int(p["first"]) for p in pairs}
        position = {int(o): i for i, o in enumerate(self._orders.tolist())} if witness else {}
        decisions, reasons, details = [], [], []
        for order in self._orders.tolist():
            if order in witness:
                decisions.append(Decision.DUPLICATE)
                reasons.append(Reason.EXACT_DUPLICATE)
                details.append({"witness": ids[position[witness[order]]]})
            else:
                decisions.append(Decision.KEPT)
                reasons.append(Reason.SELECTED)
                details.append({})
        # the provenance the ``exact`` selector's select() writes, plus the engine
        provenance = {"method": "exact", "params": {}, "input_selection": None, "step_of": None, "candidates": len(ids),
                      "counts": dict(Counter(d.value for d in decisions)), "text": "conversation",
                      "ignore_case_and_spacing": False,
                      "sort_by": None, "order": "pool", "engine": "ray", "duplicate_groups": len(first)}
        selection = run.ws.add_selection(self.dedup_name, ids, decisions, reasons, details, provenance)
        clock("write_selection")
        return selection

    def score(self, run, fallback: Callable[[Any], Any]) -> dict[str, Any]:
        """The run's trained scorers (``run.scorers``) and the shipped ones for the other scores on the Ray actors,
        stored through ``ws.apply`` (LLM judges: ``fallback``, the single-process step, whose backend already sends
        requests concurrently). The run's token signals ride along in the same pass when they have work (stored
        by the ``signals`` step)."""
        if run.backend is not None or not self._whole_pool:
            return fallback(run)
        from curate.scale.signals import needing_work, signals_to_compute

        scorers = run.score_producers()
        ws = run.ws
        ids = run.scored_ids()  # the rows the filter steps before scoring kept, as the single-process step
        signal_steps, signal_rows = signals_to_compute(run, ids)
        need = {*needing_work(ws, scorers, ids), *signal_rows}  # the rest are stored under these settings already
        todo = [rid for rid in ids if rid in need]
        if todo or not self._has_embeddings(ws):
            trained = {s.column: pack_scorer(s) for name, s in run.scorers.items() if name in run.scores}
            self._infer(scorers, signal_steps, run.signal_model, trained=trained, only=todo, cache_dir=ws.cache_dir,
                        progress=run.progress, ws=ws, ids=ids)  # the rows scored are stored as batches come back
        # the rest, as the single-process step stores them: old settings' rows go
        return {s.column: store_rest(ws, s, self._results.get(s.column, {}), None, self._inference_info, ids,
                                     run.progress, self._stored.get(s.column), self._counts.get(s.column))
                for s in scorers}

    def signals(self, run, fallback: Callable[[Any], Any]) -> dict[str, Any]:
        """The token-level signals ``run.signals`` on the actor pool (:func:`curate.scale.signals.signals_on_ray`)."""
        from curate.scale.signals import signals_on_ray

        return signals_on_ray(self, run, fallback)

    def embed(self, run, fallback: Callable[[Any], Any]) -> dict[str, Any]:
        """The embedding set from the inference pass (or an embedding-only pass), via ``ws.add_embeddings``."""
        from curate.embed.encoder import model_id, resolve_backend
        from curate.embed.step import pool_unknown_token_share, vocabulary_warning
        from curate.scale.infer import embed_cache

        ws = run.ws
        with self._stage():
            if not self._whole_pool:
                return fallback(run)
            # the set records, and the run warns of, the share of tokens the model's vocabulary misses, as on one process
            unknown = pool_unknown_token_share(ws, model_id(None))
            if self._embedding is None and self._has_embeddings(ws):
                return {"name": EMBED.name, "rows": len(ws), "encoded": 0, "reused": len(ws), "model": EMBED.model,
                        "text": EMBED.text, "engine": "ray", "unchanged": True,
                        "warning": vocabulary_warning(unknown, model_id(None))}
            encoded_in = "score" if self._embedding is not None else None  # the score step's pass encoded them
            if self._embedding is None:
                self._infer([], cache_dir=ws.cache_dir, progress=run.progress)
            matrix, encoded, device = self._embedding, self._encoded, self._inference_info.get("device")
            provenance = {"kind": "embeddings", "model": model_id(None), "backend": resolve_backend(None, device, env=False),
                          "text": EMBED.text, "dim": int(matrix.shape[1]), "normalized": True, "device": device,
                          "encoded": encoded, "cache": str(embed_cache(ws.cache_dir)), "engine": self._inference_info,
                          "unknown_token_share": None if unknown is None else round(unknown, 4)}
            written = ws.add_embeddings(EMBED.name, matrix, provenance, ids=self._ids)
            self._embedding = None
            return {"name": EMBED.name, "rows": len(matrix), "encoded": encoded, "reused": len(matrix) - encoded,
                    "model": provenance["model"], "text": EMBED.text, "device": device, "engine": "ray",
                    "unchanged": not written, "encoded_in": encoded_in,
                    "unknown_token_share": provenance["unknown_token_share"],
                    "warning": vocabulary_warning(unknown, provenance["model"])}

    # -- inference --------------------------------------------------------------------------------
    def _has_embeddings(self, ws) -> bool:
        sets = ws.embedding_sets
        meta = sets.get(EMBED.name)
        import hashlib
        import json

        # the pool's very rows, not their count: a source edited to as many rows reused the stale set (review)
        return bool(meta) and meta.get("model") == EMBED.model and meta.get("text") == EMBED.text \
            and list(meta.get("shape", [0]))[0] == len(ws) \
            and meta.get("ids_sha256") == hashlib.sha256(json.dumps(ws.ids).encode()).hexdigest()

    def _infer(self, scorers: list, signal_steps: Sequence = (), signal_model: str | None = None,
               embed: bool = True, trained: dict[str, dict[str, bytes]] | None = None,
               only: Sequence[str] | None = None, cache_dir: os.PathLike | None = None,
               progress: bool = False, ws: Any = None, ids: Sequence[str] = ()) -> None:
        """One pass over the rows on the actor pool (:func:`curate.scale.collect.inference_pass`): the embeddings
        (``embed``), every scorer's values and failures, and every signal step's values, failures and side values
        (``self._results``, ``self._extra``; ``self._stored``: the rows of each column stored as batches came back).
        ``trained``: column -> a trained scorer of ``scorers`` as :func:`~curate.scale.infer.pack_scorer` packs it.
        ``only``: the row ids the scorers and signals run on (None: every row; the embedding covers every row).
        ``cache_dir``: the workspace's cache folder; the actors read its embedding cache, encode only the texts it
        lacks, and the new vectors are stored in it here as batches come back. ``ws``: the workspace whose columns
        take the scorers' and signals' values as batches come back (``ids``: the rows the run stores values for).
        ``progress``: a bar counting rows."""
        from curate.scale.collect import inference_pass

        with self._stage():
            collected, commits, columns, info = inference_pass(
                self, scorers, signal_steps, signal_model, embed, trained, only, cache_dir, progress, ws, ids)
        if embed:
            self._embedding, self._encoded = collected.matrix, commits.encoded
        self._results.update(collected.results)
        self._extra.update(collected.extra)
        self._stored.update(columns.stored if columns is not None else {})
        self._counts.update(collected.counts)
        self._inference_info = info

    def _note_worker(self, stage: str) -> None:
        key = f"{stage} pid {os.getpid()}"
        self.workers[key] = max(self.workers.get(key, 0.0), peak_rss_mb())
