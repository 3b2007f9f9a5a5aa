"""InsTag commands: tag, tags."""

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
from curate.cli.normalizer_options import (
    eps_opt,
    min_frequency_opt,
    min_support_opt,
    normalizer_from_options,
    refuse_normalizer_options,
    stemmer_language_opt,
)
from curate.defaults import NORMALIZER, TAG
from curate.errors import CurateError, NotInWorkspaceError


@app.command("tag")
def tag_cmd(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    backend: str | None = _backend_opt(),
    base_url: str | None = _base_url_opt(),
    model: str | None = _model_opt(),
    prompt: str = typer.Option(TAG.prompt, help=f"Prompt name or path (default prompts/{TAG.prompt}.md)."),
    concurrency: int | None = _concurrency_opt(),
    rps: float | None = _rps_opt(),
    rpm: int | None = _rpm_opt(),
    tpm: int | None = _tpm_opt(),
    max_cost: float | None = _max_cost_opt(),
    api_key_env: str | None = _api_key_env_opt(),
    timeout: float | None = _timeout_opt(),
    max_retries: int | None = _max_retries_opt(),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="Normalise tags_raw into column tags afterwards."),
    min_frequency: int | None = min_frequency_opt(),
    eps: float | None = eps_opt(),
    min_support: int | None = min_support_opt(),
    stemmer_language: str | None = stemmer_language_opt(),
    retry_failed: bool = _retry_failed_opt(),
    poll_interval: float | None = _poll_opt(),
    dry_run: bool = _dry_run_opt(),
) -> None:
    """Tag every user turn with intent tags (InsTag); write tags_raw, tags_raw_failure, and tags. Cached.

    Rows the judge did not answer (a transient failure, or --max-cost reached) are stored as failures and make
    the command fail after the rest is stored (exit 75, 78 when the server refused the settings, 1 for --max-cost);
    a re-run sends only them. The failures are printed counted by code; no row tagged exits 1, or 78 when every
    reply stopped at the prompt's max_tokens. --dry-run sends and writes nothing."""
    from curate.cli.evol import sent_text
    from curate.cli.judge import (
        _has_a_value,
        _print_retried,
        print_estimates,
        print_failure_counts,
        prompt_line,
        raise_unanswered,
        transient_rows,
    )
    from curate.llm.base import format_usd
    from curate.run_record import applied
    from curate.session import Workspace
    from curate.tags import Tagger
    from curate.tags import normalize as normalize_tags

    if normalize:  # a language Snowball lacks is named before any request is sent
        norm = normalizer_from_options(min_frequency, eps, min_support, stemmer_language)
    else:
        refuse_normalizer_options(min_frequency, eps, min_support, stemmer_language, "--no-normalize runs none")
    ws = Workspace.open(workspace)
    with _judge_backend(backend, base_url, model, concurrency=concurrency, api_key_env=api_key_env, rpm=rpm,
                        tpm=tpm, max_cost=max_cost, workspace=ws, poll_s=poll_interval, rps=rps, timeout=timeout,
                        max_retries=max_retries) as judge_backend:
        step = Tagger(judge_backend, prompt=prompt)
        console.print(prompt_line(step), soft_wrap=True, highlight=False)
        if dry_run:  # as `curate score --dry-run`: the requests a run would send, counted and priced; no normalising
            from curate.llm.dryrun import estimate

            print_estimates([estimate(ws, step, retry_failed=retry_failed)])
            return
        retried = transient_rows(ws, step, None) if retry_failed else {}
        counters = {c: getattr(judge_backend, c) for c in ("requests_sent", "submitted_batches")
                    if isinstance(getattr(judge_backend, c, None), int)}
        result = applied(judge_backend, lambda: ws.apply(step, retry_failed=retry_failed))  # settings refused: 78
        spent = getattr(judge_backend, "spent_usd", 0.0)
        sent_over = sent_text({"backend": judge_backend.describe(),
                               **{f"backend_{c}": getattr(judge_backend, c) - n for c, n in counters.items()}})
    last = (result.provenance.get("runs") or [{}])[-1] if result.computed else {"requests": 0}  # no row: none asked
    cost = last.get("cost_usd", 0.0)
    console.print(f"tagged {result.rows - result.failed:,} of {result.rows:,} rows ({result.valued_now:,} now, "
                  f"{result.skipped:,} already done; "
                  f"{last.get('turns', 0):,} user turns; requests (each call and JSON re-ask once): "
                  f"{requests_text(last, sent_over)}); "
                  f"{result.failed:,} row(s) failed (see column tags_raw_failure); cost "
                  + ("unknown (the model's price is unknown)" if cost is None else format_usd(cost))
                  + stopped_run_text(last), soft_wrap=True, highlight=False)
    if past := last.get("turns_past_schema_bounds"):  # kept whole, and told: the schema asked for less
        from curate.tags.tagger import MAX_EXPLANATION_CHARS, MAX_TAG_CHARS, MAX_TAGS_PER_QUERY

        console.print(f"  {past:,} user turn(s) got replies past the schema's bounds ({MAX_TAGS_PER_QUERY} tags, "
                      f"{MAX_TAG_CHARS} characters a tag, {MAX_EXPLANATION_CHARS} an explanation; the server did not "
                      "enforce them): every tag kept", soft_wrap=True, highlight=False)
    print_failure_counts(ws.failures(step.column))  # the reasons, before the normaliser and any error naming them
    if retried:
        _print_retried(retried, result.provenance)
    if normalize and not any(_has_a_value(v) for v in ws.column(step.column)):
        console.print("  tags not normalised: no row has tags_raw to read")  # it ran on 0 tags and said nothing of it
    elif normalize:
        _print_steps(normalize_tags(ws, norm))
    raise_unanswered(ws.failures(step.column), max_cost, spent, done="tagged", values=ws.column(step.column),
                     backend=judge_backend, retry_failed=retry_failed)


