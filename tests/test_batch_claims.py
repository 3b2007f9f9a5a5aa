"""The openai-batch backend's claims under stalls: a collect whose delivery blocks its event loop keeps beating, an
owner that stalled past the expiry and was taken over creates no batch of its own, and a heartbeat write that fails
is retried and neither ends the beating nor fails the call. Runs of "other machines" are calls of this process whose
owner names another machine (a workspace shared over NFS), against tests/fault_server.py on loopback."""

import threading
import time
import warnings

import openai
import pytest

from curate.errors import BatchClaimWarning
from curate.llm.base import run_sync
from curate.llm.batch import BatchState, _Call
from curate.llm.judges import Judge
from curate.llm.runner import build_requests
from tests.fault_server import FaultServer
from tests.test_batch import _batch, _killed_while_polling, _workspace


def _requests(srv, ws, texts):
    return {r.key: r for r in build_requests(Judge("complexity").prompt, [{"instruction": t} for t in texts],
                                             _batch(srv, ws))}


def _call_on(machine, srv, backend, by_key, on_done, steps=None):
    """A thread running a call of ``backend`` as a run of ``machine``: its whole ``go`` or, given, ``steps(call)``;
    its exception, if any, in the thread's ``errors``."""
    errors: list[BaseException] = []

    async def run():
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="k")
        call = _Call(backend, client, dict(by_key), on_done)
        call.me["machine"] = machine  # the same dict its heartbeat beats
        try:
            await (steps(call) if steps else call.go())
        finally:
            await client.close()

    def target():
        try:
            run_sync(run)
        except BaseException as exc:  # noqa: BLE001 - the test asserts none
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.errors = errors
    thread.start()
    return thread


def _into_cache(backend, got):
    """An ``on_done`` that keeps each answer in ``got`` and, as the runner does, in the response cache."""
    def on_done(req, result, cached=False):
        got[req.key] = result
        if "failure" not in result and not cached:
            backend.cache.put(req.key, result)
    return on_done


def _wait(condition, what, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)



def _polls_without_beating(ws):
    """A call's steps that poll (collect, resubmit) submission ``feedface`` without the heartbeat: the whole process
    stalls, so a run of another machine may take its claims over."""

    async def stalled(call):
        call.open["feedface"] = BatchState(ws).submissions()["feedface"]
        await call.poll()

    return stalled


def _two_run_scenario(tmp_path, texts: list[str]):
    """(workspace of ``texts``, each run's answers by key, run a's notices, run a's heartbeat-less poll steps)."""
    ws = _workspace(tmp_path, texts)
    return ws, {"a": {}, "b": {}}, [], _polls_without_beating(ws)


def _two_backends(srv, ws, events_a: list[str]):
    """Run a's and run b's batch backends on one workspace (claims expire after 1 s; run a's notices in ``events_a``)."""
    return (_batch(srv, ws, poll_max_s=0.1, claim_expiry_s=1.0, on_event=events_a.append),
            _batch(srv, ws, poll_max_s=0.1, claim_expiry_s=1.0))


def _wait_for_collector(ws, machine: str) -> None:
    _wait(lambda: (BatchState(ws).submissions()["feedface"].get("collector") or {}).get("machine") == machine,
          f"the run on {machine} claims the collect")


def _both_end(a, b) -> None:
    """Both calls end, without an error."""
    a.join(60)
    b.join(60)
    assert not a.is_alive() and not b.is_alive() and a.errors == b.errors == [], (a.errors, b.errors)


def _both_got_every_answer(got: dict[str, dict], by_key: dict) -> None:
    """Each run delivered every request's answer, none a failure."""
    assert sorted(got["a"]) == sorted(got["b"]) == sorted(by_key)
    assert not [r for run in got.values() for r in run.values() if "failure" in r], got


