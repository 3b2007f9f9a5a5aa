"""Scorer subclasses written against an older signature of a method curate calls with keywords.

``Scorer.predict(rows, cache_dir=None, on_rows=None, cache_use=None)`` (``embed`` likewise, a fine-tuned scorer's
``predict_raw`` too): ``cache_use`` came last (2026-12), ``cache_dir`` and ``on_rows`` before it. An override written
without them failed every scoring run with a TypeError ("unexpected keyword argument 'cache_use'"). Each such
override (a method, staticmethod or classmethod; the class's own or a mixin's that is no Scorer) is inspected once,
when its class is defined, and called with the keywords it takes: it scores as it did,
going without what it does not take (the cache counts in the run's stats, the embedding cache, per-row progress).
Any other keyword it does not take is still the TypeError.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

CALLED_WITH = frozenset({"cache_dir", "on_rows", "cache_use"})  # keywords curate passes to the methods below
METHODS = ("predict", "embed", "predict_raw")


class OlderSignatures:
    """A base whose subclasses' overrides of :data:`METHODS` may leave out keywords of :data:`CALLED_WITH`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in METHODS:
            # the override this class uses: its own, or a mixin's that no class of this hierarchy adapted yet
            owner = next((klass for klass in cls.__mro__ if name in klass.__dict__), None)
            if owner is None or owner is not cls and issubclass(owner, OlderSignatures):
                continue
            method = owner.__dict__[name]
            if isinstance(method, staticmethod | classmethod):
                function = method.__func__
                if inspect.isfunction(function) and (missing := not_taken(function)):
                    setattr(cls, name, type(method)(_without(function, missing)))
            elif inspect.isfunction(method) and (missing := not_taken(method)):
                setattr(cls, name, _without(method, missing))


def not_taken(function: Callable) -> frozenset[str]:
    """The keywords of :data:`CALLED_WITH` that ``function`` does not take (none if it takes ``**kwargs``)."""
    params = inspect.signature(function).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return frozenset()
    return CALLED_WITH - {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _without(function: Callable, missing: frozenset[str]) -> Callable:
    """``function`` called without the keywords ``missing`` (those it was written without); a method's instance,
    if any, passes through ``args``."""
    @functools.wraps(function)
    def called(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **{k: v for k, v in kwargs.items() if k not in missing})

    return called
