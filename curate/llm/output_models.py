"""The Pydantic models a json prompt's ``output.model`` may name: curate's own, or ones registered with
:func:`register_output_model`. A prompt file never makes curate import anything else."""

from __future__ import annotations

from curate.llm.prompt_checks import PromptError

CURATE_PACKAGE = "curate"


_OUTPUT_MODELS: dict[str, type] = {}


def register_output_model(cls: type, name: str | None = None) -> type:
    """Allow prompt files to name ``cls`` in ``output.model`` (as ``module:Class``, or ``name``).

    Usable as a decorator. Prompt files may only name curate's own models and registered ones; nothing
    else is ever imported because a prompt file said so.
    """
    from pydantic import BaseModel

    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        raise PromptError(f"register_output_model: {cls!r} is not a pydantic BaseModel subclass")
    _OUTPUT_MODELS[f"{cls.__module__}:{cls.__qualname__}"] = cls
    if name:
        _OUTPUT_MODELS[name] = cls
    return cls


def resolve_output_model(spec: str, where: str) -> type:
    """The class ``spec`` names: a registered model, or a BaseModel defined in a curate module."""
    from pydantic import BaseModel

    if spec in _OUTPUT_MODELS:
        return _OUTPUT_MODELS[spec]
    module, _, attr = spec.partition(":")
    hint = "register your own with curate.llm.prompts.register_output_model(cls)"
    if not (module == CURATE_PACKAGE or module.startswith(CURATE_PACKAGE + ".")) or not attr:
        raise PromptError(f"{where}: output.model {spec!r} is not allowed: only models defined in curate "
                          f"('curate.module:Class') or registered ones; {hint}")
    if any(part.startswith("_") for part in module.split(".")):  # curate.cli.__main__ runs the CLI when imported
        raise PromptError(f"{where}: output.model {spec!r} is not allowed: a private module (a name starting with "
                          f"_) is no model's home; {hint}")
    import importlib

    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PromptError(f"{where}: cannot find output model {spec!r}: {exc}") from exc
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)
            and (obj.__module__ == CURATE_PACKAGE or obj.__module__.startswith(CURATE_PACKAGE + "."))):
        raise PromptError(f"{where}: output.model {spec!r} is not a pydantic BaseModel defined in curate; {hint}")
    return obj
