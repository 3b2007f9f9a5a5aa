"""InsTag: normaliser steps, metrics, complexity-first diverse sampling, the small tagger."""

import json
import random

import numpy as np
import pytest

from curate.codes import Decision, FailureCode, Reason
from curate.errors import CurateError, CurateWarning
from curate.session import Workspace
from curate.tags import (
    IntentTags,
    Normalizer,
    TagClassifier,
    coverage,
    coverage_report,
    normalize,
    predict_tags,
    random_coverage,
    row_tags,
    scaled_threshold,
    tag_frequency,
    tagger_agreement,
    tags_per_query,
    train_tagger,
)
from curate.tags.sampling import instag_sample
from tests.cli_in_process import curate_in_process
from tests.conftest import ScriptedBackend, apply_and_check_warning, write_jsonl


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


def test_rule_aggregation_reads_every_script_and_drops_tags_that_name_nothing():
    """stdlib re split Hindi at its vowel signs ("ह न द"), kept NFD and full-width forms apart, and symbol-only tags
    became the tag "" (counted as the top tag)."""
    rows = [["हिन्दी व्याकरण"], ["re\u0301sume\u0301 writing"], ["résumé writing", "&"], ["Ｐｙｔｈｏｎ", "..."],
            ["python", "→"], ["C++", "C#", "C"]]
    out = Normalizer(min_frequency=None, semantic=False, association=False).fit_transform(rows)
    assert out[0] == ["हिन्दी व्याकरण"] and out[1] == out[2] == ["résumé writing"]
    assert out[3] == out[4] == ["python"] and out[5] == ["c++", "c#", "c"]
    from curate.evol.rules import normalise

    assert normalise("यह एक सरल वाक्य है") == ["यह", "एक", "सरल", "वाक्य", "है"]  # Evol's word counts too


def test_invisible_format_characters_inside_a_tag_join_its_word_instead_of_splitting_it():
    """A soft hyphen, zero-width space or word joiner inside a word (text pasted from the web; a bidi mark beside an
    Arabic or Hebrew word) split it: 'py\u00adthon' became the tag 'py thon', apart from 'python'."""
    rows = [["python"], ["py\u00adthon"], ["py\u200bthon"], ["\ufeffPy\u2060thon\u200e"], ["data\u200b analysis"]]
    norm = Normalizer(min_frequency=None, semantic=False, association=False)
    assert norm.fit_transform(rows) == [["python"]] * 4 + [["data analysis"]]
    assert Normalizer.surface("py\u00adthon") == "python" and norm.vocabulary == ["data analysis", "python"]


def test_frequency_filter_drops_rare_tags_and_scales_alpha_on_small_pools():
    rows = [["common"]] * 5 + [["rare"]] * 2 + [["common", "once"]]
    norm = Normalizer(min_frequency=3, scale_small_pools=False, rules=False, semantic=False, association=False)
    out = norm.fit_transform(rows)
    assert all(r == ["common"] for r in out[:5]) and out[5] == [] and out[7] == ["common"]
    assert norm.mapping["rare"] is None and norm.mapping["once"] is None
    assert (norm.report[0].tags_in, norm.report[0].tags_out, norm.report[0].params["alpha"]) == (3, 1, 3)
    # the paper's alpha=20 on an 8-row pool: scaled to max(1, ceil(20 * 8 / 10000)) = 1, said in the step's report
    small = Normalizer(semantic=False, association=False).fit(rows)
    assert small.report[0].params["alpha"] == 1 and "alpha scaled from 20 to 1" in small.report[0].note
    assert scaled_threshold(20, 1740) == 4 and scaled_threshold(20, 50_000) == 20 and scaled_threshold(40, 10, floor=2) == 2



def test_a_rare_spelling_of_a_kept_tag_maps_to_it():
    """The frequency filter counts raw strings before rule aggregation merges them: rows tagged 'coding' (3 rows,
    beside 'Coding' in 1,000) lost the tag, where an unseen 'CoDiNg' mapped to it. A rare spelling whose rule key a
    kept tag has now maps to that tag; a rare tag of its own is still dropped."""
    rows = [["Coding", "Math"]] * 1000 + [["Math"]] * 990 + [["coding", "Math"]] * 3 + [["CODING "]] * 3 + [["Knitting"]]
    norm = Normalizer(semantic=False, association=False)  # alpha scaled to 4 on 1,997 rows
    out = norm.fit_transform(rows)
    assert norm.report[0].params["alpha"] == 4
    assert out[1990] == ["coding", "math"] and out[1993] == ["coding"] and out[-1] == []
    assert norm.mapping["coding"] == norm.mapping["CODING "] == norm.mapping["Coding"] == "coding"
    assert norm.mapping["Knitting"] is None and norm.transform([["CoDiNg"]]) == [["coding"]]

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


