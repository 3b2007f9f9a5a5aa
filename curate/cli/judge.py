"""LLM judges and trained scorers as columns: `curate score`; the local judge server."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from curate.cli.common import (
    REPEATED_WORDS,
    _api_key_env_opt,
    _backend_opt,
    _base_url_opt,
    _concurrency_opt,
    _dry_run_opt,
    _judge_backend,
    _max_cost_opt,
    _max_retries_opt,
    _min_digit_mass_opt,
    _model_opt,
    _poll_opt,
    _retry_failed_opt,
    _rpm_opt,
    _rps_opt,
    _timeout_opt,
    _tpm_opt,
    app,
    console,
    requests_text,
    stopped_run_text,
)
from curate.codes import FailureCode, clip, unknown_cost, unreached_rows
from curate.errors import ConfigError, CurateError, OptionError


@app.command()
def score(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    judge: str | None = typer.Option(None, "--judge", "-j", help="Built-in judge (complexity, quality, alpagasus), "
                                     "another prompt of prompts/ by name (e.g. answer), a prompt name found in "
                                     "--prompt-dir, or a prompt file path."),
    scorer: str | None = typer.Option(None, "--scorer", help="Instead of an LLM judge: a saved scorer folder, "
                                      "'default' for the shipped complexity and quality scorers (offline), or one "
                                      "shipped scorer by name (quality_ce, complexity_ridge, ...)."),
    base_url: str | None = _base_url_opt(),
    model: str | None = _model_opt(),
    backend: str | None = _backend_opt(),
    concurrency: int | None = _concurrency_opt(),
    rps: float | None = _rps_opt(),
    rpm: int | None = _rpm_opt(),
    tpm: int | None = _tpm_opt(),
    max_cost: float | None = _max_cost_opt(),
    api_key_env: str | None = _api_key_env_opt(),
    timeout: float | None = _timeout_opt(),
    max_retries: int | None = _max_retries_opt(),
    prompt_dir: list[Path] = typer.Option([], "--prompt-dir", help="Folder of prompt files that override built-ins."),
    min_digit_mass: float | None = _min_digit_mass_opt(),
    column: str | None = typer.Option(None, "--column", help="Column name (default: the prompt's or scorer's name)."),
    device: str | None = typer.Option(None, "--device", help="--scorer of the cross-encoder or small-lm kind: where "
                                      "it scores: cpu (default), cuda, cuda:1, or auto (CUDA when torch sees one), "
                                      "as train-scorer's --device."),
    response_column: str | None = typer.Option(None, "--response-column", help="Judge the replies in this derived "
                                               "column (a model's own answers from --judge answer) instead of the "
                                               "pool's; the column defaults to <it>_<judge>, e.g. seed_answer_quality "
                                               "(with --scorer default: the quality scorer only)."),
    limit: int | None = typer.Option(None, "--limit", help="Score only the first N rows of the pool."),
    retry_failed: bool = _retry_failed_opt(),
    poll_interval: float | None = _poll_opt(),
    dry_run: bool = _dry_run_opt(),
) -> None:
    """Score rows with an LLM judge or a trained scorer (--scorer); writes <column>, <column>_failure and provenance.

    Rows already scored under the same judge, model and parameters are reused; judge calls are cached and
    resumable, so a killed run re-sends no finished request.
    """
    if (judge is None) == (scorer is None):
        raise typer.BadParameter("give exactly one of --judge NAME|PATH and --scorer DIR|default")
    if limit is not None and limit < 1:
        raise typer.BadParameter(f"must be >= 1 (got {limit}); --limit N scores the first N rows",
                                 param_hint="'--limit'")
    llm_only = [flag for flag, given in (
        ("--base-url", base_url is not None), ("--model", model is not None), ("--backend", backend is not None),
        ("--max-cost", max_cost is not None), ("--rps", rps is not None), ("--rpm", rpm is not None),
        ("--tpm", tpm is not None), ("--prompt-dir", bool(prompt_dir)), ("--concurrency", concurrency is not None),
        ("--timeout", timeout is not None), ("--max-retries", max_retries is not None),
        ("--min-digit-mass", min_digit_mass is not None)) if given]
    if judge is not None and device is not None:  # an LLM judge runs where its backend serves it
        raise typer.BadParameter("an option of a fine-tuned scorer (--scorer); an LLM judge runs where its backend "
                                 "serves it", param_hint="'--device'")
    if scorer is not None and llm_only:  # a trained scorer asks no LLM: they were ignored in silence
        raise typer.BadParameter(f"{', '.join(llm_only)}: options of an LLM judge (--judge); a trained scorer "
                                 "(--scorer) runs offline")
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    ids = ws.ids[:limit] if limit is not None else None
    if scorer is not None:
        from curate.scorers.labels_read import labels_changed

        if dry_run:
            console.print("dry run: a trained scorer sends no LLM requests and costs nothing")
            return
        steps = _scorers(scorer, column if response_column is None else None)  # replies: quality alone, one column
        if response_column is not None and len(steps) > 1:  # default: the quality scorer reads replies, not complexity
            steps = [s for s in steps if "response" in s.reads]
        on_device(steps, device)
        for step in steps:  # as ws.score(scorer, column=..., response_column=...) scores
            if changed := labels_changed(ws, step.metadata):
                console.print(f"note: scorer {step.column!r}: {changed}", soft_wrap=True, highlight=False)
            result = ws.score(step, column=column, response_column=response_column, ids=ids, retry_failed=retry_failed)
            raise_unanswered(_print_result(ws, result, ids), None, 0.0, values=ws.column(result.column, ids))
        return
    from curate.llm.judges import Judge
    from curate.run_record import applied

    the_judge = Judge(judge, column=column, prompt_dirs=[str(d) for d in prompt_dir], min_digit_mass=min_digit_mass,
                      response_column=response_column)
    backend_opened = _judge_backend(backend, base_url, model, concurrency=concurrency, api_key_env=api_key_env,
                                    rpm=rpm, tpm=tpm, max_cost=max_cost, timeout=timeout, max_retries=max_retries,
                                    rps=rps, workspace=ws, poll_s=poll_interval)  # its options refused before any line
    console.print(prompt_line(the_judge, ws), soft_wrap=True, highlight=False)  # which file judged: an override or not
    with backend_opened as llm:
        step = the_judge.with_backend(llm)
        if dry_run:
            from curate.llm.dryrun import estimate

            print_estimates([estimate(ws, step, ids, retry_failed=retry_failed)])
            return
        retried = transient_rows(ws, step, ids) if retry_failed else {}
        result = applied(llm, lambda: ws.apply(step, ids, retry_failed=retry_failed))  # settings refused: 78
        spent = getattr(llm, "spent_usd", 0.0)
    failures = _print_result(ws, result, ids)
    if retried:
        _print_retried(retried, result.provenance)
    raise_unanswered(failures, max_cost, spent, values=ws.column(result.column, ids), backend=llm,
                     retry_failed=retry_failed)


def prompt_line(step: Any, ws: Any = None) -> str:
    """The prompt file an LLM step (a judge, the tagger) sends: a --prompt-dir or $CURATE_PROMPTS file of the same
    name takes the built-in's place, and nothing else said which one ran. With ``ws``, whether the prompt changed
    since the step's column was scored (its rows are then scored again: said only as "other settings" before)."""
    line = f"{step.column}: prompt {step.prompt.path}"
    if ws is None or not ws.has_column(step.column):
        return line
    was = ws.column_provenance(step.column).get("prompt_fingerprint")
    if was and was != step.prompt.fingerprint:
        line += (f" (changed since the column was scored: prompt fingerprint {was} -> {step.prompt.fingerprint}; its "
                 "rows are scored again, requests whose text is unchanged answered by the cache)")
    return line


