"""The curation report, plots and notebook views, on a small synthetic workspace, checked in real headless Chromium."""

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from curate import Workspace
from curate.codes import Decision, Failure, FailureCode, Reason, reason_text
from curate.errors import CurateWarning, NotInWorkspaceError, WorkspaceError
from curate.report.html import build_report, report_html
from curate.report.plots import (
    DROPPED_COLOUR,
    KEPT_COLOUR,
    MissingInput,
    all_plots,
    embedding_map,
    figure_data_uri,
    plotted_values,
    score_histograms,
    source_breakdown,
    tag_coverage,
)
from curate.report.sections import selections_section
from curate.report.summary import failure_text, llm_usage, selection_summary, sources
from curate.report.views import selection_html
from curate.storage.step import StepOutput
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl

CHROMIUM = os.environ.get("CURATE_CHROMIUM", "/usr/bin/chromium")
HOSTILE = "<script>alert('x')</script> & <b>bold?</b>"
JUDGE = {"kind": "judge", "prompt_version": 1, "prompt_fingerprint": "ab12cd34ef56ab12",
         "model": "SmolLM2-135M-Instruct", "backend": "openai"}


class FakeJudge:
    """A turn Step (reducer ``sum``, as DEITA's judges) writing prepared per-turn scores and failures, and
    reporting one prepared stats dict (requests, tokens, cost) per run, as a judge does."""
    granularity = "turn"
    reducer = "sum"
    inputs = ()

    def __init__(self, column, values, failures=None, runs=()):
        self.column, self.values, self.fails, self.runs = column, values, failures or {}, list(runs)

    def fingerprint(self):
        return f"fake-{self.column}"

    def describe(self):
        return {**JUDGE, "judge": self.column, "prompt": self.column}

    def run(self, rows, ctx):
        ctx.progress.update(len(rows))
        return StepOutput([self.values[r.id] for r in rows], [self.fails.get(r.id, []) for r in rows],
                          stats=self.runs.pop(0) if self.runs else {})


def _run_stats(requests, cached, prompt, completion, cost):
    return {"requests": requests, "cached_requests": cached, "tokens": {"prompt": prompt, "completion": completion},
            "cost_usd": cost}


