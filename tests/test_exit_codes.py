"""Every command exits by what failed (curate.exit_codes), not `curate run` alone: before 0.2.0's change `load`,
`score`, `tag`, `evol` and the rest exited 1 on any failure, so a scheduler could not tell a server that is down (75,
retry later) from a wrong API key (78) or a malformed input line (65). Judges talk to the fault-injecting server."""

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from curate.exit_codes import EXIT_CONFIG, EXIT_DATAERR, EXIT_FAILURE, EXIT_TEMPFAIL
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer

JUDGE = ("--model", "fault", "--max-retries", "0")


def _cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "CURATE_TEST_WRONG_KEY": "wrong"}
    env.pop("OPENAI_API_KEY", None)
    return curate_in_process(*args, env=env)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def _rows(n: int, marker: str = "") -> list[dict]:
    return [{"instruction": f"Question {i}: explain topic {i} briefly {marker}".strip(),
             "output": f"Answer {i}: words about topic {i} and more"} for i in range(n)]


@pytest.fixture
def ws(tmp_path) -> Path:
    loaded = _cli("load", write_jsonl(tmp_path / "pool.jsonl", _rows(4)), "-w", tmp_path / "ws")
    assert loaded.returncode == 0, loaded.stderr
    return tmp_path / "ws"