def raise_unanswered(failures: list[list[Any]], max_cost: float | None, spent: float, done: str = "scored",
                     values: list[Any] | None = None, backend: Any = None, retry_failed: bool = True) -> None:
    """After the answered rows are stored: one error for rows max_cost left unsent or the judge never answered
    (the server was down or overloaded), which a re-run sends again; they must not pass as finished. Its class
    says what a scheduler does (curate.exit_codes): ConfigError when ``backend`` says its settings were refused
    (78), RetryLaterError for rows the judge never answered (75), a plain CurateError for max_cost (1) and for
    unanswered rows under ``retry_failed=False`` (--keep-failed: the same command never sends them again, so
    "retry later" would repeat forever)."""
    from curate.errors import RetryLaterError
    from curate.llm.backends import format_usd
    from curate.run_record import backend_error

    stopped = backend_error(backend)

    unsent = sum(any(f.code is FailureCode.BUDGET for f in fails) for fails in failures)
    if unsent:
        raise CurateError(f"{unsent:,} rows not sent: max_cost {format_usd(max_cost or 0.0)} reached (spent "
                          f"{format_usd(spent)}); re-run with a larger --max-cost to send them (answered requests "
                          f"come from the cache)")
    unreached = unreached_rows(failures)
    if unreached:
        later = RetryLaterError if retry_failed else CurateError  # --keep-failed never sends them again
        raise (stopped or later)(f"{len(unreached):,} rows not {done}: the judge did not answer "
                                 f"({unreached[0].message}); re-run the command (without --keep-failed) to send them "
                                 "again (answered requests come from the cache)")
    if values and not any(_has_a_value(v) for v in values):  # stored as failures; a script must not read success
        codes = {f.code for fails in failures for f in fails}
        # every reply cut off at max_tokens: the prompt's setting, not the server or the rows; the same run fails the
        # same way (from the cache, at temperature 0) until it is raised, so 78 (settings), not 75 (retry later)
        cut = codes == {FailureCode.TRUNCATED}
        fix = ("; every reply stopped at max_tokens: raise max_tokens in the prompt's params (a copy given with "
               "--prompt) and re-run") if cut else ""
        raise (stopped or (ConfigError if cut else CurateError))(
            f"no row {done}: none of the {len(values):,} rows asked for got a value ({_failure_codes_text(failures)}; "
            f"the commonest message of each code above){fix}")


