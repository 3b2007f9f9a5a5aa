"""README's list of OUT/run.json's keys names the record's top-level keys and the counts of its load, score (signals,
tags) and embed steps: a scheduler's author reads that list. (Not checked here: the filter, dedup and select steps'
counts, export's and report's, and the keys under ``llm``.)"""
import re
import time
from pathlib import Path

from curate.run_record import run_record, step_counts
from curate.storage.apply_result import ApplyResult

README = Path(__file__).resolve().parent.parent / "README.md"


def _documented_keys() -> set[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("Its keys: `record_version`")
    paragraph = text[start:text.index("\n\n", start)]
    return set(re.findall(r"`([a-z_]+)`", paragraph))


def test_readme_names_the_top_level_keys_of_the_run_record_and_the_counts_of_load_score_and_embed():
    record = run_record(Path("out"), 20, {}, {}, {}, time.time())
    load = step_counts("load", {"rows_read": 3, "rows_added": 3, "already_present": 0, "rejects": 0}, 20)
    applied = ApplyResult(column="quality", rows=3, computed=3, skipped=0, failed=1, seconds=0.1,
                          failure_reasons={"invalid_output": (1, "not JSON")})
    score = step_counts("score", {"quality": applied}, 20)
    embed = step_counts("embed", {"rows": 3, "encoded": 3, "encoded_in": "score"}, 20)  # as on Ray
    assert embed["encoded_in"] == "score"  # the record dropped what the line says: its count is the score pass's
    missing = (set(record) | set(load) | set(score) | set(score["columns"]["quality"]) | set(embed)) \
        - _documented_keys()
    assert not missing, f"README's run.json keys leave out {sorted(missing)}"
