"""Benchmark: how the packaged English embedding model (all-MiniLM-L6-v2) reads other languages.

    python evals/bench_multilingual_embed.py [--max-cosine 0.9]

Data: 15 hand-written instructions on 15 unrelated topics (photosynthesis, inflation, baking bread, ...), each in
English, Russian, Chinese, Japanese, Arabic and Hindi (below; the same meaning in each language). Per language it
prints the share of the instructions' tokens the model's tokenizer reads as ``[UNK]``
(``curate.embed.vocabulary.unknown_token_share``), the cosine of the photosynthesis and the inflation question, the
mean cosine over all pairs of different topics, and how many of the 15 topics DEITA admission keeps
(``curate.select.admission.admit``, equal scores, ``--max-cosine`` = ``DEITA.max_cosine_similarity``): English, the
language the model was trained on, is the reference in the same run. One ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.defaults import DEITA  # noqa: E402
from curate.embed.encoder import encode  # noqa: E402
from curate.embed.vocabulary import unknown_token_share  # noqa: E402
from curate.select.admission import admit  # noqa: E402

TOPICS = {
    "en": ["How does photosynthesis work in plants?", "What causes inflation in an economy?",
           "How do I bake bread at home?", "How do I sort a list in Python?",
           "What were the causes of the French Revolution?", "How can I sleep better at night?",
           "Why do earthquakes happen?", "What is the best way to learn the guitar?", "What is a black hole?",
           "Write a cover letter for a teaching job.", "How do vaccines protect the body?",
           "Explain a good chess opening for beginners.", "What are the effects of climate change on the oceans?",
           "How can I save money on groceries?", "Write a short poem about autumn."],
    "ru": ["Как происходит фотосинтез у растений?", "Что вызывает инфляцию в экономике?", "Как испечь хлеб дома?",
           "Как отсортировать список в Python?", "Каковы были причины Французской революции?",
           "Как лучше спать по ночам?", "Почему происходят землетрясения?",
           "Как лучше всего научиться играть на гитаре?", "Что такое чёрная дыра?",
           "Напишите сопроводительное письмо на должность учителя.", "Как вакцины защищают организм?",
           "Объясните хороший шахматный дебют для начинающих.", "Как изменение климата влияет на океаны?",
           "Как сэкономить деньги на продуктах?", "Напишите короткое стихотворение об осени."],
    "zh": ["植物的光合作用是如何进行的？", "经济中通货膨胀的原因是什么？", "我怎样在家里烤面包？",
           "如何在Python中对列表进行排序？", "法国大革命的原因是什么？", "我怎样才能晚上睡得更好？",
           "地震为什么会发生？", "学习吉他的最好方法是什么？", "什么是黑洞？", "为一份教师工作写一封求职信。",
           "疫苗如何保护身体？", "请为初学者解释一个好的国际象棋开局。", "气候变化对海洋有什么影响？",
           "我怎样才能在买菜上省钱？", "写一首关于秋天的短诗。"],
    "ja": ["植物の光合成はどのように行われますか？", "経済におけるインフレの原因は何ですか？",
           "家でパンを焼くにはどうすればいいですか？", "Pythonでリストを並べ替えるにはどうすればいいですか？",
           "フランス革命の原因は何でしたか？", "夜によく眠るにはどうすればいいですか？", "地震はなぜ起こるのですか？",
           "ギターを習う一番良い方法は何ですか？", "ブラックホールとは何ですか？",
           "教師の仕事のためのカバーレターを書いてください。", "ワクチンはどのように体を守りますか？",
           "初心者向けの良いチェスのオープニングを説明してください。", "気候変動は海にどのような影響を与えますか？",
           "食料品の節約にはどうすればいいですか？", "秋についての短い詩を書いてください。"],
    "ar": ["كيف تتم عملية التمثيل الضوئي في النباتات؟", "ما الذي يسبب التضخم في الاقتصاد؟",
           "كيف أخبز الخبز في المنزل؟", "كيف أرتب قائمة في بايثون؟", "ما هي أسباب الثورة الفرنسية؟",
           "كيف يمكنني أن أنام بشكل أفضل في الليل؟", "لماذا تحدث الزلازل؟",
           "ما هي أفضل طريقة لتعلم العزف على الغيتار؟", "ما هو الثقب الأسود؟", "اكتب رسالة تغطية لوظيفة معلم.",
           "كيف تحمي اللقاحات الجسم؟", "اشرح افتتاحية شطرنج جيدة للمبتدئين.",
           "ما هي آثار تغير المناخ على المحيطات؟", "كيف يمكنني توفير المال عند شراء البقالة؟",
           "اكتب قصيدة قصيرة عن الخريف."],
    "hi": ["पौधों में प्रकाश संश्लेषण कैसे होता है?", "अर्थव्यवस्था में महंगाई का कारण क्या है?",
           "मैं घर पर ब्रेड कैसे बेक करूं?", "पायथन में सूची को कैसे क्रमबद्ध करें?", "फ्रांसीसी क्रांति के कारण क्या थे?",
           "रात में बेहतर नींद कैसे लें?", "भूकंप क्यों आते हैं?", "गिटार सीखने का सबसे अच्छा तरीका क्या है?",
           "ब्लैक होल क्या है?", "शिक्षक की नौकरी के लिए एक आवेदन पत्र लिखें।", "टीके शरीर की रक्षा कैसे करते हैं?",
           "शुरुआती लोगों के लिए एक अच्छी शतरंज ओपनिंग समझाइए।", "जलवायु परिवर्तन का महासागरों पर क्या प्रभाव पड़ता है?",
           "मैं किराने के सामान पर पैसे कैसे बचा सकता हूं?", "शरद ऋतु के बारे में एक छोटी कविता लिखें।"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-cosine", type=float, default=DEITA.max_cosine_similarity)
    args = parser.parse_args()
    n = len(TOPICS["en"])
    assert all(len(texts) == n for texts in TOPICS.values())
    fields = []
    print(f"{n} topics per language, packaged MiniLM, DEITA admission at max cosine {args.max_cosine}, equal scores")
    for lang, texts in TOPICS.items():
        unk = unknown_token_share(texts, None)
        vectors = encode(texts)
        sims = vectors @ vectors.T
        off_diagonal = sims[~np.eye(n, dtype=bool)]
        admitted = len(admit(vectors, np.ones(n), max_cosine_similarity=args.max_cosine).admitted)
        print(f"{lang}: [UNK] share {unk:.2f}; cosine photosynthesis / inflation {sims[0, 1]:.3f}; "
              f"mean cosine of different topics {off_diagonal.mean():.3f}; admitted {admitted} of {n}")
        fields += [f"{lang}_unk={unk:.2f}", f"{lang}_cos01={sims[0, 1]:.3f}", f"{lang}_admitted={admitted}"]
    print(f"RESULT topics={n} " + " ".join(fields))


if __name__ == "__main__":
    main()
