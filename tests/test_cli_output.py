"""The CLI in an unattended pipeline: no terminal, output to files (a log in ASCII or latin-1, grep over it)."""

import os
import subprocess
import sys

import pytest

from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer


def curate_cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", cwd=cwd, timeout=300, env={**os.environ, **(env or {})})


def curate_here(*args, env=None):
    """What a command says and records, from curate.cli.main() in this process (tests/cli_in_process.py): for the
    tests of its words, not of its output streams' encoding, width or file type, which only a process shows."""
    return curate_in_process(*args, env={**os.environ, **(env or {})})


@pytest.fixture()
def workspace(tmp_path):
    rows = [{"instruction": f"Explain topic {i} in a sentence.", "output": f"Topic {i} is about {i}."}
            for i in range(3)]
    ws = tmp_path / "ws"
    loaded = curate_here("load", write_jsonl(tmp_path / "pool.jsonl", rows), "--workspace", ws)
    assert loaded.returncode == 0, loaded.stderr
    return ws


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_summary_line_the_log_encoding_cannot_hold_does_not_fail_the_command(workspace, encoding):
    """The column was stored, then the summary line's em dash raised UnicodeEncodeError: exit 1 after the work."""
    with FaultServer() as srv:
        r = curate_cli("score", workspace, "--judge", "quality", "--base-url", srv.base_url, "--model", "fault",
                       env={"PYTHONIOENCODING": encoding})
    assert r.returncode == 0, r.stderr[-1500:]
    assert "quality: 3 rows ? computed 3" in r.stdout


def test_a_long_line_stays_one_line_in_a_redirected_stdout(tmp_path):
    """rich wrapped at 80 columns where stdout is no terminal ("...; 0 \\nalready present"): grep missed the line."""
    pool = write_jsonl(tmp_path / ("a-pool-file-with-a-name-long-enough-to-pass-eighty-columns" * 2 + ".jsonl"),
                       [{"instruction": "Say hi.", "output": "Hi."}])
    r = curate_cli("load", pool, "--workspace", tmp_path / "ws", env={"COLUMNS": ""})
    assert r.returncode == 0, r.stderr
    assert any(line.startswith("loaded 1 rows from ") and line.endswith("0 already present")
               for line in r.stdout.splitlines()), r.stdout


def test_progress_in_a_log_file_is_newline_ended_lines_and_curate_progress_0_turns_it_off(workspace, tmp_path):
    """stderr to a file: tqdm redrew its bar with carriage returns on one line (41 \\r, 2,808 bytes for 2,000 rows;
    hundreds of KB an hour), which log collectors split or cut. Now: whole lines, the first and the last."""
    log = tmp_path / "score.err"
    with FaultServer() as srv:
        for env, judge in (({}, "quality"), ({"CURATE_PROGRESS": "0"}, "complexity")):
            with open(log, "w") as err:
                done = subprocess.run([sys.executable, "-m", "curate.cli", "score", str(workspace), "--judge", judge,
                                       "--base-url", srv.base_url, "--model", "fault"], stdout=subprocess.PIPE,
                                      stderr=err, text=True, timeout=300, env={**os.environ, **env})
            text = log.read_bytes().decode()  # read_text() would turn each \r into a newline
            assert done.returncode == 0, text[-1500:]
            assert "\r" not in text
            bar = [line for line in text.splitlines() if line.startswith(f"{judge}:") and "%|" in line]
            if env:
                assert bar == [], text
            else:
                assert bar[0].startswith("quality:   0%|") and "3/3" in bar[-1] and "failed=0" in bar[-1], text


STAGED_STEP = """
import sys
from curate import Workspace
from curate.storage.progress import progress_bar
from curate.storage.step import StepOutput

class Embedded:  # a step that embeds its texts under its row bar first, as the trained quality scorer does
    column, granularity, reducer, inputs = "staged", "turn", "sum", ()
    def fingerprint(self): return "staged-1"
    def describe(self): return {"kind": "test"}
    def run(self, rows, ctx):
        with progress_bar(len(rows), "embedding", True, unit="text") as inner:
            for _ in rows:
                inner.update(1)
                inner.refresh()  # each status drawn, as a long stage's are at every mininterval
        ctx.progress.update(len(rows))
        return StepOutput([[1.0] * len(r.turns) for r in rows], [[] for _ in rows])

Workspace(sys.argv[1]).apply(Embedded())
"""


