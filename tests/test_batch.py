"""Batch backends against a loopback fake of the files and batches APIs (tests/fault_server.py), and
vLLM's offline batch runner on the local SmolLM2 (marked ``llm``)."""

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import openai
import pytest

from curate.codes import FailureCode
from curate.errors import CurateWarning, OptionError
from curate.llm.backends import OpenAIBackend
from curate.llm.base import run_sync
from curate.llm.batch import BatchState, OpenAIBatchBackend, batch_line, split_batches
from curate.llm.cache import ResponseCache
from curate.llm.judges import Judge
from curate.llm.runner import build_requests
from curate.session import Workspace
from tests.cli_in_process import curate_in_process
from tests.conftest import apply_and_check_warning, write_jsonl
from tests.fault_server import FaultServer

REPO = Path(__file__).resolve().parents[1]
MODEL = "gpt-4o-mini"  # a priced model: batch cost is checked


def _workspace(tmp_path, texts, name="ws"):
    ws = Workspace(tmp_path / name)
    ws.load(write_jsonl(tmp_path / f"{name}.jsonl", [{"instruction": t, "input": "", "output": "ok"} for t in texts]))
    return ws


def _batch(srv, ws, **kw):
    kw.setdefault("poll_s", 0.05)
    return OpenAIBatchBackend(srv.base_url, MODEL, workspace=ws, api_key="k", **kw)


def _online(srv):
    return OpenAIBackend(srv.base_url, MODEL, api_key="k", max_retries=0)


def _by_text(ws, column):
    return {c[0]["content"]: v for c, v in zip(ws.conversations(), ws.column(column), strict=True)}


def test_a_batch_job_completes_into_the_cache_as_the_online_backend_would(tmp_path):
    texts = [f"batch row {i}" for i in range(12)]
    ws, control = _workspace(tmp_path, texts), _workspace(tmp_path, texts, "control")
    with FaultServer() as srv:
        result = ws.apply(Judge("complexity", _batch(srv, ws)), progress=False)
        assert (srv.uploads, srv.batches_created, srv.total) == (1, 1, 0)  # one batch, no online call
        assert sorted(srv.batch_counts.values()) == [1] * 12
        control_result = control.apply(Judge("complexity", _online(srv)), progress=False)
        assert srv.total == 12
        # the batch answers sit in the cache under the online keys: the online backend sends nothing
        again = ws.apply(Judge("complexity", _online(srv)), progress=False)
        assert srv.total == 12 and again.provenance["cached_requests"] == 12
    assert _by_text(ws, "complexity") == _by_text(control, "complexity")  # same scores as online
    assert all(v is not None for v in ws.column("complexity"))
    prov, online = result.provenance, control_result.provenance
    assert prov["backend"] == "openai-batch" and prov["tokens"] == online["tokens"]
    assert math.isclose(prov["cost_usd"], online["cost_usd"] / 2)  # the batch price: half
    subs = ws.artifact("llm-batches")["submissions"]
    assert [s["status"] for s in subs.values()] == ["collected"] and list(subs.values())[0]["batch_id"] == "batch_1"


def test_a_wrong_api_key_is_one_error_line_and_the_rerun_with_the_right_key_scores_every_row(tmp_path):
    """The files API answers 401: `curate score --backend openai-batch` says so in one line (it printed openai's
    traceback), and the re-run with the right key submits and scores every row."""
    ws = _workspace(tmp_path, [f"batch row {i}" for i in range(5)])
    with FaultServer(api_key="right") as srv:
        args = ["score", ws.path, "--judge", "complexity", "--backend", "openai-batch", "--base-url", srv.base_url,
                "--model", MODEL, "--poll-interval", "0.05"]
        runs = [curate_in_process(*args, env={**os.environ, "OPENAI_API_KEY": key}) for key in ("wrong", "right")]
        assert (srv.uploads, srv.batches_created, srv.total) == (1, 1, 0)  # nothing went through with the wrong key
    wrong, right = runs
    assert wrong.returncode == 78 and "Traceback" not in wrong.stderr
    assert "error: openai-batch: HTTP 401: the server refuses the API key" in wrong.stderr
    assert right.returncode == 0, right.stderr[-2000:]
    assert all(v is not None for v in Workspace.open(ws.path).column("complexity"))