def test_load_of_a_malformed_line_or_a_missing_file_exits_65_and_a_refused_option_78(tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", _rows(3))
    broken = tmp_path / "broken.jsonl"
    broken.write_text(pool.read_text() + "{not json\n")
    malformed = _cli("load", broken, "-w", tmp_path / "w1")
    assert malformed.returncode == EXIT_DATAERR and "line 4: malformed JSON" in _error_line(malformed)
    missing = _cli("load", tmp_path / "nope.jsonl", "-w", tmp_path / "w2")
    assert missing.returncode == EXIT_DATAERR and "no such file" in _error_line(missing)
    option = _cli("load", pool, "-w", tmp_path / "w3", "--on-error", "bogus")
    assert option.returncode == EXIT_CONFIG and "on_error= (CLI: --on-error) must be" in _error_line(option)


def test_score_and_tag_exit_75_when_the_server_is_down_and_78_when_it_refuses_the_key_or_the_model(ws):
    down = FaultServer()  # nothing listens on its port until start()
    for command in (("score", ws, "--judge", "quality"), ("tag", ws)):
        proc = _cli(*command, "--base-url", down.base_url, *JUDGE)
        assert proc.returncode == EXIT_TEMPFAIL and "did not answer" in _error_line(proc), (command, proc.stderr)
    with FaultServer(api_key="right") as srv:
        for command in (("score", ws, "--judge", "quality"), ("tag", ws)):
            proc = _cli(*command, "--base-url", srv.base_url, "--api-key-env", "CURATE_TEST_WRONG_KEY", *JUDGE)
            assert proc.returncode == EXIT_CONFIG and "HTTP 401" in _error_line(proc), (command, proc.stderr)
    with FaultServer() as srv:
        proc = _cli("score", ws, "--judge", "quality", "--base-url", srv.base_url + "/nope", *JUDGE)
        assert proc.returncode == EXIT_CONFIG and "HTTP 404" in _error_line(proc), proc.stderr


def test_score_exits_75_after_5xx_and_timeouts_and_1_when_max_cost_left_rows_unsent(tmp_path):
    with FaultServer(hang_seconds=3.0) as srv:
        for marker in ("[always500]", "[timeoutx5]"):
            folder = tmp_path / marker.strip("[]")
            assert _cli("load", write_jsonl(tmp_path / "p.jsonl", _rows(3, marker)), "-w", folder).returncode == 0
            proc = _cli("score", folder, "--judge", "quality", "--base-url", srv.base_url, *JUDGE, "--timeout", "1")
            assert proc.returncode == EXIT_TEMPFAIL and "3 rows not scored" in _error_line(proc), (marker, proc.stderr)
        folder = tmp_path / "budget"
        assert _cli("load", write_jsonl(tmp_path / "b.jsonl", _rows(3)), "-w", folder).returncode == 0
        proc = _cli("score", folder, "--judge", "quality", "--base-url", srv.base_url, "--model", "gpt-4o-mini",
                    "--max-cost", "0")  # a priced model (curate's table): the first request is over the cap
        assert proc.returncode == EXIT_FAILURE and "max_cost" in _error_line(proc), proc.stderr


def test_the_batch_backend_exits_as_the_online_one_when_refused_down_or_unpriced(ws, monkeypatch):
    """openai-batch raised a plain CurateError for everything: a wrong key, a server down and max_cost on an
    unpriced model all exited 1, where the online backend exits 78, 75 and 78. The 401 names the model and the URL
    in one wording for both backends."""
    import curate.llm.batch as batch_backend

    # one retry, not BACKEND's 6: the client's backoff on the server down was 20 s of this test, the same exit after
    monkeypatch.setattr(batch_backend, "BACKEND", dataclasses.replace(batch_backend.BACKEND, max_retries=1))
    batch = ("score", ws, "--judge", "quality", "--backend", "openai-batch")
    down = FaultServer()
    proc = _cli(*batch, "--base-url", down.base_url, "--model", "gpt-4o-mini")
    assert proc.returncode == EXIT_TEMPFAIL and "Connection error" in _error_line(proc), proc.stderr
    proc = _cli(*batch, "--base-url", down.base_url, "--model", "unpriced-model", "--max-cost", "1")
    assert proc.returncode == EXIT_CONFIG and "no batch price" in _error_line(proc), proc.stderr
    with FaultServer(api_key="right") as srv:
        said = {}
        for backend, retries in (("openai-batch", ()), ("openai", ("--max-retries", "0"))):
            proc = _cli("score", ws, "--judge", "quality", "--backend", backend, "--base-url", srv.base_url,
                        "--model", "gpt-4o-mini", "--api-key-env", "CURATE_TEST_WRONG_KEY", *retries)
            said[backend] = _error_line(proc)
            assert proc.returncode == EXIT_CONFIG, (backend, proc.stderr)
            assert f"the API key (model 'gpt-4o-mini' at {srv.base_url})" in said[backend], said


def test_rows_left_unanswered_under_keep_failed_exit_1_not_retry_later(ws):
    """--keep-failed never sends the stored transient failures again, yet the error said 75 (retry later): a
    scheduler re-ran the same command forever, each run sending nothing (review)."""
    down = FaultServer()
    for command in (("score", ws, "--judge", "quality"), ("tag", ws)):
        assert _cli(*command, "--base-url", down.base_url, *JUDGE).returncode == EXIT_TEMPFAIL
    with FaultServer() as srv:
        for command in (("score", ws, "--judge", "quality"), ("tag", ws)):
            proc = _cli(*command, "--base-url", srv.base_url, *JUDGE, "--keep-failed")
            assert proc.returncode == EXIT_FAILURE and "without --keep-failed" in _error_line(proc), proc.stderr
        assert srv.total == 0


def test_evol_exits_78_when_the_server_refuses_the_key(ws):
    with FaultServer(api_key="right") as srv:
        proc = _cli("evol", ws, "--seeds", "2", "--steps", "1", "--base-url", srv.base_url, "--api-key-env",
                    "CURATE_TEST_WRONG_KEY", *JUDGE)
    assert proc.returncode == EXIT_CONFIG and "HTTP 401" in _error_line(proc), proc.stderr


def test_what_a_workspace_lacks_exits_78_naming_it_and_the_command_that_makes_it(ws, tmp_path):
    """A name the workspace does not hold (no workspace at the path, no selection, column or label set of that name,
    no tags yet) exited 1, the code of a crash or a damaged workspace, so a scheduler could not tell a typo or a step
    not run yet from a bug; `--selection nope` said `have []` and no way to make one."""
    kept = _cli("select", ws, "--method", "random", "--budget", "2", "--name", "kept")
    assert kept.returncode == 0, kept.stderr
    for args, words in (
            (("info", tmp_path / "nope"), f"not a curate workspace (no manifest.json); make one: curate load SOURCE "
                                          f"--workspace {tmp_path / 'nope'}"),
            (("export", ws, "--selection", "nope", "--out", tmp_path / "o.jsonl"),
             "no selection 'nope' in this workspace; selections here: kept"),
            (("report", ws, "--selection", "nope", "--out", tmp_path / "r.html"), "no selection 'nope'"),
            (("tags", ws), f"no derived column holds normalised InsTag tags yet: tag the pool first (curate tag {ws}"),
            (("select", ws, "--method", "top_k", "--sort-by", "nope", "--budget", "2", "--name", "a"),
             "no column 'nope'"),
            (("train-scorer", ws, "--labels", "nope", "--out", tmp_path / "sc"), "no label set 'nope'")):
        proc = _cli(*args)
        assert proc.returncode == EXIT_CONFIG and words in _error_line(proc), (args, proc.stderr)
    pool = write_jsonl(tmp_path / "p.jsonl", _rows(2))
    for args in (("load", pool, "-w", pool), ("info", pool)):  # load's OSError "Not a directory" exited 1
        proc = _cli(*args)
        assert proc.returncode == EXIT_CONFIG and f"{pool}: a file, not a curate workspace" in _error_line(proc), args
    bare = tmp_path / "bare"
    assert _cli("load", pool, "-w", bare).returncode == 0
    none_yet = _cli("export", bare, "--selection", "nope", "--out", tmp_path / "o.jsonl")
    said = _error_line(none_yet)
    assert none_yet.returncode == EXIT_CONFIG and "selections here: none yet (make one: curate select)" in said, said


def test_train_scorer_with_too_few_labels_or_groups_exits_65_saying_what_to_do(tmp_path):
    """Too few labels for the folds, or too few groups after the hold-out, raised a plain ScorerError: exit 1, as a
    crash; the labels are short (the input data), and the line says to label more rows or give fewer folds."""
    from curate import Workspace

    labelled = tmp_path / "labelled"
    rows = [{**row, "topic": f"t{i % 2}"} for i, row in enumerate(_rows(12))]
    assert _cli("load", write_jsonl(tmp_path / "p12.jsonl", rows), "-w", labelled).returncode == 0
    provenance = {"kind": "judge", "judge": "q", "reads": ["instruction", "response"]}
    Workspace(labelled).add_column("judge_q", [[float(i % 4 + 1)] for i in range(12)], provenance)
    Workspace(labelled).add_column("judge_few", [[float(i % 4 + 1)] if i < 4 else None for i in range(12)],
                                   provenance)
    few = _cli("train-scorer", labelled, "--target", "judge_few", "--out", tmp_path / "sc")
    said = _error_line(few)
    assert few.returncode == EXIT_DATAERR and "has 4 usable numeric labels; need at least 10" in said, said
    assert "label more rows (curate score" in said and "--folds" in said, said
    groups = _cli("train-scorer", labelled, "--target", "judge_q", "--group-by", "topic", "--out", tmp_path / "sc")
    said = _error_line(groups)
    assert groups.returncode == EXIT_DATAERR and "12 labels in 2 groups" in said and "fewer folds" in said, said
    assert not (tmp_path / "sc").exists()
    distil = _cli("distil", labelled, "--label-column", "judge_q", "-n", "10", "--holdout-n", "5")
    said = _error_line(distil)
    assert distil.returncode == EXIT_DATAERR and "not more than --holdout-n + -n = 5 + 10 = 15" in said, said
    zero = _cli("distil", labelled, "--label-column", "judge_q", "-n", "0")  # a setting refused, not the data
    assert zero.returncode == EXIT_CONFIG and "n must be a whole number >= 1, not 0" in _error_line(zero), zero.stderr


def test_an_out_path_or_a_signal_reference_refused_exits_78(ws, tmp_path):
    """An --out no export or report can take (a suffix no export writes, a folder holding other files, a folder
    where the report's file goes) and --reference with ifd (or learnability without it) raised a plain
    WorkspaceError or CurateError: exit 1, as a crash, though each is a value the user gave."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    for args, words in ((("export", ws, "--out", tmp_path / "o.txt"), "export to .jsonl or .json"),
                        (("export", ws, "--out", notes), "a folder holding other files than a datasets export"),
                        (("report", ws, "--out", notes), "a folder, where the report's HTML file is to be written"),
                        (("signal", ws, "--kind", "ifd", "--reference", "kept"),
                         "a reference selection is for learnability; ifd has no reference model"),
                        (("signal", ws, "--kind", "learnability"), "learnability needs a reference selection")):
        proc = _cli(*args)
        assert proc.returncode == EXIT_CONFIG and words in _error_line(proc), (args, proc.stderr)
    assert (notes / "todo.txt").read_text() == "mine" and sorted(p.name for p in notes.iterdir()) == ["todo.txt"]


@pytest.mark.parametrize("args, said", [
    (("select", "{ws}", "--method", "nope", "--name", "a"), "unknown selection method 'nope'"),
    (("select", "{ws}", "--method", "threshold", "--sort-by", "output_length", "--quantile", "7", "--name", "a"),
     "quantile 7.0 is not a number in [0, 1]"),
    (("select", "{ws}", "--method", "top_k", "--budget", "-1", "--name", "a"), "budget must be a whole number"),
    (("select", "{ws}", "--method", "threshold", "--param", "min_score=x", "--name", "a"), "must be a number"),
    (("select", "{ws}", "--method", "top_k", "--budget", "1", "--sort-by", "quality+", "--name", "a"),
     "is not an expression"),
    (("export", "{ws}", "--format", "chatml", "--out", "{ws}/../o.jsonl"), "export format 'chatml'"),
    (("score", "{ws}", "--scorer", "default", "--column", "q"), "--column names one column"),
    (("select", "{ws}", "--method", "semantic", "--param", "index=bogus", "--name", "a"),
     "semantic: index must be 'kmeans' or 'hnsw' or 'exact', not 'bogus' (--param index=...)"),
])
def test_a_selector_export_or_score_option_value_refused_exits_78(ws, args, said):
    """These exited 1 as any failure: the selectors' and export's checks of a value raised a plain CurateError."""
    proc = _cli(*(a.format(ws=ws) for a in args))
    assert proc.returncode == EXIT_CONFIG and said in _error_line(proc), (proc.returncode, proc.stderr)


def test_an_export_format_the_rows_cannot_be_written_in_exits_78(tmp_path):
    """`export --format alpaca` of a two-exchange row, or `--format messages --column format`, exited 1 ("any other
    failure", as a damaged workspace): each is a value the user gave, refused for these rows; --format messages
    writes them."""
    chat = {"conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello"},
                              {"from": "human", "value": "And then?"}, {"from": "gpt", "value": "Then more"}]}
    assert _cli("load", write_jsonl(tmp_path / "chat.jsonl", [chat, *_rows(2)]), "-w", tmp_path / "w").returncode == 0
    for args, said in ((("--format", "alpaca"), "1 of 3 rows cannot be written as alpaca: row "),
                       (("--format", "messages", "--column", "format"), "column 'format': curate's own")):
        proc = _cli("export", tmp_path / "w", "--out", tmp_path / "o.jsonl", *args)
        assert proc.returncode == EXIT_CONFIG and said in _error_line(proc), (args, proc.stderr)
    assert not (tmp_path / "o.jsonl").exists()
    assert _cli("export", tmp_path / "w", "--out", tmp_path / "o.jsonl", "--format", "messages").returncode == 0


def test_a_scorer_folder_refused_exits_78_for_score_run_and_train_scorer(ws, tmp_path):
    """A --scorer, --init, --base or --out folder that cannot be used is an option's value refused, as --embed-model's
    missing folder is (78): each exited 1 (a plain ScorerError), and run's named no option."""
    from curate.session import Workspace

    missing = tmp_path / "no-scorer"
    score = _cli("score", ws, "--scorer", missing)
    assert score.returncode == EXIT_CONFIG and f"{missing}: not a saved scorer" in _error_line(score), score.stderr
    pool = write_jsonl(tmp_path / "run-pool.jsonl", _rows(4))
    run = _cli("run", pool, "--budget", "2", "--no-report", "--out", tmp_path / "run", "--scorer", f"quality={missing}")
    said = _error_line(run)
    assert run.returncode == EXIT_CONFIG and f"(--scorer quality=...): {missing}: not a saved scorer" in said, said
    labelled = tmp_path / "labelled"  # train-scorer reads its labels (10 at least) before --init and --base
    assert _cli("load", write_jsonl(tmp_path / "p12.jsonl", _rows(12)), "-w", labelled).returncode == 0
    Workspace(labelled).add_column("judge_q", [[float(i % 4 + 1)] for i in range(12)],
                                   {"kind": "judge", "judge": "q", "reads": ["instruction", "response"]})
    train = ("train-scorer", labelled, "--target", "judge_q")
    for args, words in ((("--out", tmp_path), "holds other files than a saved scorer"),
                        (("--out", tmp_path / "sc", "--kind", "cross-encoder", "--init", missing),
                         f"{missing}: not a saved scorer"),
                        (("--out", tmp_path / "sc", "--kind", "cross-encoder", "--base", missing),
                         f"base {missing}: the base model folder does not exist")):
        proc = _cli(*train, *args)
        assert proc.returncode == EXIT_CONFIG and words in _error_line(proc), (args, proc.stderr)


def test_a_missing_or_unreadable_target_file_of_decontaminate_or_dsir_exits_65_naming_it(ws, tmp_path):
    """A selector's target texts are input data, as a pool is: a malformed line of them already exited 65, a missing
    file exited 1 (a plain CurateError), a .txt not UTF-8 exited 1 with Python's words and no file named."""
    missing, folder = tmp_path / "evals.txt", tmp_path / "a-folder"
    folder.mkdir()
    not_utf8, blank = tmp_path / "latin1.txt", tmp_path / "blank.txt"
    not_utf8.write_bytes("first line\ncaf\xe9\n".encode("latin-1"))
    blank.write_text("\n  \n")
    decontaminate, dsir = ("--method", "decontaminate"), ("--method", "dsir", "--budget", "2")
    for method, target, words in ((decontaminate, missing, f"{missing}: file: no such file or folder (decontaminate"),
                                  (dsir, missing, f"{missing}: file: no such file (dsir: the target texts)"),
                                  (dsir, folder, f"{folder}: file: not a file (dsir"),
                                  (decontaminate, not_utf8, f"{not_utf8}: line 2: invalid UTF-8 at byte 14"),
                                  (dsir, not_utf8, f"{not_utf8}: line 2: invalid UTF-8 at byte 14"),
                                  (dsir, blank, f"{blank}: file: no target texts (dsir)")):
        proc = _cli("select", ws, *method, "--param", f"target={target}", "--name", "t")
        assert proc.returncode == EXIT_DATAERR and words in _error_line(proc), (method, target, proc.stderr)
    pool = write_jsonl(tmp_path / "run-pool.jsonl", _rows(4))
    run = _cli("run", pool, "--budget", "2", "--no-report", "--out", tmp_path / "run", "--decontaminate", missing)
    assert run.returncode == EXIT_DATAERR and f"{missing}: file: no such file" in _error_line(run), run.stderr
    assert not (tmp_path / "run").exists()  # named before the run's first step


def test_run_on_instructions_alone_without_sort_by_is_a_refused_setting_78(tmp_path):
    """The pool is valid input (instructions are selected by complexity alone): the default --sort-by is refused."""
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"Write a poem about {i}."} for i in range(4)])
    proc = _cli("run", pool, "--budget", "2", "--no-report", "--out", tmp_path / "run")
    assert proc.returncode == EXIT_CONFIG and "--sort-by complexity" in _error_line(proc), proc.stderr


