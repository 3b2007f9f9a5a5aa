"""The openai-batch backend recovering from what a provider or a kill leaves behind: a finished batch whose output
file is gone, open batches a dry run must not count as still to pay, a batch past the first page of the server's
list, a batch collected again after a kill (its spend counted once). Against tests/fault_server.py on loopback."""

import math
import os
import subprocess
import sys
import threading
import time

import openai
import pytest

from curate.codes import FailureCode
from curate.errors import CurateWarning
from curate.llm.base import run_sync
from curate.llm.batch import BatchState, _Call, batch_line
from curate.llm.judges import Judge
from curate.llm.runner import build_requests
from curate.session import Workspace
from tests.cli_in_process import curate_in_process
from tests.fault_server import FaultServer
from tests.test_batch import MODEL, REPO, _batch, _killed_while_polling, _online, _workspace


def _finished_without_output(srv, ws, texts):
    """A batch a killed run left recorded, finished at the server, whose output file the server then lost."""
    _killed_while_polling(srv, ws, Judge("complexity"), texts, base_url=srv.base_url)
    with openai.OpenAI(base_url=srv.base_url, api_key="k") as client:
        batch = client.batches.retrieve("batch_1")  # the fake finishes it on this poll
    assert batch.status == "completed" and batch.output_file_id
    srv.forget_files(batch.output_file_id)
    return batch.output_file_id


def test_a_finished_batch_whose_output_file_is_gone_is_resubmitted_with_its_own_reason(tmp_path):
    """A 404 on a finished batch's output file stopped the run blaming "the model name or the endpoint": its requests,
    whose answers are lost, now go again in a new batch, and the submission records which file of which batch."""
    texts = [f"lost output row {i}" for i in range(3)]
    ws = _workspace(tmp_path, texts)
    events: list[str] = []
    with FaultServer() as srv:
        fid = _finished_without_output(srv, ws, texts)
        result = ws.apply(Judge("complexity", _batch(srv, ws, on_event=events.append)), progress=False)
        assert srv.batches_created == 2 and sorted(srv.batch_counts.values()) == [2] * 3
    assert result.failed == 0 and all(v is not None for v in ws.column("complexity"))
    entry = ws.artifact("llm-batches")["submissions"]["feedface"]
    assert entry["status"] == "collected" and entry["lost_files"] == [fid]
    assert f"output file {fid} of batch batch_1 is unknown to the server (HTTP 404)" in entry["reason"]
    assert any(f"output file {fid} of batch batch_1" in e and "resubmitting 3" in e for e in events), events


def test_a_lost_output_file_past_the_resubmissions_fails_its_rows_naming_batch_and_file(tmp_path):
    texts = [f"lost output row {i}" for i in range(2)]
    ws = _workspace(tmp_path, texts)
    with FaultServer() as srv:
        fid = _finished_without_output(srv, ws, texts)
        with pytest.warns(CurateWarning, match=r"complexity: 2 of the 2 rows computed now failed"):
            result = ws.apply(Judge("complexity", _batch(srv, ws, resubmits=0)), progress=False)
        assert srv.batches_created == 1
    fails = [f for row in ws.failures("complexity") for f in row]
    assert result.failed == 2 and [f.code for f in fails] == [FailureCode.TRANSIENT] * 2
    assert all(f"output file {fid} of batch batch_1 is unknown to the server (HTTP 404)" in f.message for f in fails)
    assert all("model name" not in f.message for f in fails)