def synthetic_workspace(path: Path, n: int = 80) -> Workspace:
    """A pool of ``n`` rows (alpaca + sharegpt, two sources) with per-turn judge scores (applied as Steps, the
    complexity judge in two runs), failures, tags, embeddings and two selections stored with reason codes."""
    rng = np.random.default_rng(7)
    alpaca = [{"instruction": f"Task {i}: explain topic {i % 7}." + (f" {HOSTILE}" if i == 3 else ""),
               "input": "", "output": "" if i == 5 else f"Answer {i}\n  indented line\n{'long ' * (300 if i == 1 else 3)}",
               "source": "wiki" if i % 3 else "forum"} for i in range(n // 2)]
    sharegpt = [{"conversations": [{"from": "human", "value": f"Chat {i}, first question"}, {"from": "gpt", "value": f"reply {i}"},
                                   {"from": "human", "value": "and a follow-up"}, {"from": "gpt", "value": "second reply"}],
                 "source": "chat"} for i in range(n - n // 2)]
    ws = Workspace(path)
    ws.load(write_jsonl(path.parent / "alpaca.jsonl", alpaca))
    ws.load(write_jsonl(path.parent / "sharegpt.jsonl", sharegpt))
    ids = ws.ids
    n_turns = [len(t) for t in ws.turns()]
    complexity, c_fail, quality, q_fail = {}, {}, {}, {}
    for i, (rid, k) in enumerate(zip(ids, n_turns, strict=True)):
        if i % 11 == 4:  # no score: a multi-turn row fails the same way on both turns (shown once)
            complexity[rid] = [None] * k
            code, msg = ((FailureCode.LOW_DIGIT_MASS, "digit mass 0.12 below floor 0.5") if k > 1 or i % 2
                         else (FailureCode.TRANSIENT, "timeout: no answer after 60 s"))
            c_fail[rid] = [Failure(code, msg, None, t + 1) for t in range(k)]
        else:
            complexity[rid] = [float(rng.uniform(1, 6)) for _ in range(k)]
        quality[rid] = [float(rng.uniform(1, 6)) for _ in range(k)]
        if k > 1 and i % 9 == 0:
            quality[rid][-1] = None
            q_fail[rid] = [Failure(FailureCode.UNPARSABLE, "no digit in output", HOSTILE, k)]
    half = len(ids) // 2
    with pytest.warns(CurateWarning, match=r"complexity: 4 of the 40 rows computed now failed"):  # on purpose
        ws.apply(FakeJudge("complexity", complexity, c_fail, [_run_stats(half, 1, 40_000, half, 0.01),
                                                              _run_stats(len(ids) - half, 2, 1_234, len(ids) - half, 0.0023)]),
                 ids[:half], progress=False)
    with pytest.warns(CurateWarning, match=r"complexity: 5 of the 42 rows computed now failed"):
        ws.apply(FakeJudge("complexity", complexity, c_fail, [_run_stats(len(ids) - half, 2, 1_234, len(ids) - half, 0.0023)]),
                 progress=False)
    with pytest.warns(CurateWarning, match=r"quality: 4 of the 80 rows computed now failed"):
        ws.apply(FakeJudge("quality", quality, q_fail, [_run_stats(len(ids), 0, 50_000, 99, 0.02)]), progress=False)
    vocab = [f"tag{k}" for k in range(25)]
    ws.add_column("tags", [sorted({vocab[int(x)] for x in rng.integers(0, 25, rng.integers(0, 4))}) for _ in ids],
                  {"kind": "tagger", "method": "synthetic", "granularity": "row"})
    ws.add_column("length", [float(len(str(c))) for c in ws.conversations()], {"kind": "scorer", "method": "chars"})
    centres = rng.normal(size=(4, 16))
    vectors = centres[rng.integers(0, 4, len(ids))] + 0.3 * rng.normal(size=(len(ids), 16))
    ws.add_embeddings("default", vectors / np.linalg.norm(vectors, axis=1, keepdims=True), {"model": "synthetic"})
    order = list(rng.permutation(len(ids)))
    decisions, reasons, details = [], [], []
    for k, pos in enumerate(order):
        if k < 20 and pos % 5:
            decisions.append(Decision.KEPT), reasons.append(Reason.SELECTED), details.append({"score": 30.0 - k})
        elif k < 30:
            decisions.append(Decision.REJECTED), reasons.append(Reason.TOO_SIMILAR)
            details.append({"similarity": 0.9 + (k % 10) / 100 + 0.001, "witness": ids[order[0]],
                            "max_cosine_similarity": 0.9})
        elif k % 2:
            decisions.append(Decision.UNSCORED), reasons.append(Reason.NO_SCORE)
            details.append({"column": "complexity", "failure": "low_digit_mass"})
        else:
            decisions.append(Decision.NOT_REACHED), reasons.append(Reason.BUDGET_FILLED), details.append({"budget": 20})
    ws.add_selection("exact_dedup", ids, [Decision.KEPT] * len(ids), [Reason.SELECTED] * len(ids), [None] * len(ids),
                     {"method": "exact", "params": {"text": "conversation"}, "input_selection": None,
                      "candidates": len(ids), "counts": {"kept": len(ids)}})
    ws.add_selection("deita", [ids[p] for p in order], decisions, reasons, details,
                     {"method": "deita", "params": {"budget": 20, "max_cosine_similarity": 0.9},
                      "input_selection": "exact_dedup", "candidates": len(ids),
                      "counts": {"kept": 17, "rejected": 13, "not_reached": len(ids) - 30},
                      "steps": [{"method": "exact_dedup", "rows_in": len(ids), "kept": len(ids), "dropped": 0},
                                {"method": "deita", "tau": 0.9, "kept": 17, "dropped": 63}],
                      "sort_by": "complexity*quality " + "with a long explanation of the sort key " * 6})
    return ws


def test_plots_and_missing_inputs(tmp_path):
    ws = synthetic_workspace(tmp_path / "ws")
    plots = all_plots(ws)
    assert [t for t, fig, missing in plots if fig is None] == []
    assert "rows by source" in [t for t, _, _ in plots]
    uri = figure_data_uri(source_breakdown(ws, "deita"))
    png = base64.b64decode(uri.split(",", 1)[1])
    assert uri.startswith("data:image/png;base64,") and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure_data_uri(embedding_map(ws, "deita"), format="svg").startswith("data:image/svg+xml;base64,")
    # a bare workspace: every plot says what is missing, none raises
    bare = Workspace(tmp_path / "bare")
    bare.load(write_jsonl(tmp_path / "one.jsonl", [{"instruction": "hi", "output": "hello"}, {"instruction": "a", "output": "b"}]))
    missing = {t: m for t, fig, m in all_plots(bare)}
    assert "curate embed" in missing["embedding map"]
    assert "tag coverage" not in missing and "score" in missing["score histograms"]  # no tags: see below
    assert missing["complexity x quality"].endswith("this workspace has none: score the pool first")
    bare.add_column("complexity", [2.0, 3.0], {"kind": "test"})  # a run that selected by complexity alone
    missing = {t: m for t, fig, m in all_plots(bare)}
    assert missing["complexity x quality"].endswith("this workspace has complexity only")  # not "score the pool"
    # format breakdown works on any pool, and is captioned by what it counts
    assert missing["rows by format"] is None and "rows by source" not in missing
    with pytest.raises(NotInWorkspaceError, match="no workspace at"):  # opening makes nothing: nothing to report
        build_report(Workspace(tmp_path / "nothing"), tmp_path / "nothing.html")
    made = Workspace(tmp_path / "empty")
    with made.lock():  # a write makes the workspace, still without a pool
        pass
    empty = build_report(made, tmp_path / "empty.html").read_text()
    assert "has no pool yet" in empty and "<img" not in empty
    bare.add_embeddings("default", np.eye(2, 4), {"model": "synthetic"})
    bare.load(write_jsonl(tmp_path / "two.jsonl", [{"instruction": "new", "output": "row"}]))
    assert f"run `curate embed {bare.path}`" in dict((t, m) for t, _, m in all_plots(bare))["embedding map"]
    with pytest.raises(MissingInput, match="no selection"):
        tag_coverage(ws, ["nope"])
    one = tag_coverage(ws, "deita")  # one selection by name, as embedding_map takes it
    assert [t.get_text().split(" (")[0] for t in one.axes[0].get_legend().get_texts()][0] == "deita"


def test_the_score_plots_draw_the_derived_scores_never_a_pool_field_of_their_name(tmp_path):
    """After a run on a pool with its own numeric `quality` field (the run writes quality_score), score_scatter(ws)
    drew the field. The plots follow the selectors' rule (curate.storage.roles), and say so when it is ambiguous."""
    from curate.report.plots import score_scatter

    ws = Workspace(tmp_path / "ws")
    ws.load([{"instruction": f"task {i}", "output": f"answer {i}", "quality": 9 - i} for i in range(4)])
    scorer = {"kind": "scorer", "granularity": "turn", "reducer": "sum"}
    ws.add_column("complexity", [[1.0 + i] for i in range(4)], {**scorer, "imitates": "complexity"})
    ws.add_column("quality_score", [[4.0 - i / 2] for i in range(4)], {**scorer, "imitates": "quality"})
    ws.add_column("ifd", [0.5 + i / 10 for i in range(4)], {"kind": "test"})
    assert score_scatter(ws).axes[0].get_ylabel().split(" (jittered")[0] == "quality_score"
    drawn = {title: fig for title, fig, _ in all_plots(ws)}
    assert drawn["complexity x quality_score"] is not None
    assert drawn["IFD x quality"].axes[0].get_ylabel().split(" (jittered")[0] == "quality_score"
    ws.add_column("quality_judge", [[3.0]] * 4, {**scorer, "kind": "judge", "prompt": "quality"})
    missing = {title: why for title, _, why in all_plots(ws)}
    assert "2 derived columns hold quality scores: quality_judge" in missing["complexity x quality"]


def _legend_colours(fig) -> dict[str, set[str]]:
    """Legend label word (kept / dropped) -> the colours drawn for it, over every axis of ``fig``."""
    from matplotlib.colors import to_hex

    out: dict[str, set[str]] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            role = label.split()[0]
            if role not in ("kept", "dropped"):
                continue
            handle = handle.patches[0] if hasattr(handle, "patches") else handle  # a bar chart's container
            colour = handle.get_facecolor() if hasattr(handle, "get_facecolor") else handle.get_color()
            colour = np.atleast_2d(colour)[0] if not isinstance(colour, str) else colour
            out.setdefault(role, set()).add(to_hex(colour))
    return out


def test_kept_and_dropped_have_one_colour_in_every_plot(tmp_path):
    ws = synthetic_workspace(tmp_path / "ws")
    seen: dict[str, set[str]] = {}
    for title, fig, missing in all_plots(ws, "deita"):
        assert fig is not None, (title, missing)
        for role, colours in _legend_colours(fig).items():
            seen.setdefault(role, set()).update(colours)
    assert seen["kept"] == {KEPT_COLOUR} and seen["dropped"] == {DROPPED_COLOUR}


def test_selection_summary_groups_reasons(tmp_path):
    ws = synthetic_workspace(tmp_path / "ws")
    s = selection_summary(ws.selection("deita"))
    groups = {(g["decision"], g["label"]): g["count"] for g in s["groups"]}
    assert s["kept"] + s["dropped"] == s["considered"] == len(ws)
    assert groups[("rejected", "too similar to a kept row")] == s["by_decision"]["rejected"]
    assert ("not_reached", "budget filled before this row") in groups
    assert ("unscored", "no score") in groups
    with pytest.raises(ValueError):  # a row without a reason code cannot be stored, so the report never guesses one
        ws.add_selection("bad", ws.ids[:1], ["kept"], [None], [None], {"method": "x"})
    out = s["outcomes"]  # the heading counts refused rows apart from those the budget never reached
    heading = re.search(r"<h3>deita: [^<]*</h3>", selections_section(ws)).group(0)
    assert out["refused"] == s["by_decision"]["rejected"] and out["not_reached"] > 0
    assert f"{out['refused']:,} refused, {out['not_reached']:,} not reached (budget filled first)" in heading
    assert "dropped" not in heading
    made = ws.select(method="deita", name="budgeted", budget=5)  # its budget_use: the heading's counts, not again
    assert made.provenance["budget_use"]["budget"] == 5 and "budget_use" not in selections_section(ws)
    html = ws.selection("deita")._repr_html_()  # the notebook shows the report's view of a selection
    assert "too similar to a kept row" in html and "kept" in html and "rows in rank order" in html
    view = selection_html(ws.selection("deita"), head=3)
    assert "cosine" in view and "<th>rank</th>" in view and "<td class='n'>1</td>" in view  # ranks count from 1


def test_llm_usage_reads_what_judges_write(tmp_path):
    usage = {u["column"]: u for u in llm_usage(synthetic_workspace(tmp_path / "ws"))}
    assert set(usage) == {"complexity", "quality"}  # failure columns and scorer columns are not judges
    assert (usage["complexity"]["prompt_tokens"], usage["complexity"]["cached"], usage["complexity"]["failures"]) == (41_234, 3, 7)
    assert usage["complexity"]["runs"] == 2 and usage["complexity"]["cost_usd"] == pytest.approx(0.0123)
    assert usage["quality"]["prompt_tokens"] == 50_000 and usage["quality"]["cost_usd"] == 0.02


def test_unknown_cost_is_unknown_not_free(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(4)]))
    ids = ws.ids
    judge = FakeJudge("complexity", {rid: [2.0] for rid in ids},
                      runs=[_run_stats(2, 0, 100, 2, 0.5), _run_stats(2, 0, 120, 2, None)])  # second model: no price
    ws.apply(judge, ids[:2], progress=False)
    ws.apply(judge, progress=False)
    (u,) = llm_usage(ws)
    assert (u["runs"], u["prompt_tokens"], u["completion_tokens"], u["cost_usd"]) == (2, 220, 4, None)
    page = report_html(ws)
    judges = page[page.index("paid LLM steps"):page.index("all derived columns")]
    assert "unknown" in judges and "$0" not in judges and "$0.5" not in judges


def test_selection_chain_table_follows_input_selections(tmp_path):
    page = report_html(synthetic_workspace(tmp_path / "ws"), selection="deita")
    chain = page[page.index("steps, in order"):]
    assert chain.index("exact_dedup") < chain.index("deita") and "<td class='n'>17</td>" in chain


def test_the_report_highlights_the_newest_of_two_selections_made_in_one_second(tmp_path):
    """``created`` was kept to the second and ties went to the name: of "z_first" and then "a_second", made in
    one second, the report highlighted the older one."""
    from curate.report.summary import default_selection

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"row {i}", "output": "ok"} for i in range(4)]))
    for _ in range(3):  # three tries, so that one pair lands in one second
        ws.select(method="exact", name="z_first")
        ws.select(method="exact", name="a_second")
        assert default_selection(ws) == "a_second"


