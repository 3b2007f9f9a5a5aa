"""QQT planner (Goyal et al. 2024, "Scaling Laws for Data Filtering — Data Curation cannot be Compute Agnostic").

The pool is cut into quality tiers (``buckets``, by a quality ordering: a column or sort expression). Tier
``i`` has a utility ``b_i < 0`` (the exponent of its scaling law: loss ~ n^b) and a half-life ``tau_i``: at
its k-th repetition (k = 0 when first seen) a row's utility is ``b_i * 0.5 ** (k / tau_i)``. Keeping the top
``m`` tiers gives a pool whose utility in epoch k is the row-weighted mean of its tiers' decayed utilities
(the paper's effective-utility aggregation), and training on ``S`` samples (rows seen, repeats included)
predicts the loss

    y = ((n_0)^{b_0} + d) * prod_{k>=1} (n_k / n_{k-1})^{b_k},   n_k = min(P (k+1), S) / unit

(``P`` the kept rows, ``d`` the irreducible loss: the paper's ``func_effective_utility``). The planner
evaluates every ``m`` at the given compute and recommends the ``m`` (rows kept) with the lowest predicted
loss; :class:`Plan` holds the curve it optimised. Little compute: keep only the best tier; more compute:
repeated top rows lose utility and lower tiers join.

Parameters are priors from the paper's DataComp fits (:data:`curate.defaults.PLAN`) unless the caller
passes per-tier ``utilities`` / ``half_lives`` (e.g. fitted with :func:`fit_utility` from fine-tunes on
growing shares of one tier). Note: the paper's code also multiplies the half-life by the number of pooled
tiers; here repetitions are counted per row (a row's k-th repeat decays the same in any pool).
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.defaults import PLAN
from curate.errors import CurateError, OptionError, python_and_cli

__all__ = ["Plan", "fit_utility", "plan", "plan_workspace", "predicted_loss", "row_token_counts", "tier_utilities"]


def tier_utilities(buckets: int, top: float = PLAN.top_utility, ratio: float = PLAN.utility_ratio) -> np.ndarray:
    """Prior utilities of ``buckets`` tiers, best first: ``top * ratio ** i`` (geometric, as the paper's fits)."""
    if buckets < 1:
        raise OptionError(f"buckets must be >= 1, got {buckets} ({_flag('buckets')})")
    if top >= 0 or not 0 < ratio <= 1:
        raise OptionError(f"utility needs top < 0 and 0 < ratio <= 1, got top={top}, ratio={ratio}")
    return top * ratio ** np.arange(buckets, dtype=np.float64)


def predicted_loss(samples: float, rows: Sequence[float], utilities: Sequence[float], half_lives: Sequence[float],
                   irreducible: float = PLAN.irreducible_loss, rows_per_unit: float = 1.0) -> float:
    """The paper's effective-utility loss after ``samples`` rows seen of a pool made of tiers with ``rows``
    rows each, utilities ``b`` and half-lives ``tau`` (see the module doc)."""
    rows_a = np.asarray(rows, np.float64)
    b = np.asarray(utilities, np.float64)
    tau = np.asarray(half_lives, np.float64)
    pool = float(rows_a.sum())
    if pool <= 0 or samples <= 0:
        raise CurateError(f"need rows > 0 and samples > 0, got {pool} rows, {samples} samples")
    epochs = np.arange(int(math.floor(samples / pool)) + 1, dtype=np.float64)
    weights = rows_a / pool
    decayed = (weights[:, None] * b[:, None] * 0.5 ** (epochs[None, :] / tau[:, None])).sum(0)  # b_k per epoch
    seen = np.maximum(np.minimum(pool * (epochs + 1), samples) / rows_per_unit, 1.0)  # below 1 unit: flat (n^b
    # would rise as b grows less negative, the law's range ends there; ties go to the fewest tiers)
    before = np.maximum(pool * epochs / rows_per_unit, 1.0)
    loss = seen[0] ** decayed[0] + irreducible
    if len(epochs) > 1:
        loss *= float(np.prod((seen[1:] / before[1:]) ** decayed[1:]))
    return float(loss)


@dataclass
class Plan:
    """What the planner recommends at one compute budget, and the curve it optimised (one point per number of
    tiers kept: rows kept, epochs, predicted loss)."""
    samples: float
    keep_rows: int
    keep_tiers: int
    curve: list[dict[str, float]]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def keep_fraction(self) -> float:
        return self.keep_rows / max(1, int(self.curve[-1]["rows"]))

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "keep_rows": self.keep_rows, "keep_tiers": self.keep_tiers,
                "keep_fraction": self.keep_fraction, "curve": self.curve, "params": self.params}

    def svg(self, width: int = 420, height: int = 180) -> str:
        """The curve as an inline SVG line plot (predicted loss against rows kept; the choice marked)."""
        xs = np.array([p["rows"] for p in self.curve], np.float64)
        ys = np.array([p["loss"] for p in self.curve], np.float64)
        pad = 30
        span_x = max(xs.max() - xs.min(), 1.0)
        span_y = max(ys.max() - ys.min(), 1e-12)

        def at(x: float, y: float) -> tuple[float, float]:
            return (pad + (x - xs.min()) / span_x * (width - 2 * pad),
                    height - pad - (y - ys.min()) / span_y * (height - 2 * pad))

        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in (at(x, y) for x, y in zip(xs, ys, strict=True)))
        bx, by = at(float(self.keep_rows), float(ys[self.keep_tiers - 1]))
        return (f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
                f'<polyline fill="none" stroke="#36c" stroke-width="2" points="{pts}"/>'
                f'<circle cx="{bx:.1f}" cy="{by:.1f}" r="4" fill="#c33"/>'
                f'<text x="{pad}" y="14" font-size="11">predicted loss vs rows kept '
                f'({self.samples:,.0f} rows seen)</text>'
                f'<text x="{pad}" y="{height - 8}" font-size="10">{int(xs.min()):,}</text>'
                f'<text x="{width - pad - 40}" y="{height - 8}" font-size="10">{int(xs.max()):,}</text></svg>')

    def _repr_html_(self) -> str:
        bold = ' style="font-weight:bold"'
        rows = "".join(
            f"<tr{bold if p['tiers'] == self.keep_tiers else ''}><td>{int(p['tiers'])}</td>"
            f"<td>{int(p['rows']):,}</td><td>{p['epochs']:.2f}</td><td>{p['loss']:.5f}</td></tr>"
            for p in self.curve)
        return (f"<div><b>QQT plan</b>: keep {self.keep_rows:,} rows ({self.keep_fraction:.0%}, the top "
                f"{self.keep_tiers} tier(s)) for {self.samples:,.0f} rows seen<br>{self.svg()}"
                f"<table><tr><th>tiers</th><th>rows</th><th>epochs</th><th>predicted loss</th></tr>{rows}</table>"
                f"<small>{html.escape(str(self.params))}</small></div>")


