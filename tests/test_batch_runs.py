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

from curate.llm.batch import BatchState
from tests.fault_server import FaultServer
from tests.test_batch import REPO, _workspace

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
