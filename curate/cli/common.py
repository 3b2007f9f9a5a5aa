"""What every command shares: the typer app, the consoles, the sample source, the LLM backend options."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

import typer
import typer.core

from curate import pools
from curate.cli.group import CommandGroup
from curate.cli.pipes import OutputConsole
from curate.defaults import BACKEND, BATCH, DEITA, EMBED, JUDGE, POOL
from curate.errors import OptionError, Terminated
from curate.exit_codes import exit_codes_text
from curate.storage.run_records import (  # noqa: F401  (the commands read the request wording from here too)
    REPEATED_WORDS,
    answered_text,
    requests_answered_text,
    requests_text,
    stopped_run_text,
)

app = typer.Typer(cls=CommandGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Curate instruction-tuning data with LLM judges, tags and diverse selection.",
                  epilog=exit_codes_text() + " Every command exits by this table.")
# markup off: the lines carry paths, column names and row text, where "[/bold]" is text, not a style; a line that
# styles itself passes markup=True and escapes what it interpolates
console = OutputConsole(markup=False)
err_console = OutputConsole(stderr=True, markup=False)


def json_columns_line(columns: list[str]) -> str:
    """What a load says of the pool-file columns it kept as JSON text."""
    return (f"column(s) {', '.join(columns)} kept as JSON text: their values mix types (e.g. a number in one "
            f"record, text in another, here or in an earlier load), hold objects with different keys or only empty "
            f"ones, hold integers beyond 64 bits, or nest too deep")


def gone_from_source_line(summary: dict[str, Any]) -> str:
    """What a load says of the rows an earlier load of its source read that the source no longer holds."""
    return (f"{summary['source']} changed since its load at {summary['earlier_load_at']}: at least "
            f"{summary['rows_gone_from_source']:,} row(s) that load read are not in it now (edited or deleted, or read "
            "with other options) and stay in the pool beside the rows read now; to hold only what it holds now, load "
            "it into a new workspace (ws.load(..., keep_only_source=True) in Python; curate run does so)")


def turn_keys_line(keys: dict[str, int]) -> str:
    """What a load says of the keys its source's chat turns have that the conversation does not keep."""
    listed = ", ".join(f"{k} ({n:,} rows)" for k, n in keys.items())
    return (f"turn keys curate's conversation does not keep: {listed}; the source field keeps them, and an export "
            "--format refuses those rows")


def sample_path() -> Path:
    """The small pool that ships with the package (hand-written, mixed shapes)."""
    return pools.SAMPLE


def _source(source: str) -> str:
    return pools.resolve_source(source)


# Ctrl-C. CPython swallows a KeyboardInterrupt that lands while a finalizer or weakref callback runs (it prints
# "Exception ignored in ... Traceback ..."), and the command would carry on to the end and exit 0. main() installs
# on_sigint, which remembers the request: long commands re-raise it at their next checkpoint (check_interrupted)
# and main() never reports success for an interrupted command; quiet_swallowed_interrupt keeps stderr clean.
# SIGTERM (kill, a scheduler's stop) takes the same path, so its temporary files are removed too; it exits 143.
interrupt_requested = False
interrupt_signal = int(signal.SIGINT)  # SIGTERM's number after a SIGTERM


def on_sigint(signum: int, frame: Any) -> None:
    global interrupt_requested, interrupt_signal
    interrupt_requested, interrupt_signal = True, signum
    raise _interrupt()


def _interrupt() -> KeyboardInterrupt:
    """What a stop raises: KeyboardInterrupt after Ctrl-C, its subclass Terminated (carrying the signal, so the run's
    record says 143 as main() exits) after SIGTERM."""
    return KeyboardInterrupt() if interrupt_signal == signal.SIGINT else Terminated(interrupt_signal)