def test_a_collect_whose_delivery_blocks_its_loop_past_the_expiry_is_not_taken_over(tmp_path):
    """The heartbeat ran on the event loop that delivers: a collect delivering (synchronously, e.g. 50K answers into
    SQLite) for longer than claim_expiry_s stopped beating, and a run of another machine took its collect over while
    it ran, delivering and resubmitting it a second time. The claims beat from a thread now: the other run waits."""
    texts = [f"slow delivery row {i}" for i in range(3)]
    ws = _workspace(tmp_path, texts)
    got: dict[str, dict] = {"a": {}, "b": {}}
    events_b: list[str] = []

    def slow(req, result):  # blocks the loop: 4.5 s in all, 4.5 expiries
        time.sleep(1.5)
        got["a"][req.key] = result

    with FaultServer() as srv:
        _killed_while_polling(srv, ws, Judge("complexity"), texts, base_url=srv.base_url)
        by_key = _requests(srv, ws, texts)
        a = _call_on("host-a ns", srv, _batch(srv, ws, poll_max_s=0.1, claim_expiry_s=1.0), by_key, slow)
        _wait_for_collector(ws, "host-a ns")
        b = _call_on("host-b ns", srv, _batch(srv, ws, poll_max_s=0.1, claim_expiry_s=1.0, on_event=events_b.append),
                     by_key, lambda req, result: got["b"].__setitem__(req.key, result))
        _both_end(a, b)
        assert srv.batches_created == 1
    entry = BatchState(ws).submissions()["feedface"]
    assert "taken_over" not in entry and entry["collector"]["machine"] == "host-a ns", entry
    assert entry["status"] == "collected"
    assert not [e for e in events_b if "taking it over" in e], events_b
    _both_got_every_answer(got, by_key)


@pytest.mark.parametrize("told_by", ["on_event", "warning"])
def test_an_owner_stalled_past_the_expiry_and_taken_over_creates_no_batch_of_its_own(tmp_path, told_by):
    """A run stalled in its upload (its heartbeat stopped with it) past claim_expiry_s: a run of another machine took
    its submission over and created the batch; the first one, resuming, created a second batch of the same requests
    (paid twice). It re-checks its claim right before creating the batch: taken over, it says so, waits for the
    other run's batch, and takes its answers from it. Without ``on_event`` (a Python API or notebook user) that was
    said to no one: it is a ``BatchClaimWarning`` then."""
    texts = [f"stalled owner row {i}" for i in range(4)]
    ws = _workspace(tmp_path, texts)
    got: dict[str, dict] = {"a": {}, "b": {}}
    events_a: list[str] = []

    async def stalled(call):  # submit, then poll: as go_on, but without the heartbeat (the whole process stalls)
        await call.submit(list(call.by_key.values()), attempt=0)
        await call.poll()

    with FaultServer() as srv, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        by_key = _requests(srv, ws, texts)
        srv.hold_uploads.set()
        told = events_a.append if told_by == "on_event" else None
        a = _call_on("host-a ns", srv, _batch(srv, ws, poll_max_s=0.1, claim_expiry_s=1.0, on_event=told),
                     by_key, lambda req, result: got["a"].__setitem__(req.key, result), steps=stalled)
        _wait(lambda: BatchState(ws).submissions(), "run a records its submission")
        (sid,) = BatchState(ws).submissions()
        b = _call_on("host-b ns", srv, _batch(srv, ws, poll_max_s=0.1, claim_expiry_s=1.0), by_key,
                     lambda req, result: got["b"].__setitem__(req.key, result))
        _wait(lambda: "taken_over" in BatchState(ws).submissions()[sid], "run b takes the stalled submission over")
        srv.hold_uploads.clear()  # run a resumes
        _both_end(a, b)
        assert srv.batches_created == 1, events_a  # run b's: the requests were sent once
        assert sorted(srv.batch_counts.values()) == [1] * 4
    if told_by == "warning":
        events_a = [str(w.message) for w in caught if issubclass(w.category, BatchClaimWarning)]
    entry = BatchState(ws).submissions()[sid]
    assert entry["taken_over"]["from"]["machine"] == "host-a ns" and entry["owner"]["machine"] == "host-b ns"
    assert any(f"submission {sid}: this run's owner claim was taken over meanwhile by a run on host-b" in e
               for e in events_a), events_a
    _both_got_every_answer(got, by_key)


