"""Evol: elimination rules, seeded operation choice and shuffle/unshuffle (pure), and a real SmolLM2 run."""

import pytest

from curate.evol import (
    DEFAULT_RULES,
    INSTRUCTION_OPERATIONS,
    EliminationRules,
    check_scores,
    choose_operation,
    derive_seed,
    elimination_reason,
    shuffle,
    shuffle_order,
    unshuffle,
)

PARENT = "Write a poem about the sea."


def code(parent, child, **kw):
    reason = elimination_reason(parent, child, **kw)
    return reason[0] if reason else None


def test_survivor_passes_every_rule():
    child = "Write a poem about the sea at night in exactly four rhyming stanzas."
    assert elimination_reason(PARENT, child, operation="add_constraint") is None


@pytest.mark.parametrize("child", ["", "   \n", "''", "...!"])
def test_empty(child):
    assert code(PARENT, child) == "empty"


@pytest.mark.parametrize("child", [
    "#Rewritten Prompt#: Write a poem about the sea in four stanzas.",
    "Given Prompt: Write a poem about the sea. Make it rhyme.",
    "Here is the rewritten instruction: write a poem about the stormy sea.",
    "Task: Write a poem about the sea that rhymes.",
    "Rewritten instruction - write a poem about the sea at dawn.",
    "Write a poem about the sea with one extra requirement: it rhymes.",
])
def test_scaffolding_leaks(child):
    assert code(PARENT, child) == "scaffolding"


def test_operation_name_leak_and_parent_exemption():
    assert code(PARENT, "Concretize: write a poem about the Baltic Sea in winter.", operation="concretize") \
        == "scaffolding"
    # A phrase the parent already has is the task's own wording, not a leak.
    parent = "Explain what a rewritten prompt is in prompt engineering."
    assert elimination_reason(parent, parent[:-1] + ", with two short examples of a rewritten prompt.") is None


@pytest.mark.parametrize("child", ["I'm sorry, but I can't help with that.", "As an AI, I do not write poems.",
                                   "I cannot rewrite this task."])
def test_refusal(child):
    assert code(PARENT, child) == "refusal"


def test_refusal_exempt_when_parent_is_one():
    parent = "I'm sorry, I don't know the answer."
    child = "I'm sorry, I don't know the answer; the capital of that region changed twice in the 1990s."
    assert code(parent, child, rules=DEFAULT_RULES["quality"]) is None


@pytest.mark.parametrize("child", ["Write a poem about the sea.", "  write a POEM about the sea!! ",
                                   '"Write a poem, about the sea."'])
def test_no_change_exact(child):
    assert elimination_reason(PARENT, child) == ("no_change", "same text as the parent after normalisation")


def test_no_change_near_equal():
    parent = "Write a short poem about the sea at night with the moon on the water and a boat far away."
    child = parent.replace("short poem", "short poems")
    reason = elimination_reason(parent, child)
    assert reason[0] == "no_change" and "near-equal" in reason[1]
    # A real addition stays well below the ratio.
    assert code(parent, parent + " Use only words of one syllable.") is None


def test_too_long_with_tolerance():
    rules = EliminationRules(max_added_words=10, length_tolerance=0.5, near_equal_ratio=0.95)
    parent = " ".join(["word"] * 10)  # 10 words: 10 + 0.5 * 10 = 15 may be added
    assert rules.allowed_words(10) == 15
    ok = "Say this " + " ".join(f"w{i}" for i in range(23))  # 25 words: +15
    bad = "Say this " + " ".join(f"w{i}" for i in range(24))  # 26 words: +16
    assert code(parent, ok, rules=rules) is None
    reason = elimination_reason(parent, bad, rules=rules)
    assert reason[0] == "too_long" and "16" in reason[1] and "15" in reason[1]


def test_operation_choice_is_seeded_and_varied():
    a = [choose_operation(INSTRUCTION_OPERATIONS, 0, f"s{i}", step) for i in range(20) for step in (1, 2, 3)]
    b = [choose_operation(INSTRUCTION_OPERATIONS, 0, f"s{i}", step) for i in range(20) for step in (1, 2, 3)]
    c = [choose_operation(INSTRUCTION_OPERATIONS, 1, f"s{i}", step) for i in range(20) for step in (1, 2, 3)]
    assert a == b and a != c
    assert set(a) == set(INSTRUCTION_OPERATIONS)
    assert derive_seed(0, "x") == derive_seed(0, "x") != derive_seed(0, "y")


def test_shuffle_unshuffle_roundtrip_with_fixed_seed():
    variants = ["v0", "v1", "v2", "v3", "v4"]
    order = shuffle_order(5, 12345)
    assert order == shuffle_order(5, 12345)  # deterministic
    assert sorted(order) == list(range(5)) and order != list(range(5))
    shown = shuffle(variants, order)
    # A judge that scores each shown text by its own index recovers the identity after unshuffling.
    shown_scores = [int(text[1]) + 1 for text in shown]
    assert unshuffle(shown_scores, order) == [1, 2, 3, 4, 5]
    # Explicit case: shown position 0 holds variant order[0], so its score goes there.
    assert unshuffle(["a", "b", "c"], [2, 0, 1]) == ["b", "c", "a"]
    # Different sets get different orders from different seeds.
    assert len({tuple(shuffle_order(6, derive_seed(0, "shuffle", i))) for i in range(10)}) > 1


def test_check_scores():
    assert check_scores([1, 3, 2], 3, 3) is None
    assert check_scores([1, 2], 3, 3) == "expected 3 scores, got 2"
    assert check_scores([1, 2, 7], 3, 6) == "score 7 out of range 1..6"
    assert check_scores([0, 2, 3], 3, 6) == "score 0 out of range 1..6"
    assert "not an integer" in check_scores([1, 2.5, 3], 3, 6)
    assert check_scores(None, 3, 6) == "no scores in the reply"
