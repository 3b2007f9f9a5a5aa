"""coverage_report's random selections draw from the rows the instag selector could pick: rows whose tagging failed
cover nothing, and drawing them made any selection of tagged rows look better than random. Tagged through the
project's fault-injecting server (tags: a query's first two words; ``[always400]``: a permanent HTTP error)."""

from __future__ import annotations

import pytest

from curate.errors import CurateWarning
from curate.session import Workspace
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer

TAGGED = ["alpha beta", "gamma delta", "epsilon zeta", "eta theta"]  # two tags a row, none shared
FAILED = [f"[always400] iota kappa {i}" for i in range(4)]


@pytest.fixture(scope="module")
def half_failed(tmp_path_factory) -> Workspace:
    """8 rows, 4 tagged and 4 whose tagging failed; selection "ins": instag, budget 2 (4 of the pool's 8 tags)."""
    from curate.llm.openai_backend import OpenAIBackend
    from curate.tags import Normalizer, Tagger, normalize

    tmp = tmp_path_factory.mktemp("half")
    ws = Workspace(tmp / "ws")
    ws.load(write_jsonl(tmp / "p.jsonl", [{"instruction": q, "output": "ok"} for q in TAGGED + FAILED]))
    with FaultServer() as srv:
        with pytest.warns(CurateWarning, match=r"tags_raw: 4 of the 8 rows computed now failed"):
            ws.apply(Tagger(OpenAIBackend(srv.base_url, "fault", api_key_env="HOME", max_retries=0)), progress=False)
    with pytest.warns(CurateWarning, match=r"tags: 4 of the 8 rows computed now failed"):
        normalize(ws, Normalizer(min_frequency=None, semantic=False, association=False))
    ws.select(method="instag", name="ins", budget=2)
    return ws


def test_the_random_baseline_draws_from_the_tagged_rows_and_says_so(half_failed):
    """The baseline drew 2 of all 8 rows, half of them failed: 16% ± 14% over these 20 seeds beside instag's 50%. Any
    2 tagged rows cover 4 of the 8 tags, as instag's do: the same coverage, no spread."""
    from curate.tags import coverage_report

    report = coverage_report(half_failed, "ins", seeds=20)
    assert report["coverage"] == 0.5
    assert report["random_coverage_mean"] == 0.5 and report["random_coverage_std"] == 0.0, report
    assert (report["random_pool_rows"], report["pool_rows"]) == (4, 8)
    assert "random_pool" not in report  # it was the constant "tagged rows": what the rows are is the key's meaning
    assert report["rows_untagged"] == 0
    assert "over 20 seeds of the 4 tagged rows of 8" in str(report), str(report)
    every = coverage_report(half_failed, half_failed.ids, seeds=3)  # a selection of failed rows too: counted, told
    assert every["rows_untagged"] == 4 and every["coverage"] == every["random_coverage_mean"] == 1.0, every


def test_the_coverage_figure_draws_random_tagged_rows(half_failed):
    """The report's coverage figure drew its random curve from every row too (mean 25% at 2 rows)."""
    from curate.report.plots import tag_coverage

    fig = tag_coverage(half_failed, "ins", random_draws=20)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["ins (50% at 2)", "random tagged rows, mean of 20 (50% at 2)"], labels


def test_the_coverage_figure_reads_the_tags_column_from_disk_once(half_failed, monkeypatch):
    """The figure read the tags column twice outside a report (its tag sets, then the tagged rows): on a 1M-row pool,
    a second read of the column from disk for nothing."""
    from curate.report.plots import tag_coverage
    from curate.storage import columns

    reads, aligned = [], columns._aligned
    monkeypatch.setattr(columns, "_aligned", lambda ws, path, ids: reads.append(path.name) or aligned(ws, path, ids))
    tag_coverage(half_failed, "ins", random_draws=2)
    assert len([name for name in reads if name.startswith("tags.")]) == 1, reads