@pytest.mark.parametrize("told_by", ["on_event", "warning"])
def test_a_failed_heartbeat_write_is_retried_and_neither_stops_the_beat_nor_fails_the_call(tmp_path, told_by):
    """One failed heartbeat write ended the heartbeat (the claims stopped beating for the rest of the call, free for
    runs of other machines to take over) and failed the call at its end, after every answer had come. A failed beat
    is tried again, said once its tries are spent, and the beating goes on: the call completes. Without ``on_event``
    (a Python API or notebook user) the failure was said to no one: it is a ``BatchClaimWarning`` then."""
    texts = [f"beat failure row {i}" for i in range(3)]
    ws = _workspace(tmp_path, texts)
    events: list[str] = []
    outcome: list = []
    index = ws.path / "artifacts" / "llm-batches.json"
    with FaultServer() as srv, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        srv.hold_batches.set()
        backend = _batch(srv, ws, poll_max_s=0.1, claim_expiry_s=0.8,
                         on_event=events.append if told_by == "on_event" else None)
        run = threading.Thread(target=lambda: outcome.append(ws.apply(Judge("complexity", backend), progress=False)),
                               daemon=True)
        run.start()
        _wait(lambda: [s for s in BatchState(ws).submissions().values() if s.get("status") == "in_progress"],
              "the batch is created, polled")
        (owner,) = [s["owner"] for s in BatchState(ws).submissions().values()]
        BatchState(ws).record("c0ffee00", collector={**owner, "beat": 0.0})  # a claim of the run, to see it beat
        kept = index.with_name("llm-batches.kept")
        index.rename(kept)
        index.mkdir()  # the index unreadable, unwritable: IsADirectoryError, as a storage hiccup's OSError
        try:
            time.sleep(0.6)  # over 2 beats (every 0.2 s), each tried 4 times within 0.2 s
        finally:
            index.rmdir()
            kept.rename(index)
        _wait(lambda: BatchState(ws).submissions()["c0ffee00"]["collector"]["beat"] > 0, "it beats again", 10)
        srv.hold_batches.clear()
        run.join(60)
        assert not run.is_alive()
    (result,) = outcome  # the old code raised IsADirectoryError here, every answer in
    assert result.failed == 0 and all(v is not None for v in ws.column("complexity"))
    if told_by == "warning":
        events = [str(w.message) for w in caught if issubclass(w.category, BatchClaimWarning)]
    (said,) = [e for e in events if "heartbeat" in e]  # one line for the streak of beats whose 4 tries failed
    assert "heartbeat of this run's batch claims failed 4 times in a row (IsADirectoryError" in said, events
    assert "llm-batches.json" in said and "tried again every 0.2 s" in said, said


def test_a_collector_stalled_past_the_expiry_and_taken_over_leaves_the_collect_to_the_run_that_took_it(tmp_path):
    """A run stalled reading a finished batch's files (its heartbeat stopped with it) past claim_expiry_s: a run of
    another machine took the collect over, delivered it and resubmitted its failed share; the first one, resuming,
    delivered it as well, counting its cost a second time (measured: $0.0000583 in one run's record, $0.0000387 in
    the other's, for one batch's $0.0000583), free to resubmit the share again. It re-checks its claim before
    delivering: taken over, it waits for that collect, then takes the answers as cache hits."""
    texts = ["stalled collector row 0", "stalled collector row 1", "stalled collector row 2 [batch500]"]
    ws, got, events_a, stalled = _two_run_scenario(tmp_path, texts)

    with FaultServer() as srv:
        _killed_while_polling(srv, ws, Judge("complexity"), texts, base_url=srv.base_url)
        by_key = _requests(srv, ws, texts)
        srv.hold_files.set()
        backend_a, backend_b = _two_backends(srv, ws, events_a)
        a = _call_on("host-a ns", srv, backend_a, by_key, _into_cache(backend_a, got["a"]), steps=stalled)
        _wait_for_collector(ws, "host-a ns")
        b = _call_on("host-b ns", srv, backend_b, by_key, _into_cache(backend_b, got["b"]))
        _wait(lambda: "taken_over" in BatchState(ws).submissions()["feedface"], "run b takes the collect over")
        srv.hold_files.clear()  # both read the files now; run a resumes
        _both_end(a, b)
        assert srv.batches_created == 2, events_a  # the batch and one retry batch of its failed share
        assert sorted(srv.batch_counts.values()) == [1, 1, 2]
    assert backend_b.spent_usd > 0 and backend_a.spent_usd == 0, (backend_a.spent_usd, backend_b.spent_usd)
    entry = BatchState(ws).submissions()["feedface"]
    assert entry["collector"]["machine"] == "host-b ns" and entry["taken_over"]["from"]["machine"] == "host-a ns"
    assert any("submission feedface: this run's collector claim was taken over meanwhile by a run on host-b" in e
               for e in events_a), events_a
    _both_got_every_answer(got, by_key)