def test_a_dry_run_leaves_out_the_requests_already_in_open_batches(tmp_path):
    """A dry run priced the requests a killed run had already submitted (a batch still open) as still to pay; a
    re-run resumes that batch and sends them not again: the estimate leaves them out and says how many."""
    from curate.llm.dryrun import estimate

    texts = [f"dry row {i}" for i in range(4)]
    ws = _workspace(tmp_path, texts)
    with FaultServer() as srv:
        srv.hold_batches.set()
        _killed_while_polling(srv, ws, Judge("complexity"), texts[:3], base_url=srv.base_url)
        backend = _batch(srv, ws)
        everything = estimate(ws, Judge("complexity", _online(srv)))
        plan = estimate(ws, Judge("complexity", backend))
        cli = curate_in_process("score", ws.path, "--judge", "complexity", "--backend", "openai-batch", "--base-url",
                                srv.base_url, "--model", MODEL, "--dry-run", env={**os.environ, "OPENAI_API_KEY": "k"})
        assert (srv.uploads, srv.batches_created) == (1, 1)  # the killed run's only: the dry runs sent nothing
    assert (everything.to_send, plan.requests, plan.to_send) == (4, 4, 1) and plan.in_open_batches == 3
    assert plan.prompt_tokens < everything.prompt_tokens / 2 and plan.usd_batch < everything.usd_batch / 2
    assert any("3 request(s) were submitted in batches still open" in n for n in plan.notes)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "3 already in open batches, 1 to send" in " ".join(cli.stdout.split()), cli.stdout


def test_a_batch_past_the_first_page_of_the_servers_list_is_adopted_not_created_again(tmp_path):
    """A run killed between "create" and "record" is found again by the server's list of batches; only its first page
    (100) was read, so with 100 newer batches a second, paid batch was created. Every page is read now."""
    texts = [f"paged row {i}" for i in range(3)]
    ws = _workspace(tmp_path, texts)
    judge = Judge("complexity")
    with FaultServer() as srv:
        backend = _batch(srv, ws)
        requests = build_requests(judge.prompt, [{"instruction": t} for t in texts], backend)
        with openai.OpenAI(base_url=srv.base_url, api_key="k") as client:
            upload = client.files.create(file=("x.jsonl", b"".join(batch_line(r, MODEL) for r in requests)),
                                         purpose="batch")
            BatchState(ws).record("cafebabe", [r.key for r in requests], status="creating", model=MODEL,
                                  base_url=srv.base_url, attempt=0, requests=3, input_file_id=upload.id)
            client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"curate_submission": "cafebabe"})
            other = client.files.create(file=("other.jsonl", b""), purpose="batch")
            for _ in range(100):  # newer batches of other work: the killed run's is on the second page
                client.batches.create(input_file_id=other.id, endpoint="/v1/chat/completions", completion_window="24h")
        result = ws.apply(judge.with_backend(backend), progress=False)
        assert srv.batches_created == 101 and srv.uploads == 2
    assert result.failed == 0 and ws.artifact("llm-batches")["submissions"]["cafebabe"]["batch_id"] == "batch_1"


_KILLED_BEFORE_COLLECTED = """
import os, runpy, sys
from curate.llm import batch_state

record = batch_state.BatchState.record

def killed_before_collected(self, sid, keys=None, **fields):  # kill -9 right after the answers were delivered
    if fields.get("status") == "collected":
        os._exit(9)
    return record(self, sid, keys, **fields)

batch_state.BatchState.record = killed_before_collected
sys.argv = ["curate", *sys.argv[1:]]
runpy.run_module("curate.cli", run_name="__main__")
"""


