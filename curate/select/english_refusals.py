"""The English phrases of the ``refusal`` and ``ai_disclaimer`` rules (``curate.select.heuristics``; the stock phrases
of other languages are in ``curate.select.refusal_phrases``). Each is read in a reply's opening, or in a short reply
as a whole: a long answer that mentions "is not programmed to" or quotes "As an AI language model" further on is an
answer."""

from __future__ import annotations

import re

from curate.select.refusal_phrases import DISCLAIMER as OTHER_DISCLAIMER
from curate.select.refusal_phrases import REFUSAL_WINDOW, decline_evidence

NON_ANSWER_MAX_CHARS = 300  # a reply saying it did not understand the question is a non-answer up to this length
DISCLAIMER_WINDOW = REFUSAL_WINDOW  # characters of a reply's opening read for a disclaimer after its first sentence

_SORRY = r"(i'?m (really |so )?sorry|i am (really |so )?sorry|sorry|i apologi[sz]e|my apologies)"
APOLOGY = re.compile(rf"^\W*({_SORRY}|unfortunately)\b", re.IGNORECASE)
# what makes an apology a refusal: the speaker (or "the model") then says it will not or cannot do the task; "so that
# I can make sure it won't happen again", after an apology to a customer, is not one; nor is "the compiler is not
# programmed to", which names no speaker
DECLINE = re.compile(r"\b(i|we|i'?m|i am|we are|the (gpt )?model|this model)\s+((really|simply|just|currently)\s+)?"
                     r"(can ?not|can'?t|won'?t|will not|unable to|not able to|not (comfortable|willing|interested in|in a position to|allowed to|"
                     r"permitted to)|(don'?t|do not) (want to|feel comfortable)|must (decline|refuse))\b|"
                     r"\b(i'?m not|i am not|i was not|i wasn'?t|i'?ve not been|i have not been|i haven'?t been)\s+"
                     r"(programmed|designed)\s+to\b|"
                     r"\b(against|violates?) my (programming|(ethical |content )?guidelines|(ethical )?principles)\b|"
                     r"\b(can ?not|can'?t) be (generated|done|completed|performed|produced|created)\b|"
                     r"\bbeyond (my|the|its) (capabilit|abilit|scope)|\bnot possible for (me|the model|gpt|an ai)\b",
                     re.IGNORECASE)
FLAT_REFUSAL = re.compile(r"^\W*((i|we) (can ?not|can'?t|won'?t|will not)|(i'?m|i am|we'?re|we are) "
                          r"(unable to|not able to)) (help|assist|provide|comply|fulfil+|complete|do that|do this|answer|generate|create|write|"
                          r"engage|support|participate)\b", re.IGNORECASE)
# a short reply that opens (after an apology, or not) by saying it did not understand what was asked, and ends the
# clause there ("I didn't understand the question at first, but the answer is 42" answers)
NOT_UNDERSTOOD = re.compile(rf"^\W*({_SORRY}\W*(but\s+)?)?(i|we)\s*(did ?n[o']?t|do ?n[o']?t|could ?n[o']?t|can ?not|can'?t|"
                            r"'?m not sure (that )?i|am not sure (that )?i)\s+(quite\s+|fully\s+)?(understand|follow)\s+"
                            r"((the|your|this)( last| previous)? (question|request|query|prompt|message|instruction|input|task)"
                            r"(?=\s*([.!?,;:]|$)|\s+you\b)|"
                            r"what you (mean|are asking|'re asking|want|asked|are referring to|'re referring to)\b)",
                            re.IGNORECASE)
AI_DISCLAIMER = re.compile(r"^\W*as an? ((ai|artificial intelligence)( language model| assistant| model| chatbot)?|"
                           r"(large )?language model|llm|digital assistant|virtual assistant)\b", re.IGNORECASE)
# the speaker calling itself an AI at a sentence's start after the first ("Hello! As an AI language model, I ...",
# "Hello! I'm an AI language model, so ..."): the self-description ends its phrase, so "As an AI researcher would
# say" and "I am an AI engineer" do not disclaim; a quotation of one ('"As an AI language model" is ...') is no
# sentence of the reply's own
SENTENCE_DISCLAIMER = re.compile(r"(?:^|[.!?]\s+|\n\s*)[*_]*((as|being) an? (ai|artificial intelligence)( language model| "
                                 r"assistant| model| chatbot)?\s*,|as a (large )?language model\s*,|"
                                 r"(i'?m|i am) (just |only |merely |simply )?an? (ai|artificial intelligence)( language model| "
                                 r"assistant| model| chatbot| program)?(?=\s*[,.;!]|\s+(and|so|but|without|with no|that|who|which)\b)|"
                                 r"(i'?m|i am) (just |only |merely |simply )?an? (large )?language model\b)", re.IGNORECASE)