def test_curate_help_names_the_exit_codes_table():
    proc = _cli("--help")
    said = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and "Exit codes:" in said and "75 the LLM server did not answer" in said
    assert "Every command exits by this table" in said


def test_a_budget_under_one_row_is_refused_alike_by_run_its_dry_run_and_select(ws, tmp_path):
    """`curate run --budget 0` exited 2 with typer's words ("must be >= 1") while `curate select --budget 0` exited 78
    with check_budget's: one rule, one message, one code now, before any step (the dry run's too)."""
    said = "budget must be a whole number of rows, at least 1 (--budget; budget= in Python), not 0"
    for args in (("run", "sample", "--out", tmp_path / "r", "--budget", "0"),
                 ("run", "sample", "--out", tmp_path / "r", "--budget", "0", "--dry-run", "--backend", "local"),
                 ("select", ws, "--method", "deita", "--budget", "0", "--name", "z")):
        proc = _cli(*args)
        assert proc.returncode == EXIT_CONFIG and f"selector 'deita': {said}" in _error_line(proc), (args, proc.stderr)
    assert not (tmp_path / "r").exists()


def test_a_missing_prompt_file_or_prompt_folder_exits_78_naming_it(ws, tmp_path):
    """A --judge file or a --prompt-dir that is not there exited 1 (PromptError was a plain CurateError): a setting
    refused, as a scorer folder's is."""
    missing, folder = tmp_path / "missing.md", tmp_path / "no-prompts"
    for args, words in ((("score", ws, "--judge", missing), f"{missing}: prompt file not found"),
                        (("score", ws, "--judge", "quality", "--prompt-dir", folder),
                         f"{folder}: prompt folder of prompt_dirs= (CLI: --prompt-dir) not found")):
        proc = _cli(*args, "--backend", "local", "--dry-run")
        assert proc.returncode == EXIT_CONFIG and words in _error_line(proc), (args, proc.stderr)


