"""Prompt files: sandboxed rendering, fingerprints, user override folders, built-ins."""

from pathlib import Path

import pytest

from curate.llm.prompts import PromptError, PromptRenderError, builtin_names, load_prompt, parse_prompt

PROMPT = """---
name: rate
version: 1
inputs: [instruction]
output:
  kind: digit_score
  scale: [1, 5]
params:
  temperature: 0.0
---
=== system ===
Rate things.
=== user ===
Example
=== assistant ===
3
=== user ===
Rate: {{ instruction }}
"""


def test_row_text_is_data_not_template_code():
    prompt = parse_prompt(PROMPT)
    nasty = "{{ 7*7 }} {% for x in range(3) %}x{% endfor %} {{ ''.__class__.__mro__ }}"
    messages = prompt.render(instruction=nasty)
    assert messages[-1] == {"role": "user", "content": f"Rate: {nasty}"}
    assert "49" not in messages[-1]["content"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]


def test_template_itself_is_sandboxed():
    evil = PROMPT.replace("Rate: {{ instruction }}", "{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(Exception, match="unsafe|access"):
        parse_prompt(evil).render(instruction="x")


@pytest.mark.parametrize(("body", "error"), [
    ("{{ 'a' * 10000000000 }}", "SecurityError: a repetition of 10,000,000,000 items"),  # was 24 GB, then the OOM killer
    ("{{ 10 ** 100000 }}", "SecurityError: 10 \\*\\* 100000 is over"),
    ("{{ '%d' % instruction }}", "TypeError: %d format"),  # these three were tracebacks
    ("{{ ('{0}'|attr('format_map'))({}) }}", "IndexError"),
    ("{{ range(10**9)|list|length }}", "OverflowError: Range too big")])
def test_a_template_that_fails_or_explodes_is_an_error_naming_its_line(body, error):
    with pytest.raises(PromptRenderError, match=f"prompt 'rate':18: in the user message: {error}"):
        parse_prompt(PROMPT.replace("Rate: {{ instruction }}", body)).render(instruction="x")
    assert parse_prompt(PROMPT.replace("Rate: {{ instruction }}", "{{ 'ab' * 3 }} {{ 2 ** 10 }}")).render(
        instruction="x")[-1]["content"] == "ababab 1024"


def test_a_builtin_name_is_the_builtin_prompt_whatever_the_current_folder_holds(tmp_path, monkeypatch):
    """A file named complexity where curate ran took the judge's place; a folder named quality (a scorer saved with
    --out quality) broke the quality judge."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "complexity").write_text("not a prompt")
    (tmp_path / "quality").mkdir()
    assert load_prompt("complexity").path == load_prompt("complexity", prompt_dirs=[]).path != tmp_path / "complexity"
    assert load_prompt("quality").name == "quality"
    (tmp_path / "mine").write_text(PROMPT)  # a file that names no prompt is still read as a file
    assert load_prompt("mine").name == "rate"
    (tmp_path / "complexity").write_text(PROMPT)  # spelt as a path, it is the file
    assert load_prompt("./complexity").name == load_prompt(tmp_path / "complexity").name == "rate"


def test_missing_variable_is_an_error():
    with pytest.raises(PromptError, match="instruction"):
        parse_prompt(PROMPT).render(other="x")


def test_fingerprint_changes_on_body_and_declaration_edits():
    base = parse_prompt(PROMPT)
    assert parse_prompt(PROMPT).fingerprint == base.fingerprint
    assert parse_prompt(PROMPT.replace("Rate things.", "Rate things carefully.")).fingerprint != base.fingerprint
    assert parse_prompt(PROMPT.replace("temperature: 0.0", "temperature: 0.7")).fingerprint != base.fingerprint
    assert parse_prompt(PROMPT.replace("scale: [1, 5]", "scale: [0, 5]")).fingerprint != base.fingerprint


def test_user_dir_overrides_builtin(tmp_path):
    builtin = load_prompt("quality")
    (tmp_path / "quality.md").write_text(PROMPT.replace("name: rate", "name: quality"))
    mine = load_prompt("quality", prompt_dirs=[tmp_path])
    assert mine.path == tmp_path / "quality.md"
    assert mine.fingerprint != builtin.fingerprint
    assert load_prompt(tmp_path / "quality.md").fingerprint == mine.fingerprint


def test_a_missing_prompt_folder_is_an_error_not_the_builtins_in_silence(tmp_path, monkeypatch):
    """A mistyped ``--prompt-dir`` (or ``$CURATE_PROMPTS``) folder was skipped: the built-in prompt judged and the
    user believed their edited one had."""
    with pytest.raises(PromptError, match=r"prompt folder \(--prompt-dir\) not found"):
        load_prompt("quality", prompt_dirs=[tmp_path / "promtps"])
    (tmp_path / "file.md").write_text(PROMPT)
    with pytest.raises(PromptError, match="is not a folder"):
        load_prompt("quality", prompt_dirs=[tmp_path / "file.md"])
    monkeypatch.setenv("CURATE_PROMPTS", str(tmp_path / "gone"))
    with pytest.raises(PromptError, match=r"\$CURATE_PROMPTS\) not found"):
        load_prompt("quality")


def test_builtins_parse_with_few_shot_examples():
    assert {"complexity", "quality", "alpagasus"} <= set(builtin_names())
    assert "README" not in builtin_names()  # the prompts folder's documentation was offered as a prompt
    for name, scale in (("complexity", (1, 6)), ("quality", (1, 6)), ("alpagasus", (0, 5))):
        prompt = load_prompt(name)
        assert prompt.output_kind == "digit_score" and prompt.scale == scale
        roles = [m["role"] for m in prompt.render(instruction="Do X.", response="Done.")]
        assert roles.count("assistant") >= 3 and roles[-1] == "user"


def test_malformed_files_are_reported():
    with pytest.raises(PromptError, match="front-matter"):
        parse_prompt("no front matter")
    with pytest.raises(PromptError, match="kind"):
        parse_prompt(PROMPT.replace("digit_score", "poem"))
    with pytest.raises(PromptError, match="template error"):
        parse_prompt(PROMPT.replace("{{ instruction }}", "{{ instruction "))
    with pytest.raises(PromptError, match="no prompt named"):
        load_prompt("does-not-exist")


@pytest.mark.parametrize("section", ["system", "user"])
def test_a_template_error_names_the_line_of_the_file(tmp_path, section):
    lines = (Path(__file__).parents[1] / "prompts" / "complexity.md").read_text().splitlines()
    marker = lines.index(f"=== {section} ===")
    broken = next(i for i in range(len(lines) - 1, marker, -1) if "{{" in lines[i]) if section == "user" else marker + 1
    lines[broken] += " {% if %}"
    (tmp_path / "complexity.md").write_text("\n".join(lines) + "\n")
    with pytest.raises(PromptError) as err:
        load_prompt("complexity", prompt_dirs=[tmp_path])
    assert str(err.value).startswith(f"{tmp_path / 'complexity.md'}:{broken + 1}: template error in the {section}")


def test_a_misspelt_or_misplaced_front_matter_key_is_an_error_naming_the_file_not_dropped(tmp_path):
    """A key curate does not read was dropped in silence: ``param: {max_tokens: 1}`` loaded, passed a dry run and
    sent no max_tokens; ``output.parser`` or a text prompt's ``scale`` did nothing. Each now stops at load, naming
    the file and the key meant."""
    import subprocess
    import sys

    from curate.llm.judges import Judge
    from curate.session import Workspace

    cases = {"param": (PROMPT.replace("params:", "param:"), "unknown front-matter key param .*did you mean params"),
             "parser": (PROMPT.replace("scale: [1, 5]", "parser: digits"), "unknown front-matter key output.parser"),
             "scale": (PROMPT.replace("digit_score", "text"), r"output.scale \(a text output takes kind\)"),
             "model": (PROMPT.replace("kind: digit_score\n  scale: [1, 5]", "kind: json"),
                       "a json prompt needs output.model")}
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.md"
        path.write_text(text)
        with pytest.raises(PromptError, match=message) as err:
            Judge(str(path))
        assert str(err.value).startswith(str(path))
    ws = Workspace(tmp_path / "ws")
    ws.load([{"instruction": "Say hi.", "output": "Hi."}])
    proc = subprocess.run([sys.executable, "-m", "curate.cli", "score", str(ws.path), "--judge",
                           str(tmp_path / "param.md"), "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                           "--dry-run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "did you mean params" in proc.stderr + proc.stdout
    assert parse_prompt(PROMPT).params == {"temperature": 0.0}  # the well-formed file still loads
