"""The report's "why was this row rejected" section: nearest kept rows of rows dropped for similarity."""

import numpy as np

from curate.report.html import report_html
from curate.report.neighbours import nearest_kept, rejected_neighbours
from curate.session import Workspace
from tests.conftest import write_jsonl


def unit(a):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def make_ws(tmp_path, n=60, d=16):
    rng = np.random.default_rng(3)
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"question {i}", "output": "ok"} for i in range(n)]))
    base = unit(rng.standard_normal((n // 2, d)))
    x = np.concatenate([base, unit(base + 0.08 * rng.standard_normal(base.shape))])  # rows n/2.. near a twin
    w.add_embeddings("default", x, {"kind": "test"})
    turns = {"kind": "test", "granularity": "turn", "reducer": "sum"}  # as the judges declare DEITA scores
    w.add_column("complexity", [[float(v)] for v in rng.uniform(1, 6, n)], turns)
    w.add_column("quality", [[float(v)] for v in rng.uniform(1, 6, n)], turns)
    return w, x


def test_nearest_kept_exact_matches_brute_force_and_hnsw_agrees():
    rng = np.random.default_rng(0)
    kept, queries = unit(rng.standard_normal((500, 24))), unit(rng.standard_normal((7, 24)))
    pos, sims = nearest_kept(kept, queries, k=4)
    brute = queries.astype(np.float64) @ kept.astype(np.float64).T
    assert (pos == np.argsort(-brute, axis=1)[:, :4]).all()
    assert np.allclose(sims, np.sort(brute, axis=1)[:, ::-1][:, :4])
    hpos, hsims = nearest_kept(kept, queries, k=4, index="hnsw", ef=200)  # a small graph, wide beam: exact
    assert (hpos == pos).all() and np.allclose(hsims, sims)
    assert nearest_kept(kept[:2], queries, k=4)[0].shape == (7, 2)
    # the report's kept rows read a part at a time from the embedding set (no whole copy): the same answers
    from curate.report.neighbours import _UnitRows

    store, positions = np.vstack([queries, kept * 3.0]), np.arange(7, 507)[::-1].copy()  # off unit norm, reversed
    for index in ("exact", "hnsw"):
        lpos, lsims = nearest_kept(_UnitRows(store, positions), queries, k=4, index=index, ef=200)
        assert (lpos == 499 - pos).all() and np.allclose(lsims, sims, atol=1e-6)


def test_rejected_rows_show_their_nearest_kept_rows(tmp_path):
    w, x = make_ws(tmp_path)
    sel = w.select(method="deita", name="d", budget=40, max_cosine_similarity=0.9)
    rejected = [r for r in sel.rows() if r["decision"] == "rejected"]
    assert rejected  # the twins
    found = rejected_neighbours(w, "d", k=2, limit=None)
    assert {f["id"] for f in found} == {r["id"] for r in rejected}
    kept = set(sel.ids)
    for f in found:
        q = x[w.index[f["id"]]].astype(np.float64)
        sims = {i: float(x[w.index[i]].astype(np.float64) @ q) for i in kept}
        best = max(sims, key=sims.get)
        top = f["neighbours"][0]
        assert top["id"] == best and np.isclose(top["similarity"], sims[best])
        assert all(n["id"] in kept for n in f["neighbours"]) and len(f["neighbours"]) == 2
        # the selector's recorded witness is a kept row above tau; the nearest kept row is at least as close
        assert f["witness"] in kept and top["similarity"] >= f["similarity"] - 1e-6 > 0.9 - 1e-6
    page = report_html(w, selection="d")
    assert "why rows were rejected" in page and found[0]["id"] in page and found[0]["neighbours"][0]["id"] in page


def test_no_section_without_similarity_rejections(tmp_path):
    w, _ = make_ws(tmp_path)
    w.select(method="top_k", name="t", budget=10)
    assert rejected_neighbours(w, "t") == []
    assert "why rows were rejected" not in report_html(w, selection="t")


def test_rejected_rows_of_text_without_spaces_are_cut_in_the_report(tmp_path):
    """shorten kept a word longer than its width whole: 100,000 letters of one row, or CJK (no spaces at all),
    went into the "why rows were rejected" table whole, and the report grew with every such row."""
    rng = np.random.default_rng(3)
    texts = [("A" * 30_000 if i % 2 else "中文句子" * 8_000) + str(i) for i in range(12)]
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": t, "output": "ok"} for t in texts]))
    base = unit(rng.standard_normal((1, 16)))
    w.add_embeddings("default", unit(base + 0.01 * rng.standard_normal((12, 16))), {"kind": "test"})
    w.add_column("quality", [float(i) for i in range(12)], {"kind": "test"})
    w.select(method="deita", name="d", budget=8, max_cosine_similarity=0.9, sort_by="quality")
    assert len(rejected_neighbours(w, "d", limit=None)) == 11  # one kept, every other row its near twin
    page = report_html(w, selection="d")
    start = page.index("why rows were rejected")
    section = page[start:page.find("<h2", start) % (len(page) + 1)]  # to the next section, or the end
    assert "A" * 91 not in section and "中文句子" * 23 not in section  # 92 characters
    assert len(page) < 200_000  # rows clipped at 2,000 characters a turn in the samples, cut short in the tables


def test_with_hnsw_the_nearest_kept_row_listed_is_at_least_as_similar_as_the_witness(tmp_path):
    """The module said the nearest kept row is at least as similar as the recorded witness; an hnsw graph (here a
    beam of 1 over 400 random rows) misses some witnesses and listed less similar rows first. The witness is now
    compared exactly and listed where it belongs."""
    rng = np.random.default_rng(0)
    n, d = 400, 32
    base = unit(rng.standard_normal((n, d)))
    twins = unit(base[:120] + 0.3 * unit(rng.standard_normal((120, d))))  # cosine ~0.95 to their base row
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"q {i}", "output": "ok"} for i in range(n + 120)]))
    w.add_embeddings("default", np.concatenate([base, twins]), {"kind": "test"})
    w.add_column("complexity", [[2.0]] * n + [[1.0]] * 120, {"kind": "test", "granularity": "turn", "reducer": "sum"})
    w.add_column("quality", [[1.0]] * (n + 120), {"kind": "test", "granularity": "turn", "reducer": "sum"})
    w.select(method="deita", name="d", max_cosine_similarity=0.9)
    found = rejected_neighbours(w, "d", k=1, limit=None, index="hnsw", ef=1)
    assert len(found) >= 100
    assert all(f["neighbours"][0]["similarity"] >= f["similarity"] - 1e-6 for f in found)
