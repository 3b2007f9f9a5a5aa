"""A digit judge on a server that ignores ``top_logprobs`` (the fault server's ``[sampledonly]``, ``[emptytop]`` and
``[top1]``): the sampled digit alone was scored, a whole number stored as an expected score in silence."""
import pytest

from curate.codes import FailureCode
from curate.llm.backends import OpenAIBackend
from curate.llm.cache import ResponseCache
from curate.llm.runner import digit_score, run_prompt
from tests.conftest import apply_and_check_warning, write_jsonl

IGNORED = ["[sampledonly] one", "[emptytop] two", "[top1] three"]


def test_a_server_that_ignores_top_logprobs_gives_failures_not_sampled_digits(tmp_path, fault_server):
    from curate.llm.judges import Judge
    from curate.session import Workspace

    rows = [*IGNORED, "plain four"]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": t, "input": "", "output": "ok"} for t in rows]))
    backend = OpenAIBackend(fault_server.base_url, "fault", api_key="k", max_retries=0)
    result = apply_and_check_warning(ws, Judge("quality", backend), progress=False)
    values, failures = ws.column("quality"), ws.failures("quality")
    by_text = {conv[0]["content"]: i for i, conv in enumerate(ws.conversations())}
    for text in IGNORED:  # the server's odds put 3.9 there; the sampled "4" alone was stored as 4.0
        i = by_text[text]
        (failure,) = failures[i]
        assert values[i] == [None], (text, values[i])
        assert failure.code is FailureCode.NO_TOP_LOGPROBS and failure.raw == "4", (text, failure)
        assert "sampled token's logprob ('4', p=0.700)" in failure.message
        assert "20 asked for: a server that ignores top_logprobs?" in failure.message
    assert values[by_text["plain four"]][0] is not None and failures[by_text["plain four"]] == []
    # counted under its own code in the run's summary
    assert list(result.failure_reasons) == ["no_top_logprobs"] and result.failure_reasons["no_top_logprobs"][0] == 3


def test_a_digit_judge_asking_for_too_few_top_logprobs_is_refused_before_any_call(tmp_path, fault_server):
    """``top_logprobs: 0`` (the sampled token alone) or fewer than the scale has digits failed every row at run
    time (``no_top_logprobs``) or left a digit out of every score, once the calls were paid for: refused where the
    prompt file or the params given with it are read, naming the file. ``digit_score`` itself still reads a top list
    of one entry where one was asked for as asked (missing digits recorded)."""
    from curate.llm.judges import Judge
    from curate.llm.prompts import PromptError, load_prompt

    for top in (0, 5):
        path = tmp_path / f"few{top}.md"
        path.write_text(f"---\nname: few\noutput: {{kind: digit_score, scale: [1, 6]}}\nparams: {{top_logprobs: {top}}}"
                        "\n---\n=== user ===\nRate {{ instruction }} from 1 to 6.\n")
        with pytest.raises(PromptError, match=rf"few{top}\.md: params\.top_logprobs: {top} cannot give a "
                                              r"digit_score prompt its score.*at least 6"):
            load_prompt(path)
    no_logprobs = tmp_path / "nolp.md"  # was sent with logprobs: true, the file's false dropped in silence
    no_logprobs.write_text("---\nname: nolp\noutput: {kind: digit_score, scale: [1, 6]}\nparams: {logprobs: false}"
                           "\n---\n=== user ===\nRate {{ instruction }} from 1 to 6.\n")
    with pytest.raises(PromptError, match=r"nolp\.md: params\.logprobs: false cannot apply to a digit_score prompt"):
        load_prompt(no_logprobs)
    enough = tmp_path / "enough.md"
    enough.write_text("---\nname: enough\noutput: {kind: digit_score, scale: [0, 2]}\nparams: {top_logprobs: 3}"
                      "\n---\n=== user ===\nRate {{ instruction }} from 0 to 2.\n")
    assert load_prompt(enough).params["top_logprobs"] == 3  # three digits, three places
    text = tmp_path / "text.md"  # a text prompt may ask for the sampled token's logprob alone
    text.write_text("---\nname: t\nparams: {logprobs: true, top_logprobs: 0}\n---\n=== user ===\nSay {{ instruction }}.\n")
    assert load_prompt(text).params["top_logprobs"] == 0

    backend = OpenAIBackend(fault_server.base_url, "fault", api_key="k", max_retries=0)
    with pytest.raises(PromptError, match=r"quality\.md \(the params given with it\): params\.top_logprobs: 0"):
        Judge("quality", backend, params={"top_logprobs": 0})
    with pytest.raises(PromptError, match=r"params\.logprobs: false cannot apply"):
        Judge("quality", backend, params={"logprobs": False})
    with pytest.raises(PromptError, match=r"params\.top_logprobs: 2 cannot"):
        run_prompt("quality", [{"instruction": "plain", "response": "ok"}], backend,
                   ResponseCache(tmp_path / "c.sqlite"), progress=False, params={"top_logprobs": 2})
    assert fault_server.messages == []  # nothing sent, nothing paid
    one = {"text": "4", "top_logprobs": [{"token": "4", "logprob": -0.1}]}
    value, info, failure = digit_score(one, (1, 6), logprobs_requested=True, top_requested=1)
    assert (value, failure, info["missing_digits"]) == (4.0, None, [1, 2, 3, 5, 6])


@pytest.mark.parametrize("top_requested", [5, 20])
def test_an_answer_cached_with_its_sampled_token_as_the_top_list_fails_when_read_again(top_requested):
    """Before 2026-12-07 the backend stored the sampled token as a one-entry top list: read again (DIGIT_RULE), a
    request that asked for more gets no score from it."""
    cached = {"text": "4", "top_logprobs": [{"token": "4", "logprob": -0.05}]}
    value, _, failure = digit_score(cached, (1, 6), logprobs_requested=True, top_requested=top_requested)
    assert value is None and failure.code is FailureCode.NO_TOP_LOGPROBS