def test_a_batch_collected_again_after_a_kill_counts_its_spend_once(tmp_path):
    """Killed after a batch's answers were delivered (cached, listed as paid but unrecorded) and before it was marked
    collected: the next run collecting it counted its cost and tokens again (a second charge under max_cost) and put
    its answers back on the unrecorded list, so a later run billed them a second time in its record."""
    texts = [f"spend row {i}" for i in range(3)]
    ws = _workspace(tmp_path, texts)
    with FaultServer() as srv:
        cmd = [sys.executable, "-c", _KILLED_BEFORE_COLLECTED, "score", str(ws.path), "--judge", "complexity",
               "--backend", "openai-batch", "--base-url", srv.base_url, "--model", MODEL, "--poll-interval", "0.05"]
        killed = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "k"},
                                capture_output=True, text=True, timeout=120)
        assert killed.returncode == 9, killed.stderr[-2000:]
        ws = Workspace.open(ws.path)
        assert [s["status"] for s in ws.artifact("llm-batches")["submissions"].values()] == ["completed"]
        resumed = ws.apply(Judge("complexity", _batch(srv, ws)), progress=False)  # answered by the cache
        paid = resumed.provenance["cost_usd"]
        assert paid > 0 and resumed.provenance["requests_paid_by_stopped_run"] == 3  # billed once, here
        other = _batch(srv, ws)
        quality = ws.apply(Judge("quality", other), progress=False)  # collects the killed run's batch too
        assert srv.batches_created == 2
        assert math.isclose(other.spent_usd, quality.provenance["cost_usd"], rel_tol=1e-9)  # its own batch only
        assert other.prompt_tokens == quality.provenance["tokens"]["prompt"]
        again = ws.apply(Judge("complexity", _online(srv)), force=True, progress=False)
        assert srv.total == 0 and again.provenance["cost_usd"] == 0  # nothing billed a second time
    assert [s["status"] for s in ws.artifact("llm-batches")["submissions"].values()] == ["collected"] * 2


def _two_runs_on_one_held_batch(srv, ws, texts, on_result=None) -> list[str]:
    """Run A submits ``texts`` in a batch the server holds; run B starts once A's batch exists and resumes it; the
    batch is let go once B says it resumes it; both runs end. The backends' events."""
    events: list[str] = []
    srv.hold_batches.set()
    requests = build_requests(Judge("complexity").prompt, [{"instruction": t} for t in texts], _batch(srv, ws))

    def run(name: str) -> None:
        backend = _batch(srv, ws, on_event=events.append)
        run_sync(lambda: backend.run(requests, lambda req, result: (on_result or (lambda *a: None))(name, req, result)))

    a = threading.Thread(target=run, args=("a",))
    a.start()
    deadline = time.monotonic() + 60
    while not any(s.get("batch_id") for s in BatchState(ws).submissions().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    b = threading.Thread(target=run, args=("b",))
    b.start()
    while not any("resuming 1 batch" in e for e in events) and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.hold_batches.clear()
    a.join(120)
    b.join(120)
    return events


def test_two_runs_collecting_one_finished_batch_resubmit_its_failed_share_once(tmp_path):
    """Two runs polling one batch (the second resumed the first's submission) both collected it when it finished and
    both resubmitted its failed share: two retry batches, one paid for nothing. One run collects it now (the
    submission records its collector); the other waits for it, then takes its answers and adopts its retry batch."""
    texts = ["share row 0", "share row 1", "share row 2 [batch500]"]
    ws = _workspace(tmp_path, texts)
    got: dict[str, dict[str, dict]] = {"a": {}, "b": {}}
    with FaultServer() as srv:
        requests = build_requests(Judge("complexity").prompt, [{"instruction": t} for t in texts], _batch(srv, ws))
        events = _two_runs_on_one_held_batch(srv, ws, texts, lambda name, req, result: got[name].__setitem__(req.key,
                                                                                                            result))
        assert srv.batches_created == 2, events  # the batch and one retry batch of its failed share
        assert sorted(srv.batch_counts.values()) == [1, 1, 2]
    for name in "ab":
        assert sorted(got[name]) == sorted(r.key for r in requests)
        assert not [r for r in got[name].values() if "failure" in r], got[name]
    assert sorted(s["status"] for s in BatchState(ws).submissions().values()) == ["collected"] * 2


def test_a_run_that_waited_for_another_runs_collect_counts_none_of_its_answers_again(tmp_path):
    """A run waiting while another collects a batch held a copy of its entry from before the collect began (no
    ``delivering`` mark): collecting after it, it took itself for the first collect and delivered again every answer
    its own call did not ask for, counting their cost and tokens twice and listing them as unpaid-for again. The mark
    it reads is the one its claim read under the lock, and its second collect leaves the first one's record alone."""
    texts = [f"stale row {i}" for i in range(3)]
    ws = _workspace(tmp_path, texts)
    with FaultServer() as srv:
        _killed_while_polling(srv, ws, Judge("complexity"), texts, base_url=srv.base_url)
        keys = BatchState(ws).keys("feedface")
        waiting = _batch(srv, ws)
        stale = BatchState(ws).submissions()["feedface"]  # read before the other run began collecting
        assert ws.apply(Judge("complexity", _batch(srv, ws)), progress=False).failed == 0
        first = BatchState(ws).submissions()["feedface"]
        assert first["status"] == "collected" and first.get("delivering")
        assert not waiting.cache.unrecorded(keys)

        async def collect_after_it() -> None:
            client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="k")
            call = _Call(waiting, client, {}, lambda req, result: None)
            call.open["feedface"] = dict(stale)
            await call.collect("feedface", await client.batches.retrieve(stale["batch_id"]))
            await client.close()

        run_sync(collect_after_it)
        assert (waiting.spent_usd, waiting.prompt_tokens, waiting.completion_tokens) == (0, 0, 0)
        assert not waiting.cache.unrecorded(keys)  # not billed again by a later run
    after = BatchState(ws).submissions()["feedface"]
    assert after["collector"] == first["collector"] and after["updated"] == first["updated"]