def test_large_jobs_are_split_by_the_per_batch_limits(tmp_path):
    ws = _workspace(tmp_path, [f"split row {i}" for i in range(12)])
    with FaultServer() as srv:
        ws.apply(Judge("complexity", _batch(srv, ws, max_requests=5)), progress=False)
        assert srv.batches_created == 3 and sorted(srv.batch_counts.values()) == [1] * 12
    requests = build_requests(Judge("complexity").prompt, [{"instruction": f"r {i}"} for i in range(6)],
                              _online(srv))
    lines = [batch_line(r, MODEL) for r in requests]
    groups = split_batches(lines, max_requests=100, max_bytes=2 * len(lines[0]) + 10)
    assert [len(g) for g in groups] == [2, 2, 2]  # by bytes


def test_an_expired_share_is_resubmitted_alone(tmp_path):
    texts = [f"row {i}" for i in range(8)] + ["row 8 [batchexpire]", "row 9 [batchexpire]", "row 10 [batch500]",
                                              "row 11 [batch400]"]
    ws = _workspace(tmp_path, texts)
    with FaultServer() as srv:
        with pytest.warns(CurateWarning, match=r"complexity: 1 of the 12 rows computed now failed \(1 x http_error"):
            result = ws.apply(Judge("complexity", _batch(srv, ws)), progress=False)
        assert srv.batches_created == 2
        second = srv.files[srv.batches["batch_2"]["input_file_id"]].decode().splitlines()
        by_text = {srv._user_text(json.loads(x)["body"]) for x in second}
    assert len(by_text) == 3 and all(("[batchexpire]" in t or "[batch500]" in t) for t in by_text)
    assert sorted(srv.batch_counts.values()) == [1] * 9 + [2] * 3  # the expired/5xx share went twice, alone
    values = _by_text(ws, "complexity")
    assert all(values[t][0] is not None for t in texts[:11])
    (fails,) = [f for c, f in zip(ws.conversations(), ws.failures("complexity"), strict=True)
                if "[batch400]" in c[0]["content"]]
    assert [f.code for f in fails] == [FailureCode.HTTP_ERROR]
    assert result.failed == 1


def test_a_submission_killed_before_its_batch_id_was_recorded_is_adopted_not_resubmitted(tmp_path):
    ws = _workspace(tmp_path, [f"adopt row {i}" for i in range(4)])
    judge = Judge("complexity")
    with FaultServer() as srv:
        backend = _batch(srv, ws)
        requests = build_requests(judge.prompt, [{"instruction": f"adopt row {i}"} for i in range(4)], backend)
        data = b"".join(batch_line(r, MODEL) for r in requests)

        async def half_done():  # what a process killed right after "create" leaves behind
            client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="k")
            upload = await client.files.create(file=("x.jsonl", data), purpose="batch")
            BatchState(ws).record("deadbeef", [r.key for r in requests], status="creating", model=MODEL,
                                  base_url=srv.base_url, attempt=0, requests=4, input_file_id=upload.id)
            await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                        completion_window="24h", metadata={"curate_submission": "deadbeef"})
            await client.close()

        run_sync(half_done)
        result = ws.apply(judge.with_backend(backend), progress=False)
        assert srv.batches_created == 1 and srv.uploads == 1
    assert result.failed == 0 and result.provenance["cached_requests"] == 0


def _killed_while_polling(srv, ws, judge, texts, base_url):
    """What a run killed while polling leaves behind: a batch of ``texts`` created, recorded with ``base_url``."""
    requests = build_requests(judge.prompt, [{"instruction": t} for t in texts], _batch(srv, ws))
    data = b"".join(batch_line(r, MODEL) for r in requests)

    async def run():
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="k")
        upload = await client.files.create(file=("x.jsonl", data), purpose="batch")
        batch = await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                            completion_window="24h", metadata={"curate_submission": "feedface"})
        BatchState(ws).record("feedface", [r.key for r in requests], status="in_progress", model=MODEL,
                              base_url=base_url, attempt=0, requests=len(requests), input_file_id=upload.id,
                              batch_id=batch.id)
        await client.close()

    run_sync(run)


