"""Scale (issue 16): admission blocks sized to the budget, DEITA's own filter code beside ours, and
semantic dedup over an hnswlib kNN graph."""

import numpy as np
import pytest

from curate.select.admission import FIRST_BLOCK, MIN_BLOCK, REJECTED, admit, next_block, unit_rows
from curate.select.dedup import semantic_duplicates
from curate.session import Workspace
from tests.conftest import write_jsonl
from tests.test_select import brute_force, clustered, unit


def test_next_block_follows_the_budget_the_admitted_set_and_the_cap():
    assert next_block(4096, 2000, 0, 0, 0) == FIRST_BLOCK  # first block: small, the admitted set is empty
    assert next_block(4096, 10_000, 1500, 256, 250) == 1500  # grows with the admitted set
    assert next_block(4096, 10**6, 10**5, 1000, 900) == 4096  # never above block_size
    assert next_block(4096, 40, 1960, 1024, 1000) == MIN_BLOCK  # ~41 rows needed at rate ~0.98: the floor
    assert next_block(4096, 300, 5000, 999, 499) == 668  # rate (499+1)/(999+1): 300 / 0.5 * 1.1 + 8
    assert next_block(7, 10**6, 0, 0, 0) == 7 and next_block(1, 5, 100, 1, 1) == 1  # tiny blocks stay tiny


@pytest.mark.parametrize("budget", [1, 50, 333, 2000, None])
def test_budget_sized_blocks_examine_about_what_is_needed_and_stay_exact(budget):
    rng = np.random.default_rng(11)
    x = clustered(rng, 6000, 24, 300, 0.25)
    scores = rng.random(len(x))
    ids = np.array([f"r{i:05d}" for i in range(len(x))])
    want_dec, want_adm = brute_force(x, scores, ids, 0.9, budget)
    res = admit(x, scores, ids, 0.9, budget)
    assert np.array_equal(res.admitted, want_adm) and np.array_equal(res.decision, want_dec)
    needed = int((want_dec != 0).sum())  # rows the one-at-a-time loop examines
    assert needed <= res.stats["examined"] <= max(needed * 1.15 + 8, needed + MIN_BLOCK)
    rej = np.flatnonzero(res.decision == REJECTED)
    assert (np.einsum("ij,ij->i", x[rej].astype(np.float64), x[res.witness[rej]].astype(np.float64)) > 0.9).all()


def test_unit_rows_matches_the_float64_reference_bit_for_bit():
    rng = np.random.default_rng(12)
    base = unit(rng.standard_normal((3000, 384)))
    for x in (base, (base * (1 + rng.uniform(-2e-3, 2e-3, (3000, 1)))).astype(np.float32),
              (base * (1 + rng.uniform(-2e-7, 2e-7, (3000, 1)))).astype(np.float32), np.zeros((3, 384), np.float32)):
        ref = np.array(x, np.float32)
        norms = np.linalg.norm(ref.astype(np.float64), axis=1)
        off = np.flatnonzero((np.abs(norms - 1) > 1e-7) & (norms > 0))
        ref[off] = (ref[off].astype(np.float64) / norms[off, None]).astype(np.float32)
        assert np.array_equal(unit_rows(x).view(np.uint32), ref.view(np.uint32))


def test_same_ids_in_the_same_order_as_deitas_own_filter_code():
    """DEITA's ``Combined_Filter`` (hkust-nlp/deita, copied unchanged into evals/deita_reference) at its default
    batch size 1, on rows with continuous scores (no ties): the admitted ids and their order are ours."""
    pytest.importorskip("pandas")
    from evals.deita_reference.harness import frame, run_filter

    rng = np.random.default_rng(13)
    x = clustered(rng, 1500, 32, 60, 0.3)
    c, q = rng.uniform(1, 6, len(x)), rng.uniform(1, 6, len(x))
    for budget in (200, 700):
        res = admit(x, c * q, None, 0.9, budget)
        assert (res.decision == REJECTED).sum() > 20
        ids, _ = run_filter(frame(x, c, q), budget, 0.9, 1)
        assert np.array_equal(ids, res.admitted)


