"""Judging at real budgets: a cache keyed by what is sent, totals over every run, RPS, --retry-failed, dry runs.

Against the loopback fault server (tests/fault_server.py); the dry-run token count is checked on the real
local vLLM (marked ``llm``).
"""

import math
import re
import time

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.codes import TRANSIENT_FAILURES, FailureCode
from curate.errors import CurateError, CurateWarning
from curate.llm.backends import OpenAIBackend
from curate.llm.cache import ResponseCache
from curate.llm.dryrun import estimate
from curate.llm.judges import Judge
from curate.llm.local import SERVED_NAME
from curate.llm.prompts import load_prompt
from curate.llm.runner import _variable_aliases, run_prompt
from curate.report.views import info_data
from curate.session import Workspace
from tests.conftest import apply_and_check_warning, write_jsonl
from tests.fault_server import FaultServer

PROMPT_V1 = ("---\nname: rate\nversion: 1\ninputs: [instruction]\noutput:\n  kind: digit_score\n  scale: [1, 6]\n"
             "params:\n  temperature: 0.0\n---\n=== system ===\nRate the instruction.\n=== user ===\n{{ instruction }}\n")
# the edit changes the request of rows that mention "special" only
PROMPT_V2 = PROMPT_V1.replace("{{ instruction }}", "{{ instruction }}{% if 'special' in instruction %} "
                              "(mind the special case){% endif %}")


def _backend(srv, model="fault", **kw):
    kw.setdefault("timeout", 1.0)
    kw.setdefault("max_retries", 1)
    kw.setdefault("backoff_base", 0.01)
    return OpenAIBackend(srv.base_url, model, api_key="k", **kw)


def _workspace(tmp_path, records, name="ws"):
    ws = Workspace(tmp_path / name)
    ws.load(write_jsonl(tmp_path / f"{name}.jsonl", records))
    return ws


def _rows(texts, output="ok"):
    return [{"instruction": t, "input": "", "output": output} for t in texts]


