"""The main job: `curate run` (the steps are curate/pipeline.py; printing is here)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from curate.cli.common import (
    _api_key_env_opt,
    _concurrency_opt,
    _dry_run_opt,
    _format_opt,
    _judge_backend,
    _mapping_opt,
    _max_cosine_similarity_opt,
    _max_retries_opt,
    _poll_opt,
    _rpm_opt,
    _rps_opt,
    _source,
    _timeout_opt,
    _tpm_opt,
    app,
    check_interrupted,
    console,
    json_columns_line,
    mapping_arg,
    requests_answered_text,
    sample_path,
    turn_keys_line,
)
from curate.defaults import DECONTAMINATE, DEITA, HEURISTICS, MINHASH, RUN
from curate.exit_codes import exit_codes_text


@app.command(epilog=exit_codes_text())
def run(
    source: str = typer.Argument("sample", help="Pool to curate ('sample' = the bundled sample)."),
    out: Path = typer.Option(Path(RUN.out), "--out", "-o", help="Output directory (workspace, exports, report)."),
    budget: int | None = typer.Option(None, help="Rows to select (required; on the bundled sample the default is "
                                      f"{DEITA.sample_budget})."),
    max_cosine_similarity: float = _max_cosine_similarity_opt(),
    backend: str | None = typer.Option(None, "--backend", help="Score with LLM judges: openai | openai-batch | "
                                       "vllm | vllm-batch | local. Default: the shipped scorers (offline, no LLM "
                                       "calls)."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (implies --backend openai)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Judge model name (openai) or folder (vllm)."),
    tags: bool = typer.Option(False, "--tags/--no-tags", help="Also tag intents with the LLM judge (needs a backend)."),
    max_cost: float | None = typer.Option(None, "--max-cost", help="Hard cap in USD for judge calls."),
    prompt_dir: list[Path] = typer.Option([], "--prompt-dir", help="Folder of prompt files that override the judges' "
                                          "built-ins by name (quality.md, complexity.md)."),
    concurrency: int | None = _concurrency_opt(),
    rps: float | None = _rps_opt(),
    rpm: int | None = _rpm_opt(),
    tpm: int | None = _tpm_opt(),
    timeout: float | None = _timeout_opt(),
    max_retries: int | None = _max_retries_opt(),
    api_key_env: str | None = _api_key_env_opt(),
    report: bool = typer.Option(True, "--report/--no-report", help="Write OUT/report.html."),
    poll_interval: float | None = _poll_opt(),
    dry_run: bool = _dry_run_opt(),
    engine: str = typer.Option(RUN.engine, "--engine", help="single (this process) | ray (read, dedup, embed and "
                               "score on Ray Data; needs curate\\[ray])."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (host:port) for --engine ray; "
                                       "default: start Ray on this machine."),
    signal: list[str] = typer.Option([], "--signal", help="Also compute a token-level model signal per turn: ifd | "
                                     "perplexity (repeatable; on the Ray actors with --engine ray)."),
    signal_model: Path | None = typer.Option(None, "--signal-model", help="Causal LM folder for --signal "
                                             "(default: the packaged SmolLM2-135M-Instruct)."),
    embed_model: Path | None = typer.Option(None, "--embed-model", help="Sentence-transformers model folder the run "
                                            "embeds with for admission and decontamination (default: the packaged "
                                            "all-MiniLM-L6-v2, English)."),
    on_error: str | None = typer.Option(None, "--on-error", help="A malformed record of the source: skip (leave it "
                                        "out, list it in OUT/workspace/rejects.jsonl) | raise (stop, naming its file "
                                        "and line). Default: raise with --mapping, as curate load; skip without."),
    format: str = _format_opt(),
    mapping: str | None = _mapping_opt(),
    scorer: list[str] = typer.Option([], "--scorer", help="complexity=DIR or quality=DIR: score with this trained "
                                     "scorer (`curate train-scorer` / `curate distil --out`, or a shipped name) instead "
                                     "of the default scorer or the judge; it writes its own column, and admission "
                                     "sorts by the product of the run's score columns (repeatable)."),
    decontaminate: Path | None = typer.Option(None, "--decontaminate", help="A file of evaluation texts (.txt, one "
                                              "per line, or any shape curate loads): rows sharing a "
                                              f"{DECONTAMINATE.ngram}-word run with one, or embedded closer than "
                                              f"cosine {DECONTAMINATE.max_cosine_similarity} to one, are left out "
                                              "of the selection."),
    minhash: bool = typer.Option(False, "--minhash", help="Leave out near-duplicates of an earlier row (MinHash LSH "
                                 f"over word {MINHASH.shingle}-grams (characters in Chinese, Japanese, Thai...), estimated Jaccard >= {MINHASH.threshold}) before "
                                 "scoring: no judge call for them; the first copy in pool order stays (admission alone "
                                 "keeps the best-scored copy, after paying for each)."),
    heuristics: bool = typer.Option(True, "--heuristics/--no-heuristics", help="Leave out rows failing a text rule "
                                    "(on by default): an empty reply, a refusal, an \"As an AI language model\" "
                                    "opening, a reply ending in a loop or cut off inside a code fence, a leaked chat "
                                    "template marker (\\[/INST], <|im_end|>...), mojibake. --no-heuristics keeps them."),
    language: list[str] = typer.Option([], "--language", help="Keep rows in this language (ISO 639 code, e.g. en; "
                                       "repeatable): a row is left out when fastText's lid.176 reads neither its "
                                       "prompts nor its replies as one of these languages and reads one side (or "
                                       "both) as another with probability >= "
                                       f"{HEURISTICS.min_language_probability}; a side too short or too unsure to "
                                       "read leaves the decision to the other. Runs with the other text rules (not with --no-heuristics)."),
    sort_by: str = typer.Option(DEITA.sort_by, "--sort-by", help="The DEITA scores admission sorts by, and the only "
                                "ones computed: complexity*quality (DEITA's evol score) | complexity (a pool of "
                                "instructions without responses: no quality score, and the text rules let a row "
                                "without a reply pass) | quality."),
    json_out: bool = typer.Option(False, "--json", help="Print OUT/run.json (status, exit code, counts per step, "
                                  "outputs, LLM use) on stdout, also when the run fails; the progress lines go to "
                                  "stderr."),
) -> None:
    """The main job: load -> dedup -> \\[minhash] -> heuristics -> score -> embed -> \\[decontaminate] -> \\[tags]
    -> DEITA admission -> export -> report.

    With --backend and --decontaminate, embed and decontaminate run before score: no judge call is paid for a row
    decontamination drops.

    Re-running with the same arguments costs nothing (caches) and gives the same selection.
    """
    from curate.pipeline import run_pipeline
    from curate.select.registry import check_params

    src, read_as = _source(source), {"format": format, "mapping": mapping_arg(mapping)}
    if budget is None and not dry_run:  # the sample's default on any pool: score (pay for) it all to keep 20 rows
        if Path(src) != sample_path():
            raise typer.BadParameter(f"required for {source}: the number of rows to select (e.g. --budget 6000); only "
                                     f"the bundled sample has a default ({DEITA.sample_budget})", param_hint="'--budget'")
        budget = DEITA.sample_budget
    if budget is not None:  # the one rule curate select and run_pipeline apply (check_budget, exit 78), before any
        check_params("deita", {"budget": budget, "max_cosine_similarity": max_cosine_similarity})  # step (dry run too)
    scorers = _scorer_args(scorer)
    use_llm = backend is not None or base_url is not None
    if tags and not use_llm:
        raise typer.BadParameter("--tags needs an LLM: give --backend local|vllm|openai or --base-url")
    judge_only = [flag for flag, value in (
        ("--model", model), ("--max-cost", max_cost), ("--rps", rps), ("--rpm", rpm), ("--tpm", tpm),
        ("--concurrency", concurrency), ("--timeout", timeout), ("--max-retries", max_retries),
        ("--poll-interval", poll_interval), ("--api-key-env", api_key_env), ("--prompt-dir", prompt_dir or None))
        if value is not None]
    if judge_only and not use_llm:  # else the shipped scorers run and the judge the user named is never asked
        raise typer.BadParameter(f"{' and '.join(judge_only)}: options of the LLM judge; give --base-url URL or "
                                 "--backend vllm|openai|openai-batch (without them curate run scores with the shipped "
                                 "scorers)")

    if prompt_dir:  # a missing prompt folder: named (78) before the load, not when the score step builds its judges
        from curate.llm.prompts import search_dirs

        search_dirs(prompt_dir)

    def llm_backend():
        return _judge_backend(backend, base_url, model, max_cost=max_cost, workspace=out / "workspace",
                              poll_s=poll_interval, concurrency=concurrency, rps=rps, rpm=rpm, tpm=tpm, timeout=timeout,
                              max_retries=max_retries, api_key_env=api_key_env)

    if dry_run:
        if json_out:  # the dry run prints estimates, not a run's record
            raise typer.BadParameter("--json prints the record of a run; --dry-run sends nothing and makes none: give "
                                     "one of them", param_hint="'--json'")
        if not use_llm:
            console.print("dry run: without --backend the shipped scorers score offline: no LLM requests, $0")
            return
        from curate.cli.judge import print_estimates
        from curate.dry_run import dry_run_pipeline

        with llm_backend() as llm:
            print_estimates(dry_run_pipeline(src, out, backend=llm, tag_backend=llm if tags else None,
                                             scorers=tuple(scorers), heuristics=heuristics,
                                             languages=language or None, minhash=minhash, sort_by=sort_by,
                                             decontaminate_target=str(decontaminate) if decontaminate else None,
                                             on_error=on_error, prompt_dirs=[str(d) for d in prompt_dir], **read_as))
        return
    with (_prose_on_stderr() if json_out else contextlib.nullcontext()), _record_printed(json_out, out, budget), \
            (llm_backend() if use_llm else contextlib.nullcontext()) as llm:
        result = run_pipeline(src, out=out, budget=budget, max_cosine_similarity=max_cosine_similarity, backend=llm,
                              tag_backend=llm if tags else None, report=report, **_engine_args(engine, address),
                              signals=tuple(signal), signal_model=str(signal_model) if signal_model else None,
                              scorers=scorers, on_error=on_error, decontaminate=decontaminate, **read_as,
                              heuristics=heuristics, languages=language or None, minhash=minhash, sort_by=sort_by,
                              embed_model=str(embed_model) if embed_model else None, prompt_dirs=prompt_dir,
                              on_start=lambda name: _start_step(name),
                              on_done=lambda name, res, _s: _print_step(name, res, budget, max_cosine_similarity))
        for kind, path in result.outputs.items():
            console.print(f"  {kind}: {path}")
        if use_llm:
            console.print(_paid_line(result.results), highlight=False)
        console.print("time per step: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    if json_out:
        _print_record(result.record)


@contextlib.contextmanager
def _prose_on_stderr():
    """The progress lines on stderr while the run's JSON is what stdout holds."""
    import sys

    console.file = sys.stderr
    try:
        yield
    finally:  # following sys.stdout again: restoring what the getter returned pinned the console to that one stream
        console.file = None