def test_parameters_are_pairs_never_json_nor_cut_mid_word(tmp_path):
    page = report_html(synthetic_workspace(tmp_path / "ws"), selection="deita")
    line = re.search(r"<p class='sub params'>method deita; (.*?)</p>", page).group(1)
    assert "<span>budget = 20</span>" in line and "<span>max_cosine_similarity = 0.9</span>" in line
    assert "tau = 0.9" in line and "{" not in line and "&quot;" not in line
    sort_by = re.search(r"<span>sort_by = (.*?)</span>", line).group(1)
    assert sort_by.endswith(" …") and sort_by[:-2].split()[-1] in "with a long explanation of the sort key".split()


def test_failures_grouped_by_code_and_deduped_per_row(tmp_path):
    from curate.report.summary import failure_summary

    ws = synthetic_workspace(tmp_path / "ws")
    s = failure_summary(ws, "complexity")
    by_code = {g["code"]: g for g in s["groups"]}
    assert s["failed_rows"] == 7 and set(by_code) == {FailureCode.LOW_DIGIT_MASS, FailureCode.TRANSIENT}
    assert sum(g["rows"] for g in s["groups"]) == 7
    two_turns = [e for e in by_code[FailureCode.LOW_DIGIT_MASS]["examples"] if "turns" in e["message"]]
    assert two_turns and two_turns[0]["message"] == "digit mass 0.12 below floor 0.5 (turns 1, 2)"
    assert failure_text([Failure(FailureCode.UNPARSABLE, "no score", None, 1),
                         Failure(FailureCode.UNPARSABLE, "no score", None, 2)]) == "no score (turns 1, 2)"
    quality = failure_summary(ws, "quality")
    (g,) = quality["groups"]
    assert g["code"] is FailureCode.UNPARSABLE and g["examples"][0]["raw"] == HOSTILE
    page = report_html(ws)
    assert "no score; no score" not in page and "low_digit_mass" in page


def test_a_source_loaded_twice_is_listed_once(tmp_path):
    ws = Workspace(tmp_path / "ws")
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(4)] + [{"instruction": "no reply yet"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    ws.load(path)
    ws.load(path)  # a re-run: nothing added, nor a manifest entry (a load repeating the last one is not recorded)
    (src,) = sources(ws)
    assert (src["loads"], src["rows_added_all"], src["rows_added"], src["already_present"]) == (1, 5, 5, 0)
    page = report_html(ws)
    sources_table = page[page.index("<h3>sources</h3>"):page.index("</table>", page.index("<h3>sources</h3>"))]
    assert sources_table.count(str(path)) == 1
    # the row without a response is counted apart from empty responses (the table showed 0 of either)
    header = re.findall(r"<th[^>]*>(.*?)</th>", sources_table)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", sources_table)
    assert cells[header.index("no response (instructions)")] == "1" and cells[header.index("empty responses")] == "0"


def test_per_turn_reducer_is_the_same_in_selection_and_plots(tmp_path):
    from curate.select.sort_key import row_scores

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [
        {"conversations": [{"from": "human", "value": "first"}, {"from": "gpt", "value": "one"},
                           {"from": "human", "value": "second"}, {"from": "gpt", "value": "two"}]},
        {"instruction": "single", "output": "turn"}]))
    ids = ws.ids
    two = next(k for k, t in enumerate(ws.turns()) if len(t) == 2)
    values = {ids[two]: [1.0, 2.0], ids[1 - two]: [1.0]}
    ws.apply(FakeJudge("complexity", values), progress=False)
    ws.apply(FakeJudge("quality", {ids[two]: [3.0, 4.0], ids[1 - two]: [5.0]}), progress=False)
    plotted = plotted_values(ws, "complexity")
    assert plotted[two] == 3.0  # Σ over turns, as declared; not the mean 1.5
    assert list(plotted) == ws.row_values("complexity") == list(row_scores(ws, "complexity", ids))
    # DEITA's key Σ_t c_t·q_t uses the same reducer: 1·3 + 2·4
    assert row_scores(ws, "complexity*quality", ids)[two] == 11.0
    fig = score_histograms(ws, ["complexity"])
    (ax,) = [a for a in fig.axes if a.patches]
    edges = [p.get_x() for p in ax.patches] + [ax.patches[-1].get_x() + ax.patches[-1].get_width()]
    assert min(edges) == pytest.approx(1.0) and max(edges) == pytest.approx(3.0)  # the histogram draws the sums


def _codes_workspace(path: Path) -> Workspace:
    """A small pool for the real selectors: exact duplicates, near-duplicate embeddings, one unscored row,
    rows without tags."""
    rng = np.random.default_rng(3)
    records = [{"instruction": f"Explain idea {i} in detail.", "output": f"Idea {i} is about {i * 7}."} for i in range(30)]
    records += [dict(records[i]) for i in (0, 1, 2)]  # exact repeats
    records += [{"instruction": f"Explain idea {i} in detail.  ", "output": f"Idea {i} is about {i * 7}.\r\n"}
                for i in (3, 4)]  # the same text but for trailing spaces and a CRLF
    ws = Workspace(path)
    ws.load(write_jsonl(path.parent / "codes.jsonl", records))
    ids = ws.ids
    scores = {rid: [float(rng.uniform(1, 6))] for rid in ids}
    unscored = ids[7]
    fails = {unscored: [Failure(FailureCode.LOW_DIGIT_MASS, "digit mass 0.1 below floor 0.5", None, 1)]}
    with pytest.warns(CurateWarning, match=r"complexity: 1 of the 35 rows computed now failed"):
        ws.apply(FakeJudge("complexity", {**scores, unscored: [None]}, fails), progress=False)
    ws.apply(FakeJudge("quality", {rid: [float(rng.uniform(1, 6))] for rid in ids}), progress=False)
    vectors = rng.normal(size=(len(ids), 16))
    vectors[::3] = rng.normal(size=16) + 0.05 * rng.normal(size=(len(vectors[::3]), 16))  # a third: near-duplicates
    ws.add_embeddings("default", vectors / np.linalg.norm(vectors, axis=1, keepdims=True), {"model": "synthetic"})
    tags = [[] if k % 6 == 0 else None if k % 6 == 1 else [f"t{k % 5}", f"t{k % 4}"] for k in range(len(ids))]
    ws.add_column("tags", tags, {"kind": "tagger", "granularity": "row"})
    return ws


