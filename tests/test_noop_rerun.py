"""A re-run with the same arguments leaves the stored embedding set and selections as they are (bytes, mtimes and
``created`` times); a changed input still rewrites them."""

import json
from pathlib import Path

import numpy as np

from curate.cli import sample_path
from curate.pipeline import SELECTION, run_pipeline
from curate.storage.workspace import Workspace
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl

SELECT_STEP = "select (DEITA admission)"


def stored_files(ws) -> dict[str, tuple[bytes, int]]:
    """Every file under embeddings/ and selections/: its bytes and mtime."""
    return {str(p.relative_to(ws.path)): (p.read_bytes(), p.stat().st_mtime_ns)
            for folder in ("embeddings", "selections") for p in sorted((ws.path / folder).iterdir())}


def test_a_rerun_with_the_same_arguments_leaves_embeddings_and_selections_untouched(tmp_path):
    records = [json.loads(x) for x in sample_path().read_text().splitlines()][:16]
    pool = write_jsonl(tmp_path / "pool.jsonl", records)
    first = run_pipeline(str(pool), out=tmp_path / "run", budget=5, report=False, progress=False)
    before = stored_files(first.workspace)
    again = run_pipeline(str(pool), out=tmp_path / "run", budget=5, report=False, progress=False)
    assert stored_files(again.workspace) == before  # the old code wrote a new token file and new created times
    meta = first.workspace.path / "embeddings" / "default.json"  # as the release before wrote it: no [UNK] share
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "unknown_token_share"}))
    before = stored_files(first.workspace)
    again = run_pipeline(str(pool), out=tmp_path / "run", budget=5, report=False, progress=False)
    assert stored_files(again.workspace) == before  # it wrote the same vectors again under a new token
    assert not first.results["embed"]["unchanged"] and not first.results["dedup"].unchanged
    assert again.results["embed"]["unchanged"] and again.results["dedup"].unchanged
    assert again.results[SELECT_STEP].unchanged and again.workspace.selection(SELECTION).ids == \
        first.workspace.selection(SELECTION).ids
    # another budget: the DEITA selection is written again, the dedup and the embeddings are not
    other = run_pipeline(str(pool), out=tmp_path / "run", budget=6, report=False, progress=False)
    assert not other.results[SELECT_STEP].unchanged and len(other.workspace.selection(SELECTION).ids) == 6
    now = stored_files(other.workspace)
    assert now["selections/deita.arrow"] != before["selections/deita.arrow"]
    assert {k: v for k, v in now.items() if k != "selections/deita.arrow"} == \
        {k: v for k, v in before.items() if k != "selections/deita.arrow"}
    # a new row: every file is written again
    write_jsonl(pool, [*records, {"instruction": "A row added since the first run.", "output": "Indeed."}])
    grown = run_pipeline(str(pool), out=tmp_path / "run", budget=6, report=False, progress=False)
    assert not grown.results["embed"]["unchanged"] and not grown.results["dedup"].unchanged
    assert grown.workspace.embedding_sets["default"]["shape"][0] == 17
    assert set(stored_files(grown.workspace)) != set(now)  # a new matrix token; the old files removed


