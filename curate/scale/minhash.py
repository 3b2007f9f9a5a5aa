"""MinHash LSH near-duplicates on Ray Data, with the decisions of the ``minhash`` selector.

The selector (:func:`curate.select.dedup.minhash_dedup`) walks the rows in pool order and calls a row a
near-duplicate when a row KEPT before it shares an LSH band bucket with it and their MinHash Jaccard
estimate is >= ``threshold`` (witness: the highest estimate, ties by the larger id). Here:

1. signatures in Ray tasks (``map_batches``): datasketch's ``MinHash`` of the row's word shingles, with
   the selector's text, shingles, ``num_perm`` and ``seed``;
2. band bucketing as a Ray Data groupby: every row emits one key per band of datasketch's own band layout
   (``curate.select.dedup.lsh_index(...).hashranges``), ``groupby(key).aggregate(AsList(order))``; only
   buckets of two or more rows come back;
3. on the driver, the greedy walk over the candidate pairs only: rows in no shared bucket are kept
   without a look; the others are compared (exact count of equal hash values, as ``MinHash.jaccard``)
   with the bucket-mates kept before them.

The candidates of a row are the same as the selector's (LSH query = rows sharing a bucket, restricted to
kept rows), so the decisions are identical. Driver memory: the signatures of rows that share a bucket
(``num_perm`` x 8 bytes each), not the pool's.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from curate.codes import Decision, Reason
from curate.defaults import MINHASH

BAND_INDEX_BYTES = 2


def _signatures(table, skip: frozenset, text: str, shingle: int, num_perm: int, seed: int):
    """``map_batches``: (order, signature bytes) of the rows not in ``skip``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from curate.rows import row_text
    from curate.scale.sources import ROW, conversations
    from curate.select.dedup import shingle_minhash

    table = table.filter(pc.equal(table["kind"], ROW))
    orders, sigs = [], []
    for order, conv in zip(table["order"].to_pylist(), conversations(table), strict=True):
        if order in skip:
            continue
        mh = shingle_minhash(row_text(conv, text), shingle, num_perm, seed)
        orders.append(order)
        sigs.append(mh.hashvalues.astype(np.uint64).tobytes())
    return pa.table({"order": pa.array(orders, pa.int64()), "sig": pa.array(sigs, pa.binary())})


def _bands(table, hashranges: list[tuple[int, int]]):
    """``map_batches``: one (band key, order) row per band of every signature."""
    import pyarrow as pa

    keys, orders = [], []
    for order, sig in zip(table["order"].to_pylist(), table["sig"].to_pylist(), strict=True):
        values = np.frombuffer(sig, dtype=np.uint64)
        for b, (start, end) in enumerate(hashranges):
            keys.append(b.to_bytes(BAND_INDEX_BYTES, "big") + values[start:end].tobytes())
            orders.append(order)
    return pa.table({"band": pa.array(keys, pa.binary()), "order": pa.array(orders, pa.int64())})


def _shared(table):
    """``map_batches``: the buckets holding two rows or more."""
    import pyarrow.compute as pc

    return table.filter(pc.greater(pc.list_value_length(table["list(order)"]), 1))


def _pick(table, wanted: frozenset):
    import pyarrow as pa

    keep = [o in wanted for o in table["order"].to_pylist()]
    return table.filter(pa.array(keep, pa.bool_()))


PARAMS = ("threshold", "text", "shingle", "num_perm", "seed", "false_positive_weight")  # the selector's (MINHASH's)


def minhash_dedup(engine, ws, *, name: str = "minhash", input_selection: str | None = "dedup", **params: Any):
    """Near-duplicates among ``input_selection``'s kept rows (all rows when None), stored as selection
    ``name`` exactly as ``ws.select(method="minhash", ...)`` with these parameters would store it: ``params`` are
    among ``PARAMS`` (the others: their ``MINHASH`` defaults), recorded as given, as the selector records its
    caller's (a run's step gives none).

    ``engine``: a :class:`curate.scale.RayEngine` whose ``load`` read this workspace's pool."""
    from ray.data.aggregate import AsList

    from curate.select.dedup import lsh_index

    if unknown := sorted(set(params) - set(PARAMS)):
        raise TypeError(f"minhash_dedup() got unexpected keyword argument(s) {unknown}; it takes {list(PARAMS)}")
    threshold, text, shingle, num_perm, seed, false_positive_weight = (
        params.get(key, getattr(MINHASH, key)) for key in PARAMS)
    orders = engine.pool_orders(ws)
    ids = ws.ids
    if input_selection is None:
        rows = np.arange(len(ids))
    else:
        index = ws.index
        rows = np.sort(np.array([index[r] for r in ws.selection(input_selection).ids], dtype=np.int64))
    inside = np.zeros(len(ids), bool)
    inside[rows] = True
    skip = frozenset(orders[~inside].tolist())
    lsh = lsh_index(threshold, num_perm, false_positive_weight)
    hashranges = [tuple(r) for r in lsh.hashranges]
    with engine.stage():
        sigs = engine.rows().map_batches(_signatures, batch_format="pyarrow", fn_kwargs={
            "skip": skip, "text": text, "shingle": shingle, "num_perm": num_perm, "seed": seed}).materialize()
        buckets = [b["list(order)"] for b in
                   sigs.map_batches(_bands, batch_format="pyarrow", fn_kwargs={"hashranges": hashranges})
                   .groupby("band", num_partitions=engine.partitions()).aggregate(AsList("order"))
                   .map_batches(_shared, batch_format="pyarrow").iter_rows()]
        wanted = frozenset(o for bucket in buckets for o in bucket)
        signature = {int(r["order"]): np.frombuffer(r["sig"], dtype=np.uint64) for r in
                     sigs.map_batches(_pick, batch_format="pyarrow", fn_kwargs={"wanted": wanted}).iter_rows()} \
            if wanted else {}
    position = {int(o): p for p, o in enumerate(orders.tolist())}
    mates: dict[int, set[int]] = defaultdict(set)  # pool position -> positions sharing a bucket with it
    for bucket in buckets:
        members = [position[int(o)] for o in bucket]
        for p in members:
            mates[p].update(members)
    kept: set[int] = set()
    decisions, reasons, details = [], [], []
    for p in rows.tolist():
        hits = []
        for q in mates.get(p, ()):
            if q in kept:  # kept rows are all earlier in the walk
                j = float(np.float64(np.count_nonzero(signature[int(orders[q])] == signature[int(orders[p])]))
                          / np.float64(num_perm))
                if j >= threshold:
                    hits.append((j, ids[q]))
        if hits:
            j, witness = max(hits)
            decisions.append(Decision.DUPLICATE)
            reasons.append(Reason.NEAR_DUPLICATE)
            details.append({"witness": witness, "similarity": j, "threshold": threshold})
        else:
            kept.add(p)
            decisions.append(Decision.KEPT)
            reasons.append(Reason.SELECTED)
            details.append({})
    provenance: dict[str, Any] = {
        "method": "minhash", "params": params, "input_selection": input_selection, "step_of": None, "candidates": len(rows),
        "counts": dict(Counter(d.value for d in decisions)), "threshold": threshold, "shingle": shingle,
        "num_perm": num_perm, "false_positive_weight": false_positive_weight, "bands": lsh.b, "rows_per_band": lsh.r,
        "sort_by": None, "order": "pool",
        "engine": {"name": "ray", "shared_buckets": len(buckets), "rows_in_shared_buckets": len(wanted)}}
    return ws.add_selection(name, [ids[p] for p in rows.tolist()], decisions, reasons, details, provenance)