def test_a_run_waiting_for_another_runs_batch_collects_it_when_that_run_made_and_collected_it_meanwhile(tmp_path):
    """A run waiting for another run's submission (a live owner, or one that took it over) dropped it when it found
    it settled: the other run had created and collected its batch between two polls. Every one of its requests then
    failed "no answer came back from the batch", the answers sitting in the cache. It collects it now, as cache hits,
    leaving the settled record as it is."""
    texts = [f"waited row {i}" for i in range(3)]
    ws = _workspace(tmp_path, texts)
    got: dict[str, dict] = {}
    with FaultServer() as srv:
        by_key = _requests(srv, ws, texts)
        assert ws.apply(Judge("complexity", _batch(srv, ws)), progress=False).failed == 0  # the other run
        ((sid, settled),) = BatchState(ws).submissions().items()
        assert settled["status"] == "collected"
        waiting = _batch(srv, ws)

        async def poll_from_before_its_batch():
            client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="k")
            call = _Call(waiting, client, dict(by_key), lambda req, result, cached=False: got.__setitem__(req.key,
                                                                                                         result))
            call.open[sid] = {k: v for k, v in settled.items() if k != "batch_id"} | {"status": "creating"}
            await call.poll()
            await client.close()

        run_sync(poll_from_before_its_batch)
        assert srv.batches_created == 1
    assert sorted(got) == sorted(by_key) and not [r for r in got.values() if "failure" in r], got
    assert waiting.spent_usd == 0  # the other run's record counts them
    assert BatchState(ws).submissions()[sid] == settled


def test_a_collect_taken_over_before_its_resubmission_counts_its_answers_once_when_it_collects_again(tmp_path):
    """A collect delivered a batch's answers, then, about to resubmit its failed share, found its collector claim
    taken over meanwhile (it stalled past the expiry): it left the batch to the run that took it and, once that one
    had settled it, collected it again. The answers it had delivered were not reported twice, but their cost and
    tokens were counted again (measured: spent $0.0000768 for answers costing $0.0000384), tripping max_cost early.
    A re-collect counts only what this call has not delivered yet."""
    texts = ["recollect row 0", "recollect row 1", "recollect row 2 [batch500]"]
    ws = _workspace(tmp_path, texts)
    got: dict[str, dict] = {"a": {}, "b": {}}
    counted: list[dict] = []  # the answers run a reported as its own spending (not cache hits)
    events_a: list[str] = []

    stalled = _polls_without_beating(ws)

    def stalls_in_delivery(req, result, cached=False):  # its first answer: stalls until run b took the collect over
        if not got["a"]:
            srv.hold_files.set()  # run b, taking over, reads the files only once run a gave the collect up
            _wait(lambda: "taken_over" in BatchState(ws).submissions()["feedface"], "run b takes the collect over")
        _into_cache(backend_a, got["a"])(req, result, cached)
        if not cached and "failure" not in result:
            counted.append(result)

    with FaultServer() as srv:
        _killed_while_polling(srv, ws, Judge("complexity"), texts, base_url=srv.base_url)
        by_key = _requests(srv, ws, texts)
        backend_a, backend_b = _two_backends(srv, ws, events_a)
        a = _call_on("host-a ns", srv, backend_a, by_key, stalls_in_delivery, steps=stalled)
        _wait_for_collector(ws, "host-a ns")
        b = _call_on("host-b ns", srv, backend_b, by_key, _into_cache(backend_b, got["b"]))
        _wait(lambda: any("collector claim was taken over meanwhile" in e for e in events_a), "run a gives it up")
        srv.hold_files.clear()
        _both_end(a, b)
        assert srv.batches_created == 2, events_a  # the batch and run b's one retry batch of its failed share
    assert BatchState(ws).submissions()["feedface"]["status"] == "collected"
    _both_got_every_answer(got, by_key)
    assert len(counted) >= 2  # the two answers of its first collect (the retry's, if it collected that first)
    assert backend_a.spent_usd == pytest.approx(sum(r["cost_usd"] for r in counted)), backend_a.spent_usd
    assert backend_a.prompt_tokens == sum(r["usage"]["prompt_tokens"] for r in counted)