def test_storing_the_same_set_or_selection_again_keeps_the_stored_one(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.load(str(sample_path()))
    ids = ws.ids
    vectors = np.random.default_rng(0).standard_normal((len(ids), 4)).astype(np.float32)
    stored = ws.add_embeddings("e", vectors, {"model": "m"})
    created = ws.embedding_sets["e"]["created"]
    again = ws.add_embeddings("e", vectors, {"model": "m", "encoded": 0})  # encoded: the run's, not the set's
    assert ws.embedding_sets["e"]["created"] == created and (stored, again) == (True, False)
    assert ws.add_embeddings("e", vectors, {"model": "other"}) is True  # other provenance
    changed = vectors.copy()
    changed[3, 0] += 1e-3
    assert ws.add_embeddings("e", changed, {"model": "other"}) is True  # another vector
    np.testing.assert_array_equal(ws.embeddings("e"), changed)
    assert ws.add_embeddings("e", changed[::-1], {"model": "other"}, ids=ids[::-1]) is True  # other order
    args = (ids[:3], ["kept", "kept", "rejected"], ["selected", "selected", "below_threshold"], [None, None, {"x": 1}])
    first = ws.add_selection("s", *args, {"method": "threshold"})
    assert not first.unchanged
    again = ws.add_selection("s", *args, {"method": "threshold"})
    assert again.unchanged and again.provenance["created"] == first.provenance["created"]
    assert ws.selection("s").provenance["created"] == first.provenance["created"]
    moved = ws.add_selection("s", *args[:3], [None, None, {"x": 2}], {"method": "threshold"})  # another detail
    assert not moved.unchanged and ws.selection("s").rows()[2]["detail"] == {"x": 2}


def test_the_ray_engine_reuses_an_embedding_set_of_the_pools_rows_not_of_as_many_rows(tmp_path):
    """The Ray engine skipped its embedding pass when the stored set had as many rows as the pool, so a source edited
    to as many rows kept the stale set, now also said "unchanged" (review): it compares the rows' ids."""
    from curate.defaults import EMBED
    from curate.scale.ray_engine import RayEngine

    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "a.jsonl", [{"instruction": f"task {i}", "output": "ok"} for i in range(4)]))
    ws.add_embeddings(EMBED.name, np.eye(4, 8, dtype=np.float32), {"kind": "embeddings", "model": EMBED.model,
                                                                    "text": EMBED.text})
    assert RayEngine._has_embeddings(None, ws)
    edited = Workspace(tmp_path / "edited")
    edited.load(write_jsonl(tmp_path / "b.jsonl", [{"instruction": f"task {i}!", "output": "ok"} for i in range(4)]))
    (edited.path / "embeddings").mkdir(exist_ok=True)
    for p in (ws.path / "embeddings").iterdir():  # the first pool's set beside as many other rows
        (edited.path / "embeddings" / p.name).write_bytes(p.read_bytes())
    assert not RayEngine._has_embeddings(None, Workspace.open(edited.path))  # was True: 4 rows either way


def output_files(out) -> dict[str, tuple[int, int]]:
    """report.html and every exported file: (mtime_ns, inode). Not run.json: each run's own record."""
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.stat().st_ino)
            for p in sorted(out.rglob("*")) if p.is_file() and "workspace" not in p.relative_to(out).parts
            and p.name != "run.json"}


def test_a_rerun_leaves_the_report_and_the_exports_untouched_and_a_change_writes_them_again(tmp_path):
    """A no-op re-run rebuilt report.html (its load added a manifest entry the report shows) and rewrote
    selected.jsonl/.parquet/selected/; now they are left as they are, and anything they show changing writes them."""

    records = [json.loads(x) for x in sample_path().read_text().splitlines()][:12]
    pool, out = write_jsonl(tmp_path / "pool.jsonl", records), tmp_path / "run"
    first = run_pipeline(str(pool), out=out, budget=5, progress=False)
    before, loads = output_files(out), first.workspace.manifest["sources"]
    assert {"report.html", "selected.jsonl", "selected.parquet"} <= set(before) and len(before) > 4
    again = run_pipeline(str(pool), out=out, budget=5, progress=False)
    assert output_files(out) == before  # the old code wrote every one of them again
    assert not first.results["report"].unchanged and not first.results["export"].unchanged
    assert again.results["load"]["unchanged"] and again.workspace.manifest["sources"] == loads
    assert again.results["report"].unchanged and again.results["export"].unchanged
    # the command line says so, and leaves them too
    cli = curate_in_process("run", pool, "--out", out, "--budget", "5")
    assert cli.returncode == 0, cli.stderr
    said = " ".join(cli.stdout.split())
    assert "export unchanged:" in said and "report unchanged:" in said and "0 rejected; unchanged" in said
    assert output_files(out) == before
    # a file removed or edited by hand is written again (and only the outputs of that step)
    (out / "selected.jsonl").unlink()
    (out / "report.html").write_text((out / "report.html").read_text() + "<!-- edited -->")
    mended = run_pipeline(str(pool), out=out, budget=5, progress=False)
    assert not mended.results["export"].unchanged and not mended.results["report"].unchanged
    assert "edited" not in (out / "report.html").read_text() and (out / "selected.jsonl").is_file()
    now = output_files(out)
    assert all(now[name] != before[name] for name in before)
    # another budget (a new selection), then a new row: both written again
    other = run_pipeline(str(pool), out=out, budget=6, progress=False)
    assert not other.results["report"].unchanged and not other.results["export"].unchanged
    assert sum(1 for _ in (out / "selected.jsonl").open()) == 6
    assert all(output_files(out)[name] != now[name] for name in ("report.html", "selected.jsonl"))
    write_jsonl(pool, [*records, {"instruction": "A row added since the first run.", "output": "Indeed."}])
    grown = run_pipeline(str(pool), out=out, budget=6, progress=False)
    assert not grown.results["load"]["unchanged"] and len(grown.workspace.manifest["sources"]) == 2
    assert not grown.results["report"].unchanged and not grown.results["export"].unchanged
    assert "<b>13</b><span>rows</span>" in (out / "report.html").read_text()


