"""The runner's progress bar (a real tqdm bar, read from stderr) against the fault server on loopback: its
``failed=`` counts the calls that end failed, whatever the reason, and its ``cached=`` only what the on-disk cache
answered, not the answers a stopped run paid for."""

from __future__ import annotations

import re

from curate.llm.backends import OpenAIBackend
from curate.llm.cache import ResponseCache
from curate.llm.calls import billed_keys, call_usage
from curate.llm.runner import PromptCall, run_prompt, run_prompts
from tests.test_judge_engine import JSON_PROMPT, NeedsScore  # NeedsScore: never valid for the fault server

TEXT_PROMPT = """---
name: writer
version: 1
inputs: [instruction]
output:
  kind: text
params:
  temperature: 0.0
  max_tokens: 16
---
=== user ===
Write: {{ instruction }}
"""

def _backend(srv) -> OpenAIBackend:
    return OpenAIBackend(srv.base_url, "fault", api_key="test-key-never-stored", timeout=2.0, max_retries=1,
                         backoff_base=0.01)


def _last_postfix(err: str) -> dict[str, str]:
    """The counts the bar showed last (its final postfix, written when it closed)."""
    line = [part for part in re.split(r"[\r\n]", err) if "failed=" in part][-1]
    return dict(re.findall(r"(\w+)=([^,\]\s]+)", line))


def test_the_bars_failed_count_is_every_call_that_ended_failed_once_each(tmp_path, fault_server, capsys):
    """An empty reply, a refusal, a transport failure and a JSON reply still invalid after its re-asks each end
    their call failed: the bar said failed=1 (only the transport failure, noted where requests are sent)."""
    (tmp_path / "writer.md").write_text(TEXT_PROMPT)
    (tmp_path / "labeler.md").write_text(JSON_PROMPT)
    texts = [{"instruction": t} for t in ("[empty] one", "[refusal] two", "[always500] three", "fine four")]
    calls = [PromptCall(tmp_path / "writer.md", texts),
             PromptCall(tmp_path / "labeler.md", [{"instruction": "never valid"}], output_model=NeedsScore,
                        validation_retries=2)]
    capsys.readouterr()
    written, (labelled,) = run_prompts(calls, _backend(fault_server), tmp_path / "c.sqlite", desc="faults")
    shown = _last_postfix(capsys.readouterr().err)
    assert [r.failure.code.value if r.failure else None for r in written] == [
        "empty_output", "refused", "transient", None]
    assert labelled.failure.code.value == "invalid_output" and labelled.requests == 3  # 3 attempts: one call
    assert shown["failed"] == "4"


def test_the_bar_counts_a_stopped_runs_answers_apart_from_the_cache(tmp_path, fault_server, capsys):
    """A run stopped before recording its answers: the next run counts them as its own spending; the bar showed
    them as cached=3. A request repeated inside the stopped run said '1 answered by the on-disk cache' after the
    resume where an unbroken run says it repeats another request of the run; their tokens (the run's spending, as
    its summary says) were tokens=0 on the bar."""
    (tmp_path / "writer.md").write_text(TEXT_PROMPT)
    items = [{"instruction": "one"}, {"instruction": "two"}, {"instruction": "one"}]
    cache = ResponseCache(tmp_path / "c.sqlite")
    unbroken = run_prompt(tmp_path / "writer.md", items, _backend(fault_server), cache, progress=False)
    assert (call_usage(unbroken)["cached_requests"], call_usage(unbroken)["repeated_requests"]) == (0, 1)
    sent = fault_server.total  # its run record was never stored (killed): nothing marked recorded

    capsys.readouterr()
    resumed = run_prompt(tmp_path / "writer.md", items, _backend(fault_server), cache, desc="resume")
    shown = _last_postfix(capsys.readouterr().err)
    assert fault_server.total == sent
    assert (shown["cached"], shown.get("paid_by_stopped_run")) == ("0", "2")
    usage = call_usage(resumed)
    assert (usage["requests_paid_by_stopped_run"], usage["cached_requests"], usage["repeated_requests"]) == (2, 0, 1)
    assert int(shown["tokens"]) == sum(usage["tokens"].values()) > 0  # the run counts them as its spending: the bar too

    cache.mark_recorded(billed_keys(resumed))  # its record stored: a later run's answers are the cache's
    again = run_prompt(tmp_path / "writer.md", items, _backend(fault_server), cache, desc="again")
    shown = _last_postfix(capsys.readouterr().err)
    assert call_usage(again)["cached_requests"] == 3 and "paid_by_stopped_run" not in shown
    assert shown["cached"] == "3" and shown["failed"] == "0"
