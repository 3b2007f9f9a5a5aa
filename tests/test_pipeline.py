import json
import subprocess
import sys

import curate
from curate.cli import sample_path
from curate.pipeline import run_pipeline


def test_run_on_the_sample_selects_exports_reports_and_reruns_identically(tmp_path):
    first = run_pipeline(str(sample_path()), out=tmp_path / "run", budget=15)
    ws = first.workspace
    kept = ws.selection("deita").ids
    assert len(kept) == 15
    prov = ws.column_provenance("quality")
    assert prov["kind"] == "scorer" and prov["imitates"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "selected.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == kept and all("quality" in r and "complexity" in r for r in rows)
    assert (tmp_path / "run" / "selected.parquet").exists() and (tmp_path / "run" / "selected").is_dir()
    assert "<img" in (tmp_path / "run" / "report.html").read_text()
    # The DEITA order: kept rows in descending evol score, each at most 0.9 similar to the ones before.
    emb = ws.embeddings("default", ids=kept)
    sims = emb @ emb.T
    assert (sims[~__import__("numpy").eye(len(kept), dtype=bool)] <= 0.9 + 1e-6).all()
    # Re-running costs nothing and gives the same set.
    again = run_pipeline(str(sample_path()), out=tmp_path / "run", budget=15)
    assert again.workspace.selection("deita").ids == kept
    assert again.workspace.embedding_sets["default"]["encoded"] == 0


def test_cli_run_is_the_readme_command(tmp_path):
    r = subprocess.run([sys.executable, "-m", "curate.cli", "run", "sample", "--budget", "10", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(curate.Workspace.open(tmp_path / "o" / "workspace").selection("deita")) == 10
    assert (tmp_path / "o" / "report.html").exists()