def plan(quality: Sequence[float], *, samples: float | None = None, epochs: float | None = None,
         tokens: float | None = None, row_tokens: Sequence[float] | None = None, buckets: int = PLAN.buckets,
         utilities: Sequence[float] | None = None, half_lives: float | Sequence[float] = PLAN.half_life,
         irreducible: float = PLAN.irreducible_loss, rows_per_unit: float | None = None) -> Plan:
    """Recommend how many rows to keep (the best tiers by ``quality``, higher = better; NaN rows are left
    out) for a compute budget: ``samples`` rows seen, or ``epochs`` over the whole scored pool, or ``tokens``
    (then ``row_tokens`` gives each row's tokens and each candidate pool sees tokens / its mean tokens rows).
    ``rows_per_unit`` (the law's sample unit) defaults to a tier's rows / ``PLAN.tier_units`` (the paper's scale)."""
    _check_plan_settings(buckets, half_lives, utilities, irreducible, rows_per_unit,
                         {"samples": samples, "epochs": epochs, "tokens": tokens})
    q = np.asarray(quality, np.float64)
    scored = np.flatnonzero(~np.isnan(q))
    if len(scored) < buckets:
        raise CurateError(f"{len(scored)} scored rows cannot make {buckets} quality tiers")
    if tokens is not None and row_tokens is None:
        raise OptionError("a token budget needs row_tokens (each row's token count)")
    order = scored[np.argsort(-q[scored], kind="stable")]
    tiers = np.array_split(order, buckets)
    b = np.asarray(utilities if utilities is not None else tier_utilities(buckets), np.float64)
    tau = np.broadcast_to(np.asarray(half_lives, np.float64), (buckets,))
    if len(b) != buckets:
        raise OptionError(f"{len(b)} utilities for {buckets} tiers ({_flag('utilities')}, {_flag('buckets')})")
    sizes = np.array([len(t) for t in tiers], np.float64)
    if rows_per_unit is None:
        rows_per_unit = float(sizes[0]) / PLAN.tier_units
    tok = np.asarray(row_tokens, np.float64) if row_tokens is not None else None
    kept_rows = np.cumsum(sizes)
    # rows seen per unit of the budget, for each number of tiers kept
    per_unit = (np.ones(buckets) if samples is not None else np.full(buckets, float(len(scored))) if epochs is not None
                else np.array([1.0 / float(np.mean(tok[np.concatenate(tiers[:m])])) for m in range(1, buckets + 1)]))
    _check_repeats([(n, v) for n, v in (("samples", samples), ("epochs", epochs), ("tokens", tokens))
                    if v is not None][0], float(np.min(PLAN.max_repeats * kept_rows / per_unit)))
    curve: list[dict[str, float]] = []
    for m in range(1, buckets + 1):
        kept = int(kept_rows[m - 1])
        s = float(samples if samples is not None else epochs if epochs is not None else tokens) * per_unit[m - 1]
        loss = predicted_loss(s, sizes[:m], b[:m], tau[:m], irreducible, rows_per_unit)
        curve.append({"tiers": m, "rows": kept, "samples": s, "epochs": s / kept, "loss": loss})
    best = min(range(buckets), key=lambda i: (curve[i]["loss"], i))
    params = {"buckets": buckets, "utilities": b.tolist(), "half_lives": tau.tolist(), "irreducible": irreducible,
              "rows_per_unit": rows_per_unit, "budget": {"samples": samples, "epochs": epochs, "tokens": tokens}}
    return Plan(curve[best]["samples"], int(curve[best]["rows"]), best + 1, curve, params)


