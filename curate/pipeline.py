"""The main job, `curate run`: a list of steps, each a (name, function) pair run in order.

load -> exact dedup -> [minhash] -> heuristics -> score (complexity, quality) -> [signals] -> embed -> [decontaminate]
-> [tags] -> DEITA admission -> export -> [report]

No LLM call is paid for a row a filter step drops (with LLM judges, embed and decontaminate move before score).

Every step is resumable and idempotent: scores go through ``ws.apply`` (a row already computed under the same
judge/scorer fingerprint is skipped; LLM calls also go through the response cache), embeddings through the embedding
cache, and selections are deterministic. Re-running costs nothing and gives the same set. Steps return data; the
command line (``curate/cli/run.py``) prints it."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.codes import FailureCode
from curate.defaults import DECONTAMINATE, DEITA, POOL, REPORT, RUN
from curate.errors import CurateError, OptionError, python_and_cli
from curate.run_options import EXPORTS, check_loaded_pool, check_run_options
from curate.run_record import Step, applied, apply_in_turn, check_answered, run_steps
from curate.run_result import RunResult
from curate.select.heuristics import refuse_an_emptied_pool
from curate.select.progress import showing_progress
from curate.select.registry import check_params
from curate.select.sort_key import SCORES, scores_of
from curate.session import Workspace
from curate.storage.apply import apply_to_rows
from curate.storage.export import export_together
from curate.storage.files import removed_on_failure, writing
from curate.storage.output_record import Written, written_unless_current
from curate.storage.run_lock import run_lock

DEDUP = "dedup"
NEAR_DEDUP = "minhash"
DECONTAMINATED = "decontaminated"
PASSED_HEURISTICS = "heuristics"
SELECTION = "deita"


@dataclass
class Run:
    """The options of one run, and what its steps have produced so far."""

    source: str | Any            # a path (file, folder, glob, "sample") or a pool in memory (curate.pools.read)
    out: Path
    budget: int
    max_cosine_similarity: float = DEITA.max_cosine_similarity
    backend: Any = None          # LLM backend for the judges; None: the shipped default scorers (offline)
    tag_backend: Any = None      # LLM backend for InsTag tags; None: no tags
    report: bool = True
    signals: tuple[str, ...] = ()  # token-level model signals to compute: ifd, perplexity
    signal_model: str | None = None  # their causal LM folder (None: the packaged SmolLM2)
    scorers: dict[str, Any] = field(default_factory=dict)  # a trained Scorer per DEITA score, used instead of the default
    on_error: str | None = None  # a bad record of the source: skip it (to rejects.jsonl) or raise; pools.run_on_error
    format: str = POOL.format    # the source's record shape, and its field names (curate.pools.read)
    mapping: dict[str, str] | None = None
    progress: bool = True        # the steps' progress bars
    decontaminate: str | None = None  # a file of evaluation texts: rows holding one are not candidates
    heuristics: bool = True      # rows failing a text rule (curate.select.heuristics) are not candidates
    minhash: bool = False        # near-duplicates of an earlier row (MinHash LSH) are not candidates
    languages: tuple[str, ...] | None = None  # with heuristics: the languages kept (None: any)
    scores: tuple[str, ...] = SCORES  # the DEITA scores computed; admission sorts by their product
    embed_model: str | None = None  # a sentence-transformers folder for the run's embeddings (None: packaged MiniLM)
    tag_normalizer: Any = None   # the tags' Normalizer (curate.tags); None: Normalizer() (curate.defaults.NORMALIZER)
    workspace: Workspace | None = None
    made: tuple[Path, ...] = ()  # the folders this run made (out, its workspace): removed again if its load fails
    outputs: dict[str, Path] = field(default_factory=dict)
    judge_columns: dict[str, str] = field(default_factory=dict)  # a judge's column where a pool field has its name
    prompt_dirs: tuple[str, ...] = ()  # folders of prompt files overriding the judges' built-ins ($CURATE_PROMPTS too)

    def __post_init__(self) -> None:  # the options a step would refuse, named before any step runs (or pays)
        check_run_options(self)

    def loaded(self, summary: dict[str, Any]) -> dict[str, Any]:
        """After either engine's load: refuse a pool quality cannot judge, give a score named like a pool field its
        own column, and check the trained scorers' input columns, before dedup and before any judge pays."""
        return check_loaded_pool(self, summary)

    @property
    def ws(self) -> Workspace:
        if self.workspace is None:
            raise CurateError("the load step has not run")
        return self.workspace

    @property
    def pays_judges(self) -> bool:
        """Whether the score step sends requests to an LLM judge (not only the local default or trained scorers)."""
        return self.backend is not None and any(name not in self.scorers for name in self.scores)

    @property
    def decontaminates_before_scoring(self) -> bool:
        """Decontamination (and its embedding) runs before paid judges; after local scorers (Ray: one pass for both)."""
        return self.decontaminate is not None and self.pays_judges

    def score_producers(self) -> list[Any]:
        """The step behind each of the run's DEITA scores, in ``SCORES`` order: the run's own trained scorer
        (``scorers``), else the LLM judge with a backend, else the shipped default scorer (either engine)."""
        from curate.scorers import load_default

        return [self.scorers[name] if name in self.scorers else self.judge(name) if self.backend is not None
                else load_default(name) for name in self.scores]

    def judge(self, name: str) -> Any:
        """The LLM judge of score ``name``, writing its column (``<name>_judge`` where the pool has a field ``name``)."""
        from curate.llm.judges import Judge

        return Judge(name, self.backend, column=self.judge_columns.get(name), prompt_dirs=list(self.prompt_dirs))

    def scored_ids(self) -> list[str]:
        """The rows the score step (and the signals) store values for, in pool order: those every filter step before
        scoring kept (no judge call for a duplicate, a refusal, a leaked row); either engine stores the same rows."""
        chain = filter_chain(self)
        if DECONTAMINATED in chain and not self.decontaminates_before_scoring:
            chain.remove(DECONTAMINATED)
        return self.kept_ids(chain[-1])

    def kept_ids(self, selection: str) -> list[str]:
        """The rows the filter selection ``selection`` (written by this run) kept, in pool order."""
        kept = set(self.ws.selection(selection).ids)
        return [rid for rid in self.ws.ids if rid in kept]