@pytest.mark.parametrize("pool_rows", [25, 10_011])
def test_association_support_is_met_by_exactly_that_many_rows(pool_rows):
    # 7 of 25 and 40 of 10,011 rows: the fraction times the row count is a hair above the count in floating point
    support = 7 if pool_rows == 25 else 40
    filler = [["other"]] * (pool_rows - support)
    norm = Normalizer(min_frequency=None, rules=False, semantic=False, min_support=support, scale_small_pools=False)
    assert len({t for r in norm.fit_transform([["recipe", "cooking"]] * support + filler) for t in r}) == 2
    one_short = [["recipe", "cooking"]] * (support - 1) + filler + [["other"]]
    assert len({t for r in norm.fit_transform(one_short) for t in r}) == 3


def test_mapping_saved_and_applied_to_new_rows(tmp_path):
    rows = [["Data Analysis"], ["data analysis"], ["poem"], ["poem"]]
    norm = Normalizer(min_frequency=None, semantic=False, association=False).fit(rows)
    path = norm.save(tmp_path / "m.json")
    back = Normalizer.load(path)
    assert json.loads(path.read_text())["mapping"]["Data Analysis"] == "data analysis"
    # unseen raw variants map through their stemmed key; unknown tags drop; failed rows stay None
    assert back.transform([["DATA-ANALYSIS", "Poems", "unknown"], None]) == [["data analysis", "poem"], None]
    assert "rule_aggregation" in norm._repr_html_()
    (tmp_path / "cut.json").write_text(path.read_text()[:40])
    with pytest.raises(ValueError, match=r"cut.json: line \d+: not JSON"):
        Normalizer.load(tmp_path / "cut.json")
    (tmp_path / "edited.json").write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "params"}))
    with pytest.raises(ValueError, match="edited.json: not a readable Normalizer mapping .KeyError: 'params'"):
        Normalizer.load(tmp_path / "edited.json")


def test_metrics():
    rows = [["a", "b"], ["b"], ["c", "d", "e"], [], None]
    assert coverage([rows[0], rows[1]], rows) == pytest.approx(2 / 5)
    assert tags_per_query(rows) == pytest.approx(6 / 4)
    assert tag_frequency(rows)[0] == ("b", 2)
    mean, std = random_coverage(rows, 5, seeds=3)
    assert mean == 1.0 and std == 0.0
    from curate.tags.classifier import tagger_agreement

    # a training label ("z") absent from the held-out rows and never predicted is no miss: a perfect tagger scores 1
    perfect = tagger_agreement([["x"], ["x", "y"]], [["x"], ["x", "y"]], ["x", "y", "z"])
    assert perfect["macro_f1"] == perfect["micro_f1"] == 1.0
    assert tagger_agreement([["x"], ["x"]], [["x"], ["x", "y"]], ["x", "y", "z"])["macro_f1"] == pytest.approx(0.5)


def random_pool(seed, n=60, vocab=25):
    rng = random.Random(seed)
    tags = [f"t{i}" for i in range(vocab)]
    return [rng.sample(tags, rng.choice([0, 1, 1, 2, 3, 4, 5])) if rng.random() > 0.1 else None for _ in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_sampler_beats_every_same_size_prefix_of_the_tag_count_order(seed):
    rows = random_pool(seed)
    ids = [f"r{i:03d}" for i in range(len(rows))]
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i] or []), ids[i]))
    sample = instag_sample(rows, budget=40, ids=ids)
    positions, decisions = sample.positions, sample.decisions
    kept = [p for p, d in zip(positions, decisions, strict=True) if d == "kept"]
    assert kept == sample.kept and 0 < len(kept) <= 40
    for k in range(1, len(kept) + 1):
        assert coverage([rows[i] for i in kept[:k]], rows) >= coverage([rows[i] for i in order[:k]], rows)
    assert all(rows[i] for i in kept)  # tagless rows never qualify
    assert sorted(positions) == list(range(len(rows)))
    for p, reason in zip(positions, sample.reasons, strict=True):
        assert (reason is Reason.NO_TAGS) == (not rows[p])


def test_sampler_terminates_with_tagless_rows_and_tie_break_is_by_id():
    rows = [[], None, ["x"], ["x"], []]
    ids = ["e", "d", "c", "b", "a"]
    sample = instag_sample(rows, budget=10, ids=ids)
    positions, decisions, reasons = sample.positions, sample.decisions, sample.reasons
    assert [ids[p] for p, d in zip(positions, decisions, strict=True) if d == "kept"] == ["b", "c"]  # one per sweep, by id
    assert [s["sweep"] for s in sample.details[:2]] == [1, 2]
    # a row with no tags is NO_TAGS (rejected; unscored when tagging failed), never a judge failure
    assert reasons.count(Reason.NO_TAGS) == 3 and reasons[-1] is Reason.NO_TAGS
    assert decisions[2:] == [Decision.REJECTED, Decision.UNSCORED, Decision.REJECTED]
    assert instag_sample([[], None], budget=5).reasons == [Reason.NO_TAGS, Reason.NO_TAGS]
    again = instag_sample(rows, budget=10, ids=ids)
    assert again.positions == positions  # deterministic
    # budget reached: the rest is not_reached (never swept: budget filled; swept without a new tag: no new tag)
    s2 = instag_sample([["a", "b"], ["c"], ["d"]], budget=2)
    assert s2.decisions == ["kept", "kept", "not_reached"] and s2.reasons[2] is Reason.BUDGET_FILLED
    s3 = instag_sample([["a", "b"], ["a"], ["c"]], budget=2)
    assert s3.decisions == ["kept", "kept", "not_reached"] and s3.reasons == [Reason.SELECTED, Reason.SELECTED,
                                                                              Reason.NO_NEW_TAG]
    assert s3.details[2] == {"tags": 1, "sweeps": 1, "budget": 2}