def test_hnsw_dedup_finds_the_planted_duplicates(tmp_path):
    """Planted near-copies (cosine ~0.999 to a source row) among random rows: the hnswlib path marks exactly
    the copies, each with a kept, earlier witness above the threshold, like the exact walk."""
    rng = np.random.default_rng(14)
    n, d = 3000, 64
    x = unit(rng.standard_normal((n, d)))  # random rows: far from each other (cosine ~ +-0.1)
    src = rng.choice(n - 600, 300, replace=False)
    x[n - 600:n - 300] = unit(x[src] + 0.05 * unit(rng.standard_normal((300, d))))  # first copies
    x[n - 300:] = unit(x[src] + 0.05 * unit(rng.standard_normal((300, d))))  # second copies
    group = unit(x[:1] + 0.02 * unit(rng.standard_normal((40, d))))  # a dense group of 40 near-copies of row 0
    x = np.concatenate([x, group])
    dup, wit, wsim, _, info = semantic_duplicates(unit_rows(x), 0.95, "hnsw", ef=32)
    assert info["index"] == "hnsw"
    assert set(np.flatnonzero(dup)) == set(range(n - 600, n + 40))
    assert (wit[dup] < np.flatnonzero(dup)).all() and not dup[wit[dup]].any() and (wsim[dup] > 0.95).all()
    assert set(wit[n - 600:n - 300]) == set(src)
    # through the selector: the same rows as the exact walk
    recs = [{"instruction": f"row {k}", "output": "ok"} for k in range(len(x))]
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", recs))
    w.add_embeddings("default", x, {"kind": "test"})  # pool order = file order = the walk order
    hnsw = w.select(method="semantic", name="h", duplicate_similarity=0.95, index="hnsw")
    exact = w.select(method="semantic", name="e", duplicate_similarity=0.95, index="exact")
    assert hnsw.decisions()["duplicate"] == exact.decisions()["duplicate"] == 640
    assert set(hnsw.ids) == set(exact.ids)
    row = next(r for r in hnsw.table.to_pylist() if r["decision"] == "duplicate")
    assert "witness" in row["detail"] and "similarity" in row["detail"]


def test_hnsw_dedup_counts_the_duplicates_its_graph_missed_on_a_checked_sample(tmp_path):
    """A query beam too small for the data (ef=1) leaves near duplicates kept: the walk said nothing of them. A
    seeded sample of kept rows is now checked against every earlier kept row, exactly: each miss it reports is real
    (brute force agrees), its estimate is near the true count, and with the default beam it finds none."""
    rng = np.random.default_rng(5)
    x = unit_rows(clustered(rng, 1500, 64, 600, 0.25))
    dup, _, _, _, info = semantic_duplicates(x, 0.9, "hnsw", ef=1)
    check = info["index_check"]
    kept = np.flatnonzero(~dup)
    x64 = x.astype(np.float64)
    truly = [k for k in kept.tolist() if (x64[kept[kept < k]] @ x64[k]).max(initial=-1) > 0.9]  # kept in error
    assert len(truly) > 20 and check["kept"] == len(kept) and check["checked"] == min(len(kept), 1000)
    assert check["missed"] > 0 and abs(check["estimated_missed"] - len(truly)) <= 0.3 * len(truly)
    for example in check["examples"]:  # a real miss: an earlier kept row above the threshold
        assert example["row"] in truly and not dup[example["kept_before"]] and example["kept_before"] < example["row"]
        assert x64[example["row"]] @ x64[example["kept_before"]] == pytest.approx(example["similarity"], abs=1e-6)
    good = semantic_duplicates(x, 0.9, "hnsw")[4]["index_check"]
    assert good["missed"] == good["estimated_missed"] == 0 and good["checked"] > 0
    # through the selector and the CLI: recorded in the selection, and said
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"row {k}", "output": "ok"} for k in range(len(x))]))
    w.add_embeddings("default", x, {"kind": "test"})
    sel = w.select(method="semantic", name="h", duplicate_similarity=0.9, index="hnsw", ef=1)
    assert sel.provenance["index_check"]["missed"] == check["missed"]
    from tests.cli_in_process import curate_in_process

    out = curate_in_process("select", str(tmp_path / "ws"), "--method", "semantic", "--name", "h2",
                            "--duplicate-similarity", "0.9", "--param", "index=hnsw", "--param", "ef=1")
    assert f"{check['missed']:,} of {check['checked']:,} kept rows checked" in " ".join(out.stdout.split())


