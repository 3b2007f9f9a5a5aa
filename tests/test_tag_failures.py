"""How the tagger's failed answers are coded, re-asked, counted and told: a JSON reply cut off at max_tokens
(``truncated``), a reply that copies a few-shot example of the prompt (``echoed_example``), and `curate tag` when no
row got tags. Through the project's fault-injecting server (``[cutjson]``, ``[echo]``) and the real CLI entry point."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from curate.codes import FailureCode
from curate.errors import CurateWarning
from curate.llm.prompts import builtin_prompt_dir
from curate.session import Workspace
from tests.cli_in_process import curate_in_process
from tests.conftest import ScriptedBackend, write_jsonl
from tests.fault_server import FaultServer
from tests.tag_fixtures import tag_poetry_and_weather

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


def test_a_reply_copying_a_few_shot_examples_tags_is_a_failure_with_its_raw_output(tmp_path):
    """F4: SmolLM2 answered "Predict the class for this text." with `code debugging, python, explanation`, the
    prompt's second example's tag set word for word, and it was stored as the row's tags."""
    from curate.tags import Tagger

    ws = _workspace(tmp_path, ["[echo] Predict the class for this text.", "Write a poem about rain."])
    with FaultServer() as srv:
        run = _tag(ws, srv, "--no-normalize")
    assert run.returncode == 0, run.stderr
    ws = Workspace.open(ws.path)
    assert ws.column("tags_raw") == [[None], [["write", "a"]]]
    (echo,), () = ws.failures("tags_raw")
    assert echo.code is FailureCode.ECHOED_EXAMPLE and echo.turn == 1
    assert "few-shot example 2" in echo.message and '"tag": "code debugging"' in echo.raw
    said = " ".join(run.stdout.split())
    assert "1 row(s) failed" in said and "1 x echoed_example: the tags (code debugging, python, explanation)" in said
    # the example's own query may get the example's answer: tagged, not failed
    query = "My Python loop prints the same number forever. Why, and how do I fix it?"
    itself = Workspace(tmp_path / "itself")
    itself.load(write_jsonl(tmp_path / "q.jsonl", [{"instruction": query, "output": "ok"}]))
    copy_last_example = ScriptedBackend(lambda req: next(m["content"] for m in reversed(req.messages)
                                                         if m["role"] == "assistant"))
    itself.apply(Tagger(copy_last_example), progress=False)
    assert itself.column("tags_raw") == [[["code debugging", "python", "explanation"]]]
    # another query naming those tags' words may well get that set (a strong judge's plain answer): tagged too
    alike = Workspace(tmp_path / "alike")
    alike.load(write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Why does my Python script crash when debugged?",
                                                   "output": "ok"}]))
    alike.apply(Tagger(copy_last_example), progress=False)
    assert alike.column("tags_raw") == [[["code debugging", "python", "explanation"]]]
    assert alike.failures("tags_raw") == [[]]


def test_the_example_tag_sets_are_read_from_the_prompt_file(tmp_path):
    """The examples come from the prompt file itself: another file's examples, another set; an example answer that is
    not IntentTags JSON is an error naming the file."""
    import pytest

    from curate.llm.prompts import PromptError
    from curate.tags import Tagger

    text = (builtin_prompt_dir() / "instag.md").read_text()
    assert [sorted(e.tags) for e in Tagger(None).examples] == [
        ["haiku", "lowercase", "nature", "poetry writing"], ["code debugging", "explanation", "python"]]
    edited = tmp_path / "instag_edited.md"
    edited.write_text(text.replace('"tag": "python"', '"tag": "Python 3"'))
    assert sorted(Tagger(None, prompt=edited).examples[1].tags) == ["code debugging", "explanation", "python 3"]
    broken = tmp_path / "instag_broken.md"
    broken.write_text(text.replace('{"tags": [{"tag": "code debugging"', '{"tagz": [{"tag": "code debugging"'))
    with pytest.raises(PromptError, match="instag_broken.md: the answer of few-shot example 2 is not IntentTags"):
        Tagger(None, prompt=broken)


def test_the_report_describes_tag_columns_as_tags_and_draws_their_frequency_without_a_selection(tmp_path):
    """F9: with every row failed the report called tags_raw "per-turn scores" and tags "text"; a tagged workspace
    with no selection showed no tag figure ("tag coverage: no selection yet")."""
    from curate.report.plots import all_plots
    from curate.report.summary import column_stats
    from curate.tags import Normalizer, Tagger, normalize

    failed = _workspace(tmp_path, [f"[always400] Name prime number {i}." for i in range(2)])
    with FaultServer() as srv:
        from curate.llm.openai_backend import OpenAIBackend

        with pytest.warns(CurateWarning, match=r"tags_raw: 2 of the 2 rows computed now failed"):
            failed.apply(Tagger(OpenAIBackend(srv.base_url, "fault", api_key_env="HOME", max_retries=0)), progress=False)
    with pytest.warns(CurateWarning, match=r"tags: 2 of the 2 rows computed now failed"):
        normalize(failed, Normalizer(min_frequency=None, semantic=False, association=False))
    for column in ("tags_raw", "tags"):
        stats = column_stats(failed, column)
        assert (stats["kind"], stats["filled"], stats["per_row"], stats["distinct"]) == ("list", 0, 0.0, 0), stats
    tagged = Workspace(tmp_path / "tagged")
    tagged.load(write_jsonl(tmp_path / "t.jsonl", [{"instruction": f"Write Poems about Rain {i}.", "output": "ok"}
                                                   for i in range(3)]))
    tag_poetry_and_weather(tagged)
    plots = {title: (fig, missing) for title, fig, missing in all_plots(tagged)}
    fig, missing = plots["tag frequency"]
    assert fig is not None, missing
    assert fig.axes[0].get_title() == "2 distinct tags, 2.00 per tagged row; 3 of 3 rows tagged"
    assert sorted(t.get_text() for t in fig.axes[0].get_yticklabels()) == ["poetry", "weather"]