@pytest.fixture
def tagged_ws(tmp_path):
    recs = [{"instruction": f"Question {i}", "output": "ok"} for i in range(8)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", recs))
    # per-turn raw tags, as the Tagger step writes them (row 6: its tagging failed)
    raw = [[["Poems", "nature"]], [["poem"]], [["Math", "proof"]], [["math"]], [["proof", "logic", "math"]], [[]], None,
           [["nature"]]]
    ws.add_column("tags_raw", raw, {"kind": "test", "granularity": "turn"})
    return ws


def test_normalize_and_select_on_a_workspace(tagged_ws):
    ws = tagged_ws
    with pytest.warns(CurateWarning, match=r"tags: 1 of the 8 rows computed now failed"):
        norm = normalize(ws, Normalizer(semantic=False, association=False))
    tags = ws.column("tags")
    assert tags[0] == ["poem", "nature"] and tags[5] == [] and tags[6] is None
    assert ws.failures("tags")[6][0].code is FailureCode.EMPTY_INPUT and not ws.failures("tags")[5]
    prov = ws.columns["tags"]
    assert prov["kind"] == "instag_normalized" and prov["steps"][1]["step"] == "rule_aggregation"
    assert prov["granularity"] == "row" and prov["mapping_artifact"] == "instag_mapping"
    assert Normalizer.from_workspace(ws).mapping == norm.mapping == ws.artifact("instag_mapping")["mapping"]
    # one value per row: a row's tag list as it is (not its turns', and never a bare tag for a one-tag row)
    assert ws.row_values("tags") == tags and ws.row_values("tags", [ws.ids[1]]) == [["poem"]]
    ws.add_column("tags_two_turns", [[["a"], ["b", "c"]]] * len(ws), {"kind": "test", "granularity": "turn"})
    with pytest.raises(CurateError, match="'tags_two_turns' has per-turn values .* read ws.column"):
        ws.row_values("tags_two_turns")
    assert not (ws.cache_dir / "instag_mapping.json").exists()  # the mapping is an artifact, not a loose file
    sel = ws.select(method="instag", name="instag", budget=3)
    assert len(sel.table) == len(ws) and sel.decisions()["kept"] == 3 and len(ws.selection("instag")) == 3
    assert sel.table["id"][0].as_py() == ws.ids[4]  # three tags: the most complex row comes first
    rows = {r["id"]: r for r in sel.rows()}
    assert rows[ws.ids[4]]["reason"] == Reason.SELECTED and rows[ws.ids[4]]["detail"]["tags"] == 3
    # a row with no tags is NO_TAGS (not a judge failure); a row whose tagging failed is unscored, NO_TAGS too
    assert (rows[ws.ids[5]]["decision"], rows[ws.ids[5]]["reason"]) == (Decision.REJECTED, Reason.NO_TAGS)
    assert (rows[ws.ids[6]]["decision"], rows[ws.ids[6]]["reason"]) == (Decision.UNSCORED, Reason.NO_TAGS)
    assert sel.reasons()[(Decision.REJECTED, Reason.NO_TAGS)] == 1
    assert sel.provenance["tags_per_query"] > 1 and sel.provenance["tags_column"] == "tags"
    # candidates limited to some pool positions (an input selection)
    ws.add_selection("some", [ws.ids[i] for i in (0, 1, 5, 6)], ["kept"] * 4, ["selected"] * 4, [None] * 4,
                     {"method": "test"})
    sub = ws.select(method="instag", name="sub", input_selection="some", budget=5)
    assert sorted(sub.table["id"].to_pylist()) == sorted(ws.ids[i] for i in (0, 1, 5, 6))
    assert sum(n for (_, r), n in sub.reasons().items() if r == Reason.NO_TAGS) == 2
    ws.add_column("topic", ["poetry"] * len(ws), {"kind": "test"})  # a string per row: not a tag list
    for column, message in (("tags_raw", "holds tags per turn"), ("topic", "is not a list of tags per row")):
        with pytest.raises(CurateError, match=message):
            ws.select(method="instag", name="bad", budget=3, tags_column=column)


def test_row_tags_union_over_turns():
    assert row_tags([["a", "b"], ["b", "c"]]) == ["a", "b", "c"]
    assert row_tags([["a"], None]) is None and row_tags(None) is None and row_tags([]) == []


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
    from curate.tags import Tagger

    recs = [{"instruction": "Write a short poem about the sea.", "output": "..."},
            {"conversations": [{"from": "human", "value": "Sort a list in Python."}, {"from": "gpt", "value": "sorted(x)"},
                               {"from": "human", "value": "Now in reverse order."}, {"from": "gpt", "value": "..."}]}]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "a.jsonl", recs[:1]))
    ws.load(write_jsonl(tmp_path / "b.jsonl", recs[1:]))
    result = apply_and_check_warning(ws, Tagger(local_llm.backend()), progress=False)  # SmolLM2 may echo an example
    assert result.provenance["turns"] == 3 and result.computed == 2
    tags, failures = ws.column("tags_raw"), ws.failures("tags_raw")
    assert [len(v) for v in tags] == [len(t) for t in ws.turns()] == [1, 2]  # one tag list per user turn
    for value, fails in zip(tags, failures, strict=True):
        failed_turns = {f.turn for f in fails}
        for t, turn_tags in enumerate(value, start=1):
            assert (turn_tags is None) == (t in failed_turns)  # a failure is recorded, never a silent default
            if turn_tags is not None:
                assert all(isinstance(x, str) and x for x in turn_tags)
    assert any(v for value in tags for v in value), f"no turn got valid tags: {failures}"
    assert ws.apply(Tagger(local_llm.backend()), progress=False).computed == 0  # a re-run reuses every row


