"""A retry after a timeout waits longer (the fault-injecting server on loopback, no mocks): a reply that needs more
than the first timeout comes on a retry, where each retry waiting the same timeout never got it."""

from curate.codes import FailureCode
from curate.defaults import BACKEND
from curate.llm.backends import OpenAIBackend
from curate.llm.base import Request, run_sync
from tests.fault_server import FaultServer


def _send(srv: FaultServer, text: str, *, timeout: float, max_retries: int) -> dict:
    backend = OpenAIBackend(srv.base_url, "fault", api_key="test-key-never-stored", timeout=timeout,
                            max_retries=max_retries, backoff_base=0.01)
    request = Request(key=text, messages=[{"role": "user", "content": text}], params={"max_tokens": 1})
    results: dict[str, dict] = {}
    run_sync(lambda: backend.run([request], lambda req, result: results.__setitem__(req.key, result)))
    return results[text]


def test_reply_slower_than_the_timeout_comes_on_the_first_retry():
    """Both attempts take 0.8 s: the first, at 0.5 s, times out; the retry waits 1 s and gets the reply (before,
    it waited 0.5 s again and the row failed transient)."""
    with FaultServer() as srv:
        text = "[sleep1:0.8][sleep2:0.8] slow reply"
        result = _send(srv, text, timeout=0.5, max_retries=1)
        assert "failure" not in result, result
        assert srv.counts[text] == 2


def test_timeouts_grow_up_to_the_cap_and_the_failure_names_them():
    """Every attempt hangs: the timeouts double from 0.1 s up to BACKEND.timeout_max_factor times it, and the
    failure says each timeout that ran out."""
    assert BACKEND.timeout_growth == 2.0 and BACKEND.timeout_max_factor == 8.0  # the ladder this test reads
    with FaultServer(hang_seconds=1.0) as srv:
        result = _send(srv, "[timeoutx5] hangs", timeout=0.1, max_retries=4)
    assert result["reason_code"] == FailureCode.TRANSIENT.value, result
    assert result["failure"] == ("gave up after 5 attempts; last error: timeout after 0.8s "
                                 "(timed out after 0.1s, 0.2s, 0.4s, 0.8s, 0.8s)")


def test_retry_after_a_server_error_keeps_its_timeout():
    """A 500, then an attempt that takes 0.8 s: the 500 does not lengthen the timeout, so the second attempt still
    times out at 0.5 s."""
    with FaultServer() as srv:
        result = _send(srv, "[500x1][sleep2:0.8] flaky then slow", timeout=0.5, max_retries=1)
    assert result["failure"] == "gave up after 2 attempts; last error: timeout after 0.5s (timed out after 0.5s)"
