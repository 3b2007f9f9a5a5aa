"""Instruction Mining (Cao et al. 2023, "Instruction Mining: When Data Mining Meets Large Language Model Finetuning").

Each row has cheap indicators (:data:`INDICATORS`: response length in words, and whichever of the workspace
columns ``perplexity``, ``ifd``, ``quality``, ``complexity``, ``reward`` exist, one value per row through
the columns' declared reducers). The paper's premise: the eval loss of a model fine-tuned on a data set D
follows a linear rule over D's mean indicators, ``log L(M_D, D_eval) = L0 + Σ_j β_j Ī_j(D) + ε``.

:func:`mine` fine-tunes the same small model (:func:`curate.train.harness.finetune`, LoRA) on ``subsets``
seeded random subsets of the pool (each leaning its own way in indicator space, :func:`tilted_subset`, so their
mean indicators differ as the paper's subsets from different datasets did), measures each one's mean response-token loss on a held-out eval set
(:func:`curate.train.losses.eval_loss`; a user file, or ``eval_rows`` random pool rows kept out of every
subset), and fits the rule by least squares on the indicators standardised over the pool.
:class:`MiningRule` holds the coefficients, intercept, R² and adjusted R² (data, ``_repr_html_``). A row's
``mining`` score is ``-Σ_j β_j z_j``: higher = the rule predicts a lower eval loss. Every fine-tune and eval
loss is cached under the workspace's cache folder; a re-run fits again at no cost.
"""

from __future__ import annotations

import html
import json
import math
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.codes import Failure, FailureCode
from curate.defaults import MINING
from curate.errors import CurateError, InputError, NotInWorkspaceError, OptionError
from curate.rows import row_text
from curate.select.registry import SelectorResult, register
from curate.signals.cache import json_fingerprint
from curate.signals.selectors import keep_all_eligible, rows_to_keep, select_learnability
from curate.signals.template import check_model_folder
from curate.storage.files import read_json
from curate.storage.step import StepOutput
from curate.train.harness import TrainConfig, finetune, run_folder
from curate.train.losses import eval_loss

__all__ = ["INDICATORS", "MiningRule", "MiningScore", "fit_rule", "indicator_matrix", "mine", "mining_selector",
           "tilted_subset", "write_scores"]

INDICATORS = ("length", "perplexity", "ifd", "quality", "complexity", "reward")


@dataclass
class MiningRule:
    """The fitted linear rule over standardised indicators (``z = (x - mean) / std``) predicting log eval loss."""
    indicators: list[str]
    coefficients: list[float]
    intercept: float
    mean: list[float]
    std: list[float]
    r2: float
    adjusted_r2: float
    subsets: list[dict[str, Any]] = field(default_factory=list)   # per subset: mean indicators, eval loss

    def score(self, x: np.ndarray) -> np.ndarray:
        """Per row (rows of raw indicator values): ``-Σ β_j z_j`` (higher = lower predicted eval loss)."""
        z = (np.asarray(x, np.float64) - np.asarray(self.mean)) / np.asarray(self.std)
        return -(z @ np.asarray(self.coefficients))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{b:+.4f}</td><td>{m:.4g}</td><td>{s:.4g}</td></tr>"
                       for n, b, m, s in zip(self.indicators, self.coefficients, self.mean, self.std, strict=True))
        return (f"<div><b>Instruction Mining rule</b>: log eval loss = {self.intercept:.4f} + Σ β·z "
                f"(R² {self.r2:.3f}, adjusted {self.adjusted_r2:.3f}, {len(self.subsets)} subsets)"
                f"<table><tr><th>indicator</th><th>β (per std)</th><th>pool mean</th><th>pool std</th></tr>"
                f"{rows}</table></div>")


