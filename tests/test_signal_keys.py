"""What names a signal's cached values: the vLLM server's model, the reference tuning's health, and the row value.

Each test here failed on the code before it: two vLLM servers of different models shared logprobs, a diverged LoRA
reference was saved and reused.
"""

from __future__ import annotations

import pytest

from curate.errors import CurateError
from curate.signals import Engine
from curate.signals.template import Request
from curate.signals.vllm import VllmEngine
from tests.fault_server import FaultServer
from tests.test_signals import smollm2_dir, tiny_model  # noqa: F401 (fixtures)


def test_vllm_engines_on_servers_of_different_models_keep_their_logprobs_apart(smollm2_dir):  # noqa: F811
    """Before: both engines keyed requests by the tokenizer folder and dtype only, so a server of SmolLM2-1.7B
    answered from the cache of one of SmolLM2-135M (same tokenizer); the model a server serves is in the key now."""
    request = Request((1, 2, 3), (4, 5))
    with FaultServer(models=("small",)) as a, FaultServer(models=("large", "small")) as b:
        small = VllmEngine(base_url=a.base_url, served_model="small")
        large = VllmEngine(base_url=b.base_url, served_model="large")
        small_again = VllmEngine(base_url=b.base_url, served_model="small")  # same model, another address
        assert small.key(request) != large.key(request)
        assert small.fingerprint != large.fingerprint and small.fingerprint.endswith(":vllm")
        assert small_again.fingerprint == small.fingerprint  # a restarted server on another port keeps its cache
        assert small.describe()["served"] == {"id": "small", "root": None, "parent": None, "max_model_len": None}
        with pytest.raises(CurateError, match=r"serves no model named 'huge' \(it serves: small\)"):
            _ = VllmEngine(base_url=a.base_url, served_model="huge").fingerprint
    # the packaged server this engine starts itself keeps its fingerprint (existing caches stay valid)
    assert VllmEngine().fingerprint == f"{Engine(smollm2_dir, dtype='auto').fingerprint}:vllm"


def test_a_vllm_server_that_does_not_answer_is_an_error_naming_it(smollm2_dir):  # noqa: F811
    """Before: openai's bare "Connection error." named neither the address nor the model."""
    engine = VllmEngine(base_url="http://127.0.0.1:9/v1", served_model="smol")
    with pytest.raises(CurateError, match=r"http://127.0.0.1:9/v1 \(served model 'smol'\): listing its models"):
        _ = engine.fingerprint
    engine.served = {"id": "smol"}  # as if it had answered before going away
    engine._tokenizer_checked = True  # (its tokenizer check, too)
    with pytest.raises(CurateError, match=r"http://127.0.0.1:9/v1 \(served model 'smol'\): a prompt_logprobs"):
        engine._forward([Request((1, 2, 3), (4, 5))])


def test_a_diverged_reference_tuning_is_an_error_and_a_diverged_cached_adapter_is_refused(tiny_model, tmp_path):  # noqa: F811
    """Before: a LoRA reference tuned at a learning rate that blew it up (loss NaN) was saved to the cache and every
    later learnability run merged its NaN weights (audit p3)."""
    import json

    from curate.signals import Learnability, LoraConfig
    from curate.signals.lora import META_FILE, tuned_adapter
    from tests.test_signals import CONVERSATIONS

    step = Learnability(CONVERSATIONS[:3], tiny_model, dtype="float32", lora=LoraConfig(steps=6, lr=1e6, batch=2))
    e = step.engine
    with pytest.raises(CurateError, match=r"reference LoRA tuning diverged: .*lr 1000000\.0"):
        tuned_adapter(e.model_dir, step.reference_requests, step.lora, tmp_path, pad_id=e.tokenizer.pad_token_id)
    assert not [p for p in (tmp_path / "signals" / "lora").iterdir() if p.is_dir()]  # nothing kept as an adapter
    good = Learnability(CONVERSATIONS[:3], tiny_model, dtype="float32", lora=LoraConfig(steps=2, lr=1e-2, batch=2))
    adapter = tuned_adapter(e.model_dir, good.reference_requests, good.lora, tmp_path, pad_id=e.tokenizer.pad_token_id)
    info = json.loads((adapter.folder / META_FILE).read_text())
    info["meta"]["loss_last_steps"] = float("nan")  # as the old code saved a diverged tuning
    (adapter.folder / META_FILE).write_text(json.dumps(info))
    with pytest.raises(CurateError, match=rf"{adapter.folder}: a diverged reference adapter .*remove this folder"):
        tuned_adapter(e.model_dir, good.reference_requests, good.lora, tmp_path, pad_id=e.tokenizer.pad_token_id)