# the user asks about the assistant itself (what it is, whether it feels, thinks or is conscious, how it compares,
# "tell me about yourself", "a slogan for yourself", "This AI is channeling pure love"): its self-description answers the question; AI as a topic
# ("AI in healthcare"), "How are you?" or a "yourself" that is the user's ("How do I teach myself/yourself Python",
# "Do it yourself tips") is no such question
_AI = r"(an? )?(ai|a\.i\.|artificial intelligence|(large )?language model|llm|chat ?bot|bot|robot|machine|computer( program)?|(chat)?gpt[-\w.]*)"
ABOUT_AI = re.compile(rf"\b((about|describe|introduce|describing|introducing|see|view|consider|think of|call|identify) yourself|"
                      r"(bio(graphy)?|introduction|slogan|motto|description|profile|portrait) (of|for) yourself|"
                      rf"who are you|what are you|are you (really |actually |just )?({_AI}|human|a human|a person|real|"
                      rf"conscious|sentient|alive|self-aware)|are you (as|more|less) \w+ (as|than)|you('re| are) {_AI}|"
                      rf"this (ai|a\.i\.|assistant|chat ?bot|language model|llm)|as {_AI}\s*,?\s*(what|how|do|can|would|are)|"
                      r"(do|can|could|would|will) you (ever )?(have|feel|experience|think|dream|want|love|get)\b[^.?!\n]{0,40}"
                      r"\b(feelings?|emotions?|consciousness|conscious|sentien\w*|opinions?|beliefs?|a body|lonely|bored|"
                      r"like (a )?humans?|for yourself|on your own)|your (own )?(feelings|emotions|nature|creators?|"
                      r"consciousness|training( data)?|opinions?|beliefs))\b", re.IGNORECASE)
# the user asks for the words a "did not understand" reply says: a request to translate, say, repeat or rephrase
# something, as an imperative opening a line or a sentence ("Translate: ...", "Please repeat after me: ..."), as "can
# you ...", "you need to translate", "take it and rephrase it", or asks for a translation, a translator or how to say
# something; "What would you say is the meaning of blorf?" and "What does the Bible say?" ask for an answer
_REWORD = r"(translat\w*|repeat|rephrase|paraphrase|reword|restate)"
_WORDS_VERB = rf"(say|{_REWORD})"
ASKS_FOR_WORDS = re.compile(rf"(^|[.!?:;]\s+|\n)[\W_]*((please|now|just|kindly|ok(ay)?|also|first|then)\W+)*{_WORDS_VERB}\b|"
                            rf"\b(can|could|will) you (please |kindly |now |also )?{_WORDS_VERB}\b|"
                            rf"\bwould you ((please |kindly )?{_REWORD}|(please|kindly) say)\b|"
                            r"\bwould you mind (translating|saying|repeating|rephrasing|paraphrasing|rewording)\b|"
                            rf"(\b(to|and|then) |,\s*){_REWORD}\b|\b(you to|help me) say\b|\btranslations? (of|into|to|in|for|from)\b|"
                            r"\b(as|of|be|are) (an?|the) ([\w-]+ ){0,3}translator\b|\b(how|ways?) (to|do|would|can|should) (you |i |one |we )?say\b|"
                            r"\bmeans? in english\b", re.IGNORECASE)
_NOT_WORD = re.compile(r"\W+")
# words the user quotes (a prompt flattening a conversation holds an earlier answer unquoted: "I'm not sure I
# understand the question" said twice is a non-answer twice)
_QUOTED = re.compile(r"\"([^\"\n]+)\"|\u201c([^\u201d\n]+)\u201d|(?<!\w)'([^'\n]+)'(?!\w)")


def refusal_evidence(reply: str, asked: str = "") -> str | None:
    """The opening of ``reply`` when it declines (an English or other-language stock refusal, an apology followed by
    a decline within ``REFUSAL_WINDOW`` characters) or, in at most ``NON_ANSWER_MAX_CHARS`` characters, says it did
    not understand what was asked; else None. The second kind answers when the user's turns (``asked``) ask to
    translate, say, repeat or rephrase something (``ASKS_FOR_WORDS``: "Translate: 'No entiendo la pregunta.'", "Can
    you repeat ...", not "What would you say is ..."), or quote the reply's words."""
    if found := decline_evidence(reply, FLAT_REFUSAL, APOLOGY, DECLINE) or decline_evidence(reply):
        return found
    if len(reply.strip()) <= NON_ANSWER_MAX_CHARS and (found := NOT_UNDERSTOOD.match(reply)):
        words = _NOT_WORD.sub(" ", reply.lower()).strip()
        quoted = (_NOT_WORD.sub(" ", "".join(q).lower()) for q in _QUOTED.findall(asked))
        if ASKS_FOR_WORDS.search(asked) or any(words in q for q in quoted):
            return None
        return found.group(0).strip()
    return None


def disclaimer_evidence(reply: str, asked: str = "") -> str | None:
    """The disclaimer ``reply`` opens with ("As an AI language model", or another language's stock one), or the one
    that starts a sentence of its first ``DISCLAIMER_WINDOW`` characters ("Hello! As an AI language model, ..."),
    else None. The second kind is an answer when the user's turns (``asked``, no system turn) ask about the assistant
    itself ("Are you an AI?", "write a song about yourself, the LLM"; not "AI in healthcare")."""
    if found := AI_DISCLAIMER.match(reply) or OTHER_DISCLAIMER.match(reply):
        return found.group(0).strip()
    opening = reply[:DISCLAIMER_WINDOW].lower()
    if not any(part in opening for part in ("an ai", "an artificial", "language model")) or ABOUT_AI.search(asked):
        return None
    if found := SENTENCE_DISCLAIMER.search(reply, 0, DISCLAIMER_WINDOW):
        return found.group(1).strip()
    return None
