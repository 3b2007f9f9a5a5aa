"""Reliability of the LLM path (issue 11): transport, budget under concurrency, prices, prompt files, CLI errors.

Every test runs against the fault-injecting OpenAI-compatible server on loopback (no mocks); the CLI
tests run ``python -m curate.cli`` in a subprocess, as a user would.
"""

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from curate.codes import FailureCode
from curate.errors import CurateError, CurateWarning
from curate.llm.backends import OpenAIBackend, estimate_tokens, register_price
from curate.llm.judges import Judge
from curate.llm.prompts import PromptError, load_prompt
from curate.llm.runner import build_requests, run_prompt
from curate.session import Workspace
from curate.storage.run_records import requests_sent
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer

REPO = Path(__file__).resolve().parents[1]
PRICED_MODEL = "gpt-4o-mini"  # in curate's built-in price table, so a CLI subprocess knows its price too
UNPRICED_MODEL = "no-such-model-priced"


@pytest.fixture
def fault_server():
    with FaultServer(retry_after="1", hang_seconds=3.0) as srv:
        yield srv


def _workspace(tmp_path, instructions, name="ws"):
    src = write_jsonl(tmp_path / f"{name}.jsonl", [{"instruction": t, "input": "", "output": "ok"} for t in instructions])
    ws = Workspace(tmp_path / name)
    ws.load(src)
    return ws


def _cli(*args) -> subprocess.CompletedProcess:
    """A command's exit code and words, from curate.cli.main() in this process (see tests/cli_in_process.py)."""
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    return curate_in_process(*args, env=env)


def _one_error_line(proc: subprocess.CompletedProcess, code: int = 1) -> str:
    """The single ``error: ...`` line the CLI prints for a CurateError (exit ``code``, no traceback)."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def _backend(srv, model="fault", **kw):
    kw.setdefault("timeout", 2.0)
    kw.setdefault("max_retries", 1)
    kw.setdefault("backoff_base", 0.05)
    return OpenAIBackend(srv.base_url, model, api_key="k", **kw)


# -- 1. the transport needs no undeclared httpx ------------------------------------------------------
def test_backend_sends_requests_without_httpx_installed(tmp_path, fault_server):
    """openai 3.x talks through httpx2; curate must not import httpx itself (it is not a dependency)."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["httpx"] = None  # as if httpx were not installed: any import of it fails
        from curate.llm.backends import OpenAIBackend
        from curate.llm.runner import run_prompt
        backend = OpenAIBackend({fault_server.base_url!r}, "fault", api_key="k", max_retries=0)
        results = run_prompt("complexity", [{{"instruction": "q one"}}, {{"instruction": "q two"}}], backend,
                             {str(tmp_path / "c.sqlite")!r}, progress=False)
        assert all(r.ok and 1 <= r.parsed <= 6 for r in results), [r.failure for r in results]
        print("scored", len(results))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "scored 2" in proc.stdout and fault_server.total == 2


def test_a_retry_after_of_an_hour_fails_the_request_instead_of_sleeping_an_hour(tmp_path):
    with FaultServer(retry_after="3600") as srv:
        backend = OpenAIBackend(srv.base_url, "fault", api_key="k")
        started = time.perf_counter()
        bad, good = run_prompt("complexity", [{"instruction": "q [429x1]"}, {"instruction": "q fine"}], backend,
                               tmp_path / "c.sqlite", progress=False)
        assert time.perf_counter() - started < 60  # a hang guard, not a speed claim: it slept an hour
    assert good.ok and bad.failure.code is FailureCode.TRANSIENT
    assert "asks to wait 3600s (Retry-After)" in bad.failure.message and srv.total == 2  # no retry of the 429


def test_a_server_that_refuses_every_connection_stops_the_run_after_a_few_attempts_and_a_rerun_sends_the_rows(
        tmp_path):
    """A wrong --base-url (nothing listening) was retried row by row with full back-off (a minute for 51 rows,
    hours for 30,000): a run whose server never answered stops sending after a few connection errors, and every row
    left fails transient with a message naming the URL, so the re-run against a server that is up sends them."""
    from curate.defaults import BACKEND

    ws = _workspace(tmp_path, [f"Task {i}: explain item {i}." for i in range(30)])
    srv = FaultServer()  # its port is free and nothing listens on it until start()
    down = _backend(srv, max_retries=3, concurrency=2)
    with pytest.warns(CurateWarning, match=r"complexity: 30 of the 30 rows computed now failed"):
        result = ws.apply(Judge("complexity", down), progress=False)
    assert result.failed == 30 and down.requests_sent <= BACKEND.unreachable_after + down.concurrency  # was 30 x 4
    fails = [f for row in ws.failures("complexity") for f in row]
    assert all(f.code is FailureCode.TRANSIENT for f in fails)
    assert all(f"no server at {srv.base_url}: connection error" in f.message for f in fails[-20:])
    assert "check base_url= (CLI: --base-url)" in fails[-1].message  # ws.apply's user passed no flag
    record = ws.column_provenance("complexity")["runs"][-1]  # the rows held back count as not sent
    assert 1 <= requests_sent(record) <= down.requests_sent and record["requests_not_sent_refused"] >= 30 - down.requests_sent
    with srv:
        again = ws.apply(Judge("complexity", _backend(srv)), progress=False)
    assert again.computed == 30 and again.failed == 0 and srv.total == 30


