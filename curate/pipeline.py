"""The main job, `curate run`: load -> dedup -> score -> embed -> tags -> DEITA admission -> export -> report.

Every step is resumable and idempotent: LLM calls go through the response cache, embeddings through the
embedding cache, scorer columns are recomputed only when the scorer (its config and weights) changes,
and selections are deterministic. Re-running with the same arguments costs nothing and gives the same set.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from curate.errors import CurateError
from curate.session import Workspace
from curate.storage.files import writing


@dataclass
class RunResult:
    """What `curate run` produced: the workspace, the selection, the files, and per-step timings."""

    workspace: Workspace
    selection: str
    outputs: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def _repr_html_(self) -> str:
        sel = self.workspace.selection(self.selection)
        files = "".join(f"<li>{k}: <code>{v}</code></li>" for k, v in self.outputs.items())
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
        return f"<div><b>curate run</b>: {len(sel):,} rows selected<ul>{files}</ul>{steps}</div>"


def _scorer_step(ws: Workspace, name: str, console: Console) -> None:
    """Score with the shipped default scorer unless every row already holds this scorer's output."""
    from curate.scorers import load_default, score_workspace

    scorer = load_default(name)
    fingerprint = scorer.fingerprint
    if ws.has_column(name) and ws.has_column(f"{name}_failure"):
        prov = ws.column_provenance(name)
        complete = all(v is not None or f is not None
                       for v, f in zip(ws.column(name), ws.column(f"{name}_failure"), strict=True))
        # per turn, as run_pipeline writes it (a first-turn-only column from `curate score` is redone)
        if (prov.get("kind") == "scorer" and prov.get("scorer_fingerprint") == fingerprint and complete
                and prov.get("turns") == "each user turn"):
            console.print(f"  {name}: every row already scored by the default scorer")
            return
    summary = score_workspace(ws, scorer, column=name, per_turn=True)
    console.print(f"  {name}: {summary['scored']:,} scored, {summary['failed']:,} failed "
                  f"(reasons in {name}_failure), default scorer imitating {scorer.imitates.get('judge', name)}")


def _load_into_workspace(out: Path, pool: Any) -> tuple[Workspace, dict[str, Any]]:
    """Load ``pool`` (a read source) into ``out/workspace``; if that fails, an ``out`` made here is removed
    again (no empty output folder after an early failure). Returns the workspace and the load summary."""
    created = not out.exists()
    try:
        ws = Workspace(out / "workspace")
        return ws, ws.load(pool)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _judge_step(ws: Workspace, backend: Any, console: Console) -> None:
    from curate.llm.judges import score

    unsent = 0
    for judge in ("complexity", "quality"):
        summary = score(ws, judge, backend)
        console.print(f"  {judge}: {summary}")
        unsent += summary.get("rows_not_sent_max_cost") or 0
    if unsent:
        raise CurateError(f"{unsent} rows not sent: max_cost reached (the scored rows are kept in {ws.path}); "
                          "re-run with a larger --max-cost to finish")


def run_pipeline(source: str, out: Path, budget: int, *, max_cosine_similarity: float = 0.9,
                 backend: Any = None, tag_backend: Any = None, report: bool = True,
                 console: Console | None = None) -> RunResult:
    """Curate ``source`` into ``out``: ``out/workspace``, ``out/selected.{jsonl,parquet}``, ``out/selected/``,
    ``out/report.html``.

    ``backend``: an LLM backend for the complexity and quality judges; None scores with the shipped
    default scorers (offline). ``tag_backend``: an LLM backend for InsTag tags (skipped when None).
    """
    from curate import embed as embed_mod
    from curate import pools
    from curate import select as select_mod

    console = console or Console()
    out = Path(out)
    timings: dict[str, float] = {}

    def step(label: str):
        t = time.perf_counter()
        console.print(f"[bold]{label}[/]")
        return lambda: timings.__setitem__(label, time.perf_counter() - t)

    done = step("load")
    pool = pools.read(source, on_error="skip")  # first: a missing or unreadable source creates nothing
    ws, summary = _load_into_workspace(out, pool)
    console.print(f"  {summary['rows_added']:,} new rows, {summary['already_present']:,} already present, "
                  f"{summary['rejects']:,} rejected" + (f" (see {summary['rejects_file']})" if summary["rejects"] else ""))
    done()

    done = step("dedup")
    sel = select_mod.select(ws, method="exact", name="dedup")
    console.print(f"  {len(sel):,} unique of {len(ws):,}")
    done()

    done = step("score")
    if backend is None:
        for name in ("complexity", "quality"):
            _scorer_step(ws, name, console)
    else:
        _judge_step(ws, backend, console)
    done()

    done = step("embed")
    info = embed_mod.embed(ws, progress=True)
    console.print(f"  {info['rows']:,} rows, {info['encoded']:,} newly encoded")
    done()

    if tag_backend is not None:
        from curate import tags

        done = step("tags")
        tags.tag(ws, tag_backend)
        tags.normalize(ws)
        done()

    done = step("select (DEITA admission)")
    sel = select_mod.select(ws, method="deita", name="deita", input_selection="dedup", budget=budget,
                            max_cosine_similarity=max_cosine_similarity)
    console.print(f"  {len(sel):,} rows admitted (budget {budget:,}, max cosine similarity {max_cosine_similarity})")
    done()

    done = step("export")
    outputs = {
        "jsonl": ws.export(out / "selected.jsonl", selection="deita"),
        "parquet": ws.export(out / "selected.parquet", selection="deita"),
        "dataset": ws.export(out / "selected", selection="deita"),
    }
    done()

    if report:
        from curate.report.views import build_report

        done = step("report")
        with writing(out / "report.html"):  # a full disk names the file
            outputs["report"] = build_report(ws, out / "report.html", selection="deita")
        done()
    for kind, path in outputs.items():
        console.print(f"  {kind}: {path}")
    console.print("time per step: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return RunResult(ws, "deita", outputs, timings)
