"""A customised prompt file that would mislead a judge in silence is refused as it loads, naming the file and line:
few-shot answers off the digit scale, a max_tokens a digit judge drops, duplicate keys or sections, other files
read, generators without bound; and what a dry run says of a prompt without max_tokens."""

from pathlib import Path

import pytest

from curate.llm.prompts import PromptError, PromptRenderError, load_prompt

QUALITY = Path(__file__).resolve().parents[1] / "prompts" / "quality.md"


def _copy(tmp_path: Path, edit=lambda text: text, name: str = "mine.md") -> Path:
    path = tmp_path / name
    path.write_text(edit(QUALITY.read_text()))
    return path


def _line_of(path: Path, text: str) -> int:
    return next(k for k, line in enumerate(path.read_text().splitlines(), 1) if line == text)


@pytest.mark.parametrize("scale, wrong", [("[1, 5]", "6"), ("[0, 1]", "5")])
def test_a_few_shot_answer_off_the_digit_scale_is_refused_naming_its_line(tmp_path, scale, wrong):
    """quality.md copied with scale [1, 5] answered its own example 6 (that digit's mass dropped, scores biased);
    with [0, 1], examples answering 1, 5, 2 made 98% of rows low_digit_mass failures. Both loaded in silence."""
    path = _copy(tmp_path, lambda t: t.replace("scale: [1, 6]", f"scale: {scale}").replace("\n2\n=== user", "\n6\n=== user"))
    with pytest.raises(PromptError) as err:
        load_prompt(path)
    assert str(err.value).startswith(f"{path}:{_line_of(path, wrong)}: the few-shot answer '{wrong}' is not one digit from")
    load_prompt(_copy(tmp_path, name="ok.md"))  # the shipped examples are on its scale


def test_a_digit_judge_refuses_a_max_tokens_it_would_drop(tmp_path):
    """max_tokens: 5 was sent as 1 (a digit judge asks for one token); prompts/README.md says no setting is dropped."""
    path = _copy(tmp_path, lambda t: t.replace("max_tokens: 1", "max_tokens: 5"))
    with pytest.raises(PromptError, match=r"params.max_tokens: 5 cannot apply to a digit_score prompt") as err:
        load_prompt(path)
    assert str(err.value).startswith(f"{path}: ")


def test_a_digit_judge_refuses_a_max_tokens_given_in_python(tmp_path):
    """Judge("quality", params={"max_tokens": 5}) was sent max_tokens 1 in silence, as the prompt file's was."""
    from curate.llm.judges import Judge
    from tests.conftest import ScriptedBackend

    with pytest.raises(PromptError, match=r"\(the params given with it\): params.max_tokens: 5 cannot apply"):
        Judge("quality", ScriptedBackend(lambda request: "3"), params={"max_tokens": 5}).request_params()
    assert Judge("quality", ScriptedBackend(lambda request: "3"), params={"max_tokens": 1}).request_params()["max_tokens"] == 1


def test_include_import_and_extends_are_refused_naming_the_line(tmp_path):
    """{% include '/etc/passwd' %} failed with 'TypeError: no loader for this environment specified'."""
    for tag in ("{% include '/etc/passwd' %}", "{% import 'x.j2' as x %}", "{% extends 'base.md' %}"):
        path = _copy(tmp_path, lambda t, tag=tag: t.replace("Answer: {{ response }}", f"Answer: {{{{ response }}}} {tag}"))
        with pytest.raises(PromptError, match="include, import and extends are not available in prompt files") as err:
            load_prompt(path)
        assert str(err.value).startswith(f"{path}:{_line_of(path, f'Answer: {{{{ response }}}} {tag}')}: ")


