"""What the tagger keeps of a reply: one past the schema's bounds (more tags than it asks for, as a server that does
not enforce ``maxItems`` answers) is kept whole and counted, through the project's fault-injecting server and the
real CLI entry point."""

from __future__ import annotations

import os
from pathlib import Path

from curate.session import Workspace
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def test_a_reply_with_more_tags_than_the_schema_asks_for_keeps_every_tag_and_says_so(tmp_path):
    """A reply of 12 tags failed validation (schema max 10) and was re-asked with the error: a model then cut its
    tags to fit, or kept them and the row failed (invalid_output, every tag lost). The schema sent still asks for at
    most 10 (the same request, the same cache key)."""
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "[tags12] Plan a week in Rome.", "output": "ok"},
                                               {"instruction": "Write a poem about rain.", "output": "ok"}]))
    with FaultServer() as srv:
        run = curate_in_process("tag", ws.path, "--base-url", srv.base_url, "--model", "fault", "--api-key-env", "HOME",
                                "--concurrency", "1", "--no-normalize", env=ENV)
        sent = srv.total
    assert run.returncode == 0, run.stderr
    assert sent == 2, run.stdout  # no re-ask (it was 3 requests for the 12-tag row)
    ws = Workspace.open(ws.path)
    assert ws.column("tags_raw") == [[[f"intent {i}" for i in range(1, 13)]], [["write", "a"]]]
    assert ws.failures("tags_raw") == [[], []]
    assert ws.column_provenance("tags_raw")["runs"][-1]["turns_past_schema_bounds"] == 1
    said = " ".join(run.stdout.split())
    assert "1 user turn(s) got replies past the schema's bounds (10 tags," in said and "every tag kept" in said, said
    sent_bounds = [fmt["json_schema"]["schema"]["properties"]["tags"]["maxItems"] for fmt in srv.response_formats]
    assert sent_bounds == [10, 10], srv.response_formats


def test_a_tag_reply_slower_than_the_timeout_gets_a_longer_wait_on_its_retry_not_the_same_one(tmp_path):
    """A SmolLM2 tag reply near max_tokens on a loaded CPU took 85 s among 16 at once (README); with a fixed 60 s
    timeout every retry ran out the same way and the row ended transient after 7 attempts. The request timeout's
    ladder (BACKEND.timeout_growth) gives the retry twice as long. Here a reply that takes 3 s on every attempt,
    against --timeout 2: the second attempt (4 s) gets it. (A check of the tag path on the ladder b3b44e2 brought.)"""
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "[sleep1:3][sleep2:3][sleep3:3] Plan a week in Rome.",
                                                "output": "ok"}]))
    with FaultServer() as srv:
        run = curate_in_process("tag", ws.path, "--base-url", srv.base_url, "--model", "fault", "--api-key-env", "HOME",
                                "--timeout", "2", "--max-retries", "2", "--no-normalize", env=ENV)
        sent = srv.total
    assert run.returncode == 0, run.stdout + run.stderr
    assert sent == 2 and Workspace.open(ws.path).column("tags_raw") == [[["plan", "a"]]]
