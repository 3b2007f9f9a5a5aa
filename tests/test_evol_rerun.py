"""Evol re-runs: a request that failed for a permanent reason is stored with the label set and not sent again;
a transient one is, unless --keep-failed (against the project's fault-injecting server)."""

import re

from typer.testing import CliRunner

from curate.cli import app
from curate.session import Workspace
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer


def _evol(ws, srv, *extra):
    return CliRunner().invoke(app, ["evol", str(ws), "--seeds", "4", "--steps", "2", "--base-url", srv.base_url,
                                    "--model", "fault", "--api-key-env", "HOME", "--max-retries", "0", *extra])


def _new(output: str) -> int:
    return int(re.search(r"requests (\d+) new", " ".join(output.split())).group(1))


def test_a_rerun_does_not_send_permanent_failures_again(tmp_path):
    """The old code re-sent every failed request on each run: here the 4 HTTP 400 / context-too-long rewrites."""
    records = [{"instruction": "[rank] Describe item one in detail.", "output": "x"},
               {"instruction": "[rank] Describe item two in detail.", "output": "x"},
               {"instruction": "[always400] Describe item three.", "output": "x"},
               {"instruction": "[toolong] Describe item four.", "output": "x"}]
    Workspace(tmp_path / "ws").load(write_jsonl(tmp_path / "p.jsonl", records))
    with FaultServer() as srv:
        first = _evol(tmp_path / "ws", srv)
        sent = srv.total
        second = _evol(tmp_path / "ws", srv)
        resent = srv.total - sent
        stored = Workspace.open(tmp_path / "ws").label_sets["evol_complexity"]
        (tmp_path / "ws" / "labels" / "evol_complexity" / "failures.jsonl").unlink()  # as the summary says to
        third = _evol(tmp_path / "ws", srv)
        sent_by_third = srv.total - sent - resent
    assert "remove the label set's failures.jsonl" in " ".join(second.output.split())
    assert sent_by_third == 4 and _new(third.output) == 4, third.output  # every failure sent again
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert resent == 0 and _new(second.output) == 0, second.output
    assert "4 failed before and not sent again" in " ".join(second.output.split())
    assert stored["failed_before"] == 4 and stored["failed_requests"] == 4
    assert stored["eliminated_by_reason"]["call_failed"] == 4  # the replayed failures: the same outcome as before
    lines = Workspace.open(tmp_path / "ws").label_file("evol_complexity", "failures.jsonl").read_text().splitlines()
    assert sorted(__import__("json").loads(line)["code"] for line in lines) == ["context_too_long"] * 2 + ["http_error"] * 2


def test_transient_failures_are_sent_again_unless_keep_failed(tmp_path):
    """[500x1]: the first attempt of each request answers 500 (max_retries 0: the chain is left unanswered, and
    its next request fails once too: a re-run at each of its steps)."""
    from curate.evol import build_labels
    from curate.llm.backends import OpenAIBackend

    records = [{"instruction": f"[rank] Describe item {i} in detail.", "output": "x"} for i in range(3)]
    records.append({"instruction": "[rank] [500x1] Describe item three.", "output": "x"})
    Workspace(tmp_path / "ws").load(write_jsonl(tmp_path / "p.jsonl", records))
    with FaultServer() as srv:
        first = _evol(tmp_path / "ws", srv)
        assert first.exit_code == 1 and "1 of 4 seeds not finished" in " ".join(str(first.exception).split())
        sent = srv.total
        kept = _evol(tmp_path / "ws", srv, "--keep-failed")
        assert kept.exit_code == 1 and srv.total == sent and _new(kept.output) == 0, kept.output
        for _ in range(3):  # step 2 and the rank call fail once each in turn
            retried = _evol(tmp_path / "ws", srv)
            assert srv.total > sent and _new(retried.output) == srv.total - sent, retried.output
            sent = srv.total
            if retried.exit_code == 0:
                break
        assert retried.exit_code == 0, retried.output
        assert Workspace.open(tmp_path / "ws").label_sets["evol_complexity"]["sets_scored"] == 4
        again = srv.total
        assert _new(_evol(tmp_path / "ws", srv).output) == 0 and srv.total == again  # finished: nothing to send
        # the Python API reads and keeps the same record
        ws = Workspace(tmp_path / "api")
        seeds = [{"id": "bad", "instruction": "[always400] Describe it."},
                 {"id": "ok", "instruction": "[rank] Describe it in detail."}]
        backend = OpenAIBackend(srv.base_url, "fault", api_key="k", max_retries=0)
        build_labels(seeds, backend, steps=2, workspace=ws, progress=False)
        before = srv.total
        build_labels(seeds, backend, steps=2, workspace=ws, progress=False)
        assert srv.total == before and ws.label_sets["evol_complexity"]["failed_before"] == 2


def test_the_python_api_shows_progress_by_default_as_ws_apply_does(tmp_path, capfd):
    """run_evol / build_labels defaulted to progress=False: a script on the slow local model printed nothing for
    minutes, while ws.apply shows a bar by default."""
    from curate.evol import build_labels, run_evol
    from curate.llm.backends import OpenAIBackend

    seeds = [{"id": "s", "instruction": "[rank] Describe it in detail."}]
    with FaultServer() as srv:
        backend = OpenAIBackend(srv.base_url, "fault", api_key="k", max_retries=0)
        build_labels(seeds, backend, steps=1, workspace=Workspace(tmp_path / "ws"))
        shown = capfd.readouterr().err
        run_evol(seeds, backend, steps=1, cache_path=tmp_path / "c", progress=False)
        quiet = capfd.readouterr().err
    assert "evol step 1" in shown and "evol rank" in shown, shown
    assert "evol step 1" not in quiet