@pytest.mark.parametrize("stalled_in", ["submit", "resume"])
def test_an_owner_stalled_in_its_upload_and_taken_over_leaves_the_takers_record_as_it_is(tmp_path, stalled_in):
    """A run stalled in its upload (its first, or the one a resumed submission needs again) past claim_expiry_s was
    taken over; the run that took it uploaded again and created the batch. Resuming, the first run recorded its own
    upload's file id on the submission (and, in its first upload, status "creating") before it checked its claim: the
    index paired the taker's batch with the wrong input file. It records its upload only while the claim is its own."""
    from curate.llm.batch_state import normal_url
    from tests.test_batch import MODEL

    texts = [f"upload taken over row {i}" for i in range(3)]
    ws = _workspace(tmp_path, texts)
    events_a: list[str] = []
    got: dict[str, dict] = {"a": {}, "b": {}}

    async def stalled(call):  # as go_on, without the heartbeat (the whole process stalls)
        if stalled_in == "submit":
            await call.submit(list(call.by_key.values()), attempt=0)
        else:
            call.open["5ca1ab1e"] = BatchState(ws).submissions()["5ca1ab1e"]
            await call.create("5ca1ab1e")
        await call.poll()

    with FaultServer() as srv:
        by_key = _requests(srv, ws, texts)
        if stalled_in == "resume":  # a run killed before its upload finished, that named no owner
            BatchState(ws).record("5ca1ab1e", list(by_key), status="uploading", model=MODEL, attempt=0,
                                  base_url=normal_url(srv.base_url), requests=len(by_key), created=time.time())
        srv.hold_uploads.set()
        srv.hold_batches.set()
        a = _call_on("host-a ns", srv, _batch(srv, ws, poll_max_s=0.1, claim_expiry_s=1.0, on_event=events_a.append),
                     by_key, lambda req, result: got["a"].__setitem__(req.key, result), steps=stalled)
        _wait(lambda: srv.held_uploads, "run a uploads")
        (sid,) = BatchState(ws).submissions()
        b = _call_on("host-b ns", srv, _batch(srv, ws, poll_max_s=0.1, claim_expiry_s=1.0), by_key,
                     lambda req, result: got["b"].__setitem__(req.key, result))
        _wait(lambda: len(srv.held_uploads) == 2, "run b takes the submission over and uploads it again")
        srv.held_uploads[1].set()  # run b's upload: it creates the batch
        _wait(lambda: BatchState(ws).submissions()[sid].get("batch_id"), "run b creates the batch")
        srv.hold_uploads.clear()  # run a resumes
        _wait(lambda: any(f"submission {sid}: this run's owner claim was taken over" in e for e in events_a),
              "run a finds its claim taken over")
        entry = BatchState(ws).submissions()[sid]
        assert entry["input_file_id"] == srv.batches[entry["batch_id"]]["input_file_id"], entry  # run b's upload
        assert entry["status"] in ("validating", "in_progress"), entry  # as run b recorded it, not "creating"
        srv.hold_batches.clear()
        _both_end(a, b)
        assert srv.batches_created == 1 and srv.uploads == 2, events_a
    _both_got_every_answer(got, by_key)


