"""Two live runs on one workspace meeting at one openai-batch batch: each paid answer counted once across their run
records, and a claim held by a run of another machine that stopped beating expires. Real processes against
tests/fault_server.py on loopback."""

import json
import math
import os
import subprocess
import sys
import threading
import time

import openai

from curate.llm.batch import BatchState, batch_line
from curate.llm.judges import Judge
from curate.llm.runner import build_requests
from tests.fault_server import FaultServer
from tests.test_batch import MODEL, REPO, _batch, _killed_while_polling, _workspace

_SCORE_COLUMN = """
import json, sys
from curate.llm.batch import OpenAIBatchBackend
from curate.llm.judges import Judge
from curate.session import Workspace

ws_path, base_url, column = sys.argv[1:4]
ws = Workspace.open(ws_path)
say = lambda text: print(text, file=sys.stderr, flush=True)
backend = OpenAIBatchBackend(base_url, "gpt-4o-mini", workspace=ws, api_key="k", poll_s=0.05, poll_max_s=0.5,
                             on_event=say)
result = ws.apply(Judge("complexity", backend, column=column), progress=False)
print(json.dumps({"failed": result.failed, **result.provenance}, default=str))
"""


def _start(ws, srv, column: str) -> tuple[subprocess.Popen, list[str]]:
    """A process scoring ``column`` with the complexity judge on the batch backend; its stderr, read as it comes."""
    proc = subprocess.Popen([sys.executable, "-c", _SCORE_COLUMN, str(ws.path), srv.base_url, column],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    return proc, err


def test_two_runs_asking_the_same_requests_of_one_batch_count_its_cost_once(tmp_path):
    """Two processes scoring two columns with the same prompts met at one batch: the one collecting second counted
    every answer's cost and tokens in its run record too, though the first one's record counts them. The second
    now takes them as cache hits (another run paid): the records' costs add up to the batch's once."""
    texts = [f"twice asked row {i}" for i in range(3)]
    ws = _workspace(tmp_path, texts)
    with FaultServer() as srv:
        srv.hold_batches.set()
        a, a_err = _start(ws, srv, "first")
        deadline = time.monotonic() + 60
        while not any(s.get("batch_id") for s in BatchState(ws).submissions().values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        b, b_err = _start(ws, srv, "second")
        while not any("resuming 1 batch" in line for line in b_err) and time.monotonic() < deadline:
            assert b.poll() is None, "".join(b_err)[-2000:]
            time.sleep(0.05)
        srv.hold_batches.clear()
        runs = [json.loads(proc.communicate(timeout=120)[0].splitlines()[-1]) for proc in (a, b)]
        assert (a.returncode, b.returncode) == (0, 0), "".join(a_err + b_err)[-2000:]
        assert srv.batches_created == 1 and sorted(srv.batch_counts.values()) == [1] * 3
    assert [r["failed"] for r in runs] == [0, 0]
    paid, free = sorted(runs, key=lambda r: r["cost_usd"], reverse=True)
    assert paid["cost_usd"] > 0 and paid["cached_requests"] == 0 and paid["tokens"]["prompt"] > 0
    assert free["cost_usd"] == 0 and free["tokens"] == {"prompt": 0, "completion": 0}, runs
    assert free["cached_requests"] == 3 and free["requests_paid_by_stopped_run"] == 0, runs
    assert math.isclose(sum(r["cost_usd"] for r in runs), paid["cost_usd"])


_BEATING_ELSEWHERE = """
import sys, time
from curate.llm.batch_state import BatchState
from curate.session import Workspace

state, owner = BatchState(Workspace.open(sys.argv[1])), {"pid": 1, "machine": "other-host ns", "call": "elsewhere"}
while True:  # a live run of another machine: its claims' heartbeat, until it is killed
    state.beat(owner)
    time.sleep(0.1)
"""


def test_claims_of_another_machines_run_are_taken_over_once_its_heartbeat_stops(tmp_path):
    """A submission (no batch yet) and a finished batch's collect claimed by a run of another machine (a workspace
    shared over NFS) were waited for without end once that run died: its PID means nothing here. The waiting run
    leaves them alone while their heartbeat changes, takes them over once it has stood still for claim_expiry_s,
    says so, and records it in the submissions' entries."""
    texts = [f"elsewhere row {i}" for i in range(4)]
    ws = _workspace(tmp_path, texts)
    events: list[str] = []
    outcome: list = []
    with FaultServer() as srv:
        judge = Judge("complexity")
        requests = build_requests(judge.prompt, [{"instruction": t} for t in texts], _batch(srv, ws))
        elsewhere = {"pid": 1, "machine": "other-host ns", "call": "elsewhere", "beat": time.time()}
        _killed_while_polling(srv, ws, judge, texts[:2], base_url=srv.base_url)  # submission feedface, batch_1
        with openai.OpenAI(base_url=srv.base_url, api_key="k") as client:
            assert client.batches.retrieve("batch_1").status == "completed"
            upload = client.files.create(file=("d.jsonl", b"".join(batch_line(r, MODEL) for r in requests[2:])),
                                         purpose="batch")
        state = BatchState(ws)
        state.record("feedface", collector=elsewhere, delivering=time.time())
        state.record("deadbeef", [r.key for r in requests[2:]], status="creating", model=MODEL,
                     base_url=srv.base_url, owner=elsewhere, attempt=0, requests=2, input_file_id=upload.id)
        beating = subprocess.Popen([sys.executable, "-c", _BEATING_ELSEWHERE, str(ws.path)],
                                   env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            deadline = time.monotonic() + 60
            while BatchState(ws).submissions()["deadbeef"]["owner"]["beat"] == elsewhere["beat"]:
                assert time.monotonic() < deadline and beating.poll() is None  # it beats before the run starts
                time.sleep(0.05)
            backend = _batch(srv, ws, poll_max_s=0.2, claim_expiry_s=1.5, on_event=events.append)
            waiting = threading.Thread(target=lambda: outcome.append(ws.apply(Judge("complexity", backend),
                                                                                progress=False)), daemon=True)
            waiting.start()
            time.sleep(3.5)  # over two expiries: the beat changes all the while
            assert waiting.is_alive() and srv.batches_created == 1, events
            assert not [e for e in events if "taking it over" in e], events
        finally:
            beating.kill()
            beating.wait()
        waiting.join(30)
        assert not waiting.is_alive(), events
        assert srv.batches_created == 2, events  # deadbeef's, created by the run that took it over
    (result,) = outcome
    assert result.failed == 0 and all(v is not None for v in ws.column("complexity"))
    index = BatchState(ws).submissions()
    for sid, role in (("feedface", "collector"), ("deadbeef", "owner")):
        taken = index[sid]["taken_over"]
        assert taken["role"] == role and taken["from"]["machine"] == "other-host ns", taken
        assert "sent no heartbeat for 1.5 s" in taken["reason"]
        assert any(f"submission {sid}: taking it over: its {role} on machine other-host" in e for e in events), events
    assert index["feedface"]["status"] == index["deadbeef"]["status"] == "collected"