def _section(page: str, name: str) -> str:
    start = page.index(f"<h3>{name}:")
    end = page.find("<h3>", start + 4)
    return page[start:end if end > 0 else None]


def test_report_groups_the_real_reason_codes_of_every_selector(tmp_path):
    ws = _codes_workspace(tmp_path / "ws")
    ws.select(method="exact", name="dedup")
    ws.select(method="deita", name="deita", input_selection="dedup", budget=8, max_cosine_similarity=0.9)
    ws.select(method="kmeans", name="km", budget=6, n_clusters=3)
    try:
        import curate.tags.sampling  # noqa: F401  (registers the instag selector)

        ws.select(method="instag", name="instag", budget=3)
        have_instag = True
    except ImportError:
        have_instag = False
    page = report_html(ws, selection="deita")
    for name in ws.selections:
        sel = ws.selection(name)
        s = selection_summary(sel)
        truth = Counter((r["decision"], r["reason"]) for r in sel.rows())
        assert {(g["decision"], g["reason"]): g["count"] for g in s["groups"]} == truth
        for g in s["groups"]:  # each group labelled by its own code, and so shown in the page
            assert g["label"] == reason_text(g["reason"])
            assert reason_text(g["reason"]).replace("'", "&#x27;") in _section(page, name)
    dedup = {(g["decision"], g["reason"]): g["count"] for g in selection_summary(ws.selection("dedup"))["groups"]}
    assert dedup[(Decision.DUPLICATE, Reason.EXACT_DUPLICATE)] == 5  # 3 repeats + 2 case/space variants
    deita = {(g["decision"], g["reason"]) for g in selection_summary(ws.selection("deita"))["groups"]}
    assert {(Decision.REJECTED, Reason.TOO_SIMILAR), (Decision.NOT_REACHED, Reason.BUDGET_FILLED),
            (Decision.UNSCORED, Reason.NO_SCORE)} <= deita
    km = selection_summary(ws.selection("km"))
    rejected = [g for g in km["groups"] if g["decision"] == Decision.NOT_REACHED]  # quota full: not reached
    assert rejected and all(g["reason"] is Reason.QUOTA_FILLED for g in rejected)
    assert "quota" in _section(page, "km") and "too similar" not in _section(page, "km")
    if have_instag:
        no_tags = Counter()  # no tags: rejected when tagged with none, unscored when never tagged
        for g in selection_summary(ws.selection("instag"))["groups"]:
            if g["reason"] is Reason.NO_TAGS:
                no_tags[g["decision"]] += g["count"]
        assert no_tags == {Decision.REJECTED: sum(t == [] for t in ws.column("tags")),
                           Decision.UNSCORED: sum(t is None for t in ws.column("tags"))}
        assert "no tags" in _section(page, "instag") and "no score" not in _section(page, "instag")


def test_show_and_workspace_html(tmp_path):
    ws = synthetic_workspace(tmp_path / "ws")
    view = ws.show([3, ws.ids[5]])
    html = view._repr_html_()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "(empty)" in html  # row 5 has an empty response
    assert ws.ids[3] in repr(view) and "[user] Task 3" in repr(view)
    sel_view = ws.show("deita", limit=4)
    assert len(sel_view) == 4 and "showing the first 4" in sel_view.note
    assert sel_view.ids == ws.selection("deita").ids[:4]
    with pytest.raises(KeyError):
        ws.show("no-such-id")
    multi = ws.show([ws.ids[-1]])  # a two-turn row: per-turn scores with their sum; failures in words, once
    assert "(sum " in repr(multi)
    failing = next(k for k in range(40, 80) if k % 11 == 4)
    text = repr(ws.show([failing]))
    assert "low_digit_mass: digit mass 0.12 below floor 0.5 (turns 1, 2)" in text and "'code'" not in text  # led by
    # its reason code, as the report and results group them (ws.show said the message alone)
    page = ws._repr_html_()
    for needle in ("complexity", "per-turn scores", "failing rows", "distinct", "deita"):
        assert needle in page
    assert ">7 (5 low_digit_mass, 2 transient)<" in page  # failing rows by reason code: it said "7" alone


def test_show_takes_numpy_positions_and_stats_flatten_per_turn_lists(tmp_path):
    from curate.report.summary import column_stats

    ws = synthetic_workspace(tmp_path / "ws")
    order = np.argsort([len(c[0]["content"]) for c in ws.conversations()])[:3]  # the way a notebook picks rows
    assert ws.show(order).ids == [ws.ids[int(k)] for k in order]
    assert ws.show(np.int64(2)).ids == [ws.ids[2]]
    with pytest.raises(IndexError):
        ws.show(np.int64(len(ws)))
    per_turn = [None] * len(ws)
    per_turn[0], per_turn[1] = [["a", "b", "c"], ["d", "e"]], [["a", "f", "g", "h"]]
    ws.add_column("turn_tags", per_turn, {"kind": "tags", "granularity": "turn"})
    stats = column_stats(ws, "turn_tags")
    assert (stats["kind"], stats["per_row"], stats["distinct"]) == ("list", 4.5, 8)
    ws.add_column("long_score", [10.5595] * len(ws), {"kind": "score"})
    page = ws._repr_html_()
    assert "4.5 per row, 8 distinct" in page
    assert "<td class='n'>10.56</td>" in page and "10.60" not in page


def test_a_row_of_hundreds_of_long_turns_shows_its_first_and_last_turns(tmp_path):
    """Each turn was clipped at 2,000 characters but every turn was shown, with every per-turn score: one 300-turn
    row was a notebook cell of 640,000 characters, and a report sample likewise."""
    turns = [{"from": "human" if k % 2 == 0 else "gpt", "value": f"turn {k} " + "word " * 600} for k in range(300)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"conversations": turns}, {"instruction": "short", "output": "ok"}]))
    ws.add_column("quality", [[float(k % 6) for k in range(150)], [3.0]],
                  {"kind": "score", "granularity": "turn", "reducer": "mean"})
    view = ws.show([0])
    html, text = view._repr_html_(), repr(view)
    for shown in (html, text):
        assert "turn 0 " in shown and "turn 9 " in shown and "turn 299 " in shown and "turn 150 " not in shown
        assert "(288 turns left out)" in shown
    assert len(html) < 40_000 and len(text) < 40_000
    ws.select(method="top_k", name="all", budget=2, sort_by="quality")
    page = report_html(ws, selection="all")
    assert "(288 turns left out)" in page and len(page) < 150_000
    from curate.report.tables import shown_turns

    for n, max_turns, shown in ((13, 12, 13), (14, 12, 13), (5, 1, 4), (4, 2, 4)):  # never "1 turns" nor "-1 turns"
        cut = shown_turns(turns[:n], max_turns)
        assert len(cut) == shown and (len(cut) == n or cut[-3]["content"] == f"({n - len(cut) + 1:,} turns left out)")


def test_importing_views_in_a_kernel_without_ipywidgets_warns_nothing(tmp_path):
    """The notebook's TqdmWarning: views, plots and a load + show + apply in a real kernel print no warning."""
    pytest.importorskip("jupyter_client")
    pytest.importorskip("ipykernel")
    from jupyter_client.manager import start_new_kernel

    write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(3)])
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r})\n"
            "import curate.report.views, curate.report.plots, curate.report.html\n"
            "from curate import Workspace\n"
            f"ws = Workspace({str(tmp_path / 'ws')!r}); ws.load({str(tmp_path / 'p.jsonl')!r})\n"
            "from tests.test_report import FakeJudge\n"
            "ws.apply(FakeJudge('complexity', {i: [1.0] for i in ws.ids}))\n"
            "print(len(ws.show(0)._repr_html_()) > 0, 'done')\n")
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(Path(__file__).parents[1]))
    out: list[str] = []
    try:
        msg_id = kc.execute(code)
        while True:
            msg = kc.get_iopub_msg(timeout=300)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(f"[{msg['content']['name']}] {msg['content']['text']}")
            elif msg["msg_type"] == "error":
                out.append(f"[error] {msg['content']['ename']}: {msg['content']['evalue']}")
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    text = "".join(out)
    assert "True done" in text, text
    assert "Warning" not in text and "IProgress" not in text, text