def test_a_bar_inside_a_bar_writes_no_cursor_codes_into_a_log_and_names_its_stage(workspace, tmp_path):
    """A bar opened under ws.apply's row bar (the quality scorer's embedding of 3,971 texts) took tqdm's position 1:
    each status went down a row and back up with ESC [A, which a log kept as 5 lines of '\\x1b[A'. Now it is a
    line of its own, named as a stage of the row bar."""
    log = tmp_path / "apply.err"
    with open(log, "w") as err:
        done = subprocess.run([sys.executable, "-c", STAGED_STEP, str(workspace)], stderr=err, timeout=300)
    text = log.read_bytes().decode()
    assert done.returncode == 0, text[-1500:]
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    assert any(line.startswith("staged > embedding: 100%|") and "3/3" in line for line in lines), text
    assert lines[-1].startswith("staged: 100%|") and "3/3" in lines[-1], text


def test_the_time_a_stage_is_open_is_not_counted_as_its_outer_bars_rate(monkeypatch):
    """The quality bar said 1002/3995 [04:08<12:22, 4.03row/s] after waiting 4 minutes on its embedding stage."""
    import time

    from curate.storage.progress import progress_bar

    monkeypatch.delenv("CURATE_PROGRESS", raising=False)
    with progress_bar(10, "quality", True) as outer:
        started = outer.start_t
        with progress_bar(4, "embedding", True, unit="text") as inner:
            assert inner.desc == "quality > embedding"
            time.sleep(0.2)  # the stage is open at least this long: the outer clock moves on by at least as much
            inner.update(4)
        assert outer.start_t - started >= 0.2
        with progress_bar(2, "admission", False) as hidden:  # a bar not shown is no stage
            assert hidden.disable
    with progress_bar(2, "export", True) as after:  # the outer bar closed: a bar of its own again
        assert after.desc == "export"


def _provenance(workspace, column: str) -> dict:
    import json

    import pyarrow.ipc

    return json.loads(pyarrow.ipc.open_file(workspace / "columns" / f"{column}.arrow").schema.metadata[b"curate"])


def test_a_secret_in_the_base_urls_query_or_user_part_is_recorded_nowhere(workspace):
    """without_credentials hid user:password@ but kept ?api-key=... in the column's provenance."""
    with FaultServer() as srv:
        host = srv.base_url.split("//", 1)[1]
        url = f"http://me:PASSWORD77@{host}?api-version=2024&api-key=QUERYSECRET77&sig=SIG77"
        r = curate_here("score", workspace, "--judge", "quality", "--base-url", url, "--model", "fault")
    recorded = _provenance(workspace, "quality")["base_url"]
    assert recorded == f"http://***@{host}?api-version=2024&api-key=***&sig=***"
    stored = b"".join(p.read_bytes() for p in workspace.rglob("*") if p.is_file())
    for secret in ("PASSWORD77", "QUERYSECRET77", "SIG77"):
        assert secret not in r.stdout + r.stderr and secret.encode() not in stored


def test_a_404_names_the_model_and_the_base_url_sent_and_keeps_its_advice_whole(workspace):
    """It said "(model=, base_url= (CLI: ...))" without the values, clipped at 160 characters ("404: Not ")."""
    with FaultServer() as srv:
        wrong = srv.base_url.replace("/v1", "/nothing")
        r = curate_here("score", workspace, "--judge", "quality", "--base-url", wrong, "--model", "fault")
    assert r.returncode == 78
    error = r.stderr[r.stderr.index("error: "):]
    assert f"model 'fault' at {wrong}" in error, error
    assert "fix it and re-run (nothing more was sent): 404: Not Found" in error, error


