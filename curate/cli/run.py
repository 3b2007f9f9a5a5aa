"""The main job: `curate run` (the steps are curate/pipeline.py; printing is here)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

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
    console,
    mapping_arg,
    requests_answered_text,
    sample_path,
)
from curate.cli.normalizer_options import (
    eps_opt,
    min_frequency_opt,
    min_support_opt,
    normalizer_from_options,
    refuse_normalizer_options,
    stemmer_language_opt,
)
from curate.cli.run_steps import _done, _print_step, _short_of_budget, _start_step  # noqa: F401  (tests read _done, _short_of_budget)
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
    tags: bool = typer.Option(False, "--tags/--no-tags", help="Also tag intents with the LLM judge (needs a backend) "
                              "and normalise them, as curate tag does."),
    min_frequency: int | None = min_frequency_opt(),
    eps: float | None = eps_opt(),
    min_support: int | None = min_support_opt(),
    stemmer_language: str | None = stemmer_language_opt(),
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

    if dry_run and json_out:  # the dry run prints estimates, not a run's record
        raise typer.BadParameter("--json prints the record of a run; --dry-run sends nothing and makes none: give "
                                 "one of them", param_hint="'--json'")
    # with --json every refusal prints the record too (a run stopped before its first step): checks go inside
    with (_prose_on_stderr() if json_out else contextlib.nullcontext()), _record_printed(json_out, out, budget) as facts:
        src, read_as = _source(source), {"format": format, "mapping": mapping_arg(mapping)}
        budget = facts["budget"] = _checked_budget(budget, src, source, dry_run, max_cosine_similarity)
        scorers = _scorer_args(scorer)
        use_llm = backend is not None or base_url is not None
        if tags and not use_llm:
            raise typer.BadParameter("--tags needs an LLM: give --backend local|vllm|openai or --base-url")
        normalizer_options = (min_frequency, eps, min_support, stemmer_language)
        if not tags:  # no tags: nothing to normalise
            refuse_normalizer_options(*normalizer_options, "give --tags")
        # a language Snowball lacks is named before the load, and before any request is sent
        tag_normalizer = normalizer_from_options(*normalizer_options) if tags else None
        judge_only = [flag for flag, value in (
            ("--model", model), ("--max-cost", max_cost), ("--rps", rps), ("--rpm", rpm), ("--tpm", tpm),
            ("--concurrency", concurrency), ("--timeout", timeout), ("--max-retries", max_retries),
            ("--poll-interval", poll_interval), ("--api-key-env", api_key_env), ("--prompt-dir", prompt_dir or None))
            if value is not None]
        if judge_only and not use_llm:  # else the shipped scorers run and the judge the user named is never asked
            raise typer.BadParameter(f"{' and '.join(judge_only)}: options of the LLM judge; give --base-url URL or "
                                     "--backend vllm|openai|openai-batch (without them curate run scores with the "
                                     "shipped scorers)")
        if prompt_dir:  # a missing prompt folder: named (78) before the load, not when the score step builds its judges
            from curate.llm.prompts import search_dirs

            search_dirs(prompt_dir)
        engine_args = _engine_args(engine, address)

        def llm_backend():
            return _judge_backend(backend, base_url, model, max_cost=max_cost, workspace=out / "workspace",
                                  poll_s=poll_interval, concurrency=concurrency, rps=rps, rpm=rpm, tpm=tpm,
                                  timeout=timeout, max_retries=max_retries, api_key_env=api_key_env)

        if dry_run:
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
        with llm_backend() if use_llm else contextlib.nullcontext() as llm:
            result = run_pipeline(src, out=out, budget=budget, max_cosine_similarity=max_cosine_similarity, backend=llm,
                                  tag_backend=llm if tags else None, tag_normalizer=tag_normalizer, report=report,
                                  **engine_args,
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


def _checked_budget(budget: int | None, src: str, source: str, dry_run: bool, max_cosine_similarity: float) -> int | None:
    """The run's budget: the bundled sample's default where none is given (a dry run may go without), refused by the
    rule curate select and run_pipeline apply (check_budget, exit 78) before any step."""
    from curate.select.registry import check_params

    if budget is None and not dry_run:  # the sample's default on any pool: score (pay for) it all to keep 20 rows
        if Path(src) != sample_path():
            raise typer.BadParameter(f"required for {source}: the number of rows to select (e.g. --budget 6000); only "
                                     f"the bundled sample has a default ({DEITA.sample_budget})", param_hint="'--budget'")
        budget = DEITA.sample_budget
    if budget is not None:
        check_params("deita", {"budget": budget, "max_cosine_similarity": max_cosine_similarity})
    return budget


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
    """With --json, a failed run's record (the one the error carries, else one of no step: it failed or was refused
    before the first, an option's value or a usage check) on stdout before the error line; its ``exit_code`` is the
    one main() exits with (both :func:`curate.exit_codes.exit_code`). Yields ``{"budget": ...}``, which the command
    sets once it has checked the budget."""
    from curate.run_record import failed_run_record

    facts: dict[str, Any] = {"budget": budget}
    try:
        yield facts
    except BaseException as exc:
        if json_out and not isinstance(exc, SystemExit):
            _print_record(getattr(exc, "run_record", None) or failed_run_record(out, facts["budget"], exc))
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
