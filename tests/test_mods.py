"""MoDS necessity: a model's own answers (the ``answer`` prompt), judged through ``response_column``, the
``necessity`` selector, and the seed model exported as a plain folder (``ws.fine_tune``).

The judge calls go to the fault-injecting OpenAI-compatible server on loopback (tests/fault_server.py); the
model is the tiny random Llama of tests/train_fixtures.py, fine-tuned on the CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from curate.codes import Decision, FailureCode, Reason, describe
from curate.errors import CurateError, CurateWarning
from curate.llm.backends import OpenAIBackend
from curate.llm.dryrun import estimate
from curate.llm.judges import Judge
from curate.session import Workspace
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer, _digit_logprobs
from tests.train_fixtures import build_tiny_lm, learnable_rows

TURNS_SUM = {"kind": "test", "granularity": "turn", "reducer": "sum"}


@pytest.fixture
def fault_server():
    with FaultServer(retry_after="1", hang_seconds=3.0) as srv:
        yield srv


def _backend(srv):
    return OpenAIBackend(srv.base_url, "fault", api_key="test-key-never-stored", timeout=30.0, max_retries=1,
                         backoff_base=0.05)


def _pool(tmp_path):
    records = [
        {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Name a colour."},
                           {"from": "gpt", "value": "Red."}]},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                           {"from": "human", "value": "A joke?"}, {"from": "gpt", "value": "No."}]},
        {"instruction": "[always500] Name a city.", "output": "Paris."},
        {"instruction": "[length] Tell a long story.", "output": "Once..."},
    ]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", records))
    return ws


def _sent(srv, end):
    """The messages of every request whose last message ends with ``end``."""
    return [m for m in srv.messages if m[-1]["content"].endswith(end)]


def test_a_refused_filtered_or_empty_reply_is_a_failure_with_its_raw_output_and_is_not_re_asked(tmp_path, fault_server):
    """A refusal (OpenAI: no content, message.refusal set) lost its text and was re-asked twice on a JSON prompt,
    then recorded as invalid JSON; on a text prompt it, an empty reply and a reply a content filter cut in half
    were stored as answers."""
    from curate.tags import Tagger

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"{marker} Name a river.", "output": "The Nile."}
                                                  for marker in ("[refusal]", "[filtered]", "[empty]", "Plain:")]))
    backend = _backend(fault_server)
    with pytest.warns(CurateWarning, match=r"seed_answer: 3 of the 4 rows computed now failed"):
        ws.apply(Judge("answer", backend, column="seed_answer"), progress=False)
    assert [v == [None] for v in ws.column("seed_answer")] == [True, True, True, False]
    fails = [row[0] if row else None for row in ws.failures("seed_answer")]
    assert [f.code if f else None for f in fails] == [FailureCode.REFUSED, FailureCode.REFUSED, FailureCode.EMPTY_OUTPUT,
                                                      None]
    assert fails[0].raw == "I can't help with that." and "content_filter" in fails[1].message
    assert fails[1].raw == "The first half of a repl"
    with pytest.warns(CurateWarning, match=r"tags_raw: 2 of the 4 rows computed now failed"):
        ws.apply(Tagger(backend), progress=False)  # a JSON prompt: the refusal is one paid request, not three
    assert len([m for m in fault_server.messages if "[refusal]" in m[-1]["content"] and "tags" in m[0]["content"]]) == 1
    refused = ws.failures("tags_raw")[0][0]
    assert refused.code is FailureCode.REFUSED and refused.raw == "I can't help with that."
    with pytest.warns(CurateWarning, match=r"quality: 3 of the 4 rows computed now failed"):
        ws.apply(Judge("quality", backend), progress=False)  # a digit score
    assert ws.failures("quality")[0][0].code is FailureCode.REFUSED and ws.column("quality")[3] != [None]

def test_max_completion_tokens_bounds_the_cost_cap_and_the_dry_run_as_max_tokens_does(tmp_path, fault_server):
    """A prompt limiting its reply with OpenAI's newer max_completion_tokens was priced at the assumed 1,024 tokens:
    the dry run said $0.0124 and max_cost=$0.01 let $0.058 through."""
    from curate.defaults import BACKEND
    from curate.llm.prompts import builtin_prompt_dir

    text = (builtin_prompt_dir() / "answer.md").read_text()
    assert "  max_tokens: 512\n" in text
    (tmp_path / "long_answer.md").write_text(text.replace("name: answer", "name: long_answer").replace(
        "  max_tokens: 512\n", "  max_completion_tokens: 6000\n"))
    ws = _pool(tmp_path)
    backend = OpenAIBackend(fault_server.base_url, "gpt-4o-mini", api_key="k", max_retries=0)
    judge = Judge(str(tmp_path / "long_answer.md"), backend, column="long_answer")
    # the dry run prices each request's reply at its limit, with the function the cost cap and --tpm use
    assert 6000 > BACKEND.worst_case_max_tokens and estimate(ws, judge).output_tokens == 6000 * 5  # five requests (user turns)

def test_a_field_the_prompt_reads_with_no_value_is_a_failure_not_the_text_none(tmp_path, fault_server):
    """A prompt reading a pool field one record lacks sent 'Category: None', paid for it and stored the score."""
    from curate.llm.prompts import builtin_prompt_dir

    text = (builtin_prompt_dir() / "quality.md").read_text()
    assert "inputs: [instruction, response]" in text and "Answer: {{ response }}" in text
    (tmp_path / "q_cat.md").write_text(text.replace("name: quality", "name: q_cat").replace(
        "inputs: [instruction, response]", "inputs: [instruction, response, category]").replace(
        "Answer: {{ response }}", "Answer: {{ response }}\nCategory: {{ category }}"))
    ws = Workspace(tmp_path / "ws")
    ws.load([{"instruction": "Name a prime.", "output": "7", "category": "math"},
             {"instruction": "Name a river.", "output": "The Nile."}])
    with pytest.warns(CurateWarning, match=r"q_cat: 1 of the 2 rows computed now failed"):
        ws.apply(Judge(str(tmp_path / "q_cat.md"), _backend(fault_server)), progress=False)
    assert not any("None" in m[-1]["content"] for m in fault_server.messages) and len(fault_server.messages) == 1
    assert ws.column("q_cat")[1] == [None] and ws.column("q_cat")[0] != [None]
    missing = ws.failures("q_cat")[1][0]
    assert missing.code is FailureCode.NO_INPUT_VALUE and missing.message.startswith("category: no value")
    for i, printed in enumerate(('{{ "Category: " ~ category }}', "{{ category | upper }}", "{{ [category] }}")):
        variant = tmp_path / f"q_cat_{i}.md"  # the null printed through an expression or a filter: 'None' too
        variant.write_text((tmp_path / "q_cat.md").read_text().replace("name: q_cat", f"name: q_cat_{i}").replace(
            "Category: {{ category }}", printed))
        with pytest.warns(CurateWarning, match=r"^(?:q_cat_0: 1 of the 2 rows computed now failed|q_cat_1: 1 of the 2 rows computed now failed|q_cat_2: 1 of the 2 rows computed now failed)"):
            ws.apply(Judge(str(variant), _backend(fault_server)), progress=False)
        assert ws.failures(f"q_cat_{i}")[1][0].code is FailureCode.NO_INPUT_VALUE
    assert not any("none" in m[-1]["content"].lower() for m in fault_server.messages)
    fault_server.messages.clear()
    guarded = tmp_path / "q_cat_guarded.md"  # a prompt that prints the field only where it has one sends every row
    guarded.write_text((tmp_path / "q_cat.md").read_text().replace("name: q_cat", "name: q_cat_guarded").replace(
        "Category: {{ category }}", "{% if category %}Category: {{ category }}{% endif %}"))
    ws.apply(Judge(str(guarded), _backend(fault_server)), progress=False)
    assert not any(ws.failures("q_cat_guarded")) and None not in [v[0] for v in ws.column("q_cat_guarded")]
    sent = fault_server.messages[-1][-1]["content"]  # the second row's (the first's is the same request as before)
    assert len(fault_server.messages) == 1 and "Name a river." in sent and "Category" not in sent

def test_a_models_answers_are_judged_from_their_column_not_the_pools_replies(tmp_path, fault_server):
    ws = _pool(tmp_path)
    backend = _backend(fault_server)
    with pytest.warns(CurateWarning, match=r"seed_answer: 2 of the 4 rows computed now failed"):
        ws.apply(Judge("answer", backend, column="seed_answer"), progress=False)
    answers = ws.column("seed_answer")
    assert all(isinstance(a, str) for a in answers[0] + answers[1]) and answers[2] == [None]
    assert ws.failures("seed_answer")[2][0].code is FailureCode.TRANSIENT
    cut = ws.failures("seed_answer")[3][0]  # stopped at max_tokens: a fragment, kept only as the raw output
    assert answers[3] == [None] and cut.code is FailureCode.TRUNCATED and "max_tokens (512)" in cut.message
    assert cut.raw == _digit_logprobs("[length] Tell a long story.")[0]["token"]  # what the server answered
    # the row's own system message, none where it has none, and the earlier turns before a later one
    assert _sent(fault_server, "Name a colour.")[0] == [{"role": "system", "content": "Be brief."},
                                                        {"role": "user", "content": "Name a colour."}]
    later = _sent(fault_server, "A joke?")[0]
    assert _sent(fault_server, "Hi") == [[{"role": "user", "content": "Hi"}]]
    assert len(later) == 1 and later[0]["content"].startswith("The conversation so far:")
    assert "user: Hi" in later[0]["content"] and "assistant: Hello" in later[0]["content"]
    assert later[0]["content"].endswith("Reply to the next message.\n\nA joke?")

    judge = Judge("quality", backend, column="seed_answer_quality", response_column="seed_answer")
    sent = fault_server.total
    planned = estimate(ws, judge)  # a dry run renders the same answers and sends nothing
    assert (planned.requests, planned.to_send, fault_server.total) == (3, 3, sent)
    with pytest.warns(CurateWarning, match=r"seed_answer_quality: 2 of the 4 rows computed now failed"):
        ws.apply(judge, progress=False)
    quality = _sent(fault_server, "Quality digit (1-6):")
    assert len(quality) == 3  # one per answered turn: the row whose answer failed sends nothing
    colour = next(m for m in quality if "Name a colour." in m[-1]["content"])[-1]["content"]
    assert f"Answer: {answers[0][0]}" in colour and "Red." not in colour
    fails = ws.failures("seed_answer_quality")[2]
    assert fails[0].code is FailureCode.NO_RESPONSE and "seed_answer" in fails[0].message
    assert ws.column_provenance("seed_answer_quality")["response_column"] == "seed_answer"

    sent = fault_server.total
    ws.apply(judge, progress=False)
    assert fault_server.total == sent  # nothing new to judge
    changed = [[answers[0][0] + " And blue."], answers[1], [None], [None]]  # another seed model's answers
    ws.add_column("seed_answer", changed, {"kind": "test", "granularity": "turn", "fingerprint": "another-model"})
    with pytest.warns(CurateWarning, match=r"seed_answer_quality: 2 of the 4 rows computed now failed"):
        result = ws.apply(judge, progress=False)
    assert result.computed == 4 and fault_server.total == sent + 1  # re-judged; unchanged texts come from the cache
    assert f"Answer: {answers[0][0]} And blue." in fault_server.messages[-1][-1]["content"]
    assert estimate(ws, judge).to_send == 0


def test_response_column_needs_a_prompt_that_reads_a_response(fault_server):
    with pytest.raises(CurateError, match="reads no response"):
        Judge("complexity", _backend(fault_server), response_column="seed_answer")
    with pytest.raises(CurateError, match="column it writes"):
        Judge("quality", _backend(fault_server), column="seed_answer", response_column="seed_answer")
    # by default never the judge's own column: the pool's replies keep their judgements
    assert Judge("quality", _backend(fault_server), response_column="seed_answer").column == "seed_answer_quality"


def test_workspace_score_takes_the_column_and_response_column_curate_score_takes(tmp_path, fault_server):
    """ws.score("quality", backend, response_column=...) and ws.score(scorer, column=...) failed with a raw
    TypeError from apply(), though `curate score --response-column` and `--scorer DIR --column` work."""
    from curate.scorers import load_default

    ws = _pool(tmp_path)
    answers = [["Blue."], ["Hey", "Why not."], [None], ["A short story."]]
    ws.add_column("seed_answer", answers, {"kind": "test", "granularity": "turn", "fingerprint": "a-model"})
    with pytest.warns(CurateWarning, match=r"seed_answer_quality: 1 of the 4 rows computed now failed"):
        judged = ws.score("quality", _backend(fault_server), response_column="seed_answer", progress=False)
    assert judged.column == "seed_answer_quality"
    assert ws.column_provenance("seed_answer_quality")["response_column"] == "seed_answer"
    assert any("Answer: Blue." in m[-1]["content"] for m in fault_server.messages)
    assert ws.score(load_default("quality"), column="q2", progress=False).column == "q2"
    ws.score(load_default("quality"), progress=False)
    assert ws.column("q2") == ws.column("quality")  # the same scorer under another name
    with pytest.warns(CurateWarning, match=r"sq: 1 of the 4 rows computed now failed"):
        replies = ws.score(load_default("quality"), response_column="seed_answer", column="sq", progress=False)
    assert replies.column == "sq" and ws.column_provenance("sq")["response_column"] == "seed_answer"
    assert ws.column("sq")[0] != ws.column("q2")[0]  # another reply, another score
    with pytest.raises(CurateError, match="response_column='seed_answer': scorer 'complexity' reads no response"):
        ws.score(load_default("complexity"), response_column="seed_answer")
    with pytest.raises(CurateError, match=r"give \['response_column'\] to Judge"):
        ws.score(Judge("quality"), _backend(fault_server), response_column="seed_answer")


# -- the necessity selector -------------------------------------------------------------------------------
def _necessity_workspace(tmp_path):
    """Ten rows: 0-1 the seed; answer scores 5, 5, then 1.0, 2.0, 4.0, 3.5, None, 1.5, 2.5 and a two-turn row
    whose second turn scored 1.2. Row 2 is a copy of seed row 0 (same vector); rows 3 and 7 point away."""
    recs = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(9)]
    recs.append({"conversations": [{"from": "human", "value": "Q9a"}, {"from": "gpt", "value": "A"},
                                   {"from": "human", "value": "Q9b"}, {"from": "gpt", "value": "B"}]})
    ws = Workspace(tmp_path / "nws")
    ws.load(write_jsonl(tmp_path / "n.jsonl", recs))
    scores = [[5.0], [5.0], [1.0], [2.0], [4.0], [3.5], None, [1.5], [2.5], [4.5, 1.2]]
    ws.add_column("seed_answer_quality", scores, TURNS_SUM)
    ws.add_column("seed_answer_quality_failure", [[{"code": "low_digit_mass", "message": "m", "raw": None, "turn": 1}]
                                                  if i == 6 else None for i in range(10)], {"kind": "failure"})
    x = np.zeros((10, 4), np.float32)
    x[:, 0] = 1.0
    x[1] = [0, 1, 0, 0]
    x[3] = [0, 0, 1, 0]
    x[7] = [0, 0, 0, 1]
    for i in (4, 5, 8, 9):
        x[i] = [0.9, 0.3, 0.3, 0.0]
    ws.add_embeddings("default", x / np.linalg.norm(x, axis=1, keepdims=True), {"kind": "test"})
    ws.add_selection("seed", [ws.ids[0], ws.ids[1]], ["kept", "kept"], ["selected", "selected"], [{}, {}], {})
    return ws


def test_necessity_keeps_the_seed_and_every_row_its_model_answers_badly(tmp_path):
    ws = _necessity_workspace(tmp_path)
    sel = ws.select(method="necessity", name="mods", seed="seed", answer_score="seed_answer_quality",
                    max_answer_score=3.5)
    rows = {r["id"]: r for r in sel.rows()}
    ids = ws.ids
    # MoDS: scores below the limit are necessary (3.5 itself is not); a row's lowest turn counts (row 9: 1.2)
    assert set(sel.ids) == {ids[i] for i in (0, 1, 2, 3, 7, 8, 9)}
    assert sel.ids[:2] == [ids[0], ids[1]] and rows[ids[0]]["detail"] == {"part": "seed"}
    assert sel.ids[2:] == [ids[i] for i in (2, 9, 7, 3, 8)]  # the worst answered first
    assert rows[ids[9]]["detail"] == {"part": "necessity", "answer_score": 1.2}
    assert rows[ids[5]]["reason"] == Reason.ANSWERED_WELL and rows[ids[4]]["reason"] == Reason.ANSWERED_WELL
    assert describe(Reason.ANSWERED_WELL, rows[ids[5]]["detail"]) == \
        "the seed model already answers it well (its answer scored 3.500 >= 3.5)"
    assert rows[ids[6]]["decision"] == Decision.UNSCORED and rows[ids[6]]["detail"]["failure"] == "low_digit_mass"
    assert sel.provenance["necessary_rows"] == 5


def test_necessity_counts_an_answer_cut_off_at_max_tokens_or_ending_in_a_loop_as_a_failed_answer(tmp_path):
    ws = _necessity_workspace(tmp_path)
    ids = ws.ids
    loop = "Here is my plan. " + "I will try again. " * 20  # it stopped, after going round in circles
    ws.add_column("seed_answer", [[None] if i == 6 else [loop] if i == 4 else [f"answer {i}"] for i in range(10)],
                  {"kind": "test", "granularity": "turn"})
    ws.add_column("seed_answer_failure", [[{"code": "truncated", "message": "max_tokens", "raw": "a a a", "turn": 1}]
                                          if i == 6 else None for i in range(10)], {"kind": "failure"})
    sel = ws.select(method="necessity", name="mods3", seed="seed", answer_score="seed_answer_quality",
                    max_answer_score=3.5, answers="seed_answer")
    rows = {r["id"]: r for r in sel.rows()}
    assert sel.ids[2:4] == sorted([ids[4], ids[6]])  # failed answers first, ties by row id
    assert rows[ids[6]]["detail"] == {"part": "necessity", "answer": "truncated"}
    assert rows[ids[4]]["detail"] == {"part": "necessity", "answer": "looping"}  # judged 4.0, yet failed
    assert sel.provenance["unfinished_answers"] == 1 and sel.provenance["looping_answers"] == 1
    assert sel.provenance["necessary_rows"] == 7


def test_necessity_with_a_budget_adds_the_rows_farthest_from_the_seed(tmp_path):
    ws = _necessity_workspace(tmp_path)
    ids = ws.ids
    sel = ws.select(method="necessity", name="mods2", seed="seed", answer_score="seed_answer_quality",
                    max_answer_score=3.5, budget=2)
    # row 2 answers worst but repeats seed row 0; rows 3 and 7 point where no seed row does (equally far: the
    # worse answered, 7, first)
    assert sel.ids == [ids[0], ids[1], ids[7], ids[3]]
    skipped = {r["id"]: r for r in sel.rows(decision="not_reached") if r["reason"] == Reason.BUDGET_FILLED}
    assert set(skipped) == {ids[2], ids[8], ids[9]} and skipped[ids[2]]["detail"]["distance"] == pytest.approx(0.0)


def test_necessity_refuses_a_seed_outside_its_input(tmp_path):
    ws = _necessity_workspace(tmp_path)
    ws.add_selection("some", ws.ids[1:], ["kept"] * 9, ["selected"] * 9, [{}] * 9, {})
    with pytest.raises(CurateError, match="outside this selection's input"):
        ws.select(method="necessity", name="bad", input_selection="some", seed="seed",
                  answer_score="seed_answer_quality", max_answer_score=3.5)


# -- the seed model as a folder ---------------------------------------------------------------------------
def _seed_workspace(tmp_path, rows: int, seed_rows: int):
    """The tiny random Llama, and a workspace of ``rows`` learnable rows with a random ``seed`` selection."""
    lm = build_tiny_lm(tmp_path / "tiny")
    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps({"messages": c}) for c in learnable_rows(rows)))
    ws = Workspace(tmp_path / "ws")
    ws.load(pool)
    ws.select(method="random", name="seed", budget=seed_rows)
    return lm, ws


def test_fine_tune_exports_a_merged_model_that_answers_as_the_adapter_does(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from curate.llm.backends import VLLMBackend
    from curate.train.harness import TrainRun

    lm, ws = _seed_workspace(tmp_path, rows=8, seed_rows=6)
    config = dict(epochs=2, lora_rank=4, learning_rate=5e-2, batch_size=3, warmup_ratio=0.0)
    out = ws.fine_tune("seed", tmp_path / "seed-model", model=lm, device="cpu", progress=False, **config)
    assert not ws.has_column("confidence")  # a seed model writes no data-map columns
    info = json.loads((out / "curate-model.json").read_text())
    assert info["rows"] == 6 and info["epoch"] == 2 and (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists()  # merged: a plain model vLLM can serve

    run = TrainRun(next((ws.cache_dir / "train").iterdir()))
    adapted, tok = run.load_model(device="cpu")
    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    text = tok.apply_chat_template([{"role": "user", "content": "Question 3: tell me the colour."}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-4)
        base = AutoModelForCausalLM.from_pretrained(str(lm), dtype=torch.float32).eval()
        assert not torch.allclose(base(ids).logits, merged(ids).logits, atol=1e-2)  # it did learn
    assert (out / "chat_template.jinja").is_file() or "chat_template" in (out / "tokenizer_config.json").read_text()

    stamp = (out / "model.safetensors").stat().st_mtime_ns
    again = ws.fine_tune("seed", tmp_path / "seed-model", model=lm, device="cpu", progress=False, **config)
    assert again == out and (out / "model.safetensors").stat().st_mtime_ns == stamp  # cached: not rewritten
    name = VLLMBackend(out).model  # no engine starts before the first request
    assert name == f"seed-model@{info['run'][:12]}-epoch2"  # cache keys follow the run, not the folder's name
    runs = sorted((ws.cache_dir / "train").iterdir())
    with pytest.raises(CurateError, match="not a model curate exported"):  # refused before a new run trains
        ws.fine_tune("seed", lm, model=lm, device="cpu", progress=False, **{**config, "seed": 7})
    assert sorted((ws.cache_dir / "train").iterdir()) == runs

    # two exports of one folder at once (epochs 1 and 2) take turns: one whole export is left, no scratch
    from concurrent.futures import ThreadPoolExecutor

    from curate.train.export import export_model
    race = tmp_path / "race"
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda epoch: export_model(run, race, epoch=epoch), [1, 2]))
    assert done == [race, race]
    assert json.loads((race / "curate-model.json").read_text())["epoch"] in (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir() if "race" in p.name) == ["race"]  # no lock left beside it


def test_a_trained_scorer_judges_a_models_answers_into_its_own_column(tmp_path):
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.scorers import load_default

    records = [{"instruction": "Explain why the sky is blue.", "output": "Rayleigh scattering: short wavelengths "
                "scatter more in air, so blue light reaches the eye from every direction of the sky."},
               {"instruction": "Write a haiku about rain.", "output": "Soft rain on the roof / ..."}]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", records))
    answers = [["Because it is."], [None]]  # the seed model's answers; it gave none to the second
    ws.add_column("seed_answer", answers, {"kind": "test", "granularity": "turn"})
    quality = load_default("quality")
    step = quality.reading_replies("seed_answer")
    assert step.column == "seed_answer_quality" and quality.column == "quality"
    with pytest.warns(CurateWarning, match=r"seed_answer_quality: 1 of the 2 rows computed now failed"):
        ws.apply(step, progress=False)
    got = ws.column("seed_answer_quality")
    expected = quality.predict([{"instruction": records[0]["instruction"], "response": "Because it is."}])[0]
    own = quality.predict([{"instruction": records[0]["instruction"], "response": records[0]["output"]}])[0]
    assert got[0] == [pytest.approx(expected)] and abs(expected - own) > 0.1  # the answer was read, not the pool's
    assert got[1] == [None] and ws.failures("seed_answer_quality")[1][0].code is FailureCode.NO_RESPONSE
    assert ws.column_provenance("seed_answer_quality")["response_column"] == "seed_answer"
    with pytest.raises(CurateError, match="no response"):
        load_default("complexity").reading_replies("seed_answer")

    with pytest.warns(CurateWarning, match=r"seed_answer_q2: 1 of the 2 rows computed now failed"):
        result = CliRunner().invoke(app, ["score", str(ws.path), "--scorer", "default", "--response-column", "seed_answer",
                                          "--column", "seed_answer_q2"])
    assert result.exit_code == 0, result.output
    assert ws.column("seed_answer_q2")[0] == [pytest.approx(expected)] and not ws.has_column("quality")


def test_cli_train_model_writes_the_folder_and_says_how_to_answer_with_it(tmp_path):
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.cli.train import mods_next_steps  # what README runs: tests/test_mods_hint.py

    lm, ws = _seed_workspace(tmp_path, rows=6, seed_rows=4)
    out = tmp_path / "seed-model"
    result = CliRunner().invoke(app, ["train", "model", str(ws.path), "--selection", "seed", "--out", str(out),
                                      "--model", str(lm), "--device", "cpu", "--epochs", "1", "--lora-rank", "4",
                                      "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file() and json.loads((out / "curate-model.json").read_text())["rows"] == 4
    assert f"--backend vllm --model {out}" in result.output and "--method necessity" in result.output
    said = " ".join(result.output.split())
    for _, command in mods_next_steps(str(ws.path), "seed", str(out), ws.selection("seed").provenance.get("input_selection")):
        assert command in said, (command, said)