# -- the steps ------------------------------------------------------------------------------------------

def load(run: Run) -> dict[str, Any]:
    """Load the source into ``out/workspace`` (read outside the lock, part by part); if that fails (a missing or
    unreadable source), an ``out`` made here is removed again. Returns the load summary."""
    with removed_on_failure(*run.made, made_by_caller=True):  # not the lock's folder: the run made it too
        run.workspace = Workspace(run.out / "workspace")
        # the run curates its source as it is now: rows an earlier version of it had are not candidates
        summary = run.workspace.load(run.source, format=run.format, mapping=run.mapping, on_error=run.on_error, keep_only_source=True)
    return run.loaded(summary)


def dedup(run: Run):
    """Exact duplicates out (selection ``dedup``): the first copy of each conversation in pool order stays."""
    return run.ws.select(method="exact", name=DEDUP)


def near_dedup(run: Run):
    """Near-duplicates (MinHash LSH) out of the exact dedup's rows before any scoring; the first copy in pool order stays."""
    with showing_progress(run.progress):
        return run.ws.select(method="minhash", name=NEAR_DEDUP, input_selection=DEDUP)


def text_rules(run: Run):
    """Rows with an empty reply, a refusal, an AI disclaimer, a looping or cut-off reply, mojibake (or, with
    ``languages``, another language) out of the deduplicated rows (selection ``heuristics``)."""
    passed = run.ws.select(method="heuristics", name=PASSED_HEURISTICS, input_selection=candidates(run, PASSED_HEURISTICS),
                           languages=None if run.languages is None else list(run.languages),
                           keep_instruction_only="quality" not in run.scores)
    refuse_an_emptied_pool(passed.table.num_rows, len(passed), passed.provenance["rows_failing"])  # 78, not empty
    return passed


def decontaminate(run: Run):
    """Rows holding evaluation text, or embedded that close to one, out of the candidates so far (selection
    ``decontaminated``)."""
    return run.ws.select(method="decontaminate", name=DECONTAMINATED, input_selection=candidates(run, DECONTAMINATED),
                         target=run.decontaminate, max_cosine_similarity=DECONTAMINATE.max_cosine_similarity)