def test_cli_tags_report_and_normalize(tagged_ws):
    from tests.cli_in_process import curate_in_process

    ws = tagged_ws
    ws.add_selection("first3", ws.ids, ["kept"] * 3 + ["rejected"] * (len(ws) - 3),
                     ["selected"] * 3 + ["not_sampled"] * (len(ws) - 3), [None] * len(ws), {"method": "test"})
    r = curate_in_process("tags", str(ws.path), "--normalize", "--eps", "0", "--min-support", "0", "--seeds", "3")
    assert r.returncode == 0, r.stderr
    assert "rule_aggregation: 7 -> 5 tags" in r.stdout and "tags per query" in r.stdout
    # one denominator: row 5 (tagged, no tag left) counts among the tagged rows as in tags per query; row 6 failed
    assert "7 of 8 rows tagged (1 of them with no tag)" in " ".join(r.stdout.split())
    again = curate_in_process("tags", str(ws.path), "--seeds", "3")  # the stored mapping's steps, notes included
    assert again.returncode == 0 and "alpha scaled from 20 to 1" in " ".join(again.stdout.split())
    # crashed; with --normalize, wrote over tags_raw
    raw = curate_in_process("tags", str(ws.path), "--column", "tags_raw", "--normalize")
    assert raw.returncode == 1 and "holds the judge's raw tags per turn" in raw.stderr and "Traceback" not in raw.stderr
    assert ws.column_provenance("tags_raw")["kind"] == "test"
    assert "selection first3 (3 rows): coverage 0.800" in r.stdout
    r = curate_in_process("tag", str(ws.path), "--backend", "openai")
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


def _tag_reply(req) -> str:
    """Tags each query with its capitalised words; a query containing BROKEN gets a reply that is not JSON."""
    query = next(m["content"] for m in reversed(req.messages) if m["role"] == "user"
                 and m["content"].startswith("Query: "))
    words = [w.strip(".?") for w in query.split()[1:] if w[:1].isupper()]
    return "no json here" if "BROKEN" in query else json.dumps(
        {"tags": [{"tag": " " if "BLANK" in query else w, "explanation": "named"} for w in words]})


def test_the_tag_steps_refuse_a_pool_field_or_another_producers_column(tmp_path):
    """Tagger(column="rating") and normalize(column="category") wrote tag lists over pool fields (export then renamed
    the field away); over a scorer's column a tagger paid its calls, then failed with an ArrowTypeError."""
    from curate.errors import WorkspaceError
    from curate.tags import Tagger

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "a.jsonl", [{"instruction": f"Write Poems {i}.", "output": "...", "rating": i,
                                                "category": "poem"} for i in range(3)]))
    ws.add_column("quality", [1.0, 2.0, 3.0], {"kind": "scorer"})
    backend = ScriptedBackend(_tag_reply)
    for column, message in (("rating", "column 'rating' is a field of the pool file; the tagger writes its own"),
                            ("quality", "column 'quality' holds labels or values another producer wrote .scorer.")):
        with pytest.raises(WorkspaceError, match=message):
            ws.apply(Tagger(backend, column=column), progress=False)
    assert backend.requests_sent == 0 and ws.row_values("quality") == [1.0, 2.0, 3.0]
    ws.apply(Tagger(backend), progress=False)
    for column, message in (("category", "column 'category' is a field of the pool file; the tag normaliser"),
                            ("quality", "column 'quality' holds labels or values another producer wrote")):
        with pytest.raises(WorkspaceError, match=message):
            normalize(ws, column=column)
    assert ws.row_values("quality") == [1.0, 2.0, 3.0] and ws.has_column("tags_raw")
    normalize(ws)
    normalize(ws)  # its own column: taken over again
    fields = Workspace(tmp_path / "fields")  # a pool field named tags_raw: an error naming it, not a missing .arrow
    fields.load(write_jsonl(tmp_path / "b.jsonl", [{"instruction": "q", "output": "a", "tags_raw": ["x"]}]))
    with pytest.raises(WorkspaceError, match="no derived column 'tags_raw' to normalise.*the pool field of that name"):
        normalize(fields)