def test_a_server_that_accepts_and_drops_connections_is_not_called_absent(tmp_path):
    """Only a connection never made (refused, no such host) says nobody is at the URL: a server that accepts and
    closes without an answer (a reset under a burst) counted too, and three of those stopped a whole run with 'no
    server at URL, check --base-url'. Its rows spend their attempts instead."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def drop() -> None:  # accept each connection and close it at once: no HTTP answer
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                listener.accept()[0].close()
            except OSError:
                continue

    thread = threading.Thread(target=drop, daemon=True)
    thread.start()
    try:
        ws = _workspace(tmp_path, [f"Task {i}: explain item {i}." for i in range(4)])
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        backend = OpenAIBackend(url, "fault", api_key="k", max_retries=2, backoff_base=0.01, concurrency=2)
        with pytest.warns(CurateWarning, match=r"complexity: 4 of the 4 rows computed now failed"):
            result = ws.apply(Judge("complexity", backend), progress=False)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert result.failed == 4 and backend.requests_sent == 4 * 3  # every row its three attempts
    messages = [f.message for row in ws.failures("complexity") for f in row]
    assert all("gave up after 3 attempts; last error: connection error" in m for m in messages), messages[:1]
    assert not any("no server at" in m for m in messages)


def test_a_server_that_answered_and_then_drops_is_retried_row_by_row_as_before(tmp_path):
    """Stopping early is for a server never reached: one that answered this backend before is retried (it may be
    restarting), so each row spends its attempts."""
    ws = _workspace(tmp_path, [f"Task {i}: explain item {i}." for i in range(6)])
    with FaultServer() as srv:
        backend = _backend(srv, max_retries=3, concurrency=2)
        assert ws.apply(Judge("complexity", backend), ids=ws.ids[:1], progress=False).failed == 0
        judge = Judge("complexity", backend)
    sent = backend.requests_sent
    with pytest.warns(CurateWarning, match=r"complexity: 5 of the 5 rows computed now failed"):
        result = ws.apply(judge, ids=ws.ids[1:], progress=False)
    assert result.failed == 5 and backend.requests_sent - sent == 5 * 4
    assert all(f.message.startswith("gave up after 4 attempts; last error: connection error")
               for row in ws.failures("complexity", ws.ids[1:]) for f in row)


# -- 2. --max-cost under concurrency ----------------------------------------------------------------
BUDGET_ROWS = 60
BUDGET_SCORED = 40  # rows the budget pays for when requests go one at a time
_NOT_SENT = re.compile(r"(\d+) rows? not sent: max_cost \$([\d.]+) reached \(spent \$([\d.]+)\)")
_REASON = re.compile(r"max_cost \$([\d.]+).*spent \$([\d.]+)")


def _budget_for(ws, rows_paid: int, usage_prompt_tokens: int) -> tuple[float, float]:
    """(max_cost, worst-case cost of one request): sent one at a time, exactly ``rows_paid`` requests fit.

    A request goes when spent + its worst case <= max_cost, so the last one goes with ``rows_paid - 1`` paid.
    """
    backend = OpenAIBackend("http://127.0.0.1:9/v1", PRICED_MODEL)
    request = build_requests(Judge("complexity").prompt, [{"instruction": c[0]["content"]} for c in ws.conversations()],
                             backend)[0]
    worst = backend.cost(estimate_tokens(request.messages), int(request.params["max_tokens"]))
    real = backend.cost(usage_prompt_tokens, 1)
    return worst + (rows_paid - 0.5) * real, worst


def test_the_high_token_estimate_is_high_for_every_script():
    """estimate_tokens backs max_cost, --tpm and the dry run: at 3 characters a token it counted 560 Chinese
    characters as ~190 tokens where SmolLM2's tokenizer counts ~1,060, and max_cost let 2x its cap through. It is
    now at least a real tokenizer's count (and the UTF-8 bytes, which no byte-level BPE exceeds) in every script."""
    from transformers import AutoTokenizer

    from curate.llm.local import prepare_model

    tokenizer = AutoTokenizer.from_pretrained(str(prepare_model()))
    texts = {"english": "Explain how a heat pump moves heat from outside air into a house in winter. " * 8,
             "chinese": "请解释热泵如何在冬天把室外空气中的热量转移到房屋里，并说明它的效率为什么会随温度下降。" * 12,
             "russian": "Объясните, как тепловой насос переносит тепло из наружного воздуха в дом зимой. " * 8,
             "arabic": "اشرح كيف تنقل المضخة الحرارية الحرارة من الهواء الخارجي إلى المنزل في الشتاء. " * 8,
             "emoji": "🔥🌡️❄️🏠 " * 40, "code": "for (int i = 0; i < n; ++i) { a[i] = b[i] * c[i]; }\n" * 10,
             "numbers": '{"id": 31415926535, "x": [0.5772156649, 2.7182818284]}' * 8, "control": "a\x01b\x02c\x1b[0m" * 30}
    for script, text in texts.items():
        estimate = estimate_tokens([{"role": "user", "content": text}])
        real = len(tokenizer.encode(text, add_special_tokens=False))
        assert estimate >= real, (script, estimate, real)
        if not text.isascii():
            assert estimate >= len(text.encode()) - len(text.encode("ascii", "ignore")), script
    english = texts["english"]  # and not wildly high on English: within 2x of the tokenizer's count
    assert estimate_tokens([{"role": "user", "content": english}]) <= 2 * len(tokenizer.encode(english)) + 16

def test_max_cost_under_concurrency_scores_as_many_rows_as_serial(tmp_path):
    """In-flight worst-case reservations must not fail rows early: concurrency 16 scores what concurrency 1 does,
    the reasons report the real spend, and the CLI says how many rows were not sent (exit 1)."""
    from curate.report.summary import llm_usage

    texts = [f"Task {i:03d}: summarise item {i:03d} in one line." for i in range(BUDGET_ROWS)]
    usage_tokens = 10  # the server counts far fewer tokens than curate's deliberately high estimate
    scored: dict[int, int] = {}
    with FaultServer(usage_prompt_tokens=usage_tokens, latency=0.005) as srv:
        for concurrency in (1, 16):
            ws = _workspace(tmp_path, texts, name=f"c{concurrency}")
            max_cost, worst = _budget_for(ws, BUDGET_SCORED, usage_tokens)
            before = srv.total
            proc = _cli("score", ws.path, "--judge", "complexity", "--base-url", srv.base_url, "--model",
                        PRICED_MODEL, "--max-cost", repr(max_cost), "--concurrency", concurrency, "--max-retries", 0)
            line = _one_error_line(proc)
            match = _NOT_SENT.search(line)
            assert match, line
            ws = Workspace.open(ws.path)
            values, failures = ws.row_values("complexity"), ws.failures("complexity")
            scored[concurrency] = sum(v is not None for v in values)
            assert srv.total - before == scored[concurrency]  # every sent request was answered and scored
            assert int(match.group(1)) == BUDGET_ROWS - scored[concurrency]
            spent = float(match.group(3))
            assert 0 < spent <= max_cost
            budget_reasons = [f for fails in failures for f in fails]
            assert len(budget_reasons) == BUDGET_ROWS - scored[concurrency]
            for failure in budget_reasons:  # the real spend: the next request truly did not fit
                reason = failure.message
                assert failure.code is FailureCode.BUDGET and failure.turn == 1, failure
                found = _REASON.search(reason)
                assert found and "not sent" in reason, reason
                assert float(found.group(2)) + worst > max_cost * 0.999, reason
            assert ws.column_provenance("complexity")["cost_usd"] <= max_cost
            # the cost table (report, curate info) counts the requests sent, not those max_cost held back
            (usage,) = llm_usage(ws)
            assert (usage["calls"], usage["not_sent_max_cost"]) == (scored[concurrency], len(budget_reasons))
    assert abs(scored[1] - BUDGET_SCORED) <= 1, scored
    assert abs(scored[16] - scored[1]) <= 2, scored