def test_lipsum_and_nested_ranges_are_bounded(tmp_path):
    """{{ lipsum(100000) }} made 44.8M characters in 6 s; range(99999) inside range(99999) spun until killed."""
    lipsum = tmp_path / "lipsum.md"
    lipsum.write_text("---\nname: lip\ninputs: [instruction]\n---\n=== user ===\n{{ instruction }}\n{{ lipsum(100000) }}\n")
    with pytest.raises(PromptError, match=r"lipsum\(\) is not available in prompt files") as err:
        load_prompt(lipsum)
    assert str(err.value).startswith(f"{lipsum}:7: ")
    nested = tmp_path / "nested.md"
    # 400 ranges of 400 (160,400 items; 99,999 of 99,999 spun until killed): over the budget, where each is under
    nested.write_text("---\nname: nested\ninputs: [instruction]\n---\n=== user ===\n{{ instruction }}\n"
                      "{% for i in range(400) %}{% for j in range(400) %}{% endfor %}{% endfor %}\n")
    with pytest.raises(PromptRenderError, match="over the sandbox's 100,000 items together") as err:
        load_prompt(nested).render(instruction="x")
    assert str(err.value).startswith(f"{nested}:7: ")
    ok = tmp_path / "ok.md"  # loops over ranges and row data, loop.index and filters still render
    ok.write_text("---\nname: ok\ninputs: [instruction]\n---\n=== user ===\n{% for i in range(3) %}{{ loop.index }}"
                  "{% endfor %}{% for w in instruction.split() %}{{ w | upper }}{% endfor %}\n")
    prompt = load_prompt(ok)
    for _ in range(3):  # each render has its own budget
        assert prompt.render(instruction="a b")[-1]["content"] == "123AB"


def test_duplicate_keys_and_yaml_errors_name_the_files_line(tmp_path):
    """version: 1 then version: 2 loaded (the last won); a YAML error named the YAML block's line, not the file's."""
    path = _copy(tmp_path, lambda t: t.replace("version: 1\n", "version: 1\nversion: 2\n"))
    with pytest.raises(PromptError, match=r"key 'version' given twice \(first on line 3\)") as err:
        load_prompt(path)
    assert str(err.value).startswith(f"{path}:4: ")
    path = _copy(tmp_path, lambda t: t.replace("inputs: [instruction, response]", "inputs: [instruction, response"))
    with pytest.raises(PromptError, match="bad YAML front-matter") as err:
        load_prompt(path)
    assert str(err.value).startswith(f"{path}:6: ")  # the next key, where YAML finds the list unclosed


def test_a_second_system_section_and_an_empty_last_answer_are_refused(tmp_path):
    """Two '=== system ===' sections were sent as two system messages; an empty '=== assistant ===' at the end was
    sent as an empty answer after the question."""
    path = _copy(tmp_path, lambda t: t.replace("=== user ===", "=== system ===\nsecond\n=== user ===", 1))
    with pytest.raises(PromptError, match=r"a second '=== system ===' section \(the first is on line 13\)") as err:
        load_prompt(path)
    assert str(err.value).startswith(f"{path}:15: ")
    path = tmp_path / "last.md"
    path.write_text("---\nname: last\ninputs: [instruction]\n---\n=== user ===\n{{ instruction }}\n=== assistant ===\n")
    with pytest.raises(PromptError, match=r"an empty '=== assistant ===' section ends the file") as err:
        load_prompt(path)
    assert str(err.value).startswith(f"{path}:7: ")