@pytest.mark.parametrize("key_env", [None, "MY_JUDGE_KEY"])
def test_a_401_says_the_key_variable_consulted_was_not_set(workspace, key_env):
    """A loopback server got the placeholder key; the 401 said "the server refuses the API key" alone."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "MY_JUDGE_KEY")}
    with FaultServer(api_key="sekret") as srv:
        args = ["score", workspace, "--judge", "quality", "--base-url", srv.base_url, "--model", "fault",
                *(["--api-key-env", key_env] if key_env else [])]
        r = curate_in_process(*args, env=env)
        assert r.returncode == 78 and "the server refuses the API key" in r.stderr, r.stderr[-1500:]
        assert f"${key_env or 'OPENAI_API_KEY'} is not set" in r.stderr, r.stderr[-1500:]
        given = curate_in_process(*args, env={**env, key_env or "OPENAI_API_KEY": "wrong"})
    assert given.returncode == 78 and "the server refuses the API key" in given.stderr
    assert "is not set" not in given.stderr  # a key was given: the server refused it


def test_a_base_url_from_openai_base_url_is_the_one_recorded(workspace):
    """The openai client sends to $OPENAI_BASE_URL where no --base-url is given; provenance recorded base_url: null."""
    import openai

    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    with FaultServer() as srv:
        r = curate_in_process("score", workspace, "--judge", "quality", "--backend", "openai", "--model", "fault",
                              env={**env, "OPENAI_BASE_URL": srv.base_url})
        assert r.returncode == 0, r.stderr[-1500:]  # a loopback server from the variable needs no key either
        assert srv.total == 3
    client_url = str(openai.OpenAI(api_key="unused", base_url=srv.base_url).base_url).rstrip("/")
    assert _provenance(workspace, "quality")["base_url"] == srv.base_url == client_url


def test_a_bar_in_a_log_writes_its_first_status_then_one_line_an_interval_and_its_last():
    """tqdm's redraws (\\r + status, 2 a second) become at most one line per interval; the closing newline writes
    the last status held back, once."""
    import io

    from curate.storage.progress import LogLines

    log = io.StringIO()
    lines = LogLines(log, interval_s=3600)
    for n in range(5):
        lines.write(f"\rrows: {n}/4   ")
    lines.write("\n")  # tqdm's close
    assert log.getvalue() == "rows: 0/4\nrows: 4/4\n"
    shown = LogLines(io.StringIO(), interval_s=0)
    for text in ("\rrows: 1/2", "\r" + " " * 20 + "\r", "\rrows: 2/2", "\rrows: 2/2", "\n"):
        shown.write(text)
    assert shown.stream.getvalue() == "rows: 1/2\nrows: 2/2\n"  # a cleared line writes nothing, a repeat once


def test_a_summary_into_a_pipe_whose_reader_takes_one_line_exits_0_every_time(workspace):
    """`curate info ws | head -1` exited 0, 141, 141, 141, 0, 141 over six runs: rich wrote and flushed each line, and
    head's exit raced the later writes. A summary held to the command's end goes out in one write, into the pipe's
    buffer before head reads a byte: written whole, exit 0, as README says of an output that fits the buffer."""
    command = f"{sys.executable} -m curate.cli info {workspace} | head -1; echo \"status=${{PIPESTATUS[0]}}\""
    for _ in range(5):
        shell = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
        first, status = shell.stdout.splitlines()
        assert first.startswith(f"{workspace}: 3 rows") and status == "status=0", (shell.stdout, shell.stderr)


def test_held_lines_go_out_in_one_write_up_to_the_limit_and_stream_beyond_it():
    """The hold is for a summary, not a long listing: past HOLD_LIMIT what is held is written and the rest streams."""
    import io

    from curate.cli.pipes import HOLD_LIMIT, OutputConsole, held_output

    class Writes(io.StringIO):
        def __init__(self):
            super().__init__()
            self.writes: list[str] = []

        def write(self, text):
            self.writes.append(text)
            return super().write(text)

    short, long = Writes(), Writes()
    for out, lines in ((short, 20), (long, 2 * HOLD_LIMIT // 100)):
        console = OutputConsole(file=out, markup=False)
        with held_output(console, True):
            for i in range(lines):
                console.print(f"line {i} " + "x" * 90)
        assert out.getvalue().count("\n") == lines
    assert len(short.writes) == 1 and 1 < len(long.writes) < 2 * HOLD_LIMIT // 100
    assert len(long.writes[0]) > HOLD_LIMIT and all(len(w) < 200 for w in long.writes[1:])


def test_help_into_a_pipe_is_wide_enough_to_keep_every_option_and_url_whole_and_is_not_padded():
    """`curate run --help | grep` found `--max-cosine-simil…` and `https://api.openai.co…`: rich's help is 80
    columns wide where stdout is no terminal; it also began with a blank line and padded each line with spaces."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH", "LINES")}
    for command, whole in ((("run",), "--max-cosine-similarity "), (("score",), "https://api.openai.com/v1")):
        shown = subprocess.run([sys.executable, "-m", "curate.cli", *command, "--help"], capture_output=True,
                               text=True, encoding="utf-8", env=env, timeout=120)
        assert shown.returncode == 0 and whole in shown.stdout and "…" not in shown.stdout, shown.stdout
        lines = shown.stdout.splitlines()
        assert lines[0].strip().startswith("Usage:") and not [line for line in lines if line != line.rstrip()]


def test_select_says_how_many_it_kept_once(workspace):
    """`curate select` printed "5 kept of 51 considered" twice: in its outcome line and as its table's title."""
    proc = curate_here("select", workspace, "--method", "exact", "--name", "unique")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("kept of 3 considered") == 1 and proc.stdout.startswith("selection 'unique' (exact): 3 kept")