def test_rerun_with_a_larger_max_cost_sends_only_the_unsent_rows(tmp_path):
    """The rows max_cost left unsent carry the code ``budget``; re-running the command retries them (and only
    them: the scored rows are reused, nothing answered is sent again)."""
    texts = [f"Task {i:03d}: list item {i:03d}." for i in range(12)]
    with FaultServer(usage_prompt_tokens=10) as srv:
        ws = _workspace(tmp_path, texts)
        max_cost, _ = _budget_for(ws, 5, 10)
        args = ["score", ws.path, "--judge", "complexity", "--base-url", srv.base_url, "--model", PRICED_MODEL,
                "--concurrency", 1, "--max-retries", 0]
        unsent = int(_NOT_SENT.search(_one_error_line(_cli(*args, "--max-cost", repr(max_cost)))).group(1))
        assert 0 < unsent < len(texts)
        sent = srv.total
        again = _cli(*args, "--max-cost", repr(max_cost))  # the same cap again: per command, so 5 more are sent
        resent = re.search(r"re-sent (\d+) requests", again.stdout)
        assert resent and int(resent.group(1)) == srv.total - sent == 5, again.stdout  # refused ones not counted
        unsent -= 5
        sent = srv.total
        proc = _cli(*args, "--max-cost", "100")
        assert proc.returncode == 0, proc.stderr
        assert srv.total - sent == unsent
        assert f"computed {unsent}, reused {len(texts) - unsent}, failed 0" in proc.stdout, proc.stdout
    ws = Workspace.open(ws.path)
    assert all(v is not None for v in ws.row_values("complexity"))
    assert all(f == [] for f in ws.failures("complexity"))


def test_a_wrong_api_key_stops_the_run_and_a_rerun_with_the_right_one_scores_every_row(tmp_path):
    """HTTP 401 refuses the key, not a row: nothing more is sent after the first answers, no row is stored as a
    permanent failure, the run says why, and the re-run with the right key scores every row (it selected 0 rows
    and exited 0; the re-run sent nothing, as every row was stored failed)."""
    from curate.pipeline import run_pipeline

    pool = write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"Task {i}: explain item {i}.", "output": f"A{i}."}
                                              for i in range(40)])
    with FaultServer(api_key="right") as srv:
        wrong = OpenAIBackend(srv.base_url, PRICED_MODEL, api_key="wrong", concurrency=4)
        with pytest.raises(CurateError, match=r"40 rows not scored: the judge did not answer \(HTTP 401: the server "
                                              r"refuses the API key \(model '[^']+' at http://127\.0\.0\.1:\d+/v1\); fix it and re-run"):
            with (
                pytest.warns(CurateWarning, match=r"complexity: 40 of the 40 rows computed now failed"),
                pytest.warns(CurateWarning, match=r"quality: 40 of the 40 rows computed now failed"),
            ):
                run_pipeline(str(pool), out=tmp_path / "run", budget=5, backend=wrong, report=False, progress=False)
        assert srv.total <= 2 * 4  # per judge, the requests in flight when its first 401 came back; none after
        ws = Workspace.open(tmp_path / "run" / "workspace")
        assert all(f.code is FailureCode.TRANSIENT for fails in ws.failures("complexity") for f in fails)
        right = OpenAIBackend(srv.base_url, PRICED_MODEL, api_key="right")
        result = run_pipeline(str(pool), out=tmp_path / "run", budget=5, backend=right, report=False, progress=False)
    ws = result.workspace
    assert all(v is not None for v in ws.row_values("quality")) and len(ws.selection("deita")) == 5


# -- 3. an unknown price never counts as $0 -----------------------------------------------------------
def test_max_cost_without_a_price_is_one_clean_cli_error(tmp_path, fault_server):
    ws = _workspace(tmp_path, ["one row"])
    proc = _cli("score", ws.path, "--judge", "complexity", "--base-url", fault_server.base_url, "--model",
                UNPRICED_MODEL, "--max-cost", "1")
    line = _one_error_line(proc, 78)
    assert "no price" in line and UNPRICED_MODEL in line and "register_price" in line
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": "one row", "input": "", "output": "ok"}])
    proc = _cli("run", pool, "--out", tmp_path / "run", "--budget", "1", "--base-url", fault_server.base_url, "--model",
                UNPRICED_MODEL, "--max-cost", "1", "--no-report")
    line = _one_error_line(proc, 78)
    assert "no price" in line and UNPRICED_MODEL in line
    assert fault_server.total == 0
    # a negative cap ran every step and left every row unsent ("max_cost reached"), run after run
    proc = _cli("run", pool, "--out", tmp_path / "neg", "--budget", "1", "--base-url", fault_server.base_url, "--model",
                PRICED_MODEL, "--max-cost", "-1", "--no-report")
    assert "max_cost is a USD amount >= 0, not -1.0" in _one_error_line(proc, 78)
    assert fault_server.total == 0 and not (tmp_path / "neg").exists()
    from curate.llm.batch import OpenAIBatchBackend

    with pytest.raises(CurateError, match="max_cost is a USD amount >= 0"):
        OpenAIBatchBackend(fault_server.base_url, PRICED_MODEL, workspace=ws, api_key="k", max_cost=float("nan"))


def test_local_kind_is_free_only_on_loopback():
    """kind='local' means our own loopback server ($0); a remote URL labelled local must not dodge max_cost."""
    assert OpenAIBackend("http://127.0.0.1:8000/v1", UNPRICED_MODEL, kind="local", max_cost=1.0).price == (0.0, 0.0)
    with pytest.raises(CurateError, match="no price"):
        OpenAIBackend("https://llm.example.com/v1", UNPRICED_MODEL, kind="local", max_cost=1.0)


