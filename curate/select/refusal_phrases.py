"""The most common refusal and "as an AI language model" openings in Chinese, Japanese, Russian, Spanish, French and
German, for the ``refusal`` and ``ai_disclaimer`` rules (``curate.select.heuristics``, whose own phrases are
English). A few stock phrases each, not translations of the English rules: a reply that declines in other words,
or in another language, passes."""

from __future__ import annotations

import re

REFUSAL_WINDOW = 200  # characters of a reply's opening read for the decline that follows an apology

# an apology opening the reply ...
_APOLOGY = re.compile(r"^\W*(很?抱歉|对不起|申し訳(ありません|ございません)|すみません|извините|простите|к сожалению|"
                      r"lo siento|lamentablemente|(je suis )?désolée?|malheureusement|es tut mir leid|leider)",
                      re.IGNORECASE)
# ... and then the speaker says it cannot or will not
_DECLINE = re.compile(r"(我|我们)(无法|不能|不可以|没有办法)|(お応え|お手伝い|対応|提供|お答え)(することは)?できません|"
                      r"\bя не (могу|в состоянии|буду)\b|\bno (puedo|podemos)\b|\bje ne (peux|suis pas en mesure)\b(?!\s+que\b)|"
                      r"\b(ich|wir) (kann|können) (ihnen |dir |euch )?(dabei |damit |hierbei )?(nicht|keine)\b|"
                      r"\b(kann|können) (ich|wir) (ihnen |dir |euch )?(dabei |damit |hierbei )?(nicht|keine)\b",
                      re.IGNORECASE)
# a reply that opens by declining, without an apology
_FLAT = re.compile(r"^\W*((我|我们)(无法|不能)(协助|帮助|帮你|帮您|提供|完成|回答)|я не могу (помочь|выполнить|предоставить)|"
                   r"no puedo (ayudar|ayudarte|proporcionar|cumplir)|je ne peux pas (vous |t')?(aider|fournir|répondre)|"
                   r"ich kann (ihnen |dir )?(dabei |damit )?nicht helfen)", re.IGNORECASE)
# a self-description that ends its phrase (a comma, or German "habe/bin/kann ich"): "Как ИИ помогает врачам" and
# "作为人工智能的一个分支" talk about AI, they do not disclaim
DISCLAIMER = re.compile(r"^\W*(作为(一个|一款|一名)?\s*(人工智能|ai)\s*(语言模型|助手|模型)?\s*[，,]|"
                        r"как (языковая модель|модель ии|ии|искусственный интеллект)( ии)?\s*,|"
                        r"como (un |una )?(modelo de lenguaje|ia|inteligencia artificial)( de ia)?\s*,|"
                        r"en tant qu(e |')(modèle de langage|ia|intelligence artificielle)( d'ia)?\s*,|"
                        r"als (ki|künstliche intelligenz|ki-sprachmodell|sprachmodell)(\s*,|\s+(habe|bin|kann|verfüge) ich\b))",
                        re.IGNORECASE)


def decline_evidence(text: str, flat: re.Pattern[str] = _FLAT, apology: re.Pattern[str] = _APOLOGY,
                     decline: re.Pattern[str] = _DECLINE) -> str | None:
    """The opening of ``text`` when it declines the task: ``flat`` matches its opening, or ``apology`` does and
    ``decline`` is found in its first ``REFUSAL_WINDOW`` characters; else None. The patterns default to these other
    languages' stock phrases (``curate.select.heuristics`` passes its English ones)."""
    if found := flat.match(text):
        return found.group(0).strip()
    if apology.match(text) and (declined := decline.search(text, 0, REFUSAL_WINDOW)):
        return text[:declined.end()].strip()
    return None
