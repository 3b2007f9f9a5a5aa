"""WizardLM's elimination rules on rewrites that say nothing: a one-digit "rewrite" (the fault server's answer to a
rewrite request) survived 9 times in 10, and so did one of stop words and punctuation or one that dropped most of
its parent."""
import pytest

from curate.evol import DEFAULT_RULES, Elimination, EliminationRules, elimination_reason

PARENT = "Explain how photosynthesis works in plants and why it matters for life on Earth."


@pytest.mark.parametrize("child", ["5", "7.", "  3 ", "It is.", "-- and the ... of it --", "1, 2, 3?"])
def test_a_rewrite_of_stop_words_numbers_and_punctuation_is_dropped(child):
    code, detail = elimination_reason(PARENT, child, operation="add_constraint")
    assert code is Elimination.NO_CONTENT and "only punctuation, stop words or numbers" in detail
    assert elimination_reason(PARENT, child, operation="breadth")[0] is Elimination.NO_CONTENT  # a new task too
    # a response rewrite too (Evol Quality)
    assert elimination_reason(PARENT, child, operation="response_helpful",
                              rules=DEFAULT_RULES["quality"])[0] is Elimination.NO_CONTENT


def test_a_parent_without_content_words_exempts_its_rewrite():
    """A seed that is a bare number ("42", an answer) rewritten as another number is judged by the other rules."""
    assert elimination_reason("42", "42", operation="response_helpful")[0] is Elimination.NO_CHANGE
    assert elimination_reason("What is 6 times 7?", "What is 6 times 7, shown step by step?",
                              operation="reasoning") is None


def test_an_in_depth_rewrite_that_dropped_most_of_its_parent_shrank():
    code, detail = elimination_reason(PARENT, "Explain photosynthesis.", operation="deepen")
    assert code is Elimination.SHRANK and detail == "2 words where its parent has 14: deepen keeps its parent and adds to it"
    # breadth writes a new task: shorter is fine; the limit is a rule (None: off)
    assert elimination_reason(PARENT, "Describe how lichens survive on bare rock.", operation="breadth") is None
    off = EliminationRules(min_kept_ratio=None)
    assert elimination_reason(PARENT, "Explain photosynthesis.", operation="deepen", rules=off) is None


def test_one_digit_rewrites_from_the_fault_server_are_all_dropped_and_counted(tmp_path):
    """The fault server's ``[digitrewrite]`` answers every rewrite request with one digit: 9 of 10 such rewrites
    survived (only one equal to its parent was dropped), ranked as if they were harder tasks."""
    from curate.errors import NoLabelsError
    from curate.evol import build_labels
    from curate.llm.backends import OpenAIBackend
    from curate.session import Workspace
    from tests.fault_server import FaultServer

    seeds = [{"id": f"s{i}", "instruction": f"[digitrewrite] Describe item {i} and its uses in a paragraph."} for i in range(5)]
    ws = Workspace(tmp_path / "ws")
    with FaultServer() as srv, pytest.raises(NoLabelsError) as error:
        build_labels(seeds, OpenAIBackend(srv.base_url, "fault", api_key="k"), steps=2, seed=0, workspace=ws,
                     name="cx")
    assert error.value.eliminated_by_reason == {"no_content": 10}
    assert "10 x no_content" in " ".join(str(error.value).split())
    stored = ws.label_sets["cx"]
    assert stored["eliminated_by_reason"] == {"no_content": 10} and stored["eliminated"] == stored["rewrites"] == 10