def test_train_scorer_refusing_a_kind_epochs_or_target_exits_78(tmp_path):
    """train-scorer's checks of --kind, --epochs and --target raised a plain ScorerError: exit 1, as a crash."""
    from curate.session import Workspace

    labelled = tmp_path / "labelled"
    assert _cli("load", write_jsonl(tmp_path / "p12.jsonl", _rows(12)), "-w", labelled).returncode == 0
    Workspace(labelled).add_column("judge_q", [[float(i % 4 + 1)] for i in range(12)],
                                   {"kind": "judge", "judge": "q", "reads": ["instruction", "response"]})
    Workspace(labelled).add_column("q_scorer", [[float(i % 3 + 1)] for i in range(12)],
                                   {"kind": "scorer", "imitates": "q", "reads": ["instruction", "response"]})
    for args, words in ((("--target", "q_scorer"), "holds a trained scorer's predictions (imitating 'q')"),
                        (("--target", "judge_q", "--kind", "bogus"), "kind 'bogus': choose ridge"),
                        (("--target", "judge_q", "--epochs", "3"), "epochs 3.0: the ridge kind fits its head"),
                        (("--target", "judge_q", "--kind", "cross-encoder", "--epochs", "0"),
                         "epochs 0.0: passes over the training labels, a finite number above 0"),
                        (("--target", "nope",), "no column 'nope'")):
        proc = _cli("train-scorer", labelled, "--out", tmp_path / "sc", *args)
        assert proc.returncode == EXIT_CONFIG and words in _error_line(proc), (args, proc.stderr)
        assert not (tmp_path / "sc").exists()