def test_a_scale_over_one_digit_says_what_works_and_its_line(tmp_path):
    path = _copy(tmp_path, lambda t: t.replace("scale: [1, 6]", "scale: [1, 10]"))
    with pytest.raises(PromptError) as err:
        load_prompt(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{_line_of(path, '  scale: [1, 10]')}: digit_score scale 1..10 must be single")
    assert "1..9 or 0..9" in message and "kind: json" in message


def test_a_dry_run_says_output_tokens_are_assumed_without_max_tokens(tmp_path):
    """'output tokens: at most 3,072 (max_tokens of each request)' for a prompt setting no max_tokens: none is sent,
    and 1,024 a request is only the assumed worst case."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.session import Workspace
    from tests.conftest import write_jsonl

    Workspace(tmp_path / "ws").load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"Say {k}.", "output": "hi"}
                                                                       for k in range(3)]))
    plain = tmp_path / "plain.md"
    plain.write_text("---\nname: plain\ninputs: [instruction]\noutput: {kind: text}\n---\n=== user ===\n{{ instruction }}\n")
    capped = tmp_path / "capped.md"
    capped.write_text(plain.read_text().replace("name: plain", "name: capped").replace("output:", "params: {max_tokens: 7}\noutput:"))
    said = {}
    for path in (plain, capped):
        result = CliRunner().invoke(app, ["score", str(tmp_path / "ws"), "--judge", str(path), "--base-url",
                                          "http://127.0.0.1:9/v1", "--model", "m", "--dry-run"])
        assert result.exit_code == 0, result.output
        said[path.stem] = next(line.strip() for line in result.output.splitlines() if "output tokens" in line)
    assert said["plain"].startswith("output tokens: 3,072, assumed: at most 1,024 a request where the prompt sets no "
                                    "max_tokens")
    assert said["capped"] == "output tokens: at most 21 (max_tokens of each request)"


def test_a_second_prompt_file_of_the_same_name_cannot_replace_a_judges_column(tmp_path, fault_server):
    """Another prompt file declaring the name of a column a first file scored replaced its labels, said only as
    "(3 of the rows computed again: stored under other settings ...)". It is a refused setting now (exit 78) naming
    both files; --column keeps both, and an edit of the same file re-scores as before."""
    from curate.session import Workspace
    from tests.cli_in_process import curate_in_process
    from tests.conftest import write_jsonl

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"Say {k}.", "output": "hi"} for k in range(3)]))
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = _copy(tmp_path / "one", lambda t: t.replace("name: quality", "name: mine"))
    second = _copy(tmp_path / "two", lambda t: t.replace("name: quality", "name: mine").replace("You grade", "Grade"))

    def score(prompt: Path, *extra: str):
        return curate_in_process("score", ws.path, "--judge", prompt, "--base-url", fault_server.base_url,
                                 "--model", "fault", "--api-key-env", "FAULT_KEY", *extra,
                                 env={**__import__("os").environ, "FAULT_KEY": "k"})

    assert score(first).returncode == 0
    labels = Workspace(tmp_path / "ws").row_values("mine", ws.column_ids("mine"))
    refused = score(second)
    said = refused.stdout + refused.stderr
    assert refused.returncode == 78, said
    assert str(first.resolve()) in said and str(second) in said and "--column NEW" in said
    assert Workspace(tmp_path / "ws").row_values("mine", ws.column_ids("mine")) == labels  # untouched
    assert score(second, "--column", "mine_two").returncode == 0
    was = load_prompt(first).fingerprint
    first.write_text(first.read_text().replace("You grade", "Please grade"))  # the same file, edited
    edited = score(first)
    assert edited.returncode == 0
    assert f"prompt fingerprint {was} -> {load_prompt(first).fingerprint}" in edited.stdout.splitlines()[0]
    moved = tmp_path / "elsewhere"  # the same text at another path (a clone, a folder moved) is the same prompt
    moved.mkdir()
    (moved / first.name).write_bytes(first.read_bytes())
    again = score(moved / first.name)
    assert again.returncode == 0, again.stdout + again.stderr


def test_curate_run_reads_the_judges_prompts_from_prompt_dir(tmp_path, fault_server):
    """curate run had no --prompt-dir (curate score and evol do): its judges read only $CURATE_PROMPTS and the built-ins."""
    from curate.session import Workspace
    from tests.cli_in_process import curate_in_process
    from tests.conftest import write_jsonl

    pool = write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"Name a {w}.", "output": f"A {w}."}
                                              for w in ("fruit", "tool", "bird", "river")])
    (tmp_path / "mine").mkdir()
    mine = _copy(tmp_path / "mine", lambda t: t.replace("You grade", "Marker7Q: you grade"), name="quality.md")
    run = ["run", pool, "--budget", "2", "--no-report", "--base-url", fault_server.base_url, "--model", "fault",
           "--api-key-env", "FAULT_KEY"]
    env = {**__import__("os").environ, "FAULT_KEY": "k"}
    missing = curate_in_process(*run, "--out", tmp_path / "none", "--prompt-dir", tmp_path / "nowhere", env=env)
    assert missing.returncode == 78 and "prompt folder of prompt_dirs= (CLI: --prompt-dir) not found" in missing.stderr
    assert not (tmp_path / "none").exists() and fault_server.total == 0  # refused before the load
    def quality_tokens(*extra) -> str:  # the dry run's prompt tokens of the quality judge
        said = curate_in_process(*run, "--out", tmp_path / "dry", "--dry-run", *extra, env=env).stdout.splitlines()
        block = said[next(k for k, line in enumerate(said) if line.startswith("dry run quality")):]
        return next(line for line in block if "prompt tokens" in line)

    assert quality_tokens("--prompt-dir", tmp_path / "mine") != quality_tokens()  # the dry run reads the override too
    done = curate_in_process(*run, "--out", tmp_path / "out", "--prompt-dir", tmp_path / "mine", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    systems = [m[0]["content"] for m in fault_server.messages if m[0]["role"] == "system"]
    assert sum("Marker7Q" in s for s in systems) == 4  # the quality judge's four rows; complexity is the built-in
    ws = Workspace(tmp_path / "out" / "workspace")
    assert ws.column_provenance("quality")["prompt_path"] == str(mine.resolve())
    assert ws.column_provenance("complexity")["prompt_path"] == str(load_prompt("complexity").path.resolve())


@pytest.mark.parametrize("name", ["quality", "complexity", "instag", "alpagasus"])
def test_a_prompt_saved_with_windows_line_endings_loads_as_it_did(tmp_path, name):
    """The load checks' front-matter fence (`^---[ \\t]*$`) did not match `---\\r`: a prompt file saved with CRLF by
    a Windows editor was refused ("front-matter is not closed"), where it loaded before."""
    source = load_prompt(name).path
    crlf = tmp_path / f"{name}.md"
    crlf.write_bytes(source.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    lf, loaded = load_prompt(source), load_prompt(crlf)
    assert (loaded.name, loaded.output_kind, loaded.scale, loaded.params, loaded.inputs) == \
        (lf.name, lf.output_kind, lf.scale, lf.params, lf.inputs)
    assert loaded.body.replace("\r\n", "\n") == lf.body


def test_the_text_of_the_prompt_that_scored_a_column_is_kept_in_the_workspace(tmp_path, fault_server):
    """A column's provenance named the prompt's file, version and fingerprint, but not its text: once the file was
    edited (its version left as it was) or removed, nothing said which text produced the labels."""
    import json

    from curate.llm.backends import OpenAIBackend
    from curate.llm.judges import Judge
    from curate.session import Workspace
    from tests.conftest import write_jsonl

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"Say {k}.", "output": "hi"} for k in range(2)]))
    prompt = _copy(tmp_path, lambda t: t.replace("name: quality", "name: mine"))
    scored_with = prompt.read_text()
    ws.score(Judge(str(prompt)), OpenAIBackend(fault_server.base_url, "fault", api_key="k"), progress=False)
    prompt.write_text(scored_with.replace("You grade", "Please grade"))  # edited afterwards, version unchanged
    provenance = ws.column_provenance("mine")
    kept = json.loads((ws.path / "cache" / "prompts" / f"{provenance['prompt_fingerprint']}.json").read_text())
    assert kept["body"] in scored_with and "You grade" in kept["body"]
    assert kept["declaration"]["name"] == "mine" and kept["path"] == str(prompt.resolve())