def test_unknown_price_is_reported_as_unknown_not_zero(tmp_path, fault_server):
    ws = _workspace(tmp_path, ["row a", "row b"])
    prov = ws.apply(Judge("complexity", _backend(fault_server, UNPRICED_MODEL)), progress=False).provenance
    assert prov["scored_rows"] == 2 and prov["runs"][-1]["cost_usd"] is None
    assert prov["cost_usd"] is None and prov["cost_usd_including_cached"] is None
    assert prov["price_usd_per_mtok"] is None
    proc = _cli("score", ws.path, "--judge", "quality", "--base-url", fault_server.base_url, "--model", UNPRICED_MODEL)
    assert proc.returncode == 0, proc.stderr
    assert "cost unknown" in proc.stdout and "$0.0000" not in proc.stdout
    register_price("fault-priced-reliability", 1000.0, 1000.0)
    priced = ws.apply(Judge("complexity", _backend(fault_server, "fault-priced-reliability")), progress=False)
    assert priced.computed == 2  # another model: another fingerprint, so the rows are scored again
    assert priced.provenance["cost_usd"] > 0


def test_a_judge_run_on_some_rows_never_merges_into_a_scorers_column(tmp_path, fault_server):
    """The shipped scorers write ``complexity`` and ``quality``, the judges' own names: a judge run on a few rows
    must not merge its values into them under its provenance; on every row it takes the column over whole."""
    ws = _workspace(tmp_path, ["row a", "row b", "row c"])
    predicted = [[2.5], [3.5], [4.5]]
    ws.add_column("complexity", predicted, {"kind": "scorer", "imitates": "complexity", "granularity": "turn",
                                            "reducer": "sum"})
    with pytest.raises(CurateError, match=r"2 rows outside the ones asked for were computed under other settings "
                                          r"\(a scorer column\)"):
        ws.apply(Judge("complexity", _backend(fault_server)), ids=ws.ids[:1], progress=False)
    line = _one_error_line(_cli("score", ws.path, "--judge", "complexity", "--base-url", fault_server.base_url,
                                "--model", UNPRICED_MODEL, "--limit", "1"), code=78)  # a settings refusal
    assert "--column NAME" in line
    assert fault_server.total == 0 and ws.column("complexity") == predicted
    proc = _cli("score", ws.path, "--judge", "complexity", "--base-url", fault_server.base_url, "--model",
                UNPRICED_MODEL, "--column", "complexity_judge")
    assert proc.returncode == 0, proc.stderr
    assert ws.column_provenance("complexity_judge")["kind"] == "judge" and ws.column("complexity") == predicted
    whole = ws.apply(Judge("complexity", _backend(fault_server)), progress=False)
    assert whole.computed == 3 and whole.provenance["kind"] == "judge"
    assert set(ws.column_fingerprints("complexity").values()) == {whole.provenance["fingerprint"]}


def test_a_takeover_that_gets_no_answer_keeps_the_scorers_values_and_says_so(tmp_path, fault_server):
    """A judge run on every row replaces a scorer's column; one whose server never answered replaced every score
    with a failure (quality 0/51, kind judge). A run that gives no value keeps the column as it was and says why,
    from what; one that values some rows takes the column over, its unanswered rows failing transient."""
    ws = _workspace(tmp_path, ["row a", "row b", "[always500] row c"])
    predicted = [[2.5], [3.5], [4.5]]
    ws.add_column("quality", predicted, {"kind": "scorer", "imitates": "quality", "granularity": "turn",
                                         "reducer": "sum"})
    down = f"http://127.0.0.1:{FaultServer().port}/v1"  # nothing listens there
    with pytest.raises(CurateError, match=r"column 'quality' keeps its earlier values \(3 rows, a scorer column\): "
                                          r"the run on 3 rows gave no value \(3 x transient \(e.g. turn 1: no server at"):
        ws.apply(Judge("quality", OpenAIBackend(down, "fault", api_key="k", max_retries=2, backoff_base=0.05)),
                 progress=False)
    assert ws.column("quality") == predicted and ws.column_provenance("quality")["kind"] == "scorer"
    line = _one_error_line(_cli("score", ws.path, "--judge", "quality", "--base-url", down, "--model", UNPRICED_MODEL), 75)
    assert "keeps its earlier values (3 rows, a scorer column)" in line and "--column NAME" in line
    assert ws.column("quality") == predicted and not any(ws.failures("quality"))
    with pytest.warns(CurateWarning, match=r"quality: 1 of the 3 rows computed now failed"):
        partial = ws.apply(Judge("quality", _backend(fault_server)), progress=False)  # two rows answered: taken over
    assert (partial.valued_now, partial.failed) == (2, 1) and partial.provenance["kind"] == "judge"
    assert ws.column("quality")[2] == [None] and ws.failures("quality")[2][0].code is FailureCode.TRANSIENT


def test_a_judge_that_takes_over_the_scorers_quality_column_says_so(tmp_path, fault_server):
    """The judge and the shipped scorer share the column name ``quality``: a judge run on a workspace the scorer
    had scored took the column over without a word (Python API and ``curate score`` alike). The result holds what
    it replaced, and its summary, the notebook's view and the CLI's lines say so; a re-run of the judge does not."""
    from curate.scorers import load_default

    said = "quality: the scorer's column (scorer imitating quality) is replaced by the judge's labels"
    ws = _workspace(tmp_path, ["Explain tides.", "Name three primes."])
    assert ws.score(load_default("quality")).took_over == {}
    shutil.copytree(ws.path, tmp_path / "cli")  # the same scored workspace, for the CLI
    taken = ws.apply(Judge("quality", _backend(fault_server)), progress=False)
    assert taken.took_over["kind"] == "scorer" and taken.provenance["kind"] == "judge"
    assert taken.takeover_text() == said and said in taken.summary() and html.escape(said) in taken._repr_html_()
    again = ws.apply(Judge("quality", _backend(fault_server, "another-model")), progress=False)
    assert again.computed == 2 and again.took_over == {} and "replaced" not in again.summary()
    proc = _cli("score", tmp_path / "cli", "--judge", "quality", "--base-url", fault_server.base_url, "--model",
                UNPRICED_MODEL)
    assert proc.returncode == 0, proc.stderr
    assert said in " ".join(proc.stdout.split()), proc.stdout