def test_embed_refusing_a_device_or_a_model_folder_exits_78(ws, tmp_path):
    """embed's --device (torch's name unknown, or CUDA asked for where torch sees none) and --model folder checks
    raised a plain CurateError: exit 1."""
    import torch

    cases = [(("--device", "tpu"), "device 'tpu': use cpu, cuda or cuda:N"),
             (("--text", "bogus"), "text= (CLI: --text) must be one of instruction, conversation, response, got 'bogus'"),
             (("--model", tmp_path / "no-model"), f"embedding model {tmp_path / 'no-model'}: no such model folder")]
    if not torch.cuda.is_available():
        cases.append((("--device", "cuda"), "device 'cuda' asked for but torch sees no CUDA device"))
    for args, words in cases:
        proc = _cli("embed", ws, *args)
        assert proc.returncode == EXIT_CONFIG and words in _error_line(proc), (args, proc.stderr)


def test_embed_with_a_folder_that_holds_no_model_exits_78_naming_it(ws, tmp_path):
    """A --model folder that exists but holds no model (empty, or a tokenizer alone) failed inside transformers:
    "Unrecognized model in DIR", exit 1, no option named; README's table gives a model folder refused 78."""
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    proc = _cli("embed", ws, "--model", empty)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert f"embedding model {empty}: the folder does not load as a sentence-transformers" in _error_line(proc)