def quiet_swallowed_interrupt(unraisable: Any) -> None:
    """``sys.unraisablehook``: a swallowed KeyboardInterrupt prints no traceback (on_sigint remembered it)."""
    if not issubclass(unraisable.exc_type, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def check_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed (even if its first KeyboardInterrupt got swallowed)."""
    if interrupt_requested:
        raise _interrupt()


def option(defaults: Any, field: str, help: str, *flags: str) -> Any:
    """A typer option whose default is ``defaults.<field>`` (one of :mod:`curate.defaults`' configs) and whose
    flag is ``--<field with dashes>`` unless ``flags`` are given: the CLI repeats no default by hand."""
    return typer.Option(getattr(defaults, field), *(flags or (f"--{field.replace('_', '-')}",)), help=help)


def given_option(defaults: Any, field: str, help: str, *flags: str) -> Any:
    """As :func:`option`, but None when left out (its help still shows ``defaults.<field>``): for an option that is
    refused where it would not be read, so that one given with exactly its default value is refused too."""
    # the default in the help's own words: typer shows a string show_default in parentheses, "(16)", as if computed
    return typer.Option(None, *(flags or (f"--{field.replace('_', '-')}",)),
                        help=f"{help} \\[default: {getattr(defaults, field)}]", show_default=False)


# The LLM backend options shared by score, evol, tag and run (one definition each; see _judge_backend).


BACKEND_KINDS = ("openai", "openai-batch", "vllm", "vllm-batch", "local")


def _backend_opt():
    return typer.Option(None, "--backend", help="openai | openai-batch | vllm | vllm-batch | local (default: openai "
                        "with --base-url, else local = SmolLM2 on an embedded vLLM server, started on the first cache "
                        "miss). openai-batch: OpenAI's batch API at half the price (answers within 24 h; a killed "
                        "command resumes polling); vllm-batch: the same batch file through vLLM's offline runner.")


def _rps_opt():
    return typer.Option(None, "--rps", help="Requests-per-second limit (request starts spaced 1/RPS apart).")


def _format_opt():
    return typer.Option(POOL.format, "--format", help="The source's record shape: auto (per record) | alpaca | sharegpt | "
                        "messages | prompt_completion | qa.")


def _mapping_opt():
    return typer.Option(None, "--mapping", help='JSON: each field a shape reads -> your record\'s field, e.g. '
                        '\'{"instruction": "query", "output": "reply"}\' (with --format auto it names the shape).')


def mapping_arg(text: str | None) -> dict[str, str] | None:
    """--mapping's JSON object, or a one-line error saying what it must be."""
    if text is None:
        return None
    try:
        mapping = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON ({exc}); e.g. '{{\"instruction\": \"query\"}}'", param_hint="--mapping") from None
    if not isinstance(mapping, dict):
        raise typer.BadParameter("a JSON object of field names, e.g. '{\"instruction\": \"query\"}'",
                                 param_hint="--mapping")
    return mapping


def _poll_opt():
    return given_option(BATCH, "poll_s", "openai-batch: first wait between status polls in seconds (backs off "
                        "x1.5).", "--poll-interval")


def _dry_run_opt():
    return typer.Option(False, "--dry-run", help="Send nothing: print the rows, the requests not yet cached, the "
                        "prompt tokens (the model's own tokenizer), the expected output tokens and the cost online "
                        "and through a batch API.")


def _base_url_opt():
    return typer.Option(None, "--base-url", help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1.")


def _model_opt():
    return typer.Option(None, "--model", "-m", help="Model name (openai) or model folder (vllm).")


def _concurrency_opt():
    return given_option(BACKEND, "concurrency", "Requests in flight at once.")


def _timeout_opt():
    return given_option(BACKEND, "timeout_s", "Per-request timeout in seconds.", "--timeout")


def _max_retries_opt():
    return given_option(BACKEND, "max_retries", "Retries on 429/5xx/timeouts/bad bodies.")


def _min_digit_mass_opt():
    return given_option(JUDGE, "min_digit_mass", "Digit probability mass a score needs (all digits listed or not): "
                        "below it the row fails low_digit_mass.")


def _retry_failed_opt():
    return typer.Option(JUDGE.retry_failed, "--retry-failed/--keep-failed", help="Send again only the rows an earlier run left "
                        "without an answer for a transient reason (429, 5xx, timeout, malformed body, max_cost "
                        "reached, or a run stopped by its settings refused: HTTP 401/403/404, sent again once they "
                        "are fixed), and say how many; never rows already done or failed for a permanent reason (e.g. "
                        "no response, HTTP 400, an answer that does not parse; a score judge's low digit mass). On by "
                        "default; --keep-failed leaves them as they are.")


def _rpm_opt():
    return typer.Option(None, "--rpm", help="Requests-per-minute limit.")


def _tpm_opt():
    return typer.Option(None, "--tpm", help="Tokens-per-minute limit (estimated before sending).")


def _max_cost_opt():
    return typer.Option(None, "--max-cost", help="Hard cap in USD on what this command spends: it stops before "
                        "exceeding it. Per invocation: a re-run spends up to it again (answered requests come from "
                        "the cache, free); each column's total over runs is in the report.")


def _api_key_env_opt():
    return given_option(BACKEND, "api_key_env", "Environment variable holding the API key.")


# Selection and embedding options shared by run, select and embed.


def _max_cosine_similarity_opt():
    return option(DEITA, "max_cosine_similarity", "DEITA admission: a row joins only if its cosine similarity to "
                  "every admitted row is at most this.")


def _embed_text_opt():
    return option(EMBED, "text", "What to embed: instruction (user turns), conversation, or response.")


def _embed_name_opt():
    return option(EMBED, "name", "Name of the embedding set in the workspace.")


def _batch_size_opt():
    return option(EMBED, "batch_size", "Texts per forward pass.")


# The options each backend reads, and why it reads no other: one given that the backend does not read is refused.
BACKEND_OPTIONS: dict[str, tuple[frozenset[str], str]] = {
    "openai": (frozenset({"--base-url", "--model", "--concurrency", "--rps", "--rpm", "--tpm", "--max-cost",
                          "--timeout", "--max-retries", "--api-key-env"}), "an OpenAI-compatible server"),
    "local": (frozenset({"--concurrency", "--rps", "--timeout", "--max-retries"}),
              "SmolLM2 on an embedded server at no cost, with no key"),
    "vllm": (frozenset({"--model"}), "the model runs in this process: no requests to time, limit, retry or pay"),
    "openai-batch": (frozenset({"--base-url", "--model", "--api-key-env", "--max-cost", "--timeout"}),
                     "one batch job per run: the API paces and retries its requests, not curate"),
    "vllm-batch": (frozenset({"--model"}), "vLLM's offline batch runner in this process: no requests to time, limit, "
                   "retry or pay"),
}


def backend_kind(backend: str | None, base_url: str | None) -> str:
    """The backend a command runs on: --backend, else openai for a --base-url, else the packaged local model."""
    return backend or ("openai" if base_url else "local")


def _judge_backend(backend: str | None, base_url: str | None, model: str | None, *,
                   concurrency: int | None = None, api_key_env: str | None = None,
                   rpm: int | None = None, tpm: int | None = None, max_cost: float | None = None,
                   timeout: float | None = None, max_retries: int | None = None,
                   rps: float | None = None, workspace: Any = None, poll_s: float | None = None):
    """A context manager yielding an LLM backend from CLI options: openai with --base-url, vllm (in-process),
    local (SmolLM2 on an embedded vLLM server, stopped on exit), openai-batch (remembers its batches in
    ``workspace``, a Workspace or its path) or vllm-batch (vLLM's offline batch runner). An option left out is None
    (then its :mod:`curate.defaults` value): one given that the backend never reads is refused, whatever its value."""
    kind = backend_kind(backend, base_url)
    if kind not in BACKEND_KINDS:  # told here, when the command builds it, before any line or work
        raise typer.BadParameter(f"--backend {kind!r}: use {', '.join(BACKEND_KINDS)}")
    if poll_s is not None and kind != "openai-batch":  # polled by the batch backend alone: ignored in silence
        raise OptionError(f"--poll-interval: the wait between polls of --backend openai-batch, not of {kind}")
    if kind == "local":  # SmolLM2 on an embedded server: options that name or limit another model are not read
        ignored = [flag for flag, value in (("--model", model), ("--rpm", rpm), ("--tpm", tpm)) if value is not None]
        if ignored:
            raise OptionError(f"{' and '.join(ignored)}: options of a judge server (--base-url URL, or --backend vllm "
                              f"for --model); without one the local backend runs SmolLM2-135M-Instruct")
    given = [flag for flag, value in (
        ("--base-url", base_url), ("--model", model), ("--rps", rps), ("--rpm", rpm), ("--tpm", tpm),
        ("--max-cost", max_cost), ("--concurrency", concurrency), ("--timeout", timeout),
        ("--max-retries", max_retries), ("--api-key-env", api_key_env))
        if value is not None and kind in BACKEND_OPTIONS and flag not in BACKEND_OPTIONS[kind][0]]
    if given:  # an option the backend never reads would be dropped in silence
        raise OptionError(f"{', '.join(given)}: not read by --backend {kind} ({BACKEND_OPTIONS[kind][1]}); leave "
                          f"{'it' if len(given) == 1 else 'them'} out")
    concurrency = BACKEND.concurrency if concurrency is None else concurrency
    api_key_env = BACKEND.api_key_env if api_key_env is None else api_key_env
    timeout = BACKEND.timeout_s if timeout is None else timeout
    max_retries = BACKEND.max_retries if max_retries is None else max_retries
    poll_s = BATCH.poll_s if poll_s is None else poll_s

    @contextlib.contextmanager
    def opened():
        if kind == "local":
            from curate.llm.local import LocalBackend, LocalServer, running_server

            warm = running_server()  # a live `curate serve-local`: reuse it, start nothing
            if warm is not None:
                err_console.print(f"using the running local server at {warm['base_url']} (pid {warm['pid']})")
                yield LocalBackend.announced(warm, concurrency=concurrency, timeout=timeout, max_retries=max_retries,
                                             rps=rps)
                return
            server = LocalServer()  # started on the first cache miss: a fully cached re-run never starts it
            try:
                yield server.lazy_backend(
                    on_start=lambda: err_console.print("starting the local vLLM server (SmolLM2-135M-Instruct; about a "
                                                    "minute on a small CPU, counted in the first row's time) ..."),
                    concurrency=concurrency, timeout=timeout, max_retries=max_retries, rps=rps)
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
                                timeout=timeout, max_retries=max_retries, max_cost=max_cost, rps=rps)
        elif kind == "openai-batch":
            from curate.llm.batch import OpenAIBatchBackend

            if not model:
                raise typer.BadParameter("--backend openai-batch needs --model (and --base-url for non-OpenAI APIs)")
            yield OpenAIBatchBackend(base_url, model, workspace=workspace, api_key_env=api_key_env, max_cost=max_cost,
                                     poll_s=poll_s, timeout=timeout,
                                     on_event=lambda text: err_console.print(text, highlight=False))
        elif kind == "vllm-batch":
            from curate.llm.vllm_batch import VLLMBatchBackend

            yield VLLMBatchBackend(model, on_event=lambda text: err_console.print(text, soft_wrap=True,
                                                                                  highlight=False))
        else:
            raise typer.BadParameter(f"--backend {kind!r}: use {', '.join(BACKEND_KINDS)}")

    return opened()


def reflow_help(typer_app: typer.Typer) -> None:
    """Give every command of ``typer_app`` (and its sub-apps) its docstring as help with each paragraph on one line:
    typer re-wraps the first paragraph only, so the others broke where the source line did ("no judge call is paid
    for a row" / "decontamination drops."). A paragraph starting with ``\\b`` keeps its lines, as click's own."""
    import inspect

    def one_line(doc: str) -> str:
        return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in doc.split("\n\n"))

    for info in typer_app.registered_commands:
        if info.help is None and info.callback is not None and (doc := inspect.getdoc(info.callback)):
            info.help = one_line(doc)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)
