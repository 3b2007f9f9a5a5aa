"""What a user meets reading a tagged workspace: the per-turn ``tags_raw`` named to the coverage report or a tag
figure, a tag column that is not there."""

from __future__ import annotations

import pytest

from curate.errors import CurateError
from curate.session import Workspace
from tests.cli_in_process import curate_in_process
from tests.conftest import ScriptedBackend, write_jsonl
from tests.tag_fixtures import tag_poetry_and_weather


@pytest.fixture
def tagged(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"Write poems about rain {i}.", "output": "ok"}
                                               for i in range(4)]))
    tag_poetry_and_weather(ws)
    ws.add_selection("first2", ws.ids, ["kept"] * 2 + ["rejected"] * 2, ["selected"] * 2 + ["not_sampled"] * 2,
                     [None] * 4, {"method": "test"})
    return ws


def test_the_coverage_report_and_the_tag_figures_refuse_the_per_turn_raw_tags(tagged):
    """coverage_report(tags_column="tags_raw") was a TypeError (unhashable type: 'list'); tag_sets and the tag figures
    drew each row's turn lists as one tag named "['poetry', 'weather']". The sampler refused it already."""
    from curate.report.plots import tag_coverage, tag_sets
    from curate.tags import coverage_report

    assert coverage_report(tagged, "first2")["coverage"] == 1.0  # the normalised column, as before
    assert tag_sets(tagged)[0] == {"poetry", "weather"}
    for call in (lambda: coverage_report(tagged, "first2", tags_column="tags_raw"),
                 lambda: tag_sets(tagged, "tags_raw"), lambda: tag_coverage(tagged, "first2", column="tags_raw")):
        with pytest.raises(CurateError, match="column 'tags_raw' holds tags per turn .* tags_column='tags'"):
            call()


def test_the_tag_coverage_figure_takes_tags_column_as_the_coverage_report_and_the_sampler_do(tagged):
    """A notebook user passing coverage_report's and the instag selector's ``tags_column=`` to plots.tag_coverage got
    a TypeError; its own ``column=`` still works, the two naming different columns are refused."""
    from curate.report.plots import tag_coverage

    by_new, by_old = tag_coverage(tagged, "first2", tags_column="tags"), tag_coverage(tagged, "first2", column="tags")
    assert [list(line.get_ydata()) for line in by_new.axes[0].get_lines()] == \
        [list(line.get_ydata()) for line in by_old.axes[0].get_lines()]
    with pytest.raises(CurateError, match="column 'tags_raw' holds tags per turn"):
        tag_coverage(tagged, "first2", tags_column="tags_raw")
    with pytest.raises(CurateError, match="give one"):
        tag_coverage(tagged, "first2", column="tags_raw", tags_column="tags")


def test_coverage_report_of_ids_not_in_the_pool_is_a_curate_error(tagged):
    """It was a bare KeyError: README's ``except CurateError`` missed it."""
    from curate.tags import coverage_report

    with pytest.raises(CurateError, match="no row with id 'nope' in the pool") as raised:
        coverage_report(tagged, [tagged.ids[0], "nope"])
    assert isinstance(raised.value, KeyError)  # a KeyError still, as before


def test_curate_tags_on_a_column_not_there_names_the_tag_columns_instead_of_asking_to_tag(tagged):
    """`curate tags WS --column nope` on a tagged workspace said "tag the pool first"."""
    run = curate_in_process("tags", tagged.path, "--column", "nope")
    err = " ".join(run.stderr.split())
    assert run.returncode != 0 and "no column 'nope'; the normalised tags are in 'tags' (--column NAME)" in err, err
    assert "tag the pool first" not in err


def test_a_pool_tagged_but_not_normalised_is_told_to_normalise_not_to_tag_again(tmp_path):
    """After `curate tag --no-normalize`, `curate tags` and the instag selector said "tag the pool first": a user
    following it paid for nothing new (the cache answers) and still had no tags column."""
    from curate.tags import Tagger

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "Write poems about rain.", "output": "ok"}]))
    ws.apply(Tagger(ScriptedBackend(lambda req: '{"tags": [{"tag": "poetry", "explanation": "a"}]}')), progress=False)
    run = curate_in_process("tags", ws.path)
    err = " ".join(run.stderr.split())
    assert run.returncode != 0 and "the judge's raw tags are in 'tags_raw', not normalised yet" in err, err
    assert f"curate tags {ws.path} --normalize" in err and "tag the pool first" not in err
    with pytest.raises(CurateError, match="not normalised yet"):
        ws.select(method="instag", name="it", budget=1)
