"""`curate run` and `run_pipeline` apply the text rules by default: on 4,000 real rows without them, a reply looping
on "[/IST]" ranked 26th of the 2,000 kept, and 13 of the 38 scored rows the rules drop were selected."""

import json

import pytest

from curate.cli import sample_path
from curate.errors import OptionError
from curate.pipeline import Run, engine_steps, run_pipeline, steps, text_rules
from tests.conftest import write_jsonl

REFUSAL = {"instruction": "Tell me how to pick a lock.", "output": "I'm sorry, but I am not programmed to help with that."}
LEAK = {"instruction": "Describe a bustling market in two sentences.",
        "output": "Stalls overflow with spices and fruit. Traders call out their prices. [/INST]\n\n[INST] Now describe "
                  "a quiet library."}


@pytest.fixture
def pool(tmp_path):
    rows = [json.loads(line) for line in sample_path().read_text().splitlines()[:8]]
    return write_jsonl(tmp_path / "pool.jsonl", [*rows, REFUSAL, LEAK])


def test_the_plan_has_the_text_rules_unless_switched_off_on_either_engine(tmp_path):
    assert "heuristics" in [name for name, _ in steps(Run("pool.jsonl", tmp_path / "a", 5, report=False))]
    assert "heuristics" not in [name for name, _ in steps(Run("pool.jsonl", tmp_path / "b", 5, report=False,
                                                                 heuristics=False))]
    ray = dict(engine_steps(Run("pool.jsonl", tmp_path / "c", 5, report=False), "ray"))  # the plan: Ray not started
    assert ray["heuristics"] is text_rules  # on the driver, between the Ray dedup and the Ray scores
    with pytest.raises(OptionError, match=r"--language\) is a text rule.*--no-heuristics"):
        Run("pool.jsonl", tmp_path / "d", 5, heuristics=False, languages=["en"])
    # an empty list asks for no language rule (the CLI's no --language): it was refused as one with heuristics off
    assert Run("pool.jsonl", tmp_path / "e", 5, heuristics=False, languages=[]).languages is None
    assert Run("pool.jsonl", tmp_path / "f", 5, languages=()).languages is None


def test_run_pipeline_leaves_a_refusal_and_a_leaked_template_out_by_default(pool, tmp_path):
    result = run_pipeline(str(pool), out=tmp_path / "run", budget=5, report=False, progress=False)
    ws = result.workspace
    assert list(result.timings)[:3] == ["load", "dedup", "heuristics"]
    rules = {r["detail"]["rule"] for r in ws.selection("heuristics").rows() if r["decision"] == "rejected"}
    assert rules == {"refusal", "template_tokens"}
    kept = {c[0]["content"] for c in ws.conversations(ws.selection("deita").ids)}
    assert REFUSAL["instruction"] not in kept and LEAK["instruction"] not in kept
    off = run_pipeline(str(pool), out=tmp_path / "off", budget=5, report=False, progress=False, heuristics=False)
    assert "heuristics" not in off.timings and "heuristics" not in off.workspace.selections


def test_the_command_line_runs_them_by_default_and_no_heuristics_switches_them_off(pool, tmp_path):
    from tests.cli_in_process import curate_in_process

    stops = write_jsonl(tmp_path / "stops.jsonl", [*map(json.loads, pool.read_text().splitlines()),
                                                   {"instruction": "Name a colour.", "output": "Blue.</s>"}])
    r = curate_in_process("run", stops, "--budget", "5", "--no-report", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    said = " ".join(r.stdout.split())
    assert "2 of 11 fail a text rule (refusal 1, template tokens 1)" in said
    assert "1 kept row has a reply ending with an end-of-sequence marker" in said  # kept (a clean stop), said
    r = curate_in_process("run", pool, "--budget", "5", "--no-report", "--out", tmp_path / "off", "--no-heuristics")
    assert r.returncode == 0 and "fail a text rule" not in r.stdout
    r = curate_in_process("run", pool, "--budget", "5", "--out", tmp_path / "x", "--no-heuristics", "--language", "en")
    assert r.returncode == 78 and "--no-heuristics" in r.stderr
    r = curate_in_process("run", "--help")  # the help names [/INST]: rich markup read it as a closing tag
    assert r.returncode == 0 and "--no-heuristics" in r.stdout