def test_a_selection_keeping_rows_a_refresh_removed_is_named_out_of_date_not_a_key_error(tmp_path):
    """`curate tags`, coverage_report and ws.show crashed with a KeyError on a selection made before a re-run on an
    edited source removed some of its rows (info, the report and export say "out of date")."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.errors import WorkspaceError

    rows = [{"instruction": f"Write poems {i}", "output": "x"} for i in range(5)]
    source = write_jsonl(tmp_path / "s.jsonl", rows)
    ws = Workspace(tmp_path / "ws")
    ws.load(source)
    ws.add_column("tags", [["a"], ["b"], ["a", "c"], ["d"], ["e"]], {"kind": "instag_normalized"})
    ws.add_column("late", [0.0, 1.0, 2.0, 3.0, 4.0], {"kind": "test"})
    ws.add_column("early_first", [4.0, 3.0, 2.0, 1.0, 0.0], {"kind": "test"})
    ws.select(method="top_k", name="mine", budget=3, sort_by="late")  # the last three rows
    ws.select(method="top_k", name="early", budget=2, sort_by="early_first")
    write_jsonl(source, rows[:3])
    ws.load(source, keep_only_source=True)
    with pytest.raises(WorkspaceError, match="selection 'mine' keeps 2 rows that are no longer in the pool"):
        coverage_report(ws, "mine")
    assert coverage_report(ws, "early")["rows"] == 2
    view = ws.show("mine")
    assert view.ids == [ws.ids[2]] and "out of date: 2 of its kept rows are no longer in the pool" in view.note
    res = CliRunner().invoke(app, ["tags", str(ws.path)])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "selection mine: out of date: 2 of its kept rows" in out and "selection early (2 rows): coverage" in out


def test_tagger_step_writes_per_turn_tags_and_coded_failures(tmp_path):
    from curate.tags import Tagger

    recs = [{"instruction": "Write Poems about Nature.", "output": "..."},
            {"conversations": [{"from": "human", "value": "Sort a List in Python."}, {"from": "gpt", "value": "sorted(x)"},
                               {"from": "human", "value": "Now BROKEN Reverse it."}, {"from": "gpt", "value": "..."}]}]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "a.jsonl", recs[:1]))
    ws.load(write_jsonl(tmp_path / "b.jsonl", recs[1:]))
    backend = ScriptedBackend(_tag_reply)
    with pytest.warns(CurateWarning, match=r"tags_raw: 1 of the 2 rows computed now failed \(1 x invalid_output"):
        result = ws.apply(Tagger(backend), progress=False)
    assert result.computed == 2 and result.failed == 1 and result.provenance["turns"] == 3
    prov = ws.columns["tags_raw"]
    assert (prov["granularity"], prov["reducer"], prov["kind"]) == ("turn", None, "instag_tags")
    assert ws.column("tags_raw") == [[["Write", "Poems", "Nature"]], [["Sort", "List", "Python"], None]]
    first, second = ws.failures("tags_raw")
    assert first == [] and [(f.code, f.turn) for f in second] == [(FailureCode.INVALID_OUTPUT, 2)]
    assert "no json here" in (second[0].raw or "")
    blank = Workspace(tmp_path / "blank")  # a reply whose every tag is blank is a failure, not a row with no tags
    blank.load(write_jsonl(tmp_path / "c.jsonl", [{"instruction": "Say BLANK Things.", "output": "..."}]))
    with pytest.warns(CurateWarning, match=r"tags_raw: 1 of the 1 rows computed now failed"):
        blank.apply(Tagger(backend), progress=False)
    assert blank.column("tags_raw") == [[None]]
    assert [(f.code, f.message) for f in blank.failures("tags_raw")[0]] == [(FailureCode.INVALID_OUTPUT,
                                                                             "every tag the judge gave is blank")]
    with pytest.raises(CurateError, match="complexity.md: a tagging prompt answers IntentTags"):
        Tagger(backend, prompt="complexity")  # refused before any call (it crashed after paying for every one)
    sent = backend.requests_sent
    assert ws.apply(Tagger(backend), progress=False).computed == 0 and backend.requests_sent == sent  # reused
    # the row whose second turn failed has no row-level tags, and says why
    with pytest.warns(CurateWarning, match=r"tags: 1 of the 2 rows computed now failed"):
        normalize(ws, Normalizer(min_frequency=None, semantic=False, association=False))
    assert ws.column("tags") == [["write", "poems", "nature"], None]
    assert ws.failures("tags")[1][0].code is FailureCode.EMPTY_INPUT


def test_the_tagging_schema_keeps_its_cache_keys_and_the_fingerprint_follows_it(tmp_path):
    """The tagger's fingerprint follows the schema (it did not: a changed schema re-tagged nothing). The schema's
    description stays word for word what every earlier tagging request sent: rewording it (tried, to drop its
    developer's aside) changed every tagging request's cache key, so a tagged workspace paid for all its rows again."""
    from curate.tags import Tagger

    old = "The tagging judge's answer: the query's intent tags (an object, so JSON-schema decoding works)."
    assert IntentTags.model_json_schema()["description"] == old
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Write Poems about Nature.", "output": "..."}]))
    sent = []
    backend = ScriptedBackend(lambda req: sent.append(req) or _tag_reply(req))
    ws.apply(Tagger(backend), progress=False)
    fmt = sent[0].params["response_format"]
    assert fmt["json_schema"]["schema"]["description"] == old
    # a prompt naming its model "my-tags": the same file, the name registered to a class with another description
    from curate.llm.prompts import builtin_prompt_dir, register_output_model

    class ShortTags(IntentTags):
        """Tags for the query."""

    path = tmp_path / "instag.md"
    path.write_text((builtin_prompt_dir() / "instag.md").read_text().replace('"curate.tags:IntentTags"', "my-tags"))
    register_output_model(IntentTags, name="my-tags")
    before = Tagger(backend, prompt=path).fingerprint()
    register_output_model(ShortTags, name="my-tags")
    assert Tagger(backend, prompt=path).fingerprint() != before


def test_without_schema_enforcement_the_schema_message_comes_from_the_prompts_folder(tmp_path):
    """Without schema enforcement (JSON mode) instructor's own text ("As a genius expert, your task is to understand
    the content and provide the parsed objects in json ...") was appended to the system message; it comes from
    prompts/structured/json_mode.j2 now, and the tagger's fingerprint names that file's text. Validation and re-asks
    stay instructor's."""
    from curate.llm.prompts import builtin_prompt_dir
    from curate.tags import Tagger

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Write Poems about Nature.", "output": "..."},
                                               {"instruction": "Now BROKEN Reverse it.", "output": "..."}]))
    sent: dict[bool, list] = {True: [], False: []}
    fingerprints = {}
    for schema_mode in (True, False):
        backend = ScriptedBackend(lambda req, mode=schema_mode: sent[mode].append(req) or _tag_reply(req))
        backend.supports_json_schema = schema_mode
        fingerprints[schema_mode] = Tagger(backend).fingerprint()
        with pytest.warns(CurateWarning, match=rf"tags_{int(schema_mode)}: 1 of the 2 rows computed now failed"):
            ws.apply(Tagger(backend, column=f"tags_{int(schema_mode)}"), progress=False)
        assert ws.column(f"tags_{int(schema_mode)}") == [[["Write", "Poems", "Nature"]], [None]]
        assert ws.failures(f"tags_{int(schema_mode)}")[1][0].code is FailureCode.INVALID_OUTPUT  # re-asked, then failed
    schema_request, json_request = sent[True][0], sent[False][0]
    assert json_request.params["response_format"] == {"type": "json_object"}
    system = json_request.messages[0]["content"]
    assert system.startswith(schema_request.messages[0]["content"] + "\n\nAnswer with one JSON object that matches")
    assert '"title": "IntentTags"' in system and "genius" not in system
    assert system.endswith("Give the object itself, not the schema.")
    assert [m["content"] for m in json_request.messages[1:]] == [m["content"] for m in schema_request.messages[1:]]
    assert len(sent[False]) == len(sent[True]) == 4  # each mode: 2 rows, and the BROKEN row's 2 re-asks
    assert "Correct your JSON" in sent[False][-1].messages[-1]["content"]  # instructor's re-ask
    assert (builtin_prompt_dir() / "structured" / "json_mode.j2").is_file() and fingerprints[True] != fingerprints[False]