def test_order_prefix_is_an_exact_prefix_of_the_examination_order():
    from curate.select.admission import examination_order, order_prefix

    rng = np.random.default_rng(11)
    for scores in (rng.random(5000), rng.integers(0, 20, 5000).astype(float)):  # continuous, and many ties
        scores[rng.choice(5000, 300, replace=False)] = np.nan
        scores[:3] = -np.inf
        ids = np.array([f"r{i:05d}" for i in rng.permutation(5000)])
        full = examination_order(scores, ids)
        for size in (1, 37, 600, 2400, 4000):
            prefix, complete = order_prefix(scores, ids, size)
            assert len(prefix) >= min(size, len(full)) and (prefix == full[:len(prefix)]).all()
            assert complete == (len(prefix) == len(full))


def test_walk_past_the_sorted_prefix_matches_brute_force():
    # a high rejection rate: the walk needs more than the first sorted prefix (2 x budget + 4,096 rows)
    rng = np.random.default_rng(12)
    base = rng.standard_normal((40, 8))
    x = base[rng.integers(0, 40, 12000)] + 0.05 * rng.standard_normal((12000, 8))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    scores = rng.random(12000)
    ids = np.arange(len(x))
    res = admit(x, scores, ids, 0.9, 60)
    assert res.stats["examined"] > 2 * 60 + 4096
    want_dec, want_adm = brute_force(x, scores, ids, 0.9, 60)
    assert np.array_equal(res.admitted, want_adm) and np.array_equal(res.decision, want_dec)
    assert np.array_equal(res.order, np.argsort(-scores))  # the whole order, on demand


def test_kmeans_dedup_of_rows_given_in_cluster_order_walks_each_cluster_by_walk_position():
    """Semantic dedup reads the vectors once, in row-id order (K-means' order), and walks them by their walk
    positions (old code read them in walk order and copied them into id order for K-means): K-means' clusters of
    the rows as given, and inside each the exact walk in walk order, bit for bit; one cluster is the exact walk."""
    from curate.defaults import SELECT
    from curate.select.clusters import fit_kmeans

    rng = np.random.default_rng(5)
    x = unit_rows(clustered(rng, 3000, 32, 60, 0.3))
    perm = rng.permutation(len(x))  # row i of x[perm] is walk position perm[i]
    dup, wit, wsim, labels, info = semantic_duplicates(x[perm], 0.9, n_clusters=7, walk=perm)
    assert info["n_clusters"] == 7 and dup.sum() > 100
    np.testing.assert_array_equal(labels[perm], fit_kmeans(x[perm], 7, SELECT.seed)[0].labels_)
    for c in range(7):
        members = np.flatnonzero(labels == c)  # walk positions, ascending
        want, want_wit, want_sim, _, _ = semantic_duplicates(x[members], 0.9, "exact")
        np.testing.assert_array_equal(dup[members], want)
        np.testing.assert_array_equal(wit[members], np.where(want, members[want_wit], -1))
        np.testing.assert_array_equal(wsim[members], want_sim)
    whole = semantic_duplicates(x[perm], 0.9, n_clusters=1, walk=perm)
    for a, b in zip(whole[:3], semantic_duplicates(x, 0.9, "exact")[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="walks the rows of x in their order"):
        semantic_duplicates(x, 0.9, "exact", walk=perm)
