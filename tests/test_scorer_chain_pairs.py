"""Evol complexity chains teach a scorer their order by construction (`train-scorer --labels ... --chain-pairs`),
even when the rank-and-score judge's numbers are noise."""

import numpy as np
import pytest

from curate.errors import ScorerError
from curate.scorers import train_scorer
from curate.scorers.constraints import order_accuracy, rewritten_chains
from curate.scorers.training_data import chain_order_pairs
from curate.session import Workspace

TOPICS = ["rivers", "volcanoes", "chess", "bread", "comets", "bees", "bridges", "jazz", "glaciers", "tea",
          "owls", "deserts", "printing", "tides", "maps", "violins", "coral", "trains", "salt", "kites"]


def _chain_order(scorer, chains):
    """order_accuracy of ``scorer`` on ``chains``, every version scored in one predict call (one encoding pass,
    not one per chain; a row's score does not depend on the rows beside it)."""
    flat = scorer.predict([text for chain in chains for text in chain]).tolist()
    ends = np.cumsum([0] + [len(chain) for chain in chains])
    return order_accuracy(chains, [flat[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)])


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
    assert "ridge head; " in ordered._repr_html_() and "labels evol_complexity" in ordered._repr_html_()

    fresh = rewritten_chains([f"Explain how {t} work to a {a} friend." for t in TOPICS for a in ("new", "old")],
                             steps=4, seed=1, held_out=True)
    ordered_order = _chain_order(ordered.scorer, fresh)
    assert ordered_order > 0.8 and ordered_order > _chain_order(plain.scorer, fresh) + 0.2
    assert held["scorer"]["chain_order"] > held["length"]["chain_order"]