def test_curate_tag_sends_again_what_max_cost_left_unsent_and_exits_1_until_then(tmp_path):
    """A row --max-cost left unsent is stored as a failure and makes `curate tag` exit 1 (was: exit 0, and the re-run
    called it done); the re-run sends that row alone; the openai-batch backend keeps its batches in the workspace."""
    from typer.testing import CliRunner

    from curate.cli import app
    from tests.fault_server import FaultServer

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "Write a poem about rain.", "output": "..."},
                                               {"instruction": "Sort a list in Python.", "output": "..."}]))
    with FaultServer(usage_prompt_tokens=10_000_000) as srv:  # $1.50 an answer: the first one spends the cap
        args = ["tag", str(ws.path), "--base-url", srv.base_url, "--model", "gpt-4o-mini", "--api-key-env", "HOME",
                "--concurrency", "1", "--no-normalize"]
        with pytest.warns(CurateWarning, match=r"tags_raw: 1 of the 2 rows computed now failed \(1 x budget"):
            first = CliRunner().invoke(app, [*args, "--max-cost", "0.001"])
        sent = srv.total
        again = CliRunner().invoke(app, args)
        resent = srv.total - sent
        batch = CliRunner().invoke(app, ["tag", str(tmp_path / "ws"), "--backend", "openai-batch", "--base-url",
                                         srv.base_url, "--model", "fault", "--api-key-env", "HOME", "--poll-interval",
                                         "0.1", "--no-normalize"])
    assert first.exit_code == 1 and sent == 1
    assert "1 rows not sent: max_cost" in " ".join(str(first.exception).split())
    assert again.exit_code == 0 and resent == 1, again.output
    assert "retry-failed: 1 rows had a transient failure (budget 1); re-sent 1 requests" in " ".join(again.output.split())
    assert sorted(Workspace.open(ws.path).column("tags_raw")) == [[["sort", "a"]], [["write", "a"]]]
    assert batch.exit_code == 0, batch.output  # another model: every row tagged again, through one batch
    assert srv.batches_created == 1