def test_a_judge_that_took_over_a_scorers_column_sums_its_own_cost_not_unknown(tmp_path, fault_server):
    """The scorer's run stays in the column's run history after a judge takes the column over; it recorded no
    price (it paid no LLM call), and the sum over the runs took that for an unknown price: 'cost unknown'."""
    from curate.cli.judge import usage_total_line
    from curate.report.summary import llm_usage
    from curate.scorers import load_default

    ws = _workspace(tmp_path, ["Explain tides.", "Name three primes."])
    ws.score(load_default("quality"))
    ws.apply(Judge("quality", _backend(fault_server, PRICED_MODEL)), progress=False)
    prov = ws.column_provenance("quality")
    assert [r.get("requests") for r in prov["runs"]] == [None, 2]  # the scorer's run, then the judge's
    (usage,) = llm_usage(ws)
    assert prov["runs"][-1]["cost_usd"] > 0
    assert usage["runs"] == 2 and usage["cost_usd"] == pytest.approx(prov["runs"][-1]["cost_usd"])
    line = usage_total_line(prov)
    assert line.startswith("all 2 runs of this column: tokens ") and "cost $" in line and "unknown" not in line


def test_a_blank_response_is_never_sent_to_a_judge_nor_scored(tmp_path, fault_server):
    from curate.rows import Turn
    from curate.scorers.features import missing_inputs

    src = write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"row {i}", "output": out}
                                             for i, out in enumerate(["fine", "", "  \n\t "])])
    ws = Workspace(tmp_path / "ws")
    ws.load(src)
    with pytest.warns(CurateWarning, match=r"quality: 2 of the 3 rows computed now failed"):
        result = ws.apply(Judge("quality", _backend(fault_server)), progress=False)
    assert fault_server.total == 1 and result.failed == 2
    assert [[f.code for f in fails] for fails in ws.failures("quality")] == [[], [FailureCode.NO_RESPONSE],
                                                                            [FailureCode.NO_RESPONSE]]
    assert missing_inputs(Turn("row", "  \n"), ["instruction", "response"]) == ["response"]  # scorers: the same rule


def test_a_run_on_some_rows_under_another_model_is_refused_not_mixed_in(tmp_path, fault_server):
    ws = _workspace(tmp_path, ["row a", "row b", "row c"])
    assert ws.apply(Judge("quality", _backend(fault_server, "judge-a")), progress=False).computed == 3
    sent, before = fault_server.total, ws.column("quality")
    with pytest.raises(CurateError, match="2 rows outside the ones asked for were computed under other settings "
                                          r"\(a judge column, model judge-a, prompt quality\)"):
        ws.apply(Judge("quality", _backend(fault_server, "judge-b")), ids=ws.ids[:1], progress=False)
    assert fault_server.total == sent and ws.column("quality") == before
    assert ws.apply(Judge("quality", _backend(fault_server, "judge-a")), ids=ws.ids[:1], progress=False).computed == 0
    every = ws.apply(Judge("quality", _backend(fault_server, "judge-b")), progress=False)  # every row: one run again
    assert every.computed == 3 and set(ws.column_fingerprints("quality").values()) == {every.provenance["fingerprint"]}


# -- 4. prompt files cannot import arbitrary code or redirect the request ----------------------------
OUTPUT_MODEL_PROMPT = """---
name: labeler
inputs: [instruction]
output:
  kind: json
  model: "{model}"
params:
  max_tokens: 64
---
=== user ===
Label this: {{{{ instruction }}}}
"""


class ReliabilityLabel(BaseModel):
    label: str
    confidence: float


