"""What an Evol run records: its label rows as a ``datasets.Dataset`` and its provenance (settings, prompts,
counts by reason, usage)."""

from __future__ import annotations

import collections
from dataclasses import asdict
from typing import Any

#: Labels whose commonest score holds at least this share are nearly constant: a scorer fit on them learns that score.
NEARLY_CONSTANT_SHARE = 0.8


def labels_dataset(sets: list[Any], kind: str):
    """One row per scored variant: text, score, seed_id, step, operation[, instruction]."""
    import datasets

    cols: dict[str, list[Any]] = {"text": [], "score": [], "seed_id": [], "step": [], "operation": []}
    if kind == "quality":
        cols["instruction"] = []
    for vs in sets:
        if vs.scores is None:
            continue
        for v, s in zip(vs.variants, vs.scores, strict=True):
            cols["text"].append(v.text)
            cols["score"].append(float(s))
            cols["seed_id"].append(vs.seed_id)
            cols["step"].append(v.step)
            cols["operation"].append(v.operation)
            if kind == "quality":
                cols["instruction"].append(vs.instruction)
    features = datasets.Features({"text": datasets.Value("string"), "score": datasets.Value("float64"),
                                  "seed_id": datasets.Value("string"), "step": datasets.Value("int32"),
                                  "operation": datasets.Value("string"),
                                  **({"instruction": datasets.Value("string")} if kind == "quality" else {})})
    return datasets.Dataset.from_dict(cols, features=features)


def label_warning(distribution: dict[str, int], tied_sets: int, sets_scored: int) -> str | None:
    """What is wrong with a run's labels as a scorer's training data (``distribution``: count by score), or None:
    nearly constant (the commonest score holds `NEARLY_CONSTANT_SHARE` or more of them)."""
    total = sum(distribution.values())
    if not total:
        return None
    score, count = max(distribution.items(), key=lambda kv: kv[1])
    if count / total < NEARLY_CONSTANT_SHARE:
        return None
    return (f"nearly constant labels: {count} of {total} ({count / total:.0%}) score {score}, and {tied_sets} of "
            f"{sets_scored} variant sets got one score for every variant; a scorer cannot learn from them (the rank "
            "judge did not tell the variants apart: a stronger judge model ranks them)")


def label_spread_text(p: dict[str, Any]) -> str:
    """A run's labels and their scores from its provenance, e.g. ``34 labels: score 1 ×31, 2 ×3``."""
    dist = p["score_distribution"]
    return (f"{p['labels']:,} labels: score " + ", ".join(f"{k} ×{v}" for k, v in dist.items()) if dist
            else f"{p['labels']:,} labels")


def _prompt_info(p: Any) -> dict[str, Any]:
    return {"name": p.name, "version": p.version, "fingerprint": p.fingerprint}


def _backend_info(backend: Any) -> dict[str, Any]:
    info = backend.describe() if hasattr(backend, "describe") else {}
    return {"class": type(backend).__name__, "model": getattr(backend, "model", None), **info}


def run_provenance(kind, steps, seed, operations, rules, prompts, rank_prompt, backend, sets, usage, labels,
                    rewrite_params, rank_params) -> dict[str, Any]:
    """A run's provenance: its settings, prompt fingerprints, backend, counts by reason and LLM usage."""
    eliminated = [v for s in sets for v in s.eliminated]
    rewrites = sum(len(s.variants) - 1 + len(s.eliminated) for s in sets)
    failures = collections.Counter(str(s.failure) for s in sets if s.failure)
    distribution = {str(k): v for k, v in sorted(collections.Counter(int(x) for x in labels["score"]).items())}
    sets_scored = sum(s.scores is not None for s in sets)
    tied = sum(s.scores is not None and len(set(s.scores)) == 1 for s in sets)
    return {
        "method": "evol", "kind": kind, "seeds": len(sets), "steps": steps, "seed": seed,
        "operations": list(operations), "operation_choice": "choose_operation(seed, seed_id, step)",
        "sampling_seed": "derive_seed(seed, 'sample', step)",
        "elimination_rules": asdict(rules),
        "prompts": {op: _prompt_info(p) for op, p in prompts.items()} | {"rank": _prompt_info(rank_prompt)},
        "backend": _backend_info(backend), "rewrite_params": rewrite_params, "rank_params": rank_params,
        "scale": [1, steps + 1], "rank_output": "curate.evol.rules:rank_model(n_variants, steps + 1)",
        "rewrites": rewrites, "eliminated": len(eliminated),
        "eliminated_by_reason": dict(collections.Counter(str(v.eliminated) for v in eliminated).most_common()),
        "sets_scored": sets_scored,
        "rank_failures": sum(failures.values()), "rank_failures_by_reason": dict(failures),
        "shuffle_seeds": {s.seed_id: s.shuffle_seed for s in sets if s.shuffle_seed is not None},
        "score_distribution": distribution, "tied_sets": tied,
        "label_warning": label_warning(distribution, tied, sets_scored),
        "labels": len(labels), "requests": usage.requests, "cached": usage.cached, "repeated": usage.repeated,
        "failed_before": usage.failed_before,
        "not_sent_max_cost": usage.not_sent, "paid_by_stopped_run": usage.paid_by_stopped_run,
        "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "cost_usd": None if usage.cost_usd is None else round(usage.cost_usd, 6),  # None: a price is unknown
    }
