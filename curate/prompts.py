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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from curate.errors import CurateError

OUTPUT_KINDS = ("digit_score", "json", "text")
ROLES = ("system", "user", "assistant")
_MARKER = re.compile(r"^===\s*(system|user|assistant)\s*===\s*$", re.MULTILINE)


class PromptError(CurateError):
    """A prompt file is missing, malformed, or was rendered without a variable it needs."""


def builtin_prompt_dir() -> Path:
    """Built-in prompts: ``curate/prompts`` inside an installed wheel, else ``prompts/`` at the repo root."""
    try:
        from importlib.resources import files

        packaged = files("curate") / "prompts"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[1] / "prompts"


@lru_cache(maxsize=1)
def _env() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False,
                                         autoescape=False)


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

    @property
    def fingerprint(self) -> str:
        """sha256 of the template source and the declaration (front-matter), 16 hex digits."""
        blob = json.dumps({"declaration": self.declaration, "body": self.body}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def render(self, **variables: Any) -> list[dict[str, str]]:
        """Chat messages with ``variables`` substituted as data (never evaluated as template code)."""
        missing = [v for v in self.inputs if v not in variables]
        if missing:
            raise PromptError(f"prompt {self.name!r} needs {missing}; got {sorted(variables)}")
        messages = []
        for role, source in _compiled(self.body, self.name, str(self.path)):
            text = source.render(**variables).strip("\n")
            messages.append({"role": role, "content": text})
        return messages

    def model_class(self):
        """The Pydantic model named by ``output.model`` (json prompts), imported from ``module:Name``."""
        if not self.output_model:
            return None
        import importlib

        module, _, attr = self.output_model.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise PromptError(f"prompt {self.name!r}: cannot import output model {self.output_model!r}: {exc}") from exc

    def _repr_html_(self) -> str:
        import html

        return (f"<div><b>prompt {html.escape(self.name)}</b> v{html.escape(str(self.version))} "
                f"({html.escape(self.output_kind)}; fingerprint {self.fingerprint})<br>"
                f"<pre>{html.escape(self.body)}</pre></div>")


@lru_cache(maxsize=256)
def _compiled(body: str, name: str, where: str):
    env = _env()
    parts = _MARKER.split(body)
    if parts[0].strip():
        raise PromptError(f"{where}: text before the first '=== role ===' line")
    out = []
    for i in range(1, len(parts), 2):
        try:
            out.append((parts[i], env.from_string(parts[i + 1])))
        except TemplateSyntaxError as exc:
            raise PromptError(f"{where}: template error in {parts[i]} message, line {exc.lineno}: {exc.message}") from exc
    if not out:
        raise PromptError(f"{where}: no '=== user ===' (or system/assistant) sections")
    return tuple(out)


def parse_prompt(text: str, path: Path | None = None) -> Prompt:
    """Parse prompt-file text (front-matter + body)."""
    where = str(path) if path else "<prompt>"
    if not text.startswith("---"):
        raise PromptError(f"{where}: must start with a '---' YAML front-matter block")
    try:
        _, front, body = re.split(r"^---\s*$", text, maxsplit=2, flags=re.MULTILINE)
    except ValueError as exc:
        raise PromptError(f"{where}: front-matter is not closed by a '---' line") from exc
    try:
        decl = yaml.safe_load(front) or {}
    except yaml.YAMLError as exc:
        raise PromptError(f"{where}: bad YAML front-matter: {exc}") from exc
    if not isinstance(decl, dict) or "name" not in decl:
        raise PromptError(f"{where}: front-matter needs at least 'name'")
    output = decl.get("output") or {"kind": "text"}
    kind = output.get("kind", "text")
    if kind not in OUTPUT_KINDS:
        raise PromptError(f"{where}: output.kind {kind!r} not in {OUTPUT_KINDS}")
    scale = None
    if kind == "digit_score":
        lo, hi = output.get("scale", [1, 6])
        if not (0 <= int(lo) < int(hi) <= 9):
            raise PromptError(f"{where}: digit_score scale {lo}..{hi} must be single digits, low < high")
        scale = (int(lo), int(hi))
    model = output.get("model")
    if kind == "json" and not model:
        raise PromptError(f"{where}: json output needs output.model ('module:PydanticClass') or a Judge(output=...)")
    prompt = Prompt(name=str(decl["name"]), version=decl.get("version", 1), description=str(decl.get("description", "")),
                    inputs=tuple(decl.get("inputs") or ()), output_kind=kind, scale=scale, output_model=model,
                    params=dict(decl.get("params") or {}), body=body.strip("\n") + "\n", path=path, declaration=decl)
    _compiled(prompt.body, prompt.name, where)  # syntax errors surface at load time
    return prompt


def prompt_dirs(extra: list[str | os.PathLike] | None = None) -> list[Path]:
    """Search order: ``extra`` dirs, then ``$CURATE_PROMPTS`` (os.pathsep-separated), then built-ins."""
    dirs = [Path(d) for d in (extra or [])]
    env = os.environ.get("CURATE_PROMPTS")
    if env:
        dirs += [Path(d) for d in env.split(os.pathsep) if d]
    return dirs + [builtin_prompt_dir()]


def load_prompt(name_or_path: str | os.PathLike | Prompt, prompt_dirs: list[str | os.PathLike] | None = None) -> Prompt:
    """A prompt by file path or by name; user ``prompt_dirs`` override the built-ins of the same name."""
    if isinstance(name_or_path, Prompt):
        return name_or_path
    candidate = Path(name_or_path)
    if candidate.suffix == ".md" or candidate.exists():
        if not candidate.is_file():
            raise PromptError(f"{candidate}: prompt file not found")
        return parse_prompt(candidate.read_text(encoding="utf-8"), candidate)
    name = str(name_or_path)
    searched = _search_dirs(prompt_dirs)
    for folder in searched:
        path = folder / f"{name}.md"
        if path.is_file():
            return parse_prompt(path.read_text(encoding="utf-8"), path)
    raise PromptError(f"no prompt named {name!r} in {[str(d) for d in searched]}; built-ins: {builtin_names()}")


def _search_dirs(extra):
    return prompt_dirs(extra)


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_prompt_dir().glob("*.md"))
