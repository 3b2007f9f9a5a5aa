"""InsTag's sampler on a large pool with few distinct tags: the same decisions as the plain sweep-everything loop,
without sweeping every remaining row again for each of the hundreds of sweeps such a pool needs."""

from __future__ import annotations

import random
from typing import Any

import pytest

from curate.tags.sampling import instag_sample


def sweep_everything(tag_lists, budget, ids):
    """The procedure as the paper words it (and as curate ran it before): every sweep visits every remaining row."""
    sets = [set(r) if r else set() for r in tag_lists]
    order = sorted(range(len(sets)), key=lambda i: (-len(sets[i]), ids[i]))
    remaining = [i for i in order if sets[i]]
    kept: list[int] = []
    taken: dict[int, dict[str, Any]] = {}
    passed_over: dict[int, int] = {}
    sweep = 0
    while remaining and len(kept) < budget:
        sweep += 1
        covered: set[str] = set()
        left = []
        for i in remaining:
            if len(kept) >= budget:
                break
            if new := sets[i] - covered:
                kept.append(i)
                covered |= sets[i]
                taken[i] = {"sweep": sweep, "tags": len(sets[i]), "new": len(new), "new_tags": sorted(new)[:5]}
            else:
                passed_over[i] = passed_over.get(i, 0) + 1
                left.append(i)
        remaining = left
    return kept, taken, passed_over


def pool(seed: int, n: int, vocab: int) -> list[list[str] | None]:
    rng = random.Random(seed)
    tags = [f"t{i}" for i in range(vocab)]
    weights = [1 / (i + 1) for i in range(vocab)]  # a few common tags, a tail of rare ones
    return [None if rng.random() < 0.05 else sorted(set(rng.choices(tags, weights, k=rng.randint(0, 5))))
            for _ in range(n)]


@pytest.mark.parametrize(("seed", "n", "vocab", "budget"),
                         [(0, 300, 12, 100), (1, 300, 40, 250), (2, 500, 8, 499), (3, 200, 30, 7), (4, 400, 25, 10_000)])
def test_the_sampler_decides_what_sweeping_every_row_decides(seed, n, vocab, budget):
    rows = pool(seed, n, vocab)
    ids = [f"r{random.Random(seed).randrange(10**6):06d}-{i}" for i in range(n)]
    sample = instag_sample(rows, budget, ids)
    kept, taken, passed_over = sweep_everything(rows, budget, ids)
    assert sample.kept == kept
    for p, detail in zip(sample.positions, sample.details, strict=True):
        if p in taken:
            assert detail == taken[p]
        elif rows[p]:
            assert detail.get("sweeps") == passed_over.get(p), p  # NO_NEW_TAG after k sweeps, or never reached


def test_a_large_pool_with_few_tags_is_not_swept_row_by_row_hundreds_of_times():
    # 30,000 rows, 30 tags, budget 6,000: ~490 sweeps of at most 30 rows kept each. Sweeping every remaining row in
    # each took 83 s on the project's 2-core machine (100,000 rows, budget 20,000: 11 min); a sweep that stops once no
    # row further on can add a tag looks at a few rows per sweep.
    rng = random.Random(0)
    tags = [f"t{i}" for i in range(30)]
    rows = [rng.sample(tags, rng.randint(1, 6)) for _ in range(30_000)]
    sample = instag_sample(rows, 6_000)
    assert len(sample.kept) == 6_000
    assert sample.details[0]["sweep"] == 1 and max(d.get("sweep", 0) for d in sample.details) > 400
    assert sample.visits < 2 * len(rows)  # sweeping everything: ~14 million visits