@contextlib.contextmanager
def _record_printed(json_out: bool, out: Path, budget: int | None):
    """With --json, a failed run's record (the one the error carries, else one of no step: it failed before the
    first) on stdout before the error line; its ``exit_code`` is the one main() exits with (both
    :func:`curate.exit_codes.exit_code`)."""
    from curate.run_record import failed_run_record

    try:
        yield
    except BaseException as exc:
        if json_out and not isinstance(exc, SystemExit):
            _print_record(getattr(exc, "run_record", None) or failed_run_record(out, budget, exc))
        raise


def _print_record(record: dict[str, Any]) -> None:
    import json
    import sys

    sys.stdout.write(json.dumps(record, indent=1, default=str) + "\n")
    sys.stdout.flush()


def _paid_line(results: dict[str, Any]) -> str:
    """What this run sent to LLMs, over the judges and the tagger: requests, cache hits, tokens and USD (the
    columns' lines above count every run that paid into them)."""
    from curate.codes import unknown_cost
    from curate.llm.backends import format_usd
    from curate.run_record import llm_use
    from curate.storage.run_records import fold_runs

    use, total = llm_use(results) or ({"requests_sent": 0, "requests_paid_by_stopped_run": 0, "unpriced_models": []},
                                      fold_runs(None, []))
    sent, stopped = use["requests_sent"] or 0, use["requests_paid_by_stopped_run"]
    by_stopped = f" ({stopped:,} of them by a run that was stopped before recording them)" if stopped else ""
    cost = unknown_cost(use["unpriced_models"]) if total["cost_usd"] is None else "cost " + format_usd(total["cost_usd"])
    return (f"LLM calls this run: {sent:,} sent{by_stopped}, {requests_answered_text(total)}; "
            f"{sum(total['tokens'].values()):,} tokens; {cost}")