def fit_rule(means: np.ndarray, losses: np.ndarray, names: list[str], center: np.ndarray, scale: np.ndarray,
             ridge: float = MINING.ridge) -> MiningRule:
    """Least squares of log ``losses`` on the subsets' standardised mean indicators ``means`` [K, p]."""
    x = (np.asarray(means, np.float64) - center) / scale
    losses = np.asarray(losses, np.float64)
    if not np.all(np.isfinite(losses) & (losses > 0)):
        raise CurateError(f"every subset needs a positive, finite eval loss; got {losses.tolist()}")
    y = np.log(losses)
    k, p = x.shape
    if k <= p + 1:
        raise CurateError(f"{k} subsets cannot fit {p} indicators and an intercept: use more subsets than {p + 1}")
    design = np.hstack([np.ones((k, 1)), x])
    reg = ridge * np.eye(p + 1)
    reg[0, 0] = 0.0
    beta = np.linalg.solve(design.T @ design + reg, design.T @ y)
    resid = y - design @ beta
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / total if total > 0 else math.nan
    adj = 1.0 - (1.0 - r2) * (k - 1) / (k - p - 1)
    return MiningRule(list(names), beta[1:].tolist(), float(beta[0]), center.tolist(), scale.tolist(), r2, adj)


def indicator_matrix(ws, indicators: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(names, [rows, p] float64 with NaN where a row has no value): ``length`` (words of the responses) and
    each other indicator that is a workspace column (all of ``indicators`` must exist when given)."""
    wanted = list(indicators) if indicators is not None else [_default_indicator(ws, n) for n in INDICATORS]
    names = [n for n in wanted if n == "length" or (n is not None and ws.has_column(n))]
    if indicators is not None and len(names) != len(wanted):
        raise NotInWorkspaceError(f"no column {sorted(set(wanted) - set(names))[0]!r} in the workspace for Instruction Mining")
    cols = []
    for name in names:
        if name == "length":
            cols.append([float(len(row_text(c, "response").split())) for c in ws.conversations()])
        else:
            cols.append([math.nan if v is None else float(v) for v in ws.row_values(name)])
    return names, np.array(cols, np.float64).T.reshape(len(ws.ids), len(names))


def _default_indicator(ws, name: str) -> str | None:
    """The column a default indicator reads: for a DEITA score, the derived column a step wrote for it (a `curate run`
    workspace's ``quality_score``, :func:`curate.storage.roles.role_column`), None when there is none; else the name."""
    from curate.storage.roles import ROLES, NoRoleColumn, role_column

    if name not in ROLES:
        return name
    try:
        return role_column(ws, name, "indicators=[...] in Python")
    except NoRoleColumn:  # not scored: the default leaves the indicator out, as before
        return None


SUBSET_TILT = 1.0  # a subset's weights exp(tilt * clip(z·u, -3, 3)): its mean indicators move ~0.5-1 pool std
TILT_CLIP = 3.0    # standardised units: a long-tailed indicator's outliers (lengths at +30 std) do not take a subset


def tilted_subset(rng: np.random.Generator, pool: np.ndarray, z: np.ndarray, size: int, tilt: float) -> np.ndarray:
    """``size`` rows of ``pool`` (sorted positions), each drawn with weight exp(tilt · clip(z·u)) for a random unit
    direction u in indicator space (``z``: every row's standardised indicators). Uniform random subsets of one pool
    have nearly equal mean indicators (1,000 of pool_30k's rows: response length's means within ±0.06 pool std), so
    the rule's fit had no spread to learn from and its β followed the fine-tunes' noise; the paper's subsets came
    from different datasets, whose indicators differ. Leaning each subset another way spreads them as that does."""
    if tilt == 0:
        return np.sort(rng.choice(pool, size, replace=False))
    u = rng.normal(size=z.shape[1])
    u /= np.linalg.norm(u) or 1.0
    lean = np.clip(z[pool] @ u, -TILT_CLIP, TILT_CLIP) * tilt
    weights = np.exp(lean - lean.max())
    if (drawable := int(np.count_nonzero(weights))) < size:  # numpy: "Fewer non-zero entries in p than size"
        raise OptionError(f"tilt {tilt}: the weights of all but {drawable:,} of the {len(pool):,} rows round to 0, "
                          f"fewer than the {size:,} rows of a subset; use a smaller tilt (1: the default)")
    return np.sort(rng.choice(pool, size, replace=False, p=weights / weights.sum()))


def _subset_config(epochs: int, seed: int, train: dict[str, Any] | None) -> TrainConfig:
    """The subsets' fine-tune settings; ``train`` may set any :class:`TrainConfig` field but those ``mine``
    sets itself, and every setting is checked by name."""
    allowed = sorted(set(TrainConfig.__dataclass_fields__) - {"epochs", "seed", "record"})
    unknown = sorted(set(train or {}) - set(allowed))
    if unknown:
        raise OptionError(f"train= has no setting {unknown[0]!r} (it takes {', '.join(allowed)}; epochs= and "
                          f"seed= are mine()'s own)")
    config = TrainConfig(epochs=epochs, seed=seed, record=False, **(train or {}))
    config.check()
    return config


def _cached_loss(folder: Path, key: str, compute: Any) -> float:
    """A subset's eval loss from ``folder/<key>.json``, else computed and stored first."""
    path = folder / f"{key}.json"
    if path.exists():
        try:
            return float(read_json(path)["loss"])
        except (KeyError, TypeError, ValueError) as exc:  # read_json names a file that is not JSON
            raise CurateError(f"{path}: damaged cached loss ({type(exc).__name__}: {exc}); remove it to compute the "
                              "loss again") from None
    loss = float(compute())
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps({"loss": loss}))
    os.replace(tmp, path)
    return loss


def mine(ws, *, eval_file: str | Path | None = None, model: str | Path | None = None,
         subsets: int = MINING.subsets, subset_size: int = MINING.subset_size, epochs: int = MINING.epochs,
         indicators: list[str] | None = None, seed: int = MINING.seed, device: str | None = None,
         train: dict[str, Any] | None = None, progress: bool | None = None, tilt: float = SUBSET_TILT) -> MiningRule:
    """Fit the Instruction Mining rule on the workspace (see the module doc); stored as artifact ``mining``.
    ``train``: other :class:`TrainConfig` fields for the subset fine-tunes. ``progress``: a bar over the subsets'
    fine-tunes (default: where ``curate select`` shows the selectors' progress). ``tilt``: how far each subset
    leans along its random direction (:func:`tilted_subset`; 0: uniform random subsets)."""
    from curate.select.progress import progress_shown
    from curate.signals.engine import default_model_dir
    from curate.storage.progress import progress_bar
    from curate.train.less import read_target

    config, names, x = _settings(ws, subsets, subset_size, epochs, indicators, seed, train, tilt)
    model_dir = Path(model) if model is not None else default_model_dir()
    valid = np.flatnonzero(np.isfinite(x).all(axis=1))
    rng = np.random.default_rng(seed)
    if eval_file is not None:
        eval_rows = read_target(eval_file, answered=False)[0]  # its unanswered rows are counted below
        pool = valid
    else:
        held = rng.choice(len(ws.ids), min(MINING.eval_rows, len(ws.ids) // 2), replace=False)
        eval_rows = ws.row_inputs([ws.ids[i] for i in np.sort(held).tolist()])
        pool = np.setdiff1d(valid, held)
    # an eval row with no answer has no loss: counted and left out before any fine-tune, not averaged away as NaN
    unanswered = [r.id for r in eval_rows if not any(t.has_response for t in r.turns)]
    eval_rows = [r for r in eval_rows if any(t.has_response for t in r.turns)]
    if not eval_rows:
        raise InputError(str(eval_file or "the held-out pool rows"), f"records 1-{len(unanswered):,}", f"none of the "
                         f"{len(unanswered):,} eval rows has an answer, and the eval loss is the loss on the answers")
    if len(pool) < subset_size:
        raise OptionError(f"{len(pool)} rows have every indicator ({', '.join(names)}): fewer than subset_size "
                          f"{subset_size}")
    center = x[valid].mean(axis=0)
    scale = x[valid].std(axis=0)
    scale[scale == 0] = 1.0
    root = ws.cache_dir / "train" / "mining"
    eval_key = json_fingerprint([[r.id, r.conversation] for r in eval_rows])
    means, losses, info = [], [], []
    per_subset = subset_size * config.epochs  # rows trained by one subset's fine-tune
    # K fine-tunes and their eval losses ran for hours on a CPU with no sign of life: a bar over their rows
    with progress_bar(subsets * per_subset, "Instruction Mining fine-tunes",
                      progress_shown() if progress is None else progress) as bar:
        for k in range(subsets):
            trained = _Counter(bar)
            pick = tilted_subset(rng, pool, (x - center) / scale, subset_size, tilt)
            loss = _subset_loss(ws, pick, root, model_dir, config, device, eval_rows, eval_key, trained)
            bar.update(per_subset - trained.n)  # a cached or resumed fine-tune counts whole, as does a skipped row
            means.append(x[pick].mean(axis=0))
            losses.append(loss)
            info.append({"subset": k, "rows": int(len(pick)), "eval_loss": loss,
                         **{n: float(v) for n, v in zip(names, means[-1], strict=True)}})
    rule = fit_rule(np.array(means), np.array(losses), names, center, scale)
    rule.subsets = info
    ws.add_artifact("mining", {**rule.to_dict(), "model": str(model_dir), "eval": str(eval_file or "held-out pool"),
                               "eval_rows": len(eval_rows), "eval_rows_without_answer": len(unanswered),
                               "eval_rows_without_answer_first": unanswered[:5],
                               "config": asdict(config), "subset_size": subset_size, "tilt": tilt})
    return rule


def _settings(ws, subsets: int, subset_size: int, epochs: int, indicators: list[str] | str | None, seed: int,
              train: dict[str, Any] | None, tilt: float) -> tuple[TrainConfig, list[str], np.ndarray]:
    """:func:`mine`'s settings checked by name before any fine-tune: (the subsets' training settings, the
    indicators' names, their [rows, p] values)."""
    if isinstance(indicators, str):  # "length,ifd" from the CLI's --param
        indicators = [name.strip() for name in indicators.split(",") if name.strip()]
    config = _subset_config(epochs, seed, train)
    if subset_size < 1:
        raise OptionError(f"subset_size must be >= 1, got {subset_size}")
    if not 0 <= tilt < math.inf:
        raise OptionError(f"tilt must be >= 0 (0: uniform random subsets), got {tilt}")
    names, x = indicator_matrix(ws, indicators)
    if subsets <= len(names) + 1:  # fit_rule's condition, checked before any fine-tune
        raise OptionError(f"{subsets} subsets cannot fit {len(names)} indicators ({', '.join(names)}) and an "
                          f"intercept: use more than {len(names) + 1} subsets")
    return config, names, x


def _check_inputs(eval_file: str | Path | None, model: str | Path | None) -> None:
    """The eval file and the model folder refused as :func:`mine` refuses them (a missing file, no answered row, no
    model folder), for a selection that runs no fine-tune."""
    from curate.train.less import read_target

    if eval_file is not None and not any(t.has_response for r in read_target(eval_file, answered=False)[0]
                                         for t in r.turns):
        raise InputError(str(eval_file), "records", "none of its eval rows has an answer, and the eval loss is the "
                         "loss on the answers")
    if model is not None:
        check_model_folder(model)


class _Counter:
    """Passes a fine-tune's ``update(n)`` on to ``bar`` and counts the rows (``n``)."""

    def __init__(self, bar: Any):
        self.bar, self.n = bar, 0

    def update(self, n: int) -> None:
        self.n += n
        self.bar.update(n)


def _subset_loss(ws, pick: np.ndarray, root: Path, model_dir: Path, config: TrainConfig, device: str | None,
                 eval_rows: list, eval_key: str, progress: Any) -> float:
    """One subset's eval loss: the fine-tune on the pool rows ``pick`` (cached, resumable) and its mean loss on
    ``eval_rows``, both read back when cached."""
    rows = ws.row_inputs([ws.ids[i] for i in pick.tolist()])
    out_dir = run_folder(root, model_dir, rows, config, device)

    def compute() -> float:
        run = finetune(model_dir, rows, out_dir, config, device=device, progress=progress)
        net, tok = run.load_model(device=device)
        per_row = eval_loss(net, tok, eval_rows, max_length=config.max_length)
        if not np.isfinite(per_row).all():  # an answer cut away by max_length: no loss, and no silent mean
            bad = [r.id for r, v in zip(eval_rows, per_row, strict=True) if not np.isfinite(v)]
            raise CurateError(f"{len(bad):,} eval rows gave no loss (first: {bad[0]}): no answer token within "
                              f"max_length {config.max_length}; raise it (train={{'max_length': ...}}) or shorten "
                              "them (the fine-tune is cached)")
        return float(per_row.mean())

    return _cached_loss(root / "evals", f"{out_dir.name}-{eval_key[:16]}", compute)


class MiningScore:
    """A row step writing the rule's score of each row (column ``mining``; a failure where an indicator is
    missing)."""

    granularity = "row"
    reducer = None
    inputs: tuple[str, ...] = ()

    def __init__(self, rule: MiningRule, scores: dict[str, float | None], column: str = "mining"):
        self.rule, self.by_id, self.column = rule, scores, column

    def fingerprint(self) -> str:
        return json_fingerprint({"method": "instruction_mining", "rule": self.rule.to_dict()})

    def describe(self) -> dict[str, Any]:
        return {"kind": "instruction_mining", "paper": "Cao et al. 2023", "rule": self.rule.to_dict()}

    def run(self, rows: Any, ctx: Any) -> StepOutput:
        values = [self.by_id.get(r.id) for r in rows]
        failures = [[] if v is not None else [Failure(FailureCode.EMPTY_INPUT, "an indicator of the rule has no "
                                                      "value for this row")] for v in values]
        ctx.progress.update(len(rows))
        return StepOutput(values, failures)


def write_scores(ws, rule: MiningRule, column: str = "mining") -> Any:
    """``ws.apply`` the rule's score of every row as column ``column``; returns the ApplyResult."""
    _, x = indicator_matrix(ws, rule.indicators)
    ok = np.isfinite(x).all(axis=1)
    scores = rule.score(np.where(ok[:, None], x, 0.0))
    by_id = {i: (float(s) if k else None) for i, s, k in zip(ws.ids, scores, ok, strict=True)}
    return ws.apply(MiningScore(rule, by_id, column), progress=False)


@register("mining")
def mining_selector(ws, rows: np.ndarray, budget: int | None = None, fraction: float | None = None,
                    eval_file: str | None = None, model: str | None = None, subsets: int = MINING.subsets,
                    subset_size: int = MINING.subset_size, epochs: int = MINING.epochs,
                    indicators: list[str] | None = None, seed: int = MINING.seed,
                    device: str | None = None, train: dict[str, Any] | None = None,
                    tilt: float = SUBSET_TILT) -> SelectorResult:
    """Instruction Mining: fit the rule (cached fine-tunes), score every row, keep the ``budget`` best or the
    top ``fraction`` of the candidates."""
    if budget is None and fraction is None:
        raise OptionError("the mining selector needs budget= or fraction=")
    keep = rows_to_keep(len(rows), budget, fraction)  # checked before the fine-tunes, not after them
    _, names, x = _settings(ws, subsets, subset_size, epochs, indicators, seed, train, tilt)
    scored = np.isfinite(x[rows]).all(axis=1)  # the rows the rule could score: every indicator has a value
    if (out := keep_all_eligible(ws, rows, scored, keep, skipped=f"Instruction Mining's {subsets} subset fine-tunes",
                                 unscored={"column": "mining", "failure": FailureCode.EMPTY_INPUT.value,
                                           "indicators": names})) is not None:
        _check_inputs(eval_file, model)  # refused as the fine-tunes would refuse them, though none runs
        out.info.update(method="mining")
        return out
    rule = mine(ws, eval_file=eval_file, model=model, subsets=subsets, subset_size=subset_size, epochs=epochs,
                indicators=indicators, seed=seed, device=device, train=train, tilt=tilt)
    write_scores(ws, rule)
    out = select_learnability(ws, rows, budget=budget, fraction=fraction, column="mining")
    out.info.update(method="mining", r2=rule.r2, adjusted_r2=rule.adjusted_r2,
                    coefficients=dict(zip(rule.indicators, rule.coefficients, strict=True)), subsets=len(rule.subsets))
    return out