def test_a_batch_the_server_forgot_is_marked_lost_and_its_requests_submitted_again(tmp_path):
    """The server answers 404 for a batch a killed run recorded: every re-run exited 1 blaming "the model name or the
    endpoint" and the workspace stayed stuck. Now the submission is marked lost (with a reason) and its requests,
    never answered, go again in a new batch; a further re-run sends nothing."""
    texts = [f"lost row {i}" for i in range(4)]
    ws = _workspace(tmp_path, texts)
    judge = Judge("complexity")
    with FaultServer() as srv:
        _killed_while_polling(srv, ws, judge, texts, base_url=srv.base_url)
        srv.forget_batches()
        cmd = ["score", ws.path, "--judge", "complexity", "--backend", "openai-batch", "--base-url", srv.base_url,
               "--model", MODEL, "--poll-interval", "0.05"]
        env = {**os.environ, "OPENAI_API_KEY": "k"}
        rerun = curate_in_process(*cmd, env=env)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert "batch batch_1 is unknown to the server (HTTP 404): marked lost; submitting its 4 request(s) again" \
            in " ".join(rerun.stderr.split())
        assert srv.batches_created == 2 and sorted(srv.batch_counts.values()) == [2] * 4
        again = curate_in_process(*cmd, env=env)
        assert again.returncode == 0 and srv.batches_created == 2, again.stderr[-2000:]  # nothing is sent twice
    ws = Workspace.open(ws.path)
    assert all(v is not None for v in ws.column("complexity"))
    lost = ws.artifact("llm-batches")["submissions"]["feedface"]
    assert lost["status"] == "lost" and "HTTP 404 for batch batch_1" in lost["reason"]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_wait_between_polls_that_is_not_a_finite_number_of_seconds_above_0_is_refused_by_name(tmp_path, value):
    """--poll-interval 0, -1 or nan polled in a busy loop and inf never polled again: refused, naming the option
    (CLI and Python), before anything is uploaded."""
    ws = _workspace(tmp_path, ["poll row"])
    with FaultServer() as srv:
        with pytest.raises(OptionError, match=r"poll_s= \(CLI: --poll-interval\) must be a finite number of seconds"):
            _batch(srv, ws, poll_s=float(value))
        with pytest.raises(OptionError, match="poll_max_s= must be"):
            _batch(srv, ws, poll_max_s=float(value))
        run = curate_in_process("score", ws.path, "--judge", "complexity", "--backend", "openai-batch", "--base-url",
                                srv.base_url, "--model", MODEL, "--poll-interval", value,
                                env={**os.environ, "OPENAI_API_KEY": "k"})
        assert run.returncode != 0 and "--poll-interval" in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert (srv.uploads, srv.batches_created) == (0, 0)


@pytest.mark.parametrize("recorded", ["{url}", "{url}/", "{url}//"])
def test_a_submission_is_resumed_whichever_way_its_base_url_is_written(tmp_path, recorded):
    """A run recorded at .../v1 and re-run at .../v1/ (or the other way round) created a second, paid batch: the
    URLs are compared as the client uses them, records written with the URL as given included."""
    texts = [f"url row {i}" for i in range(3)]
    ws = _workspace(tmp_path, texts)
    with FaultServer() as srv:
        _killed_while_polling(srv, ws, Judge("complexity"), texts, base_url=recorded.format(url=srv.base_url))
        url = srv.base_url if recorded.endswith("/") else srv.base_url + "/"
        backend = OpenAIBatchBackend(url, MODEL, workspace=ws, api_key="k", poll_s=0.05)
        result = ws.apply(Judge("complexity", backend), progress=False)
        assert srv.batches_created == 1 and srv.uploads == 1 and result.failed == 0
    assert [s["status"] for s in ws.artifact("llm-batches")["submissions"].values()] == ["collected"]