def _scorer_args(values: list[str]) -> dict[str, str]:
    """``--scorer KIND=DIR`` options as ``{KIND: DIR}``."""
    out: dict[str, str] = {}
    for value in values:
        kind, sep, where = value.partition("=")
        if not sep or not kind or not where or kind in out:
            raise typer.BadParameter(f"--scorer {value!r}: give KIND=DIR once per kind, e.g. quality=my-scorer")
        out[kind] = where
    return out


def _engine_args(engine: str, address: str | None) -> dict[str, Any]:
    """run_pipeline's engine keywords (none for the default engine, so the call is unchanged)."""
    if engine not in ("single", "ray"):
        raise typer.BadParameter(f"--engine must be single or ray, not {engine!r}")
    if address is not None and engine != "ray":
        raise typer.BadParameter("--address needs --engine ray")
    return {} if engine == "single" else {"engine": engine, "address": address}


def _start_step(name: str) -> None:
    check_interrupted()
    console.print(f"[bold]{escape(name)}[/]", markup=True)


def _print_step(name: str, result: Any, budget: int, max_cosine_similarity: float) -> None:
    """One or two indented lines saying what a step did."""
    check_interrupted()
    if name == "load":
        rejects = f" (see {result['rejects_file']})" if result["rejects"] else ""
        removed = (f", {result['rows_removed']:,} no longer in the source left out of the pool"
                   if result.get("rows_removed") else "")
        removed += ("; the rows' fields and order taken from the source as it is now"
                    if result.get("fields_refreshed") else "")
        console.print(f"  {result['rows_added']:,} new rows, {result['already_present']:,} already present, "
                      f"{result['rejects']:,} rejected{rejects}{removed}{_unchanged(result)}")
        if result["columns_kept_as_json"]:
            console.print(f"  [yellow]{escape(json_columns_line(result['columns_kept_as_json']))}[/]", markup=True)
        if result.get("turn_keys_not_kept"):
            console.print(f"  [yellow]{escape(turn_keys_line(result['turn_keys_not_kept']))}[/]", markup=True)
    elif name in ("export", "report"):  # their paths are listed once the run ends
        console.print("  unchanged: written from the workspace as it is now" if result.unchanged else "  written")
    elif name == "dedup":
        console.print(f"  {len(result):,} unique of {result.table.num_rows:,}{_unchanged(result)}")
    elif name == "near-duplicates":
        near = result.decisions().get("duplicate", 0)
        console.print(f"  {near:,} of {result.table.num_rows:,} near-duplicates of an earlier row (MinHash, Jaccard >= "
                      f"{result.provenance['threshold']}): left out, and not scored{_unchanged(result)}")
    elif name == "heuristics":
        prov = result.provenance
        failing = ", ".join(f"{rule.replace('_', ' ')} {n:,}" for rule, n in prov["rows_failing"].items())
        console.print(f"  {result.decisions().get('rejected', 0):,} of {result.table.num_rows:,} fail a text rule"
                      f"{f' ({failing})' if failing else ''}: left out of the selection, and not scored{_unchanged(result)}")
        if prov.get("rows_kept_with_end_marker"):
            from curate.select.heuristics import end_marker_note

            console.print(f"  [yellow]{escape(end_marker_note(prov['rows_kept_with_end_marker']))}[/]", markup=True)
    elif name == "decontaminate":
        dropped = result.decisions().get("rejected", 0)
        prov = result.provenance
        short = (f"; {prov['targets_matched_whole']:,} under {prov['min_words']} words matched only as a whole message"
                 if prov["targets_matched_whole"] else "")
        short += (f"; {prov['targets_without_words']:,} without a word, never matched"
                  if prov["targets_without_words"] else "")
        console.print(f"  {dropped:,} of {result.table.num_rows:,} match an evaluation text, left out "
                      f"({prov['target_texts']:,} evaluation texts{short}){_unchanged(result)}")
    elif name == "score":
        from curate.cli.judge import cache_use_text, usage_total_line

        for column, applied in result.items():
            producer = f"; {_producer(applied.provenance)}" if applied.provenance else ""  # none: no row to score
            kept = cache_use_text(applied.provenance) if applied.computed and _from_caches(applied.provenance) else ""
            console.print(f"  {column}: {_done(applied, 'scored')}{producer}" + (f" ({kept})" if kept else ""))
            if took_over := applied.takeover_text():
                console.print(f"    [yellow]{escape(took_over)}[/]", soft_wrap=True, highlight=False, markup=True)
            if applied.provenance.get("kind") == "judge":
                console.print(f"    {usage_total_line(applied.provenance)}", highlight=False)
    elif name == "signals":
        from curate.cli.signals import signal_cache_text

        for column, applied in result.items():
            cached = f"; {text}" if (text := signal_cache_text(applied)) else ""
            console.print(f"  {column}: {_done(applied, 'computed')}{cached}")
    elif name == "embed":
        where = f" by the {result['encoded_in']} step's pass" if result.get("encoded_in") and result["encoded"] else ""
        console.print(f"  {result['rows']:,} rows, {result['encoded']:,} newly encoded{where}{_unchanged(result)}")
        if result.get("warning"):  # the model's vocabulary misses the pool's language
            console.print(f"    [yellow]warning: {escape(result['warning'])}[/]", soft_wrap=True, highlight=False,
                          markup=True)
    elif name == "tags":
        (raw, column), applied = result["columns"], result["tags_raw"]
        console.print(f"  {raw}: {_done(applied, 'tagged')}; normalised into column {column}")
        from curate.cli.judge import usage_total_line

        console.print(f"    {usage_total_line(applied.provenance)}", highlight=False)
    elif name.startswith("select"):
        console.print(f"  {len(result):,} rows admitted (budget {budget:,}, by {result.provenance['params']['sort_by']}, max "
                      f"cosine similarity {max_cosine_similarity}){_short_of_budget(result, budget)}{_unchanged(result)}")


