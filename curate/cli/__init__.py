"""The `curate` command line: mirrors the Python API, one command per step."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from curate.errors import CurateError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Curate instruction-tuning data with LLM judges, tags and diverse selection.")
console = Console()
err_console = Console(stderr=True)

SAMPLE = Path(__file__).parents[1] / "data" / "sample.jsonl"


def sample_path() -> Path:
    """The small pool that ships with the package (hand-written, mixed shapes)."""
    return SAMPLE


def _source(source: str) -> str:
    return str(sample_path()) if source == "sample" else source


# The LLM backend options shared by score, evol, tag and run (one definition each; see _judge_backend).
def _backend_opt():
    return typer.Option(None, "--backend", help="openai | vllm | local (default: openai with --base-url, "
                        "else local = SmolLM2 on an embedded vLLM server, started on the first cache miss).")


def _base_url_opt():
    return typer.Option(None, "--base-url", help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1.")


def _model_opt():
    return typer.Option(None, "--model", "-m", help="Model name (openai) or model folder (vllm).")


def _concurrency_opt():
    return typer.Option(16, help="Requests in flight at once.")


def _rpm_opt():
    return typer.Option(None, "--rpm", help="Requests-per-minute limit.")


def _tpm_opt():
    return typer.Option(None, "--tpm", help="Tokens-per-minute limit (estimated before sending).")


def _max_cost_opt():
    return typer.Option(None, "--max-cost", help="Hard cap in USD: stop before exceeding it.")


def _api_key_env_opt():
    return typer.Option("OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the API key.")


@app.command()
def load(
    source: str = typer.Argument(..., help="JSONL/JSON/Parquet/CSV file, datasets folder, Hub name, or 'sample'."),
    workspace: Path = typer.Option(..., "--workspace", "-w", help="Workspace directory (created if new)."),
    format: str = typer.Option("auto", help="auto|alpaca|sharegpt|messages|prompt_completion|qa"),
    on_error: str = typer.Option("raise", "--on-error", help="raise: stop at the first bad record; "
                                 "skip: leave it out and list it in WORKSPACE/rejects.jsonl"),
    mapping: str | None = typer.Option(None, help='JSON field mapping, e.g. \'{"instruction": "query"}\''),
) -> None:
    """Load a pool into a workspace."""
    from curate import pools
    from curate.session import Workspace

    # read first: a missing or broken source creates no workspace folder
    pool = pools.read(_source(source), format=format, on_error=on_error, mapping=json.loads(mapping) if mapping else None)
    summary = Workspace(workspace).load(pool)
    fmts = ", ".join(f"{k} {v:,}" for k, v in summary["formats"].items())
    console.print(f"loaded {summary['rows_added']:,} rows from {source} ({fmts}); "
                  f"{summary['already_present']:,} already present")
    if summary["empty_responses"]:
        console.print(f"[yellow]{summary['empty_responses']:,} row(s) have an empty response[/]")
    if summary.get("instruction_only"):
        console.print(f"{summary['instruction_only']:,} instruction-only row(s) (no response)")
    if summary["rejects"]:
        console.print(f"[yellow]{summary['rejects']} record(s) left out; reasons in {summary['rejects_file']}[/]")


@app.command()
def info(workspace: Path = typer.Argument(..., help="Workspace directory.")) -> None:
    """Show rows, formats, sources, and derived columns with their provenance."""
    from curate.report.views import print_info
    from curate.session import Workspace

    print_info(Workspace.open(workspace), console)


@app.command()
def export(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    out: Path = typer.Option(..., "--out", "-o", help=".jsonl, .parquet, or a folder (datasets save_to_disk)."),
    selection: str | None = typer.Option(None, help="Export only this selection's kept rows."),
) -> None:
    """Export the pool (or a selection) with its derived columns."""
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    path = ws.export(out, selection=selection)
    n = len(ws.selection(selection)) if selection else len(ws)
    console.print(f"wrote {n:,} rows to {path}")


@app.command()
def run(
    source: str = typer.Argument("sample", help="Pool to curate ('sample' = the bundled sample)."),
    out: Path = typer.Option(Path("curate-run"), "--out", "-o", help="Output directory (workspace, exports, report)."),
    budget: int = typer.Option(20, help="Rows to select."),
    max_cosine_similarity: float = typer.Option(0.9, "--max-cosine-similarity",
                                                help="DEITA admission: a row joins only if its cosine similarity "
                                                     "to every admitted row is at most this."),
    backend: str | None = typer.Option(None, "--backend", help="Score with LLM judges: openai | vllm | local. "
                                       "Default: the shipped scorers (offline, no LLM calls)."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (implies --backend openai)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Judge model name (openai) or folder (vllm)."),
    tags: bool = typer.Option(False, "--tags/--no-tags", help="Also tag intents with the LLM judge (needs a backend)."),
    max_cost: float | None = typer.Option(None, "--max-cost", help="Hard cap in USD for judge calls."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write OUT/report.html."),
) -> None:
    """The main job: load -> dedup -> score -> embed -> \\[tags] -> DEITA admission -> export -> report.

    Re-running with the same arguments costs nothing (caches) and gives the same selection.
    """
    from curate.pipeline import run_pipeline

    src = _source(source)
    use_llm = backend is not None or base_url is not None
    if tags and not use_llm:
        raise typer.BadParameter("--tags needs an LLM: give --backend local|vllm|openai or --base-url")
    with (_judge_backend(backend, base_url, model, max_cost=max_cost) if use_llm else contextlib.nullcontext()) as llm:
        run_pipeline(src, out=out, budget=budget, max_cosine_similarity=max_cosine_similarity, backend=llm,
                     tag_backend=llm if tags else None, report=report, console=console)


@app.command()
def report(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write (self-contained)."),
    selection: str | None = typer.Option(None, help="Selection to highlight in plots and samples "
                                         "(default: the most recent)."),
    samples: int = typer.Option(3, help="Rows kept and rows dropped to show."),
) -> None:
    """Write the curation report: one self-contained HTML page (pool, judges and cost, failures, selections, plots)."""
    from curate.report.views import build_report
    from curate.session import Workspace
    from curate.storage.files import writing

    with writing(out):  # a full disk names the file
        path = build_report(Workspace.open(workspace), out, selection=selection, samples=samples)
    console.print(f"wrote {path} ({path.stat().st_size / 1024:,.0f} KiB)")


@app.command()
def score(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    judge: str | None = typer.Option(None, "--judge", "-j", help="Built-in judge (complexity, quality, alpagasus), "
                                     "a prompt name found in --prompt-dir, or a prompt file path."),
    scorer: str | None = typer.Option(None, "--scorer", help="Instead of an LLM judge: a saved scorer folder, or "
                                      "'default' for the shipped complexity and quality scorers (offline)."),
    base_url: str | None = _base_url_opt(),
    model: str | None = _model_opt(),
    backend: str | None = _backend_opt(),
    concurrency: int = _concurrency_opt(),
    rpm: int | None = _rpm_opt(),
    tpm: int | None = _tpm_opt(),
    max_cost: float | None = _max_cost_opt(),
    api_key_env: str = _api_key_env_opt(),
    timeout: float = typer.Option(60.0, help="Per-request timeout in seconds."),
    max_retries: int = typer.Option(6, "--max-retries", help="Retries on 429/5xx/timeouts/bad bodies."),
    prompt_dir: list[Path] = typer.Option([], "--prompt-dir", help="Folder of prompt files that override built-ins."),
    min_digit_mass: float = typer.Option(0.5, "--min-digit-mass", help="Digit probability mass needed to "
                                         "renormalise when some score digits are missing from the logprobs."),
    column: str | None = typer.Option(None, "--column", help="Column name (default: the prompt's name)."),
    limit: int | None = typer.Option(None, "--limit", help="Score only the first N rows of the pool."),
) -> None:
    """Score rows with an LLM judge or a trained scorer (--scorer); writes <column>, <column>_failure and provenance.

    Judge calls are cached and resumable; a killed run re-sends no finished request.
    """
    if (judge is None) == (scorer is None):
        raise typer.BadParameter("give exactly one of --judge NAME|PATH and --scorer DIR|default")
    if scorer is not None:
        from curate.scorers import score_with_scorer_cli

        score_with_scorer_cli(workspace, scorer, column=column, console=console)
        return
    if limit is not None and limit < 1:
        raise typer.BadParameter(f"must be >= 1 (got {limit}); --limit N scores the first N rows",
                                 param_hint="'--limit'")
    from curate.llm.backends import format_usd
    from curate.llm.judges import Judge, missing_report
    from curate.llm.judges import score as run_score
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    ids = ws.ids[:limit] if limit is not None else None
    the_judge = Judge(judge, column=column, prompt_dirs=[str(d) for d in prompt_dir], min_digit_mass=min_digit_mass)
    with _judge_backend(backend, base_url, model, concurrency=concurrency, api_key_env=api_key_env, rpm=rpm, tpm=tpm,
                        max_cost=max_cost, timeout=timeout, max_retries=max_retries) as llm:
        summary = run_score(ws, the_judge, llm, ids=ids)
        spent = getattr(llm, "spent_usd", 0.0)
    report = missing_report(ws, the_judge.column)
    cost = "unknown (no price for this model)" if summary["cost_usd"] is None else format_usd(summary["cost_usd"])
    console.print(f"{the_judge.column}: {summary['scored_rows']:,} rows scored, {summary['failed_rows']:,} failed "
                  f"(every failure has a reason; unexplained missing: {report['unexplained']}); "
                  f"{summary['cached_requests']:,} cached requests; tokens {summary['tokens']['prompt']:,} in / "
                  f"{summary['tokens']['completion']:,} out; cost {cost}; {summary['seconds']}s")
    reasons = [r for r in ws.column(f"{the_judge.column}_failure", ids) if r]
    if reasons:
        from collections import Counter

        for reason, n in Counter(r[:120] for r in reasons).most_common(3):
            console.print(f"  [yellow]{n} x[/] {escape(reason)}")
    if summary["rows_not_sent_max_cost"]:  # the scored rows are saved; the unsent ones must not pass silently
        raise CurateError(f"{summary['rows_not_sent_max_cost']:,} rows not sent: max_cost {format_usd(max_cost)} "
                          f"reached (spent {format_usd(spent)}); re-run with a larger --max-cost "
                          f"to score them (answered requests come from the cache)")


@app.command("serve-local")
def serve_local(
    port: int | None = typer.Option(None, help="Port on 127.0.0.1 (default: a free one)."),
) -> None:
    """Serve SmolLM2-135M-Instruct with vLLM on 127.0.0.1 (OpenAI-compatible) until Ctrl-C or SIGTERM."""
    import signal
    import time

    from curate.llm.local import LocalServer

    # SIGTERM (and SIGINT, even where a parent shell ignored it) unwind the `with`, which stops the server by PID
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with LocalServer(port=port) as server:
        console.print(f"serving {server.model} at {server.base_url} (pid {server.pid}); Ctrl-C stops it")
        console.print(f"  curate score WS --judge quality --base-url {server.base_url} --model {server.model}")
        try:
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


@app.command()
def evol(
    workspace: Path = typer.Argument(..., help="Workspace directory (its pool gives the seeds)."),
    kind: str = typer.Option("complexity", "--kind", help="complexity: evolve instructions (Evol-Instruct); "
                             "quality: rewrite responses (Evol-Quality)."),
    seeds: int = typer.Option(20, "--seeds", help="Seed rows: a seeded random sample of the pool."),
    steps: int = typer.Option(5, "--steps", help="Evolution steps per seed (scores run 1..steps+1)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the sample, the operation choice and the shuffles."),
    base_url: str | None = _base_url_opt(),
    model: str | None = _model_opt(),
    backend: str | None = _backend_opt(),
    concurrency: int = _concurrency_opt(),
    rpm: int | None = _rpm_opt(),
    tpm: int | None = _tpm_opt(),
    max_cost: float | None = _max_cost_opt(),
    api_key_env: str = _api_key_env_opt(),
    prompt_dir: list[Path] = typer.Option([], "--prompt-dir", help="Folder with evol/<name>.md prompt overrides."),
    rewrite_max_tokens: int | None = typer.Option(None, "--rewrite-max-tokens",
                                                  help="Override max_tokens of the rewrite prompts."),
    rank_max_tokens: int | None = typer.Option(None, "--rank-max-tokens", help="Override max_tokens of the rank prompt."),
    name: str | None = typer.Option(None, "--name", help="Label set name (default evol_<kind>), in WS/labels/."),
) -> None:
    """Evol labels: evolve N seed rows M times, rank-and-score each variant set, store (text, score) labels."""
    from curate.evol import default_cache_path, print_run_summary, run_evol, sample_seeds, save_labels
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    rows = sample_seeds(ws, seeds, kind=kind, seed=seed)
    options = dict(kind=kind, steps=steps, seed=seed, cache_path=default_cache_path(ws), progress=True,
                   prompt_dirs=[str(d) for d in prompt_dir] or None,
                   rewrite_params={"max_tokens": rewrite_max_tokens} if rewrite_max_tokens else None,
                   rank_params={"max_tokens": rank_max_tokens} if rank_max_tokens else None)
    with _judge_backend(backend, base_url, model, concurrency=concurrency, api_key_env=api_key_env, rpm=rpm, tpm=tpm,
                        max_cost=max_cost) as llm:
        result = run_evol(rows, llm, **options)
    path = save_labels(ws, name or f"evol_{kind}", result)
    print_run_summary(result, console)
    console.print(f"wrote {len(result.labels):,} labels to {path}")


def _judge_backend(backend: str | None, base_url: str | None, model: str | None, *, concurrency: int = 16,
                   api_key_env: str = "OPENAI_API_KEY", rpm: int | None = None, tpm: int | None = None,
                   max_cost: float | None = None, timeout: float = 60.0, max_retries: int = 6):
    """A context manager yielding an LLM backend from CLI options: openai with --base-url, vllm (in-process),
    or local (SmolLM2 on an embedded vLLM server, stopped on exit)."""
    kind = backend or ("openai" if base_url else "local")

    @contextlib.contextmanager
    def opened():
        if kind == "local":
            from curate.llm.local import LocalServer

            server = LocalServer()  # started on the first cache miss: a fully cached re-run never starts it
            try:
                yield server.lazy_backend(
                    on_start=lambda: err_console.print("starting the local vLLM server (SmolLM2-135M-Instruct) ..."),
                    concurrency=concurrency, timeout=timeout, max_retries=max_retries)
            finally:
                server.stop()
        elif kind == "vllm":
            from curate.llm.backends import VLLMBackend

            engine = VLLMBackend(model)
            try:
                yield engine
            finally:
                engine.close()
        elif kind == "openai":
            from curate.llm.backends import OpenAIBackend

            if not model:
                raise typer.BadParameter("--backend openai needs --model (and --base-url for non-OpenAI servers)")
            yield OpenAIBackend(base_url, model, api_key_env=api_key_env, concurrency=concurrency, rpm=rpm, tpm=tpm,
                                timeout=timeout, max_retries=max_retries, max_cost=max_cost)
        else:
            raise typer.BadParameter(f"--backend {kind!r}: use openai, vllm or local")

    return opened()


@app.command("tag")
def tag_cmd(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    backend: str | None = _backend_opt(),
    base_url: str | None = _base_url_opt(),
    model: str | None = _model_opt(),
    prompt: str = typer.Option("instag", help="Prompt name or path (default prompts/instag.md)."),
    concurrency: int = _concurrency_opt(),
    rpm: int | None = _rpm_opt(),
    tpm: int | None = _tpm_opt(),
    max_cost: float | None = _max_cost_opt(),
    api_key_env: str = _api_key_env_opt(),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="Normalise tags_raw into column tags afterwards."),
) -> None:
    """Tag every user turn with intent tags (InsTag); write tags_raw, tags_raw_failure, and tags. Cached."""
    from curate import tags as instag
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    with _judge_backend(backend, base_url, model, concurrency=concurrency, api_key_env=api_key_env, rpm=rpm,
                        tpm=tpm, max_cost=max_cost) as judge_backend:
        summary = instag.tag(ws, judge_backend, prompt=prompt)
    console.print(f"tagged {summary['rows']:,} rows ({summary['turns']:,} user turns, {summary['cached_calls']:,} cached); "
                  f"{summary['failed_rows']:,} row(s) failed (see column tags_raw_failure); cost ${summary['cost_usd']:.4f}")
    if normalize:
        norm = instag.normalize(ws)
        for line in norm.report_lines():
            console.print(f"  {escape(line)}")


@app.command("tags")
def tags_cmd(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    column: str = typer.Option("tags", help="Tag column to report on."),
    top: int = typer.Option(25, help="Rows of the frequency table."),
    seeds: int = typer.Option(10, help="Random selections to compare each selection against."),
    renormalize: bool = typer.Option(False, "--normalize", help="(Re)fit the normaliser on tags_raw first."),
    min_frequency: int = typer.Option(20, help="Normaliser: drop tags in fewer rows (scaled down below 10,000 rows)."),
    eps: float = typer.Option(0.05, help="Normaliser: DBSCAN cosine eps for semantic aggregation (0 = skip)."),
    min_support: int = typer.Option(40, help="Normaliser: FP-Growth min support in rows (0 = skip association)."),
) -> None:
    """Tag frequency table, tags per query, and each selection's tag coverage vs random selections."""
    from rich.table import Table

    from curate import tags as instag
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    if renormalize:
        norm = instag.Normalizer(min_frequency=min_frequency or None, semantic=eps > 0, eps=eps or 0.05,
                                 association=min_support > 0, min_support=min_support or 40)
        instag.normalize(ws, norm, column=column)
        for line in norm.report_lines():
            console.print(f"  {escape(line)}")
    rows = ws.column(column)
    freq = instag.tag_frequency(rows)
    tagged = sum(1 for r in rows if r)
    console.print(f"{column}: {len(freq):,} distinct tags; {tagged:,} of {len(rows):,} rows tagged; "
                  f"{instag.tags_per_query(rows):.2f} tags per query")
    table = Table("tag", "rows", "share")
    for name, count in freq[:top]:
        table.add_row(escape(name), f"{count:,}", f"{count / max(tagged, 1):.1%}")
    console.print(table)
    for name in ws.selections:
        rep = instag.coverage_report(ws, name, tags_column=column, seeds=seeds)
        console.print(f"selection {escape(name)} ({rep['rows']:,} rows): coverage {rep['coverage']:.3f} vs random "
                      f"{rep['random_coverage_mean']:.3f} ± {rep['random_coverage_std']:.3f} ({seeds} seeds); "
                      f"{rep['tags_per_query']:.2f} tags per query")


