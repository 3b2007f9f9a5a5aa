"""`curate evol --dry-run`: the local server note as the judges' dry run words it, and bounds that walk the
cached chain (against the project's fault-injecting server)."""

from typer.testing import CliRunner

from curate.cli import app
from curate.session import Workspace
from tests.conftest import write_jsonl


def test_a_local_dry_run_says_a_running_serve_local_is_reused(tmp_path):
    """The old note said only that the server 'starts', even while `curate serve-local` runs (it is reused)."""
    records = [{"instruction": f"Describe item {i} in detail.", "output": "x"} for i in range(2)]
    Workspace(tmp_path / "ws").load(write_jsonl(tmp_path / "p.jsonl", records))
    res = CliRunner().invoke(app, ["evol", str(tmp_path / "ws"), "--seeds", "2", "--steps", "2", "--backend", "local",
                                   "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "a running `curate serve-local` is reused" in " ".join(res.output.split()), res.output