def _browser_required():
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"headless Chromium not found at {CHROMIUM}: CI must install the Debian package `chromium`")
    pytest.skip(f"no Chromium at {CHROMIUM} (install the Debian package `chromium`; required when CI is set)")


async def _inspect_page(url: str, screenshot: Path, profile: str, probe: str | None = None) -> dict:
    """Open ``url`` in headless Chromium over the DevTools protocol; collect errors, requests, image state (and the
    value of the JavaScript expression ``probe``, when given)."""
    import aiohttp

    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        ws_url = None
        while ws_url is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            if not line:
                raise RuntimeError("Chromium exited before opening DevTools")
            if m := re.search(r"DevTools listening on (ws://\S+)", line):
                ws_url = m.group(1)
        events: list[dict] = []
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as sock:
            counter = 0
            pending: dict[int, asyncio.Future] = {}
            load_fired = asyncio.Event()

            async def reader():
                async for msg in sock:
                    data = json.loads(msg.data)
                    if "id" in data and data["id"] in pending:
                        pending.pop(data["id"]).set_result(data)
                    else:
                        events.append(data)
                        if data.get("method") == "Page.loadEventFired":
                            load_fired.set()

            task = asyncio.create_task(reader())

            async def call(method, session=None, **params):
                nonlocal counter
                counter += 1
                fut = asyncio.get_running_loop().create_future()
                pending[counter] = fut
                msg = {"id": counter, "method": method, "params": params}
                if session:
                    msg["sessionId"] = session
                await sock.send_str(json.dumps(msg))
                reply = await asyncio.wait_for(fut, 60)
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

            target = (await call("Target.createTarget", url="about:blank"))["targetId"]
            session = (await call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                await call(f"{domain}.enable", session)
            await call("Page.navigate", session, url=url)
            await asyncio.wait_for(load_fired.wait(), 60)
            images = (await call("Runtime.evaluate", session, returnByValue=True, awaitPromise=True, expression="""
                Promise.all(Array.from(document.images).map(i => i.decode().then(() => 0, () => 0))).then(() =>
                  Array.from(document.images).map(i => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight,
                                                          complete: i.complete})))"""))["result"]["value"]
            headings = (await call("Runtime.evaluate", session, returnByValue=True,
                                   expression="Array.from(document.querySelectorAll('h2')).map(h => h.textContent)"))["result"]["value"]
            scripts = (await call("Runtime.evaluate", session, returnByValue=True,
                                  expression="document.scripts.length"))["result"]["value"]
            probed = probe and (await call("Runtime.evaluate", session, returnByValue=True,
                                            expression=probe))["result"].get("value")
            metrics = await call("Page.getLayoutMetrics", session)
            size = metrics["cssContentSize"]
            shot = await call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                              clip={"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000), "scale": 1})
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            task.cancel()
        return {"events": events, "images": images, "headings": headings, "scripts": scripts, "height": size["height"],
                "probe": probed}
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


def test_report_in_headless_chromium(tmp_path):
    _browser_required()
    ws = synthetic_workspace(tmp_path / "ws")
    out = build_report(ws, tmp_path / "report.html")
    page = out.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert re.search(r"(src|href)=['\"]?https?:", page) is None
    screenshot = Path(os.environ.get("CURATE_SCREENSHOT", tmp_path / "report.png"))
    with tempfile.TemporaryDirectory() as profile:
        result = asyncio.run(_inspect_page(out.resolve().as_uri(), screenshot, profile))
    events = result["events"]
    errors = [e for e in events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "warning", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] in ("error", "warning"))]
    assert errors == [], errors
    requested = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    assert requested and all(u.startswith(("file:", "data:")) for u in requested), requested
    assert result["scripts"] == 0
    images = result["images"]
    assert len(images) == 6, images  # histograms, scatter, embedding map, tag frequency, tag coverage, sources
    assert all(i["complete"] and i["w"] > 100 and i["h"] > 100 for i in images), images
    assert result["headings"][0] == "pool" and any(h.startswith("sample rows") for h in result["headings"])
    assert "exact_dedup" in page and "tau = 0.9" in page and "&quot;tau&quot;" not in page
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result["height"] > 2000


def test_report_cli_on_bare_workspace(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(4)]))
    r = curate_in_process("report", tmp_path / "ws", "--out", tmp_path / "r.html")
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "r.html").read_text()
    assert "no embeddings" in page and "no selection yet" in page and "no judge has scored" in page
    assert page.count("<img") == 1  # only the format breakdown can be drawn
    bad = curate_in_process("report", tmp_path / "nowhere")
    assert bad.returncode == 78 and "not a curate workspace" in bad.stderr and "Traceback" not in bad.stderr
    unknown = curate_in_process("report", tmp_path / "ws", "--selection", "nope", "--out", tmp_path / "r2.html")
    assert unknown.returncode == 78 and "no selection 'nope'" in unknown.stderr and "Traceback" not in unknown.stderr


def test_the_report_highlights_a_chains_final_step_and_cosines_of_raw_vectors(tmp_path):
    from curate.report.neighbours import rejected_neighbours
    from curate.report.summary import default_selection, selection_parameters

    ws = synthetic_workspace(tmp_path / "ws")
    ws.select(name="final", steps=[{"method": "threshold", "min_score": 0, "sort_by": "length"},
                                   {"method": "top_k", "budget": 5, "sort_by": "length"}])
    assert default_selection(ws) == "final"  # not final.1-threshold, created in the same second
    keys = [k for k, _ in selection_parameters(ws.selections["final"])]
    assert keys.count("sort_by") == 1
    ws.add_embeddings("default", 3.0 * ws.embeddings("default"), {"model": "synthetic, not unit length"})
    ws.select(method="deita", name="tripled", budget=20, max_cosine_similarity=0.9)
    listed = rejected_neighbours(ws, "tripled")
    assert listed and all(-1.0 <= n["similarity"] <= 1.0 + 1e-6 for r in listed for n in r["neighbours"])
    assert all(r["neighbours"][0]["similarity"] >= r["similarity"] - 1e-4 for r in listed)  # at least the witness


