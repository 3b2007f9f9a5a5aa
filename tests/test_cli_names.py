"""One concept, one option name on every command (the 0.2 spellings kept as aliases), every CLI default read from
curate.defaults, and refusals that name the flag a command-line user typed beside the Python keyword."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

import numpy as np
import pytest
import typer

import curate.defaults
from curate.cli import app
from curate.errors import CurateError
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl


def _command(*path: str) -> Any:  # a click Command (click comes with typer; curate declares typer)
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _param(path: tuple[str, ...], name: str) -> Any:
    return next(p for p in _command(*path).params if p.name == name)


# (command, its parameter, the flags it answers to: the new name first, then the earlier spelling a script may use)
ALIASES = [
    (("train-scorer",), "name", ("--column", "--name")),  # the column it writes, as score/signal/distil call it
    (("distil",), "label_column", ("--target", "--label-column")),  # the judge column learnt, as train-scorer's
    (("distil",), "n", ("--initial-labels", "-n")),
    (("plan",), "order_by", ("--sort-by", "--order-by")),  # as run and select call the ordering
    (("plan",), "model", ("--model", "-m")),
    (("signal",), "model", ("--model", "-m")),
    (("train", "run"), "model", ("--model", "-m")),
    (("train", "model"), "model", ("--model", "-m")),
    (("train", "model"), "out", ("--out", "-o")),
]


@pytest.mark.parametrize(("path", "name", "flags"), ALIASES, ids=[f"{' '.join(p)} {f[0]}" for p, _, f in ALIASES])
def test_one_concept_has_one_name_and_the_old_spelling_still_works(path, name, flags):
    """train-scorer wrote its column with --name where score/signal/distil say --column; distil learnt --label-column
    where train-scorer says --target; plan ordered by --order-by where run/select say --sort-by; -m and -o were
    missing where a model or an output folder is taken. Each flag, new or old, sets the same parameter."""
    param = _param(path, name)
    assert param.opts[0] == flags[0] and set(flags) <= set(param.opts + param.secondary_opts)
    for flag in flags:
        args = ["WS", flag, "x"] + (["--selection", "s"] if path == ("train", "model") else [])
        args += ["--out", "o"] if path == ("train", "model") and name != "out" else []
        args += ["--target", "t"] if path == ("distil",) and name != "label_column" else []
        args += ["--sort-by", "q"] if path == ("plan",) and name != "order_by" else []
        args += ["--kind", "ifd"] if path == ("signal",) else []
        args += ["--out", "o", "--labels", "l"] if path == ("train-scorer",) else []
        if name == "n":
            args[2] = "7"
        ctx = _command(*path).make_context(path[-1], list(args))  # click consumes the list
        assert str(ctx.params[name]) == args[2], (flag, ctx.params)


def test_distils_feature_column_help_is_a_sentence_without_train_scorers_ridge_prefix():
    """distil reused train-scorer's help: 'a numeric column...' began lowercase (train-scorer prefixes 'ridge: ')."""
    assert _param(("distil",), "feature_columns").help.startswith("A numeric column read as one more feature")
    assert _param(("train-scorer",), "feature_columns").help.startswith("ridge: a numeric column")


@pytest.fixture
def scored_ws(tmp_path):
    from curate.session import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(200)]))
    ws.add_column("quality", list(np.linspace(0, 1, 200)), {"kind": "test"})
    return ws


def test_plan_json_dash_is_standard_output_as_exports_out_dash(scored_ws, tmp_path):
    """`curate plan --json -` wrote a file literally named '-' in the working folder, where `export --out -` writes
    to standard output: now the JSON alone goes to stdout (parseable in a pipe), the table to stderr."""
    proc = curate_in_process("plan", scored_ws.path, "--sort-by", "quality", "--epochs", "0.05", "--json", "-",
                             cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "-").exists()
    plan = json.loads(proc.stdout)
    assert plan["keep_rows"] == 20 and len(plan["curve"]) == 10
    assert "keep 20 rows" in proc.stderr and "<- keep" in proc.stderr
    old = curate_in_process("plan", scored_ws.path, "--order-by", "quality", "--epochs", "0.05", cwd=tmp_path)
    assert old.returncode == 0 and "keep 20 rows" in old.stdout  # the 0.2 spelling still plans


# (command, parameter, the constant of curate.defaults its default is)
DEFAULTS = [
    (("evol",), "seeds", "EVOL.seeds"),
    (("evol",), "kind", "EVOL.kind"),
    (("tags",), "top", "TAG.top"),
    (("load",), "on_error", "POOL.on_error"),
    (("load",), "format", "POOL.format"),
    (("run",), "format", "POOL.format"),
    (("run",), "out", "RUN.out"),
    (("run",), "engine", "RUN.engine"),
]


def _constant(dotted: str):
    config, field = dotted.split(".")
    return getattr(getattr(curate.defaults, config), field)


@pytest.mark.parametrize(("path", "name", "constant"), DEFAULTS, ids=[f"{p[0]} {n}" for p, n, _ in DEFAULTS])
def test_every_cli_default_is_the_constant_of_curate_defaults(path, name, constant):
    """evol --seeds 20 / --kind complexity, tags --top 25, load --on-error raise, --format auto, run --out curate-run
    / --engine single were literals in the CLI: a default changed in curate.defaults left the command behind. The
    help shows the constant (a string default of typer's is shown as given)."""
    constant = _constant(constant)
    param = _param(path, name)
    assert str(param.default) == str(constant)
    ctx = _command(*path).make_context(path[-1], ["WS"] if path != ("run",) else ["SRC"], resilient_parsing=True)
    shown = " ".join(param.get_help_record(ctx)[1].split())
    assert re.search(rf"\[default: {re.escape(str(constant))}[;\]]", shown), shown


def test_the_python_api_reads_the_same_defaults():
    """ws.load and curate.pools, run_evol / sample_seeds / build_labels: the keyword defaults are the CLI's."""
    from curate import pools
    from curate.evol.labels import build_labels
    from curate.evol.run import run_evol, sample_seeds
    from curate.session import Workspace

    for fn in (Workspace.load, pools.read, pools.check_read_options):
        params = inspect.signature(fn).parameters
        assert (params["format"].default, params["on_error"].default) == (_constant("POOL.format"),
                                                                            _constant("POOL.on_error"))
    for fn in (run_evol, sample_seeds, build_labels):
        assert inspect.signature(fn).parameters["kind"].default == _constant("EVOL.kind")


def test_refusals_name_the_flag_a_command_line_user_typed():
    """'on_error must be ...', 'sort_by 'bogus'', 'text must be ...' named the Python keyword alone, which a user of
    `curate load --on-error` or `curate run --sort-by` never typed."""
    from curate.pools import check_read_options
    from curate.rows import row_text
    from curate.select.sort_key import scores_of

    cases = ((lambda: check_read_options(on_error="bogus"), "on_error= (CLI: --on-error) must be 'raise' or 'skip'"),
             (lambda: check_read_options(format="bogus"), "format= (CLI: --format) must be 'auto' or one of"),
             (lambda: row_text([{"role": "user", "content": "hi"}], "bogus", "text= (CLI: --text)"),
              "text= (CLI: --text) must be one of"),
             (lambda: row_text([{"role": "user", "content": "hi"}], "bogus"), "text= must be one of"),
             (lambda: scores_of("bogus"), "sort_by= (CLI: --sort-by) 'bogus': the product of DEITA scores"))
    for call, words in cases:
        with pytest.raises(CurateError) as err:
            call()
        assert words in str(err.value)