def test_instag_records_coverage_of_the_pool_tags_as_coverage_report_does(tmp_path):
    """Run from a selection, instag recorded coverage of its candidates' tags (1.0, shown in the report) where
    coverage_report and `curate tags` said 0.25 for the same rows."""
    from curate import Workspace
    from curate.tags import coverage_report

    ws = Workspace(tmp_path / "ws")
    ws.load([{"instruction": f"question {i}", "output": f"answer {i}"} for i in range(20)])
    ws.add_column("tags", [[f"t{i}"] for i in range(20)], {"kind": "test"})
    ws.add_column("quality", [[float(i)] for i in range(20)], {"kind": "test", "granularity": "turn", "reducer": "sum"})
    ws.select(method="top_k", name="best", budget=5, sort_by="quality")
    sel = ws.select(method="instag", name="ins", budget=5, input_selection="best")
    assert sel.provenance["coverage"] == coverage_report(ws, "ins")["coverage"] == 0.25
    assert sel.provenance["coverage_of_candidates"] == 1.0


def test_instag_and_coverage_default_to_the_normalisers_column_beside_a_pool_field_named_tags(tmp_path):
    """A run on a pool with its own `tags` field writes tags_instag; `curate tags` and the report found it, but the
    instag selector and coverage_report defaulted to "tags" and failed ("tag the pool first") or read the field. One
    rule (curate.storage.roles) for all: the normaliser's column; several are refused, naming them."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.report.plots import tag_sets

    ws = Workspace(tmp_path / "ws")
    ws.load([{"instruction": f"question {i}", "output": f"answer {i}", "tags": ["mine"]} for i in range(6)])
    ws.add_column("tags_instag", [[f"t{i}", f"u{i % 2}"] for i in range(6)], {"kind": "instag_normalized",
                                                                            "granularity": "row"})
    sel = ws.select(method="instag", name="ins", budget=3)
    assert sel.provenance["tags_column"] == "tags_instag" and len(sel) == 3
    report = coverage_report(ws, "ins")
    assert report["pool_tags"] == 8 and report["coverage"] == sel.provenance["coverage"] == 5 / 8
    assert tag_sets(ws) == tag_sets(ws, "tags_instag")
    ws.add_column("tags_again", [["x"]] * 6, {"kind": "instag_normalized", "granularity": "row"})
    for read in (lambda: ws.select(method="instag", name="ins", budget=3), lambda: coverage_report(ws, "ins"),
                 lambda: tag_sets(ws)):
        with pytest.raises(CurateError, match="2 derived columns hold normalised InsTag tags: tags_again "
                                              r"\(instag_normalized\); tags_instag \(instag_normalized\)"):
            read()
    shown = CliRunner().invoke(app, ["tags", str(ws.path)])
    assert isinstance(shown.exception, CurateError) and "(--column NAME)" in str(shown.exception)


def test_normalize_on_a_small_pool_with_a_tag_in_every_row_warns_nothing_and_merges_as_before(tmp_path):
    """mlxtend's certainty is 0/0 for a tag every row has: numpy printed "RuntimeWarning: invalid value
    encountered in divide" on every normalize of such a pool (the value is replaced by 0 and never read)."""
    import warnings

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"Question {i}", "output": "ok"} for i in range(4)]))
    ws.add_column("tags_raw", [[["math", "proof"]], [["math", "proof"]], [["math", "proof"]], [["math"]]],
                  {"kind": "test", "granularity": "turn"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        norm = normalize(ws, Normalizer(semantic=False, min_support=2, min_confidence=0.5))
    assert norm.mapping == {"math": "math", "proof": "math"}  # proof only ever comes with math: merged into it
    assert ws.column("tags") == [["math"]] * 4


def test_curate_tag_after_a_kill_says_how_many_answers_the_stopped_run_paid_for(tmp_path):
    """`curate score` says how many cached answers a killed run paid for and never recorded; `curate tag` counted them
    in its record but its line read as if every row had been asked again."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.fault_server import FaultServer

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"Task number {i}: describe item {i}.", "output": "ok"}
                                               for i in range(80)]))
    cache_file = ws.cache_dir / "responses.sqlite"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with FaultServer(latency=0.1) as srv:
        cmd = [sys.executable, "-m", "curate.cli", "tag", str(ws.path), "--base-url", srv.base_url, "--model", "fault",
               "--concurrency", "4", "--no-normalize"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline, finished = time.monotonic() + 60, 0
        while time.monotonic() < deadline and proc.poll() is None and finished < 10:
            try:
                finished = sqlite3.connect(cache_file).execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            except sqlite3.OperationalError:  # not created yet
                finished = 0
            time.sleep(0.02)
        assert proc.poll() is None, "tagging finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        time.sleep(0.3)  # let the server count the requests the killed run had in flight
        before = srv.total
        rerun = curate_in_process(*cmd[3:], env=env)  # the resumed run: what it says and records, not its process
        sent_now = srv.total - before
    assert rerun.returncode == 0, rerun.stderr
    paid = Workspace.open(ws.path).column_provenance("tags_raw")["runs"][-1]["requests_paid_by_stopped_run"]
    assert paid >= 10
    said = " ".join(rerun.stdout.split())
    # it said "31 new (21 sent over HTTP), 0 answered by the on-disk cache": the cache's answers counted as new
    assert f"{sent_now} new ({sent_now} sent over HTTP), {paid} answered by the on-disk cache" in said, said
    assert f"of those the on-disk cache answered, {paid} a stopped run paid for and never recorded" in said, said


def _tag_cli(*args: object):
    from typer.testing import CliRunner

    from curate.cli import app

    result = CliRunner().invoke(app, ["tag", *map(str, args), "--no-normalize"])
    return result, " ".join(result.output.split())


def test_curate_tag_dry_run_sends_nothing_and_counts_what_a_run_then_sends(tmp_path):
    """`curate tag --dry-run` (was: no such option; only `curate run --tags --dry-run` estimated tagging) sends
    nothing, online or through a batch, writes no column, and counts the requests the real run then sends."""
    from tests.fault_server import FaultServer

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "Write a poem about rain.", "output": "a"},
                                               {"instruction": "Sort a list in Python.", "output": "b"},
                                               {"instruction": "Write a poem about rain.", "output": "c"}]))
    with FaultServer() as srv:
        online = [ws.path, "--base-url", srv.base_url, "--model", "gpt-4o-mini", "--api-key-env", "HOME"]
        dry, said = _tag_cli(*online, "--dry-run")
        assert dry.exit_code == 0 and srv.total == 0, dry.output
        assert ("requests: 3 (0 answered by the on-disk cache, 1 repeat another request of this run (same prompt, "
                "sent once), 2 to send)") in said, said
        assert "cost online: $" in said and "with the batch API: $" in said, said
        assert not Workspace.open(ws.path).has_column("tags_raw")
        real, said = _tag_cli(*online)
        assert real.exit_code == 0 and srv.total == 2, real.output  # as the dry run counted
        again, said = _tag_cli(*online, "--dry-run")
        assert again.exit_code == 0 and srv.total == 2 and "0 to run, 3 already done" in said, said
        batch, said = _tag_cli(ws.path, "--backend", "openai-batch", "--base-url", srv.base_url, "--model", "fault",
                               "--api-key-env", "HOME", "--dry-run")  # another model: every row to run again
        assert batch.exit_code == 0 and "2 to send" in said, said
        assert srv.batches_created == 0 and srv.uploads == 0 and srv.total == 2


def test_curate_tag_says_how_many_requests_it_sent(tmp_path):
    """The summary said what the cache and repeats answered, never how many requests went out (`curate score`
    says it too now)."""
    from tests.fault_server import FaultServer

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "Write a poem about rain.", "output": "a"},
                                               {"instruction": "Sort a list in Python.", "output": "b"},
                                               {"instruction": "Write a poem about rain.", "output": "c"}]))
    with FaultServer() as srv:
        result, said = _tag_cli(ws.path, "--base-url", srv.base_url, "--model", "fault", "--api-key-env", "HOME")
    assert result.exit_code == 0 and srv.total == 2, result.output
    assert ("requests (each call and JSON re-ask once): 2 new (2 sent over HTTP), 0 answered by the on-disk cache, 1 "
            "repeat another request of this run (same prompt, sent once))") in said, said


def test_curate_tag_says_what_its_request_count_counts_and_what_went_over_http(tmp_path):
    """The tag line said "requests: N sent" where N counts calls and JSON re-asks but not transport retries, while
    evol's line says "N new (M sent over HTTP)"; and a run with nothing to tag said no count at all (no "0 sent")."""
    from tests.fault_server import FaultServer

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "[empty] Write a poem about rain.", "output": "a"},
                                               {"instruction": "[500x1] Sort a list in Python.", "output": "b"},
                                               {"instruction": "Name a prime.", "output": "c"}]))
    with FaultServer(retry_after="0") as srv:
        online = [ws.path, "--base-url", srv.base_url, "--model", "fault", "--api-key-env", "HOME"]
        first, said = _tag_cli(*online)
        retried = 1  # [500x1]: one transport retry, not a request of its own in the run record
        new = srv.total - retried
        assert srv.total > 3 + retried, said  # the empty reply was re-asked: JSON re-asks count as new requests
        assert (f"requests (each call and JSON re-ask once): {new} new ({srv.total} sent over HTTP), 0 answered by "
                "the on-disk cache") in said, said
        again, said = _tag_cli(*online)
        assert srv.total == new + retried, said
        assert ("requests (each call and JSON re-ask once): 0 new (0 sent over HTTP), 0 answered by the on-disk "
                "cache") in said, said