def test_output_model_outside_curate_is_refused_without_importing_it(tmp_path, monkeypatch):
    marker = tmp_path / "imported.txt"
    (tmp_path / "sneaky_module.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('side effect ran')\n"
        "from pydantic import BaseModel\nclass Out(BaseModel):\n    label: str\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # curate.cli.__main__ is a curate module, and importing it ran the command line (printed its help, SystemExit)
    for spec in ("sneaky_module:Out", "os:system", "curate.llm.prompts:os", "curate.llm.backends:register_price",
                 "curate.cli.__main__:Out"):
        path = tmp_path / "labeler.md"
        path.write_text(OUTPUT_MODEL_PROMPT.format(model=spec))
        with pytest.raises(PromptError) as info:
            Judge(path)
        assert str(path) in str(info.value) and spec in str(info.value)
    assert not marker.exists(), "a prompt file made curate import an arbitrary module"
    assert "sneaky_module" not in sys.modules and "curate.cli.__main__" not in sys.modules


def test_curate_and_registered_output_models_are_allowed(tmp_path):
    from curate.llm.prompts import register_output_model

    assert load_prompt("instag").model_class().__name__ == "IntentTags"
    path = tmp_path / "labeler.md"
    spec = f"{ReliabilityLabel.__module__}:{ReliabilityLabel.__qualname__}"
    path.write_text(OUTPUT_MODEL_PROMPT.format(model=spec))
    with pytest.raises(PromptError, match="register_output_model"):
        Judge(path)
    assert register_output_model(ReliabilityLabel) is ReliabilityLabel
    assert Judge(path).output is ReliabilityLabel
    register_output_model(ReliabilityLabel, name="my-label")
    path.write_text(OUTPUT_MODEL_PROMPT.format(model="my-label"))
    assert Judge(path).output is ReliabilityLabel
    with pytest.raises(PromptError, match="BaseModel"):
        register_output_model(dict)


def test_params_cannot_redirect_the_request(tmp_path):
    path = tmp_path / "redirect.md"
    path.write_text("---\nname: redirect\ninputs: [instruction]\nparams:\n  model: gpt-4o\n  n: 5\n  stream: true\n"
                    "  messages: [{role: user, content: hi}]\n  temperature: 0.0\n---\n=== user ===\n{{ instruction }}\n")
    with pytest.raises(PromptError) as info:
        load_prompt(path)
    message = str(info.value)
    assert str(path) in message
    for key in ("messages", "model", "n", "stream"):
        assert repr(key) in message, message
    assert "temperature" not in message


# -- 5. render and front-matter mistakes are one-line errors -----------------------------------------
def _prompt_file(tmp_path, user_body: str, scale: str = "[1, 6]", inputs: str = "[instruction]") -> Path:
    path = tmp_path / "mine.md"
    path.write_text(f"---\nname: mine\ninputs: {inputs}\noutput:\n  kind: digit_score\n  scale: {scale}\n---\n"
                    f"=== user ===\n{user_body}\n")
    return path


def test_scalar_scale_is_a_prompt_error_naming_the_file(tmp_path):
    for scale in ("5", "[1]", "[a, b]", "[1, 6, 9]"):
        path = _prompt_file(tmp_path, "{{ instruction }}", scale=scale)
        with pytest.raises(PromptError, match="scale") as info:
            load_prompt(path)
        assert str(path) in str(info.value)
    path = _prompt_file(tmp_path, "{{ instruction }}", scale="5")
    line = _one_error_line(_cli("score", _workspace(tmp_path, ["x"]).path, "--judge", path, "--base-url",
                                "http://127.0.0.1:9/v1", "--model", "fault"), code=78)  # a prompt's settings
    assert str(path) in line and "scale" in line


def test_sandbox_violation_in_a_prompt_is_a_prompt_error(tmp_path, fault_server):
    path = _prompt_file(tmp_path, "{{ ''.__class__ }} {{ instruction }}")
    ws = _workspace(tmp_path, ["row one"])
    with pytest.raises(PromptError, match="unsafe") as info:
        ws.apply(Judge(path, _backend(fault_server)), progress=False)
    assert str(path) in str(info.value) and ws.ids[0] in str(info.value)
    assert fault_server.total == 0


def test_undefined_variable_in_a_prompt_is_one_cli_error_with_file_and_row(tmp_path, fault_server):
    path = _prompt_file(tmp_path, "{{ instruction }}\nfor {{ audience }}")  # audience: the file's line 10
    ws = _workspace(tmp_path, ["row one", "row two"])
    with pytest.raises(PromptError, match="audience"):
        run_prompt(path, [{"instruction": "x"}], _backend(fault_server), tmp_path / "c.sqlite", progress=False)
    line = _one_error_line(_cli("score", ws.path, "--judge", path, "--base-url", fault_server.base_url,
                                "--model", "fault"), code=78)
    assert str(path) in line and "'audience' is undefined" in line
    # which line, and what to do (it said only "user message: UndefinedError"); found as the file loads, before a row
    assert f"{path}:10: in the user message" in line and "list it in the prompt's inputs (now ['instruction'])" in line
    assert fault_server.total == 0


# -- 6. --limit 0 ------------------------------------------------------------------------------------
def test_limit_zero_is_rejected_and_sends_nothing(tmp_path, fault_server):
    ws = _workspace(tmp_path, ["row one", "row two", "row three"])
    proc = _cli("score", ws.path, "--judge", "complexity", "--base-url", fault_server.base_url, "--model", "fault",
                "--limit", "0")
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "--limit" in proc.stderr and ">= 1" in proc.stderr and "Traceback" not in proc.stderr
    assert fault_server.total == 0 and not Workspace.open(ws.path).has_column("complexity")
    proc = _cli("score", ws.path, "--judge", "complexity", "--base-url", fault_server.base_url, "--model", "fault",
                "--limit", "2")
    assert proc.returncode == 0, proc.stderr
    assert fault_server.total == 2


def test_the_cost_of_runs_older_than_the_kept_history_stays_counted(tmp_path, monkeypatch):
    """A column keeps its last RUN_HISTORY runs in its provenance and the cost table summed those alone: a workspace
    scored in more runs than that (a pool loaded a part at a time) under-reported what it had paid. The runs dropped
    from the history are summed into one record, and every sum counts it."""
    import curate.storage.apply as apply_module
    from curate.cli.judge import usage_total_line
    from curate.report.summary import llm_usage

    monkeypatch.setattr(apply_module, "RUN_HISTORY", 2)
    ws = Workspace(tmp_path / "ws")
    with FaultServer() as srv:
        backend = OpenAIBackend(srv.base_url, PRICED_MODEL, api_key="k", max_retries=0)
        for part in range(5):  # a pool loaded and scored a part at a time: each run pays for its new rows
            ws.load(write_jsonl(tmp_path / f"part{part}.jsonl", [{"instruction": f"Part {part}, task {i}: explain "
                                                                   "it.", "output": "ok"} for i in range(part + 1)]))
            ws.apply(Judge("quality", backend), progress=False)
        sent = srv.total
    prov = ws.column_provenance("quality")
    assert len(prov["runs"]) == 2 and prov["earlier_runs"]["folded_runs"] == 3
    (usage,) = llm_usage(ws)
    assert (usage["runs"], usage["calls"]) == (5, sent) and sent == 1 + 2 + 3 + 4 + 5
    per_run = [r["cost_usd"] for r in prov["runs"]]
    assert usage["cost_usd"] == pytest.approx(prov["earlier_runs"]["cost_usd"] + sum(per_run))
    assert usage["cost_usd"] > sum(per_run) > 0
    tokens = sum(r["tokens"]["prompt"] for r in prov["runs"]) + prov["earlier_runs"]["tokens"]["prompt"]
    assert usage["prompt_tokens"] == tokens
    assert usage_total_line(prov).startswith(f"all 5 runs of this column: tokens {tokens:,} in")


def test_rows_sharing_one_request_pay_for_it_once_in_the_record(tmp_path):
    """The complexity judge reads the instruction alone, so rows that differ only in their reply send one request:
    the run's record counted its tokens and cost once per row (3 rows, 1 request, 3 times the price)."""
    rows = [{"instruction": "Explain how tides work.", "output": f"Reply {i}: the moon pulls the sea."}
            for i in range(3)] + [{"instruction": "Name three prime numbers.", "output": "2, 3, 5."}]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", rows))
    with FaultServer() as srv:
        ws.apply(Judge("complexity", OpenAIBackend(srv.base_url, PRICED_MODEL, api_key="k")), progress=False)
        sent = srv.total
    run = ws.column_provenance("complexity")["runs"][-1]
    assert sent == 2 and (run["requests"], run["cached_requests"], run["repeated_requests"]) == (4, 0, 2)
    assert run["tokens"]["completion"] == 2  # the fault server answers one completion token per request
    from curate.report.summary import llm_usage

    (usage,) = llm_usage(ws)
    assert usage["calls"] == sent
    # the report counts the rows sharing a request apart from the answers of the on-disk cache (it had no column)
    from curate.report.sections import judges_section

    assert (usage["cached"], usage["repeated"]) == (0, 2) and "<th>repeated</th>" in judges_section(ws)


def test_a_request_repeated_in_one_call_is_no_answer_of_the_disk_cache(tmp_path):
    """An item sharing another's request was marked ``cached``, as if an earlier run had answered it. A re-run
    answered by the disk cache counts the first item so, and its repeat as a repeat (as an unbroken run, or a run
    resumed after a kill, counts it: 256d881)."""
    rows = [{"instruction": "Explain how tides work."}] * 2 + [{"instruction": "[500x1] Name a prime."}] * 2
    with FaultServer() as srv:
        backend = OpenAIBackend(srv.base_url, PRICED_MODEL, api_key="k", max_retries=0)
        first = run_prompt("complexity", rows, backend, tmp_path / "c", progress=False)
        again = run_prompt("complexity", rows[:2], backend, tmp_path / "c", progress=False)
    assert [(r.cached, r.repeated, r.ok) for r in first] == [(False, False, True), (False, True, True),
                                                             (False, False, False), (False, True, False)]
    assert [(r.cached, r.repeated) for r in again] == [(True, False), (False, True)]


def test_a_dated_snapshot_takes_its_own_price_or_its_alias_and_another_variant_none(monkeypatch):
    """Prices went by the longest entry a name starts with: gpt-4o-2024-05-13 ($5 / $15 per 1M tokens) got gpt-4o's
    $2.50 / $10, so max_cost allowed about twice its cap; a gpt-4o-<variant> got gpt-4o's price too."""
    from curate.llm.backends import batch_price_of
    from curate.llm.base import PRICES, price_of

    assert price_of("gpt-4o-2024-05-13") == (5.0, 15.0) and price_of("gpt-3.5-turbo-16k-0613") == (3.0, 4.0)
    assert price_of("gpt-4o-2024-08-06") == price_of("gpt-4o") and price_of("gpt-3.5-turbo-0125") == (0.5, 1.5)
    assert price_of("gpt-4o-mini-2024-07-18") == price_of("gpt-4o-mini") == (0.15, 0.60)
    assert price_of("gpt-4o-realtime-preview") is None and batch_price_of("gpt-4o-audio-preview") is None
    assert batch_price_of("gpt-4.1-2025-04-14") == (1.0, 4.0)
    # a registered alias prices its dated snapshots (Anthropic's -YYYYMMDD) too
    monkeypatch.setitem(PRICES, "claude-3-5-sonnet", (3.0, 15.0))
    assert price_of("claude-3-5-sonnet-20241022") == (3.0, 15.0)
    assert price_of("claude-3-5-sonnet-latest") is None and price_of("gpt-4o-12345678") is None


def test_a_key_pasted_as_the_variable_name_or_in_the_url_is_never_echoed_nor_stored(monkeypatch):
    """`--api-key-env sk-...` printed the key in its error ("set $sk-..."); a key in the base URL (user:key@host) was
    kept in every column's provenance."""
    from curate.llm.openai_backend import api_key

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(CurateError) as err:
        api_key(None, "sk-proj-REALKEYPASTEDHERE123", "https://api.example.com/v1")
    assert "REALKEY" not in str(err.value) and "name of an environment variable" in str(err.value)
    assert "api_key_env= (CLI: --api-key-env)" in str(err.value)  # a Python user is told the parameter too
    with pytest.raises(CurateError, match=r"set \$OPENAI_API_KEY \(or name another variable: api_key_env='VAR' "
                                          r"\(CLI: --api-key-env VAR\)\)"):
        api_key(None, "OPENAI_API_KEY", "https://api.example.com/v1")
    backend = OpenAIBackend("http://user:sk-URLSECRET@api.example.com:8443/v1", "gpt-4o-mini")
    assert backend.describe()["base_url"] == "http://***@api.example.com:8443/v1"
    from curate.llm.openai_backend import without_credentials

    assert without_credentials("http://u:sk-x@[::1]:8000/v1") == "http://***@[::1]:8000/v1"  # brackets kept
    assert OpenAIBackend("https://api.example.com/v1", "gpt-4o-mini").describe()["base_url"] == "https://api.example.com/v1"


_OWNER = """
import sys, time
from curate.llm.local import LocalServer, announce
server = LocalServer(log_path=sys.argv[1]).launch()
if sys.argv[2] == "announce":
    announce(server)  # as `curate serve-local` does
print(server.pid, server.tmpdir, server.group.watchdog.pid, flush=True)
time.sleep(600)
"""


def _orphan(tmp_path, how: str) -> tuple[int, str]:
    """A vLLM server whose owner (a curate process) was SIGKILLed, and its watchdog too (curate.llm.watchdog; say
    the OOM killer took it): its own session keeps it running, for the sweep to stop."""
    from curate.llm.server_records import alive

    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(tmp_path / f"{how}.log"), how],
                             stdout=subprocess.PIPE, text=True)
    pid, tmpdir, watchdog = owner.stdout.readline().split()
    os.kill(int(watchdog), signal.SIGKILL)
    owner.kill()
    owner.wait()
    assert alive(int(pid)) and Path(tmpdir).is_dir()  # what a SIGKILL left
    return int(pid), tmpdir


