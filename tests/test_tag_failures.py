"""How the tagger's failed answers are coded, re-asked, counted and told: a JSON reply cut off at max_tokens
(``truncated``), a reply that copies a few-shot example of the prompt (``echoed_example``), and `curate tag` when no
row got tags. Through the project's fault-injecting server (``[cutjson]``, ``[echo]``) and the real CLI entry point."""

from __future__ import annotations

import os
from pathlib import Path

from curate.codes import FailureCode
from curate.llm.prompts import builtin_prompt_dir
from curate.session import Workspace
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _workspace(tmp_path: Path, instructions: list[str]) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": text, "output": "ok"} for text in instructions]))
    return ws


def _tag(ws: Workspace, srv: FaultServer, *args: str):
    return curate_in_process("tag", ws.path, "--base-url", srv.base_url, "--model", "fault", "--api-key-env", "HOME",
                             "--concurrency", "1", *args, env=ENV)


def test_a_json_reply_cut_off_at_max_tokens_is_truncated_sent_once_and_told_before_the_error(tmp_path):
    """F3: a reply stopped at max_tokens was coded invalid_output and re-asked twice (3 requests a row: at temperature
    0 the same cut-off reply came back each time). F2: `curate tag` then said "no row tagged ... (the commonest
    failures above)" with no failure printed above, and exited 1."""
    ws = _workspace(tmp_path, [f"[cutjson] Write a poem about rain number {i}." for i in range(3)])
    with FaultServer() as srv:
        run = _tag(ws, srv)
        sent = srv.total
    assert sent == 3, run.stdout  # one request a row (it was 9)
    failures = Workspace.open(ws.path).failures("tags_raw")
    assert [[f.code for f in fails] for fails in failures] == [[FailureCode.TRUNCATED]] * 3
    assert all(fails[0].raw and fails[0].raw.startswith('{"tags": [') and not fails[0].raw.endswith("}")
               for fails in failures)  # the cut-off reply is kept as it came
    out, err = " ".join(run.stdout.split()), " ".join(run.stderr.split())
    assert "3 x truncated: the reply stopped at max_tokens (640) before its JSON was complete" in out, out
    assert "not re-asked: at temperature 0" in out, out
    assert "no row tagged: none of the 3 rows asked for got a value (3 x truncated;" in err, err
    assert "raise max_tokens in the prompt's params" in err, err
    assert run.returncode == 78, (run.returncode, err)  # the prompt's setting: a re-run as it is fails the same way


def test_no_row_tagged_names_its_failures_before_the_error(tmp_path):
    """F2: with every row failed, `curate tag` said "no row tagged ... (the commonest failures above)" and printed
    no failure above; a failure that is no setting's (a permanent HTTP error) keeps exit 1."""
    ws = _workspace(tmp_path, [f"[always400] Name prime number {i}." for i in range(2)])
    with FaultServer() as srv:
        run = _tag(ws, srv)
    out, err = " ".join(run.stdout.split()), " ".join(run.stderr.split())
    assert "2 x http_error: HTTP 400" in out, out
    assert "tags not normalised: no row has tags_raw to read" in out and "frequency_filter" not in out, out
    assert "no row tagged: none of the 2 rows asked for got a value (2 x http_error;" in err, err
    assert run.returncode == 1, (run.returncode, err)


def test_a_cut_off_reply_of_a_sampled_request_is_re_asked_once(tmp_path):
    """Without temperature 0 (the server's default samples) a second draw may finish: one re-ask, not two."""
    prompt = tmp_path / "instag_sampled.md"
    prompt.write_text((builtin_prompt_dir() / "instag.md").read_text().replace("  temperature: 0.0\n", ""))
    ws = _workspace(tmp_path, [f"[cutjson] Sort list number {i} in Python." for i in range(2)])
    with FaultServer() as srv:
        run = _tag(ws, srv, "--prompt", str(prompt), "--no-normalize")
        sent = srv.total
    assert sent == 4, run.stdout  # a request and one re-ask a row (it was 6)
    failures = Workspace.open(ws.path).failures("tags_raw")
    assert [[f.code for f in fails] for fails in failures] == [[FailureCode.TRUNCATED]] * 2
    assert all("after 2 attempt(s); re-asked once" in fails[0].message for fails in failures), failures
