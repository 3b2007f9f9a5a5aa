"""Inference on Ray actors, and how its results reach the workspace.

:class:`Inference` is the ``map_batches`` callable of the score-and-embed stage: each actor loads the
encoder, the scorers and (when the run asks for token signals) one causal LM once (on a GPU when the actor
was given one) and then, per batch, runs each scorer's own ``Scorer.run`` against a batch-local embedding cache
(holding the vectors the workspace's cache had), each signal step's own ``run``, and embeds the rows' texts,
reading those the scorers encoded (as one process's embed step runs after its scorers). Nothing about scoring is
re-implemented: the same code as ``ws.apply(scorer)`` computes the values and failures, only on another
process.

:class:`Precomputed` brings those values home: a Step wrapping the real scorer whose ``run`` returns
the actors' results. ``ws.apply(Precomputed(...))`` then writes the column exactly as
``ws.apply(scorer)`` would (same column, fingerprint, ``describe()`` provenance, failure column, run
history, column lock); rows the actors did not compute are computed by the scorer itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curate.codes import Failure
from curate.defaults import EMBED
from curate.hardware import import_torch
from curate.storage.step import RowInput, StepContext, StepOutput


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


BATCH_FOLDER_PREFIX = "curate-ray-"  # + the actor's host and pid: a batch's caches, in the temporary folder
# curate-ray-<pid>-<tempfile's 8 characters>: the name before the host was in it (no host: its pid may be another's)
_HOSTLESS_BATCH_FOLDER = re.compile(re.escape(BATCH_FOLDER_PREFIX) + r"(\d+)-[a-z0-9_]{8}")
HOSTLESS_STALE_AFTER_S = 24 * 3600  # a host-less folder this long untouched is no live batch's on any host


def batch_folder_prefix(pid: int | None = None) -> str:
    """``curate-ray-<host>-<pid>-``: whose batch folder it is (a pid means something on its own host only: a /tmp
    shared by containers holds other hosts' folders)."""
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    return f"{BATCH_FOLDER_PREFIX}{host}-{os.getpid() if pid is None else pid}-"


def remove_stale_batch_folders() -> list[Path]:
    """Remove the batch folders of actors of this host no longer running (a killed actor never removes its own:
    each held a batch's embeddings and scorer caches); returns them. A folder of a live pid, or of another host,
    stays. A folder named before the host was in it (``curate-ray-<pid>-*``) goes when its pid is not running here
    and it was untouched for :data:`HOSTLESS_STALE_AFTER_S` (a batch's folder lives for one batch: an old one is
    no live actor's, whatever host shares this /tmp)."""
    stale, mine = [], batch_folder_prefix(0)[:-2]  # curate-ray-<host>-
    for folder in Path(tempfile.gettempdir()).glob(f"{BATCH_FOLDER_PREFIX}*-*"):
        if folder.name.startswith(mine):
            pid = folder.name[len(mine):].split("-", 1)[0]
        elif hostless := _HOSTLESS_BATCH_FOLDER.fullmatch(folder.name):
            pid = hostless.group(1)
            try:
                if time.time() - folder.stat().st_mtime < HOSTLESS_STALE_AFTER_S:
                    continue
            except FileNotFoundError:  # its actor removed it just now
                continue
        else:  # another host's
            continue
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            stale.append(folder)
        except PermissionError:  # another user's live process
            continue
    return stale


def embed_cache(cache_dir: Path) -> Path:
    """The workspace's embedding cache the actors read (the default model and backend, as their encoder's), a cache
    of the layout before shards moved in first (on the driver: the actors only read)."""
    from curate.embed.cache import cache_folder, legacy_files, move_legacy
    from curate.embed.encoder import resolve_backend
    from curate.storage.vector_shards import VectorStore

    store = VectorStore(cache_folder(cache_dir, None, resolve_backend(None, None, env=False)))
    if legacy_files(store):
        with store.lock():
            move_legacy(store)
    return store.folder


class Inference:
    """One actor's models: the encoder (``embed``), the shipped scorers ``scores`` and, when ``signals`` are
    asked, the token-level signal steps on one causal LM (``signal_model``; None: the packaged SmolLM2), each
    loaded once per actor (on its GPU when it was given one). ``__call__(batch)`` embeds, scores and computes
    the signals of a batch of rows in one visit, so a run that asks for both loads its models in one round of
    actors.

    ``scores``: a shipped scorer's name, or a trained scorer's saved folder as :func:`pack_scorer` gives it.
    ``score_orders``: the order keys of the rows the scorers and signals run on (None: every row); the others
    (duplicates, rows the text rules dropped) are embedded only, and ``computed`` says which rows were scored.
    ``batch``: a block of the read shards (``kind``, ``order``, ``data``; see :mod:`.sources`). Returns ``order``,
    the ``embedding`` matrix when ``embed`` (text ``text`` of each row, unit vectors), for each scorer and
    signal ``<column>__values`` and ``<column>__failures`` (JSON per row), for each signal
    ``<column>__extra`` (its side values, JSON per row), for each scorer and signal ``<column>__stats`` (the
    batch's run counts, e.g. ``turns_truncated``, ``requests``, ``texts_encoded``: JSON on the first row, ``{}`` on
    the others, so any split of the batch sums to them); plus the actor's ``pid`` and peak memory (``rss_mb``). Caches live in a folder of the batch, removed after it: an actor may be killed, not closed.
    """

    def __init__(self, scores: Sequence[str | dict[str, bytes]] = (), signals: Sequence[str] = (),
                 signal_model: str | None = None, embed: bool = True, model: str | None = None,
                 text: str = EMBED.text, batch_size: int = EMBED.batch_size, threads: int | None = None,
                 score_orders: np.ndarray | None = None, embed_cache: str | None = None):
        self.embed_cache = embed_cache
        remove_stale_batch_folders()
        self.score_orders = None if score_orders is None else np.asarray(score_orders, dtype=np.int64)
        if threads:
            torch = import_torch()
            torch.set_num_threads(threads)
        from curate.scorers import load_default

        self.scorers = [load_default(s) if isinstance(s, str) else unpack_scorer(s) for s in scores]
        from curate.embed.encoder import auto_device

        if auto_device() == "cuda":  # an actor given a GPU: the fine-tuned readers run on it (CPU is their default)
            for scorer in self.scorers:
                if hasattr(scorer, "device"):
                    scorer.device = "cuda"
        self.text = text
        self.batch_size = batch_size
        self.embed = embed
        if embed:
            from curate.embed.encoder import auto_device, load_model, model_id

            self.model = model_id(model)
            self.device = auto_device()
            load_model(self.model, self.device)  # the actor's one encoder, loaded before the first batch
        self.signal_steps: list = []
        if signals:
            from curate.signals.steps import signal_steps

            self.signal_steps = signal_steps(signals, signal_model)

    def __call__(self, batch) -> dict[str, Any]:
        from curate.scale.sources import remote_errors

        with remote_errors():
            return self._call(batch)

    def _from_embed_cache(self, texts: list[str], tmp: str) -> tuple[np.ndarray, np.ndarray]:
        """(keys, new): the vectors the workspace's embedding cache (``embed_cache``, read without its lock;
        absent on another node) holds for ``texts`` go into the batch-local cache, so only the ``new`` ones are
        encoded; the driver stores those (an actor never writes the workspace)."""
        from curate.embed.cache import cache_folder, get_checked, text_key
        from curate.embed.encoder import resolve_backend
        from curate.storage.vector_shards import KEY_DTYPE, VectorStore

        keys = np.array([text_key(t) for t in texts], dtype=KEY_DTYPE)
        if not self.embed_cache:
            return keys, np.ones(len(keys), dtype=bool)
        # damaged vectors are refused here, naming the workspace's shard (the batch-local copy is gone after the batch)
        vectors, found = get_checked(VectorStore(self.embed_cache), keys)
        if found.any():
            local = VectorStore(cache_folder(tmp, self.model, resolve_backend(None, self.device, env=False)))
            with local.lock():
                local.add(keys[found], vectors[found])
        return keys, ~found

    def _call(self, batch) -> dict[str, Any]:
        import pyarrow.compute as pc

        from curate.embed.cache import encode_cached
        from curate.rows import row_text, turns
        from curate.scale.sources import ROW, conversations

        batch = batch.filter(pc.equal(batch["kind"], ROW))  # rows only, not the rejects
        convs = conversations(batch)
        orders = batch.column("order").to_numpy()
        rows = [RowInput(str(o), c, turns(c)) for o, c in zip(orders.tolist(), convs, strict=True)]
        out: dict[str, Any] = {"order": orders}
        with tempfile.TemporaryDirectory(prefix=batch_folder_prefix()) as tmp:
            if self.embed:  # the vectors of the batch's texts the workspace's cache holds, in the batch-local cache
                texts = [row_text(c, self.text) for c in convs]
                out["embedding_key"], out["embedding_new"] = self._from_embed_cache(texts, tmp)
            # no workspace on an actor (ws.apply checks columns); its folder goes with the batch: nothing kept for later
            ctx = StepContext(_NoProgress(), Path(tmp), Path(tmp), keep_outputs=False)
            computed = (np.ones(len(rows), dtype=bool) if self.score_orders is None
                        else np.isin(orders, self.score_orders))
            asked = [row for row, c in zip(rows, computed.tolist(), strict=True) if c]
            out["computed"] = computed
            for scorer in self.scorers:
                _columns(out, scorer.column, scorer.run(asked, ctx) if asked else StepOutput([], []), computed,
                         extra=False)
            for step in self.signal_steps:  # IFD and perplexity share their forward passes through ctx's cache
                _columns(out, step.column, step.run(asked, ctx) if asked else StepOutput([], []), computed,
                         extra=True)
            if self.embed:  # after the scorers, as one process's embed step: their counts (texts_encoded, ..._from_
                # embedding_cache) are of the workspace's cache, not of vectors this call encoded; it reads theirs
                out["embedding"], _, _ = encode_cached(texts, tmp, model=self.model, batch_size=self.batch_size,
                                                       device=self.device)
        out["pid"] = np.full(len(rows), os.getpid(), dtype=np.int64)
        out["rss_mb"] = np.full(len(rows), peak_rss_mb())
        return out


def actor_pool(ray: Any, cpus_per_actor: int, blocks: int) -> tuple[int, dict[str, Any], int | None, dict[str, Any]]:
    """(actors, map_batches options, CPU threads per actor, provenance): one :class:`Inference` actor per GPU when
    the cluster has GPUs, else one per ``cpus_per_actor`` CPUs; no more than the pass's ``blocks`` (Ray Data hands
    an actor a whole block: one more actor would load its models, seconds of CPU and memory, and get no rows)."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        actors, options, threads = gpus, {"num_gpus": 1}, None
    else:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_actor)
        options, threads = {"num_cpus": cpus_per_actor}, cpus_per_actor
    actors = max(1, min(actors, blocks))
    return actors, options, threads, {"name": "ray", "actors": actors, "device": "cuda" if gpus else "cpu",
                                      "cpus_per_actor": None if gpus else cpus_per_actor}


def pack_scorer(scorer: Any) -> dict[str, bytes]:
    """A trained scorer as its saved folder's files (``{relative path: bytes}``: a head or an adapter and
    ``scorer.json``, a few MiB at most), sent to the actors with their arguments: no node needs the folder."""
    with tempfile.TemporaryDirectory(prefix="curate-scorer-") as tmp:
        folder = scorer.save(Path(tmp) / "scorer")  # inside: the save's lock beside it goes with the folder
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def unpack_scorer(files: dict[str, bytes]) -> Any:
    """The scorer :func:`pack_scorer` packed, loaded on this process (the folder is removed once read)."""
    from curate.scorers import Scorer

    with tempfile.TemporaryDirectory(prefix="curate-scorer-") as tmp:
        for name, blob in files.items():
            path = Path(tmp, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
        return Scorer.load(tmp)


def _columns(out: dict[str, Any], column: str, result: StepOutput, computed: np.ndarray, extra: bool) -> None:
    """A step's values, failures (and side values) as JSON columns of an actor's output batch: ``result`` holds the
    rows ``computed`` marks, in order; the other rows get ``null`` / ``[]`` / ``{}``."""
    where = np.flatnonzero(computed)
    values = np.full(len(computed), "null", dtype=object)
    values[where] = [json.dumps(v) for v in result.values]
    failures = np.full(len(computed), "[]", dtype=object)
    failures[where] = [json.dumps([f.to_dict() for f in fails]) for fails in result.failures]
    out[f"{column}__values"], out[f"{column}__failures"] = values, failures
    counts = np.full(len(computed), "{}", dtype=object)  # the step's run counts: once a batch, not once a row
    if len(computed):
        counts[0] = json.dumps(batch_counts(result.stats))
    out[f"{column}__stats"] = counts
    if extra:
        sides = np.full(len(computed), "{}", dtype=object)
        sides[where] = [json.dumps({k: v[i] for k, v in result.extra.items()}) for i in range(len(where))]
        out[f"{column}__extra"] = sides


def batch_counts(stats: dict[str, Any]) -> dict[str, int | float]:
    """The counts of a step's run ``stats`` (numbers: summed over the batches of a pass and the writes of a column)."""
    return {k: v for k, v in stats.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def add_batch_counts(total: dict[str, Any], counts: dict[str, Any]) -> None:
    """Add one batch's ``counts`` (:func:`batch_counts`) to ``total``, in place."""
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value


class Precomputed:
    """A Step that stores values computed elsewhere under ``step``'s identity (see the module doc).

    ``results``: row id -> (value, failures as dicts). ``stats``: merged into the run's provenance
    (e.g. ``{"engine": {"name": "ray", ...}, "turns_scored": n}``). ``extra``: row id -> the step's side
    values for that row (``{key: value}``, e.g. a signal's losses), for steps that have them.
    """

    def __init__(self, step: Any, results: dict[str, tuple[Any, list[dict[str, Any]]]], stats: dict[str, Any],
                 extra: dict[str, dict[str, Any]] | None = None):
        self.step = step
        self.extra = extra or {}
        self.column = step.column
        self.granularity = step.granularity
        self.reducer = step.reducer
        self.inputs = step.inputs
        self.results = results
        self.stats = stats

    def fingerprint(self) -> str:
        return self.step.fingerprint()

    def describe(self) -> dict[str, Any]:
        return self.step.describe()

    @property
    def column_stats(self) -> Any:
        """The wrapped step's stats of its whole column (``ws.apply`` stores them), if it counts any; else None."""
        return getattr(self.step, "column_stats", None)

    def check_column(self, ws: Any) -> None:
        """The wrapped step's own rule about its column (``ws.apply`` calls it), if it has one."""
        check = getattr(self.step, "check_column", None)
        if check is not None:
            check(ws)

    def run(self, rows: Sequence[RowInput], ctx: StepContext) -> StepOutput:
        missing = [row for row in rows if row.id not in self.results]
        rest = self.step.run(missing, ctx) if missing else StepOutput([], [])
        computed = iter(range(len(missing)))
        values: list[Any] = []
        failures: list[list[Failure]] = []
        keys = sorted({k for e in self.extra.values() for k in e} | set(rest.extra))
        extra: dict[str, list[Any]] = {k: [] for k in keys}
        for row in rows:
            if row.id in self.results:
                value, fails = self.results[row.id]
                values.append(value)
                failures.append([Failure.from_dict(f) for f in fails])
                for k in keys:
                    extra[k].append(self.extra.get(row.id, {}).get(k))
            else:
                i = next(computed)
                values.append(rest.values[i])
                failures.append(rest.failures[i])
                for k in keys:
                    extra[k].append(rest.extra[k][i] if k in rest.extra else None)
        ctx.progress.update(len(rows) - len(missing))
        stats = dict(self.stats)
        for key, value in rest.stats.items():
            stats[key] = stats.get(key, 0) + value if isinstance(value, (int, float)) else value
        if isinstance(stats.get("engine"), dict):
            stats["engine"] = {**stats["engine"], "rows_computed_on_driver": len(missing)}
        return StepOutput(values, failures, extra=extra, stats=stats)