def test_a_report_over_a_folder_is_refused_before_the_page_is_built_and_leaves_nothing_behind(tmp_path):
    """`curate report --out r.html` where r.html was a folder built the whole page, failed renaming it
    ("Is a directory") and left .r.html.tmp beside it."""
    ws = synthetic_workspace(tmp_path / "ws")
    (tmp_path / "r.html").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(WorkspaceError, match="r.html: a folder, where the report.s HTML file is to be written"):
        build_report(ws, tmp_path / "r.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert build_report(ws, tmp_path / "out" / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_a_column_is_a_score_by_its_stored_type_numbers_or_per_turn_numbers_one_value_a_row(tmp_path):
    """What the report plots and summarises as scores (is_numeric reads the column's Arrow type, not each value)."""
    from curate.report.summary import column_stats, is_numeric, numeric_columns

    ws = synthetic_workspace(tmp_path / "ws")
    n = len(ws)
    cases = {  # column -> (values, declared reducer, a score?)
        "floats": ([None, 2.5] + [1.0] * (n - 2), None, True),
        "ints": ([3] * n, None, True),
        "turns_summed": ([[1.0, None], [2.0]] + [None] * (n - 2), "sum", True),
        "one_turn_each": ([[1.0], [2]] + [[]] * (n - 2), None, True),
        "two_turns_no_reducer": ([[1.0, 2.0]] + [None] * (n - 1), None, False),
        "texts": (["a"] * n, None, False),
        "flags": ([True] * n, None, False),
        "tag_lists": ([["a"]] * n, None, False),
        "nothing": ([None] * n, None, False),
    }
    for name, (values, reducer, _) in cases.items():
        ws.add_column(name, values, {"kind": "test", **({"reducer": reducer} if reducer else {})})
    assert {name: is_numeric(ws, name, reducer) for name, (_, reducer, _) in cases.items()} == {
        name: score for name, (_, _, score) in cases.items()}
    assert set(numeric_columns(ws)) >= {name for name, (_, _, score) in cases.items() if score}
    assert column_stats(ws, "turns_summed")["kind"] == "per-turn scores" and column_stats(ws, "texts")["kind"] == "text"
    # numbers per turn with no row value (a judge's digit mass on a pool with multi-turn rows) were described as a
    # tag list ("1.0 per row, 2 distinct"), on a single-turn pool as scores: described as numbers, over the turns
    two = column_stats(ws, "two_turns_no_reducer")
    assert two["kind"] == "per-turn numbers" and (two["mean"], two["min"], two["max"]) == (1.5, 1.0, 2.0)
    assert column_stats(ws, "tag_lists")["kind"] == "list"


def test_the_pool_cards_count_multi_turn_rows_and_rows_without_a_reply_part_by_part(tmp_path, monkeypatch):
    from curate.report import sections
    from tests.conftest import write_jsonl

    rows = [{"instruction": "one", "output": "a"}, {"instruction": "two", "output": "   "},
            {"instruction": "three"},
            {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "r1"},
                          {"role": "user", "content": "q2"}, {"role": "assistant", "content": "r2"}]},
            {"messages": [{"role": "user", "content": "p1"}, {"role": "assistant", "content": "s1"},
                          {"role": "user", "content": "p2"}]},
            {"instruction": "six", "output": "f"}]
    ws = Workspace(tmp_path / "ws", create=True)
    ws.load(write_jsonl(tmp_path / "p.jsonl", rows))
    monkeypatch.setattr(sections, "TURN_COUNT_ROWS", 2)  # three parts
    page = sections.pool_section(ws)
    cards = dict((k, v) for v, k in re.findall(r"<b>([\d,]+)</b><span>([^<]+)</span>", page))
    assert cards["multi-turn rows"] == "2" and cards["rows with an empty or missing response"] == "3"


def test_a_threshold_reason_shows_its_numbers_at_one_precision_and_apart():
    """The reason read '3.047 < 3.0485430793701176': the score rounded, the bound not."""
    from curate.codes import describe

    assert describe(Reason.BELOW_THRESHOLD, {"score": 3.047, "min_score": 3.0485430793701176}).endswith("(3.047 < 3.049)")
    assert describe(Reason.BELOW_THRESHOLD, {"score": 3.04851, "min_score": 3.0485430793701176}).endswith(
        "(3.04851 < 3.04854)")  # digits enough to tell them apart
    assert describe(Reason.BELOW_THRESHOLD, {"score": 2.0, "min_score": 4}).endswith("(2 < 4)")


def _odd_workspace(path: Path, complexity: list, quality: list | None = None, **rows) -> Workspace:
    """A pool of one row per complexity value, with those scores (and quality's) as derived columns."""
    ws = Workspace(path)
    ws.load([{"instruction": f"question {i}", "output": f"answer {i}", **{k: v[i] for k, v in rows.items()}}
             for i in range(len(complexity))])
    ws.add_column("complexity", complexity, {"kind": "test"})
    if quality is not None:
        ws.add_column("quality", quality, {"kind": "test"})
    return ws


def _plot_notes(page: str) -> dict[str, str | None]:
    """Each plot's caption -> its note (None when it is drawn)."""
    return {title: note or None for title, note in
            re.findall(r"<figcaption>([^<]*)</figcaption>(?:<p class='missing'>([^<]*))?", page)}


def test_a_score_range_wider_than_a_float_is_drawn_on_a_symlog_scatter_and_a_failing_plot_is_a_note(tmp_path, monkeypatch):
    """Complexity -1e308 .. 1e308 made the scatter fail (`arange: cannot compute length`) and that aborted the whole
    report with no file; any plot that still fails is a note naming it, its columns and the error."""
    import curate.report.plots as plots

    ws = _odd_workspace(tmp_path / "ws", [1e308, 1e308, -1e308, 5.0, 1.0, 2.0], [1e-6, 2e-6, 3e-6, 1e-6, 4e-6, 5e-6])
    import warnings

    with warnings.catch_warnings():  # nor does drawing it overflow on a linear axis first (a RuntimeWarning)
        warnings.simplefilter("error")
        fig = plots.score_scatter(ws)
        figure_data_uri(fig)
    assert fig.axes[0].get_xscale() == "symlog" and fig.axes[0].get_yscale() == "linear"
    assert fig.axes[0].get_xlim() == (-1e308, 1e308)  # the data's span, not matplotlib's default -1e-3..1e-3
    assert score_histograms(ws, ["complexity"]).axes[0].get_xlim() == (-1e308, 1e308)
    page = build_report(ws, tmp_path / "r.html").read_text()
    assert _plot_notes(page)["complexity x quality"] is None and "<img alt='complexity x quality'" in page

    def broken(*args, **kwargs):
        raise ValueError("arange: cannot compute length")

    monkeypatch.setattr(plots, "score_histograms", broken)
    notes = _plot_notes(build_report(ws, tmp_path / "r2.html").read_text())
    assert notes["score histograms"] == ("score histograms could not be drawn from columns complexity, quality: "
                                         "ValueError: arange: cannot compute length")
    assert notes["complexity x quality"] is None  # the other plots are drawn
    assert dict((t, m) for t, _, m in plots.all_plots(ws))["score histograms"].endswith("cannot compute length")
    monkeypatch.setattr(plots, "figure_data_uri", broken)  # a figure that cannot be rendered
    notes = _plot_notes(build_report(ws, tmp_path / "r3.html").read_text())
    assert notes["complexity x quality"].startswith("complexity x quality could not be drawn from columns complexity, "
                                                    "quality: ValueError")


def test_an_undefined_figure_is_a_dash_with_its_reason_and_extreme_numbers_keep_their_magnitude(tmp_path):
    """A held-out Spearman of constant labels showed "nan" in the report and in Scorer._repr_html_; fmt wrote 1e300 as
    404 digits, 4e-5 as "0" and -1e-9 as "-0"; money(nan) was "$nan"; the mean of 1e308, 1e308, -1e308 was inf."""
    from curate.report.summary import column_stats
    from curate.report.tables import fmt, money
    from curate.scorers.model import Scorer

    held = {"spearman": float("nan"), "kendall": None, "mae": 0.25, "n": 10, "spearman_ci95": [None, None],
            "no_figure": {"spearman": "labels_all_equal", "kendall": "labels_all_equal", "spearman_ci95": "too_few_groups"}}
    ws = _odd_workspace(tmp_path / "ws", [1e308, 1e308, -1e308, 5.0, 1.0, 2.0])
    ws.add_column("quality_score", [1.0] * 6, {"kind": "scorer", "imitates": "quality", "holdout_agreement": held})
    page = report_html(ws)
    cell = re.search(r"<td>quality_score</td><td>quality</td><td></td><td>([^<]*)</td>", page)
    assert cell and cell.group(1) == "- (held-out labels all equal)", cell
    scorer = Scorer(reads=["instruction"])
    scorer.metrics = {"holdout": {"scorer": held}}
    view = scorer._repr_html_()
    assert "nan" not in view.lower() and "spearman - (held-out labels all equal)" in view and "mae 0.250" in view
    assert "kendall - (held-out labels all equal)" in view and "spearman_ci95" not in view  # an interval: not a figure
    assert [fmt(v) for v in (1e300, 4e-5, -1e-9, -0.0, float("nan"), float("-inf"), 0.5, 1234.5)] == \
        ["1e+300", "4e-05", "-1e-09", "0", "–", "-∞", "0.5", "1,234.50"]
    assert money(float("nan")) == "unknown" and money(0.5) == "$0.5000"
    assert money(8.4e-05) == "$0.00008400" and money(0.0) == "$0.00"  # was $0.0000 for both: as the CLI says it
    stats = column_stats(ws, "complexity")
    assert stats["mean"] == pytest.approx(1e308 / 6 + 8 / 6) and np.isfinite(stats["mean"])