def test_run_refusing_a_signal_or_a_signal_model_folder_exits_78(tmp_path):
    """curate run's --signal outside ifd and perplexity, and a --signal-model folder without config.json, raised a
    plain CurateError: exit 1."""
    for args, words in ((("--signal", "bogus"), "curate run computes the signals ifd, perplexity; not 'bogus'"),
                        (("--signal", "ifd", "--signal-model", tmp_path), f"{tmp_path}: not a Hugging Face model folder")):
        proc = _cli("run", "sample", "--out", tmp_path / "r", *args)
        assert proc.returncode == EXIT_CONFIG and words in _error_line(proc), (args, proc.stderr)
    assert not (tmp_path / "r").exists()


def test_embed_batch_size_and_evol_seeds_refused_exit_78(ws):
    """embed's --batch-size 0 and evol's --seeds 0 raised a plain CurateError: exit 1, as a crash (the judge client's
    --timeout/--concurrency/--rpm... and --min-digit-mass likewise: test_cli's refused-values test)."""
    llm = ("--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--dry-run")
    for args, words in ((("embed", ws, "--batch-size", "0"), "batch_size must be a whole number >= 1, not 0"),
                        (("evol", ws, "--seeds", "0", *llm), "n= (CLI: --seeds), must be a whole number >= 1, not 0")):
        proc = _cli(*args)
        assert proc.returncode == EXIT_CONFIG and words in _error_line(proc), (args, proc.stderr)