@app.command()
def embed(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    model: str | None = _model_opt(),
    text: str = typer.Option("instruction", help="What to embed: instruction (user turns), conversation, or response."),
    name: str = typer.Option("default", help="Name of the embedding set in the workspace."),
    batch_size: int = typer.Option(64, "--batch-size", help="Texts per forward pass."),
    device: str | None = typer.Option(None, help="cpu, cuda, ... (default: cuda when present)."),
) -> None:
    """Embed every row; rows embedded before with the same model and text come from the cache."""
    from curate.session import Workspace

    summary = Workspace.open(workspace).embed(model=model, text=text, name=name, batch_size=batch_size, device=device)
    console.print(f"embeddings {summary['name']!r}: {summary['rows']:,} rows, {summary['encoded']:,} encoded, "
                  f"{summary['reused']:,} from the cache ({summary['model']}, {summary['text']}, {summary['device']})")


@app.command("select")
def select_cmd(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    method: str = typer.Option("deita", help="deita, top_k, threshold, kcenter, kmeans, lift, random, dsir, exact, "
                                             "minhash, semantic (or any registered selector)."),
    name: str = typer.Option(..., help="Name of the selection to write."),
    budget: int | None = typer.Option(None, help="Rows to keep (deita, top_k, kcenter, kmeans, lift, random, dsir)."),
    max_cosine_similarity: float | None = typer.Option(None, "--max-cosine-similarity",
                                                       help="deita: admit a row iff its similarity to every admitted row is <= this (default 0.9); semantic: duplicate above this (default 0.95)."),
    sort_by: str | None = typer.Option(None, "--sort-by", help="Column or expression, e.g. 'complexity*quality' (the default)."),
    min_score: float | None = typer.Option(None, "--min-score", help="threshold: keep rows scoring at least this."),
    target: Path | None = typer.Option(None, help="dsir: file of target texts, one per line."),
    from_selection: str | None = typer.Option(None, "--from", help="Choose among this selection's kept rows."),
    param: list[str] = typer.Option([], "--param", help="Other selector parameters as KEY=VALUE (VALUE parsed as JSON when it can be)."),
) -> None:
    """Select rows with one method and store every row's decision and reason as a named selection."""
    from curate.session import Workspace

    params: dict = {}
    for item in param:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--param {item!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    for key, value in (("budget", budget), ("max_cosine_similarity", max_cosine_similarity), ("sort_by", sort_by),
                       ("min_score", min_score), ("target", str(target) if target else None)):
        if value is not None:
            params[key] = value
    ws = Workspace.open(workspace)
    sel = ws.select(method=method, name=name, input_selection=from_selection, **params)
    counts = ", ".join(f"{k} {v:,}" for k, v in sel.decisions().items())
    console.print(f"selection {name!r} ({method}): {len(sel):,} kept; {counts}")


@app.command("train-scorer")
def train_scorer(
    workspace: Path = typer.Argument(..., help="Workspace directory holding the labels."),
    target: str = typer.Option(..., "--target", help="Numeric column with judge labels to imitate."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the scorer in (scorer.json + head.safetensors)."),
    kind: str = typer.Option("embedding", help="Scorer kind: embedding (MiniLM + linear head)."),
    head: str = typer.Option("ridge", help="ridge (regression) or ordinal (expected label of a multinomial head)."),
    inputs: str | None = typer.Option(None, help="Comma-separated texts to read: instruction[,response]. "
                                      "Default: instruction+response when the target name contains 'quality'."),
    folds: int = typer.Option(5, "--folds", "-k", help="K for K-fold agreement on the training part."),
    holdout: float = typer.Option(0.2, help="Share of rows held out (split before any fitting)."),
    seed: int = typer.Option(0, help="Seed for the splits."),
) -> None:
    """Train a small scorer on a judge's labels; print K-fold and held-out agreement beside baselines."""
    from curate.scorers import train_scorer_cli

    train_scorer_cli(workspace, target, out, kind=kind, head=head, k=folds, holdout=holdout, seed=seed,
                     inputs=inputs.split(",") if inputs else None, console=console)


@app.command("distil")
def distil_command(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    label_column: str = typer.Option(..., "--label-column", help="Existing judge column used as the labeller "
                                     "(the loop reads only the rows it asks for, and counts them)."),
    n: int = typer.Option(200, "-n", help="Random rows labelled before the first fit."),
    rounds: int = typer.Option(1, help="Rounds of labelling the least-certain rows."),
    uncertain_k: int = typer.Option(50, "--uncertain-k", help="Rows labelled per round (largest bootstrap disagreement)."),
    holdout_n: int = typer.Option(100, "--holdout-n", help="Random labelled rows kept out of training, for agreement."),
    column: str | None = typer.Option(None, help="Column for the scorer's predictions (default LABEL_distilled)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also save the distilled scorer here."),
) -> None:
    """Distil a judge column into a small scorer; report labels spent and held-out agreement."""
    from curate.scorers import distil_cli

    distil_cli(workspace, label_column, n=n, rounds=rounds, uncertain_k=uncertain_k, holdout_n=holdout_n,
               column=column, out=out, console=console)


EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention for Ctrl-C
INTERRUPTED_LINE = ("interrupted: finished work is kept (responses in the workspace's cache, columns already "
                    "written); re-run the same command to resume")


def _os_error_line(exc: OSError) -> str:
    """One line naming the path(s) and the OS reason, e.g. ``out/x.jsonl: No space left on device``."""
    if exc.filename is None:
        return str(exc)
    paths = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
    return f"{paths}: {exc.strerror or exc}"


def _fail(line: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _interrupted() -> None:
    """Say what was kept and exit 130 at once. Not sys.exit: when Ctrl-C lands inside code an extension
    ran through PyRun_*, CPython marks the interrupt unhandled and kills itself with SIGINT at shutdown
    (status -2, not 130), and worker threads still finishing requests would hold the exit up. Everything
    worth keeping is on disk already: each response is committed to the cache, files are renamed into place."""
    import logging
    import os

    err_console.print(INTERRUPTED_LINE, highlight=False, soft_wrap=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(EXIT_INTERRUPTED)


def main() -> None:
    """Entry point: CurateError, bad values and OS errors (a read-only or full disk, a file where a folder
    should be) become one clean line on stderr and exit code 1, never a traceback; Ctrl-C exits 130 with a
    line saying what was kept."""
    try:
        code = app(standalone_mode=False)
    except CurateError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(_os_error_line(exc))
    except ValueError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit:
        raise
    except Exception as exc:  # click's own usage errors arrive here too (typer may vendor its own click)
        show = getattr(exc, "show", None)
        if callable(show) and hasattr(exc, "exit_code"):
            show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(1)
        raise
    # Without standalone mode typer returns exit codes instead of exiting; Ctrl-C inside a command arrives
    # as its code 130.
    if code == EXIT_INTERRUPTED:
        _interrupted()
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
