"""`curate tag` normalises with the normaliser's options of `curate tags --normalize`: a German pool is tagged and
normalised in one command. Through the project's fault-injecting server (tags: a query's first two words) and the
real CLI entry point."""

from __future__ import annotations

import os
from pathlib import Path

from curate.session import Workspace
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
QUERIES = ["Zeitung lesen", "Zeitungen lesen", "Zeitung lesen", "Zeitungen lesen"]  # tags: zeitung(en), lesen


def _tag(tmp_path: Path, srv: FaultServer, *args: str):
    tmp_path.mkdir(exist_ok=True)
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": q, "output": "ok"} for q in QUERIES]))
    run = curate_in_process("tag", ws.path, "--base-url", srv.base_url, "--model", "fault", "--api-key-env", "HOME",
                            "--concurrency", "1", *args, env=ENV)
    return Workspace.open(ws.path), run


def test_curate_tag_normalises_a_german_pool_with_the_german_stemmer(tmp_path):
    """`curate tag` had no --stemmer-language (nor --min-frequency, --eps, --min-support): it normalised with the
    English stemmer, which leaves "zeitung" and "zeitungen" apart; a German pool needed a second command."""
    with FaultServer() as srv:
        ws, run = _tag(tmp_path, srv, "--stemmer-language", "german", "--min-frequency", "0", "--eps", "0",
                       "--min-support", "0")
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert [sorted(t) for t in ws.column("tags")] == [["lesen", "zeitung"]] * 4, ws.column("tags")
    params = ws.column_provenance("tags")["params"]
    assert params["stemmer_language"] == "german" and params["min_frequency"] is None, params
    assert not params["semantic"] and not params["association"], params
    assert "rule_aggregation: 3 -> 2 tags" in " ".join(run.stdout.split()), run.stdout


def test_normaliser_options_that_would_do_nothing_are_refused_before_any_request(tmp_path):
    """--no-normalize with a normaliser option, and a language Snowball lacks, stop before a row is tagged."""
    with FaultServer() as srv:
        _, ignored = _tag(tmp_path / "a", srv, "--no-normalize", "--stemmer-language", "german")
        _, unknown = _tag(tmp_path / "b", srv, "--stemmer-language", "klingon")
        sent = srv.total
    assert ignored.returncode == 2 and "--stemmer-language: options of the normaliser" in ignored.stderr, ignored.stderr
    assert unknown.returncode == 2 and "stemmer language 'klingon'" in " ".join(unknown.stderr.split()), unknown.stderr
    assert sent == 0


def test_a_normaliser_option_equal_to_its_default_is_refused_where_no_normaliser_runs(tmp_path):
    """`--no-normalize --min-frequency 20` (20 the default) was taken in silence and ignored, as `curate tags --eps
    0.05` without --normalize: an option the user gave is refused whatever its value."""
    from curate.defaults import NORMALIZER

    with FaultServer() as srv:
        ws, tagged = _tag(tmp_path, srv, "--no-normalize", "--min-frequency", str(NORMALIZER.min_frequency))
        sent = srv.total
    assert tagged.returncode == 2 and "--min-frequency: options of the normaliser" in tagged.stderr, tagged.stderr
    assert sent == 0
    report = curate_in_process("tags", ws.path, "--eps", str(NORMALIZER.eps), env=ENV)
    assert report.returncode == 2 and "--eps: options of the normaliser; give --normalize" in \
        " ".join(report.stderr.split()), report.stderr