def test_a_run_on_some_rows_over_a_column_of_other_settings_exits_78_naming_column(ws):
    """A --limit run onto a column the other rows hold under other settings is refused (the column would mix two
    runs): a settings refusal, fixed with --limit off or --column NAME, that exited 1 as a crash does."""
    whole = _cli("score", ws, "--scorer", "complexity_ridge", "--column", "cx")
    assert whole.returncode == 0, whole.stderr
    some = _cli("score", ws, "--scorer", "complexity", "--column", "cx", "--limit", "2")
    assert some.returncode == EXIT_CONFIG and "--column NAME" in _error_line(some), some.stderr


@pytest.mark.parametrize("args", [("--budget", "0"), ("--budget", "-3"), ("--max-cosine-similarity", "7")])
def test_run_json_prints_the_record_of_a_run_refused_before_its_first_step(tmp_path, args):
    """`curate run --budget 0 --json` exited 78 with stdout empty: its check ran before the record's wrapper, though
    the help and README promise the record "also for a run refused before its first step"."""
    import json

    proc = _cli("run", "sample", "--out", tmp_path / "r", "--json", *args)
    record = json.loads(proc.stdout)
    assert proc.returncode == EXIT_CONFIG and record["exit_code"] == EXIT_CONFIG and record["status"] == "failed"
    assert record["steps"] == {} and record["error"]["type"] == "OptionError" and _error_line(proc)


@pytest.mark.parametrize("args, said", [
    (("plan", "{ws}", "--order-by", "quality"),
     "give exactly one compute budget: samples= (rows seen), epochs= or tokens= (CLI: --samples, --epochs or --tokens)"
     "; none was given"),
    (("plan", "{ws}", "--order-by", "quality", "--epochs", "1", "--samples", "9"), "; got samples and epochs"),
    (("plan", "{ws}", "--order-by", "quality", "--epochs", "1", "--buckets", "0"),
     "buckets must be a whole number >= 1, got 0 (buckets= (CLI: --buckets))"),
    (("plan", "{ws}", "--order-by", "quality", "--epochs", "-1"),
     "the epochs budget must be a positive number, got -1.0 (epochs= (CLI: --epochs))"),
    (("plan", "{ws}", "--order-by", "quality", "--tokens", "100", "--model", "{ws}/../nosuch"),
     "(CLI: --model): no such folder"),
    (("train", "run", "{ws}", "--epochs", "0"), "the data map needs at least 2 epochs"),
    (("train", "model", "{ws}", "--selection", "top2", "--out", "{ws}/../m", "--epochs", "0"),
     "training setting epochs must be >= 1, got 0 (epochs= (CLI: --epochs))"),
    (("signal", "{ws}", "--kind", "ifd", "--max-length", "0"),
     "max_length must be at least 8 tokens, got 0 (max_length= (CLI: --max-length))"),
])
def test_a_plan_train_or_signal_option_value_refused_exits_78(ws, args, said):
    """These exited 1 as any failure: the planner's, the trainer's and the prompter's checks of a value raised a plain
    CurateError; README's table says an option's value refused is 78, and the line names the flag and the keyword."""
    from curate.session import Workspace

    Workspace(ws).add_column("quality", [[float(i + 1)] for i in range(4)], {"kind": "test"})
    made = _cli("select", ws, "--method", "top_k", "--budget", "2", "--sort-by", "quality", "--name", "top2")
    assert made.returncode == 0, made.stderr
    proc = _cli(*(a.format(ws=ws) for a in args))
    assert proc.returncode == EXIT_CONFIG and said in _error_line(proc), (proc.returncode, proc.stderr)


