"""InsTag: normaliser steps, metrics, complexity-first diverse sampling, the small tagger."""

import json
import random
import warnings

import numpy as np
import pytest

from curate.tags import (
    IntentTags,
    Normalizer,
    TagClassifier,
    coverage,
    instag_sample,
    instag_select,
    normalize,
    predict_tags,
    random_coverage,
    scaled_threshold,
    tag_frequency,
    tagger_agreement,
    tags_per_query,
    train_tagger,
)
from curate.session import Workspace
from tests.conftest import write_jsonl


def test_rule_aggregation_merges_case_plural_and_punctuation():
    rows = [["Data Analysis"], ["programming languages", "data_analysis"], ["data-analysis", "Poems", "Programming Language"], ["poem"], ["poem"], ["Coding"]]
    norm = Normalizer(min_frequency=None, semantic=False, association=False)
    out = norm.fit_transform(rows)
    assert out[0] == out[1][1:] == out[2][:1] == ["data analysis"]
    assert out[1][0] == out[2][2] == "programming language"
    assert out[2][1] == out[3][0] == "poem"  # most frequent surface form names the group
    assert out[5] == ["coding"]
    step = norm.report[-1]
    assert (step.step, step.tags_in, step.tags_out) == ("rule_aggregation", 8, 4)


def test_frequency_filter_drops_rare_tags_and_scales_alpha_with_warning():
    rows = [["common"]] * 5 + [["rare"]] * 2 + [["common", "once"]]
    norm = Normalizer(min_frequency=3, scale_small_pools=False, rules=False, semantic=False, association=False)
    out = norm.fit_transform(rows)
    assert all(r == ["common"] for r in out[:5]) and out[5] == [] and out[7] == ["common"]
    assert norm.mapping["rare"] is None and norm.mapping["once"] is None
    assert (norm.report[0].tags_in, norm.report[0].tags_out, norm.report[0].params["alpha"]) == (3, 1, 3)
    # the paper's alpha=20 on an 8-row pool: scaled to max(1, ceil(20 * 8 / 10000)) = 1, with a warning
    with pytest.warns(UserWarning, match="alpha scaled from 20 to 1"):
        Normalizer(semantic=False, association=False).fit(rows)
    assert scaled_threshold(20, 1740) == 4 and scaled_threshold(20, 50_000) == 20 and scaled_threshold(40, 10, floor=2) == 2


def fixed_embed(texts):
    table = {"automobile": [1.0, 0.0, 0.0], "car": [0.999, 0.03, 0.0], "cars": [0.999, 0.03, 0.0],
             "poetry": [0.0, 1.0, 0.0], "math": [0.0, 0.0, 1.0], "verse": [0.3, 0.9, 0.3]}
    return np.array([table[t] for t in texts])


def test_semantic_aggregation_merges_near_synonyms_with_a_fixed_embedding():
    rows = [["car"], ["car"], ["automobile"], ["Cars", "poetry"], ["verse"], ["math"]]
    norm = Normalizer(min_frequency=None, association=False, embed=fixed_embed, eps=0.05)
    out = norm.fit_transform(rows)
    # rule step: Cars -> car; semantic: automobile (cos dist ~5e-4) joins car, the most frequent member
    assert out[2] == ["car"] and out[3] == ["car", "poetry"]
    assert out[4] == ["verse"] and out[5] == ["math"]  # verse is ~0.095 from poetry: apart
    sem = norm.report[-1]
    assert (sem.step, sem.tags_in, sem.tags_out) == ("semantic_aggregation", 5, 4)


def test_association_aggregation_merges_an_always_co_occurring_pair():
    rows = ([["recipe", "cooking"]] * 6 + [["recipe", "cooking", "baking"]] * 2 + [["baking"]] * 4
            + [["travel"]] * 3 + [["travel", "baking"]])
    norm = Normalizer(min_frequency=None, rules=False, semantic=False, min_support=3, scale_small_pools=False)
    out = norm.fit_transform(rows)
    assert out[0] == ["cooking"] or out[0] == ["recipe"]
    assert len({t for r in out for t in r}) == 3  # recipe+cooking merged; baking and travel stay apart
    assert out[-1] == ["travel", "baking"]
    step = norm.report[-1]
    assert (step.step, step.tags_in, step.tags_out) == ("association_aggregation", 4, 3)


