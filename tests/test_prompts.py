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
    ("{{ range(10**9)|list|length }}", "OverflowError: Range too big"),
    # widths: a MemoryError traceback (or 1 GB made) before
    ("{{ 'x'|center(1000000000000) }}", "SecurityError: the center filter: a width over"),
    ("{{ '%0300000000d'|format(1) }}", "SecurityError: the format filter: a width over"),
    ("{{ '%0300000000d' % 1 }}", "SecurityError: a % format: a width over"),
    ("{{ '{:>9999999999}'.format(1) }}", "SecurityError: str.format: a width over"),
    ("{{ 'x'.ljust(99999999999) }}", "SecurityError: str.ljust: a width over"),
    ("{{ '%*d' % (100000000, 1) }}", "SecurityError: a % format: a width over"),  # widths from the arguments
    ("{{ '{:>{}}'.format(1, 100000000) }}", "SecurityError: str.format: a width over"),
    ("{{ '{:>{w}}'.format(1, w=100000000) }}", "SecurityError: str.format: a width over"),
    ("{{ '{:>{w[0]}}'.format(1, w=[100000000]) }}", "SecurityError: str.format: a width over"),  # was made
    ("{{ '{:>{1[n]}}'.format(1, {'n': 100000000}) }}", "SecurityError: str.format: a width over")])
def test_a_template_that_fails_or_explodes_is_an_error_naming_its_line(body, error):
    with pytest.raises(PromptRenderError, match=f"prompt 'rate':18: in the user message: {error}"):
        parse_prompt(PROMPT.replace("Rate: {{ instruction }}", body)).render(instruction="x")
    assert parse_prompt(PROMPT.replace("Rate: {{ instruction }}", "{{ 'ab' * 3 }} {{ 2 ** 10 }}")).render(
        instruction="x")[-1]["content"] == "ababab 1024"
    small = "{{ 'ab'|center(6) }}|{{ '%03d' % 7 }}|{{ '{:>3}'.format(1) }}|{{ '%s=%d'|format('a', 2) }}|{{ 10 % 3 }}"
    assert parse_prompt(PROMPT.replace("Rate: {{ instruction }}", small)).render(
        instruction="x")[-1]["content"] == "  ab  |007|  1|a=2|1"
    # a row's numbers are data, not widths: formatted, searched, replaced as before the bounds
    data = ("{{ 'Q: %s'|format(instruction) }}|{{ 'id %d' % 123456789 }}|{{ instruction.replace('5551234567', '') }}"
            "|{{ 'Budget 50000000 USD, %s' % instruction }}|{{ '{0:>{1}}'.format(1, 3) }}|{{ '%*d' % (10, 123456789) }}"
            "|{{ '{0:>{1}} {2}'.format('x', 2, 123456789) }}")  # a width from the arguments: that one alone bounded
    assert parse_prompt(PROMPT.replace("Rate: {{ instruction }}", data)).render(instruction="Is 5551234567 prime?")[
        -1]["content"] == ("Q: Is 5551234567 prime?|id 123456789|Is  prime?|Budget 50000000 USD, Is 5551234567 "
                           "prime?|  1| 123456789| x 123456789")


@pytest.mark.parametrize(("edit", "error"), [
    (("=== user ===\nRate:", "=== User ===\nRate:"), r":17: '=== User ===' is no role marker"),  # joined the answer
    (("=== user ===\nRate:", "== human ==\nRate:"), r":17: '== human ==' is no role marker"),
    (("=== assistant ===\n3", "=== asistant ===\n3"), r":15: '=== asistant ===' is no role marker"),  # misspelt
    (("{{ instruction }}", "{{ instruction }} {{ response }}"),  # rendered empty for a row without a reply, and paid
     r":18: in the user message: 'response' is undefined: to read a pool field or a column, list it"),
    (("temperature: 0.0", "max_tokens: lots"), r"params.max_tokens must be a whole number >= 1, got 'lots'"),
    (("temperature: 0.0", "max_tokens: -5"), r"params.max_tokens must be a whole number >= 1, got -5"),
    (("temperature: 0.0", "temperature: 9"), r"params.temperature must be a number from 0 to 2, got 9"),
    (("name: rate", "name: my rate"), r"name 'my rate' cannot name a column"),  # a dry run passed it
])
def test_a_prompt_file_mistake_is_named_as_it_loads(tmp_path, edit, error):
    path = tmp_path / "rate.md"
    path.write_text(PROMPT.replace(*edit))
    with pytest.raises(PromptError, match=f"{path}{error}" if error.startswith(":") else error):
        load_prompt(path)


