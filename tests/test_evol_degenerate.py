"""Evol: a rewrite that loops is eliminated with the heuristics' repeated_tail rule (an audit's SmolLM2 run kept
"Bran: Ashram\nBran: Ashram\nBran: Ashram ..." as a chain's step 2: no elimination rule looked for a loop)."""

import json

import pytest

from curate.evol import DEFAULT_RULES, Elimination, elimination_reason
from tests.conftest import ScriptedBackend

# The audit's two looping rewrites (SmolLM2-135M, `curate evol --seeds 12 --steps 2`), with their parents.
AUDIT_LOOPS = [
    ("Ned: Bran\n\nNed: Arya\n\nBran: Anu (osam)\n\nPlease make it shorter and more concise.",
     "Bran: Ashram\nBran: Ashram\nBran: Ashram\n\nPlease make it shorter and more concise.", "bran ashram (x3)"),
    ("Link the following two phrases with a transition word\n\nShe was frustrated, She tried again",
     "She was frustrated, she tried again. She was very relieved, she was very relieved.", "she was very relieved (x2)"),
]

# Realistic evolved instructions whose structure repeats (steps, lists, tables, blanks, a chorus, a matrix).
NORMAL = [
    ("Explain how to bake sourdough bread at home in four steps, and say why each of the steps matters.",
     "Explain how to bake sourdough bread in steps: Step 1: feed the starter. Step 2: mix the dough. Step 3: shape "
     "the loaf. Step 4: bake it at 230 °C, and say why each step matters."),
    ("List five tropical fruits with where they come from and when they are in season.",
     "List five tropical fruits in a table with columns Fruit | Origin | Season, and fill one row per fruit:\n"
     "| Fruit | Origin | Season |\n|---|---|---|\n| | | |\n| | | |"),
    ("Write a Python function that sums a list of integers and returns the total.",
     "Write a Python function that sums a list of integers, and test it on these inputs:\n- [1, 1, 1, 1]\n"
     "- [0, 0, 0]\n- [2, 2, 2, 2, 2]"),
    ("Compare cats and dogs as pets: the cost, the time and the space each needs.",
     "Compare cats and dogs as pets: for cats, give the cost, the time needed and the space needed; for dogs, give "
     "the cost, the time needed and the space needed."),
    ("Fill in the blanks with the right past tense of the verb in brackets.",
     "Fill in the blanks with the right past tense:\n1. Yesterday I ______ (go) to school.\n"
     "2. Yesterday I ______ (see) a film.\n3. Yesterday I ______ (eat) rice.\n______________________"),
    ("Translate the nursery rhyme Row, row, row your boat into French.",
     "Translate into French, keeping the repetition of the poem: 'Row, row, row your boat, gently down the stream; "
     "merrily, merrily, merrily, merrily, life is but a dream.'"),
    ("Describe a weekly running plan for a beginner, day by day.",
     "Describe a weekly workout plan:\nMonday: run 5 km.\nTuesday: rest.\nWednesday: run 5 km.\nThursday: rest.\n"
     "Friday: run 8 km. Explain why rest days alternate with runs."),
    ("Solve the quadratic equation x^2 - 5x + 6 = 0.",
     "Solve x^2 - 5x + 6 = 0, check each root by substituting it back, and explain why the product of the roots "
     "equals 6."),
    ("Write a short story about a hero who fails before succeeding.",
     "Write a 300-word story in which every paragraph starts with 'Once upon a time', the hero fails twice, and "
     "succeeds on the third try."),
    ("Summarise the text in a few bullet points.",
     "Summarise the text in three bullet points:\n- the main claim\n- the main evidence\n- the main objection\nthen "
     "give a one-sentence verdict."),
    ("Find the determinant of the identity matrix.",
     "Find the determinant of the 3x3 identity matrix [[1, 0, 0], [0, 1, 0], [0, 0, 1]] and explain why it is 1."),
    ("What is recursion? Explain it with the factorial function.",
     "What is recursion? Explain it with the factorial: fact(3) = 3 * fact(2) = 3 * 2 * fact(1) = 3 * 2 * 1, and "
     "say what the base case is."),
]


@pytest.mark.parametrize(("parent", "child", "evidence"), AUDIT_LOOPS)
def test_the_audits_looping_rewrites_are_eliminated_as_repeated_tail(parent, child, evidence):
    reason = elimination_reason(parent, child, rules=DEFAULT_RULES["complexity"])
    assert reason == (Elimination.REPEATED_TAIL, f"loops: {evidence}")


@pytest.mark.parametrize(("parent", "child"), NORMAL)
def test_rewrites_with_repeated_structure_survive(parent, child):
    assert elimination_reason(parent, child, rules=DEFAULT_RULES["complexity"]) is None


def test_a_loop_the_parent_has_is_not_the_rewrites_and_a_response_may_repeat_more():
    parent = "Print these lines:\nho ho ho ho ho ho ho\nand say what they are."
    assert elimination_reason(parent, parent.replace("say what they are", "name the character who says them")) is None
    chorus = "We will rock you! We will rock you! And then the next verse."
    assert elimination_reason("Write a song.", chorus, rules=DEFAULT_RULES["quality"]) is None  # 8 words: a response loops longer
    assert elimination_reason("Write a song.", chorus) == (Elimination.REPEATED_TAIL, "loops: we will rock you (x2)")
    looping_line_inside = "Bran: Ashram Bran: Ashram Bran: Ashram. Please make it shorter."  # a sentence's end
    assert elimination_reason("Order Ned, Arya and Bran by age.", looping_line_inside)[0] == Elimination.REPEATED_TAIL


def looping_reply(req) -> str:
    """Rewrites of the seed about Bran loop; every other rewrite adds a new sentence; rank calls score every version 1."""
    user = req.messages[-1]["content"]
    shown = user.count("[Version ")
    if shown:
        return json.dumps({"scores": [1] * shown})
    task = user.split("Task: ", 1)[1].split("\n\nWrite this task again", 1)[0]
    if "Bran" in task:
        return "Bran: Ashram\nBran: Ashram\nBran: Ashram\n\nPlease make it shorter and more concise."
    return task + f" Include example number {task.count('Include') + 1}."


SEEDS = [{"id": "s-order", "instruction": "Order the following characters from oldest to youngest\n\nNed, Arya, Bran"},
         {"id": "s-poem", "instruction": "Write a short poem about autumn leaves."},
         {"id": "s-math", "instruction": "What is the sum of the first ten odd numbers?"}]


def test_a_run_drops_the_looping_rewrite_and_keeps_its_raw_reply(tmp_path):
    from curate.evol import build_labels
    from curate.session import Workspace

    ws = Workspace(tmp_path / "ws")
    labels = build_labels(SEEDS, ScriptedBackend(looping_reply), kind="complexity", steps=2, seed=0, workspace=ws,
                          name="cx")
    sets = {s["seed_id"]: s for s in map(json.loads, ws.label_file("cx", "sets.jsonl").read_text().splitlines())}
    looped = sets["s-order"]["eliminated"]
    assert [v["eliminated"] for v in looped] == ["repeated_tail"] * 2  # each step's rewrite loops
    assert looped[0]["raw"].startswith("Bran: Ashram\nBran: Ashram") and "bran ashram (x3)" in looped[0]["detail"]
    assert ws.label_sets["cx"]["eliminated_by_reason"] == {"repeated_tail": 2}
    assert sorted(set(labels["seed_id"])) == ["s-math", "s-poem"]