def test_a_damaged_failure_record_is_an_error_naming_its_file_and_line(tmp_path):
    import pytest

    from curate.errors import CurateError
    from curate.evol.labels import stored_failures

    ws = Workspace(tmp_path / "ws")
    ws.add_labels("evol_complexity", [], {}, files={"failures.jsonl": b'{"key": "k", "code": "http_error"}\n{"key"\n'})
    with pytest.raises(CurateError, match=r"failures\.jsonl:2: not a failed-request record"):
        stored_failures(ws, "evol_complexity")
    assert stored_failures(ws, "other") == {}


def test_retry_failed_has_one_default_for_evol_and_the_judges():
    import inspect

    import typer

    from curate.defaults import JUDGE
    from curate.evol import run_evol
    from curate.evol.dryrun import estimate_evol

    evol = typer.main.get_command(app).commands["evol"]
    cli = next(p.default for p in evol.params if p.name == "retry_failed")
    api = {inspect.signature(fn).parameters["retry_failed"].default for fn in (run_evol, estimate_evol)}
    assert api == {cli} == {JUDGE.retry_failed}


def test_a_label_set_stored_before_failures_jsonl_does_not_send_its_permanent_failures_again(tmp_path):
    """A label set stored before failures.jsonl existed (commit e036b47: sets.jsonl, the same rows, and no
    failures.jsonl) holds its failures only on its chains: 2 rewrites failed with HTTP 400, 2 with context too long,
    and the 2 rank calls (a rank prompt the server refuses, HTTP 400). The old code sent all 6 once more on the first
    re-run; now their keys are rebuilt from sets.jsonl and the failures replayed: 0 sent (and a dry run counts 0)."""
    import json
    from pathlib import Path

    records = [{"instruction": "[rank] Describe item one in detail.", "output": "x"},
               {"instruction": "[rank] Describe item two in detail.", "output": "x"},
               {"instruction": "[always400] Describe item three.", "output": "x"},
               {"instruction": "[toolong] Describe item four.", "output": "x"}]
    Workspace(tmp_path / "ws").load(write_jsonl(tmp_path / "p.jsonl", records))
    rank = (Path(__file__).parents[1] / "prompts" / "evol" / "rank_complexity.md").read_text(encoding="utf-8")
    (tmp_path / "prompts" / "evol").mkdir(parents=True)
    (tmp_path / "prompts" / "evol" / "rank_complexity.md").write_text(rank + "\n[always400]\n", encoding="utf-8")
    prompts = ("--prompt-dir", str(tmp_path / "prompts"))
    folder = tmp_path / "ws" / "labels" / "evol_complexity"
    with FaultServer() as srv:
        first = _evol(tmp_path / "ws", srv, *prompts)
        (folder / "failures.jsonl").unlink()  # the layout of a label set stored before failures were recorded:
        provenance = json.loads((folder / "provenance.json").read_text())  # no failures.jsonl, and a provenance
        del provenance["failed_requests"], provenance["retry_failed"]  # without the fields that came with it
        (folder / "provenance.json").write_text(json.dumps(provenance))
        sets = (folder / "sets.jsonl").read_bytes()
        sent = srv.total
        dry = _evol(tmp_path / "ws", srv, *prompts, "--dry-run")
        second = _evol(tmp_path / "ws", srv, *prompts)
        resent = srv.total - sent
        third = _evol(tmp_path / "ws", srv, *prompts)  # failures.jsonl written by the second run: read as before
    assert first.exit_code == 1 and "no labels" in str(first.exception), first.output  # every rank call failed
    assert resent == 0 and _new(second.output) == 0, (resent, second.output)
    assert "requests: at most 0:" in " ".join(dry.output.split()), dry.output
    assert "6 failed before and not sent again" in " ".join(second.output.split()), second.output
    assert (folder / "sets.jsonl").read_bytes() == sets  # the same chains, failures and raw replies, replayed
    # (the rank calls' raw replies were '{}' after the replay, the review found)
    assert _new(third.output) == 0 and srv.total == sent


def test_a_rerun_keeps_the_raw_reply_of_a_rank_call_that_failed(tmp_path):
    """A rank reply that failed validation (the fault server answers a tag object) is kept in sets.jsonl as the raw
    reply; a re-run replayed the failure and stored '{}' in its place (the upgrade audit), losing the reply."""
    import json

    records = [{"instruction": f"{mark}Describe item {n} in detail.", "output": "x"}
               for mark, n in (("[rank] ", "one"), ("[rank] ", "two"), ("", "three"), ("", "four"))]
    Workspace(tmp_path / "ws").load(write_jsonl(tmp_path / "p.jsonl", records))
    sets = tmp_path / "ws" / "labels" / "evol_complexity" / "sets.jsonl"
    with FaultServer() as srv:
        assert _evol(tmp_path / "ws", srv).exit_code == 0
        first = [json.loads(line) for line in sets.read_text().splitlines()]
        assert _evol(tmp_path / "ws", srv).exit_code == 0
        again = [json.loads(line) for line in sets.read_text().splitlines()]
        (sets.parent / "failures.jsonl").unlink()  # as a set stored before failures were recorded: replayed from
        provenance = json.loads((sets.parent / "provenance.json").read_text())  # its sets.jsonl rows
        del provenance["failed_requests"], provenance["retry_failed"]
        (sets.parent / "provenance.json").write_text(json.dumps(provenance))
        assert _evol(tmp_path / "ws", srv).exit_code == 0
        legacy = [json.loads(line) for line in sets.read_text().splitlines()]
    failed = [row for row in first if row.get("failure")]
    assert failed and all(row["raw"] not in (None, "{}") for row in failed), failed
    assert again == first  # was raw '{}' for each failed rank call
    assert legacy == first  # so was a replay from an old set's rows
