"""Benchmark decontamination: rows holding evaluation text are dropped, and only those (the definition checked
on a random pool), with the target and the shared words as the row's detail."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.codes import Reason, describe
from curate.errors import CurateError
from curate.select.decontaminate import words
from curate.session import Workspace
from evals.bench_decontaminate import by_definition
from tests.conftest import write_jsonl

BENCH = ["Compose an engaging travel blog post about a recent trip to Hawaii, highlighting cultural experiences "
         "and must-see attractions.",
         "Which word does not belong with the others: tyre, steering wheel, car, engine?",  # 10 words: matched whole
         "Write a poem."]                                                      # 3 words: only a message saying it


def _decisions(sel) -> dict[str, tuple[str, dict]]:
    return {r["id"]: (r["decision"], json.loads(r["detail"] or "{}")) for r in sel.table.to_pylist()}


def _pool(tmp_path, records):
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", records))
    by_text = {c[0]["content"]: rid for rid, c in zip(ws.ids, ws.conversations(), strict=True)}
    return ws, by_text


def test_rows_holding_evaluation_text_are_dropped_and_near_misses_kept(tmp_path):
    records = [
        {"instruction": "PLEASE compose an engaging travel-blog post about a recent trip to hawaii; highlighting "
                        "cultural experiences!", "output": "Aloha."},                       # case, punctuation
        {"instruction": "Compose an engaging travel blog post about a recent trip to Hawaii and its food.",
         "output": "Sure."},                                                                # 12 shared words only
        {"instruction": "Quiz: which word does not belong with the others - tyre, steering wheel, car, engine",
         "output": "Car."},                                                                 # the short target whole
        {"instruction": "write a POEM", "output": "Roses are red."},                        # a short target, whole
        {"instruction": "Write a poem about the sea.", "output": "Waves."},                 # ... within a message
        {"instruction": "Tell me a joke.", "output": "Compose an engaging travel blog post about a recent trip to "
                                                    "Hawaii, highlighting cultural experiences, they said."},
        {"instruction": "Compose an engaging travel blog post about a recent trip", "output": "to Hawaii, "
                        "highlighting cultural experiences and must-see attractions."},     # split across messages
    ]
    ws, row = _pool(tmp_path, records)
    sel = ws.select(method="decontaminate", name="clean", target=BENCH)
    got = _decisions(sel)
    leak, near, short, poem, sea, in_answer, split = (row[r["instruction"]] for r in records)
    assert got[leak][0] == got[short][0] == got[poem][0] == got[in_answer][0] == "rejected"
    assert got[near][0] == got[sea][0] == got[split][0] == "kept"
    assert got[poem][1]["target"] == 3 and got[poem][1]["shared_words"] == "write a poem"
    assert got[leak][1]["target"] == 1 and got[short][1]["target"] == 2
    assert got[leak][1]["shared_words"] == "compose an engaging travel blog post about a recent trip to hawaii highlighting"
    assert got[short][1]["shared_words"] == " ".join(words(BENCH[1]))
    assert {r["reason"] for r in sel.table.to_pylist() if r["decision"] == "rejected"} == {Reason.CONTAMINATED.value}
    assert "target 1" in describe(Reason.CONTAMINATED, got[leak][1])
    assert sel.provenance["targets_matched_whole"] == 1 and sel.provenance["target_texts"] == 3
    assert sel.provenance["targets_without_words"] == 0
    wordless = ws.select(method="decontaminate", name="q", target=[*BENCH, "???"])
    assert wordless.provenance["targets_without_words"] == 1 and wordless.ids == sel.ids  # said, and matches nothing

    only_instructions = _decisions(ws.select(method="decontaminate", name="ins", target=BENCH, text="instruction"))
    assert only_instructions[in_answer][0] == "kept" and only_instructions[leak][0] == "rejected"
    only_responses = _decisions(ws.select(method="decontaminate", name="resp", target=BENCH, text="response"))
    assert only_responses[in_answer][0] == "rejected" and only_responses[leak][0] == "kept"


def test_invisible_characters_hide_no_word():
    """A zero-width space (or joiner, BOM, soft hyphen) inserted in a benchmark text splits no word: the characters
    exact dedup drops are dropped here too, so such a copy is still contaminated."""
    hidden = BENCH[0].replace("engaging", "enga\u200bging").replace("cultural", "cul\u00adtural")
    assert words(hidden) == words(BENCH[0])
    assert words("hel\u200blo \ufeffworld") == ["hello", "world"]


@pytest.mark.parametrize("ngram,min_words,min_overlap", [(13, 8, 0.0), (6, 3, 0.0), (4, 4, 0.0), (4, 3, 0.5)])
def test_decisions_match_the_definition_on_a_random_pool(tmp_path, ngram, min_words, min_overlap):
    rng = np.random.default_rng(ngram)
    vocab = [f"w{i}" for i in range(12)]  # a small vocabulary, so chance runs of every length occur
    targets = [" ".join(rng.choice(vocab, rng.integers(2, 20))) for _ in range(40)]
    texts = [" ".join(rng.choice(vocab, rng.integers(1, 40))) for _ in range(300)]
    texts = [f"{i}: {t}" for i, t in enumerate(texts)]
    texts += [f"lead {t} tail" for t in targets if len(t.split()) >= min_words][:10]  # certain leaks
    texts += list(dict.fromkeys(t for t in targets if len(t.split()) < min_words))[:5]  # short targets, whole
    records = [{"instruction": t, "output": "ok"} for t in texts]
    ws, _ = _pool(tmp_path, records)
    sel = ws.select(method="decontaminate", name="d", target=targets, text="instruction", ngram=ngram,
                    min_words=min_words, min_overlap=min_overlap)
    got = _decisions(sel)
    want = by_definition([[{"role": "user", "content": r["instruction"]}] for r in records], targets, ngram, min_words,
                         min_overlap)
    assert [got[rid][0] == "rejected" for rid in ws.ids] == want
    assert 10 <= sum(want) < len(want)  # both decisions occur


def test_min_overlap_keeps_rows_sharing_a_little_of_a_long_evaluation_text(tmp_path):
    long = ("def lcs(a, b): dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]; for i in range(len(a)): "
            "for j in range(len(b)): dp[i + 1][j + 1] = dp[i][j] + 1 if a[i] == b[j] else max(dp[i][j + 1], "
            "dp[i + 1][j]); return dp[-1][-1]. Find the bug in this function and explain how to fix it.")
    boilerplate = "dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]; for i in range(len(a)): sets up my table"
    records = [{"instruction": "Write a grid walk.", "output": boilerplate},
               {"instruction": long.replace("Find the bug", "Can you find the bug"), "output": "It is fine."}]
    ws, row = _pool(tmp_path, records)
    anyrun = _decisions(ws.select(method="decontaminate", name="a", target=[long]))
    half = _decisions(ws.select(method="decontaminate", name="h", target=[long], min_overlap=0.5))
    code, copy = row["Write a grid walk."], row[records[1]["instruction"]]
    assert anyrun[code][0] == anyrun[copy][0] == "rejected" and 0 < anyrun[code][1]["overlap"] < 0.5
    assert half[code][0] == "kept" and half[copy][0] == "rejected" and half[copy][1]["overlap"] > 0.5


def test_cli_reads_a_target_file_of_any_shape_and_chains(tmp_path):
    ws, row = _pool(tmp_path, [{"instruction": f"Write a story about a dragon number {i}.", "output": "Once."}
                               for i in range(5)] + [{"instruction": "Summarise this.", "output": BENCH[0]}])
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"instruction": "Improve this", "output": BENCH[0]}])
    runner = CliRunner()
    res = runner.invoke(app, ["select", str(ws.path), "--method", "decontaminate", "--name", "clean",
                              "--target", str(bench)])
    assert res.exit_code == 0, res.output
    assert "matches an evaluation text" in res.output
    clean = Workspace.open(ws.path).selection("clean")
    assert set(clean.ids) == set(ws.ids) - {row["Summarise this."]}
    res = runner.invoke(app, ["select", str(ws.path), "--method", "random", "--name", "few", "--budget", "2",
                              "--from", "clean"])
    assert res.exit_code == 0, res.output
    assert set(Workspace.open(ws.path).selection("few").ids) <= set(clean.ids)
    lines = tmp_path / "bench.txt"
    lines.write_text("write a STORY about a dragon, number 3\n")
    res = runner.invoke(app, ["select", str(ws.path), "--method", "decontaminate", "--name", "c2",
                              "--target", str(lines), "--param", "text=instruction"])
    assert res.exit_code == 0, res.output
    assert Workspace.open(ws.path).selection("c2").decisions()["rejected"] == 1


def test_max_cosine_similarity_catches_copies_whose_words_were_reformatted(tmp_path):
    target = "Convert the given HTML into Markdown format.\n\n<code>Use `code` in your Markdown file.</code>"
    records = [{"instruction": "Convert the given HTML into Markdown format.\nInput: <code>Use `code` in your "
                               "Markdown file.</code>", "output": "Use `code` in your Markdown file."},
               {"instruction": "Explain how tides work.", "output": "The moon."}]
    ws, row = _pool(tmp_path, records)
    with pytest.raises(CurateError, match="curate embed"):
        ws.select(method="decontaminate", name="d", target=[target], max_cosine_similarity=0.95)
    ws.embed(progress=False)
    words_only = _decisions(ws.select(method="decontaminate", name="w", target=[target]))
    both = _decisions(ws.select(method="decontaminate", name="b", target=[target], max_cosine_similarity=0.95))
    copy, other = row[records[0]["instruction"]], row["Explain how tides work."]
    assert words_only[copy][0] == "kept"  # "Input:" breaks every run of the target
    assert both[copy][0] == "rejected" and both[copy][1]["target"] == 1 and both[copy][1]["similarity"] > 0.95
    assert both[other][0] == "kept"
    assert "cosine" in describe(Reason.CONTAMINATED, both[copy][1])
    ws.embed(text="response", name="answers", progress=False)  # prompts only as targets: nothing to compare
    with pytest.raises(CurateError, match="1 of 1 targets have no response text"):
        ws.select(method="decontaminate", name="r", target=[target], max_cosine_similarity=0.95, embeddings="answers")


def test_benchmark_files_of_prompt_turns_are_targets_as_they_are(tmp_path):
    ws, row = _pool(tmp_path, [{"instruction": BENCH[0], "output": "Aloha."},
                               {"instruction": "Rewrite your previous response. Start every sentence with the letter A.",
                                "output": "A."},
                               {"instruction": "Explain how tides work.", "output": "The moon."}])
    mtbench = write_jsonl(tmp_path / "mt.jsonl", [{"question_id": 81, "category": "writing", "turns": [
        BENCH[0], "Rewrite your previous response. Start every sentence with the letter A."]}])
    arena = write_jsonl(tmp_path / "arena.jsonl", [{"question_id": "x1", "turns": [{"content": BENCH[0]}]}])
    by_mtbench = _decisions(ws.select(method="decontaminate", name="mt", target=str(mtbench)))
    by_arena = _decisions(ws.select(method="decontaminate", name="ah", target=str(arena)))
    assert sorted(d for d, _ in by_mtbench.values()) == ["kept", "rejected", "rejected"]  # both turns are targets
    assert by_arena[row[BENCH[0]]][0] == "rejected" and by_arena[row["Explain how tides work."]][0] == "kept"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"turns": ["a prompt"]}, {"turns": 5}, "{not json"])
    with pytest.raises(CurateError, match=r"bad.jsonl: line 2: expected 'turns'"):
        ws.select(method="decontaminate", name="b", target=str(bad))


def test_bad_settings_are_refused_by_name(tmp_path):
    ws, _ = _pool(tmp_path, [{"instruction": "a b c d e f g h i j", "output": "x"}])
    with pytest.raises(CurateError, match="min_words"):
        ws.select(method="decontaminate", name="d", target=BENCH, ngram=5, min_words=8)
    with pytest.raises(CurateError, match="missing.txt: file: no such file or folder"):
        ws.select(method="decontaminate", name="d", target=str(tmp_path / "missing.txt"))
    with pytest.raises(CurateError, match=r"text= \(CLI: --param text=\) must be"):
        ws.select(method="decontaminate", name="d", target=BENCH, text="prompt")
    with pytest.raises(CurateError, match="min_overlap"):
        ws.select(method="decontaminate", name="d", target=BENCH, min_overlap=1.5)
    with pytest.raises(CurateError, match="needs target texts"):
        ws.select(method="decontaminate", name="d", target=[])


def test_an_embedding_set_without_a_cosine_threshold_is_refused_not_ignored(tmp_path):
    """--param embeddings=NAME is read by the embedding test alone: without max_cosine_similarity it did nothing, and
    the selection passed for one that had compared the rows with that set."""
    ws, _ = _pool(tmp_path, [{"instruction": "a b c d e f g h i j", "output": "x"}])
    result = CliRunner().invoke(app, ["select", str(ws.path), "--method", "decontaminate", "--name", "d", "--target",
                                      str(write_jsonl(tmp_path / "eval.txt", BENCH)), "--param", "embeddings=answers"])
    assert isinstance(result.exception, CurateError) and str(result.exception) == (
        "decontaminate: embeddings='answers' is the embedding set of max_cosine_similarity, and none is given: give "
        "max_cosine_similarity too, or leave embeddings out")
    assert "d" not in ws.selections
    assert len(ws.select(method="decontaminate", name="words", target=BENCH)) == 1  # the words alone, as before


def test_a_target_file_given_as_a_path_is_read_as_its_name_is(tmp_path):
    """``target=Path(...)``, as ``curate run --decontaminate`` hands it over: a file, read as its name would be (it was
    refused as "not a list of texts or a file"), and stored in the provenance as text."""
    from pathlib import Path

    ws, by_text = _pool(tmp_path, [{"instruction": BENCH[2], "output": "Roses."},
                                   {"instruction": "Write a limerick.", "output": "There once..."}])
    (tmp_path / "bench.txt").write_text("\n".join(BENCH) + "\n", encoding="utf-8")
    by_name = _decisions(ws.select(method="decontaminate", name="by_name", target=str(tmp_path / "bench.txt")))
    sel = ws.select(method="decontaminate", name="by_path", target=Path(tmp_path / "bench.txt"))
    assert _decisions(sel) == by_name
    assert by_name[by_text[BENCH[2]]][0] == "rejected" and by_name[by_text["Write a limerick."]][0] == "kept"
    assert ws.selection("by_path").provenance["params"]["target"] == str(tmp_path / "bench.txt")