def test_a_call_ends_without_waiting_a_quarter_expiry_for_a_beat_blocked_on_the_workspace_lock(tmp_path):
    """The end of a call joined its heartbeat thread for up to a quarter of claim_expiry_s (150 s by default): with a
    beat blocked on the workspace lock another process held for a long write, a notebook's stop button waited longer
    than BACKEND.cancel_wait_s. It waits BATCH.beat_stop_wait_s at most; the beat, a daemon thread, ends on its own."""
    from curate.defaults import BATCH
    from curate.llm.batch_claims import ClaimBeat
    from curate.llm.batch_state import new_owner

    ws = _workspace(tmp_path, ["a row"])
    state = BatchState(ws, claim_expiry_s=12.0)  # a beat every 3 s
    held, release = threading.Event(), threading.Event()

    def long_write():  # another writer holds the lock (other threads and processes wait for it alike)
        with ws.lock():
            held.set()
            release.wait(60)

    writer = threading.Thread(target=long_write, daemon=True)
    writer.start()
    held.wait(10)
    try:
        with ClaimBeat(state, new_owner()) as beat:
            time.sleep(state.claim_expiry_s / 4 + 0.5)  # the first beat is under way, waiting for the lock
            started = time.monotonic()
        took = time.monotonic() - started
        assert beat._thread.is_alive()  # still blocked: not waited for
        assert took < BATCH.beat_stop_wait_s + 1.0 < state.claim_expiry_s / 4, took
    finally:
        release.set()
        writer.join(10)
    beat._thread.join(10)
    assert not beat._thread.is_alive()  # its beat written, it stops


def test_a_collect_taken_over_while_delivering_leaves_the_collected_record_to_the_run_that_took_it(tmp_path):
    """A collect with nothing to resubmit (the usual case) stalled delivering past claim_expiry_s and was taken over;
    resuming, it marked the batch ``collected`` with its own fields without re-checking its claim: while the run that
    took it was still reading the batch's files (measured: status "collected", run b still held in its collect), so a
    waiting run would settle on a record the collector had not written. Its final record is written only while the
    claim is its own: taken over, it says so, waits for that collect and leaves that run's record as it is."""
    texts = [f"collected record row {i}" for i in range(3)]
    ws = _workspace(tmp_path, texts)
    got: dict[str, dict] = {"a": {}, "b": {}}
    events_a: list[str] = []
    taken_notice = "submission feedface: this run's collector claim was taken over meanwhile by a run on host-b"

    stalled = _polls_without_beating(ws)

    def stalls_in_delivery(req, result, cached=False):  # its first answer: stalls until run b took the collect over
        if not got["a"]:
            srv.hold_files.set()  # run b, taking over, stays mid-collect (reading the files) until released
            _wait(lambda: "taken_over" in BatchState(ws).submissions()["feedface"], "run b takes the collect over")
        _into_cache(backend_a, got["a"])(req, result, cached)

    with FaultServer() as srv:
        _killed_while_polling(srv, ws, Judge("complexity"), texts, base_url=srv.base_url)
        by_key = _requests(srv, ws, texts)
        backend_a, backend_b = _two_backends(srv, ws, events_a)
        a = _call_on("host-a ns", srv, backend_a, by_key, stalls_in_delivery, steps=stalled)
        _wait_for_collector(ws, "host-a ns")
        b = _call_on("host-b ns", srv, backend_b, by_key, _into_cache(backend_b, got["b"]))
        _wait(lambda: not a.is_alive() or any(taken_notice in e for e in events_a), "run a ends its collect")
        mid = BatchState(ws).submissions()["feedface"]  # run b is still reading the files
        assert mid.get("status") != "collected" and "final_status" not in mid, (mid, events_a)
        srv.hold_files.clear()
        _wait(lambda: BatchState(ws).submissions()["feedface"].get("status") == "collected", "run b collects it")
        settled = BatchState(ws).submissions()["feedface"]  # run b's record
        _both_end(a, b)
        assert srv.batches_created == 1, events_a
    entry = BatchState(ws).submissions()["feedface"]
    assert entry == settled, (entry, settled)  # run a, collecting after it, left run b's record as it is
    assert entry["collector"]["machine"] == "host-b ns" and entry["taken_over"]["from"]["machine"] == "host-a ns"
    assert entry["final_status"] == "completed" and entry["resubmitted"] == 0, entry
    assert any(taken_notice in e for e in events_a), events_a
    _both_got_every_answer(got, by_key)


