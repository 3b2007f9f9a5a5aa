"""Selection: the exact admission loop against a brute-force sequential loop, and every selector's property."""

import json

import numpy as np
import pytest

from curate.codes import Decision, Reason
from curate.errors import CurateError, OptionError
from curate.select import SELECTORS, row_scores, score_rows
from curate.select.admission import ADMITTED, NOT_REACHED, REJECTED, admit, examination_order
from curate.select.diversity import kcenter_greedy
from curate.session import Workspace
from evals.admission_prune import group_products, screen_products
from tests.conftest import write_jsonl

TURNS_SUM = {"kind": "test", "granularity": "turn", "reducer": "sum"}  # how judges and scorers declare DEITA scores


def brute_force(x, scores, ids, tau, budget):
    """DEITA's loop, one row at a time, cosines in float64 on the float32 rows."""
    order = examination_order(scores, ids)
    x64 = np.asarray(x, np.float64)
    x64 = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    admitted, dec = [], np.zeros(len(x), np.int8)
    for p in order:
        if budget is not None and len(admitted) >= budget:
            break
        if admitted and np.clip(x64[admitted] @ x64[p], -1, 1).max() > tau:
            dec[p] = REJECTED
        else:
            admitted.append(p)
            dec[p] = ADMITTED
    return dec, np.array(admitted, dtype=np.int64)


def unit(a):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng, n, d, groups, spread):
    centres = unit(rng.standard_normal((groups, d)))
    return unit(centres[rng.integers(0, groups, n)] + spread * unit(rng.standard_normal((n, d))))


