"""Evol complexity chains teach a scorer their order by construction (`train-scorer --labels ... --chain-pairs`),
even when the rank-and-score judge's numbers are noise."""

import numpy as np
import pytest

from curate.errors import ScorerError
from curate.scorers import train_scorer
from curate.scorers.constraints import order_accuracy, rewritten_chains
from curate.scorers.training import chain_order_pairs
from curate.session import Workspace

TOPICS = ["rivers", "volcanoes", "chess", "bread", "comets", "bees", "bridges", "jazz", "glaciers", "tea",
          "owls", "deserts", "printing", "tides", "maps", "violins", "coral", "trains", "salt", "kites"]


def test_an_in_breadth_rewrite_starts_a_chain_of_its_own():
    steps = [("s", 0, None), ("s", 1, "add_constraint"), ("s", 2, "breadth"), ("s", 3, "deepen"), ("t", 0, None),
             ("t", 2, "reasoning")]
    assert sorted(chain_order_pairs(steps)) == [(1, 0), (3, 2), (5, 4)]


def test_chain_pairs_teach_the_order_that_noisy_judge_scores_do_not(tmp_path):
    seeds = [f"Write a short note about {t} for a {a} reader." for t in TOPICS for a in ("young", "curious", "busy")]
    chains = rewritten_chains(seeds, steps=4, seed=0)  # more requirements, often not longer (filler)
    rng = np.random.default_rng(0)
    rows = [{"text": text, "score": float(rng.integers(1, 7)), "seed_id": f"s{c}", "step": k,
             "operation": None if k == 0 else "add_constraint"}
            for c, chain in enumerate(chains) for k, text in enumerate(chain)]
    ws = Workspace(tmp_path / "ws")
    ws.add_labels("evol_complexity", rows, {"kind": "complexity"})
    plain = train_scorer(ws, labels="evol_complexity")
    ordered = train_scorer(ws, labels="evol_complexity", chain_pairs=True)
    held = ordered.evaluation.holdout
    assert held["scorer"]["chain_pairs"] > 0 and "chain_order" not in plain.evaluation.holdout["scorer"]
    assert ordered.scorer.metadata["ordered_pairs"] == len(chains) * 10  # 5 versions: 10 ordered pairs per chain

    fresh = rewritten_chains([f"Explain how {t} work to a {a} friend." for t in TOPICS for a in ("new", "old")],
                             steps=4, seed=1, held_out=True)
    def order(result):
        return order_accuracy(fresh, [result.scorer.predict(chain).tolist() for chain in fresh])
    assert order(ordered) > 0.8 and order(ordered) > order(plain) + 0.2
    assert held["scorer"]["chain_order"] > held["length"]["chain_order"]


def test_chain_pairs_need_an_evol_complexity_label_set(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.add_labels("quality_like", [{"instruction": f"q{i}", "text": f"answer {i}", "score": float(i % 5), "seed_id": "s",
                                    "step": i} for i in range(20)], {"kind": "quality"})
    with pytest.raises(ScorerError, match="Evol complexity chains"):
        train_scorer(ws, labels="quality_like", chain_pairs=True)
