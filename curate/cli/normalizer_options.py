"""The InsTag normaliser's options, the same four for every command that normalises: `curate tag`, `curate tags
--normalize` and `curate run --tags`. Each defaults to None, so a command can tell an option the user gave (refused
where no normaliser runs, whatever its value) from one left out; :func:`normalizer_from_options` resolves the ones
left out to :data:`curate.defaults.NORMALIZER`."""

from __future__ import annotations

from typing import Any

import typer

from curate.defaults import NORMALIZER


def min_frequency_opt() -> Any:
    return typer.Option(None, "--min-frequency", help="Normaliser: drop tags in fewer rows (default "
                        f"{NORMALIZER.min_frequency}, scaled down below {NORMALIZER.reference_rows:,} rows; 0 = skip).")


def eps_opt() -> Any:
    return typer.Option(None, "--eps", help="Normaliser: DBSCAN cosine eps for semantic aggregation (default "
                        f"{NORMALIZER.eps}; 0 = skip).")


def min_support_opt() -> Any:
    return typer.Option(None, "--min-support", help="Normaliser: FP-Growth min support in rows (default "
                        f"{NORMALIZER.min_support}; 0 = skip association).")


def stemmer_language_opt() -> Any:
    return typer.Option(None, "--stemmer-language", help="Normaliser: the Snowball stemmer's language for rule "
                        f"aggregation (default {NORMALIZER.stemmer_language}; e.g. german for a German pool).")


def _given_normalizer_options(min_frequency: int | None, eps: float | None, min_support: int | None,
                             stemmer_language: str | None) -> list[str]:
    """The normaliser's flags the user gave (whatever their value: one equal to its default counts)."""
    return [flag for flag, value in (("--min-frequency", min_frequency), ("--eps", eps),
                                     ("--min-support", min_support), ("--stemmer-language", stemmer_language))
            if value is not None]


def refuse_normalizer_options(min_frequency: int | None, eps: float | None, min_support: int | None,
                              stemmer_language: str | None, hint: str) -> None:
    """A BadParameter naming the normaliser's options given where no normaliser runs (they would be ignored)."""
    if given := _given_normalizer_options(min_frequency, eps, min_support, stemmer_language):
        raise typer.BadParameter(f"{', '.join(given)}: options of the normaliser; {hint}")


def normalizer_from_options(min_frequency: int | None, eps: float | None, min_support: int | None,
                            stemmer_language: str | None):
    """The :class:`~curate.tags.Normalizer` the options ask for (None: the default, 0 skips a step); a BadParameter
    for a language Snowball lacks. With no option given it is ``Normalizer()``, the one ``normalize`` fits by default."""
    from curate.tags import Normalizer

    min_frequency = NORMALIZER.min_frequency if min_frequency is None else min_frequency
    eps = NORMALIZER.eps if eps is None else eps
    min_support = NORMALIZER.min_support if min_support is None else min_support
    try:
        return Normalizer(min_frequency=min_frequency or None, semantic=eps > 0, eps=eps or NORMALIZER.eps,
                          association=min_support > 0, min_support=min_support or NORMALIZER.min_support,
                          stemmer_language=stemmer_language or NORMALIZER.stemmer_language)
    except ValueError as exc:  # e.g. a stemmer language Snowball lacks
        raise typer.BadParameter(str(exc)) from None