def test_wide_tables_scroll_in_their_box_and_long_names_are_cut_on_plot_axes(tmp_path):
    """The 17-column judges table ran past the page, a 2,000-character source value stretched its table, and the
    "rows by source" plot of it was a 21517 x 294 pixel picture."""
    import struct

    from curate.report.tables import css

    long_source = "s3://bucket/" + "x" * 2000
    ws = _odd_workspace(tmp_path / "ws", [1.0, 2.0, 3.0], [1.0, 2.0, 2.0], source=[long_source, "b", "$x$ price"])
    page = report_html(ws)
    assert page.count("<table class='curate'") == page.count("<div class='curate-scroll'><table class='curate'") > 3
    assert ".curate-scroll{overflow-x:auto" in css() and "table.curate td.long{overflow-wrap:anywhere" in css()
    assert f"<td class='long'>{long_source}</td>" in page and "<td>b</td>" in page  # short words never break
    assert "overflow-wrap:anywhere" in css().split(".curate-rows .vals .kv{")[1].split("}")[0]
    assert long_source in page  # the full name stays in the table
    fig = source_breakdown(ws)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks[0] == "s3://bucket/xxxxxxxxxxxxxx…xxxxxxxxxxxxx" and r"\$x\$ price" in ticks
    png = base64.b64decode(figure_data_uri(fig).split(",", 1)[1])
    width, height = struct.unpack(">II", png[16:24])
    assert width < 1000, (width, height)


def test_user_text_is_bidi_isolated_in_html_and_its_control_characters_are_escapes_in_text(tmp_path):
    """A U+202E in a row or a tag reversed curate's own text after it in HTML; ESC/BEL/OSC sequences in a row reached
    the terminal through repr(ws.show(...)) and `curate info`."""
    rlo, osc = "\u202e", "\x1b]0;owned\x07"
    src = write_jsonl(tmp_path / f"p{rlo}.jsonl", [{"instruction": f"q {rlo}reversed {osc}", "output": "x" * 50}])
    ws = Workspace(tmp_path / "ws")
    ws.load(src)
    ws.add_column("tags", [[f"tag{rlo}abc", "plain"]], {"kind": "test", "method": f"m{osc}"})
    from curate.report.views import show_rows

    page = show_rows(ws, [0], max_chars=20)._repr_html_()
    assert f"<bdi>q {rlo}reversed " in page and "</bdi>… (30 more characters)" in page  # curate's note outside
    assert f"<b><bdi>tags</bdi></b> <bdi>tag{rlo}abc, plain</bdi>" in page
    text = repr(ws.show([0]))
    assert "\x1b" not in text and "\x07" not in text and rlo not in text
    assert r"q \u202ereversed \x1b]0;owned\x07" in text
    r = curate_in_process("info", ws.path, env={**os.environ, "COLUMNS": "300"})
    assert r.returncode == 0, r.stderr
    assert "\x1b]0" not in r.stdout and "\x07" not in r.stdout and rlo not in r.stdout, r.stdout
    assert r"p\u202e.jsonl" in r.stdout


def test_a_windows_line_end_is_a_line_end_in_the_text_view():
    """The control characters' escapes showed every CR LF line end as ``\x0d``; a lone CR (it overwrites the line in
    a terminal) is still escaped."""
    from curate.report.tables import visible_controls

    assert visible_controls("Line one\r\nLine two\rover") == "Line one\nLine two\\x0dover"


class _DigitJudge:
    """A turn step (as DEITA's LLM judges) writing a score and a ``digit_mass`` side column per turn; a ``None`` score
    fails (one-turn rows)."""
    granularity, reducer, inputs = "turn", "sum", ()

    def __init__(self, column: str, values: list[float | None]):
        self.column, self.values = column, values

    def fingerprint(self):
        return f"digits-{self.column}"

    def describe(self):
        return {**JUDGE, "judge": self.column, "prompt": self.column}

    def run(self, rows, ctx):
        ctx.progress.update(len(rows))
        values = self.values[:len(rows)]
        return StepOutput([[v] for v in values],
                          [[] if v is not None else [Failure(FailureCode.TRANSIENT, "HTTP 500", None, 1)] for v in values],
                          extra={"digit_mass": [[0.9 if v is not None else None] for v in values]})


def test_a_judges_side_columns_are_never_plotted_as_scores_and_no_values_at_all_is_a_note(tmp_path):
    """Complexity alone from an LLM judge drew "complexity x complexity_digit_mass"; with every call failed the
    histograms were empty "no values" axes, digit mass among them."""
    ws = Workspace(tmp_path / "ws")
    ws.load([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(4)])
    ws.apply(_DigitJudge("complexity", [1.0, 2.0, 3.0, 4.0]), progress=False)
    assert "complexity_digit_mass" in ws.columns
    plots = {t: (fig, m) for t, fig, m in all_plots(ws)}
    assert plots["complexity x quality"][1].endswith("this workspace has complexity only")
    assert [ax.get_title() for ax in plots["score histograms"][0].axes if ax.axison] == ["complexity"]
    failed = Workspace(tmp_path / "failed")
    failed.load([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(4)])
    with pytest.warns(CurateWarning, match=r"complexity: 4 of the 4 rows computed now failed"):
        failed.apply(_DigitJudge("complexity", [None] * 4), progress=False)
    with pytest.warns(CurateWarning, match=r"quality: 4 of the 4 rows computed now failed"):
        failed.apply(_DigitJudge("quality", [None] * 4), progress=False)
    missing = {t: m for t, _, m in all_plots(failed)}
    assert missing["score histograms"] == ("no row has a value in complexity, quality: every row failed or was never "
                                           "scored (the failures section says why)")


