"""The judge engine against our fault-injecting OpenAI-compatible server on loopback (no mocks)."""

import asyncio
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from curate.codes import Failure, FailureCode
from curate.errors import CurateWarning
from curate.llm.backends import OpenAIBackend, register_price
from curate.llm.cache import ResponseCache
from curate.llm.judges import Judge
from curate.llm.limits import _RateLimiter, _WindowLimiter
from curate.llm.prompts import load_prompt
from curate.llm.runner import build_requests, digit_score, run_prompt
from curate.session import Workspace
from tests.cli_in_process import curate_in_process
from tests.conftest import apply_and_check_warning, write_jsonl
from tests.fault_server import FaultServer, _digit_logprobs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fault_server():
    with FaultServer(retry_after="1", hang_seconds=3.0) as srv:
        yield srv


def _backend(srv, **kw):
    kw.setdefault("timeout", 1.0)
    kw.setdefault("max_retries", 3)
    kw.setdefault("backoff_base", 0.05)
    return OpenAIBackend(srv.base_url, "fault", api_key="test-key-never-stored", **kw)


def _workspace(tmp_path, instructions, name="ws"):
    src = write_jsonl(tmp_path / f"{name}.jsonl", [{"instruction": t, "input": "", "output": "ok"} for t in instructions])
    ws = Workspace(tmp_path / name)
    ws.load(src)
    return ws


FAULTS = ["plain one", "plain two", "plain three", "[429x2] limited", "[500x1] flaky", "[always500] broken",
          "[timeoutx1] slow", "[malformedx1] garbled", "[nologprobs] textual", "[badtext] fruit", "[lowmass] unsure"]


def _key_of(srv, marker):
    return next(k for k in srv.counts if marker in k)


def _score(ws, judge, backend, **kwargs):
    """What ``curate score`` does: the judge as a Step through ``ws.apply`` (its CurateWarning checked: one, exactly
    when rows failed in this call)."""
    return apply_and_check_warning(ws, Judge(judge, backend), progress=False, **kwargs)


def _coverage(ws, column):
    """Rows the judge ran on, those without a complete score, and how many of those lack a failure (must be 0)."""
    ids = ws.column_ids(column)
    values, failures = ws.row_values(column, ids), ws.failures(column, ids)
    missing = [i for i, v in enumerate(values) if v is None]
    return {"rows": len(ids), "missing": len(missing), "unexplained": sum(1 for i in missing if not failures[i])}


def _expected_score(key, scale=(1, 6)):
    """Σ k·p_k / Σ p_k over the scale's digits, from the logprobs the fault server sends for ``key``."""
    probs = {int(t["token"]): math.exp(t["logprob"]) for t in _digit_logprobs(key) if t["token"].isdigit()}
    probs = {k: p for k, p in probs.items() if scale[0] <= k <= scale[1]}
    return sum(k * p for k, p in probs.items()) / sum(probs.values()), sum(probs.values())


def test_a_score_whose_judge_never_answers_shows_no_row_computed_and_says_why(tmp_path, fault_server):
    """The notebook's ApplyResult: failed rows are not counted as computed, and the failures' reason codes are
    shown with their rows and one detail (it said 'computed 2, ... failed 2' and nothing more)."""
    ws = _workspace(tmp_path, ["[always500] one", "[always500] two", "plain three"])
    with pytest.warns(CurateWarning, match=r"q_judge: 2 of the 3 rows computed now failed"):
        result = ws.score("quality", _backend(fault_server, max_retries=1), column="q_judge", progress=False)
    assert (result.computed, result.valued_now, result.failed) == (3, 1, 2)
    (rows, detail), = result.failure_reasons.values()
    assert list(result.failure_reasons) == ["transient"] and rows == 2
    assert detail.startswith("turn 1: gave up after 2 attempts; last error: HTTP 500")
    for shown in (repr(result), result._repr_html_()):
        assert "3 rows — computed 1, reused 0, failed 2 — 2 x transient (e.g. turn 1: gave up after 2 attempts" in shown
        assert "the judge did not answer" in shown


def test_workspace_score_is_annotated_with_what_it_returns(tmp_path, fault_server):
    """Workspace.score said it returned dict[str, Any]; it returns ws.apply's ApplyResult."""
    from curate.storage.apply_result import ApplyResult

    ws = _workspace(tmp_path, ["plain one"])
    result = ws.score("quality", _backend(fault_server), progress=False)
    # its parameters' types (Judge, Scorer, Backend) are imported for type checkers only, as `import curate` stays fast
    module = vars(sys.modules[Workspace.score.__module__])
    assert eval(Workspace.score.__annotations__["return"], module) is ApplyResult and isinstance(result, ApplyResult)
    assert "ApplyResult" in Workspace.score.__doc__


