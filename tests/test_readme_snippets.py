"""README's Python snippets against the code they show, without running their models or servers (the full run of
each, on the bundled sample with the fault server for the LLM ones, is an audit: a minute and more on 2 cores):
every snippet parses, every name it imports exists, and every call of a known object (``ws.<method>``,
``curate.<name>``, an imported function or class) names a real method and only keywords its signature takes. A
renamed keyword (``column=``/``columns=``, ``selection=``) or a removed method left in README fails here."""

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import curate
from curate.session import Workspace

README = Path(__file__).resolve().parents[1] / "README.md"


def snippets() -> list[tuple[int, str]]:
    text = README.read_text()
    return [(text[:m.start()].count("\n") + 1, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def accepts(target, keywords: list[str]) -> list[str]:
    """The keywords ``target`` (a function or a class) does not take; none when it takes ``**kwargs``."""
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return []
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return []
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return [k for k in keywords if k not in names]


def problems(source: str) -> list[str]:
    """What in one snippet does not match the code: names not importable, methods and keywords that do not exist."""
    tree = ast.parse(source)
    known: dict[str, object] = {"curate": curate, "ws": Workspace}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                try:
                    value = getattr(module, alias.name, None) or importlib.import_module(f"{node.module}.{alias.name}")
                except ModuleNotFoundError:
                    found.append(f"from {node.module} import {alias.name}: no such name")
                else:
                    known[alias.asname or alias.name] = value
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, target = node.func, None
        if isinstance(func, ast.Name) and func.id in known:
            target = known[func.id]
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in known:
            owner = known[func.value.id]
            if not hasattr(owner, func.attr):
                found.append(f"{func.value.id}.{func.attr}: no such attribute")
                continue
            target = getattr(owner, func.attr)
        if target is not None and (bad := accepts(target, [k.arg for k in node.keywords if k.arg])):
            found.append(f"{ast.unparse(node)[:80]}: no keyword {bad}")
    return found


@pytest.mark.parametrize("line, source", snippets(), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_a_readme_snippet_names_real_methods_and_keywords(line, source):
    assert problems(source) == [], f"README.md line {line}"


def test_the_check_finds_a_renamed_keyword_and_a_missing_method():
    assert problems('ws.export("a.jsonl", selections="deita")\nws.shows([0])\nfrom curate.scorers import nope') == [
        "from curate.scorers import nope: no such name", "ws.export('a.jsonl', selections='deita'): no keyword "
        "['selections']", "ws.shows: no such attribute"]


def test_readme_has_the_snippets_it_had():
    assert len(snippets()) >= 7