def test_a_prompt_file_without_a_user_message_or_in_another_encoding_is_named(tmp_path):
    only_system = PROMPT.split("=== user ===")[0]
    with pytest.raises(PromptError, match="no '=== user ===' section: a chat request needs a user message"):
        parse_prompt(only_system)
    (tmp_path / "latin1.md").write_bytes(PROMPT.replace("Rate things.", "Évaluez.").encode("latin-1"))
    with pytest.raises(PromptError, match=r"latin1.md:12: not UTF-8 \(byte 0xc9\)"):
        load_prompt(tmp_path / "latin1.md")
    (tmp_path / "bom.md").write_bytes(b"\xef\xbb\xbf" + PROMPT.encode())  # as Windows editors save it
    assert load_prompt(tmp_path / "bom.md").fingerprint == parse_prompt(PROMPT).fingerprint


@pytest.mark.parametrize("body", [
    "{% if system %}{{ system }}{% endif %}Turn {{ turn }} of {{ conversation|length }}: {{ instruction }}",
    "{% if extra is defined %}{{ extra }}{% endif %}{{ instruction }}",  # an optional variable, guarded
    "{% set x = 3 %}{% for m in conversation %}{{ m.content }}{{ loop.index }}{% endfor %}{{ x }}{{ range(2)|list }}",
    "{% macro f(a) %}{{ a }}{% endmacro %}{{ f(instruction) }}{% set ns = namespace(n=0) %}{{ ns.n }}",
    "=== Example 1 ===\n{{ instruction }}\n=== System Prompt ===",  # headings, not role markers
])
def test_prompt_files_the_load_checks_must_not_refuse(body):
    """Each loaded before the checks of what a template reads and of mistyped markers, and must still: a blank line
    before a marker, the variables a judge gives every call, loops, macros, headings."""
    text = PROMPT.replace("=== user ===\nRate: {{ instruction }}", "\n=== user ===\n" + body)
    prompt = parse_prompt(text)
    assert prompt.inputs == ("instruction",)
    conversation = [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]
    assert prompt.render(instruction="Q?", system="", turn=1, conversation=conversation)[-1]["role"] == "user"


def test_a_prompt_file_without_inputs_declares_what_its_template_reads():
    text = PROMPT.replace("inputs: [instruction]\n", "").replace("{{ instruction }}", "{{ instruction }} {{ response }}")
    assert parse_prompt(text).inputs == ("instruction", "response")  # a judge then knows it reads the reply


def test_an_override_a_search_by_name_would_skip_is_an_error_not_the_builtin(tmp_path, monkeypatch):
    """Each of these left the built-in prompt judging while the user believed their edit did."""
    quality = (Path(__file__).parents[1] / "prompts" / "quality.md").read_text()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "my_quality.md").write_text(quality)  # declares name: quality
    with pytest.raises(PromptError, match=r"my_quality.md: declares name: quality, but the prompt 'quality' is read "
                                          r"from quality.md inside a prompt folder: move or rename it to .*a/quality.md"):
        load_prompt("quality", prompt_dirs=[tmp_path / "a"])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "quality.md").write_text(quality.replace("name: quality", "name: myquality"))
    with pytest.raises(PromptError, match=r"quality.md: declares name: myquality, but is the prompt 'quality'"):
        load_prompt("quality", prompt_dirs=str(tmp_path / "b"))  # one folder as a str: read as one, not per letter
    deepen = (Path(__file__).parents[1] / "prompts" / "evol" / "deepen.md").read_text()
    (tmp_path / "c" / "evol").mkdir(parents=True)
    (tmp_path / "c" / "evol" / "deepen.md").write_text(deepen.replace("=== user ===", "Mine.\n=== user ===", 1))
    with pytest.raises(PromptError, match=r"deepen.md: declares name: evol_deepen, but the prompt 'evol/deepen' is "
                                          r"read from evol/deepen.md inside a prompt folder: give the folder above it, "
                                          r".*/c, as the prompt folder"):
        load_prompt("evol/deepen", prompt_dirs=[tmp_path / "c" / "evol"])
    assert "Mine." in load_prompt("evol/deepen", prompt_dirs=[tmp_path / "c"]).body
    # what is not such a file loads as before: a user's own judge named like an Evol operation beside the request
    # for the built-in Evol prompt; a subfolder's prompt declaring its file's name; a file named by path while
    # $CURATE_PROMPTS names a folder that is gone
    (tmp_path / "d" / "team").mkdir(parents=True)
    (tmp_path / "d" / "reasoning.md").write_text(PROMPT.replace("name: rate", "name: reasoning"))
    assert load_prompt("evol/reasoning", prompt_dirs=[tmp_path / "d"]).name == "evol_reasoning"
    (tmp_path / "d" / "team" / "quality.md").write_text(quality)
    assert load_prompt("team/quality", prompt_dirs=[tmp_path / "d"]).name == "quality"
    monkeypatch.setenv("CURATE_PROMPTS", str(tmp_path / "gone"))
    assert load_prompt(tmp_path / "d" / "reasoning.md").name == "reasoning"
    from curate.evol.rules import builtin_leak_phrases

    builtin_leak_phrases.cache_clear()
    assert builtin_leak_phrases("deepen")  # the built-in file's phrases, whatever $CURATE_PROMPTS says


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
    with pytest.raises(PromptError, match=r"prompt folder of prompt_dirs= \(CLI: --prompt-dir\) not found"):
        load_prompt("quality", prompt_dirs=[tmp_path / "promtps"])
    (tmp_path / "file.md").write_text(PROMPT)
    with pytest.raises(PromptError, match="is not a folder"):
        load_prompt("quality", prompt_dirs=[tmp_path / "file.md"])
    monkeypatch.setenv("CURATE_PROMPTS", str(tmp_path / "gone"))
    with pytest.raises(PromptError, match=r"prompt folder of \$CURATE_PROMPTS not found"):
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