def test_a_lost_batchs_handling_taken_over_while_resubmitting_leaves_the_lost_record_to_the_run_that_took_it(tmp_path):
    """A run handling a batch the server forgot (404) stalled uploading its requests again past claim_expiry_s and was
    taken over: the run that took it adopted the resubmission and marked the batch lost. Resuming, the first run marked
    it lost again without re-checking its claim, rewriting the taker's record. It records it only while the claim is
    its own: taken over, it says so and leaves that run's record as it is."""
    texts = [f"lost record row {i}" for i in range(3)]
    ws, got, events_a, stalled = _two_run_scenario(tmp_path, texts)

    with FaultServer() as srv:
        _killed_while_polling(srv, ws, Judge("complexity"), texts, base_url=srv.base_url)
        srv.forget_batches()
        by_key = _requests(srv, ws, texts)
        srv.hold_uploads.set()
        backend_a, backend_b = _two_backends(srv, ws, events_a)
        a = _call_on("host-a ns", srv, backend_a, by_key, _into_cache(backend_a, got["a"]), steps=stalled)
        _wait(lambda: srv.held_uploads, "run a uploads the lost batch's requests again")
        b = _call_on("host-b ns", srv, backend_b, by_key, _into_cache(backend_b, got["b"]))

        def marked_lost():  # run b may take run a's resubmission over too (owned by no beat): its upload goes through
            for held in srv.held_uploads[1:]:
                held.set()
            return BatchState(ws).submissions()["feedface"].get("status") == "lost"

        _wait(marked_lost, "run b marks it lost")
        settled = BatchState(ws).submissions()["feedface"]  # run b's record
        srv.hold_uploads.clear()  # run a resumes
        _both_end(a, b)
        assert srv.batches_created == 2, events_a  # the lost batch and one retry batch (by one of the runs)
    entry = BatchState(ws).submissions()["feedface"]
    assert entry == settled, (entry, settled)
    assert entry["collector"]["machine"] == "host-b ns" and entry["taken_over"]["from"]["machine"] == "host-a ns"
    assert any("submission feedface: this run's collector claim was taken over meanwhile by a run on host-b" in e
               for e in events_a), events_a
    _both_got_every_answer(got, by_key)


def test_a_claim_warning_made_an_error_becomes_a_note_of_the_exception_it_would_replace():
    """Under ``-W error`` a heartbeat failure said at a call's end (a ``BatchClaimWarning`` for an API user) replaced
    the Ctrl-C or API error ending the call, so its handlers (the resume notice, "fix it and re-run") never ran."""
    import types
    import warnings

    from curate.errors import BatchClaimWarning
    from curate.llm.batch_claims import _CallClaims

    call = _CallClaims()
    call.b = types.SimpleNamespace(on_event=None, _say=lambda text: None)
    interrupt = KeyboardInterrupt()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call.alert("the heartbeat failed", during=interrupt)  # was: raised BatchClaimWarning in its place
        assert interrupt.__notes__ == ["BatchClaimWarning: the heartbeat failed"]
        with pytest.raises(BatchClaimWarning):  # nothing propagating: the warning is the error
            call.alert("the heartbeat failed")
    with pytest.warns(BatchClaimWarning, match="heartbeat failed"):
        call.alert("the heartbeat failed", during=KeyboardInterrupt())