def _print_steps(norm) -> None:
    """What each normalisation step did."""
    for s in norm.report:
        console.print(f"  {s.step}: {s.tags_in:,} -> {s.tags_out:,} tags {s.params}"
                      + (f" ({s.note})" if s.note else ""))


@app.command("tags")
def tags_cmd(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    column: str | None = typer.Option(None, help="Tag column to report on (default: the normalised tags: tags, or "
                                      "tags_instag where the pool has a field named tags)."),
    top: int = typer.Option(TAG.top, min=0, help="Rows of the frequency table."),
    seeds: int = typer.Option(TAG.coverage_seeds, min=1, help="Random selections to compare each selection against."),
    renormalize: bool = typer.Option(False, "--normalize", help="(Re)fit the normaliser on tags_raw first."),
    min_frequency: int | None = min_frequency_opt(),
    eps: float | None = eps_opt(),
    min_support: int | None = min_support_opt(),
    stemmer_language: str | None = stemmer_language_opt(),
) -> None:
    """Tag frequency table, tags per query, and each selection's tag coverage vs random selections."""
    from rich.table import Table

    from curate import tags as instag
    from curate.session import Workspace
    from curate.storage.pool import kept_rows_gone, out_of_date

    if not renormalize:  # they were ignored: the stored mapping was printed as it is
        refuse_normalizer_options(min_frequency, eps, min_support, stemmer_language, "give --normalize to refit it")
    ws = Workspace.open(workspace)
    from curate.storage.roles import role_candidates, role_column

    tagged = role_candidates(ws, "tags")  # the normaliser's columns
    if column is None:  # the rule every default follows (curate.storage.roles); --normalize may write the first
        column = "tags" if renormalize and not tagged else role_column(ws, "tags", "--column NAME")
    prov = ws.column_provenance(column) if ws.has_column(column) else {}
    if prov.get("kind") == "instag_tags" or prov.get("granularity") == "turn":  # e.g. tags_raw: the LLM's, per turn
        raise CurateError(f"{ws.path}: column {column!r} holds the judge's raw tags per turn, which the normaliser "
                          "reads; report on its normalised column (--column tags, made with --normalize)")
    if not ws.has_column(column) and not renormalize and tagged:  # said "tag the pool first" of a tagged pool
        raise NotInWorkspaceError(f"{ws.path}: no column {column!r}; the normalised tags are in "
                                  f"{', '.join(map(repr, tagged))} (--column NAME)")
    if not ws.has_column(column) and not renormalize:
        raise NotInWorkspaceError(f"{ws.path}: no column {column!r} yet: tag the pool first (curate tag {workspace} "
                                  f"--backend local, or --base-url URL --model NAME); have "
                                  f"{sorted(ws.columns) or 'no columns'}")
    if renormalize:
        norm = normalizer_from_options(min_frequency, eps, min_support, stemmer_language)
        _print_steps(instag.normalize(ws, norm, column=column))
    elif ws.artifact(NORMALIZER.mapping_artifact) is not None:  # what the stored mapping did (e.g. thresholds scaled to the pool)
        _print_steps(instag.Normalizer.from_workspace(ws))
    rows = ws.column(column)
    freq = instag.tag_frequency(rows)
    tagged_rows = instag.tagged_rows(rows)
    tagged, bare = len(tagged_rows), sum(1 for r in tagged_rows if not r)  # tagged: the denominator of tags per query too
    console.print(f"{column}: {len(freq):,} distinct tags; {tagged:,} of {len(rows):,} rows tagged"
                  + (f" ({bare:,} of them with no tag)" if bare else "")
                  + f"; {instag.tags_per_query(rows):.2f} tags per query")
    table = Table("tag", "rows", "share")
    for name, count in freq[:top]:
        table.add_row(name, f"{count:,}", f"{count / max(tagged, 1):.1%}")
    console.print(table)
    for name in ws.selections:
        if gone := kept_rows_gone(ws, name):  # one out-of-date selection stopped the report on the others
            console.print(f"selection {name}: {out_of_date(len(gone))}")
            continue
        rep = instag.coverage_report(ws, name, tags_column=column, seeds=seeds)
        console.print(f"selection {name} ({rep['rows']:,} rows): coverage {rep['coverage']:.3f} vs random "
                      f"{rep['random_coverage_mean']:.3f} ± {rep['random_coverage_std']:.3f} ({seeds} seeds of the "
                      f"{rep['random_pool_rows']:,} tagged rows); "
                      f"{rep['tags_per_query']:.2f} tags per query")