def test_an_unknown_name_lists_the_prompts_of_the_users_folders_beside_the_builtins(tmp_path, monkeypatch):
    """The error listed the built-in names alone: a judge in --prompt-dir or $CURATE_PROMPTS, misspelt, looked absent."""
    for folder, name in (("mine", "myjudge"), ("team", "teamjudge")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{name}.md").write_text(PROMPT.replace("name: rate", f"name: {name}"))
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("CURATE_PROMPTS", str(tmp_path / "team"))
    with pytest.raises(PromptError) as err:
        load_prompt("myjudg", prompt_dirs=[tmp_path / "mine", tmp_path / "empty"])
    assert str(err.value) == (f"no prompt named 'myjudg'; {tmp_path / 'mine'} has ['myjudge']; {tmp_path / 'empty'} "
                              f"has none; {tmp_path / 'team'} has ['teamjudge']; built-ins "
                              f"({load_prompt('quality').path.parent}): {builtin_names()}")


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
    from curate.llm.judges import Judge
    from curate.session import Workspace
    from tests.cli_in_process import curate_in_process

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
    proc = curate_in_process("score", ws.path, "--judge", tmp_path / "param.md", "--base-url", "http://127.0.0.1:9/v1",
                             "--model", "m", "--dry-run")
    assert proc.returncode == 78 and "did you mean params" in proc.stderr + proc.stdout
    assert parse_prompt(PROMPT).params == {"temperature": 0.0}  # the well-formed file still loads


def test_a_judge_run_names_the_prompt_file_it_sends(tmp_path, monkeypatch):
    """A --prompt-dir or $CURATE_PROMPTS file takes the built-in's place by name, and nothing said which one judged."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.session import Workspace
    from tests.conftest import write_jsonl

    Workspace(tmp_path / "ws").load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "Say hi.", "output": "hi"}]))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "quality.md").write_text(PROMPT.replace("name: rate", "name: quality"))
    judge = ["score", str(tmp_path / "ws"), "--judge", "quality", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
             "--dry-run"]
    for extra, prompt in (([], load_prompt("quality").path), (["--prompt-dir", str(tmp_path / "mine")],
                                                               tmp_path / "mine" / "quality.md")):
        result = CliRunner().invoke(app, [*judge, *extra])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[0] == f"quality: prompt {prompt}"


def test_a_prompt_reading_a_column_the_pool_lacks_names_its_file(tmp_path):
    """The workspace's error named the column alone ("a step reads column 'topic'"), not the prompt that reads it."""
    from curate.llm.dryrun import estimate
    from curate.llm.judges import Judge
    from curate.session import Workspace
    from tests.conftest import ScriptedBackend, write_jsonl

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "Say hi.", "output": "hi"}]))
    path = tmp_path / "rate.md"
    path.write_text(PROMPT.replace("inputs: [instruction]", "inputs: [instruction, topic]")
                    .replace("Rate: {{ instruction }}", "Rate: {{ instruction }} on {{ topic }}"))
    backend = ScriptedBackend(lambda request: "3")
    said = f"{path}: reads column 'topic', which {ws.path} has neither in the pool nor derived"
    with pytest.raises(PromptError) as err:
        ws.apply(Judge(path, backend), progress=False)
    assert str(err.value) == said and not ws.has_column("rate") and backend.requests_sent == 0
    with pytest.raises(PromptError) as err:
        estimate(ws, Judge(path, backend))
    assert str(err.value) == said