def adversarial(rng, n, d, tau):
    """Many pairs at similarity tau +- 1e-7..1e-3, exact duplicates, and scores full of ties."""
    base = unit(rng.standard_normal((n // 4, d)))
    rows = [base]
    for eps in (-1e-3, -1e-6, -1e-7, 0.0, 1e-7, 1e-6, 1e-3):
        src = base[rng.integers(0, len(base), n // 16)].astype(np.float64)
        w = rng.standard_normal(src.shape)
        w -= (w * src).sum(1, keepdims=True) * src
        w /= np.linalg.norm(w, axis=1, keepdims=True)
        t = tau + eps
        rows.append((t * src + np.sqrt(1 - t * t) * w).astype(np.float32))
    rows.append(base[rng.integers(0, len(base), n // 16)])  # exact duplicates
    x = np.concatenate(rows)
    return x[rng.permutation(len(x))]


@pytest.mark.parametrize("kind", ["random", "clustered", "adversarial"])
def test_admission_equals_sequential_loop_for_any_batching(kind):
    rng = np.random.default_rng({"random": 0, "clustered": 1, "adversarial": 2}[kind])
    tau = 0.9
    if kind == "random":
        x = unit(rng.standard_normal((1000, 8)))  # low dimension: many pairs above tau
    elif kind == "clustered":
        x = clustered(rng, 2000, 48, 100, 0.33)
    else:
        x = adversarial(rng, 1600, 32, tau)
    scores = rng.integers(0, 6, len(x)).astype(np.float64)  # heavy ties: broken by id
    scores[rng.random(len(x)) < 0.02] = np.nan
    ids = np.array([f"r{rng.integers(10**9):09d}" for _ in range(len(x))])
    for budget in (None, 300):
        want_dec, want_adm = brute_force(x, scores, ids, tau, budget)
        assert (want_dec == REJECTED).sum() > (50 if budget is None else 5)
        # pruning (angular groups, the low-rank screen) moved to evals/admission_prune.py: still exact
        pruned = {False: None, True: group_products(n_clusters=12), "screen": screen_products()}
        for block_size, prune, device, precision in (
                (1, False, "cpu", "float32"), (7, True, "cpu", "auto"), (128, "screen", "cpu", "auto"),
                (128, False, "cpu", "float32"), (5000, True, "cpu", "auto"), (64, "screen", "cpu", "auto"),
                (300, False, "torch:cpu", "auto"), (1, False, "cpu", "bf16"), (97, False, "cpu", "bf16"),
                (5000, False, "cpu", "bf16")):
            res = admit(x, scores, ids, tau, budget, block_size=block_size, products=pruned[prune], device=device,
                        precision=precision)
            assert np.array_equal(res.admitted, want_adm), (block_size, prune)
            scored = ~np.isnan(scores)
            assert np.array_equal(res.decision[scored], want_dec[scored]), (block_size, prune)
            rej = np.flatnonzero(res.decision == REJECTED)
            a, b = x[rej].astype(np.float64), x[res.witness[rej]].astype(np.float64)
            sims = np.einsum("ij,ij->i", a, b) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            assert (sims > tau).all() and np.allclose(sims, res.witness_similarity[rej])
            assert (res.decision[res.witness[rej]] == ADMITTED).all()


def test_budget_stops_the_walk():
    rng = np.random.default_rng(3)
    x = unit(rng.standard_normal((400, 16)))
    res = admit(x, rng.random(400), None, 0.9, budget=50)
    assert len(res.admitted) == 50
    last = np.flatnonzero(res.order == res.admitted[-1])[0]
    assert (res.decision[res.order[last + 1:]] == NOT_REACHED).all()
    assert (res.decision[res.order[: last + 1]] != NOT_REACHED).all()
    with pytest.raises(ValueError, match="unit-normalised"):
        admit(x * 2, rng.random(400))


@pytest.fixture
def ws(tmp_path):
    topics = ["cooking pasta with tomato sauce", "baking bread with yeast", "football match tactics",
              "tennis serve technique", "python list comprehension", "sorting algorithms in C"]
    recs = []
    for i in range(60):
        t = topics[i % len(topics)]
        recs.append({"instruction": f"Explain {t}, question {i}.", "input": "", "output": f"About {t}: answer {i}."})
    recs += [recs[0], {"instruction": "Explain cooking pasta with tomato sauce, question 0.  ", "input": "",
                       "output": "About cooking pasta with tomato sauce: answer 0.\r\n"}]
    recs.append({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                                   {"from": "human", "value": "Tell a joke"}, {"from": "gpt", "value": "No."}]})
    src = write_jsonl(tmp_path / "pool.jsonl", recs)
    w = Workspace(tmp_path / "ws")
    w.load(src)
    n = len(w)
    rng = np.random.default_rng(0)
    conv = w.conversations()
    # per-turn lists, as the judges write them for multi-turn pools
    comp = [[2.0, 3.0] if sum(t["role"] == "user" for t in c) == 2 else [float(rng.integers(1, 7))] for c in conv]
    w.add_column("complexity", comp, TURNS_SUM)
    w.add_column("quality", [[4.0, 0.5] if len(c) == 2 else [float(rng.integers(1, 7))] for c in comp], TURNS_SUM)
    w.add_embeddings("default", clustered(rng, n, 16, 12, 0.4), {"kind": "test"})
    return w


def test_sort_key_per_turn_sum_and_safety(ws):
    s = row_scores(ws)
    multi = [i for i, c in enumerate(ws.column("complexity")) if len(c) == 2][0]
    assert s[multi] == pytest.approx(2 * 4 + 3 * 0.5)
    single = [i for i, c in enumerate(ws.column("complexity")) if len(c) == 1][0]
    assert s[single] == ws.column("complexity")[single][0] * ws.column("quality")[single][0]
    expr = row_scores(ws, "log1p(quality) + 2")
    assert expr[multi] == pytest.approx(np.log1p(4) + 2 + np.log1p(0.5) + 2)
    assert expr[single] == pytest.approx(np.log1p(ws.column("quality")[single][0]) + 2)
    for bad in ("__import__('os').system('true')", "quality.__class__", "[1][0]", "open('x')"):
        with pytest.raises(CurateError):
            row_scores(ws, bad)


def test_a_selections_rows_filtered_on_arrow_are_those_of_the_whole_list(ws):
    """rows(decision=, reasons=, ids=, first_of_each=, limit=): what a report shows of a large selection, without
    building every row's dict; each equals the same filter over rows()."""
    sel = ws.select(method="deita", name="d", budget=10, max_cosine_similarity=0.8)
    every = sorted(sel.rows(), key=lambda r: r["rank"])
    assert {r["decision"] for r in every} == {"kept", "rejected", "not_reached"}
    assert sel.rows() == every
    assert sel.rows(decision="kept", limit=3) == [r for r in every if r["decision"] == "kept"][:3]
    assert sel.rows(reasons=["too_similar"]) == [r for r in every if r["reason"] == "too_similar"]
    firsts: dict = {}
    for r in every:
        firsts.setdefault((r["decision"], r["reason"]), r)
    assert sel.rows(first_of_each=True) == sorted(firsts.values(), key=lambda r: r["rank"])
    some = [r["id"] for r in every[::3]]
    assert sel.rows(ids=some) == every[::3]


def test_a_selections_rows_rank_from_one_as_its_views_show_them(ws):
    """rows() gave rank 0 for the row considered first while the notebook view and the report showed 1."""
    from curate.report.views import selection_html

    sel = ws.select(method="deita", name="ranked", budget=3, max_cosine_similarity=0.8)
    rows = sel.rows()
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    kept = next(r for r in rows if r["decision"] == "kept")
    assert kept["rank"] == kept["detail"].get("rank", kept["rank"])  # a selector's own detail rank counts from 1 too
    assert f"<td class='n'>1</td><td><code>{rows[0]['id']}</code>" in selection_html(sel)


def test_deita_through_the_workspace_records_reasons(ws):
    sel = ws.select(method="deita", name="d", budget=10, max_cosine_similarity=0.8)
    assert len(sel.ids) == 10
    table = sel.rows()
    assert {r["decision"] for r in table} <= {"kept", "rejected", "not_reached"}
    rejected = [r for r in table if r["decision"] == "rejected"]
    # too close to a kept row: the witness (a kept id) and the similarity above the limit, as data
    assert rejected and all(r["reason"] == Reason.TOO_SIMILAR and r["detail"]["witness"] in sel.ids
                            and r["detail"]["similarity"] > 0.8 == r["detail"]["max_cosine_similarity"]
                            for r in rejected)
    assert all("score" in r["detail"] for r in table)
    x = ws.embeddings()
    kept = [ws.index[i] for i in sel.ids]
    g = x[kept] @ x[kept].T
    assert (g[np.triu_indices(len(kept), 1)] <= 0.8).all()


def test_chain_dedup_threshold_deita(ws):
    sel = ws.select(name="final", steps=[{"method": "exact"}, {"method": "threshold", "min_score": 6},
                                         {"method": "deita", "budget": 5}])
    assert set(ws.selections) >= {"final", "final.1-exact", "final.2-threshold"}
    dedup = ws.selection("final.1-exact")
    assert dedup.decisions()["duplicate"] == 2  # the copy and the trailing-space/CRLF variant
    thr = ws.selection("final.2-threshold")
    scores = row_scores(ws)
    assert all(scores[ws.index[i]] >= 6 for i in thr.ids)
    assert set(sel.ids) <= set(thr.ids) and len(sel.ids) == 5
    assert sel.provenance["input_selection"] == "final.2-threshold"
    # the chain's selection has a decision for every row of the pool, naming the step that dropped it
    rows = {r["id"]: r for r in sel.rows()}
    assert set(rows) == set(ws.ids) and sel.table.num_rows == len(ws)
    assert [r["id"] for r in sorted(sel.rows(), key=lambda r: r["rank"])][:len(thr.ids)] == \
        [r["id"] for r in ws.selection("final").rows() if r["detail"].get("step") is None]
    for earlier in (dedup, thr):
        for r in earlier.rows():
            if r["decision"] != "kept":
                assert rows[r["id"]]["decision"] == r["decision"] and rows[r["id"]]["reason"] == r["reason"]
                assert rows[r["id"]]["why"] == f"{r['why']}, at step {earlier.name}"
    assert sel.provenance["earlier_steps_dropped"] == len(ws) - len(thr.ids)
    assert sel.provenance["counts"]["kept"] == 5 and sum(sel.provenance["counts"].values()) == len(thr.ids)


def test_top_k_random_lift_kmeans_counts(ws):
    scores = row_scores(ws)
    top = ws.select(method="top_k", name="t", budget=7)
    assert sorted(scores[[ws.index[i] for i in top.ids]], reverse=True) == sorted(scores, reverse=True)[:7]
    r1 = ws.select(method="random", name="r1", budget=9, seed=4).ids
    assert r1 == ws.select(method="random", name="r2", budget=9, seed=4).ids and len(r1) == 9
    assert len(ws.select(method="lift", name="l", budget=8, n_components=4).ids) == 8
    km = ws.select(method="kmeans", name="k", budget=12, n_clusters=6)
    assert len(km.ids) == 12 and len(ws.select(method="kmeans", name="k2", budget=12, per_cluster="kcenter").ids) == 12


def test_kcenter_radius_shrinks_as_k_grows():
    x = clustered(np.random.default_rng(5), 600, 16, 30, 0.5)
    radii = [kcenter_greedy(x, k)[2].max() for k in (1, 5, 20, 80)]
    assert all(a > b for a, b in zip(radii, radii[1:], strict=False))



@pytest.mark.parametrize("seed", range(6))
def test_kcenter_picks_the_first_of_identical_rows_in_row_order(seed):
    """float32 products round differently by row position, so identical rows got distances that differed in the
    last bit, and that chose among them: kcenter --sort-by kept a lower-scored twin (rows are in score order)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((18, 5)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    which = rng.integers(0, 18, 37)
    x = base[which]
    first_copy = {int(w): int(np.flatnonzero(which == w)[0]) for w in np.unique(which)}
    centres, nearest, dist = kcenter_greedy(x, 12, first=0)
    assert all(c == first_copy[int(which[c])] for c in centres)  # no centre is a later copy of a point
    assert all(nearest[j] == first_copy[int(which[j])] and dist[j] == 0 for j in range(37) if which[j] in which[centres])
    assert all(len(a) == 0 for a in kcenter_greedy(np.empty((0, 5), np.float32), 3))  # no rows: no centre
    everything, _, _ = kcenter_greedy(x, 37, first=0)  # every point, then the other copies in row order
    distinct = len(first_copy)
    assert sorted(everything[:distinct]) == sorted(first_copy.values())
    assert list(everything[distinct:]) == sorted(set(range(37)) - set(first_copy.values()))


def test_minhash_and_semantic_dedup_remove_planted_duplicates(tmp_path):
    rng = np.random.default_rng(6)
    words = [f"w{i}" for i in range(500)]
    base = [" ".join(rng.choice(words, 30)) for _ in range(40)]
    near = [" ".join(b.split()[:-1] + ["changed"]) for b in base[:10]]  # last word changed: Jaccard 27/29
    recs = [{"instruction": t, "output": "ok"} for t in base + near]
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", recs))
    sel = w.select(method="minhash", name="m", threshold=0.7, text="instruction")
    assert sel.decisions()["duplicate"] == 10 and len(sel.ids) == 40
    x = unit(rng.standard_normal((50, 32)))
    x[40:] = unit(x[:10] + 0.05 * unit(rng.standard_normal((10, 32))))  # cosine ~0.999 to their originals
    w.add_embeddings("default", x, {"kind": "test"})
    sem = w.select(method="semantic", name="s", duplicate_similarity=0.95, n_clusters=3)
    assert sem.decisions()["duplicate"] == 10
    dup_rows = {w.index[r["id"]] for r in sem.table.to_pylist() if r["decision"] == "duplicate"}
    assert len(dup_rows & set(range(10, 40))) == 0
    for method, bad in (("minhash", {"shingle": 0}), ("minhash", {"threshold": 0.0}), ("semantic", {"n_clusters": 0})):
        with pytest.raises(CurateError, match=next(iter(bad))):
            w.select(method=method, name="bad", **bad)
    for bad, message in (({"ef": 5}, "ef=5 is a setting of index hnsw, and index is 'kmeans'"),  # they did nothing
                         ({"index": "hnsw", "n_clusters": 3}, "n_clusters=3 is a setting of index kmeans"),
                         ({"index": "exact", "threads": 4}, "threads=4 is a setting of index hnsw")):
        with pytest.raises(CurateError, match=message):
            w.select(method="semantic", name="bad", **bad)


def test_dsir_shifts_ngrams_toward_target(tmp_path):
    rng = np.random.default_rng(7)
    cook = ["simmer", "garlic", "onion", "oven", "bake", "sauce", "recipe", "butter"]
    sport = ["goal", "striker", "referee", "tennis", "serve", "match", "league", "coach"]
    recs = [{"instruction": " ".join(rng.choice(cook if i % 4 == 0 else sport, 8)), "output": "x"} for i in range(200)]
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", recs))
    target = [" ".join(rng.choice(cook, 8)) for _ in range(30)]
    sel = w.select(method="dsir", name="d", budget=40, target=target)
    texts = {r["id"]: r["conversation"][0]["content"] for r in w.pool.to_list()}
    frac = np.mean([texts[i].split()[0] in cook for i in sel.ids])
    assert frac > 0.9  # pool: 25% cooking
    assert sel.ids == w.select(method="dsir", name="d2", budget=40, target=target).ids
    (tmp_path / "target.txt").write_text("\n".join(target) + "\n", encoding="utf-8")  # a file, by name or as a Path
    for given in (str(tmp_path / "target.txt"), tmp_path / "target.txt"):  # a Path was "not a list of texts or a file"
        assert w.select(method="dsir", name="d3", budget=40, target=given).ids == sel.ids


def test_registry_accepts_new_selectors(ws):
    from curate.select import SelectorResult, register

    @register("first_n")
    def first_n(w, rows, budget):
        keep = [i < budget for i in range(len(rows))]
        return SelectorResult(rows.tolist(), [Decision.KEPT if k else Decision.REJECTED for k in keep],
                              [Reason.SELECTED if k else Reason.BUDGET_FILLED for k in keep], [{}] * len(rows))

    try:
        assert ws.select(method="first_n", name="f", budget=3).ids == ws.ids[:3]
    finally:
        SELECTORS.pop("first_n")
    with pytest.raises(CurateError, match="unknown selection method"):
        ws.select(method="nope", name="x")


# -- sort keys: per turn, reduced by the columns' declared reducer ------------------------------------
def test_sort_key_reduces_turns_with_the_declared_reducer(tmp_path):
    recs = [{"conversations": [{"from": "human", "value": "A1"}, {"from": "gpt", "value": "a"},
                               {"from": "human", "value": "A2"}, {"from": "gpt", "value": "b"}]},
            {"instruction": "B", "output": "b"}, {"instruction": "C", "output": "c"}]
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", recs))
    values = [[3.0, 3.0], [4.0], [1.0]]  # row A: sum 6, mean 3; B: 4; C: 1
    w.add_column("c_sum", values, TURNS_SUM)
    w.add_column("c_mean", values, {**TURNS_SUM, "reducer": "mean"})
    w.add_column("q", [[1.0, 2.0], [1.0], [1.0]], TURNS_SUM)
    a, b, c = w.ids
    assert w.select(method="top_k", name="s", budget=3, sort_by="c_sum").ids == [a, b, c]
    assert w.select(method="top_k", name="m", budget=3, sort_by="c_mean").ids == [b, a, c]
    assert w.selection("m").provenance["reducer"] == "mean"
    for name in ("c_sum", "c_mean"):  # selection reads a row's value exactly as plots and the report do
        assert row_scores(w, name).tolist() == w.row_values(name)
    assert row_scores(w, "c_sum*q").tolist() == [3 * 1 + 3 * 2, 4.0, 1.0]  # per turn, then summed
    w.add_column("weight", [2.0, 1.0, 1.0], {"kind": "test"})  # a row value: applies to every turn
    assert row_scores(w, "c_sum*weight")[0] == 3 * 2 + 3 * 2
    with pytest.raises(CurateError, match="different reducers"):
        row_scores(w, "c_sum*c_mean")
    w.add_column("undeclared", values, {"kind": "test"})
    with pytest.raises(CurateError, match="declares no reducer"):
        row_scores(w, "undeclared")


def test_exact_dedup_keeps_case_and_indentation_apart_unless_asked_to_ignore_them(tmp_path):
    code = "def f(x):\n    if x:\n        return 1\n    return 2"
    flat = "def f(x):\n    if x:\n        return 1\n        return 2"  # another program: the last line indented
    rows = [{"instruction": "Fix the bug.", "output": code},
            {"instruction": "Fix the bug.", "output": flat},
            {"instruction": "Spell it: ABC", "output": "A-B-C"},
            {"instruction": "Spell it: abc", "output": "a-b-c"},
            {"instruction": "Fix the bug.", "output": code.replace("\n", "  \r\n") + "\n"},  # row 0 but for CRLF
            {"instruction": "Cafe\u0301?", "output": "yes"}, {"instruction": "Caf\u00e9?", "output": "yes"}]  # NFC
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", rows))
    exact = w.select(method="exact", name="exact")
    assert [w.ids.index(i) for i in exact.ids] == [0, 1, 2, 3, 5]
    assert exact.provenance["ignore_case_and_spacing"] is False
    loose = w.select(method="exact", name="loose", ignore_case_and_spacing=True)
    assert [w.ids.index(i) for i in loose.ids] == [0, 2, 5]
    with pytest.raises(CurateError, match="ignore_case_and_spacing is a switch"):
        w.select(method="exact", name="bad", ignore_case_and_spacing="yes")


def test_exact_dedup_drops_invisible_characters_but_keeps_joiners_and_full_width_forms(tmp_path):
    text = "你好，世界 👩‍💻 नमस्ते"
    rows = [{"instruction": text, "output": "ok"},
            {"instruction": "你好，\u200b世界 👩‍💻 नमस्ते", "output": "ok"},         # zero-width space: a copy
            {"instruction": "\ufeff" + text.replace("世", "\ufeff世"), "output": "ok"},  # BOM, also inside: a copy
            {"instruction": text.replace("好", "好\u2060"), "output": "o\u00adk"},   # word joiner, soft hyphen: a copy
            {"instruction": text.replace("\u200d", ""), "output": "ok"},             # no ZWJ: 👩 💻, another text
            {"instruction": text.replace("，", ","), "output": "ok"}]                # half-width comma: NFKC only
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", rows))
    assert [w.ids.index(i) for i in w.select(method="exact", name="exact").ids] == [0, 4, 5]
    assert [w.ids.index(i) for i in w.select(method="exact", name="loose", ignore_case_and_spacing=True).ids] == [0, 4]


# -- dedup order: pool order unless sort_by says otherwise --------------------------------------------
def test_dedup_keeps_the_same_copies_before_and_after_scoring(tmp_path, monkeypatch):
    monkeypatch.setattr("curate.select.inputs.TEXT_CHUNK_ROWS", 5)  # the walks read texts in chunks, in walk order
    rng = np.random.default_rng(8)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words, 25)) for _ in range(12)]
    texts.append(texts[0])  # row 12: an exact copy of row 0, later in the pool
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": t, "output": "ok"} for t in texts]))
    x = unit(rng.standard_normal((len(texts), 16)))
    x[12] = x[0]
    w.add_embeddings("default", x, {"kind": "test"})
    params = {"exact": {"text": "instruction"}, "minhash": {"text": "instruction", "threshold": 0.7},
              "semantic": {"n_clusters": 2}, "kcenter": {"budget": 4}}
    before = {m: w.select(method=m, name=f"{m}-before", **p) for m, p in params.items()}
    assert w.ids[0] in before["exact"].ids and w.ids[12] not in before["exact"].ids
    n = len(w)
    w.add_column("complexity", [[6.0] if i == 12 else [1.0] for i in range(n)], TURNS_SUM)  # the copy scores best
    w.add_column("quality", [[1.0]] * n, TURNS_SUM)
    for m, p in params.items():
        after = w.select(method=m, name=f"{m}-after", **p)
        assert after.ids == before[m].ids, m  # score columns appearing change nothing ...
        assert after.provenance["sort_by"] is None
        scored = w.select(method=m, name=f"{m}-scored", sort_by="complexity*quality", **p)
        assert scored.provenance["sort_by"] == "complexity*quality"  # ... unless asked, and then it says so
        if m != "kcenter":
            assert w.ids[12] in scored.ids and w.ids[0] not in scored.ids, m
        else:
            assert scored.ids[0] == w.ids[12]  # the first centre is the best-scored row


# -- every selector's real output: valid codes and the details describe() needs ------------------------
DETAIL_KEYS = {Reason.TOO_SIMILAR: {"similarity", "witness", "max_cosine_similarity"},
               Reason.EXACT_DUPLICATE: {"witness"}, Reason.NEAR_DUPLICATE: {"witness", "similarity"},
               Reason.BELOW_THRESHOLD: {"score", "min_score"}, Reason.QUOTA_FILLED: {"cluster", "quota"},
               Reason.NO_SCORE: {"sort_by"}, Reason.CONTAMINATED: {"target", "shared_words"},
               Reason.FAILS_HEURISTIC: {"rule", "rules_failed"},
               Reason.ANSWERED_WELL: {"answer_score", "max_answer_score"}}
SELECTOR_PARAMS = {"deita": {"budget": 6, "max_cosine_similarity": 0.9}, "top_k": {"budget": 5},
                   "threshold": {"min_score": 12}, "random": {"budget": 5}, "kcenter": {"budget": 5},
                   "kmeans": {"budget": 6, "n_clusters": 3}, "lift": {"budget": 5, "n_components": 4},
                   "dsir": {"budget": 5, "target": ["explain cooking pasta with tomato sauce"] * 3},
                   "exact": {}, "minhash": {"threshold": 0.7, "text": "instruction"}, "heuristics": {},
                   "decontaminate": {"target": ["Explain football match tactics in the style of question number 5"]},
                   "semantic": {"duplicate_similarity": 0.95}, "instag": {"budget": 10},
                   "ifd": {"budget": 5}, "perplexity": {}, "learnability": {"budget": 5},
                   "cartography": {"budget": 6}, "el2n": {"budget": 6, "skip_hardest": 0.1}, "grand": {"budget": 6},
                   "necessity": {"seed": "seed", "answer_score": "seed_answer_quality", "max_answer_score": 3.5,
                                 "budget": 4}}
# selectors that fine-tune a model before choosing: their codes are checked in their own tests
TRAINING_SELECTORS = {"less": "tests/test_train_less.py", "mining": "tests/test_train_mining.py"}


def every_selection(tmp_path):
    """A small workspace and one selection per registered selector (named after it), run for real:
    duplicates, near-duplicates, a multi-turn row, a row whose complexity judge failed, and tags."""
    import curate.signals.selectors  # noqa: F401  (registers ifd, perplexity, learnability, as ws.select does)
    import curate.tags.sampling  # noqa: F401  (registers instag, as ws.select does)
    import curate.train.selectors  # noqa: F401  (registers cartography, el2n, grand, as ws.select does)
    from curate.codes import Failure, FailureCode

    topics = ["cooking pasta with tomato sauce", "football match tactics", "python list comprehension",
              "tennis serve technique"]
    recs = [{"instruction": f"Explain {topics[i % 4]} in the style of question number {i} please.", "output": f"A{i}."}
            for i in range(24)]
    recs += [recs[0], {"instruction": recs[1]["instruction"].upper(), "output": recs[1]["output"]},
             {"instruction": recs[2]["instruction"].replace("please", "kindly"), "output": recs[2]["output"]},
             {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                                {"from": "human", "value": "A joke?"}, {"from": "gpt", "value": "No."}]},
             {"instruction": "Tell me a secret about question 28.", "output": "Sorry, but I can't share that."}]
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "every.jsonl", recs))
    turns = [len(t) for t in w.turns()]
    rng = np.random.default_rng(9)
    comp = [[float(rng.integers(1, 7)) for _ in range(t)] for t in turns]
    comp[3] = None  # the complexity judge failed on this row
    w.add_column("complexity", comp, TURNS_SUM)
    w.add_column("complexity_failure", [[Failure(FailureCode.LOW_DIGIT_MASS, "digit mass 0.2", turn=1).to_dict()]
                                        if i == 3 else None for i in range(len(w))], {"kind": "failure"})
    w.add_column("quality", [[float(rng.integers(1, 7)) for _ in range(t)] for t in turns], TURNS_SUM)
    x = clustered(rng, len(w), 16, 4, 0.3)
    x[w.index[w.ids[24]]] = x[0]  # the exact copy is also a semantic duplicate
    w.add_embeddings("default", x, {"kind": "test"})
    w.add_column("tags", [[] if i == 5 else None if i == 6 else [f"t{i % 3}", f"u{i % 5}"][: 1 + i % 2]
                          for i in range(len(w))], {"kind": "test"})
    mean = {"kind": "test", "granularity": "turn", "reducer": "mean"}
    ifd = [[float(rng.uniform(0.2, 1.3)) for _ in range(t)] for t in turns]
    w.add_column("ifd", ifd, mean)
    w.add_column("perplexity", [[float(rng.uniform(2, 40)) for _ in range(t)] for t in turns], mean)
    w.add_column("learnability", [[float(rng.normal()) for _ in range(t)] for t in turns], mean)
    for name in ("confidence", "variability", "correctness", "el2n", "grand"):
        w.add_column(name, [float(v) for v in rng.uniform(0, 1, len(w))], {"kind": "test"})
    answers = [[float(rng.uniform(1, 6)) for _ in range(t)] for t in turns]
    answers[7] = None  # the judge of the seed model's answers failed on this row
    w.add_column("seed_answer_quality", answers, TURNS_SUM)
    w.select(method="random", name="seed", budget=3)  # MoDS' seed set, for necessity
    missing = sorted(set(SELECTORS) - set(SELECTOR_PARAMS) - set(TRAINING_SELECTORS))
    assert not missing, f"add test parameters for selectors {missing}"
    return w, {m: w.select(method=m, name=m, **SELECTOR_PARAMS[m]) for m in sorted(set(SELECTORS) - set(TRAINING_SELECTORS))}


def test_every_selector_returns_codes_with_the_details_describe_needs(tmp_path):
    import json

    from curate.codes import describe

    pytest.importorskip("curate.tags.sampling")  # registers instag (ws.select imports it)
    w, selections = every_selection(tmp_path)
    assert "instag" in selections
    seen: set[Reason] = set()
    for method, sel in selections.items():
        rows = sel.rows()
        assert rows and sel.ids, method
        for r in rows:
            decision, reason, detail = Decision(r["decision"]), Reason(r["reason"]), r["detail"]
            seen.add(reason)
            assert (decision is Decision.KEPT) == (reason is Reason.SELECTED), (method, r)
            # the budget filling first is one situation, one code, whatever the selector: top_k said rejected /
            # budget_filled, kcenter, random, lift, dsir rejected / not_sampled, kmeans rejected / quota_filled
            assert (decision is Decision.NOT_REACHED) == (reason in (Reason.BUDGET_FILLED, Reason.QUOTA_FILLED,
                                                                     Reason.NO_NEW_TAG)), (method, r)
            assert DETAIL_KEYS.get(reason, set()) <= set(detail), (method, r)
            assert json.loads(json.dumps(detail)) == detail  # plain data: numbers stay numbers
            assert all(not isinstance(v, str) for k, v in detail.items()
                       if k in ("similarity", "score", "min_score", "quota", "cluster", "max_cosine_similarity"))
            if "witness" in detail:
                assert detail["witness"] in sel.ids, (method, r)  # a kept row of the same selection
            assert isinstance(describe(reason, detail), str)
        assert sum(sel.reasons().values()) == len(rows)
    assert {Reason.SELECTED, Reason.TOO_SIMILAR, Reason.EXACT_DUPLICATE, Reason.NEAR_DUPLICATE, Reason.BUDGET_FILLED,
            Reason.BELOW_THRESHOLD, Reason.NO_SCORE, Reason.QUOTA_FILLED, Reason.NO_TAGS,
            Reason.NO_NEW_TAG, Reason.PRUNED_EASY, Reason.HARD_TO_LEARN, Reason.CONTAMINATED,
            Reason.FAILS_HEURISTIC, Reason.ANSWERED_WELL} <= seen
    assert Reason.NOT_SAMPLED not in seen  # written before 2026-12 only, and read as budget_filled
    for method in ("top_k", "random", "kcenter", "lift", "dsir"):  # rows past the budget: the deita code
        assert ("not_reached", "budget_filled") in selections[method].reasons(), method
    assert set(selections["deita"].reasons()) == {("kept", "selected"), ("rejected", "too_similar"),
                                                  ("not_reached", "budget_filled"), ("unscored", "no_score")}
    failed = [r for r in selections["deita"].rows() if r["reason"] == Reason.NO_SCORE]
    assert [r["id"] for r in failed] == [w.ids[3]]
    assert failed[0]["detail"] == {"sort_by": "complexity*quality", "column": "complexity", "failure": "low_digit_mass",
                                   "turn": 1}
    assert describe(Reason.NO_SCORE, failed[0]["detail"]) == "no score: low_digit_mass"


def test_diversity_selectors_on_duplicate_vectors_and_edge_budgets(ws):
    n = len(ws)
    few = np.repeat(np.eye(16)[:5], -(-n // 5), axis=0)[:n]  # 5 distinct vectors, each ~13 times
    ws.add_embeddings("five", few, {"kind": "test"})
    k = ws.select(method="kcenter", name="kc", budget=8, embeddings="five")
    assert len(set(k.ids)) == 8  # every distinct vector first, then duplicates: no row twice
    assert len({tuple(few[ws.index[i]]) for i in k.ids[:5]}) == 5
    km = ws.select(method="kmeans", name="km", budget=12, n_clusters=8, per_cluster="kcenter", embeddings="five")
    assert len(km.ids) <= 12 and km.table.num_rows == n  # K-means left clusters empty: no crash, every row decided
    assert km.provenance["empty_clusters"] == 3
    for bad in (0, -1, 2.5, True):
        with pytest.raises(OptionError, match=r"budget must be a whole number of rows, at least 1 \(--budget; budget="):
            ws.select(method="top_k", name="bad", budget=bad)


def test_a_chain_is_written_whole_or_not_at_all_and_replaces_a_longer_one(ws):
    ws.select(name="ch", steps=[{"method": "exact"}, {"method": "threshold", "min_score": 2},
                                {"method": "top_k", "budget": 5}])
    assert {s for s in ws.selections if s.startswith("ch")} == {"ch", "ch.1-exact", "ch.2-threshold"}
    with pytest.raises(CurateError, match="nope"):  # the third step fails: none of this chain's steps is written
        ws.select(name="cx", steps=[{"method": "exact"}, {"method": "threshold", "min_score": 2},
                                    {"method": "top_k", "budget": 5, "sort_by": "nope"}])
    assert not [s for s in ws.selections if s.startswith("cx")]
    # a step that keeps nothing leaves the next one no candidates: decided, not crashed
    empty = ws.select(name="ch", steps=[{"method": "threshold", "min_score": 99}, {"method": "lift", "budget": 3}])
    assert empty.ids == [] and empty.table.num_rows == len(ws)
    assert {s for s in ws.selections if s.startswith("ch")} == {"ch", "ch.1-threshold"}  # the longer chain's are gone
    for steps in ([], "exact", {"method": "exact"}, ["exact"]):
        with pytest.raises(CurateError, match="steps= takes a non-empty list of steps"):
            ws.select(name="cy", steps=steps)


def test_minhash_shingles_chinese_and_japanese_by_characters(tmp_path):
    """Chinese and Japanese put no spaces between words: as space-split words a one-character edit shared no
    shingle with the original (Jaccard 0); each character is a word now."""
    zh = "光合作用是植物利用阳光把二氧化碳和水转化为葡萄糖和氧气的过程，它发生在叶绿体中，为地球上几乎所有生命提供能量。"
    ja = "光合成とは、植物が太陽の光を使って二酸化炭素と水からブドウ糖と酸素を作り出す仕組みで、葉緑体の中で行われます。"
    other = "通货膨胀是指一般物价水平在一定时期内持续上涨的现象，通常由货币供应过多或需求超过供给引起，会降低购买力。"
    rows = [{"instruction": zh, "output": "好"}, {"instruction": ja, "output": "はい"},
            {"instruction": other, "output": "好"},
            {"instruction": zh.replace("阳光", "日光"), "output": "好"},          # one character edited
            {"instruction": ja.replace("太陽", "日"), "output": "はい"},          # one word shortened
            {"instruction": "Photosynthesis turns light into sugar.", "output": "Yes"}]
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", rows))
    found = w.select(method="minhash", name="near")
    assert [w.ids.index(i) for i in found.ids] == [0, 1, 2, 5]


def test_minhash_finds_pairs_just_above_its_threshold(tmp_path):
    """datasketch's default band layout made a pair at Jaccard 0.8 a candidate 40% of the time, so the selector
    missed about half the near-duplicates between 0.8 and 0.9. The default layout favours recall (a false candidate
    costs one signature comparison); what it misses now is the estimate's own noise at the threshold."""
    import random

    from curate.select.dedup import shingles

    rnd = random.Random(3)
    recs, jaccard = [], []
    while len(jaccard) < 120:
        words = [f"w{rnd.randrange(20000)}" for _ in range(rnd.randint(40, 80))]
        copy = list(words)
        for pos in rnd.sample(range(len(words)), 2):
            copy[pos] = f"w{rnd.randrange(20000)}"
        a, b = " ".join(words), " ".join(copy)
        j = len(shingles(a, 3) & shingles(b, 3)) / len(shingles(a, 3) | shingles(b, 3))
        if 0.8 <= j < 0.9:
            jaccard.append(j)
            recs += [{"instruction": a, "output": "x"}, {"instruction": b, "output": "x"}]
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", recs))

    def found(**params):
        sel = w.select(method="minhash", name="m", text="instruction", **params)
        return sel.decisions().get("duplicate", 0) / len(jaccard)

    assert found() >= 0.75  # 0.79 here: the rest are pairs whose estimate falls under 0.8
    assert found(false_positive_weight=0.5) < 0.6  # 0.47: datasketch's default layout, as data-juicer uses it
    assert w.selection("m").provenance["bands"] == 9  # the provenance names the layout it ran
    with pytest.raises(CurateError, match="false_positive_weight"):
        w.select(method="minhash", name="bad", false_positive_weight=1.0)


def test_minhash_finds_a_kept_row_in_every_level_of_its_band_index(tmp_path, monkeypatch):
    """The band index keeps recent rows in a dict and flushes them into sorted levels merged by size (datasketch's
    MinHashLSH took ~5 KB per kept row): a near-duplicate of a row flushed long ago, or of one still in the dict, is
    found alike, and the decisions do not depend on when the flushes happen."""
    import random

    import curate.select.lsh as lsh

    rnd = random.Random(5)
    texts = [" ".join(f"w{rnd.randrange(20000)}" for _ in range(60)) for _ in range(80)]
    recs = [{"instruction": t, "output": "x"} for t in texts]
    for i in (0, 3, 41, 78, 79):  # copies of early rows (long flushed) and of the last ones (still in the dict)
        words = texts[i].split()
        words[10] = "changed"
        recs.append({"instruction": " ".join(words), "output": "x"})
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", recs))
    whole = w.select(method="minhash", name="whole", text="instruction").table.to_pylist()
    monkeypatch.setattr(lsh, "FLUSH_ENTRIES", 16)  # a level every row: dozens of merges
    levels = w.select(method="minhash", name="levels", text="instruction").table.to_pylist()
    assert levels == whole
    duplicates = [r for r in whole if r["decision"] == "duplicate"]
    assert [w.index[r["id"]] for r in duplicates] == [80, 81, 82, 83, 84]
    assert [json.loads(r["detail"])["witness"] for r in duplicates] == [w.ids[i] for i in (0, 3, 41, 78, 79)]


def test_deita_reads_only_the_vectors_its_walk_examines():
    """The deita selector hands admission a view of the stored matrix: rows past the walk are never read."""
    from curate.select.inputs import UnitRowsView

    class Recording:
        def __init__(self, x):
            self.x, self.read = x, set()
            self.shape = x.shape

        def __getitem__(self, rows):
            self.read.update(np.atleast_1d(rows).tolist())
            return self.x[rows]

    rng = np.random.default_rng(3)
    matrix = Recording(unit(rng.standard_normal((2_000, 32))).astype(np.float32))
    candidates = np.arange(1, 2_000, 2)  # every other row of the pool
    scores = rng.uniform(0, 1, len(candidates))
    res = admit(UnitRowsView(matrix, candidates), scores, None, 0.9, budget=20, block_size=8)
    examined = res.stats["examined"]
    assert 20 <= examined < 100 and len(matrix.read) == examined
    assert matrix.read == set(candidates[res.order[:examined]].tolist())
    assert res.decision.tolist() == admit(unit(matrix.x[candidates]), scores, None, 0.9, budget=20).decision.tolist()


def test_max_cosine_similarity_one_admits_every_duplicate_and_just_below_one_none():
    # float32 unit rows whose float64 dot product with themselves lies either side of 1 (1 +- 6e-8)
    rng = np.random.default_rng(7)
    x = unit(rng.standard_normal((400, 16)))
    self_dot = np.einsum("ij,ij->i", x.astype(np.float64), x.astype(np.float64))
    assert (self_dot > 1).any() and (self_dot < 1).any()
    dup = np.concatenate([x, x])  # every row twice
    scores = np.arange(len(dup), dtype=np.float64)
    every = admit(dup, scores, max_cosine_similarity=1.0)
    assert len(every.admitted) == len(dup)
    one_each = admit(dup, scores, max_cosine_similarity=0.9999999)
    assert len(one_each.admitted) == len(x)
    assert np.allclose(one_each.witness_similarity[one_each.decision == REJECTED], 1.0, atol=1e-12)


def test_shared_selector_parameters_out_of_range_are_named_as_given(ws):
    ws.embed()
    for method, params, message in (
            ("semantic", {"duplicate_similarity": 2}, "duplicate_similarity must be a cosine in \\[-1, 1\\], not 2"),
            ("kmeans", {"budget": 3, "seed": -1}, "seed must be a whole number from 0 to 4294967295, not -1"),
            ("kcenter", {"budget": 3, "seed": -1}, "seed must be a whole number"),
            ("kmeans", {"budget": 3, "n_clusters": 0}, "n_clusters must be at least 1"),
            ("deita", {"budget": 3, "block_size": 0}, "block_size must be at least 1 row, not 0"),  # was accepted
            ("deita", {"budget": 3, "embeddings": "other"}, "no embeddings 'other' \\(the workspace has 'default'\\); "
                                                             "run `curate embed .* --name other`")):
        with pytest.raises(CurateError, match=message):
            ws.select(method=method, name="bad", **params)
    assert "bad" not in ws.selections


def test_the_default_sort_key_reads_the_scores_a_step_wrote_never_a_pool_field_of_that_name(tmp_path):
    """A `curate run` on a pool with its own `quality` field writes quality_score and ranks by
    complexity*quality_score; a later select with the default key ranked by complexity*quality, the user's field, and
    kept other rows without a word. The default reads the derived columns by provenance; several are refused."""
    recs = [{"instruction": f"Task {i}.", "output": f"Answer {i}.", "quality": 10 - i} for i in range(6)]
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", recs))
    w.add_column("complexity", [[2.0]] * 6, {**TURNS_SUM, "kind": "scorer", "imitates": "complexity"})
    w.add_column("quality_score", [[float(i)] for i in range(6)], {**TURNS_SUM, "kind": "scorer", "imitates": "quality"})
    by_run = w.select(method="top_k", name="run", budget=3, sort_by="complexity*quality_score")
    again = w.select(method="top_k", name="again", budget=3)
    assert again.provenance["sort_by"] == "complexity*quality_score" and again.ids == by_run.ids
    assert again.ids != w.select(method="top_k", name="field", budget=3, sort_by="complexity*quality").ids
    w.add_column("quality_judge", [[1.0]] * 6, {**TURNS_SUM, "kind": "judge", "prompt": "quality"})
    with pytest.raises(CurateError, match=r"2 derived columns hold quality scores: quality_judge \(judge, prompt quality\); "
                                          r"quality_score \(scorer imitating quality\); name the one"):
        w.select(method="top_k", name="again", budget=3)
    bare = Workspace(tmp_path / "bare")  # the pool field alone: named, never taken as the default
    bare.load(tmp_path / "p.jsonl")
    bare.add_column("complexity", [[2.0]] * 6, TURNS_SUM)
    with pytest.raises(CurateError, match="no sort key: .*no derived column holds quality scores yet.*the pool's own "
                                          "field 'quality' is not read by default"):
        bare.select(method="top_k", name="t", budget=3)
    assert bare.select(method="top_k", name="t", budget=3, sort_by="complexity*quality").ids == bare.ids[:3]
    bare.add_column("quality-gpt4", [[1.0]] * 6, {**TURNS_SUM, "kind": "judge", "prompt": "quality"})
    with pytest.raises(CurateError, match="would read column 'quality-gpt4', a name a sort key cannot hold"):
        bare.select(method="top_k", name="t2", budget=3)  # pasted in, it read as complexity*quality - gpt4


def test_a_nan_stored_in_a_score_column_is_unscored_naming_the_column(tmp_path):
    recs = [{"instruction": x, "output": x} for x in "ABC"]
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", recs))
    w.add_column("c", [[float("nan")], [4.0], None], TURNS_SUM)
    scores = score_rows(w, "c")
    assert np.isnan(scores.values[[0, 2]]).all() and scores.values[1] == 4.0
    assert scores.detail(0) == {"sort_by": "c", "column": "c", "turn": 1}  # named as the None case is
    assert scores.detail(2) == {"sort_by": "c", "column": "c"}


def test_dsir_hashes_one_character_words_and_each_chinese_character():
    from curate.select.dsir import dsir_words, hashed_ngrams

    assert dsir_words("I ate 1 apple.") == ["I", "ate", "1", "apple", "."]
    assert dsir_words("我喜欢苹果") == ["我", "喜", "欢", "苹", "果"]
    counts = hashed_ngrams(["I ate 1 apple.", "我喜欢苹果", "苹果很甜"], num_buckets=2 ** 20).toarray()
    assert counts.sum(axis=1).tolist() == [5 + 4, 5 + 4, 4 + 3]  # unigrams + bigrams
    assert (counts[1] * counts[2]).astype(bool).sum() == 3  # 苹, 果 and 苹果 shared; one run each was no feature in common


def test_dsir_prefers_chinese_rows_sharing_the_targets_characters(tmp_path):
    apples = [f"苹果很甜{i}" for i in range(8)]
    rain = [f"今天下雨了{i}" for i in range(8)]
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": t, "output": "好"} for t in apples + rain]))
    sel = w.select(method="dsir", name="d", budget=8, target=["我喜欢吃苹果", "苹果和梨"])
    score = {r["id"]: r["detail"]["score"] for r in sel.rows()}
    conv = dict(zip(w.ids, w.conversations(), strict=True))
    about_apples = [score[i] for i in w.ids if "苹果" in conv[i][0]["content"]]
    about_rain = [score[i] for i in w.ids if "下雨" in conv[i][0]["content"]]
    assert min(about_apples) > max(about_rain)
    assert sel.provenance["tokens"].startswith("lowercased words and runs of punctuation")