def test_every_row_scored_or_failed_with_reason_and_rerun_hits_cache(tmp_path, fault_server):
    ws = _workspace(tmp_path, FAULTS)
    result = _score(ws, "complexity", _backend(fault_server))
    summary = result.provenance
    by_text = {conv[0]["content"]: i for i, conv in enumerate(ws.conversations())}
    values, failures = ws.column("complexity"), ws.failures("complexity")
    got = {t: (values[by_text[t]], failures[by_text[t]]) for t in FAULTS}
    for t in ("plain one", "plain two", "plain three", "[429x2] limited", "[500x1] flaky", "[timeoutx1] slow",
              "[malformedx1] garbled"):
        value, failure = got[t]
        assert failure == [] and len(value) == 1 and 1.0 <= value[0] <= 6.0, (t, got[t])
        expected, _ = _expected_score(_key_of(fault_server, t))  # the expectation over the digits the server sent
        assert math.isclose(value[0], expected, rel_tol=1e-9), (t, value, expected)
    # logprobs asked for and none came back (a proxy dropping them): a failure with the output, not a parsed 4.0
    (nologprobs,) = got["[nologprobs] textual"][1]
    assert got["[nologprobs] textual"][0] == [None] and nologprobs.code is FailureCode.NO_LOGPROBS
    assert "logprobs were requested and the reply has none" in nologprobs.message and nologprobs.raw == "4"
    (always500,) = got["[always500] broken"][1]
    assert always500.code is FailureCode.TRANSIENT and always500.turn == 1
    assert "HTTP 500" in always500.message and "gave up after 4 attempts" in always500.message
    (badtext,) = got["[badtext] fruit"][1]
    assert badtext.code is FailureCode.NO_LOGPROBS and badtext.raw == "banana"
    (lowmass,) = got["[lowmass] unsure"][1]
    assert lowmass.code is FailureCode.LOW_DIGIT_MASS and "min_digit_mass 0.5" in lowmass.message
    assert [v is None for v in got["[always500] broken"][0]] == [True]
    assert _coverage(ws, "complexity") == {"rows": 11, "missing": 4, "unexplained": 0}
    assert result.rows == 11 and result.computed == 11 and result.failed == 4
    masses = ws.column("complexity_digit_mass")
    assert math.isclose(masses[by_text["plain one"]][0], 0.95, rel_tol=1e-6)
    assert math.isclose(masses[by_text["plain one"]][0], _expected_score(_key_of(fault_server, "plain one"))[1])
    assert masses[by_text["[nologprobs] textual"]] == [None]
    assert summary["score_methods"]["parsed"] == 0 and summary["failed_rows"] == 4
    assert summary["reducer"] == "sum" and summary["granularity"] == "turn"

    counts = fault_server.snapshot()
    assert counts[_key_of(fault_server, "[429x2]")] == 3
    gaps = [b - a for a, b in zip(fault_server.times[_key_of(fault_server, "[429x2]")],
                                  fault_server.times[_key_of(fault_server, "[429x2]")][1:], strict=False)]
    assert min(gaps) >= 0.95, gaps  # Retry-After: 1 honoured
    assert counts[_key_of(fault_server, "[500x1]")] == 2
    assert counts[_key_of(fault_server, "[always500]")] == 4
    assert counts[_key_of(fault_server, "[timeoutx1]")] == 2
    assert counts[_key_of(fault_server, "[malformedx1]")] == 2
    assert counts[_key_of(fault_server, "plain one")] == 1

    prov = ws.column_provenance("complexity")
    assert prov["prompt_fingerprint"] == load_prompt("complexity").fingerprint and prov["backend"] == "openai"
    assert prov["params"]["top_logprobs"] == 20 and prov["params"]["max_tokens"] == 1
    # rerun keeping failures: rows done under the same fingerprint are reused; nothing is sent
    again = _score(ws, "complexity", _backend(fault_server), retry_failed=False)
    assert again.computed == 0 and again.skipped == 11 and fault_server.snapshot() == counts
    # a plain rerun retries failed rows (as the CLI and run_pipeline do): every answered request comes from the
    # cache; only the transport failure is tried again
    retried = _score(ws, "complexity", _backend(fault_server))
    assert retried.computed == 1 and retried.failed == 4
    after = fault_server.snapshot()
    resent = {k: after[k] - counts.get(k, 0) for k in after if after[k] != counts.get(k, 0)}
    assert list(resent) == [_key_of(fault_server, "[always500]")]
    db = (ws.cache_dir / "responses.sqlite").read_bytes()
    assert b"test-key-never-stored" not in db


def test_a_backend_without_logprobs_has_its_digit_parsed_and_only_it(tmp_path, fault_server):
    """Parsing the digit from the text is for a backend that cannot give logprobs (``supports_logprobs=False``): its
    requests ask for none, its scores are marked ``parsed``; the same replies to a backend that asked for logprobs
    fail ``no_logprobs`` (test above: they were parsed 4.0 beside probability-weighted scores)."""
    texts = ["plain one", "[nologprobs] textual", "[badtext] fruit"]
    ws = _workspace(tmp_path, texts)
    result = _score(ws, "complexity", _backend(fault_server, supports_logprobs=False))
    by_text = {conv[0]["content"]: i for i, conv in enumerate(ws.conversations())}
    values, failures = ws.column("complexity"), ws.failures("complexity")
    assert values[by_text["[nologprobs] textual"]] == [4.0] and failures[by_text["[nologprobs] textual"]] == []
    assert values[by_text["plain one"]][0] in {float(k) for k in range(1, 7)}  # the first token's digit, parsed
    (badtext,) = failures[by_text["[badtext] fruit"]]
    assert badtext.code is FailureCode.UNPARSABLE and "no logprobs and no digit" in badtext.message
    assert badtext.raw == "banana"
    assert result.provenance["score_methods"]["parsed"] == 2 and result.provenance["failed_rows"] == 1
    assert "logprobs" not in ws.column_provenance("complexity")["params"]  # its requests asked for none


def test_a_parsed_reply_holding_a_decimal_or_two_numbers_fails_unparsable_not_its_first_digit(tmp_path, fault_server):
    """A server that ignores ``max_tokens: 1`` (no logprobs) may answer "4.5" or "4 or 5": each was recorded as 4.0,
    a score the model never gave. They fail ``unparsable`` with the output; a lone digit with its punctuation, or a
    score out of the scale's maximum ("4/6"), is still read."""
    said = {"4.5": None, "4,5": None, "4 or 5": None, "4-5": None, "4 to 5": None, "4.": 4.0, "4/6": 4.0,
            " 5\nIt is clear.": 5.0}
    variables = [{"instruction": f"[say:{text}] row"} for text in said]
    results = run_prompt("complexity", variables, _backend(fault_server, supports_logprobs=False),
                         ResponseCache(tmp_path / "c.sqlite"), progress=False)
    assert {text: r.parsed for text, r in zip(said, results, strict=True)} == said
    for text, r in zip(said, results, strict=True):
        if said[text] is None:
            assert r.failure.code is FailureCode.UNPARSABLE and "not one whole digit" in r.failure.message
            assert r.failure.raw == text