def filter_chain(run: Run) -> list[str]:
    """The filter selections the run writes, each over the rows of the one before: the deduplicated rows, then
    those not near-duplicates, those passing the text rules, those decontaminated, as far as the run asks."""
    return ([DEDUP] + [NEAR_DEDUP] * run.minhash + [PASSED_HEURISTICS] * run.heuristics
            + [DECONTAMINATED] * (run.decontaminate is not None))


def candidates(run: Run, before: str | None = None) -> str:
    """The selection admission (and the tagger) chooses from, or the one the filter step writing ``before`` reads."""
    chain = filter_chain(run)
    return chain[-1] if before is None else chain[chain.index(before) - 1]


def sort_key(run: Run) -> str:
    """DEITA's evol score over the columns the run's score producers write (``complexity*quality`` by default)."""
    # a judge or a default scorer writes the column named after its score (unless a pool field has that name); a
    # trained scorer, its own
    return "*".join(run.scorers[name].column if name in run.scorers else run.judge_columns.get(name, name)
                    for name in run.scores)


def score(run: Run) -> dict[str, Any]:
    """Complexity and quality per turn: a trained scorer where the run has one, else LLM judges with a backend,
    else the shipped default scorers. Returns each column's ``ApplyResult``. Rows ``max_cost`` left unsent are an
    error (after both columns)."""
    producers = run.score_producers()  # their input columns: checked after load (Run.loaded)
    # retry_failed: a re-run sends again what max_cost left unsent or the judge never answered (as the errors
    # below promise); rows scored or failed for a permanent reason stay as they are
    ids = run.scored_ids()
    results = apply_in_turn(run.backend, producers, lambda s: apply_to_rows(run.ws, s, ids, run.progress))
    per_step = [run.ws.failures(step.column) for step in producers if step.column in results]  # a dead server: 1
    failures = [[f for fails in row for f in fails] for row in zip(*per_step, strict=True)]  # per row, every column
    unsent = sum(any(f.code == FailureCode.BUDGET for f in fails) for fails in failures)
    if unsent:
        raise CurateError(f"{unsent} rows not sent: max_cost reached (the scored rows are kept in {run.ws.path}); "
                          f"re-run with a larger {python_and_cli('max_cost= of the backend', '--max-cost')} to finish")
    check_answered(run.backend, failures, "scored", run.ws.path)  # settings refused: 78; no answer: 75, retry later
    return results


def signals(run: Run) -> dict[str, Any]:
    """Token-level model signals per turn (``ifd``, ``perplexity``) from a small causal LM."""
    from curate.signals.steps import signal_steps

    steps, ids = signal_steps(run.signals, run.signal_model), run.scored_ids()  # a duplicate costs a forward pass too
    return {s.column: apply_to_rows(run.ws, s, ids, run.progress) for s in steps}


def embed(run: Run) -> dict[str, Any]:
    """The default embedding set (cached by model and text), of ``run.embed_model`` (None: the packaged MiniLM)."""
    return run.ws.embed(model=run.embed_model, progress=run.progress)


def tags(run: Run) -> dict[str, Any]:
    """InsTag tags for the candidate rows (every filter step kept them), normalised (``tags_raw`` -> ``tags``)."""
    from curate.tags import Tagger, normalize

    fields = set(run.ws.pool.column_names)  # a pool field named tags (tags_raw) keeps its values, as a judge's name
    raw, column = (name + "_instag" * (name in fields) for name in ("tags_raw", "tags"))
    ids = run.kept_ids(candidates(run))
    tagged = applied(run.tag_backend, lambda: apply_to_rows(run.ws, Tagger(run.tag_backend, column=raw), ids, run.progress))
    check_answered(run.tag_backend, run.ws.failures(raw, ids), "tagged", run.ws.path)  # as score: 78 or 75
    normalized = normalize(run.ws, run.tag_normalizer, source=raw, column=column)  # tag_normalizer None: the defaults
    return {"tags_raw": tagged, "normalizer": normalized, "columns": (raw, column)}


def deita(run: Run):
    """DEITA admission over the deduplicated (and decontaminated) rows, by the evol score, up to the budget."""
    return run.ws.select(method="deita", name=SELECTION, input_selection=candidates(run), budget=run.budget,
                         max_cosine_similarity=run.max_cosine_similarity, sort_by=sort_key(run))


