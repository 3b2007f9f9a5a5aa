"""Budgets and the codes of rows a budget leaves: one rule for a budget (at least 1 row) wherever it is given, an
unfilled budget said as data and in one CLI line, one code for "the budget filled first" whatever the selector
(selections written before read in it), refused rows told apart from rows never reached, and rejected rows shown
with why."""

import json

import numpy as np
import pyarrow as pa
import pytest

from curate.codes import Failure, FailureCode
from curate.errors import OptionError
from curate.session import Workspace
from curate.storage.files import write_arrow
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl

TURNS_SUM = {"kind": "test", "granularity": "turn", "reducer": "sum"}  # how judges and scorers declare DEITA scores
BUDGETED = ("deita", "top_k", "random", "kcenter", "kmeans", "lift")


@pytest.fixture
def ws(tmp_path):
    """20 rows with DEITA scores (row i scores 20 - i) and embeddings in which rows 1, 3 and 5 are near copies of
    rows 0, 2 and 4 (cosine ~0.995): deita at 0.9 refuses those three."""
    recs = [{"instruction": f"Question number {i} about topic {i % 7}?", "output": f"Answer {i}."} for i in range(20)]
    w = Workspace(tmp_path / "ws")
    w.load(write_jsonl(tmp_path / "pool.jsonl", recs))
    order = [w.index[w.ids[k]] for k in range(len(w))]  # positions are the pool's: scores by position
    rng = np.random.default_rng(7)
    x = rng.standard_normal((len(w), 32))
    for copy in (1, 3, 5):
        x[copy] = x[copy - 1] + 0.1 * rng.standard_normal(32) * np.linalg.norm(x[copy - 1]) / np.sqrt(32)
    w.add_embeddings("default", x / np.linalg.norm(x, axis=1, keepdims=True), {"kind": "test"})
    w.add_column("complexity", [[float(20 - p)] for p in order], TURNS_SUM)
    w.add_column("quality", [[1.0] for _ in order], TURNS_SUM)
    return w


def test_a_budget_under_one_row_is_refused_alike_by_every_selector_the_api_and_the_cli(ws, tmp_path):
    """`curate select --method top_k --budget 0` exited 0 keeping nothing, --budget -5 said '>= 0' (78), and curate
    run's --budget 0 said '>= 1': now every selector, ws.select, a chain's step, run_pipeline and curate select
    refuse a budget under 1 with one message (an OptionError, exit 78) naming budget= and --budget."""
    from curate.pipeline import run_pipeline

    message = (r"budget must be a whole number of rows, at least 1 \(--budget; budget= in Python\), not 0: "
               r"a budget of 0 keeps no row")
    for method in BUDGETED:
        with pytest.raises(OptionError, match=rf"^selector '{method}': {message}$"):
            ws.select(method=method, name="zero", budget=0)
    with pytest.raises(OptionError, match=message):
        ws.select(name="chain", steps=[{"method": "exact"}, {"method": "top_k", "budget": 0}])
    with pytest.raises(OptionError, match=r"at least 1 .*, not None$"):  # a required budget given as None: named too
        ws.select(method="top_k", name="none", budget=None)
    with pytest.raises(OptionError, match=message):
        run_pipeline(str(tmp_path / "pool.jsonl"), out=tmp_path / "run", budget=0, report=False)
    assert not any(name in ws.selections for name in ("zero", "chain", "none"))
    for budget in ("0", "-5"):
        proc = curate_in_process("select", ws.path, "--method", "top_k", "--budget", budget, "--name", "z")
        assert proc.returncode == 78, proc.stdout + proc.stderr
        assert (f"budget must be a whole number of rows, at least 1 (--budget; budget= in Python), not {budget}"
                in proc.stderr)
    assert "z" not in Workspace.open(ws.path).selections
    assert len(ws.select(method="deita", name="uncapped").ids) == 17  # deita without a budget: no cap, as before


