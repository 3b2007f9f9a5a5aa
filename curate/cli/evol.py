"""`curate evol`: Evol-Instruct / Evol-Quality labels."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.cli.common import (
    _api_key_env_opt,
    _backend_opt,
    _base_url_opt,
    _concurrency_opt,
    _dry_run_opt,
    _judge_backend,
    _max_cost_opt,
    _max_retries_opt,
    _model_opt,
    _poll_opt,
    _rpm_opt,
    _rps_opt,
    _timeout_opt,
    _tpm_opt,
    answered_text,
    app,
    backend_kind,
    console,
    err_console,
)
from curate.defaults import EVOL, JUDGE


@app.command()
def evol(
    workspace: Path = typer.Argument(..., help="Workspace directory (its pool gives the seeds)."),
    kind: str = typer.Option(EVOL.kind, "--kind", help="complexity: evolve instructions (Evol-Instruct); "
                             "quality: rewrite responses (Evol-Quality)."),
    seeds: int = typer.Option(EVOL.seeds, "--seeds", help="Seed rows: a seeded random sample of the pool."),
    steps: int = typer.Option(EVOL.steps, "--steps", help="Evolution steps per seed (scores run 1..steps+1)."),
    seed: int = typer.Option(EVOL.seed, "--seed", help="Seed for the sample, the operation choice and the shuffles."),
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
    poll_interval: float | None = _poll_opt(),
    dry_run: bool = _dry_run_opt(),
    prompt_dir: list[Path] = typer.Option([], "--prompt-dir", help="Folder with evol/<name>.md prompt overrides."),
    rewrite_max_tokens: int | None = typer.Option(None, "--rewrite-max-tokens",
                                                  help="Override max_tokens of the rewrite prompts."),
    rank_max_tokens: int | None = typer.Option(None, "--rank-max-tokens", help="Override max_tokens of the rank prompt."),
    name: str | None = typer.Option(None, "--name", help="Label set name (default evol_<kind>); read it with ws.labels(NAME)."),
    retry_failed: bool = typer.Option(JUDGE.retry_failed, "--retry-failed/--keep-failed", help="Send again the "
                                      "requests the label set's last run left unanswered for a transient reason (429, "
                                      "5xx, timeout, max_cost reached); never those failed for a permanent one (HTTP "
                                      "4xx, context too long, refused, truncated...). On by default; --keep-failed "
                                      "sends neither again."),
) -> None:
    """Evol labels: evolve N seed rows M times, rank-and-score each variant set, store (text, score) labels."""
    from curate.errors import CurateError, NoLabelsError
    from curate.evol import label_set_name, run_evol, sample_seeds, save_labels
    from curate.evol.labels import earlier, labels_lock, raise_no_labels, raise_unfinished
    from curate.llm.local import curate_home
    from curate.run_record import applied
    from curate.session import Workspace

    for flag, value in (("--rewrite-max-tokens", rewrite_max_tokens), ("--rank-max-tokens", rank_max_tokens)):
        if value is not None and value < 1:  # 0 was read as "not given"; a negative one reached the server
            raise typer.BadParameter(f"must be >= 1 (got {value}): the most tokens a reply may have", param_hint=f"'{flag}'")
    ws = Workspace.open(workspace)
    rows = sample_seeds(ws, seeds, kind=kind, seed=seed)
    options = dict(kind=kind, steps=steps, seed=seed, cache_path=ws.cache_dir, progress=True, retry_failed=retry_failed,
                   prompt_dirs=[str(d) for d in prompt_dir] or None,
                   rewrite_params={"max_tokens": rewrite_max_tokens} if rewrite_max_tokens is not None else None,
                   rank_params={"max_tokens": rank_max_tokens} if rank_max_tokens is not None else None)
    label_set = name or label_set_name(kind)
    if dry_run:  # nothing sent, nothing stored: no lock on the label set
        from curate.evol.dryrun import estimate_evol

        options.pop("progress")
        with _judge_backend(backend, base_url, model, concurrency=concurrency, api_key_env=api_key_env, rpm=rpm,
                            tpm=tpm, max_cost=max_cost, workspace=ws, rps=rps, timeout=timeout,
                            max_retries=max_retries, poll_s=poll_interval) as llm:
            print_evol_estimate(estimate_evol(rows, llm, **earlier(ws, label_set), **options))
        return
    with labels_lock(ws, label_set), _judge_backend(backend, base_url, model, concurrency=concurrency,
                                                    api_key_env=api_key_env, rpm=rpm, tpm=tpm, max_cost=max_cost,
                                                    workspace=ws, rps=rps, timeout=timeout,
                                                    max_retries=max_retries, poll_s=poll_interval) as llm:
        result = run_evol(rows, llm, **earlier(ws, label_set), **options)  # read under the lock
        path = save_labels(ws, label_set, result)
    print_run_summary(result.provenance)
    console.print(f"wrote {len(result.labels):,} labels to label set {label_set!r} ({path})")
    try:  # the server refused the settings (78) or was not there (75): the error says so by its class
        applied(llm, lambda: (raise_unfinished(result), raise_no_labels(result)))
    except CurateError as exc:
        no_labels = exc if isinstance(exc, NoLabelsError) else exc.__cause__
        if isinstance(no_labels, NoLabelsError) and no_labels.calls_failed and backend_kind(backend, base_url) in (
                "local", "vllm-batch"):
            err_console.print(f"the local server's logs: {curate_home() / 'logs'}")  # where to look: it answered nothing
        raise


def print_run_summary(p: dict) -> None:
    """Requests, tokens, eliminated share by reason and the labels' spread of scores (a warning when they are nearly
    constant) of an Evol run's provenance."""
    from curate.evol.provenance import label_spread_text
    from curate.llm.base import format_usd

    sent = sent_text(p)
    cost = "unknown (a model's price is unknown)" if p["cost_usd"] is None else format_usd(p["cost_usd"])
    console.print(f"evol {p['kind']}: {p['seeds']} seeds x {p['steps']} steps; "
                  f"requests {p['requests']:,} new{sent}, {answered_text(p['cached'], p.get('repeated') or 0)}"
                  + (f", {p['failed_before']:,} failed before and not sent again (--retry-failed sends only "
                     "transient failures again; to send every one again, e.g. after raising the server's context, "
                     "remove the label set's failures.jsonl)" if p.get("failed_before") else "")
                  + (f", {p['not_sent_max_cost']:,} not sent (max_cost)" if p.get("not_sent_max_cost") else "")
                  + (f", {p['paid_by_stopped_run']:,} of the new paid by a run that was stopped"
                     if p.get("paid_by_stopped_run") else "")
                  + f"; tokens {p['prompt_tokens']:,} prompt + "
                  f"{p['completion_tokens']:,} completion; cost {cost}")
    rewrites = p["rewrites"] or 1
    console.print(f"eliminated {p['eliminated']}/{p['rewrites']} rewrites ({p['eliminated'] / rewrites:.0%})")
    width = max((len(r) for r in p["eliminated_by_reason"]), default=0)  # repeated_tail: 13 characters
    for reason, count in p["eliminated_by_reason"].items():
        console.print(f"  {reason:<{width}} {count:>5}  {count / rewrites:6.1%}")
    console.print(f"variant sets scored {p['sets_scored']}/{p['seeds']}; rank failures {p['rank_failures']}"
                  + (f" {p['rank_failures_by_reason']}" if p["rank_failures"] else ""))
    console.print(label_spread_text(p) + (f"; {p['tied_sets']} of {p['sets_scored']} variant sets got one score for "
                                          "every variant" if p.get("tied_sets") else ""), highlight=False)
    if p.get("label_warning"):
        err_console.print(f"warning: {p['label_warning']}", highlight=False)