def test_mapping_saved_and_applied_to_new_rows(tmp_path):
    rows = [["Data Analysis"], ["data analysis"], ["poem"], ["poem"]]
    norm = Normalizer(min_frequency=None, semantic=False, association=False).fit(rows)
    path = norm.save(tmp_path / "m.json")
    back = Normalizer.load(path)
    assert json.loads(path.read_text())["mapping"]["Data Analysis"] == "data analysis"
    # unseen raw variants map through their stemmed key; unknown tags drop; failed rows stay None
    assert back.transform([["DATA-ANALYSIS", "Poems", "unknown"], None]) == [["data analysis", "poem"], None]
    assert "rule_aggregation" in norm._repr_html_()


def test_metrics():
    rows = [["a", "b"], ["b"], ["c", "d", "e"], [], None]
    assert coverage([rows[0], rows[1]], rows) == pytest.approx(2 / 5)
    assert tags_per_query(rows) == pytest.approx(6 / 4)
    assert tag_frequency(rows)[0] == ("b", 2)
    mean, std = random_coverage(rows, 5, seeds=3)
    assert mean == 1.0 and std == 0.0


def random_pool(seed, n=60, vocab=25):
    rng = random.Random(seed)
    tags = [f"t{i}" for i in range(vocab)]
    return [rng.sample(tags, rng.choice([0, 1, 1, 2, 3, 4, 5])) if rng.random() > 0.1 else None for _ in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_sampler_beats_every_same_size_prefix_of_the_tag_count_order(seed):
    rows = random_pool(seed)
    ids = [f"r{i:03d}" for i in range(len(rows))]
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i] or []), ids[i]))
    positions, decisions, reasons, _ = instag_sample(rows, budget=40, ids=ids)
    kept = [p for p, d in zip(positions, decisions, strict=True) if d == "kept"]
    for k in range(1, len(kept) + 1):
        assert coverage([rows[i] for i in kept[:k]], rows) >= coverage([rows[i] for i in order[:k]], rows)
    assert all(rows[i] for i in kept)  # tagless rows never qualify
    assert sorted(positions) == list(range(len(rows)))


def test_sampler_terminates_with_tagless_rows_and_tie_break_is_by_id():
    rows = [[], None, ["x"], ["x"], []]
    ids = ["e", "d", "c", "b", "a"]
    positions, decisions, reasons, _ = instag_sample(rows, budget=10, ids=ids)
    assert [ids[p] for p, d in zip(positions, decisions, strict=True) if d == "kept"] == ["b", "c"]  # one per sweep, by id
    assert decisions.count("no_tags") == 3 and "never qualifies" in reasons[-1]
    assert instag_sample([[], None], budget=5)[1] == ["no_tags", "no_tags"]
    again = instag_sample(rows, budget=10, ids=ids)
    assert again[0] == positions  # deterministic
    # budget reached: the rest is not_reached
    p2, d2, _, _ = instag_sample([["a", "b"], ["c"], ["d"]], budget=2)
    assert d2 == ["kept", "kept", "not_reached"]


@pytest.fixture
def tagged_ws(tmp_path):
    recs = [{"instruction": f"Question {i}", "output": "ok"} for i in range(8)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", recs))
    raw = [["Poems", "nature"], ["poem"], ["Math", "proof"], ["math"], ["proof", "logic", "math"], [], None, ["nature"]]
    ws.add_column("tags_raw", raw, {"kind": "test"})
    return ws


def test_normalize_and_select_on_a_workspace(tagged_ws):
    ws = tagged_ws
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        norm = normalize(ws, Normalizer(semantic=False, association=False))
    tags = ws.column("tags")
    assert tags[0] == ["poem", "nature"] and tags[5] == [] and tags[6] is None
    prov = ws.columns["tags"]
    assert prov["kind"] == "instag_normalized" and prov["steps"][1]["step"] == "rule_aggregation"
    assert Normalizer.load(prov["mapping_file"]).mapping == norm.mapping
    ids, decisions, reasons = instag_select(ws, budget=3)
    assert len(ids) == len(ws) and decisions.count("kept") == 3
    assert ids[0] == ws.ids[4]  # three tags: the most complex row comes first
    ws.add_selection("instag", ids, decisions, reasons, {"method": "instag"})
    assert len(ws.selection("instag")) == 3
    # candidates limited to some pool positions (an input selection)
    sub_ids, sub_dec, _ = instag_select(ws, budget=5, rows=[0, 1, 5, 6])
    assert sorted(sub_ids) == sorted(ws.ids[i] for i in (0, 1, 5, 6)) and sub_dec.count("no_tags") == 2


def test_registered_with_the_selection_module(tagged_ws):
    select = pytest.importorskip("curate.select", reason="curate.select arrives with the select branch")
    from curate.tags import register

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        normalize(tagged_ws, Normalizer(semantic=False, association=False))
    register()
    result = select.SELECTORS["instag"](tagged_ws, np.arange(len(tagged_ws)), budget=3)
    assert result.decisions.count("kept") == 3 and result.info["tags_per_query"] > 1


def test_tag_classifier_fit_predict_save_load(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16))
    names = ["code", "math", "poetry"]
    X, Y = [], []
    for _ in range(120):
        on = [j for j in range(3) if rng.random() < 0.4] or [int(rng.integers(3))]
        X.append(centers[on].sum(0) + 0.3 * rng.normal(size=16))
        Y.append([names[j] for j in on])
    X = np.array(X)
    clf = TagClassifier().fit(X[:90], Y[:90])
    pred = clf.predict(X[90:])
    scores = tagger_agreement(pred, Y[90:], clf.labels)
    assert scores["micro_f1"] > 0.8 and scores["macro_f1"] > 0.8 and scores["covered_jaccard"] == 1.0
    path = clf.save(tmp_path / "tagger.safetensors")
    back = TagClassifier.load(path)
    assert back.labels == clf.labels and back.predict(X[90:]) == pred
    assert all(len(r) == 2 for r in back.predict(X[90:], top_k=2))