def test_an_unfilled_budget_is_recorded_and_said_in_one_line(ws):
    """deita --budget 5000 on 3,955 rows kept 3,835 and curate select said nothing of the budget: the selection's
    provenance now records how the budget was used, and the CLI prints one line when it is not filled."""
    big = ws.select(method="deita", name="big", budget=50, max_cosine_similarity=0.9)
    assert big.provenance["budget_use"] == {"budget": 50, "kept": 17, "filled": False, "candidates": 20, "refused": 3,
                                            "not_reached": 0, "unscored": 0, "ran_out": True,
                                            "not_kept": {"too_similar": 3}}
    full = ws.select(method="top_k", name="full", budget=5)
    assert full.provenance["budget_use"]["filled"] and full.provenance["budget_use"]["not_reached"] == 15
    assert "budget_use" not in ws.select(method="threshold", name="t", min_score=1).provenance  # no budget

    proc = curate_in_process("select", ws.path, "--method", "deita", "--budget", "50", "--name", "big2",
                             "--max-cosine-similarity", "0.9")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "selection 'big2' (deita): 17 kept of 20 considered; 3 refused"
    assert lines[1] == ("budget 50 not filled: 17 kept; the 20 candidates ran out first "
                        "(not kept: 3 too similar to a kept row)")
    proc = curate_in_process("select", ws.path, "--method", "top_k", "--budget", "5", "--name", "full2")
    assert "not filled" not in proc.stdout
    assert proc.stdout.splitlines()[0] == ("selection 'full2' (top_k): 5 kept of 20 considered; "
                                           "15 not reached (budget filled first)")
    # rows without a score are named by the column and failure that left them none, as curate run names them
    ws.add_column("quality", [None] + [[1.0]] * 19, TURNS_SUM)  # row 0's quality judge failed: no score
    ws.add_column("quality_failure", [[Failure(FailureCode.NO_RESPONSE, "no reply", turn=1).to_dict()]] + [None] * 19,
                  {"kind": "failure"})
    proc = curate_in_process("select", ws.path, "--method", "deita", "--budget", "50", "--name", "big3",
                             "--max-cosine-similarity", "0.9")
    assert proc.stdout.splitlines()[1] == ("budget 50 not filled: 17 kept; the 20 candidates ran out first "
                                           "(not kept: 2 too similar to a kept row, 1 no score (quality: no response))")


def test_summaries_tell_refused_rows_from_rows_the_budget_never_reached(ws):
    """deita's summary said "N dropped" of rows mostly never reached (budget filled) and a few refused as too
    similar: Selection.outcomes() counts them apart, as the CLI's first line does."""
    sel = ws.select(method="deita", name="d", budget=8, max_cosine_similarity=0.9)
    assert sel.outcomes() == {"considered": 20, "kept": 8, "refused": 3, "not_reached": 9, "unscored": 0}
    assert set(sel.reasons()) == {("kept", "selected"), ("rejected", "too_similar"), ("not_reached", "budget_filled")}
    top = ws.select(method="top_k", name="top", budget=8)
    assert top.outcomes() == {"considered": 20, "kept": 8, "refused": 0, "not_reached": 12, "unscored": 0}


def _old_selection(ws, name: str, method: str, decisions: list[str], reasons: list[str]) -> None:
    """A selection file as curate wrote it before 2026-12 (add_selection's columns, codes as they were then)."""
    n = len(decisions)
    prov = {"name": name, "created": "2026-11-30T10:00:00+00:00", "method": method, "params": {"budget": 2},
            "input_selection": None, "candidates": n, "counts": {d: decisions.count(d) for d in set(decisions)}}
    details = [json.dumps({"score": float(n - i), "budget": 2}) for i in range(n)]
    table = pa.table({"id": pa.array(ws.ids[:n], pa.string()), "decision": pa.array(decisions, pa.string()),
                      "reason": pa.array(reasons, pa.string()), "detail": pa.array(details, pa.string()),
                      "rank": pa.array(range(n), pa.int64())})
    write_arrow(ws.path / "selections" / f"{name}.arrow",
                table.replace_schema_metadata({b"curate": json.dumps(prov).encode()}))