def _unchanged(result: Any) -> str:
    """'; unchanged' when a step found what it would store stored already and left its files as they were."""
    same = result.get("unchanged") if isinstance(result, dict) else getattr(result, "unchanged", False)
    return "; unchanged" if same else ""


def _from_caches(prov: dict[str, Any]) -> bool:
    """Whether a scorer's last run took work from the caches (a stopped run's forward passes: its rows count as
    computed now), as `curate score` says: a resumed run said "1,520 now, 0 reused" where 241 turns came from them."""
    return bool(prov.get("turns_from_prediction_cache") or prov.get("texts_from_embedding_cache"))


def _done(applied: Any, verb: str) -> str:
    """'42 of 47 rows scored (42 now, 0 reused); 5 failed (reasons in quality_failure)': rows that got a value now,
    as the notebook's ApplyResult counts them; a row computed now that failed is among the failed."""
    failed = f"; {applied.failed_text()} (reasons in {applied.column}_failure)" if applied.failed else ""
    dropped = (f"; {applied.stale_dropped:,} values an earlier run left on rows this run does not keep removed "
               "(other settings)" if applied.stale_dropped else "")
    again = f"; {applied.redone_text()}" if applied.redone else ""  # curate score says it; run did not
    return (f"{applied.rows - applied.failed:,} of {applied.rows:,} rows {verb} ({applied.valued_now:,} now, "
            f"{applied.skipped:,} reused{again}){failed}{dropped}")