def test_intent_tags_schema():
    parsed = IntentTags.model_validate_json('{"tags": [{"tag": "python", "explanation": "language"}]}')
    assert parsed.tags[0].tag == "python"


@pytest.mark.llm
def test_tagging_prompt_on_the_real_local_server(local_llm, tmp_path):
    from curate.tags import tag

    recs = [{"instruction": "Write a short poem about the sea.", "output": "..."},
            {"conversations": [{"from": "human", "value": "Sort a list in Python."}, {"from": "gpt", "value": "sorted(x)"},
                               {"from": "human", "value": "Now in reverse order."}, {"from": "gpt", "value": "..."}]}]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "a.jsonl", recs[:1]))
    ws.load(write_jsonl(tmp_path / "b.jsonl", recs[1:]))
    summary = tag(ws, local_llm.backend(), progress=False)
    assert summary["turns"] == 3
    tags, failures = ws.column("tags_raw"), ws.column("tags_raw_failure")
    for value, failure in zip(tags, failures, strict=True):
        assert (value is None) == (failure is not None)  # a failure is recorded, never a silent default
        if value is not None:
            assert all(isinstance(t, str) and t for t in value)
    assert any(value for value in tags), f"no row got valid tags: {failures}"


def test_cli_tags_report_and_normalize(tagged_ws):
    import subprocess
    import sys

    ws = tagged_ws
    ws.add_selection("first3", ws.ids, ["kept"] * 3 + ["rejected"] * (len(ws) - 3), [""] * len(ws), {"method": "test"})
    r = subprocess.run([sys.executable, "-m", "curate.cli", "tags", str(ws.path), "--normalize", "--eps", "0",
                        "--min-support", "0", "--seeds", "3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "rule_aggregation: 7 -> 5 tags" in r.stdout and "tags per query" in r.stdout
    assert "selection first3 (3 rows): coverage 0.800" in r.stdout
    r = subprocess.run([sys.executable, "-m", "curate.cli", "tag", str(ws.path), "--backend", "openai"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--model" in (r.stderr + r.stdout)


def test_train_tagger_and_predict_on_a_workspace(tmp_path):
    rng = np.random.default_rng(1)
    recs, tag_lists = [], []
    for i in range(40):
        on = [t for t in ("code", "math") if rng.random() < 0.5] or ["code"]
        recs.append({"instruction": f"row {i}", "output": "ok"})
        tag_lists.append(on)
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", recs))
    ws.add_column("tags", tag_lists, {"kind": "test"})
    centers = {"code": np.eye(8)[0], "math": np.eye(8)[1]}
    X = np.array([sum(centers[t] for t in on) + 0.1 * rng.normal(size=8) for on in tag_lists])
    ws.add_embeddings("toy", X, {"kind": "test"})
    clf, scores = train_tagger(ws, embeddings="toy")
    assert scores["micro_f1"] > 0.9 and scores["test_rows"] == 8
    predicted = predict_tags(ws, clf, embeddings="toy")
    assert ws.column("tags_predicted") == predicted and ws.columns["tags_predicted"]["kind"] == "instag_tagger"