def _has_a_value(value: Any) -> bool:
    """A row's stored value holds something: a row value, or a value for at least one turn (a row whose last turn
    has no reply still has its other turns' scores)."""
    return value is not None and (not isinstance(value, list) or any(v is not None for v in value))


def transient_rows(ws, step, ids: list[str] | None) -> Counter:
    """Rows ``ws.apply(step, ids, retry_failed=True)`` runs again because their last failure was transient,
    counted by failure code (a row with several codes counts once, under its first transient one)."""
    from curate.codes import TRANSIENT_FAILURES
    from curate.storage.apply import applied_fingerprint, rows_needing_work

    asked = ws.ids if ids is None else ids
    fp = applied_fingerprint(ws, step)
    again = set(rows_needing_work(ws, step, asked, retry_failed=True, fingerprint=fp))
    again -= set(rows_needing_work(ws, step, asked, fingerprint=fp))
    if not again:
        return Counter()
    picked = [rid for rid in asked if rid in again]
    return Counter(next(f.code.value for f in fails if f.code in TRANSIENT_FAILURES)
                   for fails in ws.failures(step.column, picked))


def _print_retried(retried: Counter, prov: dict[str, Any]) -> None:
    """What --retry-failed did: rows whose last failure was transient, and the requests re-sent for them."""
    from curate.storage.run_records import requests_sent

    last = (prov.get("runs") or [{}])[-1]
    resent = requests_sent(last) or 0
    codes = ", ".join(f"{code} {n:,}" for code, n in retried.most_common())
    console.print(f"retry-failed: {sum(retried.values()):,} rows had a transient failure ({codes}); re-sent "
                  f"{resent:,} requests (their other turns came from the cache); rows already scored or failed "
                  f"for a permanent reason were not sent", soft_wrap=True, highlight=False)


