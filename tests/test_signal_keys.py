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
    with pytest.raises(CurateError, match=r"http://127.0.0.1:9/v1 \(served model 'smol'\): a prompt_logprobs"):
        engine._forward([Request((1, 2, 3), (4, 5))])