def _check_repeats(budget: tuple[str, float], most: float) -> None:
    """A budget that shows a kept pool's rows more than ``PLAN.max_repeats`` times is refused, naming its range: the
    law evaluates every repeat (1e300 samples asked numpy for an array of 1e300 epochs: "Maximum allowed size
    exceeded")."""
    name, value = budget
    if value > most:
        raise OptionError(f"the {name} budget (--{name}) must be in (0, {most:,.0f}], got {value:g}: more shows the "
                          f"rows of the best tier, kept alone (the smallest pool the plan weighs), over "
                          f"{PLAN.max_repeats:,} times each, where repetition has long left them no utility")


def _check_plan_settings(buckets: int, half_lives: Any, utilities: Any, irreducible: float,
                         rows_per_unit: float | None, budget: dict[str, float | None]) -> None:
    """Refuse settings the law cannot use, naming the setting (NaN fails every comparison, so it is refused)."""
    if not (isinstance(buckets, int) and buckets >= 1):
        raise OptionError(f"buckets must be a whole number >= 1, got {buckets!r} ({_flag('buckets')})")
    given = [name for name, value in budget.items() if value is not None]
    if len(given) != 1:  # before any work: the rows' scores, their tokens
        raise OptionError("give exactly one compute budget: " + python_and_cli(
            "samples= (rows seen), epochs= or tokens=", "--samples, --epochs or --tokens")
            + f"; {'none was given' if not given else 'got ' + ' and '.join(given)}")
    for name, value in budget.items():
        if value is not None and not 0 < value < math.inf:
            raise OptionError(f"the {name} budget must be a positive number, got {value} ({_flag(name)})")
    lives = np.atleast_1d(np.asarray(half_lives, np.float64))
    if not (lives > 0).all() or not np.isfinite(lives).all():
        raise OptionError(f"half-lives must be positive repetition counts, got {lives.tolist()} "
                          f"({python_and_cli('half_lives=', '--half-life')})")
    if utilities is not None:
        if isinstance(utilities, (str, bytes, dict)) or not all(
                isinstance(b, numbers.Real) and not isinstance(b, bool) for b in utilities):
            raise OptionError(f"utilities must be a list of numbers, one per tier, got {utilities!r}")
        if not all(b < 0 for b in utilities):  # loss = n^b + d falls with data only for b < 0
            raise OptionError(f"utilities must be negative (the law's loss falls as rows are seen), got "
                              f"{list(utilities)}")
    if not 0 <= irreducible < math.inf:
        raise OptionError(f"irreducible loss must be >= 0, got {irreducible}")
    if rows_per_unit is not None and not 0 < rows_per_unit < math.inf:
        raise OptionError(f"rows_per_unit must be positive, got {rows_per_unit}")