def print_estimates(estimates: list[Any]) -> None:
    """Print dry-run estimates (``curate.llm.dryrun.DryRunEstimate``), one block each, and a total for several."""
    from curate.llm.backends import format_usd
    from curate.llm.dryrun import output_tokens_text, total
    from curate.llm.tokens import LOCAL_KINDS

    def usd(value: float | None, unknown: str) -> str:
        return f"unknown ({unknown})" if value is None else format_usd(value)

    said: set[str] = set()  # a note that holds for every step is printed once
    for e in estimates:
        console.print(f"[bold]dry run[/] {escape(e.column)} via {escape(e.backend)} {escape(e.model)}: nothing sent",
                      highlight=False, markup=True)
        console.print(f"  rows: {e.rows:,} ({e.rows_to_run:,} to run, {e.rows - e.rows_to_run:,} already done)\n"
                      f"  requests: {e.requests:,} ({e.cached:,} answered by the on-disk cache, {e.repeated:,} "
                      f"{REPEATED_WORDS}, "
                      + (f"{e.in_open_batches:,} already in open batches, " if e.in_open_batches else "")
                      + f"{e.to_send:,} to send)\n"
                      f"  prompt tokens: {e.prompt_tokens:,} ({e.tokenizer})\n"
                      f"  output tokens: {e.output_tokens_text()}\n"
                      + (f"  cost: {usd(e.usd_online, f'no price known for {e.model}')} (a local model)"
                         if e.backend in LOCAL_KINDS
                         else f"  cost online: {usd(e.usd_online, f'no price known for {e.model}')}; with the batch "
                         f"API: {usd(e.usd_batch, f'no batch price known for {e.model}')}"),
                      soft_wrap=True, highlight=False)
        for note in (n for n in e.notes if n not in said):
            console.print(f"  note: {note}", highlight=False)
            said.add(note)
    if len(estimates) > 1:
        t = total(estimates)
        online = "unknown" if t["usd_online"] is None else format_usd(t["usd_online"])
        batch = "unknown" if t["usd_batch"] is None else format_usd(t["usd_batch"])
        cost = (f"{online} (local models)" if all(e.backend in LOCAL_KINDS for e in estimates)
                else f"{online} online, {batch} batch")
        outputs = output_tokens_text(t["output_tokens"], t["output_tokens_assumed"], t["to_send"])
        console.print(f"[bold]total[/]: {t['to_send']:,} requests to send, {t['prompt_tokens']:,} prompt tokens, "
                      f"output tokens {escape(outputs)}; {cost}", highlight=False, markup=True)


def _scorers(spec: str, column: str | None) -> list[Any]:
    """The trained scorers ``--scorer`` names: ``default`` (complexity and quality) or a saved folder; ``column``
    (``--column``) is refused for the two defaults, which write two columns."""
    from curate.scorers import Scorer, load_default

    if spec != "default":
        return [Scorer.load(spec)]  # ws.score names its column
    if column:
        raise OptionError("--column names one column; with --scorer default both complexity and quality are written: "
                          "--scorer complexity --column NAME (or quality) writes one under another name")
    return [load_default(name) for name in ("complexity", "quality")]


def on_device(steps: list[Any], device: str | None) -> None:
    """``--device``: set on every fine-tuned scorer of ``steps`` (refused when none of them is one: a ridge scorer's
    MiniLM features are computed on the CPU, and the option would be dropped in silence)."""
    from curate.hardware import resolve_device
    from curate.scorers.finetuned import CrossEncoderScorer  # and its small-lm kind

    if device is None:
        return
    tunable = [s for s in steps if isinstance(s, CrossEncoderScorer)]
    if not tunable:
        raise OptionError(f"--device {device}: only a cross-encoder or small-lm scorer runs on a device; "
                          f"{', '.join(repr(s.column) for s in steps)} is a ridge scorer (MiniLM features on the CPU)")
    resolve_device(None if device == "auto" else device)  # no such device, or none here: refused before any row
    for step in tunable:
        step.device = device


def _print_result(ws, result, ids: list[str] | None) -> list[list[Any]]:
    """One summary line of an ApplyResult (+ the run's tokens and cost for a judge), then the commonest
    failures; returns the failures of the rows asked for."""
    line = f"{result.column}: {result.counts_text()}"
    prov = result.provenance
    if result.computed and prov.get("kind") == "judge":
        from curate.llm.backends import format_usd

        cost = prov.get("cost_usd")
        cost_text = unknown_cost([prov.get("model")]) if cost is None else f"cost {format_usd(cost)}"
        tokens = prov.get("tokens") or {}
        line += (f"; {requests_text(prov)}; tokens {tokens.get('prompt', 0):,} in / "
                 f"{tokens.get('completion', 0):,} out; {cost_text}{stopped_run_text(prov)}")
    if result.computed and (cached := cache_use_text(prov)):
        line += f"; {cached}"
    console.print(f"{line}; {result.seconds}s", soft_wrap=True, highlight=False)
    if took_over := result.takeover_text():
        console.print(f"  [yellow]{escape(took_over)}[/]", soft_wrap=True, highlight=False, markup=True)
    if prov.get("kind") == "judge" and len(prov.get("runs") or []) > 1:
        console.print(f"  {usage_total_line(prov)}", soft_wrap=True, highlight=False)
    failures = ws.failures(result.column, ids)
    print_failure_counts(failures)
    return failures


