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
                      r"\bя не (могу|в состоянии|буду)\b|\bno (puedo|podemos)\b|\bje ne (peux|suis pas en mesure)\b|"
                      r"\b(ich|wir) (kann|können) (ihnen |dir |euch )?(dabei |damit |hierbei )?(nicht|keine)\b|"
                      r"\b(kann|können) (ich|wir) (ihnen |dir |euch )?(dabei |damit |hierbei )?(nicht|keine)\b",
                      re.IGNORECASE)
# a reply that opens by declining, without an apology
_FLAT = re.compile(r"^\W*((我|我们)(无法|不能)(协助|帮助|帮你|帮您|提供|完成|回答)|я не могу (помочь|выполнить|предоставить)|"
                   r"no puedo (ayudar|ayudarte|proporcionar|cumplir)|je ne peux pas (vous |t')?(aider|fournir|répondre)|"
                   r"ich kann (ihnen |dir )?(dabei |damit )?nicht helfen)", re.IGNORECASE)
DISCLAIMER = re.compile(r"^\W*(作为(一个|一款|一名)?\s*(人工智能|ai)\s*(语言模型|助手|模型)?|"
                        r"как (языковая модель|модель ии|ии|искусственный интеллект)\b|"
                        r"como (un |una )?(modelo de lenguaje|ia|inteligencia artificial)\b|"
                        r"en tant qu(e |')(modèle de langage|ia|intelligence artificielle)\b|"
                        r"als (ki|künstliche intelligenz|ki-sprachmodell|sprachmodell)\b)", re.IGNORECASE)


def decline_evidence(text: str) -> str | None:
    """The opening of ``text`` when it declines the task in one of these stock phrases, else None."""
    if flat := _FLAT.match(text):
        return flat.group(0).strip()
    if _APOLOGY.match(text) and (decline := _DECLINE.search(text, 0, REFUSAL_WINDOW)):
        return text[:decline.end()].strip()
    return None
