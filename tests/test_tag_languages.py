"""Tags in other languages than English through the normaliser: stored under a spelling someone wrote (lower-cased,
never case-folded), and not merged by an embedding model that cannot read them."""

from __future__ import annotations

from curate.tags import Normalizer


def test_tags_in_other_scripts_keep_their_spelling_and_match_their_case_variants():
    """Case folding wrote "Straße" as "strasse" and the Greek "μετάφρασης" as "μετάφρασησ" (a medial sigma at the
    end of a word: misspelt); the fold still matches the variants."""
    rows = [["Straße"], ["Straße"], ["STRASSE"], ["Μετάφρασης"], ["ΜΕΤΆΦΡΑΣΗΣ"], ["Übersetzung"], ["代码调试"],
            ["Traductions"], ["traduction"]]
    norm = Normalizer(min_frequency=None, semantic=False, association=False)
    out = norm.fit_transform(rows)
    assert out[:3] == [["straße"]] * 3  # the spelling of two rows names the group; STRASSE joins it
    assert out[3] == out[4] == ["μετάφρασης"]
    assert out[5] == ["übersetzung"] and out[6] == ["代码调试"]
    assert out[7] == out[8] and out[7][0] in ("traductions", "traduction")  # a plural -s, as in English
    assert norm.transform([["STRASSE", "Straße"]]) == [["straße"]]


def test_semantic_aggregation_keeps_apart_tags_the_embedding_model_reads_as_unknown():
    """The packaged all-MiniLM-L6-v2 reads most Chinese characters as [UNK]: "翻译" (translation), "编程"
    (programming), "物理" (physics) and "烹饪" (cooking) got one vector and were merged into one tag, "数学" (maths)
    and "化学" (chemistry) into another. English tags are still embedded and merged."""
    chinese = ["翻译", "编程", "物理", "烹饪", "数学", "化学", "代码调试", "代码解释"]
    rows = [[t] for t in chinese] + [["code debugging"], ["code debugging"], ["debugging code"]]
    norm = Normalizer(min_frequency=None, association=False, eps=0.1)
    out = norm.fit_transform(rows)
    assert out[:8] == [[t] for t in chinese]
    assert out[8:] == [["code debugging"]] * 3  # English word order, one vector: merged as before
    step = norm.report[-1]
    assert step.step == "semantic_aggregation" and step.params["not_embedded"] == 8
    assert "8 tags with words the embedding model does not know ([UNK]) kept apart" in step.note


def test_a_pool_in_one_other_language_can_stem_in_it_and_an_unknown_language_is_named_at_once(tmp_path):
    """The English stemmer leaves German plurals apart (Übersetzung, Übersetzungen); stemmer_language="german" (and
    `curate tags --normalize --stemmer-language german`) merges them. A language Snowball lacks was a KeyError inside
    fit, after the frequency filter had run."""
    import pytest

    rows = [["Übersetzung"], ["Übersetzung"], ["Übersetzungen"]]
    assert Normalizer(min_frequency=None, semantic=False, association=False).fit_transform(rows)[2] == ["übersetzungen"]
    german = Normalizer(min_frequency=None, semantic=False, association=False, stemmer_language="german")
    assert german.fit_transform(rows) == [["übersetzung"]] * 3
    with pytest.raises(ValueError, match="stemmer language 'klingon': Snowball has .*german"):
        Normalizer(stemmer_language="klingon")


def test_a_mixed_pool_stems_every_latin_tag_with_its_one_stemmer_whatever_a_language_detector_reads():
    """A mixed English/German pool: one stemmer for every tag, no per-tag language detection (a one- to three-word tag
    is too short to read a language from: stemming only the tags read as the stemmer's language would split "letter"
    from "letters"; curate's own detect_language reads none of them: under 10 letters).
    With the default English stemmer every English spelling merges, German plurals stay apart (no wrong merge)."""
    rows = [["letter"], ["letters"], ["code"], ["codes"], ["Zeitung"], ["Zeitungen"], ["Gedicht"], ["Gedichte"]]
    out = Normalizer(min_frequency=None, semantic=False, association=False).fit_transform(rows)
    assert out[0] == out[1] and out[2] == out[3], out  # English spellings merge whatever the detector reads
    assert len({t for r in out[4:] for t in r}) == 3, out  # zeitung, zeitungen apart; gedicht(e): an English -e