def cli(*args, exit_code=0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == exit_code, (result.output, result.exception)
    return result.output if exit_code == 0 else f"{result.output}\nerror: {result.exception}"


# -- 1. re-send only what changed ----------------------------------------------------------------------------
def test_a_jinja_edit_that_changes_6_requests_of_30_resends_6(tmp_path):
    texts = [f"task {i}" + (" special" if i % 5 == 0 else "") for i in range(30)]
    ws = _workspace(tmp_path, _rows(texts))
    path = tmp_path / "rate.md"
    path.write_text(PROMPT_V1)
    with FaultServer() as srv:
        ws.apply(Judge(path, _backend(srv)), progress=False)
        assert srv.total == 30
        before = ws.column("rate")
        path.write_text(PROMPT_V2)
        edited = Judge(path, _backend(srv))
        plan = estimate(ws, edited)  # the dry run sees it before anything is sent
        assert (plan.rows_to_run, plan.requests, plan.cached, plan.to_send) == (30, 30, 24, 6)
        result = ws.apply(edited, progress=False)
        assert srv.total == 36  # 6 re-sent, counted at the server
        resent = [k for k, n in srv.counts.items() if "(mind the special case)" in k]
        assert len(resent) == 6 and all(srv.counts[k] == 1 for k in resent)
    assert result.computed == 30 and result.provenance["cached_requests"] == 24
    after = ws.column("rate")
    assert [a for a, t in zip(after, texts, strict=True) if "special" not in t] == \
           [b for b, t in zip(before, texts, strict=True) if "special" not in t]


def test_the_same_server_as_backend_local_then_base_url_resends_nothing(tmp_path):
    ws = _workspace(tmp_path, _rows([f"question {i}" for i in range(8)]))
    with FaultServer() as srv:
        local = OpenAIBackend(srv.base_url, SERVED_NAME, api_key="local", kind="local")
        ws.apply(Judge("complexity", local), progress=False)
        assert srv.total == 8
        first = ws.column("complexity")
        again = ws.apply(Judge("complexity", OpenAIBackend(srv.base_url, SERVED_NAME, api_key="k")), progress=False)
        assert srv.total == 8 and again.provenance["cached_requests"] == 8
    assert ws.column("complexity") == first and again.provenance["backend"] == "openai"


def test_entries_keyed_before_version_2_stay_readable_through_their_aliases(tmp_path):
    """An old cache: a response stored under an old-style key, reachable by its (unchanged) alias."""
    cache = ResponseCache(tmp_path / "c.sqlite")
    prompt = load_prompt("complexity")
    variables = [{"instruction": "old row"}]
    with FaultServer() as srv:
        backend = _backend(srv)
        (alias,) = _variable_aliases(prompt, variables, backend, None, None)
        # a top list as a server gives it (more than the sampled token: one entry alone is no expected score)
        stored = {"text": "3", "top_logprobs": [{"token": "3", "logprob": 0.0}, {"token": "The", "logprob": -30.0}],
                  "finish_reason": "stop",
                  "usage": {"prompt_tokens": 5, "completion_tokens": 1}, "cost_usd": 0.0}
        cache.put("0" * 64, stored, aliases=[alias])  # not the key the new scheme computes
        (result,) = run_prompt(prompt, variables, backend, cache, progress=False)
        assert srv.total == 0
    assert result.cached and result.parsed == 3.0


def test_token_and_cost_totals_cover_every_run_that_paid_into_a_column(tmp_path):
    ws = _workspace(tmp_path, _rows([f"row number {i} " + "x" * (10 * i) for i in range(10)]))
    with FaultServer() as srv:
        for part in range(5):  # five runs, each paying for two new rows
            last = cli("score", ws.path, "--judge", "complexity", "--base-url", srv.base_url, "--model", "gpt-4o-mini",
                "--limit", 2 * (part + 1))
        out = cli("score", ws.path, "--judge", "complexity", "--base-url", srv.base_url, "--model", "gpt-4o-mini",
                  "--dry-run")
        assert srv.total == 10
    ws = Workspace.open(ws.path)
    prov = ws.column_provenance("complexity")
    runs = prov["runs"]
    paid = sum(r["tokens"]["prompt"] for r in runs)
    assert len(runs) == 5 and paid > 3 * prov["tokens"]["prompt"]  # the latest run alone is a fraction
    (usage,) = [c["usage"] for c in info_data(ws)["columns"] if c["name"] == "complexity"]
    assert usage["runs"] == 5 and usage["prompt_tokens"] == paid and usage["completion_tokens"] == 10
    assert math.isclose(usage["cost_usd"], (paid * 0.15 + 10 * 0.60) / 1e6)
    info = cli("info", ws.path)
    assert "5 run(s)" in info and f"{paid + 10:,} tokens" in info
    assert f"all 5 runs of this column: tokens {paid:,} in / 10 out" in last  # the CLI summary says the total
    assert "0 to run, 10 already done" in out and "0 to send" in out


# -- 2. limits ----------------------------------------------------------------------------------------------
def test_rps_spaces_request_starts(tmp_path):
    with FaultServer() as srv:
        start = time.monotonic()
        run_prompt("complexity", [{"instruction": f"q {i}"} for i in range(11)], _backend(srv, rps=20, concurrency=8),
                   tmp_path / "c.sqlite", progress=False)
        elapsed = time.monotonic() - start
        starts = sorted(t for times in srv.times.values() for t in times)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # 1/20 s apart, no burst; measured where the requests land, so a busy machine may delay one start onto the next
    # (the first request also sets up the client's connection pool, so it may land with the second: its span is
    # left out; the client-side elapsed time bounds all ten intervals)
    assert len(starts) == 11 and elapsed >= 0.5 and starts[-1] - starts[1] >= 0.40, gaps
    assert sorted(gaps)[len(gaps) // 2] >= 0.04 and sorted(gaps)[1] >= 0.01, gaps
    with pytest.raises(CurateError, match="rps must be > 0"):
        OpenAIBackend("http://127.0.0.1:1/v1", "fault", rps=0)


def test_unknown_price_with_max_cost_is_a_clear_error(tmp_path):
    from curate.llm.batch import OpenAIBatchBackend

    with pytest.raises(CurateError, match="no price is known for model 'no-such-model'"):
        OpenAIBackend("http://127.0.0.1:1/v1", "no-such-model", max_cost=1.0)
    with pytest.raises(CurateError, match="no batch price is known"):
        OpenAIBatchBackend("http://127.0.0.1:1/v1", "no-such-model", workspace=tmp_path, max_cost=1.0)
    ws = _workspace(tmp_path, _rows(["a"]))
    result = CliRunner().invoke(app, ["score", str(ws.path), "--judge", "complexity", "--base-url",
                                      "http://127.0.0.1:1/v1", "--model", "no-such-model", "--max-cost", "1"])
    assert isinstance(result.exception, CurateError) and "register_price" in str(result.exception)


# -- 3. --retry-failed --------------------------------------------------------------------------------------
def test_retry_failed_resends_exactly_the_transient_failures_of_a_30_percent_fault_run(tmp_path):
    # 12 of 40 rows (30%) fault: 6 transiently (both attempts of run 1 fail, the next works), 4 permanently,
    # 2 have no response (never sent)
    markers = ["[500x2]", "[429x2]", "[malformedx2]", "[timeoutx2]", "[500x2]", "[429x2]",
               "[always400]", "[badtext]", "[lowmass]", "[always400]"]
    texts = [f"item {i} {markers[i // 4]}" if i % 4 == 0 and i // 4 < len(markers) else f"item {i}" for i in range(40)]
    ws = _workspace(tmp_path, [{"messages": [{"role": "user", "content": t}]} if i in (2, 3)  # no assistant reply
                               else {"instruction": t, "input": "", "output": "a reply"} for i, t in enumerate(texts)])
    # a [timeoutx2] row's 2 attempts wait 2 s, then 4 s (a retry after a timeout waits twice as long): each 8 s hang
    # outlasts both (the server's stop waits for a hang still running). Only that row needs the timeout: any other
    # row fails only if both its attempts miss theirs, 2 s and 4 s; at 0.3 s and 0.6 s a loaded machine's plain
    # answer could, and the row failed "transient"
    with FaultServer(retry_after="0", hang_seconds=8) as srv:
        args = ["score", ws.path, "--judge", "quality", "--base-url", srv.base_url, "--model", "fault",
                "--max-retries", "1"]
        with pytest.warns(CurateWarning, match=r"quality: 12 of the 40 rows computed now failed"):
            first = cli(*args, "--timeout", "2", "--keep-failed", exit_code=1)  # rows the server never answered fail the command
        assert "error: 6 rows not scored: the judge did not answer" in first and "re-run the command" in first
        listed = re.findall(r"^\s+\d+ x (\w+):", first, re.MULTILINE)  # every failure code, not the 3 commonest
        assert sorted(listed) == sorted({"transient", "http_error", "no_logprobs", "low_digit_mass", "no_response"}), first
        ws = Workspace.open(ws.path)
        failures = dict(zip(ws.ids, ws.failures("quality"), strict=True))
        codes = {rid: {f.code for f in fails} for rid, fails in failures.items() if fails}
        expected = {rid for rid, c in codes.items() if c & TRANSIENT_FAILURES}
        assert len(codes) == 12 and len(expected) == 6
        assert {c for rid, cs in codes.items() if rid not in expected for c in cs} == {
            FailureCode.HTTP_ERROR, FailureCode.NO_LOGPROBS, FailureCode.LOW_DIGIT_MASS, FailureCode.NO_RESPONSE}
        before = srv.snapshot()
        # no row hangs now: a timeout a loaded machine's answer cannot miss (0.3 s timed a plain request out once under
        # the full suite, and it was sent twice: this run asserts each row is sent once)
        out = cli(*args, "--timeout", "30", "--retry-failed")
        after = srv.snapshot()
    resent = {k for k in after if after[k] != before.get(k, 0)}
    item_of = {rid: re.match(r"item \d+", conv[0]["content"]).group()
               for rid, conv in zip(ws.ids, ws.conversations(), strict=True)}
    assert sorted(re.search(r"item \d+\b", k).group() for k in resent) == sorted(item_of[rid] for rid in expected)
    assert all(after[k] - before[k] == 1 for k in resent)
    assert "retry-failed: 6 rows had a transient failure (transient 6)" in out and "re-sent 6 requests" in out
    # the six permanent failures were reused, not sent again: the line says so rather than "failed 6" alone
    assert "computed 6, reused 34, failed 6 (6 from an earlier run, not sent again)" in out, out
    ws = Workspace.open(ws.path)
    still = {rid for rid, fails in zip(ws.ids, ws.failures("quality"), strict=True) if fails}
    assert still == set(codes) - expected  # the transient ones are scored now, the permanent ones untouched


# -- 4. dry run ---------------------------------------------------------------------------------------------
def test_dry_run_sends_nothing_and_prices_online_and_batch(tmp_path):
    ws = _workspace(tmp_path, _rows([f"dry row {i}" for i in range(6)]))
    with FaultServer() as srv:
        ws.apply(Judge("complexity", _backend(srv, model="gpt-4o")), ids=ws.ids[:2], progress=False)
        sent = srv.total
        plan = estimate(ws, Judge("complexity", _backend(srv, model="gpt-4o")))
        out = cli("score", ws.path, "--judge", "complexity", "--base-url", srv.base_url, "--model", "gpt-4o",
                  "--dry-run")
        run_out = cli("run", tmp_path / "ws.jsonl", "--out", tmp_path / "fresh", "--base-url", srv.base_url,
                      "--model", "gpt-4o", "--dry-run")
        assert srv.total == sent == 2
    assert not (tmp_path / "fresh").exists()  # a dry run of a new out folder leaves nothing behind
    assert (plan.rows, plan.rows_to_run, plan.requests, plan.to_send, plan.output_tokens) == (6, 4, 4, 4, 4)
    assert plan.prompt_tokens > 0 and plan.price_online == (2.5, 10.0) and plan.price_batch == (1.25, 5.0)
    assert math.isclose(plan.usd_batch, plan.usd_online / 2)
    assert math.isclose(plan.usd_online, (plan.prompt_tokens * 2.5 + 4 * 10.0) / 1e6)
    assert "4 to run" in out and "4 to send" in out and "batch" in out
    assert run_out.count("dry run") == 2 and "total" in run_out and "12 to send" not in run_out


@pytest.mark.llm
def test_dry_run_token_count_is_within_5_percent_of_what_the_local_vllm_reports(tmp_path, local_llm):
    texts = ["Write a haiku about autumn leaves.", "Explain quicksort in two sentences.",
             "What is 17 * 23? Show your steps.", "Translate 'good morning' into French and German.",
             "List three uses of baking soda.", "Summarise the plot of Hamlet in one line."]
    ws = _workspace(tmp_path, _rows(texts, output="Here is a short and helpful answer."))
    judge = Judge("quality", local_llm.backend())
    plan = estimate(ws, judge)
    assert plan.tokens_exact and "chat template" in plan.tokenizer and plan.to_send == 6
    apply_and_check_warning(ws, judge, progress=False)  # a row of SmolLM2's may fail (low_digit_mass): it says so
    reported = ws.column_provenance("quality")["tokens"]["prompt"]  # the usage the server reported
    assert abs(plan.prompt_tokens - reported) <= 0.05 * reported, (plan.prompt_tokens, reported)


# -- 6. a warm local judge ----------------------------------------------------------------------------------
def test_backend_local_reuses_a_live_announced_server_and_ignores_a_stale_one(tmp_path, monkeypatch):
    from curate.cli.common import _judge_backend
    from curate.llm import local

    monkeypatch.setenv("CURATE_HOME", str(tmp_path / "home"))
    ws = _workspace(tmp_path, _rows([f"warm {i}" for i in range(4)]))
    with FaultServer(models=(SERVED_NAME,)) as srv:
        fake = local.LocalServer(home=tmp_path / "home")
        fake.proc = type("P", (), {"pid": __import__("os").getpid()})()  # a live PID serving SmolLM2's name
        fake.port = srv.port
        local.announce(fake)
        with _judge_backend("local", None, None) as llm:
            assert llm.base_url == srv.base_url and llm.kind == "local"
            ws.apply(Judge("complexity", llm), progress=False)
        assert srv.total == 4  # answered by the announced server; no vLLM started
        assert ws.column_provenance("complexity")["dtype"] == fake.dtype  # the precision the server announced
        assert local.warm_backend().base_url == srv.base_url
        local.withdraw(fake)
    fake.proc = None
    local.announce(fake)  # announced, but nothing answers there any more
    assert local.running_server() is None
    with _judge_backend("local", None, None) as llm:
        assert type(llm).__name__ == "_LazyLocalBackend"  # would start its own server on a cache miss


def test_tiktoken_counts_with_openai_chat_framing_and_the_fallback_says_why():
    import tiktoken

    from curate.llm.tokens import TiktokenCounter, token_counter

    # a byte-level encoding (one token per byte) built here: tiktoken's own files need a download
    enc = tiktoken.Encoding("bytes", pat_str=r".+", mergeable_ranks={bytes([b]): b for b in range(256)},
                            special_tokens={})
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    # 3 per message + role + content, 3 priming the reply
    assert TiktokenCounter(enc).count([messages]) == [(3 + 6 + 9) + (3 + 4 + 2) + 3]
    counter = token_counter(OpenAIBackend("http://127.0.0.1:1/v1", "no-such-model"))
    assert not counter.exact and "tiktoken does not know model 'no-such-model'" in counter.name
