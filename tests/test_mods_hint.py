"""MoDS' commands have one source: `curate train model` printed max_answer_score=3.5 and an LLM judge command while
README's MoDS section ran 3.2 and the shipped scorer; both now write SELECT.mods_max_answer_score and the scorer."""

import re
from pathlib import Path

from curate.cli.train import mods_next_steps
from curate.defaults import SELECT

README = Path(__file__).resolve().parents[1] / "README.md"


def _mods_block() -> str:
    """README's MoDS section's commands, a continued line joined, comments and runs of spaces dropped."""
    section = README.read_text(encoding="utf-8").split("## What a model still gets wrong: MoDS necessity")[1]
    block = section.split("```bash\n")[1].split("```")[0].replace("\\\n", " ")
    return "\n".join(" ".join(line.split("#")[0].split()) for line in block.splitlines())


def test_readme_runs_the_commands_curate_train_model_prints():
    commands = [command for _, command in mods_next_steps("ws", "seed", "seed-model", "good")]
    lines = _mods_block().splitlines()
    for command in commands:
        assert command in lines, (command, lines)
    assert f"--param max_answer_score={SELECT.mods_max_answer_score:g} " in commands[-1]
    said = re.findall(r"max_answer_score=([0-9.]+)", README.read_text(encoding="utf-8"))
    assert said and {float(v) for v in said} == {SELECT.mods_max_answer_score}, said


def test_the_seed_chosen_from_no_selection_gives_no_from():
    select = mods_next_steps("ws", "seed", "m", None)[-1][1]
    assert "--from" not in select and "--param seed=seed " in select
