"""Scorer subclasses written against an older signature of a method curate calls with keywords.

``Scorer.predict(rows, cache_dir=None, on_rows=None, cache_use=None)`` (``embed`` likewise, a fine-tuned scorer's
``predict_raw`` too): ``cache_use`` came last (2026-12), ``cache_dir`` and ``on_rows`` before it. An override written
without them failed every scoring run with a TypeError ("unexpected keyword argument 'cache_use'"). Each such
override is inspected once, when its class is defined, and called with the keywords it takes: it scores as it did,
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
            method = cls.__dict__.get(name)
            if inspect.isfunction(method) and (missing := not_taken(method)):
                setattr(cls, name, _without(method, missing))


def not_taken(function: Callable) -> frozenset[str]:
    """The keywords of :data:`CALLED_WITH` that ``function`` does not take (none if it takes ``**kwargs``)."""
    params = inspect.signature(function).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return frozenset()
    return CALLED_WITH - {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _without(function: Callable, missing: frozenset[str]) -> Callable:
    """``function`` called without the keywords ``missing`` (those it was written without)."""
    @functools.wraps(function)
    def called(self: Any, *args: Any, **kwargs: Any) -> Any:
        return function(self, *args, **{k: v for k, v in kwargs.items() if k not in missing})

    return called
