"""Token-level model signals: the engine against a direct forward pass, IFD on SmolLM2, per-turn values,
resume after a kill, free re-runs, learnability, and the signal selectors.

Most tests run a tiny random-initialised Llama (hidden 32, 2 layers) that uses SmolLM2's real tokenizer and
chat template, so they take seconds; one runs the packaged SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from curate.codes import Decision, FailureCode, Reason
from curate.errors import CurateError, CurateWarning
from curate.rows import turns
from curate.signals import IFD, Engine, Learnability, LoraConfig, Perplexity
from curate.signals.cache import LogprobCache
from curate.signals.template import messages_before
from curate.storage.step import RowInput, StepContext
from curate.storage.workspace import Workspace

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@pytest.fixture(scope="session")
def smollm2_dir():
    from curate.llm.local import prepare_model

    return prepare_model()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, smollm2_dir):
    """A random Llama with SmolLM2's tokenizer and chat template, saved as a Hugging Face folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    for name in TOKENIZER_FILES:
        shutil.copy(smollm2_dir / name, folder / name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def conv(*pairs, system=None):
    msgs = [{"role": "system", "content": system}] if system else []
    for user, assistant in pairs:
        msgs.append({"role": "user", "content": user})
        if assistant is not None:
            msgs.append({"role": "assistant", "content": assistant})
    return msgs


CONVERSATIONS = [
    conv(("What is 2+2?", "4"), ("And doubled?", "Doubled, it is eight.")),
    conv(("Write a haiku about rain.", "Soft rain on the roof,\nthe gutters hum a low song,\nthe street shines again."),
         system="You are a poet."),
    conv(("Name three primary colours.", "Red, yellow and blue are the traditional primary colours.")),
    conv(("Translate 'cat' to French.", "chat"), ("And 'dog'?", "chien"), ("And 'bird'?", "oiseau")),
    conv(("Summarise: the meeting moved to Friday because the room was booked.",
          "The meeting is now on Friday; the room was taken.")),
    conv(("List the planets.", "Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune.")),
]


def workspace(tmp_path, conversations=CONVERSATIONS):
    path = tmp_path / "pool.jsonl"
    path.write_text("\n".join(json.dumps({"messages": c}) for c in conversations), encoding="utf-8")
    ws = Workspace(tmp_path / "ws", create=True)
    ws.load(path)
    return ws


class Counter:
    """A progress object counting rows; raises after ``kill_after`` rows to stand in for a killed run."""

    def __init__(self, kill_after=None):
        self.n = 0
        self.kill_after = kill_after

    def update(self, n=1):
        self.n += n
        if self.kill_after is not None and self.n >= self.kill_after:
            raise KeyboardInterrupt("killed")


def direct_logprobs(model, request):
    """Log-probabilities of the target tokens from one unpadded full forward pass."""
    import torch

    seq = torch.tensor([list(request.context) + list(request.target)])
    with torch.inference_mode():
        logits = model(input_ids=seq).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    start = len(request.context) - 1
    pos = torch.arange(start, start + len(request.target))
    return lp[pos, torch.tensor(request.target)].numpy()


def test_engine_matches_a_direct_forward_pass(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    engine = Engine(tiny_model, max_batch=4)  # the default dtype: float32, a measurement's precision
    requests = []
    for c in CONVERSATIONS:
        for plan in engine.prompter.plan(turns(c)):
            requests += [plan.conditioned, plan.alone]
    got = engine.logprobs(requests, tmp_path)
    assert engine.stats["forward_passes"] >= 3  # several padded, length-bucketed batches
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype="float32").eval()
    for request, lp in zip(requests, got, strict=True):
        assert lp.shape == (len(request.target),)
        np.testing.assert_allclose(lp, direct_logprobs(model, request), atol=1e-4, rtol=0)


def test_requests_follow_the_chat_template(tiny_model):
    engine = Engine(tiny_model, dtype="float32")
    tok = engine.tokenizer
    ts = turns(CONVERSATIONS[0])
    plans = engine.prompter.plan(ts)
    second = plans[1].conditioned
    want = tok.apply_chat_template(messages_before(ts, 1), tokenize=False, add_generation_prompt=True)
    assert tok.decode(second.context) == want
    assert "What is 2+2?" in want and "<|im_start|>assistant\n4<|im_end|>" in want  # the earlier turn, answered
    assert tok.decode(second.target) == "Doubled, it is eight."
    assert plans[1].alone.target == second.target and len(plans[1].alone.context) == 1
    assert tok.convert_ids_to_tokens(plans[1].alone.context[0]) == "<|endoftext|>"


def test_truncation_keeps_both_losses_on_the_same_tokens(tiny_model):
    engine = Engine(tiny_model, dtype="float32", max_length=24)
    long = conv(("Please describe the water cycle in detail for a school project.",
                 "Water evaporates from seas and lakes, rises, cools into clouds, falls as rain or snow, "
                 "and flows back through rivers and ground water to the sea, again and again."))
    plan = engine.prompter.plan(turns(long))[0]
    assert plan.truncated
    assert len(plan.conditioned.context) + len(plan.conditioned.target) == 24
    assert plan.alone.target == plan.conditioned.target and len(plan.conditioned.target) >= 12
    assert engine.tokenizer.decode(plan.conditioned.context).endswith("<|im_start|>assistant\n")


def test_max_length_is_capped_at_the_model_position_window(tiny_model, tmp_path):
    """A model that reads 32 positions gets 32-token requests (flagged truncated), not an index error."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    short = tmp_path / "short-window"
    short.mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy(tiny_model / name, short / name)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                 tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
                     ).save_pretrained(short)
    ws = workspace(tmp_path)
    result = ws.apply(IFD(short), progress=False)
    assert result.failed == 0 and result.provenance["max_length"] == 32
    assert result.provenance["turns_truncated"] > 0
    assert all(v is not None for v in ws.row_values("ifd"))
    with pytest.raises(CurateError, match="not in the pool.*'no-such-id'"):
        ws.apply(IFD(short), ["no-such-id"], progress=False)


def test_ifd_repeat_is_low_and_unrelated_is_at_least_one_on_smollm2(smollm2_dir, tmp_path):
    """The packaged model (about 1.5 s on 2 idle cores)."""
    text = "The quick brown fox jumps over the lazy dog near the river bank."
    rows = [
        conv((f"Repeat after me: {text}", text)),
        conv(("What is the capital of France?", "Bananas are rich in potassium and are a popular fruit.")),
        conv(("Explain photosynthesis in one sentence.", text)),
    ]
    ws = workspace(tmp_path, rows)
    result = ws.apply(IFD(smollm2_dir), progress=False)
    repeat, unrelated, off_topic = ws.row_values("ifd")
    assert repeat < 0.5 and unrelated >= 1.0 and off_topic >= 1.0, (repeat, unrelated, off_topic)
    assert result.provenance["ifd_at_least_one"] == 2


@pytest.mark.llm
def test_vllm_engine_agrees_with_the_transformers_engine(local_llm, smollm2_dir, tmp_path):
    from curate.signals.vllm import VllmEngine

    rows = [conv(("Repeat after me: the cat sat on the mat.", "the cat sat on the mat.")),
            conv(("What is the capital of France?", "Bananas are rich in potassium and are a popular fruit.")),
            CONVERSATIONS[0][:2]]
    ws = workspace(tmp_path, rows)
    vllm = VllmEngine(base_url=local_llm.base_url, served_model=local_llm.model)
    ws.apply(IFD(engine=vllm, column="ifd_vllm"), progress=False)
    ws.apply(IFD(smollm2_dir, dtype="float32"), progress=False)
    theirs, ours = ws.row_values("ifd_vllm"), ws.row_values("ifd")
    assert theirs[0] < 0.5 <= 1.0 <= theirs[1]
    # a server in float32 (CPUs without native bf16) runs the same arithmetic as the transformers engine
    # (measured: 6e-6 apart on IFD); one in bfloat16 rounds every layer
    exact = local_llm.dtype == "float32"
    np.testing.assert_allclose(theirs, ours, atol=1e-4 if exact else 0.1)
    loss_v, loss_t = ws.column("ifd_vllm_loss_conditioned"), ws.column("ifd_loss_conditioned")
    np.testing.assert_allclose([x[0] for x in loss_v], [x[0] for x in loss_t], atol=1e-3 if exact else 0.15)
    assert vllm.fingerprint.endswith(":vllm") and vllm.stats["forward_passes"] >= 1


def test_multi_turn_rows_get_one_value_per_turn_and_missing_replies_fail(tiny_model, tmp_path):
    rows = CONVERSATIONS[:4] + [conv(("Only a question, no reply", None)), conv(("First", "answer"), ("Second", None))]
    ws = workspace(tmp_path, rows)
    with pytest.warns(CurateWarning, match=r"ifd: 2 of the 6 rows computed now failed"):
        ws.apply(IFD(tiny_model, dtype="float32"), progress=False)
    values = ws.column("ifd")
    assert [len(v) for v in values] == [2, 1, 1, 3, 1, 2]
    assert all(isinstance(x, float) and x > 0 for v in values[:4] for x in v)
    assert values[4] == [None] and values[5][0] is not None and values[5][1] is None
    fails = ws.failures("ifd")
    assert [f.code for f in fails[4]] == [FailureCode.NO_RESPONSE] and fails[5][0].turn == 2
    cond, alone = ws.column("ifd_loss_conditioned")[0], ws.column("ifd_loss_alone")[0]
    assert values[0] == pytest.approx([c / a for c, a in zip(cond, alone, strict=True)])
    assert ws.row_values("ifd")[0] == pytest.approx(np.mean(values[0]))  # reducer: mean
    assert ws.column_provenance("ifd")["reducer"] == "mean"
    empty = IFD(tiny_model, dtype="float32").run([RowInput("x", [{"role": "system", "content": "hi"}], [])],
                                                 StepContext(Counter(), ws.cache_dir, ws.path))
    assert empty.values == [[]] and empty.failures[0][0].code is FailureCode.NO_USER_TURN


def test_a_killed_run_resumes_without_recomputing_finished_rows(tiny_model, tmp_path):
    ws = workspace(tmp_path)
    rows = ws.row_inputs(ws.ids, ())
    killed = IFD(tiny_model, dtype="float32", max_batch=2)
    with pytest.raises(KeyboardInterrupt):
        killed.run(rows, StepContext(Counter(kill_after=2), ws.cache_dir, ws.path))
    done_before_kill = killed.engine.stats["computed"]
    total = sum(2 * len(r.turns) for r in rows)
    assert 0 < done_before_kill < total
    with LogprobCache(ws.cache_dir) as cache:
        assert len(cache) == done_before_kill  # every finished batch was on disk before the kill
    resumed = IFD(tiny_model, dtype="float32", max_batch=2)
    ws.apply(resumed, progress=False)
    assert resumed.engine.stats["computed"] == total - done_before_kill
    assert resumed.engine.stats["cache_hits"] == done_before_kill


def test_a_calls_cache_count_is_its_own_when_another_call_shares_the_engine(tiny_model, tmp_path):
    """A signal counted its cache answers as the change of the engine's shared stats over its call, so a call on the
    same engine meanwhile (another thread's part of the pool) was counted in it too. The other call runs here while
    this one reports progress, as a thread would; each call counts what it asked for."""
    ws = workspace(tmp_path)
    step = Perplexity(tiny_model, dtype="float32")
    ws.apply(step, progress=False)  # every request is in the cache now
    mine, theirs = ws.row_inputs(ws.ids[:2]), ws.row_inputs(ws.ids[2:])
    answered: dict = {}

    class Meanwhile:
        def update(self, n: int = 1) -> None:
            if not answered:
                answered["started"] = True
                answered.update(step.run(theirs, StepContext(Bar(), ws.cache_dir, ws.path)).stats)

    class Bar:
        def update(self, n: int = 1) -> None:
            pass

    stats = step.run(mine, StepContext(Meanwhile(), ws.cache_dir, ws.path)).stats
    turns_of = [len(turns(r.conversation)) for r in (*mine, *theirs)]
    assert stats["requests"] == stats["cached_requests"] == sum(turns_of[:2])
    assert answered["requests"] == answered["cached_requests"] == sum(turns_of[2:])


def test_apply_twice_computes_nothing_and_perplexity_reuses_ifd_passes(tiny_model, tmp_path):
    ws = workspace(tmp_path)
    step = IFD(tiny_model, dtype="float32")
    first = ws.apply(step, progress=False)
    assert first.computed == len(ws.ids) and first.failed == 0
    again = ws.apply(IFD(tiny_model, dtype="float32"), progress=False)
    assert again.computed == 0 and again.skipped == len(ws.ids)
    forced = IFD(tiny_model, dtype="float32")
    ws.apply(forced, force=True, progress=False)
    assert forced.engine.stats["forward_passes"] == 0  # a forced re-run is answered by the cache
    ppl = Perplexity(engine=step.engine)
    passes = step.engine.stats["forward_passes"]
    ws.apply(ppl, progress=False)
    assert step.engine.stats["forward_passes"] == passes  # same conditioned requests as IFD
    loss = ws.column("ifd_loss_conditioned")
    assert ws.column("perplexity")[0] == pytest.approx([np.exp(x) for x in loss[0]])


def test_a_diverged_model_gives_perplexity_failures_not_an_overflow(tiny_model, tmp_path):
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():  # tied embeddings: logits grow 1e5-fold, so a wrong token costs thousands of nats
        model.model.embed_tokens.weight.mul_(1e5)
    model.save_pretrained(tmp_path / "diverged")
    for name in TOKENIZER_FILES:
        shutil.copy(tiny_model / name, tmp_path / "diverged" / name)
    ws = workspace(tmp_path, CONVERSATIONS[2:4])
    with pytest.warns(CurateWarning, match=r"perplexity: 2 of the 2 rows computed now failed"):
        result = ws.apply(Perplexity(tmp_path / "diverged", dtype="float32"), progress=False)
    assert result.failed == 2 and ws.column("perplexity") == [[None], [None, None, None]]
    fails = ws.failures("perplexity")
    assert {f.code for row in fails for f in row} == {FailureCode.MODEL_ERROR}
    assert "perplexity out of range: mean NLL" in fails[0][0].message and fails[1][2].turn == 3


def test_learnability_tunes_once_and_rises_on_the_reference_rows(tiny_model, tmp_path):
    ws = workspace(tmp_path)
    reference = CONVERSATIONS[:3]
    cfg = LoraConfig(steps=30, lr=1e-2, batch=4)
    step = Learnability(reference, tiny_model, dtype="float32", lora=cfg)
    ws.apply(step, progress=False)
    values = ws.row_values("learnability")
    assert all(v is not None for v in values)
    assert np.mean(values[:3]) > 0  # the reference model learned its own rows
    base = ws.column("learnability_loss_base")[0]
    ref = ws.column("learnability_loss_reference")[0]
    assert ws.column("learnability")[0] == pytest.approx([b - r for b, r in zip(base, ref, strict=True)])
    adapters = list((ws.cache_dir / "signals" / "lora").glob("*/adapter_model.safetensors"))
    assert len(adapters) == 1
    saved = {f.name for f in adapters[0].parent.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "adapter.json"} <= saved  # peft's folder + settings
    assert not [n for n in saved if n.endswith((".bin", ".pt", ".pkl"))]  # no pickle
    stamp = adapters[0].stat().st_mtime_ns
    other = Learnability(reference, tiny_model, dtype="float32", lora=cfg)
    assert other.fingerprint() == step.fingerprint()
    ws.apply(other, force=True, progress=False)
    assert adapters[0].stat().st_mtime_ns == stamp  # the tuned adapter was loaded, not retrained
    assert Learnability(reference[:2], tiny_model, dtype="float32", lora=cfg).fingerprint() != step.fingerprint()


def test_a_killed_reference_tuning_continues_from_its_last_save_to_the_same_adapter(tiny_model, tmp_path,
                                                                                   monkeypatch):
    """The LoRA tuning behind learnability (200 steps, minutes on a CPU) kept nothing when killed, while the
    interrupt line said finished work is kept. Its progress is now saved as it goes: a tuning stopped after 3 of 6
    steps and resumed ends with the adapter an unbroken 6-step tuning makes, and the progress file goes once the
    adapter is stored."""
    from dataclasses import replace

    import curate.scorers.checkpoint as checkpoint
    from curate.signals.lora import train_adapter, tuned_adapter

    monkeypatch.setattr(checkpoint, "SAVE_EVERY_S", 0.0)
    step = Learnability(CONVERSATIONS[:3], tiny_model, dtype="float32", lora=LoraConfig(steps=6, lr=1e-2, batch=2))
    requests, model_dir = step.reference_requests, step.engine.model_dir

    def weights(folder):
        from safetensors.numpy import load_file

        return load_file(str(folder / "adapter_model.safetensors"))

    (tmp_path / "whole").mkdir()
    train_adapter(model_dir, requests, step.lora, tmp_path / "whole")
    progress = tmp_path / "progress.pt"
    (tmp_path / "first").mkdir()
    train_adapter(model_dir, requests, replace(step.lora, steps=3), tmp_path / "first", checkpoint_path=progress)
    (tmp_path / "resumed").mkdir()
    train_adapter(model_dir, requests, step.lora, tmp_path / "resumed", checkpoint_path=progress)
    whole, first, resumed = (weights(tmp_path / n) for n in ("whole", "first", "resumed"))
    assert any(not np.array_equal(whole[k], first[k]) for k in whole)
    for key in whole:
        np.testing.assert_allclose(resumed[key], whole[key], rtol=1e-5, atol=1e-7)
    from curate.signals.lora import adapter_fingerprint

    lora = tmp_path / "cache" / "signals" / "lora"
    killed = lora / f".{adapter_fingerprint(model_dir, requests, step.lora)}.0badc0de.tmp"  # a SIGKILLed tuning's
    killed.mkdir(parents=True)
    tuned_adapter(model_dir, requests, step.lora, tmp_path / "cache")
    assert not list(lora.glob("*.progress.pt")) and not killed.exists()


def test_signals_handed_the_pool_in_parts_store_what_one_call_stores(tiny_model, tmp_path):
    """ws.apply gives a signal step ``rows_per_call`` rows at a time (a pool's token ids would not fit in memory):
    the columns, failures and summed stats are those of one call over every row; learnability trains its reference
    model once (the later parts load it from the cache) and its provenance names the tuned adapter once."""
    rows = [*CONVERSATIONS, conv(("Only a question, no reply", None))]
    stored = {}
    for name, rows_per_call in (("whole", None), ("parts", 2)):
        (tmp_path / name).mkdir()
        ws = workspace(tmp_path / name, rows)
        steps = [IFD(tiny_model, dtype="float32"),
                 Learnability(CONVERSATIONS[:3], tiny_model, dtype="float32", lora=LoraConfig(steps=5, lr=1e-2))]
        provenance = []
        for step in steps:
            step.rows_per_call = rows_per_call
            with pytest.warns(CurateWarning, match=r"^(?:ifd: 1 of the 7 rows computed now failed|learnability: 1 of the 7 rows computed now failed)"):
                provenance.append(ws.apply(step, progress=False).provenance)
        columns = ["ifd", "ifd_loss_alone", "learnability", "learnability_loss_reference"]
        stored[name] = ([ws.column(c) for c in columns], ws.failures("ifd"), ws.failures("learnability"),
                        [{k: p[k] for k in ("turns_scored", "turns_truncated")} for p in provenance],
                        provenance[0]["ifd_at_least_one"],
                        {k: v for k, v in provenance[1]["lora"].items() if k != "seconds"})  # seconds: a timing
    whole, parts = stored["whole"], stored["parts"]
    for got, want in zip(parts[0], whole[0], strict=True):  # batches differ: float rounding
        flat = [[v for row in column for v in (row or [None])] for column in (got, want)]
        assert [v is None for v in flat[0]] == [v is None for v in flat[1]]
        assert [v for v in flat[0] if v is not None] == pytest.approx([v for v in flat[1] if v is not None], rel=1e-5)
    assert parts[1:] == whole[1:]
    assert whole[3][0]["turns_scored"] == 9 and whole[5]["steps"] == 5
    assert len(list((tmp_path / "parts" / "ws" / "cache" / "signals" / "lora").glob("*/adapter.json"))) == 1


def test_learnability_names_lora_targets_the_model_lacks(tiny_model, tmp_path):
    step = Learnability(CONVERSATIONS[:2], tiny_model, dtype="float32", lora=LoraConfig(steps=1, targets=("c_attn",)))
    with pytest.raises(CurateError, match="lora_targets"):
        step.reference_engine(tmp_path)
    assert not list((tmp_path / "signals" / "lora").glob("*/"))  # nothing half-trained left in the cache


def _signal_column(ws, name, values):
    ws.add_column(name, [[v] if v is not None else None for v in values], {"kind": name, "reducer": "mean",
                                                                           "granularity": "turn"})


def test_signal_selectors(tmp_path):
    from curate.select import select  # noqa: F401  (the selection entry point)
    from curate.signals import selectors  # noqa: F401  (registers ifd, perplexity, learnability)

    rows = [conv((f"Question {i}?", f"Answer {i}.")) for i in range(10)]
    ws = workspace(tmp_path, rows)
    _signal_column(ws, "ifd", [0.2, 0.9, 1.3, 0.5, None, 0.7, 1.0, 0.1, 0.95, 0.4])
    sel = select(ws, method="ifd", name="cherry", budget=3)
    by_id = {r["id"]: (r["decision"], r["reason"]) for r in sel.rows()}
    ids = ws.ids
    assert sel.ids == [ids[8], ids[1], ids[5]]
    assert by_id[ids[2]] == (Decision.REJECTED, Reason.IFD_AT_LEAST_ONE)
    assert by_id[ids[6]] == (Decision.REJECTED, Reason.IFD_AT_LEAST_ONE)  # IFD == 1 is dropped too
    assert by_id[ids[4]] == (Decision.UNSCORED, Reason.NO_SCORE)
    assert by_id[ids[0]] == (Decision.NOT_REACHED, Reason.BUDGET_FILLED)  # the budget's code under every selector
    top = select(ws, method="ifd", name="top", fraction=0.3)  # of the 7 rows left: 2, not 3 of all 10 (Cherry)
    assert top.ids == [ids[8], ids[1]]
    _signal_column(ws, "perplexity", [float(x) for x in range(1, 11)])
    band = select(ws, method="perplexity", name="band", low=0.2, high=0.8)
    assert sorted(band.ids) == sorted(ids[2:8])
    assert band.reasons()[(Decision.REJECTED, Reason.OUTSIDE_BAND)] == 4
    _signal_column(ws, "learnability", [0.1, -0.2, 0.5, 0.3, 0.0, 0.9, 0.2, None, 0.4, 0.6])
    learn = select(ws, method="learnability", name="learn", budget=2)
    assert learn.ids == [ids[5], ids[9]]


def test_cli_signal_writes_the_column_and_select_uses_it(tiny_model, tmp_path):
    from typer.testing import CliRunner

    import curate
    from curate.cli import app

    ws = curate.Workspace.open(workspace(tmp_path).path)
    runner = CliRunner()
    result = runner.invoke(app, ["signal", str(ws.path), "--kind", "ifd", "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert "ifd:" in result.output and "computed" in result.output
    again = runner.invoke(app, ["signal", str(ws.path), "--kind", "ifd", "--model", str(tiny_model)])
    assert again.exit_code == 0 and f"0 computed, {len(ws):,} reused" in again.output
    values = ws.row_values("ifd")
    scored = [v for v in values if v is not None]
    assert scored and ws.reducer("ifd") == "mean"
    sel = ws.select(method="ifd", name="by_ifd", budget=1)
    kept = sel.ids
    assert len(kept) == 1
    best = max((v, rid) for rid, v in zip(ws.ids, values, strict=True) if v is not None and v < 1.0)
    assert kept == [best[1]]
    bad = runner.invoke(app, ["signal", str(ws.path), "--kind", "bogus"])
    assert bad.exit_code == 1 and "unknown signal 'bogus'" in str(bad.exception)


def test_cli_signal_limits_rows_truncates_and_refuses_a_stray_reference(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from curate.cli import app

    ws = workspace(tmp_path)
    runner = CliRunner()
    args = ["signal", str(ws.path), "--kind", "perplexity", "--model", str(tiny_model)]
    limited = runner.invoke(app, [*args, "--limit", "2", "--max-length", "16"])
    assert limited.exit_code == 0, limited.output
    assert "2 computed" in limited.output and "turns truncated to 16 tokens" in limited.output
    assert [v is not None for v in ws.row_values("perplexity")] == [True, True] + [False] * (len(ws) - 2)
    assert ws.column_provenance("perplexity")["max_length"] == 16
    # other settings on some rows would mix the column: refused, with a way out that exists (--column was advised,
    # though neither `curate signal` nor ws.signal took it)
    mixed = runner.invoke(app, [*args, "--limit", "1", "--max-length", "24"])
    assert mixed.exit_code == 1 and "--column NAME" in str(mixed.exception)
    own = runner.invoke(app, [*args, "--limit", "1", "--max-length", "24", "--column", "perplexity_24"])
    assert own.exit_code == 0, own.output
    assert ws.column_provenance("perplexity_24")["max_length"] == 24 and ws.column_provenance("perplexity")["max_length"] == 16
    import curate

    assert curate.Workspace.open(ws.path).signal("perplexity", model=tiny_model, ids=ws.ids[:1], max_length=20,
                                                 column="p20", progress=False).computed == 1
    stray = runner.invoke(app, [*args, "--reference", "best"])
    assert stray.exit_code == 1 and "reference selection is for learnability" in str(stray.exception)


def test_report_shows_ifd_plots_once_the_column_exists(tmp_path):
    import curate
    from curate.report.plots import all_plots

    ws = curate.Workspace.open(workspace(tmp_path).path)
    titles = [t for t, _, _ in all_plots(ws)]
    assert not any("IFD" in t for t in titles)
    _signal_column(ws, "ifd", [0.5 + 0.3 * i for i in range(len(ws))])
    _signal_column(ws, "quality", [1.0 + i for i in range(len(ws))])
    plots = {t: (fig, missing) for t, fig, missing in all_plots(ws)}
    fig, missing = plots["IFD (instruction-following difficulty)"]
    assert missing is None and any(line.get_xdata()[0] == 1.0 for line in fig.axes[0].lines)
    assert plots["IFD x quality"][1] is None


def test_a_signal_never_writes_over_another_producers_column_or_a_pool_field(tiny_model, tmp_path):
    """`curate signal --kind perplexity --column quality` replaced a judge's labels with perplexities (and
    `--column ifd` left IFD's loss columns stale beside them); a signal writes its own kind's column only."""
    ws = workspace(tmp_path, CONVERSATIONS[:2])
    ws.add_column("quality", [[4.0, 5.0], [3.0]], {"kind": "judge", "prompt": "quality"})
    ws.add_column("human", [[1.0, 2.0], [3.0]], {})  # a user's own labels: named as such (was "(loaded)")
    ws.apply(IFD(tiny_model, dtype="float32"), progress=False)
    for column, message in (("quality", "another producer wrote \\(judge 'quality'\\); the perplexity signal"),
                            ("human", "another producer wrote \\(added with ws.add_column\\); the perplexity"),
                            ("ifd", "another producer wrote \\(ifd\\); the perplexity signal"),
                            ("messages", "is a field of the pool file; the perplexity signal")):
        with pytest.raises(CurateError, match=message):
            ws.apply(Perplexity(tiny_model, dtype="float32", column=column), progress=False)
    assert ws.column("quality") == [[4.0, 5.0], [3.0]]
    assert ws.apply(Perplexity(tiny_model, dtype="float32", column="ppl"), progress=False).computed == 2
    assert ws.apply(Perplexity(tiny_model, dtype="float32", column="ppl"), progress=False, force=True).computed == 2


def test_signal_stats_describe_the_whole_column_not_the_last_run(tiny_model, tmp_path):
    """`curate signal --limit 3`, then on every row: the column's turns scored and truncated and its IFD >= 1 counts
    (provenance, `curate info --json`, the printed line) counted only the last run's rows; each run keeps its own."""
    from typer.testing import CliRunner

    import curate
    from curate.cli import app

    ws = curate.Workspace.open(workspace(tmp_path).path)
    args = ["signal", str(ws.path), "--kind", "ifd", "--model", str(tiny_model), "--column", "ifd_lim",
            "--max-length", "24"]
    first = CliRunner().invoke(app, [*args, "--limit", "3"])
    rest = CliRunner().invoke(app, args)
    assert first.exit_code == 0 and rest.exit_code == 0, first.output + rest.output
    values, truncated = ws.column("ifd_lim"), ws.column("ifd_lim_truncated")
    prov = ws.column_provenance("ifd_lim")
    flagged = sum(any(v >= 1.0 for v in row) for row in values)
    assert prov["turns_scored"] == sum(map(len, values)) == 9  # 4 turns in the first 3 rows, 5 in the rest
    assert prov["turns_truncated"] == sum(bool(t) for row in truncated for t in row) > 0
    assert prov["rows_with_ifd_at_least_one"] == flagged
    assert prov["ifd_at_least_one"] == sum(v >= 1.0 for row in values for v in row)
    assert {"turns_scored", "rows_with_ifd_at_least_one"} <= set(prov["whole_column_stats"])
    assert [run["turns_scored"] for run in prov["runs"]] == [4, 5]  # each run's own counts stay in runs
    assert f"rows of the column with IFD >= 1 (the instruction does not help): {flagged}" in rest.output
    assert curate.Workspace.open(ws.path).info()["columns"]["ifd_lim"]["turns_scored"] == 9


def test_cli_signal_says_what_the_cache_answered_and_that_earlier_failures_were_not_computed_again(
        tiny_model, tmp_path):
    """After a killed run the summary said "N computed, 0 reused" with no word of the requests the on-disk cache
    answered; a failure kept from an earlier run was "not sent again", a judge's words for a local forward pass."""
    from typer.testing import CliRunner

    from curate.cli import app

    ws = workspace(tmp_path, CONVERSATIONS + [conv(("Only a question, no reply", None))])
    rows = ws.row_inputs(ws.ids, ())
    killed = IFD(tiny_model, dtype="float32", max_batch=2)
    with pytest.raises(KeyboardInterrupt):
        killed.run(rows, StepContext(Counter(kill_after=2), ws.cache_dir, ws.path))
    cached, total = killed.engine.stats["computed"], 2 * sum(len(c) // 2 for c in CONVERSATIONS)
    assert 0 < cached < total
    args = ["signal", str(ws.path), "--kind", "ifd", "--model", str(tiny_model)]
    with pytest.warns(CurateWarning, match=r"ifd: 1 of the 7 rows computed now failed"):
        resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    line = " ".join(resumed.output.split())
    assert (f"ifd: {len(CONVERSATIONS)} computed ({cached} of their {total} requests answered by the on-disk cache), "
            "0 reused, failed 1 (") in line, line
    assert "1 x no_response:" in line, line  # why it failed, as curate score says it ("failed 1" named no reason)
    again = " ".join(CliRunner().invoke(app, args).output.split())
    assert f"0 computed, {len(CONVERSATIONS) + 1} reused, failed 1 (1 from an earlier run, not computed again)" in again


def test_curate_run_says_what_the_signal_cache_answered(tiny_model, tmp_path):
    """`curate run --signal ifd` said '... computed (N now, 0 reused)' of a run whose requests the log-prob cache had
    answered; it names them, as `curate signal` does."""
    from typer.testing import CliRunner

    from curate.cli import app

    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps({"messages": c}) for c in CONVERSATIONS), encoding="utf-8")
    args = ["run", str(pool), "--budget", "2", "--no-report", "--signal", "ifd", "--signal-model", str(tiny_model)]
    first = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    shutil.copytree(tmp_path / "a" / "workspace" / "cache", tmp_path / "b" / "workspace" / "cache")
    again = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b")])  # new columns, the cache's answers
    assert again.exit_code == 0, again.output
    assert "ifd: 6 of 6 rows computed (6 now, 0 reused); 18 of their 18 requests answered by the on-disk cache" in \
        " ".join(again.output.split()), again.output


ONE_WORD = ["Yes.", "No.", "Maybe.", "Sure.", "Never.", "OK."]
LONG_REPLIES = [conv(("Spell the word cat, then the word dog.", "C-A-T, then D-O-G.")),
                conv(("Tell me about rain.", "Rain falls from clouds when droplets grow heavy enough; it waters crops, "
                      "fills rivers and refills the ground water that wells draw on."))]


def tied_rows(n: int, longer: list) -> list:
    """``n`` rows whose requests tie in length (same-length questions, one-token replies) and the row ``longer``, whose
    response alone is about as long as the short rows' conditioned requests."""
    return [conv((f"Answer in one word, number {i}.", ONE_WORD[i])) for i in range(n)] + [longer]


def by_id(ws, column):
    return dict(zip(ws.ids, ws.column(column), strict=True))


def test_ifd_values_do_not_depend_on_the_order_of_the_pool_file(tiny_model, tmp_path):
    """Before: requests of equal length kept the order they came in, and ws.apply hands small pools over in file order,
    so a reordered pool file moved tied requests between batches (a batch of 2 or of 1): 1 of 5 rows' ifd differed in
    its last digits in the first pool here (2 of 7 in the second with 2 torch threads). Ties are broken by the
    request's cache key now."""
    for pool, (n, longer, max_batch) in enumerate(((4, LONG_REPLIES[0], 2), (6, LONG_REPLIES[1], 3))):
        rows = tied_rows(n, longer)
        stored = []
        for name, order in (("file", rows), ("reversed", rows[::-1]), ("shuffled", rows[1::2] + rows[::2])):
            (tmp_path / f"{name}{pool}").mkdir()
            ws = workspace(tmp_path / f"{name}{pool}", order)
            ws.apply(IFD(tiny_model, dtype="float32", max_batch=max_batch), progress=False)
            stored.append({c: by_id(ws, c) for c in ("ifd", "ifd_loss_conditioned", "ifd_loss_alone")})
        assert stored[1] == stored[0] and stored[2] == stored[0]  # exact floats


def test_perplexity_is_the_same_alone_or_after_ifd_in_the_workspace(tiny_model, tmp_path):
    """Before: IFD batched its conditioned requests with its responses-alone, and perplexity then read those conditioned
    values from the cache, so a row's perplexity depended on whether IFD ran first (1 of 5 rows differed here). The
    two kinds of request are batched apart now: a conditioned request has the same batch-mates whichever signal asks."""
    rows = tied_rows(4, LONG_REPLIES[1])
    (tmp_path / "alone").mkdir()
    (tmp_path / "after").mkdir()
    alone, after = workspace(tmp_path / "alone", rows), workspace(tmp_path / "after", rows)
    alone.apply(Perplexity(tiny_model, dtype="float32", max_batch=2), progress=False)
    ifd = IFD(tiny_model, dtype="float32", max_batch=2)
    after.apply(ifd, progress=False)
    ppl = Perplexity(engine=ifd.engine)
    passes = ifd.engine.stats["forward_passes"]
    after.apply(ppl, progress=False)
    assert ifd.engine.stats["forward_passes"] == passes  # answered by IFD's cached conditioned requests
    assert by_id(after, "perplexity") == by_id(alone, "perplexity")


def test_the_reference_tuning_bar_is_curates_own(tiny_model, tmp_path, monkeypatch, capsys):
    """It was tqdm.auto's: CURATE_PROGRESS=0 left it on, and a log got carriage-return redraws, not lines."""
    from curate.signals.lora import train_adapter

    step = Learnability(CONVERSATIONS[:3], tiny_model, dtype="float32", lora=LoraConfig(steps=2, lr=1e-2, batch=2))
    for folder, setting in (("off", "0"), ("on", "1")):
        monkeypatch.setenv("CURATE_PROGRESS", setting)
        (tmp_path / folder).mkdir()
        train_adapter(step.engine.model_dir, step.reference_requests, step.lora, tmp_path / folder, progress=True)
        err = capsys.readouterr().err
        if setting == "0":
            assert "tuning the reference" not in err, err
        else:
            ours = [line for line in err.split("\n") if "tuning the reference" in line]  # transformers' bar aside
            assert ours and all("\r" not in line for line in ours), repr(err)
