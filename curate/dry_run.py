"""``curate run --dry-run``: what the main job would send to LLMs, estimated without sending (``curate.llm.dryrun``
prices each step; this runs the steps before the judges as the real run would)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curate.defaults import DEITA
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
                     scorers: Sequence[str] = (), heuristics: bool = False,
                     languages: Sequence[str] | None = None, decontaminate_target: str | None = None,
                     minhash: bool = False, sort_by: str = DEITA.sort_by, format: str = "auto",
                     mapping: dict[str, str] | None = None) -> list[Any]:
    """What ``run_pipeline`` with these backends would send to LLMs, without sending: one
    ``curate.llm.dryrun.DryRunEstimate`` per LLM step (the complexity and quality judges, the tagger).

    An existing ``out/workspace`` is used as the real run would use it (the source is loaded into it; its
    response cache answers what it can); otherwise the pool is loaded into a temporary folder, removed after.
    ``scorers``: the scores a trained scorer gives instead of the judge (no requests for them). ``heuristics`` /
    ``languages`` / ``minhash`` / ``sort_by``: as in ``run_pipeline``, the estimates leave out the rows those steps drop.
    ``decontaminate_target``: ``run_pipeline``'s ``decontaminate``; the real run decontaminates before any LLM step,
    so this embeds the pool (locally, no requests) and leaves out the rows holding evaluation text as well.
    """
    from curate.llm.dryrun import estimate

    if backend is None and tag_backend is None:
        return []
    existing = (Path(out) / "workspace").exists()
    scratch = None if existing else Path(tempfile.mkdtemp(prefix="curate-dry-run-"))
    try:
        run = Run(source, Path(out) if existing else scratch / "out", 0, backend=backend, tag_backend=tag_backend,
                  report=False, heuristics=heuristics, languages=languages, decontaminate=decontaminate_target,
                  minhash=minhash, scores=scores_of(sort_by), format=format, mapping=mapping)
        judges = [name for name in run.scores if name not in scorers] if backend is not None else []
        load(run)
        dedup(run)  # the selections the real run writes before its LLM steps, as it would write them
        if run.minhash:
            near_dedup(run)
        if run.heuristics:
            text_rules(run)
        if run.decontaminate is not None and (judges or tag_backend is not None):
            embed(run)
            decontaminate(run)
        estimates: list[Any] = []
        if judges:
            ids = run.scored_ids()
            estimates += [estimate(run.ws, run.judge(name), ids) for name in judges]
        if tag_backend is not None:
            from curate.tags import Tagger

            estimates.append(estimate(run.ws, Tagger(tag_backend), run.kept_ids(candidates(run))))
        return estimates
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