def test_kill9_mid_run_then_rerun_resends_no_finished_request_and_records_what_the_killed_run_paid(tmp_path):
    rows = [f"Task number {i}: describe item {i}." for i in range(150)]
    ws = _workspace(tmp_path, rows)
    cache_file = ws.cache_dir / "responses.sqlite"
    with FaultServer(latency=0.1) as srv:
        cmd = [sys.executable, "-m", "curate.cli", "score", str(ws.path), "--judge", "complexity", "--base-url",
               srv.base_url, "--model", "fault", "--concurrency", "4"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + 60
        finished = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if cache_file.exists():
                try:
                    finished = sqlite3.connect(cache_file).execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                except sqlite3.OperationalError:
                    finished = 0
                if finished >= 30:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, "scoring finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        time.sleep(0.3)  # let the server see the dropped connections
        done_keys = set(ResponseCache(cache_file).get_many([r.key for r in _requests(ws, srv)]))
        assert 30 <= len(done_keys) < len(rows)
        assert not ws.has_column("complexity")
        before = srv.snapshot()

        rerun = curate_in_process(*cmd[3:], env=env)  # the resumed run: its words and record, not its process
        assert rerun.returncode == 0, rerun.stderr
        after = srv.snapshot()
    requests = _requests(ws, srv)
    by_key_text = {r.key: r.messages[-1]["content"] for r in requests}
    for key in done_keys:
        assert after[by_key_text[key]] == before[by_key_text[key]], "a finished request was sent again"
    for key in set(by_key_text) - done_keys:
        assert after[by_key_text[key]] >= 1
    # What the killed run paid is in the column's record: the resumed run counts those cached answers as spending (a
    # stopped run never stored a record; they were counted as free cache hits). One completion token per answer.
    run = ws.column_provenance("complexity")["runs"][-1]
    assert run["requests_paid_by_stopped_run"] == len(done_keys) and run["cached_requests"] == 0
    assert run["tokens"]["completion"] == len(rows)
    assert f"of those the on-disk cache answered, {len(done_keys)} a stopped run paid for" in rerun.stdout
    again = curate_in_process(*cmd[3:], "--column", "complexity_again", env=env)
    assert again.returncode == 0, again.stderr
    run = ws.column_provenance("complexity_again")["runs"][-1]  # once recorded, a cache hit is free
    assert (run["cached_requests"], run["requests_paid_by_stopped_run"], run["tokens"]["completion"]) == (150, 0, 0)
    ws = Workspace.open(ws.path)
    assert _coverage(ws, "complexity") == {"rows": 150, "missing": 0, "unexplained": 0}


def _requests(ws, srv):
    judge = Judge("complexity")
    variables = [{"instruction": c[0]["content"]} for c in ws.conversations()]
    return build_requests(judge.prompt, variables, OpenAIBackend(srv.base_url, "fault"))


def test_max_cost_stops_before_overspending(tmp_path, fault_server):
    register_price("fault-priced", 1000.0, 1000.0)  # $ per 1M tokens
    backend = OpenAIBackend(fault_server.base_url, "fault-priced", api_key="k", max_cost=1.5, concurrency=2,
                            max_retries=0)
    results = run_prompt("complexity", [{"instruction": f"row {i}"} for i in range(40)], backend,
                         tmp_path / "c.sqlite", progress=False)
    sent = fault_server.total
    assert 0 < sent < 40
    assert backend.spent_usd <= 1.5
    assert sum(r.ok for r in results) == sent
    stopped = [r for r in results if not r.ok]
    assert stopped and all(r.failure.code is FailureCode.BUDGET and "max_cost" in r.failure.message for r in stopped)
    assert math.isclose(sum(r.cost_usd for r in results), backend.spent_usd)


def test_concurrency_is_bounded(tmp_path):
    with FaultServer(latency=0.1) as srv:
        run_prompt("complexity", [{"instruction": f"q {i}"} for i in range(24)], _backend(srv, concurrency=3),
                   tmp_path / "c.sqlite", progress=False)
        assert srv.max_inflight == 3 and srv.total == 24


def _wait_for(condition, what: str, wait_s: float = 30.0) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_two_concurrent_calls_of_one_prompt_send_each_request_once(tmp_path):
    """Call B starts while call A's requests are at the server (1 s latency), on the same cache: B waits for them
    and reads A's answers from the cache (cached, unbilled); the server sees each request once, not twice."""
    variables = [{"instruction": f"shared row {i}"} for i in range(4)]
    cache = ResponseCache(tmp_path / "c.sqlite")
    got: dict[str, list] = {}
    with FaultServer(latency=1.0) as srv:
        def call(name: str) -> None:
            got[name] = run_prompt("complexity", variables, _backend(srv, timeout=10.0), cache, progress=False)

        a = threading.Thread(target=call, args=("A",))
        a.start()
        _wait_for(lambda: srv.total == len(variables), "call A's requests at the server")
        b = threading.Thread(target=call, args=("B",))
        b.start()
        a.join(60)
        b.join(60)
        assert srv.total == len(variables), f"{srv.total} requests for {len(variables)} prompts"
    assert [r.parsed for r in got["A"]] == [r.parsed for r in got["B"]] and all(r.ok for r in got["A"])
    assert not any(r.cached for r in got["A"]) and all(r.billed_keys for r in got["A"])
    assert all(r.cached and not r.billed_keys for r in got["B"])


def test_a_request_whose_concurrent_sender_failed_is_sent_again_by_the_waiter(tmp_path):
    """A's request fails (a 500, no retries); B, which waited for it, finds no answer in the cache, sends it
    itself and records its own result: never A's failure, never a default."""
    variables = [{"instruction": "[500x1] flaky shared row"}]
    cache = ResponseCache(tmp_path / "c.sqlite")
    got: dict[str, list] = {}
    with FaultServer(latency=1.0) as srv:
        def call(name: str) -> None:
            got[name] = run_prompt("complexity", variables, _backend(srv, timeout=10.0, max_retries=0), cache,
                                   progress=False)

        a = threading.Thread(target=call, args=("A",))
        a.start()
        _wait_for(lambda: srv.total == 1, "call A's request at the server")
        b = threading.Thread(target=call, args=("B",))
        b.start()
        a.join(60)
        b.join(60)
        assert srv.total == 2  # A's failed attempt, then B's own
    (ra,), (rb,) = got["A"], got["B"]
    assert not ra.ok and ra.failure.code is FailureCode.TRANSIENT
    assert rb.ok and not rb.cached and rb.billed_keys


def test_a_sender_settling_late_leaves_the_claim_of_the_waiter_that_sends_again(tmp_path):
    """A's request K fails at once and B claims it again and sends it; A's call ends later (its other request is
    slow) and released every claim on K, B's too: C, arriving then, found K free and paid for it a third time."""
    shared = {"instruction": "[500x1][sleep2:4] shared row"}  # fails at once; its second attempt takes 4 s
    cache = ResponseCache(tmp_path / "c.sqlite")
    got: dict[str, list] = {}
    with FaultServer() as srv:
        def call(name: str, variables: list[dict]) -> None:
            got[name] = run_prompt("complexity", variables, _backend(srv, timeout=30.0, max_retries=0), cache,
                                   progress=False)

        a = threading.Thread(target=call, args=("A", [shared, {"instruction": "[sleep1:2] slow row"}]))
        a.start()
        _wait_for(lambda: srv.total == 2, "call A's two requests at the server")
        b = threading.Thread(target=call, args=("B", [shared]))
        b.start()
        _wait_for(lambda: srv.total == 3, "call B sending the shared request again")
        a.join(60)  # A is done; B's request is still in flight
        c = threading.Thread(target=call, args=("C", [shared]))
        c.start()
        b.join(60)
        c.join(60)
        assert srv.total == 3  # C waited for B's request and read its answer from the cache
    assert not got["A"][0].ok and got["B"][0].ok and got["C"][0].ok and got["C"][0].cached


def test_window_limiter_spaces_requests():
    async def go():
        limiter = _WindowLimiter(4, window=0.5)
        start = time.monotonic()
        for _ in range(9):
            await limiter.acquire(1)
        return time.monotonic() - start

    assert asyncio.run(go()) >= 1.0  # 9 requests at 4 per 0.5 s need two full windows


def test_threads_opening_one_new_response_cache_at_once_all_open_it(tmp_path):
    """SQLite refuses a switch to WAL at once while another connection makes it: threads opening one new cache
    together (four judges started at once in a notebook) failed one time in 25, naming a process that never was."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    errors = []
    for trial in range(250):
        path, barrier = tmp_path / str(trial) / "responses.sqlite", threading.Barrier(6)

        def open_it(path=path, barrier=barrier):
            barrier.wait()
            try:
                ResponseCache(path).close()
            except Exception as exc:  # noqa: BLE001 - counted: the assertion names them
                errors.append(str(exc))

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda _: open_it(), range(6)))
    assert errors == []


def test_a_dry_run_reads_an_old_response_cache_without_changing_it(tmp_path):
    """A dry run opened the cache read-write: on a cache from before aliases and spending records (one table, the
    rollback journal) it added both tables and switched the file to WAL. It reads it as it is now."""
    from curate.llm.cache import LookupOnlyCache

    path = tmp_path / "responses.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL NOT NULL)")
        conn.execute("INSERT INTO responses VALUES ('k1', '{\"answer\": 4}', 0)")
    conn.close()
    before = path.read_bytes()
    cache = LookupOnlyCache(tmp_path)
    assert cache.get_many(["k1", "k2"]) == {"k1": {"answer": 4}}
    assert cache.get_aliased(["a1"]) == {} and cache.unrecorded(["k1"]) == set() and len(cache) == 1
    cache.close()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["responses.sqlite"]


def test_rate_limiter_starts_no_burst_after_the_event_loop_stalls():
    """Slots were reserved ahead and waited for outside the lock: a stalled loop (a busy machine; here a blocking
    call) let every slot that came due meanwhile start at once, five requests within a millisecond at --rps 20."""
    async def go():
        limiter, starts = _RateLimiter(20), []

        async def one():
            await limiter.acquire()
            starts.append(time.monotonic())

        tasks = [asyncio.create_task(one()) for _ in range(8)]
        await asyncio.sleep(0.01)  # the first has started, the others wait for their slots
        time.sleep(0.3)  # the loop stalls past several slots
        await asyncio.gather(*tasks)
        return starts

    starts = asyncio.run(go())
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(starts) == 8 and min(gaps) >= 0.045, gaps  # 1/20 s apart (timer slack aside), none together


class Label(BaseModel):
    label: str
    confidence: float


class NeedsScore(BaseModel):
    label: str
    score: int


JSON_PROMPT = """---
name: labeler
version: 1
inputs: [instruction]
output:
  kind: json
params:
  temperature: 0.0
  max_tokens: 64
---
=== user ===
Label this: {{ instruction }}
"""


def test_json_output_is_validated_reasked_and_failures_keep_raw_output(tmp_path, fault_server):
    path = tmp_path / "labeler.md"
    path.write_text(JSON_PROMPT)
    results = run_prompt(path, [{"instruction": "fine"}, {"instruction": "[badjsonx1] broken once"}],
                         _backend(fault_server), tmp_path / "c.sqlite", output_model=Label, progress=False)
    assert [r.parsed for r in results] == [Label(label="general", confidence=0.5)] * 2
    assert fault_server.counts["Label this: [badjsonx1] broken once"] == 1
    assert fault_server.total == 3  # two rows + one re-ask carrying the validation error
    reask = [k for k in fault_server.counts if not k.startswith("Label this")]
    assert len(reask) == 1 and "error" in reask[0].lower()
    from curate.llm.calls import call_usage  # the run record counted rows (2), not the requests sent (3)

    assert call_usage(results)["requests"] == 3 and call_usage(results)["cached_requests"] == 0
    before = fault_server.total
    bad = run_prompt(path, [{"instruction": "never valid"}], _backend(fault_server), tmp_path / "c.sqlite",
                     output_model=NeedsScore, validation_retries=2, progress=False)[0]
    assert bad.parsed is None and bad.failure.code is FailureCode.INVALID_OUTPUT
    assert "validation" in bad.failure.message and '"label": "general"' in bad.failure.message
    assert bad.failure.raw == bad.text and '"label": "general"' in bad.failure.raw
    assert fault_server.total - before == 3  # first try + 2 bounded re-asks
    again = run_prompt(path, [{"instruction": "never valid"}], _backend(fault_server), tmp_path / "c.sqlite",
                       output_model=NeedsScore, validation_retries=2, progress=False)[0]
    assert again.failure == bad.failure and fault_server.total - before == 3  # re-asks come from the cache
    assert call_usage([again])["requests"] == 3  # from the cache (paid by the first call, which recorded no run)
    from curate.storage.run_records import requests_sent

    before = fault_server.total  # rows sharing a request share its re-asks: sent once, billed once
    shared = run_prompt(path, [{"instruction": "twice"}, {"instruction": "twice"}, {"instruction": "once"}],
                        _backend(fault_server), tmp_path / "c.sqlite", output_model=NeedsScore, validation_retries=2,
                        progress=False)
    assert fault_server.total - before == 6 == requests_sent(call_usage(shared))  # it said 8


def test_sync_api_inside_a_running_event_loop(tmp_path, fault_server):
    async def notebook_cell():
        return run_prompt("complexity", [{"instruction": "inside a loop"}], _backend(fault_server),
                          tmp_path / "c.sqlite", progress=False)

    (result,) = asyncio.run(notebook_cell())
    assert result.ok and 1 <= result.parsed <= 6
    (key,) = fault_server.counts
    assert math.isclose(result.parsed, _expected_score(key)[0])


def test_multi_turn_rows_get_per_turn_scores(tmp_path, fault_server):
    conv = {"conversations": [{"from": "human", "value": "first question"}, {"from": "gpt", "value": "answer one"},
                              {"from": "human", "value": "second question"}, {"from": "gpt", "value": "answer two"}]}
    src = write_jsonl(tmp_path / "mt.jsonl", [conv, {"conversations": conv["conversations"][:2]},
                                              {"conversations": conv["conversations"][:3]}])
    ws = Workspace(tmp_path / "mt")
    ws.load(src)
    _score(ws, "quality", _backend(fault_server))
    values = {len(c): v for c, v in zip(ws.conversations(), ws.column("quality"), strict=True)}
    reasons = {len(c): v for c, v in zip(ws.conversations(), ws.failures("quality"), strict=True)}
    assert len(values[4]) == 2 and all(1 <= x <= 6 for x in values[4])
    assert len(values[2]) == 1 and reasons[2] == [] and reasons[4] == []
    assert values[3][1] is None and values[3][0] is not None
    (failure,) = reasons[3]
    assert failure.code is FailureCode.NO_RESPONSE and failure.turn == 2
    assert "turn 2 has no assistant response" in failure.message
    prov = ws.column_provenance("quality")
    assert prov["granularity"] == "turn" and prov["reducer"] == "sum"
    # the row value is the sum over turns (DEITA), None when a turn has no score
    rows = {len(c): v for c, v in zip(ws.conversations(), ws.row_values("quality"), strict=True)}
    assert math.isclose(rows[4], sum(values[4])) and rows[2] == values[2][0] and rows[3] is None


def test_two_turns_in_one_row_single_turn_a_one_element_list_and_turn_failures_carry_code_and_turn(tmp_path,
                                                                                                    fault_server):
    two = {"conversations": [{"from": "human", "value": "first question"}, {"from": "gpt", "value": "answer one"},
                             {"from": "human", "value": "[always500] second question"},
                             {"from": "gpt", "value": "answer two"}]}
    ok_two = {"conversations": [{"from": "human", "value": "alpha"}, {"from": "gpt", "value": "one"},
                                {"from": "human", "value": "beta"}, {"from": "gpt", "value": "two"}]}
    single = {"instruction": "a single question", "input": "", "output": "a single answer"}
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [two, ok_two, single]))
    result = _score(ws, "complexity", _backend(fault_server))
    assert (result.rows, result.computed, result.failed) == (3, 3, 1)
    by_first = {c[0]["content"]: i for i, c in enumerate(ws.conversations())}
    values, masses, failures = ws.column("complexity"), ws.column("complexity_digit_mass"), ws.failures("complexity")
    first, pair, one = by_first["first question"], by_first["alpha"], by_first["a single question"]
    assert len(values[pair]) == 2 and all(v is not None for v in values[pair])  # 2 values in one row
    assert len(values[one]) == 1 and isinstance(values[one][0], float)  # a single-turn row: a 1-element list
    assert len(values[first]) == 2 and values[first][0] is not None and values[first][1] is None
    for row in (pair, one):  # each turn is its own call: its score is the expectation over its own digits
        for t, turn in enumerate(ws.turns([ws.ids[row]])[0]):
            expected, mass = _expected_score(_key_of(fault_server, turn.instruction))
            assert math.isclose(values[row][t], expected) and math.isclose(masses[row][t], mass)
    (failure,) = failures[first]
    assert failure.code is FailureCode.TRANSIENT and failure.turn == 2 and "HTTP 500" in failure.message
    assert str(failure).startswith("turn 2: ")
    assert failures[pair] == [] and failures[one] == []
    assert masses[first][1] is None
    assert Failure.from_dict(ws.column("complexity_failure")[first][0]) == failure  # stored as data, not prose


def test_digit_score_maths():
    lp = math.log
    # " 5" and "5" are the same digit; softmax over the scale digits only
    resp = {"text": "5", "top_logprobs": [{"token": " 5", "logprob": lp(0.3)}, {"token": "5", "logprob": lp(0.2)},
                                          {"token": "1", "logprob": lp(0.5)}]}
    # on a 1-2 scale only "1" counts: mass 0.5, 2 missing
    value, info, failure = digit_score(resp, (1, 2), 0.5, logprobs_requested=True)
    assert failure is None and value == 1.0 and info["missing_digits"] == [2] and math.isclose(info["digit_mass"], 0.5)
    low_mass = digit_score(resp, (1, 2), 0.6, logprobs_requested=True)[2]
    assert low_mass.code is FailureCode.LOW_DIGIT_MASS and "mass 0.500 < min_digit_mass 0.6" in low_mass.message
    value, info, failure = digit_score(resp, (1, 6), 0.9, logprobs_requested=True)
    assert failure is None and math.isclose(value, (0.5 * 5 + 0.5 * 1) / 1.0) and math.isclose(info["digit_mass"], 1.0)
    low = {"text": "x", "top_logprobs": [{"token": "3", "logprob": lp(0.2)}, {"token": "x", "logprob": lp(0.8)}]}
    assert digit_score(low, (1, 6), 0.5, logprobs_requested=True)[2].message.startswith("digits [1, 2, 4, 5, 6] absent")
    value, info, failure = digit_score(low, (1, 6), 0.1, logprobs_requested=True)
    assert failure is None and math.isclose(value, 3.0) and info["missing_digits"] == [1, 2, 4, 5, 6]
    # every digit among the top logprobs, but the model answered a word: the digits' odds are no score
    word = {"text": "The", "top_logprobs": [{"token": "The", "logprob": lp(0.995)}]
            + [{"token": str(k), "logprob": lp(0.0008)} for k in range(1, 7)]}
    value, info, failure = digit_score(word, (1, 6), logprobs_requested=True)
    assert value is None and info["missing_digits"] == [] and failure.code is FailureCode.LOW_DIGIT_MASS
    assert failure.message.startswith("the digits carry mass 0.005 < min_digit_mass 0.5") and failure.raw == "The"
    assert digit_score({"text": " 4", "top_logprobs": None}, (1, 6), logprobs_requested=False)[:1] == (4.0,)
    # a NaN logprob is the server's fault, not a score (NaN mass passed the mass floor and gave a NaN score)
    nan = {"text": "5", "top_logprobs": [{"token": "5", "logprob": float("nan")}, {"token": "4", "logprob": lp(0.6)}]}
    value, info, failure = digit_score(nan, (1, 6), logprobs_requested=True)
    assert value is None and failure.code is FailureCode.MODEL_ERROR and "NaN" in failure.message
    # so is +inf (a body's "Infinity", which json.loads reads): the mass was infinite and the score NaN
    inf = {"text": "5", "top_logprobs": [{"token": "5", "logprob": math.inf}, {"token": "4", "logprob": lp(0.6)}]}
    value, info, failure = digit_score(inf, (1, 6), logprobs_requested=True)
    assert value is None and failure.code is FailureCode.MODEL_ERROR and "+inf" in failure.message
    outside = digit_score({"text": "9", "top_logprobs": None}, (1, 6), logprobs_requested=False)[2]
    assert outside.code is FailureCode.UNPARSABLE and "outside" in outside.message and outside.raw == "9"
    no_digit = digit_score({"text": "x", "top_logprobs": [{"token": "x", "logprob": 0.0}]}, (1, 6),
                           logprobs_requested=True)[2]
    assert no_digit.code is FailureCode.LOW_DIGIT_MASS and "no digit 1-6" in no_digit.message
    # digits of other scripts are not the digit the prompt asks for; "⁵" passes str.isdigit() but not int()
    odd = {"text": "5", "top_logprobs": [{"token": "5", "logprob": lp(0.6)}]
           + [{"token": t, "logprob": lp(0.1)} for t in ("⁵", "١", "５", "②")]}
    value, info, failure = digit_score(odd, (1, 6), logprobs_requested=True)
    assert failure is None and value == 5.0 and math.isclose(info["digit_mass"], 0.6)
    assert digit_score({"text": "٥", "top_logprobs": None}, (1, 6), logprobs_requested=False)[2].code is FailureCode.UNPARSABLE
    # logprobs asked for, none in the reply (a proxy dropped them): no parsed whole number beside the weighted scores
    for top in (None, []):
        value, info, failure = digit_score({"text": "4", "top_logprobs": top}, (1, 6), logprobs_requested=True)
        assert value is None and failure.code is FailureCode.NO_LOGPROBS and failure.raw == "4"
        assert info["score_method"] == "logprobs" and "requested" in failure.message


def test_prompt_edit_reruns_and_unused_variables_hit_the_cache(tmp_path, fault_server):
    path = tmp_path / "rate.md"
    text = ("---\nname: rate\nversion: 1\ninputs: [instruction]\noutput:\n  kind: digit_score\n  scale: [1, 6]\n"
            "params:\n  temperature: 0.0\n---\n"
            "=== system ===\nRate it.\n=== user ===\n{{ instruction }}\n")
    path.write_text(text)
    rows = [{"instruction": f"row {i}"} for i in range(3)]
    cache = tmp_path / "c.sqlite"
    run_prompt(path, rows, _backend(fault_server), cache, progress=False)
    assert fault_server.total == 3
    # same rendered messages from different variables: found by request key, nothing sent
    again = run_prompt(path, [{**r, "unused": 1} for r in rows], _backend(fault_server), cache, progress=False)
    assert fault_server.total == 3 and all(r.cached for r in again)
    path.write_text(text.replace("Rate it.", "Rate it, please."))
    edited = run_prompt(path, rows, _backend(fault_server), cache, progress=False)
    assert fault_server.total == 6 and not any(r.cached for r in edited)
    run_prompt(path, rows, _backend(fault_server), cache, progress=False)
    assert fault_server.total == 6


def test_scoring_a_subset_keeps_earlier_rows(tmp_path, fault_server):
    ws = _workspace(tmp_path, [f"row {i}" for i in range(6)])
    _score(ws, "complexity", _backend(fault_server), ids=ws.ids[:2])
    assert _coverage(ws, "complexity") == {"rows": 2, "missing": 0, "unexplained": 0}
    first = ws.column("complexity", ws.ids[:2])
    _score(ws, "complexity", _backend(fault_server), ids=ws.ids[4:])
    values = ws.column("complexity")
    assert [v is not None for v in values] == [True, True, False, False, True, True]
    assert values[:2] == first
    assert _coverage(ws, "complexity") == {"rows": 4, "missing": 0, "unexplained": 0}
    assert fault_server.total == 4


def test_local_backend_starts_no_server_when_every_request_is_cached(tmp_path):
    from curate.llm.local import SERVED_NAME, LocalServer

    rows = [{"instruction": f"q {i}"} for i in range(6)]
    cache = tmp_path / "c.sqlite"
    with FaultServer() as srv:  # fills the cache under the local backend's identity (kind local, SmolLM2's name)
        filled = run_prompt("complexity", rows, OpenAIBackend(srv.base_url, SERVED_NAME, api_key="local", kind="local"),
                            cache, progress=False)
    assert all(r.parsed is not None for r in filled)
    server = LocalServer(home=tmp_path / "home")
    again = run_prompt("complexity", rows, server.lazy_backend(on_start=lambda: pytest.fail("server started")),
                       cache, progress=False)
    assert server.proc is None and [r.parsed for r in again] == [r.parsed for r in filled]
    server.stop()  # a no-op for a server that never started


class _CountingBackend(OpenAIBackend):
    """The real backend; it also notes how many requests each run was handed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runs: list[int] = []

    async def run(self, requests, on_done):
        self.runs.append(len(requests))
        await super().run(requests, on_done)


def test_a_judge_hands_a_large_pool_over_in_parts_and_stores_what_one_call_stores(tmp_path, monkeypatch):
    """ws.apply gives an LLM step JUDGE.rows_per_call rows at a time (requests and answers of 10M rows are not held
    at once); the column, its failures, digit masses and the run's usage are those of one call over every row."""
    import dataclasses

    from curate.llm import base

    texts = FAULTS + ["plain four", "plain five", "plain six"]
    stored = {}
    for name, rows_per_call in (("whole", 1000), ("parts", 4)):
        monkeypatch.setattr(base, "JUDGE", dataclasses.replace(base.JUDGE, rows_per_call=rows_per_call))
        ws = _workspace(tmp_path, texts, name)
        with FaultServer(retry_after="0", hang_seconds=3.0) as srv:
            backend = _CountingBackend(srv.base_url, "fault", api_key="k", timeout=1.0, max_retries=3,
                                       backoff_base=0.05)
            with pytest.warns(CurateWarning, match=r"complexity: 4 of the 14 rows computed now failed"):
                result = ws.apply(Judge("complexity", backend), progress=False)
        runs = [{k: r[k] for k in ("rows", "failed", "requests", "cached_requests", "tokens", "cost_usd")}
                for r in result.provenance["runs"]]
        stored[name] = (backend.runs, ws.column("complexity"), ws.failures("complexity"),
                        ws.column("complexity_digit_mass"), runs, result.provenance["score_methods"])
    assert stored["whole"][0] == [14] and stored["parts"][0] == [4, 4, 4, 2]
    assert stored["parts"][1:] == stored["whole"][1:]
    assert stored["parts"][4][0]["requests"] == 14 and stored["parts"][4][0]["failed"] == 4  # [nologprobs] too
    # a batch backend is given every row at once: each of its calls is a submission answered within hours
    from curate.llm.batch import OpenAIBatchBackend

    batch = OpenAIBatchBackend("http://127.0.0.1:9/v1", "fault", workspace=_workspace(tmp_path, ["x"], "b"),
                               api_key="k")
    assert Judge("complexity", batch).rows_per_call is None and Judge("complexity", backend).rows_per_call == 4


def test_a_refused_key_costs_one_request_per_later_part_not_a_round_of_requests(tmp_path, monkeypatch):
    """After HTTP 401 a backend sends nothing more in that call; each later call (the next part of the pool) asks
    again with one request, so a fixed key is used as soon as it is fixed and a wrong one costs one request a part."""
    import dataclasses

    from curate.llm import base

    monkeypatch.setattr(base, "JUDGE", dataclasses.replace(base.JUDGE, rows_per_call=3))
    ws = _workspace(tmp_path, [f"Task {i}: explain item {i}." for i in range(12)])
    with FaultServer(api_key="right") as srv:
        wrong = _CountingBackend(srv.base_url, "fault", api_key="wrong", concurrency=8, timeout=5.0)
        with pytest.warns(CurateWarning, match=r"complexity: 12 of the 12 rows computed now failed"):
            result = ws.apply(Judge("complexity", wrong), progress=False)
        assert wrong.runs == [3, 3, 3, 3] and result.failed == 12
        assert srv.total <= 3 + 3  # the first part's requests in flight when the 401 came, then one per part
        fails = [f for row in ws.failures("complexity") for f in row]
        assert all(f.code is FailureCode.TRANSIENT and "refuses the API key" in f.message for f in fails)
        from curate.storage.run_records import requests_sent

        # the run record counted all 12 as sent, and so did the report
        assert requests_sent(ws.column_provenance("complexity")["runs"][-1]) == srv.total
        from curate.llm.calls import call_usage

        before = srv.total  # rows sharing a refused request: counted once, not per row
        shared = run_prompt("complexity", [{"instruction": "same task"}] * 3 + [{"instruction": "another task"}],
                            OpenAIBackend(srv.base_url, "fault", api_key="wrong", concurrency=1), tmp_path / "s.sqlite",
                            progress=False)
        assert requests_sent(call_usage(shared)) == srv.total - before == 1
        assert call_usage(shared)["cached_requests"] == 0  # the rows sharing it were not answered by the cache either
        right = OpenAIBackend(srv.base_url, "fault", api_key="right")
        again = ws.apply(Judge("complexity", right), progress=False, retry_failed=True)
    assert again.computed == 12 and again.failed == 0


def test_a_window_limit_holds_across_the_runs_of_one_backend():
    """rpm counts the requests of earlier runs (each run has its own event loop): a judge's next part, or the
    quality judge after the complexity judge, does not start a fresh minute."""
    backend = OpenAIBackend("http://127.0.0.1:9/v1", "m", api_key="k", rpm=2)
    _, rpm, _ = backend._limiters
    asyncio.run(rpm.acquire(1))
    asyncio.run(rpm.acquire(1))

    async def third():
        await asyncio.wait_for(rpm.acquire(1), 0.3)

    with pytest.raises(TimeoutError):
        asyncio.run(third())


def test_joined_chunk_stats_sum_and_an_unknown_part_makes_the_sum_unknown():
    from curate.storage.step import StepOutput, join_outputs

    def part(cost):
        return StepOutput([1], [[]], stats={"requests": 1, "cost_usd": cost, "tokens": {"prompt": 2}, "model": "m"})

    for costs in ((0.5, None), (None, 0.5)):
        joined = join_outputs([part(costs[0]), part(costs[1]), part(0.25)])
        assert joined.stats == {"requests": 3, "cost_usd": None, "tokens": {"prompt": 6}, "model": "m"}
    assert join_outputs([part(0.5), part(0.25)]).stats["cost_usd"] == 0.75


def test_a_judge_never_writes_over_another_producers_column_or_a_pool_field(tmp_path):
    """`curate score --judge quality --column complexity` replaced the complexity judge's paid labels (and
    `--column instruction` shadowed the pool field); a judge takes over its own column or a scorer's only."""
    from curate.errors import WorkspaceError

    ws = _workspace(tmp_path, ["one", "two", "three"])
    with FaultServer() as srv:
        backend = _backend(srv)
        ws.apply(Judge("complexity", backend), progress=False)
        paid = ws.column("complexity")
        for column, message in (("complexity", "another producer wrote \\(judge 'complexity'\\); the quality judge"),
                                ("instruction", "is a field of the pool file; the quality judge")):
            with pytest.raises(WorkspaceError, match=message):
                ws.apply(Judge("quality", backend, column=column), progress=False)
        assert ws.column("complexity") == paid
        ws.add_column("quality", [[2.0]] * len(ws), {"kind": "scorer"})  # a shipped scorer's predictions
        assert ws.apply(Judge("quality", backend), progress=False).computed == 3  # a judge takes them over
        assert ws.apply(Judge("complexity", backend), progress=False, force=True).computed == 3  # its own (cached)
        sent = srv.total
    assert sent == 6  # complexity and quality once per row: the refused runs sent nothing


def test_failure_and_spend_texts_close_their_parentheses_and_name_the_model_without_a_price():
    """A failure message cut inside '(output 'The' ...' left its parenthesis open before '(and 3 other messages)';
    an unknown cost said 'no price for a model' without naming it."""
    from curate.cli.judge import usage_total_line
    from curate.codes import clip

    cut = clip("no digit 1-6 among the 20 top tokens (output 'The' then a long tail of other tokens here)", 50)
    assert cut.endswith("…)") and cut.count("(") == cut.count(")") and len(cut) <= 52
    assert clip("short (fine)", 50) == "short (fine)"
    prov = {"model": "judge-without-price", "runs": [{"cost_usd": None, "tokens": {"prompt": 1, "completion": 1}}]}
    assert usage_total_line(prov).endswith("cost unknown (no price known for judge-without-price)")


def test_a_row_longer_than_the_context_fails_context_too_long_not_http_error(tmp_path, fault_server):
    """A server's 400 saying the row exceeds the model's context was a generic ``http_error``; the local model's
    context length was a default outside curate/defaults/."""
    import inspect

    from curate.codes import FailureCode
    from curate.defaults import BACKEND
    from curate.llm.local import LocalServer
    from curate.llm.vllm_batch import VLLMBatchBackend
    from curate.llm.vllm_engine import VLLMBackend

    ws = _workspace(tmp_path, ["[toolong] a very long row", "[always400] refused", "plain one"])
    result = _score(ws, "quality", _backend(fault_server))
    (long_row,), (refused,), plain = ws.failures("quality")
    assert long_row.code is FailureCode.CONTEXT_TOO_LONG and "maximum context length is 2048" in long_row.message
    assert refused.code is FailureCode.HTTP_ERROR and plain == []
    assert refused.message == "HTTP 400: bad request (invalid_request_error)"  # the server's words: it was the SDK's
    # "Error code: 400 - {'error': {'message': 'bad request', 'type': 'invalid_request_error'}}"
    assert set(result.failure_reasons) == {"context_too_long", "http_error"}
    assert fault_server.counts[_key_of(fault_server, "[toolong]")] == 1  # permanent: not retried
    for server in (LocalServer, VLLMBatchBackend, VLLMBackend):
        assert inspect.signature(server).parameters["max_model_len"].default == BACKEND.local_max_model_len


def test_an_empty_reply_to_a_digit_judge_is_empty_output(tmp_path, fault_server):
    """An empty reply (no text, no logprobs) was recorded as no_logprobs, as if a proxy had dropped the logprobs
    of a digit it sent; it is the code the table has for it: empty_output, its raw '' kept."""
    ws = _workspace(tmp_path, ["[empty] silent", "[nologprobs] textual"])
    _score(ws, "complexity", _backend(fault_server))
    by_text = {conv[0]["content"]: i for i, conv in enumerate(ws.conversations())}
    failures = ws.failures("complexity")
    (empty,) = failures[by_text["[empty] silent"]]
    assert empty.code is FailureCode.EMPTY_OUTPUT and empty.raw == "" and "no text and no logprobs" in empty.message
    (dropped,) = failures[by_text["[nologprobs] textual"]]
    assert dropped.code is FailureCode.NO_LOGPROBS and dropped.raw == "4"


def test_a_retry_failed_run_of_a_model_without_a_price_says_its_cost_is_unknown(tmp_path, fault_server):
    """The first run of a model without a known price said 'cost unknown'; its --retry-failed re-run, whose
    requests all failed again, said cost $0.00 for the same model: its cost is unknown too."""
    ws = _workspace(tmp_path, ["plain one", "[always500] broken"])
    first = _score(ws, "complexity", _backend(fault_server, max_retries=0))
    assert first.provenance["runs"][-1]["cost_usd"] is None
    sent = fault_server.total
    again = _score(ws, "complexity", _backend(fault_server, max_retries=0), retry_failed=True)
    assert fault_server.total == sent + 1  # the failed row, sent again, failed again
    assert again.provenance["runs"][-1]["cost_usd"] is None and again.provenance["cost_usd"] is None