def _short_of_budget(selection: Any, budget: int) -> str:
    """Why a selection holds fewer rows than the budget, from its reason codes (a run can end with nothing
    selected, e.g. a pool without replies, whose rows get no quality score): '' when the budget is met."""
    if len(selection) >= budget:
        return ""
    if not selection.table.num_rows:
        return ": no candidate rows left by the steps before"
    import json
    from collections import Counter

    from curate.codes import Reason, reason_text

    groups: Counter = Counter()
    for reason, detail in zip(selection.table["reason"].to_pylist(), selection.table["detail"].to_pylist(), strict=True):
        if reason == Reason.SELECTED.value:
            continue
        d = json.loads(detail) if detail else {}
        why = f" ({d['column']}: {d['failure'].replace('_', ' ')})" if reason == Reason.NO_SCORE.value and d.get(
            "failure") and d.get("column") else ""
        groups[reason_text(reason) + why] += 1
    if not groups:  # the rules, dedup or decontamination left fewer candidates than the budget, each one admitted
        return f": every candidate admitted (the steps before left {selection.table.num_rows:,})"
    return "; not admitted: " + ", ".join(f"{n:,} {why}" for why, n in groups.most_common())


def _producer(prov: dict[str, Any]) -> str:
    """Who wrote a score column, from its provenance: a default scorer (and the judge it imitates) or a judge."""
    if prov.get("kind") == "scorer":
        detail = prov.get("imitates_detail") or (prov["imitates"] if isinstance(prov.get("imitates"), dict) else {})
        judge = detail.get("judge") or prov.get("imitates") or "?"
        model = f" ({detail['model']})" if detail.get("model") else ""
        return f"trained scorer imitating the {judge} judge{model}"
    return f"{prov.get('kind') or 'step'} {prov.get('model') or ''}".strip()
