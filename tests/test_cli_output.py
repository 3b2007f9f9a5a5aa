"""The CLI in an unattended pipeline: no terminal, output to files (a log in ASCII or latin-1, grep over it)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import write_jsonl
from tests.fault_server import FaultServer


def curate_cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", cwd=cwd, timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture()
def workspace(tmp_path):
    rows = [{"instruction": f"Explain topic {i} in a sentence.", "output": f"Topic {i} is about {i}."}
            for i in range(3)]
    ws = tmp_path / "ws"
    loaded = curate_cli("load", write_jsonl(tmp_path / "pool.jsonl", rows), "--workspace", ws)
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