def test_two_runs_polling_a_batch_the_server_forgot_submit_its_requests_again_once(tmp_path):
    """Two live runs polling one batch the server then forgot (HTTP 404) both marked it lost and both submitted its
    requests again: two new batches where one is right. One run marks it lost and resubmits; the other waits for it,
    then polls the batch it made."""
    texts = [f"lost twice row {i}" for i in range(3)]
    ws = _workspace(tmp_path, texts)
    events: list[str] = []
    got: dict[str, dict[str, dict]] = {"a": {}, "b": {}}
    with FaultServer() as srv:
        srv.hold_batches.set()
        _killed_while_polling(srv, ws, Judge("complexity"), texts, base_url=srv.base_url)
        requests = build_requests(Judge("complexity").prompt, [{"instruction": t} for t in texts], _batch(srv, ws))

        def run(name: str) -> None:
            backend = _batch(srv, ws, on_event=events.append)
            run_sync(lambda: backend.run(requests, lambda req, result: got[name].__setitem__(req.key, result)))

        runs = [threading.Thread(target=run, args=(name,)) for name in "ab"]
        for thread in runs:
            thread.start()
        deadline = time.monotonic() + 60
        while sum("resuming 1 batch" in e for e in events) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # both are polling it
        srv.forget_batches()
        time.sleep(1.0)  # both have had its 404
        srv.hold_batches.clear()
        for thread in runs:
            thread.join(120)
        assert srv.batches_created == 2, events  # the lost batch and one resubmission
    for name in "ab":
        assert sorted(got[name]) == sorted(r.key for r in requests)
        assert not [r for r in got[name].values() if "failure" in r], got[name]
    index = BatchState(ws).submissions()
    assert index["feedface"]["status"] == "lost" and [e["parent"] for s, e in index.items() if s != "feedface"] == [
        "feedface"]


def test_a_second_collect_leaves_the_first_ones_record_of_its_resubmission(tmp_path):
    """The run that waited for another's collect rewrote the batch's record after it: ``resubmitted`` 0 and itself as
    ``collector``, though the first collect's retry batch exists. The record is the first collect's."""
    texts = ["record row 0", "record row 1", "record row 2 [batch500]"]
    ws = _workspace(tmp_path, texts)
    with FaultServer() as srv:
        events = _two_runs_on_one_held_batch(srv, ws, texts)
        assert srv.batches_created == 2, events
    (parent,) = [e for e in BatchState(ws).submissions().values() if not e.get("parent")]
    (child,) = [e for e in BatchState(ws).submissions().values() if e.get("parent")]
    assert parent["resubmitted"] == 1 and parent["collector"]["call"] == child["owner"]["call"]


