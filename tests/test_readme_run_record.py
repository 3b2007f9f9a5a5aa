"""README's list of OUT/run.json's keys names every key the record has: a scheduler's author reads that list."""
import re
import time
from pathlib import Path

from curate.run_record import run_record, step_counts

README = Path(__file__).resolve().parent.parent / "README.md"


def _documented_keys() -> set[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("Its keys: `record_version`")
    paragraph = text[start:text.index("\n\n", start)]
    return set(re.findall(r"`([a-z_]+)`", paragraph))


def test_readme_names_every_key_of_the_run_record():
    record = run_record(Path("out"), 20, {}, {}, {}, time.time())
    load = step_counts("load", {"rows_read": 3, "rows_added": 3, "already_present": 0, "rejects": 0}, 20)
    missing = (set(record) | set(load)) - _documented_keys()
    assert not missing, f"README's run.json keys leave out {sorted(missing)}"