def test_chain_pairs_need_an_evol_complexity_label_set(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.add_labels("quality_like", [{"instruction": f"q{i}", "text": f"answer {i}", "score": float(i % 5), "seed_id": "s",
                                    "step": i} for i in range(20)], {"kind": "quality"})
    with pytest.raises(ScorerError, match="Evol complexity chains"):
        train_scorer(ws, labels="quality_like", chain_pairs=True)


HARD = ["quantum field theory", "tax law", "protein folding", "compiler design", "options pricing"]
EASY = ["puppies", "sandwiches", "sunny days", "birthday cards", "picnics"]


def _evol_sets(seeds, chains, scored_every=2):
    """``sets.jsonl`` as `curate evol --kind complexity` writes it; every ``scored_every``-th set has rank scores,
    the others' rank-and-score call failed (their survivors are still ordered by construction)."""
    import json
    from dataclasses import asdict

    from curate.evol.rules import RankFailure
    from curate.evol.run import Variant, VariantSet

    rng = np.random.default_rng(1)
    lines = []
    for c, (seed_text, chain) in enumerate(zip(seeds, chains, strict=True)):
        variants = [Variant(f"s{c}", k, "seed" if k == 0 else "add_constraint", text, None if k == 0 else k - 1)
                    for k, text in enumerate(chain)]
        scored = c % scored_every == 0
        lines.append(json.dumps(asdict(VariantSet(
            f"s{c}", seed_text, variants, scores=[int(s) for s in rng.integers(1, 7, len(chain))] if scored else None,
            failure=None if scored else RankFailure.JUDGE_FAILED))))
    return "\n".join(lines) + "\n"


def _records_of(sets):
    import json

    return [{"text": v["text"], "score": None if vs["scores"] is None else float(vs["scores"][k]), "seed_id": vs["seed_id"],
             "step": v["step"], "operation": v["operation"]}
            for vs in map(json.loads, sets.splitlines()) for k, v in enumerate(vs["variants"])]


@pytest.fixture
def difficulty_ws(tmp_path):
    """A pool whose difficulty labels follow the domain alone, and an Evol label set of chains of its instructions
    (half the sets rank-failed): (workspace, pool records, chains, the label set's scored rows)."""
    from tests.conftest import write_jsonl

    rng = np.random.default_rng(0)
    records, seeds = [], []
    for topics, level in ((HARD, 5), (EASY, 1)):
        for t in topics:
            for a in ("young", "curious", "busy", "retired", "new"):
                seeds.append(f"Write a short note about {t} for a {a} reader.")
                records.append({"instruction": seeds[-1], "output": "A note.",
                                "difficulty": level + int(rng.integers(-1, 2)) * (level == 5)})
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", records))
    chains = rewritten_chains(seeds, steps=4, seed=0)
    sets = _evol_sets(seeds, chains)
    label_rows = [r for r in _records_of(sets) if r["score"] is not None]  # as `curate evol` stores its labels
    ws.add_labels("evol_complexity", label_rows, {"kind": "complexity"}, files={"sets.jsonl": sets.encode()})
    return ws, records, chains, label_rows


def test_difficulty_labels_mixed_with_chain_order(difficulty_ws, tmp_path):
    """--target a difficulty column with --labels an Evol set's chains: the labels teach the domain's difficulty,
    the chains (rank-failed sets included) the order of added requirements, which the labels alone never show."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.scorers import Scorer
    from curate.scorers.training_data import chain_records

    ws, records, chains, label_rows = difficulty_ws
    assert len(chain_records(ws, "evol_complexity")) == 5 * len(chains) == 2 * len(label_rows)  # unscored sets too
    only = train_scorer(ws, labels="evol_complexity", chain_pairs=True)
    assert only.data.labelled == len(label_rows) and only.scorer.metadata["ordered_pairs"] == 10 * len(chains)
    alone = train_scorer(ws, target="difficulty", reads=["instruction"])
    mixed = train_scorer(ws, target="difficulty", labels="evol_complexity", chain_pairs=True, reads=["instruction"])
    assert mixed.data.labelled == len(records) and len(mixed.data) - mixed.data.labelled == 5 * len(chains)
    assert mixed.scorer.metadata["ordered_pairs"] == 10 * len(chains)
    assert mixed.scorer.column == "difficulty_scorer" and mixed.scorer.imitates["column"] == "difficulty"
    held = mixed.evaluation.holdout
    assert held["scorer"]["n"] == alone.evaluation.holdout["scorer"]["n"]  # chain versions are no labels
    assert held["scorer"]["spearman"] > 0.6 and held["scorer"]["chain_order"] > held["length"]["chain_order"]

    fresh = rewritten_chains([f"Explain how {t} work to a {a} friend." for t in HARD + EASY for a in ("new", "old")],
                             steps=4, seed=1, held_out=True)
    mixed_order = _chain_order(mixed.scorer, fresh)
    assert mixed_order > 0.8 and mixed_order > _chain_order(alone.scorer, fresh) + 0.15
    hard, easy = mixed.scorer.predict([fresh[0][0], fresh[-1][0]])  # the domain still counts
    assert hard > easy

    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "difficulty", "--labels",
                                   "evol_complexity", "--chain-pairs", "--inputs", "instruction", "--out",
                                   str(tmp_path / "sc")])
    assert res.exit_code == 0, res.output
    assert f"{len(records)} labels and {5 * len(chains)} chain versions without one" in " ".join(res.output.split())
    assert Scorer.load(tmp_path / "sc").metadata["source"] == "column difficulty + chains of labels evol_complexity"
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--target", "difficulty", "--labels",
                                   "evol_complexity", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "--chain-pairs" in res.output
    with pytest.raises(ScorerError, match="reads the instruction alone"):
        train_scorer(ws, target="difficulty", labels="evol_complexity", chain_pairs=True)


def test_a_cross_encoder_fine_tunes_on_the_chains_too(difficulty_ws, tiny_base, tmp_path):
    """--kind cross-encoder --chain-pairs: the chains of the training groups join the fine-tuning as preference
    pairs (the held-out groups' chains never do), and held-out chains are scored as chain_order beside length."""
    from curate.scorers.finetuned import CrossEncoderScorer

    ws, records, chains, _ = difficulty_ws
    start = CrossEncoderScorer(reads=["instruction"], name="start", max_length=48, base=tiny_base)
    start.fit([r["instruction"] for r in records[::5]], [r["difficulty"] for r in records[::5]], epochs=1, batch_size=4)
    start.save(tmp_path / "start")
    results = {pairs: train_scorer(ws, target="difficulty", reads=["instruction"], kind="cross-encoder",
                                   init=str(tmp_path / "start"), epochs=2, seed=0,
                                   **({"labels": "evol_complexity", "chain_pairs": True} if pairs else {}))
               for pairs in (False, True)}
    held = results[True].evaluation.holdout
    assert held["scorer"]["n"] == results[False].evaluation.holdout["scorer"]["n"]  # chain versions are no labels
    assert results[True].scorer.metadata["ordered_pairs"] + held["scorer"]["chain_pairs"] == 10 * len(chains)
    assert held["scorer"]["chain_pairs"] > 0 and 0 <= held["scorer"]["chain_order"] <= 1
    assert held["length"]["chain_order"] > 0.5  # rewritten chains: length orders most pairs, not all
    assert "ordered_pairs" not in results[False].scorer.metadata and "chain_order" not in results[False].evaluation.holdout["scorer"]
    page = results[True]._repr_html_()  # a notebook shows what trained, on what, and the agreement table
    assert "cross-encoder (score head), " in page and " steps on cpu" in page and "<table>" in page
    assert f"{results[True].evaluation.n_holdout:,} held out" in page


def test_a_judge_that_gives_one_number_to_nearly_everything_still_yields_a_scorer(tmp_path):
    """A small local rank judge scored every set 1 but one: the folds whose training part holds one label value are
    not fitted (counted, not an error), the chains still teach the order, and the final head has the spread."""
    seeds = [f"Write a short note about {t} for a {a} reader." for t in TOPICS for a in ("young", "busy")]
    chains = rewritten_chains(seeds, steps=4, seed=0)
    rows = [{"text": text, "score": float(k + 1) if c == 0 else 1.0, "seed_id": f"s{c}", "step": k,
             "operation": "seed" if k == 0 else "add_constraint"} for c, chain in enumerate(chains) for k, text in enumerate(chain)]
    ws = Workspace(tmp_path / "ws")
    ws.add_labels("evol_complexity", rows, {"kind": "complexity"})
    result = train_scorer(ws, labels="evol_complexity", chain_pairs=True)
    extra = result.evaluation.extra
    assert extra.get("folds_without_label_spread", 0) + extra.get("holdout_without_label_spread", 0) == 1
    fresh = rewritten_chains([f"Explain how {t} work to a {a} friend." for t in TOPICS for a in ("new", "old")],
                             steps=4, seed=1, held_out=True)
    assert _chain_order(result.scorer, fresh) > 0.8
    flat = [{**r, "score": 1.0} for r in rows]
    ws.add_labels("flat", flat, {"kind": "complexity"})
    with pytest.raises(ScorerError, match="labels that differ"):  # no spread anywhere: nothing to put on a scale
        train_scorer(ws, labels="flat", chain_pairs=True)


def test_an_evol_run_that_kept_no_label_reads_back_as_empty_and_training_says_why(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.add_labels("evol_complexity", [], {"kind": "complexity"})  # every rewrite failed, as a dead local server gives
    assert len(ws.labels("evol_complexity")) == 0
    with pytest.raises(ScorerError, match="0 usable numeric labels"):
        train_scorer(ws, labels="evol_complexity")


def test_the_judge_scale_is_read_from_the_labelled_rows_only():
    """Chain versions with no score (NaN: they only give order pairs) left the scale unknown (nan min/max), so a
    --chain-pairs scorer stayed off DEITA's 1-6."""
    import numpy as np
    import pytest

    from curate.errors import ScorerOptionError
    from curate.scorers.label_scales import infer_scale

    assert infer_scale([2.0, np.nan, 5.0, np.nan]).bounds == (1.0, 5.0)
    with pytest.raises(ScorerOptionError, match="no numeric label"):
        infer_scale([np.nan, np.nan])


def _strict_json(path):
    """A JSON file as a strict parser reads it: Python's bare NaN / Infinity tokens are refused."""
    import json

    def refuse(token):
        raise ValueError(f"{path}: {token} is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize(("seed", "reasons"), [
    (0, ["Spearman interval of scorer, length (fewer than 3 held-out groups to resample)"]),
    (1, ["Spearman, Kendall, pairwise acc of scorer, length, random (held-out labels all equal)",
         "Spearman interval of scorer, length (fewer than 3 held-out groups to resample)"])])
def test_figures_few_labels_cannot_give_are_a_reason_in_the_report_and_null_in_scorer_json(tmp_path, seed, reasons):
    """28 labels in 7 chains: the held-out part is one chain (seed 0), or one whose labels are all 1 (seed 1). The
    report printed nan and "(nan..nan)", and scorer.json held bare NaN tokens a strict JSON parser refuses."""
    from typer.testing import CliRunner

    from curate.cli import app

    chains = rewritten_chains([f"Write a short note about {t} for a young reader." for t in TOPICS[:7]], steps=3, seed=0)
    rows = [{"text": text, "score": 1.0 if c % 2 == 0 else float(k + 1), "seed_id": f"s{c}", "step": k,
             "operation": None if k == 0 else "add_constraint"} for c, chain in enumerate(chains)
            for k, text in enumerate(chain)]
    ws = Workspace(tmp_path / "ws")
    ws.add_labels("evol_complexity", rows, {"kind": "complexity"})
    out = tmp_path / "cx2"
    res = CliRunner().invoke(app, ["train-scorer", str(ws.path), "--labels", "evol_complexity", "--chain-pairs",
                                   "--name", "evol_cx", "--folds", "3", "--seed", str(seed), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "nan" not in text.lower(), res.output
    assert f"held-out figures not computed: {'; '.join(reasons)}" in text, res.output
    held = _strict_json(out / "scorer.json")["metrics"]["holdout"]
    assert held["scorer"]["spearman_ci95"] == [None, None]
    assert held["scorer"]["no_figure"]["spearman_ci95"] == "too_few_groups"
    if seed == 1:
        assert held["scorer"]["spearman"] is None and held["scorer"]["no_figure"]["spearman"] == "labels_all_equal"
    # the notebook's view of the same evaluation: a dash with the reason, as the command line's, not nan
    from curate.scorers.training import train_scorer

    page = train_scorer(ws, labels="evol_complexity", chain_pairs=True, k=3, seed=seed).evaluation._repr_html_()
    assert "nan" not in page.lower() and f"held-out figures not computed: {'; '.join(reasons)}" in page, page
