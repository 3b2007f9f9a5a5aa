"""``curate run --dry-run``: what the main job would send to LLMs, estimated without sending (``curate.llm.dryrun``
prices each step; this runs the steps before the judges as the real run would)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curate.defaults import DEITA
from curate.errors import RetryLaterError
from curate.llm.batch_state import BatchState
from curate.pipeline import (
    Run,
    candidates,
    decontaminate,
    dedup,
    embed,
    load,
    near_dedup,
    text_rules,
)
from curate.select.sort_key import scores_of


def dry_run_pipeline(source: str | Any, out: Path, *, backend: Any = None, tag_backend: Any = None,
                     scorers: Sequence[str] = (), heuristics: bool = True,
                     languages: Sequence[str] | None = None, decontaminate_target: str | None = None,
                     minhash: bool = False, sort_by: str = DEITA.sort_by, format: str = "auto",
                     mapping: dict[str, str] | None = None, on_error: str | None = None) -> list[Any]:
    """What ``run_pipeline`` with these backends would send to LLMs, without sending: one
    ``curate.llm.dryrun.DryRunEstimate`` per LLM step (the complexity and quality judges, the tagger).

    Nothing under ``out`` is written: the steps run in a temporary folder, removed after. An existing
    ``out/workspace`` is copied there first (its large files linked; without its response cache, staging and
    locks), so the steps see what the real run would (its rows, columns, failures, selections), and a copy of its
    response cache answers what it can (:func:`private_cache`).
    ``scorers``: the scores a trained scorer gives instead of the judge (no requests for them). ``heuristics`` /
    ``languages`` / ``minhash`` / ``sort_by``: as in ``run_pipeline``, the estimates leave out the rows those steps drop.
    ``decontaminate_target``: ``run_pipeline``'s ``decontaminate``; the real run decontaminates before any LLM step,
    so this embeds the pool (locally, no requests) and leaves out the rows holding evaluation text as well.
    """
    from curate.llm.dryrun import estimate

    if backend is None and tag_backend is None:
        return []
    existing = Path(out) / "workspace"
    scratch = Path(tempfile.mkdtemp(prefix="curate-dry-run-"))
    batch_states: dict[int, tuple[Any, Any]] = {}
    try:
        if existing.exists():  # the filter steps write their selections (and a load, new rows): into the copy
            with _writers_paused(existing):  # one moment's files, not a pool of one write and a manifest of the next
                shutil.copytree(existing, scratch / "out" / "workspace", symlinks=True, copy_function=_share_or_copy,
                                ignore=_not_copied(existing, embeddings=decontaminate_target is not None))
        run = Run(source, scratch / "out", 0, backend=backend, tag_backend=tag_backend,
                  report=False, heuristics=heuristics, languages=languages, decontaminate=decontaminate_target,
                  minhash=minhash, scores=scores_of(sort_by), format=format, mapping=mapping, on_error=on_error)
        for llm in (backend, tag_backend):  # the batch backend's open submissions: read in the copy, since opening
            state = getattr(llm, "state", None)  # the real workspace tidies it (removes a killed writer's files)
            if isinstance(state, BatchState) and id(llm) not in batch_states:
                batch_states[id(llm)] = (llm, state)
                llm.state = BatchState(scratch / "out" / "workspace", state.claim_expiry_s)
        judges = [name for name in run.scores if name not in scorers] if backend is not None else []
        load(run)
        dedup(run)  # the selections the real run writes before its LLM steps, as it would write them (in the copy)
        if run.minhash:
            near_dedup(run)
        if run.heuristics:
            text_rules(run)
        if run.decontaminate is not None and (judges or tag_backend is not None):
            embed(run)
            decontaminate(run)
        cache = private_cache(existing / "cache", scratch) if existing.exists() else None  # looked up only
        estimates: list[Any] = []
        if judges:
            ids = run.scored_ids()
            estimates += [estimate(run.ws, run.judge(name), ids, cache=cache) for name in judges]
        if tag_backend is not None:
            from curate.tags import Tagger

            estimates.append(estimate(run.ws, Tagger(tag_backend), run.kept_ids(candidates(run)), cache=cache))
        return estimates
    finally:
        for llm, state in batch_states.values():
            llm.state = state
        shutil.rmtree(scratch, ignore_errors=True)


SHARED_FROM_BYTES = 1 << 20  # files this large are linked into the copy, not copied (a 10M-row pool: gigabytes)
WRITTEN_IN_PLACE = ("rejects.jsonl",)  # appended to where it is (storage.pool.append_new_lines): always copied


def _share_or_copy(src: str, dst: str) -> None:
    """Link a large file of the workspace into the copy instead of copying it. Safe because the workspace writes a
    file by renaming a new one over it (a rename replaces the link, never the file it points at); the one file
    appended in place is copied, as are the dot files (locks, which are opened without following links)."""
    name = os.path.basename(src)
    try:
        if os.path.getsize(src) >= SHARED_FROM_BYTES and name not in WRITTEN_IN_PLACE and name[0] != ".":
            os.symlink(os.path.abspath(src), dst)
        else:
            shutil.copy2(src, dst)
    except FileNotFoundError:  # renamed over or removed since it was listed (a lock-free write: a batch heartbeat)
        pass


def _writers_paused(workspace: Path) -> Any:
    """The workspace lock (every mutation takes it) while the copy is made; taken only where its file exists, as
    creating it would write under OUT."""
    from curate.storage.files import LOCK_FILE, file_lock

    lock = workspace / LOCK_FILE
    return file_lock(lock) if lock.exists() else contextlib.nullcontext()


def _not_copied(workspace: Path, *, embeddings: bool):
    """``copytree``'s ignore for a dry run's copy of ``workspace``: its staging and locks, and its caches (the
    response cache is copied on its own: :func:`private_cache`), but the embedding cache where the dry run embeds
    (decontamination)."""
    def ignore(folder: str, names: list[str]) -> list[str]:
        here = Path(folder)
        leftovers = [n for n in names if n.startswith(".") and n.endswith(".tmp")]  # a writer's, live or killed
        if here == workspace:
            return leftovers + [n for n in names if n in ("staging", "locks")]
        if here == workspace / "cache":
            return [n for n in names if not (embeddings and n == "embeddings")]
        return leftovers

    return ignore


CACHE_COPY_ATTEMPTS = 5  # copies of the response cache tried while a writer changes it


def private_cache(cache: Path, scratch: Path) -> Path:
    """A folder in ``scratch`` holding a copy of the response cache of folder ``cache`` (``responses.sqlite`` and the
    ``-wal`` of answers a writer has not moved into it yet), for the dry run to look requests up in. SQLite opening the
    file where it is, read-only too, creates and removes its ``-wal`` and ``-shm`` beside it: ``OUT/workspace/cache``
    changed. Copied again when a writer changed either file during the copy (two files copied mid-write are a cache
    no writer made); a cache written throughout every attempt is an error naming it."""
    from curate.llm.cache import CACHE_FILE

    copy = scratch / "cache"
    copy.mkdir()
    files = [cache / CACHE_FILE, cache / f"{CACHE_FILE}-wal"]
    for attempt in range(CACHE_COPY_ATTEMPTS):
        if attempt:  # a run writing answers: back off (0.2, 0.4, 0.8, 1.6 s) for a moment between its writes
            time.sleep(0.1 * 2 ** attempt)
        before = [_file_state(f) for f in files]
        if before[0] is None:
            return copy  # no cache yet: an empty one (looking up creates no file)
        try:
            for f, state in zip(files, before, strict=True):
                if state is None:
                    (copy / f.name).unlink(missing_ok=True)
                else:
                    shutil.copyfile(f, copy / f.name)
        except FileNotFoundError:  # the -wal removed by its last writer's close, after a checkpoint into the file
            continue
        if [_file_state(f) for f in files] == before:
            return copy
    raise RetryLaterError(f"{files[0]}: written while copied, {CACHE_COPY_ATTEMPTS} times, for the dry run to read (a run "
                      "sending requests?): run the dry run again when it is done")


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime in ns) of ``path``: a write or a replacement changes it; None for no file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns
