"""Prompt files: YAML front-matter + a sandboxed Jinja2 body split into chat messages.

A prompt lives in ``<name>.md``::

    ---
    name: complexity
    version: 1
    inputs: [instruction]
    output: {kind: digit_score, scale: [1, 6]}
    params: {temperature: 0.0, max_tokens: 1}
    ---
    === system ===
    ...
    === user ===
    {{ instruction }}

Row text is passed to the template as data, never compiled, so a row containing ``{{ 7*7 }}``
renders literally. The fingerprint hashes the template source and the declaration, so editing
either gives new cache keys (only rows scored under the old text are re-run).

A prompt file cannot run code or redirect requests: ``output.model`` names a Pydantic class defined
in curate itself or one registered with :func:`register_output_model` (nothing else is imported), and
``params`` may not set the model, the messages or anything else that changes where or how often a
request goes (``FORBIDDEN_PARAMS``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from curate.errors import python_and_cli
from curate.llm.output_models import register_output_model as register_output_model  # its public home
from curate.llm.output_models import resolve_output_model
from curate.llm.prompt_checks import (
    PromptError,
    check_not_misplaced,
    check_param_values,
    check_read_variables,
    read_prompt_file,
    read_variables,
)
from curate.llm.prompt_layout import (
    check_digit_examples,
    check_digit_params,
    check_no_other_files,
    check_no_unbounded_globals,
    check_sections,
    digit_scale,
    key_line,
    load_front_matter,
)
from curate.llm.sandbox import BoundedSandbox
from curate.storage.files import is_name

OUTPUT_KINDS = ("digit_score", "json", "text")
# The front matter's keys: a misspelt one ("param:") would be dropped in silence and its setting never sent.
FRONT_MATTER_KEYS = ("name", "version", "description", "inputs", "output", "params", "leak_phrases")
OUTPUT_KEYS = {"digit_score": ("kind", "scale"), "json": ("kind", "model"), "text": ("kind",)}
ROLES = ("system", "user", "assistant")
_MARKER = re.compile(r"^===\s*(system|user|assistant)\s*===\s*$", re.MULTILINE)
# a line of the marker's shape; it is a mistyped marker when its word is a role's in another case, misspelt
# ('=== uesr ===', '=== asistant ==='), or another name of one ('=== human ==='); '=== Example 1 ===' is text
_MARKER_LIKE = re.compile(r"^[ \t]*={2,}[ \t]*([^=\n]+?)[ \t]*={2,}[ \t\r]*$", re.MULTILINE)
_ROLE_WORDS = (*ROLES, "human", "ai", "bot", "gpt", "model", "developer", "tool")


# Request fields a prompt's params may not set: they would change the model, the messages, or how many
# answers (and how much cost) one request brings back, or stream a reply the engine cannot read.
FORBIDDEN_PARAMS = frozenset({"model", "messages", "stream", "stream_options", "n", "best_of", "tools",
                              "tool_choice", "functions", "function_call", "parallel_tool_calls", "audio",
                              "modalities", "prediction", "extra_body", "extra_headers", "extra_query"})


class PromptRenderError(PromptError):
    """Rendering failed (undefined variable, sandbox violation); ``variables`` are the row's, when known."""

    def __init__(self, message: str, variables: dict[str, Any] | None = None):
        super().__init__(message)
        self.variables = variables


def builtin_prompt_dir() -> Path:
    """Built-in prompts: ``curate/prompts`` inside an installed wheel, else ``prompts/`` at the repo root."""
    try:
        from importlib.resources import files

        packaged = files("curate") / "prompts"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "prompts"


@lru_cache(maxsize=1)
def _env() -> ImmutableSandboxedEnvironment:
    return BoundedSandbox(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)


class _NoneProbe:
    """Stands in for a null input in :meth:`Prompt.prints_none`: false like None, printed as a marker by ``{{ }}``,
    ``~``, filters and ``repr``, so wherever the template prints the null the marker shows."""
    text = "CurateNoneProbe7f3a9b"

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


_NONE_PROBE = _NoneProbe()
_PROBE_TEXT = re.compile(_NoneProbe.text, re.IGNORECASE)


@dataclass(frozen=True)
class Prompt:
    """A parsed prompt file. ``render(**variables)`` -> list of ``{"role", "content"}`` messages."""

    name: str
    version: int | str
    description: str
    inputs: tuple[str, ...]
    output_kind: str
    scale: tuple[int, int] | None
    output_model: str | None
    params: dict[str, Any]
    body: str
    path: Path | None = None
    declaration: dict[str, Any] = field(default_factory=dict)
    body_line: int = 1  # the body's first line in its file (template errors name the file's line)

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of the template source and the declaration (front-matter), 16 hex digits."""
        blob = json.dumps({"declaration": self.declaration, "body": self.body}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def where(self) -> str:
        """The prompt's file, or its name for a prompt parsed from text."""
        return str(self.path) if self.path else f"prompt {self.name!r}"

    def render(self, **variables: Any) -> list[dict[str, str]]:
        """Chat messages with ``variables`` substituted as data (never evaluated as template code).

        A system message that renders empty is left out. Raises PromptRenderError (naming the file and
        message) for a missing input, a variable the template uses but was not given, or a sandbox violation.
        """
        missing = [v for v in self.inputs if v not in variables]
        if missing:
            raise PromptRenderError(f"{self.where}: prompt {self.name!r} needs {missing}; got {sorted(variables)}")
        messages = []
        for role, template, static, line in _compiled(self.body, self.name, self.where, self.body_line):
            if template is None:
                text = static
            else:
                try:
                    text = template.render(**variables).strip("\n")
                # UndefinedError, SecurityError ...; and a template's own arithmetic or formatting ('%d' % text)
                except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError, MemoryError) as exc:
                    at = line + (_template_line(exc) or 1) - 1
                    hint = ("; to read a pool field or a column, list it in the prompt's inputs (now "
                            f"{list(self.inputs)})") if isinstance(exc, UndefinedError) else ""
                    raise PromptRenderError(f"{self.where}:{at}: in the {role} message: {type(exc).__name__}: "
                                            f"{exc}{hint}") from exc
            if role == "system" and not text.strip():
                continue  # a row without a system message: send none (a chat template then applies its own default)
            messages.append({"role": role, "content": text})
        return messages

    def prints_none(self, names: Sequence[str], **variables: Any) -> bool:
        """Whether rendering with ``variables`` prints the null value (None, or a None in a list) of one of ``names``
        as the text "None": rendered again with a marker for those nulls, the marker shows exactly where the first
        rendering has "None" (``{{ x }}``, ``{{ "c: " ~ x }}``, ``{{ x | upper }}``, ``{{ [x] }}``); a null the
        template guards (``{% if x %}``, ``{{ x or "" }}``) prints neither."""
        def probed(value: Any) -> Any:
            if isinstance(value, list):
                return [_NONE_PROBE if v is None else v for v in value]
            return _NONE_PROBE if value is None else value

        sent = "\n".join(m["content"] for m in self.render(**variables))
        try:
            marked = "\n".join(m["content"] for m in self.render(**{k: probed(v) if k in names else v
                                                                  for k, v in variables.items()}))
        except Exception:  # the marker took a branch the null did not ({% if x is none %}...{% else %}{{ x * 2 }}):
            return False  # the sent text above rendered without printing the null there
        return bool(_PROBE_TEXT.search(marked)) and _PROBE_TEXT.sub("None", marked).lower() == sent.lower()

    def model_class(self):
        """The Pydantic model named by ``output.model`` (json prompts): curate's own or a registered one."""
        if not self.output_model:
            return None
        return resolve_output_model(self.output_model, self.where)

    def _repr_html_(self) -> str:
        import html

        return (f"<div><b>prompt {html.escape(self.name)}</b> v{html.escape(str(self.version))} "
                f"({html.escape(self.output_kind)}; fingerprint {self.fingerprint})<br>"
                f"<pre>{html.escape(self.body)}</pre></div>")


def _sections(body: str, first_line: int) -> list[tuple[str, str, int]]:
    """(role, its template text, its marker's line in the file) of each section of ``body``."""
    parts, out = _MARKER.split(body), []
    line = first_line + parts[0].count("\n")
    for role, text in zip(parts[1::2], parts[2::2], strict=True):
        out.append((role, text, line))
        line += text.count("\n")
    return out


@lru_cache(maxsize=256)
def _compiled(body: str, name: str, where: str, first_line: int = 1):
    """The body's (role, template, static text) sections; ``first_line``: the body's line in its file, so a
    syntax error names the file's line."""
    env = _env()
    for found in _MARKER_LIKE.finditer(body):
        word = found.group(1).strip().lower()
        if not _MARKER.fullmatch(found.group(0)) and difflib.get_close_matches(word, _ROLE_WORDS, n=1, cutoff=0.7):
            # read as text, it would have joined the message before it
            at = first_line + body.count("\n", 0, found.start())
            raise PromptError(f"{where}:{at}: {found.group(0).strip()!r} is no role marker: a section starts at "
                              "'=== system ===', '=== user ===' or '=== assistant ===' (lower case)")
    if _MARKER.split(body)[0].strip():
        raise PromptError(f"{where}: text before the first '=== role ===' line")
    check_sections(_sections(body, first_line), where)
    out = []
    for role, text, line in _sections(body, first_line):
        try:
            template = env.from_string(text)
            if not any(tag in text for tag in ("{{", "{%", "{#")):
                # static section (system text, few-shot examples): rendered once here, not per row
                out.append((role, None, template.render().strip("\n"), line))
            else:
                out.append((role, template, None, line))
        except TemplateSyntaxError as exc:  # the section's text starts on the marker line, after its newline
            raise PromptError(f"{where}:{line + (exc.lineno or 1) - 1}: template error in the {role} message: "
                              f"{exc.message}") from exc
    if not any(role == "user" for role, *_ in out):
        raise PromptError(f"{where}: no '=== user ===' section: a chat request needs a user message")
    return tuple(out)


def _template_line(exc: BaseException) -> int | None:
    """The template line a Jinja runtime error was raised on (Jinja maps its frames to "<template>" lines)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def parse_prompt(text: str, path: Path | None = None) -> Prompt:
    """Parse prompt-file text (front-matter + body)."""
    where = str(path) if path else "<prompt>"
    if not text.startswith("---"):
        raise PromptError(f"{where}: must start with a '---' YAML front-matter block")
    fences = list(re.finditer(r"^---[ \t\r]*$", text, flags=re.MULTILINE))
    if len(fences) < 2 or fences[0].start() != 0:
        raise PromptError(f"{where}: front-matter is not closed by a '---' line")
    front, body = text[fences[0].end():fences[1].start()], text[fences[1].end():]
    decl = load_front_matter(front, where, 1) or {}
    if not isinstance(decl, dict) or "name" not in decl:
        raise PromptError(f"{where}: front-matter needs at least 'name'")
    _known_keys(decl, FRONT_MATTER_KEYS, where, "", "the front matter takes")
    output = decl.get("output") or {"kind": "text"}
    if not isinstance(output, dict):
        raise PromptError(f"{where}: output must be a mapping like {{kind: digit_score, scale: [1, 6]}}, got {output!r}")
    kind = output.get("kind", "text")
    if kind not in OUTPUT_KINDS:
        raise PromptError(f"{where}: output.kind {kind!r} not in {OUTPUT_KINDS}")
    _known_keys(output, OUTPUT_KEYS[kind], where, "output.", f"a {kind} output takes")
    scale_line = key_line(front, "scale", 1)
    scale = digit_scale(output.get("scale", [1, 6]), f"{where}:{scale_line}" if scale_line else where) \
        if kind == "digit_score" else None
    model = output.get("model")
    if model is not None and not isinstance(model, str):
        raise PromptError(f"{where}: output.model must be a string like 'curate.tags:IntentTags', got {model!r}")
    inputs = decl.get("inputs") or []
    if not isinstance(inputs, list) or not all(isinstance(v, str) for v in inputs):
        raise PromptError(f"{where}: inputs must be a list of variable names, got {inputs!r}")
    params = decl.get("params") or {}
    if not isinstance(params, dict):
        raise PromptError(f"{where}: params must be a mapping of request parameters, got {params!r}")
    forbidden = sorted(set(params) & FORBIDDEN_PARAMS)
    if forbidden:
        raise PromptError(f"{where}: params {forbidden} are not allowed in a prompt file: they would redirect the "
                          f"request (the backend sets the model, the body sets the messages)")
    check_param_values(params, where)  # else a dry run failed on one, or the server was sent it
    if kind == "digit_score":
        check_digit_params(params, scale, where)
    if not is_name(str(decl["name"])):  # it names the judge's column: refused here, not after a dry run passed
        raise PromptError(f"{where}: name {decl['name']!r} cannot name a column: use letters, digits, '_', '-', '.'")
    prompt = Prompt(name=str(decl["name"]), version=decl.get("version", 1), description=str(decl.get("description", "")),
                    inputs=tuple(inputs), output_kind=kind, scale=scale, output_model=model,
                    params=dict(params), body=body.strip("\n") + "\n", path=path, declaration=decl,
                    body_line=text[:text.index(body.strip("\n"))].count("\n") + 1 if body.strip() else 1)
    _compiled(prompt.body, prompt.name, prompt.where, prompt.body_line)  # syntax errors surface at load time
    sections = [(role, _env().parse(text), line) for role, text, line in _sections(prompt.body, prompt.body_line)]
    check_no_other_files(sections, prompt.where)
    check_no_unbounded_globals(sections, decl.get("inputs"), prompt.where)
    if scale is not None:
        check_digit_examples(_sections(prompt.body, prompt.body_line), scale, prompt.where)
    if "inputs" not in decl:  # what the template reads is what it declares
        return dataclasses.replace(prompt, inputs=read_variables(sections, _env().globals))
    check_read_variables(sections, prompt.inputs, _env().globals, prompt.where)
    return prompt


def _known_keys(mapping: dict[str, Any], known: tuple[str, ...], where: str, prefix: str, takes: str) -> None:
    """A PromptError naming the first key of ``mapping`` not in ``known`` (and the known key it likely meant)."""
    import difflib

    for key in mapping:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise PromptError(f"{where}: unknown front-matter key {prefix}{key} ({takes} {', '.join(known)}){hint}")


def search_dirs(extra: list[str | os.PathLike] | None = None) -> list[Path]:
    """Search order: ``extra`` dirs, then ``$CURATE_PROMPTS`` (os.pathsep-separated), then built-ins."""
    if isinstance(extra, str | os.PathLike):  # one folder: a str was read character by character
        extra = [extra]
    dirs = [Path(d) for d in (extra or [])]
    env = os.environ.get("CURATE_PROMPTS")
    if env:
        dirs += [Path(d) for d in env.split(os.pathsep) if d]
    for folder in dirs:  # a mistyped folder would otherwise leave the built-in prompts in silent charge
        if not folder.is_dir():
            given = folder in [Path(d) for d in (extra or [])]
            source = python_and_cli("prompt_dirs=", "--prompt-dir") if given else "$CURATE_PROMPTS"
            raise PromptError(f"{folder}: prompt folder of {source} "
                              f"{'is not a folder' if folder.exists() else 'not found'}")
    return dirs + [builtin_prompt_dir()]


def load_prompt(name_or_path: str | os.PathLike | Prompt, prompt_dirs: list[str | os.PathLike] | None = None) -> Prompt:
    """A prompt by file path (``.md``) or by name; user ``prompt_dirs`` override the built-ins of the same name. A
    name is a prompt's before it is a path: a file or folder named ``quality`` where curate runs took the judge's
    place (or broke it)."""
    if isinstance(name_or_path, Prompt):
        return name_or_path
    candidate, name = Path(name_or_path), str(name_or_path)
    # a path as such: a Path, ./x, ../x, /x or x.md; a bare name (quality, evol/deepen) is a prompt's first
    spelt_as_path = isinstance(name_or_path, os.PathLike) or name.startswith(("./", "../", ".\\", "..\\"))
    by_name = not spelt_as_path and candidate.suffix != ".md" and not candidate.is_absolute()
    searched = search_dirs(prompt_dirs) if by_name or not candidate.exists() else []  # a file named: no folder read
    if by_name:
        for folder in searched:
            path = folder / f"{name}.md"
            if path.is_file():
                prompt = parse_prompt(read_prompt_file(path), path)
                if prompt.name not in (candidate.name, name.replace("/", "_")):  # its column would not be the one
                    raise PromptError(f"{path}: declares name: {prompt.name}, but is the prompt {name!r} by its file "
                                      f"name: declare name: {candidate.name}")
                return prompt
            check_not_misplaced(folder, name, searched)
    if candidate.suffix == ".md" or candidate.exists():
        if not candidate.is_file():
            raise PromptError(f"{candidate}: prompt file not found")
        return parse_prompt(read_prompt_file(candidate), candidate)
    yours = "".join(f"; {folder} has {folder_prompt_names(folder) or 'none'}" for folder in searched[:-1])
    raise PromptError(f"no prompt named {name!r}{yours}; built-ins ({searched[-1]}): {builtin_names()}")


def folder_prompt_names(folder: Path) -> list[str]:
    """The names of the prompts at the top of ``folder`` (a README.md documents them; it is none)."""
    return sorted(p.stem for p in folder.glob("*.md") if p.stem != "README")


def builtin_names() -> list[str]:
    """The shipped prompts' names."""
    return folder_prompt_names(builtin_prompt_dir())