def test_readmes_exit_code_table_says_what_the_codes_table_says():
    """README's 78 row named an `--out` no export or report can take where curate.exit_codes (printed by --help) did
    not, and the help's 130 entry read "143: terminated (SIGTERM)": two tables that drifted. One row per code now,
    its meaning the code's text (README adds backticks and what a scheduler should do)."""
    from curate.exit_codes import EXIT_CODES, exit_codes_text

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| code | meaning | a scheduler should |"):].split("\n\n", 1)[0].splitlines()[2:]
    rows = {}
    for line in table:
        code, meaning, _should = line.strip("|").replace("\\|", "¦").split("|")
        rows[int(code)] = meaning.strip().replace("`", "").replace("¦", "|")
    assert rows == EXIT_CODES
    assert "143 terminated by SIGTERM" in exit_codes_text() and "143:" not in exit_codes_text()


def test_score_refuses_its_backend_options_before_printing_a_line(ws):
    """`score --backend bogus` printed `quality: prompt ...` on stdout, then the usage error: not "told before any
    work". The backend's options are checked before the prompt line now."""
    for args, code, said in ((("--backend", "bogus"), 2, "--backend 'bogus': use openai"),
                             (("--backend", "local", "--poll-interval", "5"), EXIT_CONFIG, "--poll-interval")):
        proc = _cli("score", ws, "--judge", "quality", *args)
        assert proc.returncode == code and said in proc.stderr and proc.stdout == "", (args, proc.stdout, proc.stderr)


def test_rows_a_refused_key_stopped_are_sent_again_once_it_is_fixed_as_the_help_says(ws):
    """--retry-failed's help said rows that failed with "HTTP 4xx" are never sent again, but rows a 401 stopped (exit
    78) are transient and a re-run with the key fixed sends them: what README says and a user wants. The help says it."""
    env_key = {"CURATE_TEST_RIGHT_KEY": "right"}
    with FaultServer(api_key="right") as srv:
        judge = ("score", ws, "--judge", "quality", "--base-url", srv.base_url, *JUDGE)
        refused = _cli(*judge, "--api-key-env", "CURATE_TEST_WRONG_KEY")
        assert refused.returncode == EXIT_CONFIG and "HTTP 401" in _error_line(refused)
        os.environ.update(env_key)
        try:
            fixed = _cli(*judge, "--api-key-env", "CURATE_TEST_RIGHT_KEY")
        finally:
            os.environ.pop("CURATE_TEST_RIGHT_KEY")
    assert fixed.returncode == 0 and "re-sent 4 requests" in fixed.stdout, (fixed.stdout, fixed.stderr)
    for command in ("score", "tag"):
        shown = " ".join(_cli(command, "--help").stdout.split())
        assert "HTTP 401/403/404, sent again once they are fixed" in shown and "HTTP 4xx" not in shown


def test_select_named_as_a_chains_step_or_given_an_unknown_text_exits_78(ws):
    from curate.session import Workspace

    Workspace(ws).select(name="mix", steps=[{"method": "exact"}, {"method": "random", "budget": 2}])
    for args, said in ((("--method", "random", "--budget", "1", "--name", "mix.1-exact"),
                        "selection 'mix.1-exact' is a step of chain 'mix'"),
                       (("--method", "exact", "--param", "text=bogus", "--name", "a"),
                        "text= (CLI: --param text=) must be one of instruction")):
        proc = _cli("select", ws, *args)
        assert proc.returncode == EXIT_CONFIG and said in _error_line(proc), (proc.returncode, proc.stderr)