def print_failure_counts(failures: list[list[Any]]) -> None:
    """One line per failure code of the stored failures, commonest first, each with its most common message:
    ``12 x truncated: the reply stopped at max_tokens (12) ...``."""
    by_code: dict[str, Counter] = {}
    for f in (f for fails in failures for f in fails):  # every code, each with its most common message
        by_code.setdefault(f.code.value, Counter())[clip(f.message, 120)] += 1
    for code, messages in sorted(by_code.items(), key=lambda item: -sum(item[1].values())):
        (message, _), others = messages.most_common(1)[0], len(messages) - 1
        more = f"; and {others} other message{'s' if others > 1 else ''}" if others else ""
        console.print(f"  [yellow]{sum(messages.values())} x[/] {code}: {escape(message)}{more}", soft_wrap=True,
                      highlight=False, markup=True)


def _failure_codes_text(failures: list[list[Any]]) -> str:
    """``12 x truncated, 1 x invalid_output``: the stored failures counted by code, commonest first."""
    counts = Counter(f.code.value for fails in failures for f in fails)
    return ", ".join(f"{n:,} x {code}" for code, n in counts.most_common())


def cache_use_text(prov: dict[str, Any]) -> str:
    """What a scorer's last run took from the workspace's caches: a re-run after a kill computes again only what the
    killed run did not keep, though every row it runs on counts as computed ('' for a run without the counts)."""
    if "texts_encoded" in prov:
        return (f"{prov['texts_encoded']:,} distinct texts encoded, {prov.get('texts_from_embedding_cache', 0):,} from "
                "the embedding cache")
    if "turns_predicted" in prov:
        repeats = prov.get("turns_repeating_a_row_of_the_pass")
        return (f"{prov['turns_predicted']:,} turns scored by the model, {prov.get('turns_from_prediction_cache', 0):,}"
                " from its prediction cache" + (f", {repeats:,} repeating a turn scored in the pass" if repeats else ""))
    return ""


def usage_total_line(prov: dict[str, Any]) -> str:
    """Tokens and USD summed over every run that paid into a judge or tagger column (its provenance ``runs``);
    a run recorded without its tokens (a tagger column written before they were) makes them unknown."""
    from curate.llm.backends import format_usd
    from curate.storage.run_records import column_runs, fold_runs, run_count

    runs = column_runs(prov)
    total = fold_runs(None, runs)  # a sum one run does not know is None
    tokens = (f"tokens {total['tokens'].get('prompt', 0):,} in / {total['tokens'].get('completion', 0):,} out"
              if total["tokens"] is not None else "tokens unknown")
    cost = total["cost_usd"]
    unpriced = [prov.get("model")] if runs[-1].get("cost_usd") is None else []  # else an earlier run's
    return (f"all {run_count(runs)} runs of this column: {tokens}; "
            f"{unknown_cost(unpriced) if cost is None else 'cost ' + format_usd(cost)}")


@app.command("serve-local")
def serve_local(
    port: int | None = typer.Option(None, help="Port on 127.0.0.1 (default: a free one)."),
) -> None:
    """Serve SmolLM2-135M-Instruct with vLLM on 127.0.0.1 (OpenAI-compatible) until Ctrl-C or SIGTERM."""
    import signal
    import time

    from curate.llm.local import LocalServer, announce, withdraw

    # SIGTERM (and SIGINT, even where a parent shell ignored it) unwind the `with`, which stops the server by PID
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with LocalServer(port=port) as server:
        announce(server)  # --backend local in other commands reuses this server while it runs
        console.print(f"serving {server.model} at {server.base_url} (pid {server.pid}); Ctrl-C stops it")
        console.print("  curate score WS --judge quality --backend local   (reuses this server)")
        console.print(f"  curate score WS --judge quality --base-url {server.base_url} --model {server.model}")
        try:
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            withdraw(server)
