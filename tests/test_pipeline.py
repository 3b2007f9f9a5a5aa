import json
import subprocess
import sys

import pytest

import curate
from curate.cli import sample_path
from curate.codes import FailureCode
from curate.errors import CurateError, CurateWarning, InputError
from curate.llm.backends import OpenAIBackend
from curate.pipeline import Run, RunResult, run_pipeline, steps
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer
from tests.train_fixtures import tiny_lm  # noqa: F401  (the session fixture, used through request.getfixturevalue)


def test_run_on_the_sample_selects_exports_reports_and_reruns_identically(tmp_path, capfd):
    first = run_pipeline(str(sample_path()), out=tmp_path / "run", budget=15)
    ws = first.workspace
    kept = ws.selection("deita").ids
    assert len(kept) == 15
    prov = ws.column_provenance("quality")
    assert prov["kind"] == "scorer" and prov["imitates"]
    for column in ("complexity", "quality"):  # each shipped scorer brings its held-out agreement (the report shows it)
        assert ws.column_provenance(column)["holdout_agreement"]["n"] > 100, column
    rows = [json.loads(x) for x in (tmp_path / "run" / "selected.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == kept and all("quality" in r and "complexity" in r for r in rows)
    assert (tmp_path / "run" / "selected.parquet").exists() and (tmp_path / "run" / "selected").is_dir()
    assert "<img" in (tmp_path / "run" / "report.html").read_text()
    # The DEITA order: kept rows in descending evol score, each at most 0.9 similar to the ones before.
    emb = ws.embeddings("default", ids=kept)
    sims = emb @ emb.T
    assert (sims[~__import__("numpy").eye(len(kept), dtype=bool)] <= 0.9 + 1e-6).all()
    # Re-running costs nothing and gives the same set.
    again = run_pipeline(str(sample_path()), out=tmp_path / "run", budget=15)
    assert again.workspace.selection("deita").ids == kept
    assert again.results["embed"]["encoded"] == 0 and again.results["embed"]["unchanged"]
    capfd.readouterr()
    quiet = run_pipeline(str(sample_path()), out=tmp_path / "quiet", budget=15, report=False, progress=False)
    assert quiet.workspace.selection("deita").ids == kept  # a fresh workspace selects the same rows
    assert "/s]" not in capfd.readouterr().err  # and shows no progress bar when asked not to
    odd = RunResult(ws, "deita", {"<b>": tmp_path / "a&b.jsonl"}, {"<i>step": 1.0})._repr_html_()
    assert "&lt;b&gt;" in odd and "a&amp;b.jsonl" in odd and "<b>:" not in odd and "<i>" not in odd
    shown = repr(RunResult(ws, "deita", {"jsonl": tmp_path / "s.jsonl"}, {"load": 1.617983201998868}, first.results))
    assert "selection='deita' (15 rows)" in shown and "load 1.6 s" in shown and "1.6179" not in shown  # was a dump
    assert len(shown) < 300, shown


def test_run_on_a_dataset_in_memory_selects_what_the_run_on_its_file_selects(tmp_path):
    import datasets

    records = [r for r in map(json.loads, sample_path().read_text().splitlines()) if "instruction" in r]  # one shape:
    path = write_jsonl(tmp_path / "pool.jsonl", records)  # Dataset.from_list keeps the first record's fields only
    from_file = run_pipeline(str(path), out=tmp_path / "file", budget=10, report=False, progress=False)
    in_memory = curate.run_pipeline(datasets.Dataset.from_list(records), out=tmp_path / "memory", budget=10,
                                    report=False, progress=False)  # the main job from the package's own names
    assert in_memory.workspace.selection("deita").ids == from_file.workspace.selection("deita").ids
    assert in_memory.workspace.manifest["sources"][0]["source"].startswith("<datasets.Dataset of")
    with pytest.raises(CurateError, match=r"engine='ray' \(--engine ray\) reads the pool from files"):
        run_pipeline(records, out=tmp_path / "ray", budget=10, engine="ray")
    assert not (tmp_path / "ray").exists()


def test_a_rerun_on_an_edited_source_curates_the_source_as_it_is_now(tmp_path):
    records = [json.loads(x) for x in sample_path().read_text().splitlines()][:16]
    first = run_pipeline(str(write_jsonl(tmp_path / "pool.jsonl", records)), out=tmp_path / "run", budget=40,
                         report=False)
    assert len(first.workspace) == 16
    edited = [*records[:8], {"instruction": "A row added to the pool since the first run.", "output": "Indeed."}]
    again = run_pipeline(str(write_jsonl(tmp_path / "pool.jsonl", edited)), out=tmp_path / "run", budget=40,
                         report=False)
    load = again.results["load"]
    assert (load["rows_added"], load["already_present"], load["rows_removed"]) == (1, 8, 8)
    ws = again.workspace
    assert len(ws) == 9 and set(ws.selection("deita").ids) <= set(ws.ids)  # rows cut from the source are gone
    assert [again.results["score"][c].computed for c in ("complexity", "quality")] == [1, 1]  # only the new row
    assert not load["fields_refreshed"]
    # a field edited or added beside the same conversations: the ids are the same, so the pool kept the old values
    labelled = [{**r, "label": f"fixed-{i}"} for i, r in enumerate(edited)]
    third = run_pipeline(str(write_jsonl(tmp_path / "pool.jsonl", labelled)), out=tmp_path / "run", budget=40,
                         report=False)
    load = third.results["load"]
    assert (load["rows_added"], load["already_present"], load["fields_refreshed"]) == (0, 9, True)
    assert [third.results["score"][c].computed for c in ("complexity", "quality")] == [0, 0]  # scores are kept
    exported = [json.loads(x) for x in (tmp_path / "run" / "selected.jsonl").read_text().splitlines()]
    assert exported and all(r["label"].startswith("fixed-") for r in exported)
    assert set(third.workspace.column("label")) == {r["label"] for r in labelled}
    fourth = run_pipeline(str(tmp_path / "pool.jsonl"), out=tmp_path / "run", budget=40, report=False)
    assert not fourth.results["load"]["fields_refreshed"]  # the same source again: the pool is not rewritten
    # a row added at the top of the source: the pool in the source's order, as a fresh run on the file has it (a
    # re-run kept it last, so "the first copy in pool order" of --minhash depended on the runs before)
    top = [{"instruction": "A row added at the top.", "output": "First."}, *labelled]
    fifth = run_pipeline(str(write_jsonl(tmp_path / "pool.jsonl", top)), out=tmp_path / "run", budget=40,
                         report=False)
    fresh = run_pipeline(str(tmp_path / "pool.jsonl"), out=tmp_path / "fresh", budget=40, report=False)
    assert fifth.workspace.ids == fresh.workspace.ids and fifth.results["load"]["fields_refreshed"]
    assert fifth.workspace.selection("deita").ids == fresh.workspace.selection("deita").ids


def test_cli_run_is_the_readme_command(tmp_path):
    r = subprocess.run([sys.executable, "-m", "curate.cli", "run", "sample", "--budget", "10", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(curate.Workspace.open(tmp_path / "o" / "workspace").selection("deita")) == 10
    assert (tmp_path / "o" / "report.html").exists()
    # the steps' own bars only: no per-load bar of transformers, no index-flattening bar of datasets
    assert "Loading weights" not in r.stderr and "Flattening the indices" not in r.stderr
    assert "complexity" in r.stderr and "quality" in r.stderr


def test_cli_run_embeds_with_the_model_folder_given_and_refuses_one_that_is_not_there(tmp_path):
    """curate run embedded with the packaged English MiniLM only (ws.embed took a model; the run did not), so a pool
    in another language could not be admitted by a model that reads it."""
    from curate.embed.encoder import default_model_path

    folder = str(default_model_path())  # the packaged MiniLM's folder: a folder, as any other model's
    r = curate_in_process("run", "sample", "--budget", "5", "--no-report", "--out", tmp_path / "o", "--embed-model", folder)
    assert r.returncode == 0, r.stderr[-2000:]
    ws = curate.Workspace.open(tmp_path / "o" / "workspace")
    assert ws.embedding_sets["default"]["model"] == folder and len(ws.selection("deita")) == 5
    with pytest.raises(CurateError, match=r"embed_model /no/such/model \(--embed-model\): no such model folder"):
        run_pipeline(str(sample_path()), out=tmp_path / "bad", budget=5, embed_model="/no/such/model")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(CurateError, match="runs on the single engine, not on ray"):
        run_pipeline(str(sample_path()), out=tmp_path / "ray", budget=5, embed_model=folder, engine="ray")


def test_the_steps_are_data_and_each_is_timed(tmp_path):
    plain = Run("sample", tmp_path, 5)
    assert [name for name, _ in steps(plain)] == ["load", "dedup", "heuristics", "score", "embed", "select (DEITA admission)",
                                                  "export", "report"]
    tagged = Run("sample", tmp_path, 5, backend=object(), tag_backend=object(), report=False)
    assert [name for name, _ in steps(tagged)] == ["load", "dedup", "heuristics", "score", "embed", "tags",
                                                   "select (DEITA admission)", "export"]
    seen = []
    result = run_pipeline(str(sample_path()), out=tmp_path / "run", budget=5, report=False,
                          on_start=lambda name: seen.append(("start", name)),
                          on_done=lambda name, res, s: seen.append(("done", name)))
    assert list(result.timings) == [name for name, _ in steps(Run("sample", tmp_path, 5, report=False))]
    assert seen == [(event, name) for name in result.timings for event in ("start", "done")]
    assert len(result.results["select (DEITA admission)"]) == 5 and "report" not in result.outputs


def test_decontaminate_leaves_rows_holding_evaluation_text_out_of_the_selection(tmp_path):
    evalset = tmp_path / "eval.txt"
    evalset.write_text("A coder who lived on caffeine wrote functions, both tidy and clean!\n")
    with pytest.raises(CurateError, match="none.txt: file: no such file"):
        run_pipeline(str(sample_path()), out=tmp_path / "run", budget=60, decontaminate=str(tmp_path / "none.txt"))
    assert not (tmp_path / "run").exists()  # refused before anything was created
    clean = run_pipeline(str(sample_path()), out=tmp_path / "run", budget=60, report=False, decontaminate=str(evalset))
    assert list(clean.timings)[-3:] == ["decontaminate", "select (DEITA admission)", "export"]
    ws = clean.workspace
    leaked = [rid for rid, c in zip(ws.ids, ws.conversations(), strict=True) if "caffeine" in c[-1]["content"]]
    assert len(leaked) == 1 and leaked[0] not in ws.selection("deita").ids
    assert ws.selection("decontaminated").decisions()["rejected"] == 1
    plain = run_pipeline(str(sample_path()), out=tmp_path / "run", budget=60, report=False)
    assert leaked[0] in ws.selection("deita").ids and "decontaminate" not in plain.timings


def test_max_cost_leaving_rows_unsent_is_an_error_after_keeping_the_scored_rows(tmp_path):
    pool = write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"Task {i}: explain topic {i}.", "output": "ok"}
                                              for i in range(8)])
    with FaultServer() as srv:
        backend = OpenAIBackend(srv.base_url, "gpt-4o-mini", api_key="k", max_retries=0, max_cost=0.0001)
        with pytest.raises(CurateError, match=r"rows not sent: max_cost reached .* a larger max_cost= of the "
                                              r"backend \(CLI: --max-cost\) to finish") as stopped:
            with (
                pytest.warns(CurateWarning, match=r"complexity: 7 of the 8 rows computed now failed"),
                pytest.warns(CurateWarning, match=r"quality: 7 of the 8 rows computed now failed"),
            ):
                run_pipeline(str(pool), out=tmp_path / "run", budget=3, backend=backend, report=False)
        sent = srv.total
    ws = curate.Workspace.open(tmp_path / "run" / "workspace")
    scored = [v is not None for name in ("complexity", "quality") for v in ws.row_values(name)]
    assert 0 < sum(scored) < len(scored) and sent >= sum(scored)
    budget = [f for name in ("complexity", "quality") for fails in ws.failures(name) for f in fails]
    assert budget and all(f.code == FailureCode.BUDGET for f in budget)
    assert "default" not in ws.embedding_sets  # the run stopped after scoring
    unsent = sum(any(fails) for fails in zip(ws.failures("complexity"), ws.failures("quality"), strict=True))
    assert f"{unsent} rows not sent" in str(stopped.value) and unsent <= 8  # rows, not row-judge pairs
    with FaultServer() as srv:  # the re-run the error asks for sends the unsent requests alone, and selects
        backend = OpenAIBackend(srv.base_url, "gpt-4o-mini", api_key="k", max_retries=0, max_cost=1.0)
        result = run_pipeline(str(pool), out=tmp_path / "run", budget=3, backend=backend, report=False)
        assert srv.total == len(budget)  # it sent nothing before this fix, and failed with the same error
    assert len(result.results["select (DEITA admission)"]) == 3


def test_a_judge_that_never_answers_some_rows_stops_the_run_before_selecting(tmp_path):
    rows = [{"instruction": f"Task {i}: explain topic {i}." + (" [always500]" if i % 3 == 0 else ""), "output": "ok"}
            for i in range(6)]
    with FaultServer() as srv:
        backend = OpenAIBackend(srv.base_url, "fault", api_key="k", max_retries=0)
        with pytest.raises(CurateError, match=r"2 rows not scored: the judge did not answer \(.*HTTP 500"):
            with (
                pytest.warns(CurateWarning, match=r"complexity: 2 of the 6 rows computed now failed"),
                pytest.warns(CurateWarning, match=r"quality: 2 of the 6 rows computed now failed"),
            ):
                run_pipeline(str(write_jsonl(tmp_path / "p.jsonl", rows)), out=tmp_path / "run", budget=3,
                             backend=backend, report=False)
    ws = curate.Workspace.open(tmp_path / "run" / "workspace")
    assert sum(v is not None for v in ws.row_values("quality")) == 4  # the answered rows are kept
    assert "deita" not in ws.selections  # nothing selected from a pool with holes the run did not mention


def test_a_trained_scorer_replaces_a_default_and_admission_sorts_by_its_column(tmp_path):
    from curate.scorers import Scorer

    result = run_pipeline(str(sample_path()), out=tmp_path / "run", budget=10, report=False,
                          scorers={"complexity": "complexity_ridge"})
    ws = result.workspace
    assert "complexity" not in ws.columns and ws.column_provenance("complexity_ridge")["kind"] == "scorer"
    assert ws.selections["deita"]["params"]["sort_by"] == "complexity_ridge*quality"
    by_hand = ws.select(method="deita", name="by_hand", input_selection="dedup", budget=10,
                        sort_by="complexity_ridge*quality")
    assert by_hand.ids == ws.selection("deita").ids

    # a scorer that reads a signal column the run does not compute: a clear error before any scoring
    reads_ifd = Scorer(reads=["instruction", "response"], name="q_ifd", columns=["ifd"], features=["length", "stats"])
    rows = [{"instruction": f"q{i}", "response": "a" * (i + 1), "ifd": i / 10} for i in range(12)]
    reads_ifd.fit(rows, [float(i % 5) for i in range(12)])
    with pytest.raises(CurateError, match=r"reads column\(s\) ifd.*signals= \(CLI: --signal\).*--signal ifd"):
        run_pipeline(str(sample_path()), out=tmp_path / "run2", budget=10, report=False, scorers={"quality": reads_ifd})
    dashed = Scorer(reads=["instruction", "response"], name="q-1", features=["length", "stats"])
    dashed.fit(rows, [float(i % 5) for i in range(12)])
    with pytest.raises(CurateError, match=r"letters, digits and _ \(scorer.named\('NAME'\) \(CLI: train-scorer --column\)\)"):
        run_pipeline(str(sample_path()), out=tmp_path / "run6", budget=10, report=False, scorers={"quality": dashed})
    imitates_quality = Scorer(reads=["instruction", "response"], name="q_judge", features=["length", "stats"],
                              imitates={"judge": "quality"})
    imitates_quality.fit(rows, [float(i % 5) for i in range(12)])
    with pytest.raises(CurateError, match=r"scorers\['complexity'\] \(--scorer complexity=...\): that scorer "
                                          "imitates the quality judge"):
        run_pipeline(str(sample_path()), out=tmp_path / "run5", budget=10, scorers={"complexity": imitates_quality})
    with pytest.raises(CurateError, match="this run computes complexity, quality only"):
        run_pipeline(str(sample_path()), out=tmp_path / "run3", budget=10, scorers={"helpfulness": "quality"})
    with pytest.raises(CurateError, match="would write the columns q_ifd, q_ifd"):  # complexity never scored
        run_pipeline(str(sample_path()), out=tmp_path / "run4", budget=10, scorers={"complexity": reads_ifd,
                                                                                    "quality": reads_ifd})


def test_a_pool_field_named_like_a_score_is_kept_and_the_shipped_scorer_writes_its_own_column(tmp_path):
    """A pool with a field 'quality' (labels, or any text) stopped `curate run` with an error naming an option run
    does not have: the shipped scorer would not shadow the field. It now writes quality_score (complexity_score past
    a field of that name too), admission sorts by it, and the pool's fields are exported as they were."""
    rows = [{"instruction": f"Task {i}: explain how a {w} works, step by step.", "output": f"A {w} works " * (i + 1),
             "quality": ["good", "bad"][i % 2], "complexity": i, "complexity_score": -i}
            for i, w in enumerate(["pump", "clock", "lock", "valve", "lens", "gear", "fan", "bell"])]
    result = run_pipeline(write_jsonl(tmp_path / "pool.jsonl", rows), out=tmp_path / "run", budget=4, report=False)
    ws = result.workspace
    assert ws.selections["deita"]["params"]["sort_by"] == "complexity_score_score*quality_score"
    assert ws.column_provenance("quality_score")["kind"] == "scorer" and not ws.has_column("quality")
    assert ws.column("quality") == [r["quality"] for r in rows]  # the field itself, not a prediction
    exported = [json.loads(line) for line in (tmp_path / "run" / "selected.jsonl").read_text().splitlines()]
    assert len(exported) == 4 and {r["quality"] for r in exported} <= {"good", "bad"}
    assert all(1 <= r["quality_score"] <= 6 and r["quality_score_turns"] == [r["quality_score"]]
               for r in exported)  # the row's score, and its one turn's
    with FaultServer() as srv:  # a judge likewise writes quality_judge, and its dry run estimates that column
        backend = OpenAIBackend(srv.base_url, "gpt-4o-mini", api_key="k", max_retries=0)
        from curate.dry_run import dry_run_pipeline

        estimates = dry_run_pipeline(write_jsonl(tmp_path / "pool.jsonl", rows), tmp_path / "dry", backend=backend)
        judged = run_pipeline(tmp_path / "pool.jsonl", out=tmp_path / "judged", budget=4, backend=backend,
                              report=False, progress=False).workspace
        assert srv.total == 2 * len(rows)
    assert [e.column for e in estimates] == ["complexity_judge", "quality_judge"]
    assert judged.selections["deita"]["params"]["sort_by"] == "complexity_judge*quality_judge"
    assert judged.column_provenance("quality_judge")["kind"] == "judge" and not judged.has_column("quality")
    assert judged.column("quality") == [r["quality"] for r in rows]


def test_with_signals_a_scorer_that_reads_them_runs_after_them(tmp_path, request):
    from curate.scorers import Scorer

    lm_folder = request.getfixturevalue("tiny_lm")
    reads_ifd = Scorer(reads=["instruction", "response"], name="q_ifd", columns=["ifd"], features=["length", "stats"])
    rows = [{"instruction": f"q{i}", "response": "a" * (i + 1), "ifd": i / 10} for i in range(12)]
    reads_ifd.fit(rows, [float(i % 5) for i in range(12)])
    result = run_pipeline(str(sample_path()), out=tmp_path / "run", budget=10, report=False, signals=("ifd",),
                          signal_model=str(lm_folder), scorers={"quality": reads_ifd})
    assert list(result.timings).index("signals") < list(result.timings).index("score")
    ws = result.workspace
    scored = [v is not None and None not in v for v in ws.column("q_ifd")]
    has_ifd = [v is not None and None not in v for v in ws.column("ifd")]
    assert scored == has_ifd and sum(scored) > 40  # every turn with an IFD value got a score, the others a failure
    assert ws.selections["deita"]["params"]["sort_by"] == "complexity*q_ifd"


def test_a_budget_or_cosine_the_selection_would_refuse_stops_the_run_before_any_step(tmp_path):
    """They were refused at the selection step (a misspelt signal at the signals step), after the judges had been
    paid for every row."""
    for kwargs, message in (({"budget": -1}, r"budget must be a whole number of rows, at least 1 \(--budget; .*not -1"),
                            ({"budget": 0}, "not 0: a budget of 0 keeps no row"),  # one rule, every selector
                            ({"budget": 5, "signals": ("ifd", "perplexty")}, "not 'perplexty'"),  # after the scores
                            ({"budget": 5, "signals": ("ifd",), "signal_model": "/no/such/model"},
                             "/no/such/model: not a Hugging Face model folder"),
                            ({"budget": 5, "signal_model": "/no/such/model"},  # no signals: it was ignored in silence
                             r"signal_model /no/such/model \(--signal-model\) is the model of signals"),
                            ({"budget": 5, "on_error": "ignore"}, r"on_error= \(CLI: --on-error\) must be 'raise' or 'skip'"),
                            ({"budget": 5, "max_cosine_similarity": 2.0}, r"must be a cosine in \[-1, 1\], not 2.0"),
                            ({"budget": 5, "max_cosine_similarity": float("nan")}, "must be a cosine")):
        with pytest.raises(CurateError, match=message):
            run_pipeline(str(sample_path()), out=tmp_path / "run", report=False, **kwargs)
        assert not (tmp_path / "run").exists()


def test_a_source_that_cannot_be_read_leaves_no_workspace_in_an_out_folder_that_was_there(tmp_path):
    """The load reads its source inside the workspace it creates; failing, it removes the folders it made (the
    workspace inside an existing out folder too), and leaves what was there before."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": ""}\n')
    with pytest.raises(InputError, match="instruction is empty"):
        run_pipeline(str(bad), out=out, budget=5, report=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_selection_short_of_its_budget_says_which_reasons_kept_the_rows_out(tmp_path):
    """Rows without replies get a complexity score and no quality score, so DEITA cannot admit them; the run's
    select line names the reason (no quality score: no response) instead of a bare count."""
    from curate.cli.run import _short_of_budget

    pool = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"Explain sorting algorithm number {i}."}
                                                 for i in range(5)]
                       + [{"instruction": "Name a colour.", "output": "Blue."}])
    with pytest.warns(CurateWarning, match=r"quality: 5 of the 6 rows computed now failed"):
        run = run_pipeline(str(pool), out=tmp_path / "run", budget=3, report=False, progress=False, heuristics=False)
    selection = run.workspace.selection("deita")
    assert len(selection) == 1 and selection.decisions() == {"kept": 1, "unscored": 5}
    assert _short_of_budget(selection, 3) == "; not admitted: 5 no score (quality: no response)"
    sample = run_pipeline(str(sample_path()), out=tmp_path / "sample", budget=5000, report=False, progress=False)
    kept = sample.workspace.selection("deita")
    why = _short_of_budget(kept, 5000)
    assert why.startswith("; not admitted: ") and "too similar to a kept row" in why
    assert _short_of_budget(kept, len(kept)) == ""
    few = run_pipeline(str(pool), out=tmp_path / "few", budget=3, report=False, progress=False, heuristics=True)
    assert len(few.workspace.selection("deita")) == 1  # the text rules left one row: the five without replies went
    assert _short_of_budget(few.workspace.selection("deita"), 3) == ": every candidate admitted (the steps before left 1)"


def test_no_judge_call_is_paid_for_a_duplicate_row(tmp_path):
    """Rows exact dedup drops (the same text up to trailing spaces and line ends: another request, another price)
    are not scored; the dry run's estimate counts the same rows."""
    import numpy as np

    from curate.dry_run import dry_run_pipeline

    unique = [{"instruction": f"Task {i}: explain topic {i}.", "output": f"Topic {i} is simple."} for i in range(5)]
    copies = [{**unique[0], "instruction": unique[0]["instruction"] + "\r\n"},
              {**unique[3], "output": unique[3]["output"] + "  "}]
    pool = write_jsonl(tmp_path / "p.jsonl", unique + copies)
    with FaultServer() as srv:
        backend = OpenAIBackend(srv.base_url, "gpt-4o-mini", api_key="k", max_retries=0)
        estimates = dry_run_pipeline(str(pool), tmp_path / "dry", backend=backend)
        result = run_pipeline(str(pool), out=tmp_path / "run", budget=3, backend=backend, report=False)
        assert srv.total == 2 * len(unique)  # complexity and quality, once per unique row
    assert [e.rows for e in estimates] == [len(unique), len(unique)]
    ws = result.workspace
    assert ws.selection("dedup").decisions()["duplicate"] == 2
    scored = dict(zip(ws.ids, ws.column_array("quality"), strict=True))
    duplicates = set(ws.ids) - set(ws.selection("dedup").ids)
    assert len(duplicates) == 2 and all(np.isnan(scored[i]) for i in duplicates)
    assert sum(not np.isnan(v) for v in scored.values()) == len(unique)
    # curate info and the report tell the rows never asked for from rows that failed without a reason
    from curate.report.summary import column_stats
    from curate.report.views import info_data

    quality = next(c for c in info_data(ws)["columns"] if c["name"] == "quality")
    assert (quality["missing"], quality["never_computed"], quality["unexplained"]) == (2, 2, 0)
    assert column_stats(ws, "quality")["never_computed"] == 2


def test_no_judge_or_tag_call_is_paid_for_a_row_decontamination_or_dedup_drops(tmp_path):
    """With LLM judges, embed and decontaminate run before the scores; the tagger sees only the rows every filter
    kept. The dry run's estimates count the same rows."""
    from curate.dry_run import dry_run_pipeline

    evalset = tmp_path / "eval.txt"
    evalset.write_text("Name the largest planet of the solar system and say how many moons it has today.\n")
    leaked = {"instruction": "Quiz: name the largest planet of the solar system and say how many moons it has today.",
              "output": "Jupiter, with 95 known moons."}
    unique = [{"instruction": f"Task {i}: explain topic {i} to a child.", "output": f"Topic {i} is simple."}
              for i in range(4)]
    pool = write_jsonl(tmp_path / "p.jsonl", [*unique, leaked, {**unique[1], "output": "Topic 1 is simple.  "}])
    with FaultServer() as srv:
        backend = OpenAIBackend(srv.base_url, "gpt-4o-mini", api_key="k", max_retries=0)
        estimates = dry_run_pipeline(str(pool), tmp_path / "dry", backend=backend, tag_backend=backend,
                                     decontaminate_target=str(evalset))
        assert srv.total == 0
        result = run_pipeline(str(pool), out=tmp_path / "run", budget=3, backend=backend, tag_backend=backend,
                              decontaminate=str(evalset), report=False, progress=False)
        assert srv.total == 3 * len(unique)  # complexity, quality and tags, once per row left
        asked = {m[-1]["content"] for m in srv.messages}
    assert [e.rows for e in estimates] == [len(unique)] * 3
    assert not any("largest planet" in text for text in asked)
    assert list(result.timings)[:7] == ["load", "dedup", "heuristics", "embed", "decontaminate", "score", "tags"]
    ws = result.workspace
    assert ws.selection("decontaminated").decisions() == {"kept": len(unique), "rejected": 1}
    assert sum(v is not None for v in ws.turn_values("tags_raw")) == len(unique)
    from curate.report.summary import never_computed

    assert len(never_computed(ws, "tags")) == 2 and not any(ws.failures("tags"))  # untagged rows: no failure either
    from curate.report import report_html
    from curate.report.summary import llm_usage

    usage = {u["column"]: u for u in llm_usage(ws)}  # the tagger's calls are paid too, and counted
    assert (usage["tags_raw"]["step"], usage["tags_raw"]["calls"]) == ("tagger", len(unique))
    assert usage["tags_raw"]["prompt_tokens"] > 0 and usage["tags_raw"]["cost_usd"] > 0
    assert usage["tags_raw"]["backend"] == usage["quality"]["backend"] == "openai"
    page = report_html(ws)
    assert "2 judge, 1 tagger" in page[page.index("paid LLM steps"):page.index("all derived columns")]
    # with the local scorers nothing is paid for: decontamination stays after the one scoring-and-embedding pass
    local = run_pipeline(str(pool), out=tmp_path / "local", budget=3, decontaminate=str(evalset), report=False,
                         progress=False)
    assert list(local.timings)[:6] == ["load", "dedup", "heuristics", "score", "embed", "decontaminate"]


def test_a_rerun_with_another_tagger_and_a_filter_dropping_a_tagged_row_tags_the_kept_rows(tmp_path):
    """The tags step asked the tagger for the kept rows with ws.apply: once the tagger changed (another model) and a
    filter dropped a row tagged before, the column was "mixed" and every re-run failed; the values of rows the run
    does not keep are removed, as the score step does."""
    rows = [{"instruction": f"Task {i}: explain topic {i} to a child.", "output": f"Topic {i} is simple."}
            for i in range(4)] + [{"instruction": "Tell me how to pick a lock.", "output": "Sorry, but I can't "
                                   "assist with that."}]
    pool = write_jsonl(tmp_path / "p.jsonl", rows)
    with FaultServer() as srv:
        for model, heuristics in (("model-1", False), ("model-2", True)):
            backend = OpenAIBackend(srv.base_url, model, api_key="k", max_retries=0)
            result = run_pipeline(str(pool), out=tmp_path / "run", budget=3, backend=backend, tag_backend=backend,
                                  heuristics=heuristics, report=False, progress=False)
    tagged = result.results["tags"]["tags_raw"]
    assert tagged.stale_dropped == 1 and tagged.computed == 4  # the refusal's old tags removed, not asked again
    ws = result.workspace
    assert [v is not None for v in ws.row_values("tags_raw")] == [True] * 4 + [False]
    assert [v is not None for v in ws.row_values("tags")] == [True] * 4 + [False]  # nor tags normalised from them
    # a pool with its own tags field: kept, and the run's tags go beside it (the normaliser refused it after the
    # tagger had been paid)
    labelled = write_jsonl(tmp_path / "labelled.jsonl", [{**r, "tags": ["mine"]} for r in rows])
    with FaultServer() as srv:
        backend = OpenAIBackend(srv.base_url, "model-1", api_key="k", max_retries=0)
        own = run_pipeline(str(labelled), out=tmp_path / "own", budget=3, backend=backend, tag_backend=backend,
                           report=False, progress=False)
    assert own.results["tags"]["columns"] == ("tags_raw", "tags_instag")
    assert own.workspace.column("tags") == [["mine"]] * 5 and own.workspace.has_column("tags_instag")
    from curate.report.plots import tag_sets

    assert tag_sets(own.workspace) == tag_sets(own.workspace, "tags_instag") != tag_sets(own.workspace, "tags")
    from typer.testing import CliRunner

    from curate.cli import app

    shown = CliRunner().invoke(app, ["tags", str(own.workspace.path)])  # the run's tags by default, not the field's
    assert shown.exit_code == 0 and "\ntags_instag: " in shown.output, shown.output


def test_minhash_leaves_near_duplicates_out_before_any_judge_call(tmp_path):
    """`--minhash`: a row a word away from an earlier one (MinHash LSH, Jaccard >= 0.8) is neither scored nor
    selected; the dry run counts the same rows; the text rules then read the rows MinHash kept."""
    from curate.dry_run import dry_run_pipeline

    words = ("the quick brown fox jumps over the lazy dog while the farmer counts his sheep in the green field near "
             "the old river and the children sing songs about the summer rain falling on the red roofs of the quiet "
             "village at dawn").split()
    base = [{"instruction": f"Task {i}: " + " ".join(words[i:] + words[:i]), "output": f"Answer {i}."} for i in range(4)]
    near = {**base[2], "instruction": base[2]["instruction"].replace("sheep", "goats")}
    refusal = {"instruction": "Tell me a joke about sorting algorithms please.", "output": "I'm sorry, but I can't."}
    pool = write_jsonl(tmp_path / "p.jsonl", [*base, near, refusal])
    with FaultServer() as srv:
        backend = OpenAIBackend(srv.base_url, "gpt-4o-mini", api_key="k", max_retries=0)
        estimates = dry_run_pipeline(str(pool), tmp_path / "dry", backend=backend, minhash=True, heuristics=True)
        result = run_pipeline(str(pool), out=tmp_path / "run", budget=6, backend=backend, minhash=True,
                              heuristics=True, report=False, progress=False)
        assert srv.total == 2 * len(base)  # the near-duplicate and the refusal cost nothing
    assert [e.rows for e in estimates] == [len(base)] * 2
    ws = result.workspace
    assert list(result.timings)[:4] == ["load", "dedup", "near-duplicates", "heuristics"]
    minhash = ws.selection("minhash")
    assert minhash.decisions() == {"kept": 5, "duplicate": 1}
    assert ws.selection("heuristics").table.num_rows == 5  # the rules read MinHash's kept rows
    near_id = next(rid for rid in ws.ids if rid not in minhash.ids)
    assert ws.conversations()[ws.index[near_id]][0]["content"] == near["instruction"]
    assert near_id not in {r["id"] for r in ws.selection("deita").table.to_pylist()}  # never a candidate


def test_a_run_sorted_by_one_score_pays_for_that_judge_alone(tmp_path):
    """``sort_by="quality"`` asks the quality judge once per row and never the complexity judge (the run used to
    pay for both whatever admission read); the dry run counts the same requests."""
    from curate.dry_run import dry_run_pipeline

    rows = [{"instruction": f"Task {i}: explain topic {i}.", "output": f"Topic {i} is simple."} for i in range(5)]
    pool = write_jsonl(tmp_path / "p.jsonl", rows)
    with FaultServer() as srv:
        backend = OpenAIBackend(srv.base_url, "gpt-4o-mini", api_key="k", max_retries=0)
        estimates = dry_run_pipeline(str(pool), tmp_path / "dry", backend=backend, sort_by="quality")
        result = run_pipeline(str(pool), out=tmp_path / "run", budget=3, backend=backend, report=False,
                              sort_by="quality")
        assert srv.total == len(rows)
    assert [(e.column, e.rows) for e in estimates] == [("quality", len(rows))]
    ws = result.workspace
    assert ws.has_column("quality") and not ws.has_column("complexity")
    assert ws.selection("deita").provenance["sort_by"] == "quality" and len(ws.selection("deita")) >= 1
    with pytest.raises(CurateError, match="this run computes quality only"):
        run_pipeline(str(pool), out=tmp_path / "run", budget=3, sort_by="quality",
                     scorers={"complexity": "complexity_ridge"})


def test_an_output_the_run_could_not_write_is_named_before_any_step(tmp_path):
    """A run whose out/selected held other files (or whose out/report.html was a folder) loaded, scored (with a
    backend, paid the judges) and selected, then failed writing the export."""
    (tmp_path / "run" / "selected").mkdir(parents=True)
    (tmp_path / "run" / "selected" / "mine.txt").write_text("keep me")
    with pytest.raises(CurateError, match="selected: a folder holding other files"):
        run_pipeline(str(sample_path()), out=tmp_path / "run", budget=5, report=False)
    (tmp_path / "other" / "report.html").mkdir(parents=True)
    with pytest.raises(CurateError, match="report.html: a folder, where a file is to be written"):
        run_pipeline(str(sample_path()), out=tmp_path / "other", budget=5)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["selected"]  # no step ran: no workspace
    assert (tmp_path / "run" / "selected" / "mine.txt").read_text() == "keep me"
    run_pipeline(str(sample_path()), out=tmp_path / "other", budget=5, report=False)  # the folder is no output here


def test_a_run_into_a_folder_of_files_it_did_not_write_refuses_to_write_over_them(tmp_path):
    """``--out`` a folder holding the user's own selected.jsonl (no run's workspace beside it): the run replaced it
    without a word. A workspace given as ``--out`` got a second workspace inside it."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "selected.jsonl").write_text("my rows\n")
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(CurateError, match=r"out= \(CLI: --out\) holds selected.jsonl, which no curate run wrote there"):
        run_pipeline(str(sample_path()), out=mine, budget=5, report=False)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "selected.jsonl"]
    assert (mine / "selected.jsonl").read_text() == "my rows\n"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "report.html").write_text("my report")  # a run writing no report leaves it alone
    run_pipeline(str(sample_path()), out=tmp_path / "notes", budget=5, report=False)
    assert (tmp_path / "notes" / "report.html").read_text() == "my report"
    run = run_pipeline(str(sample_path()), out=tmp_path / "run", budget=5, report=False)
    with pytest.raises(CurateError, match=r"out= \(CLI: --out\) is a workspace"):
        run_pipeline(str(sample_path()), out=run.workspace.path, budget=5, report=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CurateError, match="a file, where the run's folder goes"):
        run_pipeline(str(sample_path()), out=tmp_path / "file", budget=5, report=False)
    again = run_pipeline(str(sample_path()), out=tmp_path / "run", budget=5, report=False)  # an earlier run's: fine
    assert again.workspace.selection("deita").ids == run.workspace.selection("deita").ids


def test_a_scorer_reading_a_signal_the_run_does_not_compute_is_named_before_dedup(tmp_path):
    """The run named it at the score step, after dedup and the text rules; now right after load."""
    from curate.scorers import Scorer

    reads_ifd = Scorer(reads=["instruction", "response"], name="q_ifd", columns=["ifd"], features=["length", "stats"])
    rows = [{"instruction": f"q{i}", "response": "a" * (i + 1), "ifd": i / 10} for i in range(12)]
    reads_ifd.fit(rows, [float(i % 5) for i in range(12)])
    with pytest.raises(CurateError, match=r"reads column\(s\) ifd.*--signal ifd"):
        run_pipeline(str(sample_path()), out=tmp_path / "run", budget=10, report=False, scorers={"quality": reads_ifd})
    from curate.session import Workspace

    assert "dedup" not in Workspace.open(tmp_path / "run" / "workspace").selections


def test_a_run_stopped_while_writing_its_exports_leaves_the_earlier_set_whole(tmp_path, monkeypatch):
    """The three exports were written one by one: a run killed between them left the new selection's
    selected.jsonl beside the old selected.parquet and selected/, and nothing said so. They are now staged
    together and renamed into place together."""
    import datasets
    import pyarrow.parquet as pq

    from curate.storage import export as export_module

    def rows_of(out):
        return (len((out / "selected.jsonl").read_text().splitlines()), pq.read_metadata(out / "selected.parquet").num_rows,
                datasets.load_from_disk(str(out / "selected")).num_rows)

    out = tmp_path / "run"
    run_pipeline(str(sample_path()), out=out, budget=10, report=False, progress=False)
    assert rows_of(out) == (10, 10, 10)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C in the middle of the second export

    monkeypatch.setattr(export_module, "write_parquet", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(str(sample_path()), out=out, budget=4, report=False, progress=False)
    assert rows_of(out) == (10, 10, 10)  # the earlier set, whole: not 4 rows in selected.jsonl beside 10 in the others
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "selected", "selected.jsonl", "selected.parquet",
                                                     "workspace"]
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.undo()
    run_pipeline(str(sample_path()), out=out, budget=4, report=False, progress=False)
    assert rows_of(out) == (4, 4, 4)


def test_a_run_over_rows_read_already_loads_them(tmp_path):
    """run_pipeline takes a pool in memory (pools.read(...)); the run resolved on_error to 'skip' for it and the
    load then refused 'on_error' as an option given with rows read already, which the user never gave."""
    from curate import pools
    from curate.pipeline import Run, load

    run = Run(pools.read("sample"), tmp_path / "out", 5)
    assert load(run)["rows_read"] == len(pools.read("sample").rows)
    with pytest.raises(CurateError, match="load: mapping apply when a source is read"):  # one the user did give
        load(Run(pools.read("sample"), tmp_path / "again", 5, mapping={"instruction": "prompt"}))
