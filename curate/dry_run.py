"""``curate run --dry-run``: what the main job would send to LLMs, estimated without sending (``curate.llm.dryrun``
prices each step; this runs the steps before the judges as the real run would)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from curate.defaults import DEITA, POOL
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
from curate.storage.files import LOCK_FILE, MANIFEST, file_lock
from curate.storage.lock_holders import flock_file_at


def dry_run_pipeline(source: str | Any, out: Path, *, backend: Any = None, tag_backend: Any = None,
                     scorers: Sequence[str] = (), heuristics: bool = True,
                     languages: Sequence[str] | None = None, decontaminate_target: str | None = None,
                     minhash: bool = False, sort_by: str = DEITA.sort_by, format: str = POOL.format,
                     mapping: dict[str, str] | None = None, on_error: str | None = None,
                     prompt_dirs: Sequence[str] = ()) -> list[Any]:
    """What ``run_pipeline`` with these backends would send to LLMs, without sending: one
    ``curate.llm.dryrun.DryRunEstimate`` per LLM step (the complexity and quality judges, the tagger).

    Nothing under ``out`` is written: the steps run in a temporary folder, removed after. An existing
    ``out/workspace`` is copied there first (its large files linked; without its response cache, staging and
    locks), so the steps see what the real run would (its rows, columns, failures, selections), and its response
    cache, read where it is without changing it (``curate.llm.cache.LookupOnlyCache``), answers what it can.
    ``scorers``: the scores a trained scorer gives instead of the judge (no requests for them); ``prompt_dirs``: as in
    ``run_pipeline``. ``heuristics`` /
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
            with _writers_paused(existing) as there:  # one moment's files, not a pool of one write and a manifest
                if there:                             # of the next
                    shutil.copytree(existing, scratch / "out" / "workspace", symlinks=True,
                                    copy_function=_share_or_copy,
                                    ignore=_not_copied(existing, embeddings=decontaminate_target is not None))
        run = Run(source, scratch / "out", 0, backend=backend, tag_backend=tag_backend,
                  report=False, heuristics=heuristics, languages=languages, decontaminate=decontaminate_target,
                  minhash=minhash, scores=scores_of(sort_by), format=format, mapping=mapping, on_error=on_error,
                  prompt_dirs=tuple(str(d) for d in prompt_dirs))
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
        cache = existing / "cache" if existing.exists() else None  # read where it is (LookupOnlyCache): no copy
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


@contextlib.contextmanager
def _writers_paused(workspace: Path) -> Iterator[bool]:
    """The workspace lock (every mutation takes it) held while the copy is made; yields whether there is a workspace
    to copy. The lock of the file at ``WS/.lock`` once held: one moved aside with its folder (a failed first load's
    take-back) or replaced after it was opened excludes no writer of the workspace at the path now, so it is let go
    and the one there taken. Never created (creating it, or filelock making its folder anew, would write under
    OUT): with no lock file, a workspace from before locks (a manifest) is copied as it is, and a folder without
    one (being made, or taken back) is no workspace to copy."""
    path = workspace / LOCK_FILE
    try:
        import fcntl
    except ImportError:  # Windows: filelock's lock, taken where its file exists
        with file_lock(path) if path.exists() else contextlib.nullcontext():
            yield (workspace / MANIFEST).exists()
        return
    fd = flock_file_at(path, os.O_RDONLY, fcntl.LOCK_SH)  # shared: writers take it exclusively; dry runs side by side
    if fd is None:
        yield (workspace / MANIFEST).exists()
        return
    try:
        yield True
    finally:
        os.close(fd)  # lets go of the lock


def _not_copied(workspace: Path, *, embeddings: bool):
    """``copytree``'s ignore for a dry run's copy of ``workspace``: its staging and locks, and its caches (the
    response cache is read where it is), but the embedding cache where the dry run embeds
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