LONG_TURN = [{"role": "user", "content": "Repeat after me: " + "alpha beta " * 700},
             {"role": "assistant", "content": "alpha beta " * 700}]


def test_vllm_engines_cap_max_length_at_the_servers_context(smollm2_dir):  # noqa: F811
    """Before: max_length was capped at the model folder's position window only (8,192 for SmolLM2), so with
    max_length=4096 a turn longer than the server's 2,048-token context went to it whole, and vLLM's HTTP 400 stopped
    the run; now the turn is truncated to fit, as the transformers engine truncates at the position window."""
    from curate.defaults import BACKEND
    from curate.rows import turns

    packaged = VllmEngine(max_length=4096)  # the packaged server: its context is known without starting it
    assert packaged.max_length == BACKEND.local_max_model_len - 1  # one token left for the completion
    assert VllmEngine(max_length=512).max_length == 512
    remote = VllmEngine(base_url="http://127.0.0.1:9/v1", served_model="smol", max_length=4096)
    remote.served = {"id": "smol", "root": None, "parent": None, "max_model_len": 64}  # as /v1/models says it
    assert remote.max_length == 63
    (plan,) = remote.prompter.plan(turns(LONG_TURN))
    assert plan.truncated and len(plan.conditioned.context) + len(plan.conditioned.target) <= 63
    remote.served["max_model_len"] = None  # a server that does not say: the length asked for
    assert remote.max_length == 4096


@pytest.mark.llm
def test_a_turn_longer_than_the_vllm_servers_context_is_truncated_not_refused(local_llm, tmp_path):
    from curate.signals import IFD
    from tests.test_signals import workspace

    ws = workspace(tmp_path, [LONG_TURN])
    engine = VllmEngine(base_url=local_llm.base_url, served_model=local_llm.model, max_length=4096)
    result = ws.apply(IFD(engine=engine), progress=False)  # before: openai.BadRequestError (2,836 prompt tokens)
    assert result.failed == 0 and ws.column("ifd_truncated") == [[True]]
    assert ws.row_values("ifd")[0] is not None and result.provenance["max_length"] == 2047


@pytest.mark.llm
def test_a_vllm_server_whose_tokenizer_is_not_the_model_folders_is_refused_before_any_request(
        local_llm, smollm2_dir, tmp_path):  # noqa: F811
    """Before: the request ids came from ``model_dir``'s tokenizer (the packaged SmolLM2's when none was given, as
    the error for a model_dir without base_url advised) whatever model the server served, so a server of another
    vocabulary scored other text in silence; its tokenizer must now encode a probe text as ours does."""
    import shutil

    from curate.embed.encoder import default_model_path
    from curate.signals import IFD
    from tests.test_signals import CONVERSATIONS, workspace

    other = tmp_path / "bert-tokenizer"  # a model folder whose tokenizer is MiniLM's WordPiece, not SmolLM2's BPE
    other.mkdir()
    shutil.copy(smollm2_dir / "config.json", other / "config.json")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (default_model_path() / name).exists():
            shutil.copy(default_model_path() / name, other / name)
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant: "
    ws = workspace(tmp_path, [CONVERSATIONS[2]])
    engine = VllmEngine(other, base_url=local_llm.base_url, served_model=local_llm.model, chat_template=template,
                        alone_start="[CLS]")
    with pytest.raises(CurateError, match=r"its tokenizer encodes text otherwise than the one of .*bert-tokenizer"):
        ws.apply(IFD(engine=engine), progress=False)
    assert engine.stats["forward_passes"] == 0 and not ws.has_column("ifd")
    VllmEngine(smollm2_dir, base_url=local_llm.base_url, served_model=local_llm.model).check_tokenizer()  # its own