def test_a_report_is_drawn_again_when_a_column_it_shows_changes(tmp_path):
    """Only the run's own steps changing nothing leaves the report: a column stored since (a judge's new scores, a
    failure) is shown, so the page is drawn again."""
    records = [json.loads(x) for x in sample_path().read_text().splitlines()][:8]
    pool, out = write_jsonl(tmp_path / "pool.jsonl", records), tmp_path / "run"
    ws = run_pipeline(str(pool), out=out, budget=3, progress=False).workspace
    before = output_files(out)
    ws.add_column("reviewer_note", ["checked by hand"] * len(ws), {"kind": "manual"})
    run_pipeline(str(pool), out=out, budget=3, progress=False)
    drawn = output_files(out)
    assert drawn["report.html"] != before["report.html"] and "reviewer_note" in (out / "report.html").read_text()
    run_pipeline(str(pool), out=out, budget=3, progress=False)
    assert output_files(out) == drawn  # the old code drew it at every run


def test_bytecode_written_in_a_sub_package_leaves_the_code_digest_as_it_was():
    """Only the top-level __pycache__ was skipped: a .pyc Python wrote lazily into a sub-package's (curate/storage/
    __pycache__) changed the digest, and a re-run wrote every export and the report again."""
    import curate.storage.output_record as output_record

    probe = Path(output_record.__file__).parent / "__pycache__" / "zz_probe_of_a_test.cpython-311.pyc"
    probe.parent.mkdir(exist_ok=True)
    output_record._code_state.cache_clear()
    before = output_record._code_state()
    try:
        probe.write_bytes(b"bytecode")
        (Path(output_record.__file__).parent / "zz_probe_of_a_test.pyc").write_bytes(b"bytecode")
        output_record._code_state.cache_clear()
        assert output_record._code_state() == before
    finally:
        probe.unlink(missing_ok=True)
        (Path(output_record.__file__).parent / "zz_probe_of_a_test.pyc").unlink(missing_ok=True)
        output_record._code_state.cache_clear()


def test_a_damaged_outputs_record_is_named_in_a_warning(tmp_path, caplog):
    """It was taken as empty in silence."""
    from curate.pipeline import run_pipeline

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"instruction": f"Question {i} about topic {i}",
                                        "output": f"Answer {i} on topic {i}"}) + "\n" for i in range(6)))
    run_pipeline(str(pool), tmp_path / "run", 3, report=False, progress=False)
    (tmp_path / "run" / "workspace" / "outputs.json").write_text("{cut")
    with caplog.at_level("WARNING", logger="curate"):
        result = run_pipeline(str(pool), tmp_path / "run", 3, report=False, progress=False)
    assert not result.results["export"].unchanged
    assert any("outputs.json: damaged" in r.getMessage() for r in caplog.records), caplog.text
