"""WizardLM's elimination rules on rewrites that say nothing: a one-digit "rewrite" (the fault server's answer to a
rewrite request) survived 9 times in 10, and so did one of stop words and punctuation or one that dropped most of
its parent; a short response rewrite that says "sorry" (WizardLM's rule on responses) was kept."""
import pytest

from curate.evol import DEFAULT_RULES, Elimination, EliminationRules, elimination_reason

PARENT = "Explain how photosynthesis works in plants and why it matters for life on Earth."


@pytest.mark.parametrize("child", ["5", "7.", "  3 ", "It is.", "-- and the ... of it --", "1, 2, 3?"])
def test_a_rewrite_of_stop_words_numbers_and_punctuation_is_dropped(child):
    code, detail = elimination_reason(PARENT, child, operation="add_constraint")
    assert code is Elimination.NO_CONTENT and "only punctuation, function words or numbers" in detail
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


@pytest.mark.parametrize("child", ["Describe the system.", "Find the fire.", "Name the bill.", "Show detail.",
                                   "Keep it full.", "Describe one system."])
def test_a_rewrite_of_content_words_the_old_stop_list_held_is_kept(child):
    """scikit-learn's English stop list holds "describe", "system", "find", "fire", "bill", "name", "show", "detail",
    "keep", "full": each of these rewrites was dropped as ``no_content``. Function words alone still are."""
    assert elimination_reason(PARENT, child, operation="breadth") is None
    assert elimination_reason(PARENT, "Do it for them, and then do it again.", operation="breadth")[0] \
        is Elimination.NO_CONTENT


def test_an_operation_that_may_rightly_shorten_its_parent_is_not_dropped_as_shrank():
    """concretize replaces general words by a specific one; response_relevant cuts what is off topic;
    response_creative says it again as an image: each was dropped as ``shrank`` when it came out under half."""
    general = "Write something about a kind of thing that many people in many places use in their homes every day."
    assert elimination_reason(general, "Explain how a kettle's thermostat works.", operation="concretize") is None
    rambling = ("Paris is the capital of France. I visited it once in spring and the weather was lovely, and the "
                "croissants at the little bakery near the hotel were the best I have ever eaten, honestly.")
    quality = DEFAULT_RULES["quality"]
    for operation in ("response_relevant", "response_creative"):
        assert elimination_reason(rambling, "The capital of France is Paris, on the Seine.", operation=operation,
                                  rules=quality) is None, operation
    for operation in ("response_helpful", "response_deepen", "response_detailed"):  # these add to their parent
        assert elimination_reason(rambling, "The capital of France is Paris, on the Seine.", operation=operation,
                                  rules=quality)[0] is Elimination.SHRANK, operation


ANSWER = "Use git revert on the pushed commit: it adds a new commit that undoes the change and keeps history intact."


def test_a_short_response_rewrite_that_says_sorry_is_dropped():
    """WizardLM drops a response under 80 words with "sorry" in it (a model that could not answer); Evol Quality's
    rewrites are the responses Evol makes, and one that said so mid-answer survived (the refusal rule reads its
    opening only)."""
    quality = DEFAULT_RULES["quality"]
    child = "Use git revert on the commit; sorry, I cannot tell which commit you pushed without its log."
    code, detail = elimination_reason(ANSWER, child, operation="response_helpful", rules=quality)
    assert code is Elimination.SHORT_SORRY and detail.startswith("a 17-word response (under 80) that says 'sorry'")
    long = child + (" Run git log to list the commits of the branch, newest first, and note the hash of the one you"
                    " pushed. Then run git revert with that hash: git opens an editor for the new commit's message,"
                    " which you may keep as it is. Push the new commit to the same branch; anyone who pulled the old"
                    " one gets both, and the files end as they were before the mistake.")
    assert elimination_reason(ANSWER, long, operation="response_detailed", rules=quality) is None  # 80 words or more
    parent = "Sorry to hear that! " + ANSWER  # the parent's own word: not the rewriter's
    assert elimination_reason(parent, parent + " Then push the new commit.", operation="response_helpful",
                              rules=quality) is None
    # an instruction is not a response: an in-depth rewrite may ask about apologies
    assert elimination_reason("Write a note to a neighbour.", "Write a note to a neighbour saying sorry for the "
                              "noise of last night's party.", operation="add_constraint") is None
    assert elimination_reason(ANSWER, child, operation="response_helpful",
                              rules=EliminationRules(**{**vars(quality), "short_sorry_words": None})) is None


def test_short_sorry_rewrites_of_an_evol_quality_run_are_counted(tmp_path):
    """Every rewrite answered with a short "sorry" reply: counted under its own reason in the run's data."""
    from curate.errors import NoLabelsError
    from curate.evol import build_labels
    from curate.llm.backends import OpenAIBackend
    from curate.session import Workspace
    from tests.fault_server import FaultServer

    say = "[say:Revert it with git revert; sorry, I cannot see which commit you pushed.]"
    seeds = [{"id": f"s{i}", "instruction": f"{say} How do I undo pushed commit {i}?", "response": ANSWER}
             for i in range(3)]
    ws = Workspace(tmp_path / "ws")
    with FaultServer() as srv, pytest.raises(NoLabelsError) as error:
        build_labels(seeds, OpenAIBackend(srv.base_url, "fault", api_key="k"), kind="quality", steps=2, seed=0,
                     workspace=ws, name="q", progress=False)
    assert error.value.eliminated_by_reason == {"short_sorry": 6}
    assert ws.label_sets["q"]["eliminated_by_reason"] == {"short_sorry": 6}
