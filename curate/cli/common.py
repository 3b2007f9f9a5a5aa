"""What every command shares: the typer app, the consoles, the sample source, the LLM backend options."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer
from rich.console import Console

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