def test_no_base_url_is_the_openai_url_the_client_uses(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    backend = OpenAIBatchBackend(None, MODEL, workspace=tmp_path, api_key="k")
    for recorded in (None, "https://api.openai.com/v1", "https://api.openai.com/v1/"):
        assert backend._mine({"model": MODEL, "base_url": recorded})
    assert not backend._mine({"model": MODEL, "base_url": "http://127.0.0.1:8000/v1"})
    assert not backend._mine({"model": "gpt-4o", "base_url": None})


def test_a_submission_a_live_run_is_still_sending_is_left_to_it(tmp_path, monkeypatch):
    """Run B took over a submission live run A had recorded but not yet turned into a batch (a slow upload), and A
    created its batch too: 3 batches for 2 submissions, one paid and never recorded. B now waits for A's batch."""
    import openai.resources.files as files

    ws = _workspace(tmp_path, [f"race row {i}" for i in range(3)])
    release, upload, errors = threading.Event(), files.AsyncFiles.create, []

    async def slow_upload(self, *args, **kwargs):  # a large upload: A's submission stays without a batch meanwhile
        await asyncio.to_thread(release.wait, 90)
        return await upload(self, *args, **kwargs)

    def run_a():
        try:
            ws.apply(Judge("quality", _batch(srv, ws)), progress=False)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    monkeypatch.setattr(files.AsyncFiles, "create", slow_upload)
    with FaultServer() as srv:
        a = threading.Thread(target=run_a)
        a.start()
        deadline = time.monotonic() + 60
        while not BatchState(ws).submissions() and time.monotonic() < deadline:
            time.sleep(0.05)
        cmd = [sys.executable, "-m", "curate.cli", "score", str(ws.path), "--judge", "complexity", "--backend",
               "openai-batch", "--base-url", srv.base_url, "--model", MODEL, "--poll-interval", "0.05"]
        b = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "k"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        err: list[str] = []
        reader = threading.Thread(target=lambda: err.extend(iter(lambda: b.stderr.read(1), "")), daemon=True)
        reader.start()
        while time.monotonic() < deadline and b.poll() is None:  # until B decided what to do with A's submission
            text = "".join(err)
            if "waiting for its batch" in text or text.count("submitted batch") >= 2:
                break
            time.sleep(0.05)
        release.set()
        assert b.wait(120) == 0, "".join(err)[-2000:]
        a.join(120)
        reader.join(10)
        assert not errors and srv.batches_created == 2, (errors, srv.batches_created)
        assert "waiting for its batch, sending nothing" in " ".join("".join(err).split())
    ws = Workspace.open(ws.path)
    assert all(v is not None for v in ws.column("complexity")) and all(v is not None for v in ws.column("quality"))


def test_a_submission_whose_owner_is_gone_is_taken_over_by_one_run(tmp_path):
    """An owner that ended (a process gone, a call of this process that raised) leaves its submission to the next
    run; a live one keeps it; a takeover names the new owner, so a third run leaves it alone."""
    from curate.llm.batch_state import new_owner, running_calls

    ws = _workspace(tmp_path, ["owner row"])
    state, me, other = BatchState(ws), new_owner(), new_owner()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for sid, pid in (("gone", ended.pid), ("live", live.pid)):
            state.record(sid, [], status="uploading", owner={**other, "pid": pid, "call": "elsewhere"})
        state.record("raised", [], status="uploading", owner=other)  # this process, a call no longer running
        running_calls().add("running")
        state.record("running", [], status="uploading", owner={**me, "call": "running"})
        assert state.claim("gone", me)[1] and state.claim("raised", me)[1]
        assert not state.claim("live", me)[1] and not state.claim("running", me)[1]
        running_calls().add(me["call"])  # the run that took it over is running
        taken = state.submissions()["gone"]["owner"]
        assert {k: v for k, v in taken.items() if k != "beat"} == me and not state.claim("gone", other)[1]
    finally:
        running_calls().difference_update({"running", me["call"]})
        live.kill()
        live.wait()


def test_kill9_while_polling_then_rerun_submits_nothing_twice(tmp_path):
    texts = [f"Task number {i}: describe item {i}." for i in range(20)]
    ws, control = _workspace(tmp_path, texts), _workspace(tmp_path, texts, "control")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with FaultServer() as srv:
        srv.hold_batches.set()  # batches stay in_progress until released
        cmd = [sys.executable, "-m", "curate.cli", "score", str(ws.path), "--judge", "complexity", "--backend",
               "openai-batch", "--base-url", srv.base_url, "--model", MODEL, "--poll-interval", "0.1"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None and not (srv.batches_created and srv.polls >= 3):
            time.sleep(0.05)
        assert proc.poll() is None and srv.batches_created == 1, "not polling yet"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert not Workspace.open(ws.path).has_column("complexity")
        polls = srv.polls

        def release():  # let the resumed process poll the held batch a few times first
            while srv.polls < polls + 3:
                time.sleep(0.05)
            srv.hold_batches.clear()

        threading.Thread(target=release, daemon=True).start()
        rerun = curate_in_process(*cmd[3:], env=env)  # the resumed run: what it says and sends, not its process
        assert rerun.returncode == 0, rerun.stderr
        assert "resuming 1 batch(es)" in rerun.stderr
        assert srv.batches_created == 1 and srv.uploads == 1  # 0 duplicate submissions, counted at the fake
        assert sorted(srv.batch_counts.values()) == [1] * 20
        control.apply(Judge("complexity", _online(srv)), progress=False)
    ws = Workspace.open(ws.path)
    assert _by_text(ws, "complexity") == _by_text(control, "complexity")  # the same final column
    assert len(ResponseCache(ws.cache_dir / "responses.sqlite")) == 20


def test_a_local_vllms_compiled_kernels_outlive_its_temporary_folder(tmp_path, monkeypatch):
    """A server's or batch runner's TMPDIR is a folder of its own, removed after it: TorchInductor's kernel cache
    (default $TMPDIR/torchinductor_<user>) went with it, and every start compiled them again at its first request
    (g++, ~45 s on 2 cores). It is kept in curate's vLLM cache; a user's own TORCHINDUCTOR_CACHE_DIR is kept."""
    from curate.llm.local import server_env

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    env = server_env(tmp_path / "home", tmp_path / "run-tmp")
    assert env["TMPDIR"] == str(tmp_path / "run-tmp")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "home" / "vllm-cache" / "torchinductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert server_env(tmp_path / "home", tmp_path / "run-tmp")["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


@pytest.mark.llm
def test_vllm_batch_gives_the_same_scores_as_the_online_local_backend(tmp_path, local_llm):
    from curate.llm.local import curate_home
    from curate.llm.vllm_batch import VLLMBatchBackend

    texts = ["Write a haiku about autumn leaves.", "Explain quicksort in two sentences.",
             "What is 17 * 23?", "List three uses of baking soda.", "Name the planets of the solar system."]
    online, batch = _workspace(tmp_path, texts, "online"), _workspace(tmp_path, texts, "batch")
    # SmolLM2 may fail a row (low_digit_mass, by the CPU's kernels): each call warns exactly when rows failed in it
    reference = apply_and_check_warning(online, Judge("complexity", local_llm.backend()), progress=False)
    runner = VLLMBatchBackend(log_path=tmp_path / "batch.log", dtype=local_llm.dtype)  # the server's dtype
    system_temp = set(Path(tempfile.gettempdir()).glob("vllm_dist_*"))
    result = apply_and_check_warning(batch, Judge("complexity", runner), progress=False)
    # vLLM leaves a vllm_dist_<uuid> file in the temp folder at every start: the runner's and the server's go in
    # folders of their own, removed with them
    assert set(Path(tempfile.gettempdir()).glob("vllm_dist_*")) == system_temp
    assert list(Path(local_llm.tmpdir).glob("vllm_dist_*"))
    # the kernels TorchInductor built at the server's first forward pass are in curate's cache, where the runner
    # (and the next server) finds them (its precompiled header stays in $TMPDIR: torch puts it there whatever the cache)
    assert any((curate_home() / "vllm-cache" / "torchinductor" / "fxgraph").iterdir())
    assert result.provenance["cached_requests"] == 0 and result.provenance["tokens"]["prompt"] > 0  # really run
    assert result.provenance["tokens"]["prompt"] == reference.provenance["tokens"]["prompt"]  # the same prompts
    got, want = _by_text(batch, "complexity"), _by_text(online, "complexity")
    codes = {name: {c[0]["content"]: [f.code for f in fails] for c, fails in
                    zip(w.conversations(), w.failures("complexity"), strict=True)} for name, w in
             (("batch", batch), ("online", online))}
    assert codes["batch"] == codes["online"], codes  # the same rows fail, for the same reason
    assert sum(v[0] is not None for v in got.values()) >= 3
    # float32 kernels agree to rounding; bfloat16 ones (CPUs with native bf16, as in CI) keep 8 mantissa bits and
    # sum in an order that depends on how requests were batched and what the prefix cache held: expected scores
    # 0.03 and 0.12 apart were seen on such CPUs. The prompts are checked exactly above, by their token counts.
    tolerance = 1e-3 if local_llm.dtype == "float32" else 0.3
    for text in texts:
        if want[text][0] is None:
            assert got[text][0] is None
        else:
            assert abs(got[text][0] - want[text][0]) < tolerance, (text, got[text], want[text])


def test_max_cost_caps_what_a_batch_submits_at_the_batch_price(tmp_path):
    from curate.llm.backends import register_price

    register_price("fault-batch-priced", 2000.0, 2000.0, batch=(1000.0, 1000.0))  # $ per 1M tokens
    ws = _workspace(tmp_path, [f"capped row {i}" for i in range(20)])
    with FaultServer() as srv:
        backend = OpenAIBatchBackend(srv.base_url, "fault-batch-priced", workspace=ws, api_key="k", poll_s=0.05,
                                     max_cost=1.0)
        with pytest.warns(CurateWarning, match=r"complexity: \d+ of the 20 rows computed now failed \(\d+ x budget"):
            result = ws.apply(Judge("complexity", backend), progress=False)
        submitted = sum(srv.batch_counts.values())
    assert 0 < submitted < 20 and backend.spent_usd <= 1.0
    codes = [f.code for fails in ws.failures("complexity") for f in fails]
    assert codes == [FailureCode.BUDGET] * (20 - submitted) and result.failed == 20 - submitted
    assert math.isclose(result.provenance["cost_usd"], backend.spent_usd, rel_tol=1e-6)


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (an orphan nobody has reaped yet counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_batch_runner_refusing_a_row_for_its_context_fails_it_context_too_long(tmp_path):
    """Every line the runner refused was recorded model_error, the README's context_too_long overwritten: a runner
    (a real process writing vLLM's output lines) refuses each request as vLLM does a row past the context."""
    from curate.llm.base import Request, run_sync
    from curate.llm.vllm_batch import VLLMBatchBackend

    refusal = {"status_code": 400, "body": {"error": {"message": "This model's maximum context length is 2048 "
                                                                 "tokens. However, you requested 3000 tokens."}}}
    script = ("import json, sys\n"
              "lines = [json.loads(x) for x in open(sys.argv[1])]\n"
              "with open(sys.argv[2], 'w') as out:\n"
              f"    out.writelines(json.dumps({{'custom_id': x['custom_id'], 'response': {refusal!r}}}) + '\\n'"
              " for x in lines)\n")

    class RefusingRunner(VLLMBatchBackend):
        def command(self, input_path, output_path):
            return [sys.executable, "-c", script, str(input_path), str(output_path)]

    backend = RefusingRunner(model_dir=tmp_path, timeout=60, log_path=tmp_path / "runner.log")
    results: dict[str, dict] = {}
    requests = [Request(f"k{i}", [{"role": "user", "content": "long " * 3000}], {"max_tokens": 1}) for i in range(2)]
    run_sync(lambda: backend.run(requests, lambda req, result: results.__setitem__(req.key, result)))
    assert sorted(results) == ["k0", "k1"]
    assert {r["reason_code"] for r in results.values()} == {"context_too_long"}, results
    assert "maximum context length is 2048" in results["k0"]["failure"]


def test_a_batch_runner_past_its_timeout_is_stopped_with_the_processes_it_started(tmp_path):
    """vLLM's runner starts engine and worker processes; stopping only the runner left them running (seen here:
    a worker holding 2 GB and a core for an hour). A timed-out runner now takes its whole process group along."""
    from curate.errors import CurateError
    from curate.llm.vllm_batch import VLLMBatchBackend

    pidfile = tmp_path / "worker.pid"
    script = ("import subprocess, sys, time\n"
              "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
              f"open({str(pidfile)!r}, 'w').write(str(w.pid))\n"
              "time.sleep(120)\n")

    class HangingRunner(VLLMBatchBackend):
        def command(self, input_path, output_path):
            return [sys.executable, "-c", script]

    backend = HangingRunner(model_dir=tmp_path, timeout=4, log_path=tmp_path / "runner.log")
    with pytest.raises(CurateError, match="timeout"):
        backend.run_lines([])
    worker = int(pidfile.read_text())
    deadline = time.monotonic() + 10  # signalled: on a loaded machine it may take a moment to be scheduled and end
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)


def _batch_score(ws, srv) -> list[str]:
    return ["score", str(ws.path), "--judge", "complexity", "--backend", "openai-batch", "--base-url", srv.base_url,
            "--model", MODEL, "--poll-interval", "0.05"]


def test_a_run_waiting_for_its_batch_says_so_and_each_status_it_takes(tmp_path, monkeypatch):
    """After "submitted batch batch_1 (K requests)" nothing was said while the run polled (up to the 24 h window): it
    looked hung. It now says once that it waits, for how long at most, and that Ctrl-C is safe, then each status."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.defaults import BATCH

    monkeypatch.setenv("OPENAI_API_KEY", "k")
    ws = _workspace(tmp_path, [f"waited row {i}" for i in range(3)])
    with FaultServer() as srv:
        srv.batch_seconds = 0.3  # a few polls in progress
        result = CliRunner().invoke(app, _batch_score(ws, srv))
    said = " ".join(result.output.split())
    assert result.exit_code == 0, said
    waiting = ("waiting for batch(es) batch_1: the provider answers within the completion window (24h), often sooner; "
               f"status checked every 0.05 s, backing off to {BATCH.poll_max_s:g} s. Ctrl-C is safe: the batches stay open at the "
               "provider, which bills them when they finish, and a re-run of this command collects them, sending "
               "nothing of them again")
    assert said.count(waiting) == 1, said
    assert said.index("submitted batch batch_1 (3 requests)") < said.index(waiting)
    assert said.index(waiting) < said.index("batch batch_1: in_progress (0 of 3 requests done)") \
        < said.index("batch batch_1: completed (3 of 3 requests done)"), said
    assert said.count("batch batch_1: in_progress") == 1, said  # said as it changes, not at every poll


def test_ctrl_c_while_waiting_names_the_open_batches_and_a_re_run_collects_them(tmp_path):
    """Ctrl-C while a run polled printed the generic interrupt line only: nothing said the batch stays open (and
    billed) at the provider, nor that a re-run collects it. It says both now; the re-run collects it, sending nothing
    again."""
    import signal

    ws = _workspace(tmp_path, [f"interrupted row {i}" for i in range(3)])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "k"}
    with FaultServer() as srv:
        srv.hold_batches.set()  # never finishes while held
        proc = subprocess.Popen([sys.executable, "-m", "curate.cli", *_batch_score(ws, srv)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,  # Ctrl-C as a terminal
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # has it (a test
        # worker's child inherits it ignored, and the CLI leaves an ignored Ctrl-C ignored)
        try:
            deadline = time.monotonic() + 60
            while srv.polls < 2 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        said = " ".join(err.split())
        assert proc.returncode == 130, said
        assert ("stopped while waiting: batch(es) batch_1 still open at the provider (billed there when they finish); "
                "they are recorded in the workspace: a re-run of this command picks them up and collects their "
                "answers, sending nothing of them again") in said, said
        assert said.index("stopped while waiting") < said.index("interrupted: finished work is kept"), said
        srv.hold_batches.clear()
        again = curate_in_process(*_batch_score(ws, srv), env=env)
        assert again.returncode == 0, again.stderr[-2000:]
        assert srv.batches_created == 1 and "resuming 1 batch(es)" in again.stderr, again.stderr[-2000:]
