"""`curate run --tags` normalises with the normaliser's options of `curate tag` (and run_pipeline with tag_normalizer):
a German pool is tagged and normalised with the German stemmer in the main job. Through the project's fault-injecting
server (tags: a query's first two words) and the real CLI entry point."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from curate.session import Workspace
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "COLUMNS": "200"}
ENV.pop("OPENAI_API_KEY", None)
QUERIES = [f"{word} lesen, Nummer {n}: was steht heute darin über das Wetter?"  # tags: zeitung(en), lesen
           for n, word in enumerate(["Zeitung", "Zeitungen", "Zeitung", "Zeitungen"])]


def _run(tmp_path: Path, srv: FaultServer, *args: str):
    tmp_path.mkdir(exist_ok=True)
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": q, "output": f"Die Zeitung schreibt {i} Dinge."}
                                                 for i, q in enumerate(QUERIES)])
    return curate_in_process("run", pool, "--out", tmp_path / "out", "--budget", "2", "--no-report", "--base-url",
                             srv.base_url, "--model", "fault", "--api-key-env", "HOME", "--max-retries", "0", *args,
                             env=ENV)


def test_curate_run_tags_normalises_with_the_options_curate_tag_takes(tmp_path):
    """`curate run --tags` took none of the normaliser's options: it normalised a German pool with the English
    stemmer (zeitung and zeitungen apart) and the paper's thresholds; curate tag was needed afterwards."""
    with FaultServer() as srv:
        run = _run(tmp_path, srv, "--tags", "--stemmer-language", "german", "--min-frequency", "0", "--eps", "0",
                   "--min-support", "0")
    assert run.returncode == 0, (run.stdout, run.stderr)
    ws = Workspace.open(tmp_path / "out" / "workspace")
    assert [sorted(t) for t in ws.column("tags")] == [["lesen", "zeitung"]] * 4, ws.column("tags")
    params = ws.column_provenance("tags")["params"]
    assert params["stemmer_language"] == "german" and params["min_frequency"] is None, params
    assert not params["semantic"] and not params["association"], params


def test_normaliser_options_without_tags_or_with_an_unknown_language_are_refused_before_any_request(tmp_path):
    """A normaliser option without --tags would be ignored (no tags to normalise), whatever its value (1 and the
    default 20 alike); a language Snowball lacks is named before the load and before any request."""
    with FaultServer() as srv:
        refused = {value: _run(tmp_path / value, srv, "--min-frequency", value) for value in ("1", "20")}
        unknown = _run(tmp_path / "klingon", srv, "--tags", "--stemmer-language", "klingon")
        sent = srv.total
    for value, run in refused.items():
        assert run.returncode == 2, (value, run.stdout, run.stderr)
        assert "--min-frequency: options of the normaliser; give --tags" in " ".join(run.stderr.split()), run.stderr
    assert unknown.returncode == 2 and "stemmer language 'klingon'" in " ".join(unknown.stderr.split()), unknown.stderr
    assert sent == 0 and not (tmp_path / "klingon" / "out").exists()


def test_run_pipeline_refuses_a_tag_normalizer_without_a_tag_backend(tmp_path):
    """The Python API's equivalent: tag_normalizer with no tag_backend would be ignored in silence."""
    from curate.errors import OptionError
    from curate.pipeline import run_pipeline
    from curate.tags import Normalizer

    with pytest.raises(OptionError, match="tag_normalizer normalises InsTag tags: give tag_backend"):
        run_pipeline("sample", tmp_path / "out", 5, tag_normalizer=Normalizer(stemmer_language="german"))
    assert not (tmp_path / "out").exists()