def export(run: Run) -> Written:
    """The selection as out/selected.jsonl, out/selected.parquet and the datasets folder out/selected/; left as they
    are when written from the same workspace and intact (``unchanged``)."""
    outs = [run.out / n for n in EXPORTS.values()]
    unchanged = written_unless_current(run.ws, outs, lambda: export_together(run.ws, outs, SELECTION),
                                       step="export", selection=SELECTION)
    run.outputs.update(files := dict(zip(EXPORTS, outs, strict=True)))
    return Written(files, unchanged)


def report(run: Run) -> Written:
    """out/report.html; left as it is when drawn from the same workspace and intact (``unchanged``)."""
    def draw() -> None:
        with writing(path):  # a full disk names the file
            run.ws.report(path, selection=SELECTION)

    path = run.out / REPORT.path
    unchanged = written_unless_current(run.ws, [path], draw, step="report", selection=SELECTION,
                                       samples=REPORT.samples)
    run.outputs["report"] = path
    return Written({"report": path}, unchanged)


def steps(run: Run) -> list[Step]:
    """The steps of ``run``, in order (tags only with a tag backend, report only when asked; the signals before
    the scores when a scorer of the run reads them; embed and decontaminate before paid judges)."""
    plan: list[Step] = [("load", load), ("dedup", dedup)]
    if run.minhash:  # text only, before any score is paid for
        plan.append(("near-duplicates", near_dedup))
    if run.heuristics:  # reads text only: before any score is paid for, so a failing row is seen early
        plan.append(("heuristics", text_rules))
    if run.decontaminates_before_scoring:  # its embedding test reads the run's embeddings
        plan += [("embed", embed), ("decontaminate", decontaminate)]
    plan.append(("score", score))
    if run.signals:
        reads_columns = any(getattr(step, "inputs", ()) for step in run.scorers.values())
        plan.insert(plan.index(("score", score)) + (0 if reads_columns else 1), ("signals", signals))
    if not run.decontaminates_before_scoring:
        plan.append(("embed", embed))
        if run.decontaminate is not None:
            plan.append(("decontaminate", decontaminate))
    if run.tag_backend is not None:  # after every filter step: no tag request for a dropped row
        plan.append(("tags", tags))
    plan += [("select (DEITA admission)", deita), ("export", export)]
    if run.report:
        plan.append(("report", report))
    return plan


def engine_steps(run: Run, engine: str = RUN.engine, address: str | None = None) -> list[Step]:
    """The steps of ``run`` on ``engine``: ``single`` runs them here; ``ray`` runs load, dedup, score and embed on Ray."""
    if engine == "single":
        if address is not None:
            raise OptionError(f"address {address!r} (--address) is a Ray cluster's: it needs engine='ray' (--engine ray)")
        return steps(run)
    if engine == "ray":
        from curate.scale import ray_plan

        return ray_plan(run, steps(run), address, dedup_name=DEDUP, near_dedup_name=NEAR_DEDUP)
    raise OptionError(f"unknown engine {engine!r}: choose single or ray")