def sent_text(p: dict) -> str:
    """What the backend sent for a run's new requests (its counters: retries and re-asks included), in its own unit:
    HTTP requests, lines of Batch API batches, or lines through vLLM's batch runner."""
    if "backend_requests_sent" not in p:
        return ""
    sent, kind = p["backend_requests_sent"], (p.get("backend") or {}).get("backend")
    if kind == "openai-batch":
        batches = p.get("backend_submitted_batches")
        return f" ({sent:,} sent as batch lines" + (f" in {batches:,} batches" if batches is not None else "") + ")"
    if kind == "vllm-batch":
        return f" ({sent:,} sent through vLLM's batch runner)"
    return f" ({sent:,} sent over HTTP)"


def print_evol_estimate(e) -> None:
    """Print an Evol dry run (``curate.evol.dryrun.EvolEstimate``): requests at most, tokens, cost, batches."""
    from curate.llm.backends import format_usd
    from curate.llm.tokens import LOCAL_KINDS

    def usd(value: float | None, unknown: str) -> str:
        return f"unknown ({unknown})" if value is None else format_usd(value)

    from rich.markup import escape

    console.print(f"[bold]dry run[/] evol {e.kind} via {escape(e.backend)} {escape(e.model)}: nothing sent",
                  highlight=False, markup=True)
    console.print(f"  requests: at most {e.requests:,}: {e.rewrites:,} rewrites ({e.seeds:,} seeds x {e.steps} steps; "
                  f"{e.rewrites_cached:,} not to send: answered by the cache, failed before or in an open batch), "
                  f"{e.ranks:,} rank calls, {e.reasks:,} re-asks\n  prompt tokens: at most {e.prompt_tokens:,} ({e.tokenizer})\n"
                  f"  output tokens: at most {e.output_tokens:,} (max_tokens of each request)\n"
                  + (f"  cost: at most {usd(e.usd_online, f'no price known for {e.model}')} (a local model)"
                     if e.backend in LOCAL_KINDS
                     else f"  cost online: at most {usd(e.usd_online, f'no price known for {e.model}')}; with the "
                     f"batch API: at most {usd(e.usd_batch, f'no batch price known for {e.model}')}")
                  + (f"\n  {'batches' if e.backend == 'openai-batch' else 'batch runner launches'}: at most "
                     f"{e.batches:,} (one per step, one for the ranks, one per re-ask round)"
                     if e.batches is not None else ""), soft_wrap=True, highlight=False)
    for note in e.notes:
        console.print(f"  note: {note}", highlight=False)
