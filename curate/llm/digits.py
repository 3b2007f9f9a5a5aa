"""Digit scores (DEITA): one generated token with its top logprobs; tokens are mapped to digits by their
text (``"5"`` or ``" 5"``); the score is the expected digit under the softmax restricted to the scale's
digits, ``Σ_k k·p_k / Σ_k p_k``. The probability mass the digits carried is recorded. The digits present
(all, or some with the rest missing from the top logprobs) are renormalised only when their mass is at least
``min_digit_mass``; otherwise the call fails (``low_digit_mass``): a model that answered a word put its odds
elsewhere, and its digits' leftovers are no score even when all six are listed. A logprob that is not a number
(NaN) fails the call (``model_error``). A reply without logprobs to a request that asked for them fails the
call (``no_logprobs``: some OpenAI-compatible proxies drop them silently, and a digit parsed from the text would
put whole numbers in a column of expectations); so does one that has the sampled token's logprob alone, where
more top logprobs were asked for (``no_top_logprobs``: a server that ignores ``top_logprobs``; the sampled digit
scored alone is a whole number passed off as an expectation). Only a backend that cannot give logprobs (its request asked for
none) has the digit parsed from the text, the score marked ``parsed``: a whole number at its start, not one with a
decimal part (``4.5``) or followed by another as a range or an alternative (``4-5``, ``4 or 5``): those fail
``unparsable`` (a server that ignores ``max_tokens: 1`` may answer so; they were read as 4). Never a default score.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from curate.codes import Failure, FailureCode
from curate.defaults import JUDGE


@functools.lru_cache(maxsize=65536)
def _token_digit(token: str) -> int | None:
    # ASCII only: "⁵" passes str.isdigit() but not int(), and "١" or "５" are not the digit the prompt asks for
    text = token.replace("\u0120", " ").replace("\u2581", " ").strip()
    return int(text) if len(text) == 1 and "0" <= text <= "9" else None


# after the leading number: a decimal part, or a second number given as a range or an alternative ("4-5", "4 or 5")
_NOT_ONE_NUMBER = re.compile(r"[.,]\d|\s*(?:-|\u2013|to|or|and)\s*\d", re.ASCII | re.IGNORECASE)

DIGIT_RULE = 7  # digit_score's rule, in judge fingerprints: a change re-parses stored scores (from the cache)


def _sampled_only(response: dict[str, Any], top: list[dict[str, Any]] | None,
                  top_requested: int | None) -> dict[str, Any] | None:
    """The sampled token's {token, logprob} when it is all the reply has of the top logprobs asked for: kept apart
    by the backend (``sampled_token``), or a top list of that one entry where more were asked for (a server that
    ignores ``top_logprobs``, or an answer cached before 2026-12-07, when the backend put its sampled token there)."""
    if not top and response.get("sampled_token"):
        return response["sampled_token"]
    if top and len(top) == 1 and (top_requested or 0) > 1:
        return top[0]
    return None


def digit_score(response: dict[str, Any], scale: tuple[int, int], min_digit_mass: float = JUDGE.min_digit_mass, *,
                logprobs_requested: bool, top_requested: int | None = None
                ) -> tuple[float | None, dict[str, Any], Failure | None]:
    """(score, info, failure) from a response's first-token top logprobs (``top_requested``: how many its request
    asked for); from its text only when its request asked for no logprobs (``logprobs_requested`` False: a backend
    without them)."""
    lo, hi = scale
    text = response.get("text") or ""
    top = response.get("top_logprobs")
    if logprobs_requested and not top and not text.strip():  # nothing at all came back: not a proxy's dropping
        ended = f", finish_reason {response['finish_reason']!r}" if response.get("finish_reason") else ""
        return None, {"score_method": "logprobs", "digit_mass": None, "missing_digits": None}, Failure(
            FailureCode.EMPTY_OUTPUT, f"the reply has no text and no logprobs (raw output {text!r}{ended})", text)
    if logprobs_requested and (sampled := _sampled_only(response, top, top_requested)):
        return None, {"score_method": "logprobs", "digit_mass": None, "missing_digits": None}, Failure(
            FailureCode.NO_TOP_LOGPROBS, f"the reply has the sampled token's logprob ({sampled['token']!r}, "
            f"p={math.exp(sampled['logprob']):.3f}) and no other top logprob ("
            + (f"{top_requested} asked for: a server that ignores top_logprobs?" if top_requested else
               "the request asked for none: set top_logprobs, e.g. 20") +
            f"): one token's odds are no expected score; no score recorded (output {text[:80]!r})", text)
    if logprobs_requested and not top:
        return None, {"score_method": "logprobs", "digit_mass": None, "missing_digits": None}, Failure(
            FailureCode.NO_LOGPROBS, f"logprobs were requested and the reply has none (a proxy that drops them?); "
            f"no score parsed from the text (output {text[:80]!r})", text)
    if top:
        probs: dict[int, float] = {}
        for entry in top:
            digit = _token_digit(entry["token"])
            if digit is not None and lo <= digit <= hi:
                # NaN mass passes every `<` check, and +inf (JSON's Infinity, which json.loads reads) makes the mass
                # infinite: either would be a NaN score
                if math.isnan(entry["logprob"]) or entry["logprob"] == math.inf:
                    return None, {"score_method": "logprobs", "digit_mass": None, "missing_digits": None}, Failure(
                        FailureCode.MODEL_ERROR, f"the server gave digit {entry['token']!r} the logprob "
                        f"{'NaN' if math.isnan(entry['logprob']) else '+inf'} (output {text[:80]!r})", text)
                probs[digit] = probs.get(digit, 0.0) + math.exp(entry["logprob"])
        mass = sum(probs.values())
        missing = [k for k in range(lo, hi + 1) if k not in probs]
        info = {"score_method": "logprobs", "digit_mass": mass, "missing_digits": missing}
        if not probs:
            return None, info, Failure(FailureCode.LOW_DIGIT_MASS, f"no digit {lo}-{hi} among the {len(top)} top "
                                       f"first-token logprobs (output {text[:80]!r})", text)
        if mass < min_digit_mass:  # the model answered something else: its digits' odds are noise, not a score
            absent = f"digits {missing} absent from the top logprobs and the present " if missing else "the "
            return None, info, Failure(FailureCode.LOW_DIGIT_MASS, f"{absent}digits carry mass {mass:.3f} < "
                                       f"min_digit_mass {min_digit_mass} (output {text[:80]!r})", text)
        return sum(k * p for k, p in probs.items()) / mass, info, None
    info = {"score_method": "parsed", "digit_mass": None, "missing_digits": None}
    match = re.match(r"\s*(\d+)", text, re.ASCII)
    if not match:
        return None, info, Failure(FailureCode.UNPARSABLE,
                                   f"no logprobs and no digit at the start of the output {text[:80]!r}", text)
    value = int(match.group(1))
    if more := _NOT_ONE_NUMBER.match(text, match.end()):  # "4.5" read as 4, "4 or 5" as 4: no one digit to record
        return None, info, Failure(FailureCode.UNPARSABLE, f"no logprobs and the output starts with "
                                   f"{text[match.start(1):more.end()]!r}, not one whole digit (output {text[:80]!r})",
                                   text)
    if not lo <= value <= hi:
        return None, info, Failure(FailureCode.UNPARSABLE, f"no logprobs and parsed value {value} outside "
                                   f"{lo}-{hi} (output {text[:80]!r})", text)
    return float(value), info, None