def test_a_server_whose_curate_process_was_killed_is_stopped_by_the_next_one(tmp_path, monkeypatch):
    """A SIGKILL of `curate run --backend local` (or of `curate serve-local`) left its vLLM server running, 1.7 GB
    and a core, with its temporary folder; the next run started a second server, and an orphaned serve-local's
    announcement was reused for good; a re-run answered from the cache never launched one, so the orphan ran on. The
    next local run (its look for an announced server), or the next launch, stops it."""
    from curate.llm.local import ANNOUNCE_FILE, LocalServer, curate_home, prepare_model, running_server
    from curate.llm.server_records import SERVERS_DIR, alive

    models = prepare_model().parent  # converted once; the rest of this home is the test's own
    monkeypatch.setenv("CURATE_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "models").symlink_to(models)

    pid, tmpdir = _orphan(tmp_path, "announce")
    assert running_server() is None  # its announcer is gone: not reused
    assert not alive(pid) and not Path(tmpdir).exists() and not (curate_home() / ANNOUNCE_FILE).exists()
    pid, tmpdir = _orphan(tmp_path, "run")
    assert running_server() is None  # asked by every local run: one answered from the cache stops it too
    assert not alive(pid) and not Path(tmpdir).exists() and not (curate_home() / SERVERS_DIR / f"{pid}.json").exists()
    pid, tmpdir = _orphan(tmp_path, "run")
    server = LocalServer(log_path=tmp_path / "next.log").launch()
    try:
        assert not alive(pid) and not Path(tmpdir).exists()
        assert not (curate_home() / SERVERS_DIR / f"{pid}.json").exists()
        assert (curate_home() / SERVERS_DIR / f"{server.pid}.json").exists()
    finally:
        server.stop()
    assert not (curate_home() / SERVERS_DIR / f"{server.pid}.json").exists()


def test_a_server_record_of_another_machine_is_not_judged_from_here(tmp_path):
    """Every local run sweeps the records for orphans: one written on another host (a CURATE_HOME shared over NFS)
    names an owner PID that means nothing here, and its live server's temporary folder was deleted."""
    from curate.llm.server_records import SERVERS_DIR, machine, stop_orphans

    (tmp_path / SERVERS_DIR).mkdir()
    theirs, ours = tmp_path / "their-tmp", tmp_path / "our-tmp"
    for name, where, folder in (("1.json", "another-host ns", theirs), ("2.json", machine(), ours)):
        folder.mkdir()
        (tmp_path / SERVERS_DIR / name).write_text(json.dumps({"pid": 999_999_999, "owner_pid": 999_999_998,
                                                               "tmpdir": str(folder), "machine": where}))
    assert stop_orphans(tmp_path) == []  # no server of that PID runs here: nothing to stop
    assert theirs.is_dir() and (tmp_path / SERVERS_DIR / "1.json").exists()
    assert not ours.exists() and not (tmp_path / SERVERS_DIR / "2.json").exists()  # this machine's: cleared


def test_a_server_that_dies_during_start_up_leaves_no_temporary_folder(tmp_path):
    """On a port already taken vLLM exits during start-up: the error was clear, but its temporary folder and record
    were left behind (stop() returned early, the process being gone)."""
    import socket

    from curate.llm.local import LocalServer, curate_home
    from curate.llm.server_records import SERVERS_DIR

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = LocalServer(port=taken.getsockname()[1], log_path=tmp_path / "vllm.log", startup_timeout=120)
        server.launch()
        tmpdir, pid = server.tmpdir, server.pid
        with pytest.raises(CurateError, match="exited during start-up"):
            server.wait_ready()
    assert not Path(tmpdir).exists() and not (curate_home() / SERVERS_DIR / f"{pid}.json").exists()


NOTEBOOK_STOP = """
import asyncio, json, os, signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a kernel has it (a test's child may inherit it ignored)
from curate.llm.backends import OpenAIBackend
from curate.llm.runner import run_prompt
from tests.fault_server import FaultServer

presses = int(sys.argv[2])
with FaultServer(latency=0.5) as srv:
    backend = OpenAIBackend(srv.base_url, "fault", api_key="k", max_retries=0)
    pressed = []

    def stop_button():  # Jupyter's stop button: SIGINT to the kernel, here once or twice 0.3 s apart
        time.sleep(1.5)
        for _ in range(presses):
            pressed.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)

    async def cell():  # a cell runs inside the kernel's running event loop
        threading.Thread(target=stop_button, daemon=True).start()
        try:
            run_prompt("complexity", [{"instruction": f"q {i}"} for i in range(400)], backend, sys.argv[1],
                       progress=False)
        except KeyboardInterrupt:
            returned, sent = time.monotonic(), srv.total
            while True:
                try:
                    time.sleep(2.0)
                    break
                except KeyboardInterrupt:  # the second press, when the call had stopped before it
                    continue
            print(json.dumps({"took": returned - pressed[0], "sent": sent, "sent_later": srv.total - sent,
                              "threads": [t.name for t in threading.enumerate() if t.name.startswith("curate-loop")]}))

    asyncio.new_event_loop().run_until_complete(cell())  # no asyncio.run: its own Ctrl-C handling is not a kernel's
"""


@pytest.mark.parametrize("presses", [1, 2])
def test_the_notebook_stop_button_stops_a_judge_run_that_runs_on_a_worker_loop(tmp_path, presses):
    """In Jupyter (a running event loop) a judge call runs on a worker thread's loop. The stop button's Ctrl-C
    reached the user only when every request had been answered (400 requests sent, 10 s later); pressed twice, the
    kernel went idle with the call still sending in the background, and a re-run sent its requests again. The
    interrupt cancels the call now: it returns within seconds, and nothing is sent after it."""
    proc = subprocess.run([sys.executable, "-c", NOTEBOOK_STOP, str(tmp_path / "c.sqlite"), str(presses)],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["sent"] < 400 and got["sent_later"] == 0 and got["threads"] == [], got


STUBBORN_CALL = """
import asyncio, dataclasses, json, os, signal, sys, threading, time, warnings
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a kernel has it
import curate.llm.base as base

base.BACKEND = dataclasses.replace(base.BACKEND, cancel_wait_s=0.5)
ignores_s = float(sys.argv[1])


async def call():  # runs until cancelled, then goes on for ignores_s seconds (a backend's cleanup that hangs)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        end = time.monotonic() + ignores_s
        while time.monotonic() < end:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass
        raise


async def cell():
    threading.Thread(target=lambda: (time.sleep(0.5), os.kill(os.getpid(), signal.SIGINT)), daemon=True).start()
    notes = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter(sys.argv[2])  # "error": warnings raised (python -W error, a notebook's simplefilter)
        try:
            base.run_sync(call)
        except KeyboardInterrupt as interrupt:
            notes = getattr(interrupt, "__notes__", [])
    print(json.dumps({"warned": [[w.category.__name__, str(w.message)] for w in caught], "notes": notes}))

asyncio.new_event_loop().run_until_complete(cell())
"""


@pytest.mark.parametrize("ignores_s, warnings_are", [(0.0, "always"), (3.0, "always"), (3.0, "error")])
def test_a_stop_button_whose_call_does_not_stop_in_time_says_it_may_still_be_sending(ignores_s, warnings_are):
    """The interrupt waits ``BACKEND.cancel_wait_s`` for the cancelled call to stop; a call that took longer was left
    running on its worker thread, and the interrupt returned with no word of it. It says so now; a call that stops in
    time says nothing. With warnings as errors (``-W error``) the warning, raised in the interrupt's handling, replaced
    the KeyboardInterrupt (the stop button ended in a StillSendingWarning traceback): the interrupt stays a
    KeyboardInterrupt now, the words a note of it."""
    proc = subprocess.run([sys.executable, "-c", STUBBORN_CALL, str(ignores_s), warnings_are],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = json.loads(proc.stdout.strip().splitlines()[-1])
    if not ignores_s:
        assert said == {"warned": [], "notes": []}
        return
    if warnings_are == "error":
        assert said["warned"] == [] and len(said["notes"]) == 1, said
        text = said["notes"][0]
        assert text.startswith("StillSendingWarning: "), said
    else:
        assert said["notes"] == [] and len(said["warned"]) == 1 and said["warned"][0][0] == "StillSendingWarning", said
        text = said["warned"][0][1]
    assert re.search(r"had not stopped after 0\.\d s \(BACKEND\.cancel_wait_s 0\.5 s\): it may still be sending "
                     r"requests in the background", text), said