def fit_utility(rows_seen: Sequence[float], losses: Sequence[float], rows_per_unit: float,
                irreducible: float = PLAN.irreducible_loss) -> float:
    """A tier's utility ``b`` from first-epoch losses after ``rows_seen`` rows of it: the least-squares slope
    of log(loss - d) on log(n / unit) through the origin (the law y = n^b + d)."""
    n = np.asarray(rows_seen, np.float64) / rows_per_unit
    y = np.asarray(losses, np.float64) - irreducible
    if len(n) < 2 or np.any(n <= 0) or np.any(y <= 0):
        raise CurateError("fit_utility needs >= 2 points with rows_seen > 0 and loss > irreducible loss")
    x, t = np.log(n), np.log(y)
    return float((x @ t) / (x @ x))


def row_token_counts(conversations: Sequence[Sequence[dict[str, str]]], model_dir: Any = None) -> np.ndarray:
    """Tokens of each conversation (every message's content) under the tokenizer of ``model_dir`` (default:
    the packaged SmolLM2-135M-Instruct)."""
    if model_dir is None:
        from curate.signals.engine import default_model_dir

        model_dir = default_model_dir()
    else:
        check_tokenizer_folder(model_dir)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:  # transformers' messages run to five lines and name no folder
        raise OptionError(f"{_model(model_dir)}: its tokenizer does not load: "
                          f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0]}") from None
    texts = ["\n".join(m["content"] for m in conv) for conv in conversations]
    return np.array([len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]], np.float64)


def _flag(name: str) -> str:
    """A setting of :func:`plan` as a message names it: ``buckets= (CLI: --buckets)``."""
    return python_and_cli(f"{name}=", f"--{name}")


def _model(model_dir: Any) -> str:
    """The planner's model as a message names it: ``model='/path' (CLI: --model)``."""
    return python_and_cli(f"model={str(model_dir)!r}", "--model")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")


def check_tokenizer_folder(model_dir: Any) -> None:
    """A ``model_dir`` that is no folder holding a tokenizer's files is an error naming it (``/tmp`` gave
    transformers' five lines on a backend tokenizer it could not build; a missing folder, a Hub repo id error)."""
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise OptionError(f"{_model(model_dir)}: {'not a folder' if folder.exists() else 'no such folder'}")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise OptionError(f"{_model(model_dir)}: not a tokenizer folder (none of {', '.join(TOKENIZER_FILES)})")


def plan_workspace(ws, order_by: str, *, model: Any = None, **kwargs: Any) -> Plan:
    """:func:`plan` over a workspace's rows, the quality ordering being column or sort expression ``order_by``
    (per turn, reduced as the columns declare). A ``tokens=`` budget counts each row's tokens with the
    tokenizer of ``model`` (default: the packaged SmolLM2) unless ``row_tokens`` is given."""
    from curate.select.sort_key import row_scores

    _check_plan_settings(kwargs.get("buckets", PLAN.buckets), kwargs.get("half_lives", PLAN.half_life),
                         kwargs.get("utilities"), kwargs.get("irreducible", PLAN.irreducible_loss),
                         kwargs.get("rows_per_unit"), {k: kwargs.get(k) for k in ("samples", "epochs", "tokens")})
    quality = row_scores(ws, order_by)  # the settings refused first: no row read, no token counted
    if kwargs.get("tokens") is not None and kwargs.get("row_tokens") is None:
        kwargs["row_tokens"] = row_token_counts(ws.conversations(), model)
    out = plan(quality, **kwargs)
    out.params["order_by"] = order_by
    return out
