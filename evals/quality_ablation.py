"""What the quality-ridge ablations share (evals/ablate_quality_*.py): refit the shipped head on a variant, take
its val criterion, test figures and zero-shot figures, and print the variants beside the shipped one.

Zero-shot here: MT-bench or Auto-J (or the AlpacaEval pairs) left out of training and measured on all of its rows.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_default_scorers as T  # noqa: E402

SOURCES = ("alpaca_eval", "mtbench", "autoj")
COLUMNS = ("mtbench", "autoj", "pairs", "matched", "zs_mtbench", "zs_autoj", "zs_mt_within", "zs_aj_within",
           "zs_pairs", "zs_matched")


@contextmanager
def extra_columns(columns: Callable[[list[str], list[str]], np.ndarray], n: int) -> Iterator[None]:
    """Within the block, the quality ridge reads ``n`` more statistics columns, ``columns(instructions,
    responses)`` (one row per text pair), after the shipped features; restored on exit."""
    base_features, base_n_stat = T.features, T.n_stat_columns
    T.features = lambda scorer, ins, res: np.hstack([base_features(scorer, ins, res), columns(ins, res)])
    T.n_stat_columns = lambda *a: base_n_stat(*a) + n
    try:
        yield
    finally:
        T.features, T.n_stat_columns = base_features, base_n_stat


def figures(test: dict, zero: dict) -> dict[str, float]:
    out = {"mtbench": test["mtbench"]["scorer"]["spearman"], "autoj": test["autoj"]["scorer"]["spearman"],
           "pairs": test["alpaca_eval"]["all"]["scorer"], "matched": test["alpaca_eval"]["length_matched"]["scorer"],
           "zs_mtbench": zero["mtbench"]["scorer"]["spearman"], "zs_autoj": zero["autoj"]["scorer"]["spearman"],
           "zs_mt_within": zero["mtbench"]["scorer"]["pairwise_within_group"],
           "zs_aj_within": zero["autoj"]["scorer"]["pairwise_within_group"]}
    if "alpaca_eval" in zero:
        out.update(zs_pairs=zero["alpaca_eval"]["all"]["scorer"], zs_matched=zero["alpaca_eval"]["length_matched"]["scorer"])
    return out


def measure(cfg: dict, pairs, singles, sources=SOURCES, zero_shot=SOURCES) -> tuple[float, dict[str, float]]:
    """(val criterion, figures) of the quality ridge fitted with ``cfg`` on ``sources``; each of ``zero_shot``
    is also left out of a train + val fit and measured on all of its rows."""
    val = T.val_score(T.quality_report(T.fit_quality(cfg, pairs, singles, ("train",), sources), pairs, singles, "val",
                                       ("train",)))
    test = T.quality_report(T.fit_quality(cfg, pairs, singles, ("train",), sources), pairs, singles, "test")
    zero = {}
    for held in zero_shot:
        z = T.fit_quality(cfg, pairs, singles, ("train", "val"), tuple(s for s in sources if s != held))
        zero[held] = T.quality_report(z, pairs, singles, "all")[held]
    return val, figures(test, zero)


def print_rows(rows: dict[str, tuple[float, dict[str, float]]], reference: str, title: str = "kind") -> None:
    """The table, the val choice among the variants (every row but ``reference``) and the ``RESULT`` line."""
    cols = [c for c in COLUMNS if all(c in f for _, f in rows.values())]
    width = max(len(title), *map(len, rows)) + 2
    print(f"{title:{width}} {'val':>6} " + " ".join(f"{c:>12}" for c in cols))
    for name, (val, f) in rows.items():
        print(f"{name:{width}} {val:6.3f} " + " ".join(f"{f[c]:12.3f}" for c in cols))
    best = max((k for k in rows if k != reference), key=lambda k: rows[k][0])
    a, b = rows[reference][1], rows[best][1]
    print(f"chosen on val: {best}")
    print("RESULT " + " ".join(f"{c}={b[c]:.3f} (shipped {a[c]:.3f})" for c in cols))