def test_a_retry_batch_made_for_a_lost_retry_batch_is_adopted_by_a_later_collect(tmp_path):
    """A batch's failed share went again in a retry batch the server then lost, whose requests went again in a third
    batch: a run collecting the first batch after that dropped the lost retry batch's requests and never polled the
    third batch, so its rows ended "no answer came back" though that batch answers them. It follows the chain."""
    texts = ["chain row 0", "chain row 1 [batch500]"]
    ws = _workspace(tmp_path, texts)
    got: dict[str, dict] = {}
    with FaultServer() as srv:
        _killed_while_polling(srv, ws, Judge("complexity"), texts, base_url=srv.base_url)
        backend = _batch(srv, ws)
        requests = build_requests(Judge("complexity").prompt, [{"instruction": t} for t in texts], backend)
        failing = [r for r in requests if "[batch500]" in str(r.messages)]
        state, common = BatchState(ws), {"model": MODEL, "base_url": srv.base_url, "requests": 1}
        state.record("c0ffee", [failing[0].key], status="lost", parent="feedface", attempt=1, batch_id="batch_gone",
                     **common)

        async def collect_after_it() -> None:
            client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="k")
            upload = await client.files.create(file=("g.jsonl", batch_line(failing[0], MODEL)), purpose="batch")
            third = await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                                completion_window="24h", metadata={"curate_submission": "grandkid"})
            state.record("grandkid", [failing[0].key], status="in_progress", parent="c0ffee", attempt=2,
                         batch_id=third.id, input_file_id=upload.id, **common)
            call = _Call(backend, client, {r.key: r for r in requests},
                         lambda req, result: got.__setitem__(req.key, result))
            call.open["feedface"] = state.submissions()["feedface"]
            await call.poll()
            await client.close()

        run_sync(collect_after_it)
        assert srv.batches_created == 2  # the first batch and the third: nothing made again
    assert sorted(got) == sorted(r.key for r in requests)
    assert not [r for r in got.values() if "failure" in r], got
    assert BatchState(ws).submissions()["grandkid"]["status"] == "collected"


def test_a_run_of_other_requests_leaves_a_submission_cut_short_in_its_upload_to_a_run_that_holds_them(tmp_path):
    """A run killed during its upload left a submission with no file and no batch; the next run with that model, of
    other rows (another column), took it up and uploaded the requests of it that it held: none, an empty file, which
    the batch API refuses, so each such run failed (the fault server accepts it: measured by the uploads and batches
    made). The run that holds its requests still uploads and finishes it."""
    texts, others = [f"cut short row {i}" for i in range(3)], [f"other row {i}" for i in range(2)]
    ws = _workspace(tmp_path, texts + others)
    judge = Judge("complexity")
    with FaultServer() as srv:
        backend = _batch(srv, ws)
        requests = build_requests(judge.prompt, [{"instruction": t} for t in texts], backend)
        BatchState(ws).record("deadbeef", [r.key for r in requests], status="uploading", model=MODEL,
                              base_url=srv.base_url, attempt=0, requests=3, created=time.time())
        other = ws.apply(judge.with_backend(backend), ws.ids[3:], progress=False)
        assert (srv.uploads, srv.batches_created) == (1, 1)  # its own batch only (old: 2 and 2, one of them empty)
        entry = BatchState(ws).submissions()["deadbeef"]
        assert entry["status"] == "uploading" and not entry.get("input_file_id")
        holder = ws.apply(judge.with_backend(_batch(srv, ws)), progress=False)
        assert srv.uploads == 2 and BatchState(ws).submissions()["deadbeef"].get("batch_id")
    assert other.failed == 0 and holder.failed == 0