def test_a_selection_saved_with_the_old_budget_codes_reads_and_shows_todays(ws, tmp_path):
    """Selections saved before (top_k's rejected / budget_filled, kcenter's and random's rejected / not_sampled,
    kmeans' rejected / quota_filled) load, filter, feed a later selection and render as not_reached."""
    _old_selection(ws, "oldtop", "top_k", ["kept", "kept", "rejected", "rejected"], ["selected"] * 2 + ["budget_filled"] * 2)
    _old_selection(ws, "oldkc", "kcenter", ["kept", "kept", "rejected", "rejected"], ["selected"] * 2 + ["not_sampled"] * 2)
    _old_selection(ws, "oldkm", "kmeans", ["kept", "kept", "rejected", "rejected"], ["selected"] * 2 + ["quota_filled"] * 2)
    again = Workspace.open(ws.path)
    for name, reason in (("oldtop", "budget_filled"), ("oldkc", "budget_filled"), ("oldkm", "quota_filled")):
        sel = again.selection(name)
        assert sel.ids == ws.ids[:2]
        assert dict(sel.reasons()) == {("kept", "selected"): 2, ("not_reached", reason): 2}, name
        assert sel.outcomes()["not_reached"] == 2 and sel.outcomes()["refused"] == 0
        rows = sel.rows(decision="not_reached")
        assert [r["id"] for r in rows] == ws.ids[2:4] and rows[0]["reason"] == reason
        assert sel.rows(decision="rejected") == []
        assert sel.rows(reasons=["not_sampled"]) == []  # its rows are budget_filled now
        page = sel._repr_html_()
        assert "not_reached" in page and "not sampled" not in page and "rejected" not in page
    assert again.selection("oldkc").rows(decision="not_reached")[0]["why"] == "budget filled before this row (score 2.000)"
    proc = curate_in_process("info", ws.path)
    assert proc.returncode == 0, proc.stderr
    assert len(again.select(method="top_k", name="after", input_selection="oldkc", budget=1).ids) == 1


def test_kcenter_says_its_budget_filled_by_farthest_first_picks_not_by_score(ws):
    """kcenter --sort-by quality said 'budget filled before this row (score 5.968)', as if rows were ranked by score;
    only its first centre is the best-scored row, the others are each the farthest from those picked."""
    sel = ws.select(method="kcenter", name="kc", budget=5, sort_by="complexity")
    left = sel.rows(decision="not_reached")
    assert len(left) == 15 and all(r["reason"] == "budget_filled" for r in left)
    for r in left:
        detail = json.loads(r["detail"]) if isinstance(r["detail"], str) else r["detail"]
        assert r["why"] == (f"budget filled by farthest-first picks before this row (cosine distance "
                            f"{detail['distance']:.3f} to its nearest centre {detail['witness'][:12]})"), r
        assert "score" not in r["why"]


def test_show_gives_a_selections_rejected_rows_each_with_why(ws):
    """To see rejected rows one passed their ids, and the view did not say why each was rejected:
    ws.show(name, decision="rejected") gives them in rank order, each headed by its decision and reason."""
    ws.select(method="deita", name="d", budget=8, max_cosine_similarity=0.9)
    view = ws.show("d", decision="rejected", columns=[])
    refused = [r["id"] for r in ws.selection("d").rows(decision="rejected")]
    assert view.ids == refused and len(refused) == 3
    text, page = repr(view), view._repr_html_()
    assert text.startswith("selection 'd': 3 rejected\n")
    assert text.count("(rejected: too similar to a kept row (") == 3 and "cosine" in text
    assert page.count("rejected: too similar to a kept row") == 3
    two = ws.show("d", decision="not_reached", limit=2, columns=[])
    assert len(two) == 2 and repr(two).startswith("selection 'd': 9 not_reached, showing the first 2\n")
    assert "budget filled before this row" in repr(two)
    # "refused", as curate select and the report count it: rejected and duplicate rows, in rank order
    both = ws.show("d", decision="refused", columns=[])
    assert both.ids == refused and repr(both).startswith("selection 'd': 3 refused\n")
    with pytest.raises(OptionError, match="unknown decision 'ignored'"):
        ws.show("d", decision="ignored")
    with pytest.raises(OptionError, match="give a selection's name as rows"):
        ws.show([0, 1], decision="rejected")
    assert ws.show("d", columns=[]).ids == ws.selection("d").ids  # without decision: the kept rows, as before


def test_show_counts_a_decisions_rows_still_in_the_pool(ws):
    """ws.show(name, decision=...) shows the rows still in the pool, but counted every row of the decision: with
    two rejected rows gone (a re-run on an edited source), it said "3 rejected, showing the first 1" over all of
    them."""
    ws.select(method="deita", name="d", budget=8, max_cosine_similarity=0.9)
    refused = [r["id"] for r in ws.selection("d").rows(decision="rejected")]
    ws.keep_rows(set(ws.ids) - set(refused[:2]))
    view = ws.show("d", decision="rejected", columns=[])
    assert view.ids == refused[2:]
    assert repr(view).startswith("selection 'd': 1 rejected (2 more no longer in the pool)\n")
