"""Reliability regressions (issue 11) in selection, admission, plots, InsTag rules and distillation,
plus behaviour checks for the lift and kmeans selectors (issue 12)."""

import math
from pathlib import Path

import numpy as np
import pytest

from curate.errors import CurateError, OptionError
from curate.report.html import build_report
from curate.report.plots import all_plots, score_histograms
from curate.scorers import Scorer, distil
from curate.select.admission import ADMITTED, REJECTED, admit
from curate.session import Workspace
from curate.tags import Normalizer
from evals.admission_prune import prune_products
from tests.conftest import write_jsonl

TAU = 0.9


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def small_workspace(tmp_path, n: int) -> Workspace:
    """``n`` distinct single-turn rows; every instruction has a response."""
    recs = [{"instruction": f"Describe item number {i} in {i % 5 + 2} sentences.", "input": "",
             "output": f"Item {i} is described here."} for i in range(n)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", recs))
    return ws


# -- 1. histograms of constant, near-constant and non-finite columns ------------------------------------
def test_report_survives_near_constant_and_non_finite_columns(tmp_path):
    ws = small_workspace(tmp_path, 30)
    n = len(ws)
    ulp = np.finfo(np.float64).eps
    ws.add_column("digit_mass", [1.0 + (i % 3 - 1) * ulp for i in range(n)], {"kind": "test"})  # 1.0 +- 1e-16
    ws.add_column("constant", [3.0] * n, {"kind": "test"})
    ws.add_column("with_inf", [math.inf if i == 0 else -math.inf if i == 1 else math.nan if i == 2 else float(i)
                               for i in range(n)], {"kind": "test"})
    ws.add_column("huge_range", [(-1) ** i * 1.5e308 for i in range(n)], {"kind": "test"})  # max - min overflows
    fig = score_histograms(ws)
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("digit_mass") for t in titles) and any(t.startswith("with_inf (3 missing)") for t in titles)
    digit_ax = next(ax for ax in fig.axes if ax.get_title().startswith("digit_mass"))
    assert sum(p.get_height() for p in digit_ax.patches) == n  # every row lands in a bar
    plots = {title: (f, missing) for title, f, missing in all_plots(ws)}
    assert plots["score histograms"][0] is not None, plots["score histograms"][1]
    page = build_report(ws, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<img alt='score histograms' src='data:image/png;base64," in page


# -- 2. admission decides on true cosines, not raw dot products --------------------------------------------
def planted_near_tau(dim: int = 8) -> np.ndarray:
    """Row 0; row 1 at true cosine 0.9005 to it; row 2 at 0.8995 (rows 1 and 2 are ~0.81 apart).
    Norms 1, 1 - 1e-3, 1 + 0.99e-3: within the unit-norm check, enough to flip raw dot products across tau."""
    e = np.eye(dim)
    rows = np.stack([e[0], 0.9005 * e[0] + math.sqrt(1 - 0.9005 ** 2) * e[1],
                     0.8995 * e[0] + math.sqrt(1 - 0.8995 ** 2) * e[2]])
    return (rows * np.array([1.0, 1 - 1e-3, 1 + 0.99e-3])[:, None]).astype(np.float32)


@pytest.mark.parametrize(("prune", "precision"), [(False, "float32"), (False, "bf16"), ("screen", "float32"),
                                                   ("groups", "float32")])
def test_admission_uses_true_cosines_for_slightly_off_unit_rows(prune, precision):
    x = planted_near_tau()
    res = admit(x, np.array([3.0, 2.0, 1.0]), None, TAU, products=prune_products(str(prune).lower()),
                precision=precision)  # pruning lives in evals/admission_prune.py
    assert res.decision.tolist() == [ADMITTED, REJECTED, ADMITTED]
    assert res.witness[1] == 0 and res.witness_similarity[1] == pytest.approx(0.9005, abs=1e-6)


def test_deita_selector_uses_true_cosines(tmp_path):
    ws = small_workspace(tmp_path, 3)
    ws.add_column("score", [3.0, 2.0, 1.0], {"kind": "test"})
    ws.add_embeddings("default", planted_near_tau(), {"kind": "test"})
    sel = ws.select(method="deita", name="d", sort_by="score", max_cosine_similarity=TAU)
    decisions = {r["id"]: r["decision"] for r in sel.table.to_pylist()}
    assert [decisions[i] for i in ws.ids] == ["kept", "rejected", "kept"]


# -- 3. distil when every label fails ---------------------------------------------------------------------
@pytest.mark.parametrize(("failure", "reason"), [(None, "no reason given"), (math.nan, "no reason given"),
                                                 ("timeout: no answer after 60 s", "timeout: no answer after 60 s"),
                                                 ({"reason": "no digit in output", "raw": "hmm"}, "no digit in output")])
def test_distil_raises_a_clear_error_when_every_label_fails(tmp_path, failure, reason):
    ws = small_workspace(tmp_path, 20)
    asked: list[int] = []

    def failing(ids: list[str]) -> list:
        asked.append(len(ids))
        return [failure] * len(ids)

    scorer = Scorer(reads=["instruction"], features=["length", "stats"])  # no embedding model: fast
    columns_before = set(ws.columns)
    with pytest.raises(CurateError, match=rf"^distil: all 15 labels failed: 15 x {reason}"):
        distil(ws, failing, scorer=scorer, n=10, holdout_n=5, rounds=0)
    assert sum(asked) == 15
    assert set(ws.columns) == columns_before  # nothing half-written


def test_distil_refuses_few_labels_bad_counts_flags_and_its_label_as_a_feature(tmp_path):
    """Each of these trained a scorer and reported figures (nan, or a Spearman of 0.98 on random labels)."""
    from curate.scorers import train_scorer
    from curate.scorers.distil import column_labeller

    ws = small_workspace(tmp_path, 40)
    ws.add_column("few", [float(i % 5) if i < 24 and i % 5 == 0 else None for i in range(40)], {"kind": "judge"})
    ws.add_column("label", [float(i % 7) for i in range(40)], {"kind": "judge"})
    ws.add_column("flag", [i % 2 == 0 for i in range(40)], {"kind": "judge"})
    fast = {"reads": ["instruction"], "features": ["length", "stats"]}  # no embedding model: fast
    with pytest.raises(CurateError, match="distil: [0-9] of 30 training rows gave a label, fewer than 10"):
        distil(ws, column_labeller(ws, "few"), scorer=Scorer(**fast), n=30, holdout_n=5, rounds=0)
    for bad in ({"n": 0}, {"n": -5}, {"holdout_n": -5}, {"rounds": -1}):
        with pytest.raises(CurateError, match=f"{next(iter(bad))} must be a whole number"):
            distil(ws, column_labeller(ws, "label"), scorer=Scorer(**fast), **{"n": 20, "holdout_n": 5, **bad})
    with pytest.raises(CurateError, match="all 25 labels failed: .* a boolean"):
        distil(ws, column_labeller(ws, "flag"), scorer=Scorer(**fast), n=20, holdout_n=5, rounds=0)
    with pytest.raises(CurateError, match="reads the label column 'label' as a feature"):
        distil(ws, column_labeller(ws, "label"), scorer=Scorer(**fast, columns=["label"]), n=20, holdout_n=5)
    with pytest.raises(CurateError, match="feature column 'label' is the target itself"):
        train_scorer(ws, target="label", columns=["label"])


def test_distil_refusing_too_few_rows_reads_the_label_column_and_asks_its_labeller_nothing(tmp_path):
    """To count the labels of a labeller with a ``.column``, the refusal called it on every row (a labeller that
    pays per row paid for all of them before being refused): it reads the column instead."""
    from curate.scorers.distil import TooFewRowsToDistil, column_labeller

    ws = small_workspace(tmp_path, 40)
    ws.add_column("label", [float(i % 7) if i % 4 else None for i in range(40)], {"kind": "judge"})
    ws.add_column("flag", [i % 2 == 0 for i in range(40)], {"kind": "judge"})  # booleans: no label
    asked: list[int] = []

    def paying(name: str):
        oracle = column_labeller(ws, name)

        def label_fn(ids: list[str]) -> list:
            asked.append(len(ids))
            return oracle(ids)
        label_fn.column = name
        return label_fn

    fast = {"reads": ["instruction"], "features": ["length", "stats"]}
    for name, labelled in (("label", 30), ("flag", 0)):
        with pytest.raises(TooFewRowsToDistil) as refused:
            distil(ws, paying(name), scorer=Scorer(**fast), n=30, holdout_n=20)
        assert (refused.value.labelled, refused.value.readable, refused.value.column) == (labelled, 40, name)
    assert asked == []


# -- 4. selector parameters are checked before anything runs ----------------------------------------------
@pytest.fixture
def scored_ws(tmp_path):
    ws = small_workspace(tmp_path, 12)
    ws.add_column("complexity", [float(i % 6 + 1) for i in range(len(ws))], {"kind": "test"})
    ws.add_column("quality", [float((i * 5) % 6 + 1) for i in range(len(ws))], {"kind": "test"})
    ws.add_embeddings("default", unit(np.random.default_rng(0).standard_normal((len(ws), 8))), {"kind": "test"})
    return ws


def test_select_names_a_missing_required_parameter(scored_ws):
    with pytest.raises(CurateError, match=r"^selector 'dsir' needs parameter 'target'"):
        scored_ws.select(method="dsir", name="d", budget=3)
    with pytest.raises(CurateError, match=r"^selector 'threshold' needs parameter 'min_score'"):
        scored_ws.select(method="threshold", name="t")
    with pytest.raises(CurateError, match=r"^selector 'top_k' needs parameter 'budget'"):
        scored_ws.select(method="top_k", name="k")


def test_select_names_an_unknown_parameter_and_the_known_ones(scored_ws):
    with pytest.raises(CurateError, match=r"^selector 'threshold' has no parameter 'bogus' \(known: min_score, sort_by, quantile\)"):
        scored_ws.select(method="threshold", name="t", min_score=3, bogus=3)
    with pytest.raises(CurateError, match=r"selector 'deita' has no parameter 'min_score'"):
        scored_ws.select(method="deita", name="d", budget=3, min_score=2)


def test_select_names_a_parameter_of_the_wrong_type_or_range(scored_ws):
    with pytest.raises(CurateError, match=r"^selector 'threshold': min_score must be a number, not 'abc'"):
        scored_ws.select(method="threshold", name="t", min_score="abc")  # what `--param min_score=abc` hands over
    with pytest.raises(CurateError, match=r"^selector 'kcenter': seed must be a whole number, not 1.5"):
        scored_ws.select(method="kcenter", name="k", budget=2, seed=1.5)
    with pytest.raises(CurateError, match=r"^selector 'deita': sort_by must be text, not 3"):
        scored_ws.select(method="deita", name="d", budget=2, sort_by=3)
    with pytest.raises(CurateError, match=r"^selector .deita.: max_cosine_similarity must be a cosine in \[-1, 1\], not 1.5"):
        scored_ws.select(method="deita", name="d", budget=2, max_cosine_similarity=1.5)
    with pytest.raises(CurateError, match=r"^selector 'heuristics': refusal is a switch: true or false, not 'False'"):
        scored_ws.select(method="heuristics", name="h", refusal="False")  # `--param refusal=False`: not JSON, so text
    with pytest.raises(CurateError, match=r"missing.jsonl: file: no such file"):  # a Path: read, as dsir's is
        scored_ws.select(method="less", name="l", budget=2, target=Path("missing.jsonl"))  # was "must be text"
    assert scored_ws.selections == {}
    assert len(scored_ws.select(method="threshold", name="t", min_score=np.float64(4)).ids) > 0  # numpy is a number
    assert scored_ws.select(method="heuristics", name="h", refusal=False).provenance["params"] == {"refusal": False}


def test_a_selection_whose_rows_left_the_pool_is_named_not_a_key_error(scored_ws, tmp_path):
    top = scored_ws.select(method="top_k", name="top", budget=3, sort_by="quality")
    scored_ws.keep_rows(set(scored_ws.ids) - {top.ids[0]})  # what a re-run on an edited source does
    for attempt in (lambda: scored_ws.export(tmp_path / "out.jsonl", selection="top"),
                    lambda: scored_ws.select(method="top_k", name="again", budget=1, input_selection="top")):
        with pytest.raises(CurateError, match=r"selection 'top' keeps 1 rows that are no longer in the pool"):
            attempt()
    # what reads the selection without using its rows says so too: info, its notebook view and the report
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.report.views import info_data

    assert {s["name"]: s["gone"] for s in info_data(scored_ws)["selections"]} == {"top": 1}
    said = "out of date: 1 of its kept rows are no longer in the pool; make the selection again"
    shown = CliRunner().invoke(app, ["info", str(scored_ws.path)], terminal_width=200)
    assert shown.exit_code == 0 and "selection top: 3 kept" in shown.output and said in shown.output
    assert said in scored_ws._repr_html_()
    assert said in scored_ws.report(tmp_path / "report.html").read_text()
    scored_ws.select(method="top_k", name="top", budget=3, sort_by="quality")
    assert info_data(scored_ws)["selections"][0]["gone"] == 0 and said not in scored_ws._repr_html_()


def test_bad_dsir_settings_and_sort_key_arities_are_errors_not_crashes(scored_ws):
    for params, message in (({"num_buckets": 0}, "num_buckets and ngram must be >= 1"),  # was SIGFPE
                            ({"target": 5}, "target must be a list of texts"),
                            ({"text": "prompt"}, r"dsir: text= \(CLI: --param text=\) must be one of instruction, "),
                            ({"target": "no-such-file.txt"}, r"no-such-file.txt: file: no such file \(dsir: the target texts\)")):
        with pytest.raises(CurateError, match=message):
            scored_ws.select(method="dsir", name="d", budget=2, **{"target": ["some text"], **params})
    # numpy would read the second argument as its output array and overwrite that column's values
    with pytest.raises(CurateError, match=r"log takes 1 argument\(s\), got 2 in 'log\(quality, quality\)'"):
        scored_ws.select(method="top_k", name="k", budget=2, sort_by="quality + log(quality, quality)")
    with pytest.raises(CurateError, match=r"minimum takes 2 argument\(s\), got 1"):
        scored_ws.select(method="top_k", name="k", budget=2, sort_by="minimum(quality)")


def test_settings_that_decide_nothing_or_crash_are_named(scored_ws):
    for method, params, error, message in (
            ("threshold", {"min_score": float("nan")}, CurateError, "min_score is nan, not a finite"),  # kept nothing
            ("threshold", {"min_score": float("inf")}, CurateError, "min_score is inf, not a finite"),  # likewise
            ("lift", {"budget": 2, "n_components": 0}, CurateError, "n_components must be at least 2"),  # NaN scores
            ("deita", {"budget": 2, "device": "gpu"}, ValueError, "device must be 'cpu' or a CUDA device")):
        with pytest.raises(error, match=message):
            scored_ws.select(method=method, name="s", **params)
    assert scored_ws.selections == {}


def test_a_name_too_long_for_a_file_is_refused_before_any_step_runs(scored_ws):
    """A 300-character selection name failed with the OS's "[Errno 36] File name too long" once the selector had
    run; a chain's first step could be stored under a name longer than the final one's."""
    for name, steps in (("a" * 300, [{"method": "exact"}]),
                        ("b" * 150, [{"method": "exact"}, {"method": "top_k", "budget": 2, "sort_by": "quality"}])):
        with pytest.raises(ValueError, match="bad name .* a name may hold at most 150 bytes"):
            scored_ws.select(name=name, steps=steps)
    assert scored_ws.selections == {}
    scored_ws.select(method="exact", name="c" * 150)  # the longest name a selection takes
    assert list(scored_ws.selections) == ["c" * 150]


def test_a_chain_removes_only_its_own_earlier_steps(scored_ws):
    scored_ws.select(method="top_k", name="mix.1", budget=2, sort_by="quality")  # the user's own
    scored_ws.select(name="mix", steps=[{"method": "exact"}, {"method": "top_k", "budget": 3, "sort_by": "quality"}])
    assert {"mix", "mix.1", "mix.1-exact"} <= set(scored_ws.selections)
    scored_ws.select(method="top_k", name="mix", budget=2, sort_by="quality")
    assert {"mix", "mix.1"} <= set(scored_ws.selections) and "mix.1-exact" not in scored_ws.selections


def test_a_chain_neither_overwrites_nor_removes_a_selection_of_its_step_names_made_on_its_own(scored_ws):
    """A selection the user named ``mix.1-exact`` (made by exact) was overwritten by step 1 of chain ``mix``, and one
    named ``mix.2-top_k`` was removed by a shorter chain ``mix`` as its stale step: a chain's steps now say so
    (``step_of``), and a selection that is no step of it is refused before any step runs, or left alone."""
    mine = scored_ws.select(method="exact", name="mix.1-exact", sort_by="quality")
    assert mine.provenance["step_of"] is None
    with pytest.raises(OptionError, match=r"selection 'mix.1-exact' exists and is no step of chain 'mix' \(made on "
                                          r"its own\): step 1 of 'mix' would overwrite it"):
        scored_ws.select(name="mix", steps=[{"method": "exact"}, {"method": "top_k", "budget": 3, "sort_by": "quality"}])
    assert scored_ws.selection("mix.1-exact").provenance["params"] == {"sort_by": "quality"} and "mix" not in scored_ws.selections
    scored_ws.select(method="top_k", name="mix.2-top_k", budget=4, sort_by="quality")
    chain = scored_ws.select(name="mix", steps=[{"method": "minhash"}, {"method": "top_k", "budget": 3, "sort_by": "quality"}])
    assert scored_ws.selection("mix.1-minhash").provenance["step_of"] == "mix" and chain.provenance["step_of"] is None
    scored_ws.select(name="mix", steps=[{"method": "minhash"}, {"method": "top_k", "budget": 2, "sort_by": "quality"}])
    scored_ws.select(method="top_k", name="mix", budget=2, sort_by="quality")  # no steps: mix.1-minhash is stale
    assert "mix.1-minhash" not in scored_ws.selections
    assert {"mix", "mix.1-exact", "mix.2-top_k"} <= set(scored_ws.selections)  # the user's own, both kept
    assert scored_ws.selection("mix.2-top_k").provenance["params"]["budget"] == 4


def test_a_chain_removes_its_earlier_step_when_that_step_is_damaged(scored_ws):
    """A damaged step file is left out of ws.selections, so a shorter chain of the same name never removed it."""
    scored_ws.select(name="mix", steps=[{"method": "exact"}, {"method": "top_k", "budget": 3, "sort_by": "quality"}])
    path = scored_ws.path / "selections" / "mix.1-exact.arrow"
    path.write_bytes(path.read_bytes()[:100])
    assert [d.name for d in scored_ws.damaged] == ["mix.1-exact"]
    scored_ws.select(method="top_k", name="mix", budget=2, sort_by="quality")
    assert not path.exists() and scored_ws.damaged == [] and "mix" in scored_ws.selections


def test_a_chain_is_checked_before_any_step_runs(scored_ws):
    with pytest.raises(CurateError, match=r"^step 2 of chain 'c': selector 'threshold' needs parameter 'min_score'"):
        scored_ws.select(name="c", steps=[{"method": "exact"}, {"method": "threshold"}])
    assert scored_ws.selections == {}
    assert len(scored_ws.select(name="c", steps=[{"method": "exact"}, {"method": "threshold", "min_score": 15}]).ids) == 6


# -- 5. InsTag rule aggregation keeps the symbols that name things ----------------------------------------
def test_rule_aggregation_keeps_c_sharp_and_c_plus_plus_apart():
    rows = [["C#"], ["C++"], ["C"], ["c++"], ["C++ programming"], ["c# "], ["C/C++"], ["a+b"], ["Notepad++"]]
    norm = Normalizer(min_frequency=None, semantic=False, association=False)
    out = norm.fit_transform(rows)
    assert out[0] == out[5] == ["c#"]
    assert out[1] == out[3] == ["c++"]
    assert out[2] == ["c"]
    assert len({out[0][0], out[1][0], out[2][0]}) == 3
    assert out[4] == ["c++ programming"] and out[6] == ["c c++"] and out[7] == ["a b"] and out[8] == ["notepad++"]
    assert norm.rule_key("Programming C++") == norm.rule_key("programming c++")
    assert norm.rule_key("Programs C++") == norm.rule_key("program c++") != norm.rule_key("program c")


# -- 6. lift and kmeans: real behaviour, not only counts --------------------------------------------------
def planted_clusters(rng, sizes: list[int], dim: int = 16, spread: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows around orthogonal centres (one per cluster) and each row's cluster label."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = np.eye(dim)[labels] + spread * rng.standard_normal((len(labels), dim))
    return unit(x).astype(np.float32), labels


@pytest.mark.parametrize("per_cluster", ["nearest", "kcenter"])
def test_kmeans_takes_each_planted_cluster_its_share(tmp_path, per_cluster):
    sizes = [20, 12, 8, 8]
    x, labels = planted_clusters(np.random.default_rng(1), sizes)
    perm = np.random.default_rng(2).permutation(len(labels))  # clusters interleaved in pool order
    x, labels = x[perm], labels[perm]
    ws = small_workspace(tmp_path, len(labels))
    ws.add_embeddings("default", x, {"kind": "test"})
    sel = ws.select(method="kmeans", name="k", budget=12, n_clusters=4, per_cluster=per_cluster)
    kept = np.array([ws.index[i] for i in sel.ids])
    assert np.bincount(labels[kept], minlength=4).tolist() == [5, 3, 2, 2]  # budget split by cluster size
    if per_cluster == "nearest":  # inside a cluster: the rows nearest its centroid
        for c, quota in enumerate([5, 3, 2, 2]):
            members = np.flatnonzero(labels == c)
            centre = x[members].astype(np.float64).mean(axis=0)
            nearest = members[np.argsort(-(x[members] @ (centre / np.linalg.norm(centre))))[:quota]]
            assert set(kept[labels[kept] == c].tolist()) == set(nearest.tolist())


def test_kmeans_seeded_from_a_sample_of_a_large_pool_still_finds_every_planted_cluster():
    """K-means++ seeds from at most ``init_rows`` sampled rows (scikit-learn's own, over every float32 row, took 6
    minutes at 100,000 rows): the Lloyd iterations over every row still recover each planted cluster whole."""
    from curate.select.clusters import fit_kmeans

    x, labels = planted_clusters(np.random.default_rng(4), [300, 200, 120, 80, 60, 40])
    km, seeding = fit_kmeans(x, 6, seed=0, init_rows=60)
    assert seeding == {"init": "k-means++", "init_rows": 60}
    pairs = set(zip(labels.tolist(), km.labels_.tolist(), strict=True))
    assert len(pairs) == 6 and len({c for _, c in pairs}) == 6  # one K-means cluster per planted cluster, exactly
    assert fit_kmeans(x, 6, seed=0)[1]["init_rows"] == len(x)  # a pool under init_rows seeds from every row
    assert fit_kmeans(x, 120, seed=0, init_rows=100)[1]["init_rows"] == 120  # a row per centre at least


def test_lift_keeps_the_rows_whose_projection_varies_most(tmp_path):
    rng = np.random.default_rng(3)
    dim, n, spread_rows = 16, 40, [4, 11, 23, 30, 37]
    x = np.tile(np.eye(dim)[0], (n, 1)) + 0.01 * rng.standard_normal((n, dim))  # a tight bundle ...
    x[spread_rows] = rng.standard_normal((len(spread_rows), dim))  # ... and five rows far out in many directions
    ws = small_workspace(tmp_path, n)
    ws.add_embeddings("default", unit(x).astype(np.float32), {"kind": "test"})
    sel = ws.select(method="lift", name="l", budget=len(spread_rows), n_components=4)
    assert sorted(ws.index[i] for i in sel.ids) == spread_rows
    ranked = sel.rows()
    variances = [r["detail"]["score"] for r in ranked]  # the row variance of the projection
    assert variances == sorted(variances, reverse=True)

    # one candidate (an input selection that kept one row): no variance to project; numpy's LinAlgError before
    ws.select(method="random", name="one", budget=1)
    one = ws.select(method="lift", name="l1", budget=3, input_selection="one")
    assert one.ids == ws.selection("one").ids and one.rows()[0]["reason"] == "budget_covers_all"
    assert one.provenance["budget_covers_all"]["skipped"] == "the PCA (one row has no variance)"


def test_kcenter_by_a_score_no_candidate_has_says_where_it_started(scored_ws):
    """kcenter --sort-by over rows none of which has that score started from the first row in row-id order and
    recorded that it started from the best-scored row."""
    scored_ws.add_column("judged", [None] * len(scored_ws), {"kind": "test"})
    sel = scored_ws.select(method="kcenter", name="k", budget=3, sort_by="judged")
    assert sel.provenance["first_centre"] == "first row in row-id order: no candidate has a score"
    assert sel.rows()[0]["id"] == min(scored_ws.ids)
    scored = scored_ws.select(method="kcenter", name="k", budget=3, sort_by="quality")
    assert scored.provenance["first_centre"] == "best-scored row"


def test_a_selection_removed_by_another_process_while_listed_is_left_out_not_a_crash(scored_ws):
    """Two processes selecting into one workspace: one's chain removed its stale step between the other's listing
    of the selections folder and its read of that file, and ``ws.select(name="a")`` (another name) failed with
    pyarrow's FileNotFoundError. Here the two processes' steps in that order, in one."""
    from curate.storage.damage import sort_out
    from curate.storage.files import named_files
    from curate.storage.selection import selection_meta

    scored_ws.select(name="c", steps=[{"method": "exact"}, {"method": "top_k", "budget": 3, "sort_by": "quality"},
                                      {"method": "top_k", "budget": 2, "sort_by": "quality"}])
    listed = named_files(scored_ws.path / "selections", ".arrow")  # the first process lists the folder
    scored_ws.select(name="c", steps=[{"method": "exact"}, {"method": "top_k", "budget": 2, "sort_by": "quality"}])
    assert not (scored_ws.path / "selections" / "c.2-top_k.arrow").exists()  # the second removed its stale step
    readable, damaged = sort_out(listed, selection_meta)  # then the first reads what it listed
    assert sorted(readable) == ["c", "c.1-exact"] and damaged == []


def test_a_pool_emptied_by_keep_rows_still_opens_selects_nothing_and_loads_again(scored_ws, tmp_path):
    """``ws.keep_rows`` keeping no row saved a pool of no shard, which datasets then could not open (IndexError in
    every later command: the workspace was lost to it)."""
    n = len(scored_ws)
    assert scored_ws.keep_rows(set()) == n
    again = Workspace.open(scored_ws.path)
    assert len(again) == 0 and again.ids == []
    for method, params in (("deita", {"budget": 3}), ("kcenter", {"budget": 3}), ("exact", {})):
        sel = again.select(method=method, name=f"empty_{method}", **params)
        assert sel.provenance["candidates"] == 0 and len(sel.ids) == 0
    assert again.load(write_jsonl(tmp_path / "back.jsonl", [{"instruction": "Hi?", "output": "Hello."}]))["rows_added"] == 1
    assert len(Workspace.open(scored_ws.path)) == 1


def test_embeddings_given_one_id_twice_are_refused_not_read_as_the_last_vector(scored_ws):
    """``add_embeddings(..., ids=[a, a, b, ...])`` was stored, and row ``a`` read as its second vector: the first was
    dropped in silence, and every selector chose by it."""
    ids = scored_ws.ids
    x = np.eye(len(ids) + 1, 16, dtype=np.float32)
    with pytest.raises(ValueError, match=rf"embeddings 'twice': id {ids[0]} is given twice \(rows 0 and 1\)"):
        scored_ws.add_embeddings("twice", x, {"kind": "test"}, ids=[ids[0], *ids])
    assert "twice" not in scored_ws.embedding_sets


def test_a_selection_is_refused_the_name_of_another_chains_step(scored_ws):
    """``curate select --name mix.1-exact`` (a step of chain ``mix``) overwrote the step in silence; a chain refused
    the converse. Both are refused now, before anything runs."""
    scored_ws.select(name="mix", steps=[{"method": "exact"}, {"method": "top_k", "budget": 3, "sort_by": "quality"}])
    step = scored_ws.selection("mix.1-exact")
    with pytest.raises(OptionError, match=r"selection 'mix.1-exact' is a step of chain 'mix'"):
        scored_ws.select(method="top_k", name="mix.1-exact", budget=1, sort_by="quality")
    with pytest.raises(OptionError, match=r"selection 'mix.1-exact' is a step of chain 'mix'"):
        scored_ws.select(name="mix.1-exact", steps=[{"method": "minhash"}, {"method": "random", "budget": 1}])
    assert scored_ws.selection("mix.1-exact").provenance == step.provenance
    assert set(scored_ws.selection("mix.1-exact").ids) == set(step.ids)
    scored_ws.select(name="mix", steps=[{"method": "exact"}, {"method": "top_k", "budget": 2, "sort_by": "quality"}])


def test_two_runs_of_a_chain_of_one_name_never_leave_steps_of_both(scored_ws):
    """Run A of chain ``mix`` wrote its steps one lock at a time: run B, publishing between two of A's writes, left
    ``mix`` (A's) resting on B's ``mix.1-exact``. A run's publication now holds the workspace lock throughout."""
    import threading

    chain_a = [{"method": "exact", "ignore_case_and_spacing": True}, {"method": "minhash"},
               {"method": "top_k", "budget": 3, "sort_by": "quality"}]
    chain_b = [{"method": "exact"}, {"method": "top_k", "budget": 2, "sort_by": "quality"}]
    other = Workspace(scored_ws.path)
    runs: list[threading.Thread] = []

    class PublishingA(Workspace):
        def add_selection(self, name, *args, **kwargs):
            stored = super().add_selection(name, *args, **kwargs)
            if name == "mix.1-exact" and not runs:  # B runs whole between A's first write and the rest
                runs.append(threading.Thread(target=other.select, kwargs={"name": "mix", "steps": chain_b}))
                runs[0].start()
                runs[0].join(timeout=5)  # B finishes now unless A's lock holds it until A is done
            return stored

    PublishingA(scored_ws.path).select(name="mix", steps=chain_a)
    runs[0].join()
    final = scored_ws.selection("mix")
    steps = [n for n in scored_ws.selections if n.startswith("mix.")]
    by_a = final.provenance["params"]["budget"] == 3
    assert steps == (["mix.1-exact", "mix.2-minhash"] if by_a else ["mix.1-exact"]), steps
    assert scored_ws.selection("mix.1-exact").provenance["params"] == ({"ignore_case_and_spacing": True} if by_a
                                                                       else {}), by_a


def test_lift_on_identical_embeddings_says_so_in_provenance_not_a_numpy_warning(tmp_path):
    import warnings

    ws = small_workspace(tmp_path, 6)
    ws.add_embeddings("default", np.tile(np.eye(8, dtype=np.float32)[0], (6, 1)), {"kind": "test"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's PCA divided 0 by 0: RuntimeWarning
        sel = ws.select(method="lift", name="l", budget=2)
    assert sel.ids == sorted(ws.ids)[:2]  # every score 0: ties by row id
    assert {r["detail"]["score"] for r in sel.rows()} == {0.0}
    assert sel.provenance["zero_variance"].startswith("all 6 candidates have the same embedding")


def test_a_selector_given_an_unknown_text_names_its_own_option(scored_ws):
    """row_text named ``--text`` (curate embed's flag) whoever called it; curate select takes ``--param text=``."""
    for method in ("exact", "minhash"):
        with pytest.raises(OptionError, match=r"^text= \(CLI: --param text=\) must be one of instruction, "):
            scored_ws.select(method=method, name="t", text="bogus")
