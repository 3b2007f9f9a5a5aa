"""A trained scorer's row bar while its rows are encoded: `curate score ws --scorer FOLDER` sat at 0/N for minutes
while the texts were embedded (a stage bar showed only above 2,000 texts), then jumped to N/N."""

from __future__ import annotations

from curate.rows import turns
from curate.scorers import load_default
from curate.storage.progress import progress_bar
from curate.storage.step import RowInput, StepContext

ANSWER = "The sky looks blue because air scatters short blue wavelengths of sunlight more than red ones."


def _rows() -> list[RowInput]:
    conversation = [{"role": "user", "content": "Why is the sky blue?"}, {"role": "assistant", "content": ANSWER}]
    return [RowInput(str(i), conversation, turns(conversation)) for i in range(3)]


def test_the_encoding_of_a_few_rows_shows_as_a_stage_of_the_shown_row_bar(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CURATE_PROGRESS", raising=False)
    scorer = load_default("quality")  # embeds its texts with MiniLM
    with progress_bar(3, "quality", True) as bar:
        out = scorer.run(_rows(), StepContext(bar, tmp_path / "cache", tmp_path))
    assert out.stats["texts_encoded"] == 1  # one distinct text embedded (3 rows < 2,000 texts)
    assert "quality > embedding" in capsys.readouterr().err
    with progress_bar(3, "quality", False) as hidden:  # no row bar shown: no stage bar either
        scorer.run(_rows(), StepContext(hidden, tmp_path / "cache2", tmp_path))
    assert "embedding" not in capsys.readouterr().err
