"""``VLLMBatchBackend`` (``--backend vllm-batch``): the batch JSONL through vLLM's offline batch runner.

The uncached requests of a call are written as the same JSONL the OpenAI batch backend uploads
(``custom_id`` = the cache key, the online request body), run by
``python -m vllm.entrypoints.openai.run_batch -i IN -o OUT --model DIR`` on the local model folder, and
the output lines are read back by the same reader, so the batch path runs on a real engine. The model
name sent is the local server's (``smollm2-135m-instruct`` by default): answers are shared with
``--backend local`` and ``vllm`` through the response cache. Free (a local model).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curate.codes import FailureCode
from curate.defaults import BACKEND
from curate.errors import CurateError
from curate.hardware import resolve_dtype
from curate.llm.base import Backend, OnDone, Request, failure_result, run_sync
from curate.llm.batch_jsonl import batch_line, read_output_line
from curate.llm.guarded_group import launch_guarded
from curate.llm.local import (
    SERVED_NAME,
    WHOLE_PREFILL_ARGS,
    check_model_path,
    curate_home,
    folder_model_name,
    prepare_model,
    server_env,
)
from curate.llm.server_records import stop_orphans

# process-wide: each launch (a multi-round step launches several; two backends of one process each theirs) writes a
# log of its own; one name per process truncated the earlier launch's log when the next one started
_launch_numbers = itertools.count(1)


class VLLMBatchBackend(Backend):
    """vLLM's batch runner over a local model folder (default: the converted SmolLM2)."""

    kind = "vllm-batch"
    submits_batches = True

    def __init__(self, model_dir: str | os.PathLike | None = None, *, served_name: str | None = None,
                 max_model_len: int = BACKEND.local_max_model_len, dtype: str = "auto", top_logprobs: int = BACKEND.top_logprobs,
                 timeout: float = 3600.0, log_path: str | os.PathLike | None = None, extra_args: list[str] | None = None,
                 on_event: Callable[[str], None] | None = None):
        check_model_path(model_dir)
        self._model_dir = Path(model_dir) if model_dir else None
        self.model = served_name or (SERVED_NAME if model_dir is None else folder_model_name(Path(model_dir)))
        self.max_model_len, self.dtype, self.max_logprobs = max_model_len, resolve_dtype(dtype), top_logprobs
        self.timeout = timeout
        self._log_path = Path(log_path) if log_path else None
        self.extra_args = list(extra_args or [])
        self.prompt_tokens = self.completion_tokens = 0
        self.spent_usd = 0.0
        self.requests_sent = 0
        self.on_event = on_event  # told what the backend is doing: the runner's start (the CLI prints it)
        self.log_paths: list[Path] = []  # every launch's log, in launch order

    def launch_log_path(self, number: int) -> Path:
        """Launch ``number``'s log: ``$CURATE_HOME/logs/vllm-batch-<pid>-<number>.log`` (or the ``log_path`` given, with
        ``-<number>`` before its suffix): this process's own (as a local server's is its port's), so a runner another
        curate left running never writes into it, and this launch's own, so the next one keeps it."""
        base = self._log_path or curate_home() / "logs" / f"vllm-batch-{os.getpid()}.log"
        return base.with_name(f"{base.stem}-{number}{base.suffix}")

    @property
    def model_dir(self) -> Path:
        if self._model_dir is None:
            self._model_dir = prepare_model()
        return self._model_dir

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "model_dir": str(self._model_dir or ""), "dtype": self.dtype}

    def command(self, input_path: Path, output_path: Path) -> list[str]:
        return [sys.executable, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(input_path), "-o",
                str(output_path), "--model", str(self.model_dir), "--served-model-name", self.model,
                "--max-model-len", str(self.max_model_len), "--dtype", self.dtype, "--enforce-eager",
                "--max-logprobs", str(self.max_logprobs), *WHOLE_PREFILL_ARGS, *self.extra_args]

    def run_lines(self, requests: list[Request]) -> list[dict[str, Any]]:
        """Run ``requests`` through the batch runner; the output lines (parsed JSON), in any order."""
        return run_sync(lambda: self.run_lines_async(requests))

    async def run_lines_async(self, requests: list[Request]) -> list[dict[str, Any]]:
        """:meth:`run_lines` in an event loop, waiting on the runner there: a Ctrl-C cancels the wait and stops the
        runner at once (a thread blocked in ``proc.wait`` held asyncio's shutdown, and the first Ctrl-C, until the
        whole batch had run, its answers then thrown away)."""
        import asyncio

        with tempfile.TemporaryDirectory(prefix="curate-vllm-batch-") as tmp:
            inp, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
            inp.write_bytes(b"".join(batch_line(r, self.model) for r in requests))
            log_path = self.launch_log_path(next(_launch_numbers))
            self.log_paths.append(log_path)
            if self.on_event is not None:  # the model loads first: minutes with no answer, and no other word
                self.on_event(f"starting vLLM's batch runner on {len(requests):,} request(s) ({self.model}; it loads "
                              f"the model first: a few minutes on a small CPU); log {log_path}")
            # recorded, and watched: a SIGKILL of this process no longer leaves it (and its engine) running; one left
            # by a run whose watchdog was killed too is stopped first, as a local server's is
            stop_orphans(curate_home())
            group = launch_guarded(self.command(inp, out), home=curate_home(), log_path=log_path,
                                   env=server_env(curate_home(), tmp), tmpdir=tmp)
            proc, deadline = group.proc, time.monotonic() + self.timeout
            try:
                while proc.poll() is None:
                    if time.monotonic() >= deadline:
                        raise CurateError(f"vLLM's batch runner ran past its {self.timeout:g} s timeout and was "
                                          f"stopped; log {log_path}")
                    await asyncio.sleep(0.2)
            finally:  # on a timeout or Ctrl-C it stops the runner; after a normal exit, any worker left
                group.stop(10.0, remove_tmpdir=False)  # the folder is the TemporaryDirectory's to remove
            if proc.returncode != 0 or not out.exists():
                tail = log_path.read_text(errors="replace")[-2000:]
                raise CurateError(f"vLLM's batch runner exited with {proc.returncode}; log {log_path}:\n{tail}")
            return [json.loads(x) for x in out.read_text().splitlines() if x.strip()]

    async def run(self, requests: list[Request], on_done: OnDone) -> None:
        if not requests:
            return

        by_key = {r.key: r for r in requests}
        self.requests_sent += len(requests)
        lines = await self.run_lines_async(requests)
        done: set[str] = set()
        for line in lines:
            key = line.get("custom_id")
            if key not in by_key or key in done:
                continue
            done.add(key)
            _, result = read_output_line(line, (0.0, 0.0), by_key[key])
            if "failure" not in result:
                self.prompt_tokens += result["usage"]["prompt_tokens"]
                self.completion_tokens += result["usage"]["completion_tokens"]
            elif result["reason_code"] != FailureCode.CONTEXT_TOO_LONG:  # a refusal is about this input, not transport
                result = failure_result(result["failure"], FailureCode.MODEL_ERROR)
            on_done(by_key[key], result)
        for key, req in by_key.items():
            if key not in done:
                on_done(req, failure_result("no line for this request in the batch runner's output",
                                            FailureCode.MODEL_ERROR))

    def __repr__(self) -> str:
        return f"VLLMBatchBackend({self.model!r})"