def run_pipeline(source: str | Any, out: str | os.PathLike, budget: int, *,
                 max_cosine_similarity: float = DEITA.max_cosine_similarity, backend: Any = None, tag_backend: Any = None,
                 tag_normalizer: Any = None, report: bool = True, on_start: Callable[[str], None] | None = None,
                 on_done: Callable[[str, Any, float], None] | None = None,
                 engine: str = RUN.engine, address: str | None = None, signals: Sequence[str] = (),
                 signal_model: str | None = None, embed_model: str | None = None, scorers: dict[str, Any] | None = None,
                 on_error: str | None = None, progress: bool = True, decontaminate: str | os.PathLike | None = None,
                 heuristics: bool = True, languages: Sequence[str] | None = None, minhash: bool = False,
                 sort_by: str = DEITA.sort_by, format: str = POOL.format, mapping: dict[str, str] | None = None,
                 prompt_dirs: Sequence[str | os.PathLike] = ()) -> RunResult:
    """Curate ``source`` (a path, or a pool in memory: a ``datasets.Dataset``, a pandas ``DataFrame``, a list of
    dicts) into ``out``: ``out/workspace``, ``out/selected.{jsonl,parquet}``, ``out/selected/``, ``out/report.html``.

    ``backend``: an LLM backend for the complexity and quality judges; None scores with the shipped default scorers
    (offline); ``prompt_dirs``: folders of prompt files (``quality.md``) overriding the judges' built-ins by name.
    ``tag_backend``: one for InsTag tags (none: no tags), normalised by ``tag_normalizer`` (a
    ``curate.tags.Normalizer``; None: the defaults). ``on_start(name)`` and ``on_done(name, result, seconds)`` are
    called around each step. ``engine``: ``single`` (this process) or ``ray`` (load, dedup, score and embed on Ray Data,
    see :mod:`curate.scale`); ``address``: the Ray cluster (None: Ray starts on this machine). ``signals``: token-level
    model signals (``ifd``, ``perplexity``; on the Ray actors with ``ray``) from ``signal_model`` (a causal LM folder;
    None: the packaged SmolLM2). ``scorers``: a trained scorer (a ``Scorer``, or a folder or shipped name for
    ``Scorer.load``) per DEITA score, e.g. ``{"quality": "my-distilled-scorer"}``, used instead of the default scorer or
    the judge; it writes its own column; admission sorts by the product of the run's columns.
    ``on_error``: ``skip`` leaves a malformed record of the source out (in ``rejects.jsonl``, counted in the load
    summary); ``raise`` stops at the first, naming its file and line; None: :func:`curate.pools.run_on_error`.
    ``format``, ``mapping``: the record shape and field names, as ``curate.pools.read`` takes them. ``progress``: bars.
    ``decontaminate``: a file of evaluation texts (``.txt``, one per line, or any file curate loads): rows sharing a
    run of words with one, or embedded closer than ``DECONTAMINATE.max_cosine_similarity`` to one
    (``curate.select.decontaminate``), are left out of admission (selection ``decontaminated``).
    ``heuristics``: rows failing a text rule (:mod:`curate.select.heuristics`) are left out of admission (selection
    ``heuristics``), by default (when every row fails one: an OptionError); False keeps them. ``languages`` (ISO
    codes, e.g. ``["en"]``; ``[]``: none) adds the language rule, run with the others (refused with heuristics=False).
    ``minhash``: near-duplicates of an earlier row (MinHash LSH, estimated Jaccard >= 0.8) are left out before scoring
    (selection ``minhash``): no judge call for them; admission alone keeps the best-scored copy, after paying for each.
    ``sort_by``: the DEITA scores admission sorts by, and the only ones computed: ``complexity*quality``, ``quality``
    or ``complexity`` (instructions without responses: a row without a reply passes the empty-response rule).
    ``embed_model``: a sentence-transformers folder to embed with (None: the packaged MiniLM, English; scorers keep it).
    """
    # before any paid call; a budget under 1 row (a run selecting nothing would still pay for the pool) is refused
    check_params("deita", {"budget": budget, "max_cosine_similarity": max_cosine_similarity})
    if not -1 <= max_cosine_similarity <= 1:
        raise OptionError(f"max_cosine_similarity must be a cosine in [-1, 1], not {max_cosine_similarity!r}")
    if decontaminate is not None:
        from curate.select.decontaminate import read_targets
        read_targets(str(decontaminate))  # a missing, malformed or empty file is named (65) before any paid call
        decontaminate = str(decontaminate)
    from curate.scorers.run_scorers import resolve_scorers
    scores = scores_of(sort_by)
    run = Run(source, Path(out), budget, max_cosine_similarity, backend, tag_backend, report, tuple(signals),
              signal_model, resolve_scorers(scorers or {}, scores), on_error, format, mapping, progress, decontaminate,
              heuristics=heuristics, languages=languages, minhash=minhash, scores=scores,  # a bad language: named here
              embed_model=embed_model, prompt_dirs=tuple(str(d) for d in prompt_dirs), tag_normalizer=tag_normalizer)
    plan = engine_steps(run, engine, address)
    with run_lock(run.out) as made:  # a second run on this folder waits for the whole of this one (select, export ...)
        run.made = made  # out and its workspace, made by this run (the lock's folder): a failed load removes them
        timings, results, record = run_steps(run, plan, on_start, on_done)
    return RunResult(run.ws, SELECTION, run.outputs, timings, results, record)