def test_a_selection_that_keeps_no_row_says_so(tmp_path):
    """Samples said "kept by zero (first 0 in rank order)" over an empty block; the chain table's kept cell was blank."""
    ws = _odd_workspace(tmp_path / "ws", [1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    ws.add_embeddings("default", np.eye(3, 4), {"model": "synthetic"})
    ws.select(method="deita", budget=2, name="first")
    ws.select(method="threshold", min_score=100, name="zero", input_selection="first")  # a budget is at least 1
    page = report_html(ws, selection="zero")
    assert "<h3>kept by zero</h3><p>no row kept</p>" in page and "first 0 in rank order" not in page
    chain = re.search(r"<tr><td class='n'>2</td><td>zero</td><td>threshold</td>((?:<td[^>]*>[^<]*</td>){3})", page)
    assert chain and re.findall(r">([^<]*)<", chain.group(1))[::2] == ["2", "0", "2"], chain and chain.group(1)


def test_degenerate_plots_do_not_draw_a_spread_that_is_not_there(tmp_path):
    """A constant 2.0 was a bar from 1 to 3 and its scatter jitter looked like a spread; one kept row drew no visible
    coverage line; the plot's random baseline ("mean of 5") was not the 10 seeds `curate tags` compares against."""
    from matplotlib.colors import to_hex

    from curate.defaults import TAG
    from curate.report.plots import score_scatter

    ws = _odd_workspace(tmp_path / "ws", [2.0] * 6, [1.0, 2.0, 3.0, 4.0, 5.0, 5.0])
    ax = score_histograms(ws, ["complexity"]).axes[0]
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert len(bars) == 1 and bars[0].get_width() < 0.21 and ax.get_xlim() == (1.0, 3.0)
    scatter = score_scatter(ws).axes[0]
    assert scatter.get_xlabel() == "complexity (jittered ±0.04)" and scatter.get_ylabel() == "quality (jittered ±0.08)"
    ws.add_column("tags", [["a"], ["b"], ["c"], [], [], []], {"kind": "instag_normalized"})
    ws.add_embeddings("default", np.eye(6, 8), {"model": "synthetic"})
    ws.select(method="deita", budget=1, name="one")
    lines = {to_hex(line.get_color()): line for line in tag_coverage(ws, "one").axes[0].get_lines()}
    assert lines[KEPT_COLOUR].get_marker() == "o" and len(lines[KEPT_COLOUR].get_xdata()) == 1
    labels = [t.get_text() for t in tag_coverage(ws, "one").axes[0].get_legend().get_texts()]
    assert any(f"random tagged rows, mean of {TAG.coverage_seeds} " in label for label in labels), labels


def test_a_report_on_crowded_or_identical_inputs_writes_no_warning_to_stderr(tmp_path):
    """matplotlib's constrained_layout UserWarning and sklearn PCA's RuntimeWarning on identical vectors reached
    stderr during a report; the map now says the vectors are all equal."""
    ws = _odd_workspace(tmp_path / "ws", [1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 2.0, 1.0], source=["S" * 3000 + str(i) for i in range(4)])
    for k in range(7):
        ws.add_column(f"col_{k}_" + "x" * 150, [1.0, 2.0, 3.0, float(k)], {"kind": "test"})
    ws.add_embeddings("default", np.ones((4, 8)) / np.sqrt(8), {"model": "synthetic"})
    code = ("import sys, warnings; warnings.simplefilter('always'); from curate import Workspace; "
            f"from curate.report.html import build_report; build_report(Workspace({str(ws.path)!r}), {str(tmp_path / 'r.html')!r})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert embedding_map(ws).axes[0].get_title() == "embeddings 'default', PCA, all vectors equal"


def test_a_value_cut_in_the_text_view_ends_with_an_ellipsis(tmp_path):
    """RowsView.__repr__ cut values to 80 characters with nothing saying so."""
    from curate.report.views import RowsView

    ws = Workspace(tmp_path / "ws")
    ws.load([{"instruction": "q", "output": "a"}])
    ws.add_column("note", ["n" * 100], {"kind": "test"})
    ws.add_column("short", ["s" * 80], {"kind": "test"})
    assert f"note={'n' * 79}…; short={'s' * 80}\n" in repr(RowsView(ws, ws.ids, ["note", "short"]))


def test_the_embedding_maps_pca_is_sklearns_pca_without_importing_sklearn(tmp_path):
    """The map's PCA imported sklearn.decomposition (and scipy.stats with it: 3-5 s of every report in a fresh
    process); numpy's SVD with sklearn's sign rule draws the same coordinates."""
    from sklearn.decomposition import PCA

    from curate.report.plots import project_2d

    rng = np.random.default_rng(3)
    for rows, dims, fit_rows in [(50, 384, 5000), (700, 16, 5000), (900, 24, 300), (3, 5, 5000), (40, 1, 5000)]:
        vectors = rng.standard_normal((rows, dims)).astype(np.float32) * rng.uniform(0.1, 3, dims).astype(np.float32)
        coords, used = project_2d(vectors, "pca", pca_fit_rows=fit_rows)
        fit = vectors if rows <= fit_rows else vectors[np.random.default_rng(0).choice(rows, fit_rows, replace=False)]
        pca = PCA(n_components=min(2, rows, dims), svd_solver="full").fit(fit.astype(np.float64))
        expected = pca.transform(vectors.astype(np.float64))
        expected = np.column_stack([expected, np.zeros(rows)]) if expected.shape[1] < 2 else expected
        assert used == "PCA" and coords.shape == (rows, 2)
        np.testing.assert_allclose(coords, expected, atol=1e-6, err_msg=f"{rows}x{dims}")
    same = project_2d(np.ones((4, 8), dtype=np.float32), "pca")[0]
    assert not np.ptp(same, axis=0).any()  # identical vectors: one point (the map says all vectors are equal)
    synthetic_workspace(tmp_path / "ws")
    probe = ("import sys; from curate import Workspace; Workspace.open(sys.argv[1]).report(sys.argv[2]); "
             "print([m for m in ('sklearn', 'scipy') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "ws"), str(tmp_path / "r.html")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "[]" and "<img alt='embedding map'" in (tmp_path / "r.html").read_text()


def test_tag_coverage_where_no_tags_were_made_is_a_neutral_line_not_a_warning(tmp_path):
    """A run that never tagged showed the plot's warning box: "no derived column holds normalised InsTag tags yet:
    tag the pool first ...". Tags are optional: one plain line now, and the warning once a tagger ran but its tags
    were not normalised (a step left to do)."""
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(3)]))
    page = report_html(ws)
    assert "tag coverage" not in _plot_notes(page) and "normalised InsTag" not in page
    assert "<p class='sub'>tag coverage: not drawn, as no tags were made (optional: curate tag WS" in page
    ws.add_column("tags_raw", [[["greeting"]]] * 3, {"kind": "instag_tags", "granularity": "turn"})
    notes = _plot_notes(report_html(ws))
    assert "no derived column holds normalised InsTag tags yet" in notes["tag coverage"]


def test_selections_are_listed_in_the_order_they_were_made(tmp_path):
    """By name, a run's deita came before its heuristics (which deita was built on) and after dedup only by luck."""
    ws = _codes_workspace(tmp_path / "ws")
    ws.select(method="exact", name="zz_dedup")
    ws.select(method="deita", name="mm_deita", input_selection="zz_dedup", budget=8, max_cosine_similarity=0.9)
    ws.select(method="top_k", name="aa_top", budget=3, sort_by="quality")
    page = report_html(ws, selection="mm_deita")
    shown = re.findall(r"<h3>(\w+): [\d,]+ kept", page)
    assert shown == ["zz_dedup", "mm_deita", "aa_top"], shown


def test_a_text_rule_rejection_is_a_line_per_rule_with_its_own_example(tmp_path):
    """40 rows failing 6 text rules were one line, "fails a text rule", with one example (of the language rule)."""
    fine = [{"instruction": f"Write a line about the sea, number {i}.", "output": f"The sea is wide, wave {i}."}
            for i in range(4)]
    refusals = [{"instruction": f"Tell me secret {i}.", "output": "I'm sorry, but I cannot help with that."}
                for i in range(2)]
    odd = [{"instruction": "What do you feel about rain?", "output": "As an AI language model, I do not feel."},
           {"instruction": "Say something.", "output": ""}]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", fine + refusals + odd))
    ws.select(method="heuristics", name="rules")
    rejected = next(g for g in selection_summary(ws.selection("rules"))["groups"] if g["decision"] == "rejected")
    assert [(r["rule"], r["count"]) for r in rejected["rules"]] == [("refusal", 2), ("ai_disclaimer", 1),
                                                                    ("empty_response", 1)]
    section = _section(report_html(ws, selection="rules"), "rules")
    for rule, example in (("refusal", "I&#x27;m sorry, but I cannot"), ("ai_disclaimer", "As an AI language model"),
                          ("empty_response", "empty response, turn 1")):
        assert re.search(f"fails a text rule: {rule}</td><td[^>]*>[12]</td><td[^>]*>[^<]*{example}", section), rule
