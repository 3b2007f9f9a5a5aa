"""Checks of a prompt file's layout, each a :class:`PromptError` naming the file and line: its front matter (YAML
with no key given twice, errors on the file's line), its sections (one system message, no empty answer left at the
end), its template tags (no include/import/extends: a prompt is one file), and a digit judge's declaration (a scale
of single digits, no ``max_tokens`` but 1, top logprobs for every digit, few-shot answers on its scale)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from curate.defaults import BACKEND
from curate.llm.prompt_checks import PromptError

_STATIC = ("{{", "{%", "{#")  # a section without these is text, not template code


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader refusing a mapping that gives one key twice (``version: 1`` then ``version: 2``: the
    last won in silence)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice (first on line {seen[key] + loader.line_offset}): which one "
                "is meant? keep one", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_front_matter(front: str, where: str, first_line: int) -> Any:
    """The front matter's YAML (``front``, whose first line is the file's line ``first_line``); an error names the
    file's line, not the YAML block's."""
    loader = _UniqueKeyLoader(front)
    loader.line_offset = first_line - 1
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + first_line}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PromptError(f"{where}{at}: bad YAML front-matter: {problem}") from None
    finally:
        loader.dispose()


def key_line(front: str, key: str, first_line: int) -> int | None:
    """The file's line of the first ``key:`` in the front matter (``scale:``), for an error naming it."""
    found = re.search(rf"(?:^|[\s{{,]){re.escape(key)}\s*:", front)
    return first_line + front.count("\n", 0, found.start() + 1) if found else None


def digit_scale(value: Any, where: str) -> tuple[int, int]:
    """``[lo, hi]`` of a digit_score prompt: two single digits, low < high (``where`` names the file and line)."""
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise PromptError(f"{where}: output.scale must be [low, high] (two integers, e.g. [1, 6]), got {value!r}")
    lo, hi = value
    if not 0 <= lo < hi <= 9:
        raise PromptError(f"{where}: digit_score scale {lo}..{hi} must be single digits, low < high: a digit judge "
                          "reads the probabilities of the one token it asks for, a digit, so 1..9 or 0..9 is the "
                          "widest scale; for a wider one use kind: json with a number field in its output model")
    return lo, hi


def check_digit_params(params: dict[str, Any], scale: tuple[int, int], where: str) -> None:
    """A digit judge asks for one token (its digit's probabilities are the score): a ``max_tokens`` other than 1
    can never apply, and sent as 1 it was dropped in silence. Its ``top_logprobs`` must list every digit of its
    ``scale``: fewer (0 asks for the sampled token alone) failed every row at run time (``no_top_logprobs``) or left
    a digit out of every score, after the calls were paid for."""
    for key in ("max_tokens", "max_completion_tokens"):
        if key in params and params[key] != 1:
            raise PromptError(f"{where}: params.{key}: {params[key]!r} cannot apply to a digit_score prompt: a digit "
                              f"judge always asks for one token (the score is read from that digit's probabilities); "
                              f"set {key}: 1 or leave it out (a longer answer needs kind: json or text)")
    if params.get("logprobs") is False:  # sent as true anyway: the file said one thing and the request another
        raise PromptError(f"{where}: params.logprobs: false cannot apply to a digit_score prompt: its score is read "
                          f"from the first token's logprobs, so a digit judge always asks for them; leave it out (a "
                          f"judge without logprobs needs kind: json or text)")
    top, (lo, hi) = params.get("top_logprobs"), scale
    if top is not None and not isinstance(top, bool) and isinstance(top, int) and top < hi - lo + 1:
        raise PromptError(f"{where}: params.top_logprobs: {top} cannot give a digit_score prompt its score: the "
                          f"score is the expectation over the {hi - lo + 1} digits of its scale {lo}..{hi}, read from "
                          f"the first token's top logprobs, so each needs a place among them; set top_logprobs to at "
                          f"least {hi - lo + 1} or leave it out (the default asks for {BACKEND.top_logprobs})")


def check_sections(sections: list[tuple[str, str, int]], where: str) -> None:
    """The body's sections (role, text, marker line): at most one system message (a second was sent as another
    system message in the middle of the chat), and no empty assistant section at the end (an empty answer sent as
    the last message: the reply comes after it, to no question)."""
    systems = [line for role, _, line in sections if role == "system"]
    if len(systems) > 1:
        raise PromptError(f"{where}:{systems[1]}: a second '=== system ===' section (the first is on line "
                          f"{systems[0]}): a prompt has one system message; join the two")
    if sections and sections[-1][0] == "assistant" and not sections[-1][1].strip():
        raise PromptError(f"{where}:{sections[-1][2]}: an empty '=== assistant ===' section ends the file: it would "
                          "be sent as an empty answer after the last question; remove the line (the model's reply "
                          "comes after the last user message)")


def check_no_other_files(parsed: list[tuple[str, Any, int]], where: str) -> None:
    """No ``{% include %}``, ``{% import %}``, ``{% from %}`` or ``{% extends %}`` in the template ``parsed``
    (role, template AST, marker line): a prompt is one file, and a template may read no other."""
    from jinja2 import nodes

    for role, tree, line in parsed:
        for node in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
            tag = {"Include": "include", "Import": "import", "FromImport": "from ... import",
                   "Extends": "extends"}[type(node).__name__]
            raise PromptError(f"{where}:{line + node.lineno - 1}: in the {role} message: {{% {tag} %}}: include, "
                              "import and extends are not available in prompt files (a prompt reads no other file); "
                              "put the text in this file")


def check_no_unbounded_globals(parsed: list[tuple[str, Any, int]], inputs: Any, where: str) -> None:
    """No call of a Jinja global the sandbox leaves out (``lipsum``: text of any length asked) but a row input of
    that name: said as such, not as a variable to list in the inputs."""
    from jinja2 import nodes

    from curate.llm.sandbox import UNBOUNDED_GLOBALS

    for role, tree, line in parsed:
        for node in tree.find_all(nodes.Name):
            if node.name in UNBOUNDED_GLOBALS and node.name not in (inputs or ()):
                raise PromptError(f"{where}:{line + node.lineno - 1}: in the {role} message: {node.name}() is not "
                                  "available in prompt files (it makes text of any length asked); write the text")


def check_digit_examples(sections: list[tuple[str, str, int]], scale: tuple[int, int], where: str) -> None:
    """Each few-shot answer (an assistant section's text) of a digit_score prompt is one digit on its ``scale``: an
    example answering 6 on a 1..5 scale teaches a digit whose probability the score then drops, and one answering
    5 on 0..1 leaves most replies below the digit-mass floor."""
    lo, hi = scale
    for role, text, line in sections:
        if role != "assistant" or any(tag in text for tag in _STATIC) or not text.strip():
            continue
        answer = text.strip()
        at = line + text[:text.index(answer)].count("\n")
        if not re.fullmatch(r"\d", answer) or not lo <= int(answer) <= hi:
            raise PromptError(f"{where}:{at}: the few-shot answer {answer[:40]!r} is not one digit from {lo} to "
                              f"{hi} (output.scale [{lo}, {hi}]): a digit judge reads the probabilities of the "
                              "scale's digits only; answer the example on the scale, or widen the scale")
