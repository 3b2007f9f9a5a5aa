"""Synthetic same-task versions with added constraints: complexity pairs ordered by construction.

Evol's in-depth evolution (``prompts/evol/``: add a constraint, deepen, concretise, add reasoning steps)
makes each version of a seed instruction ask for one requirement more than the last, so the versions of
one seed are ordered by complexity without a judge. :func:`constraint_chains` builds such chains from
seed instructions with constraint additions written here (families of varied templates with random
slots, several ways of attaching them); families can be held out whole, so an evaluation never sees
the templates it is tested on. Only the standard library is imported (the GPU training script loads
this file by path).

:func:`constraint_chains` only appends, so "longer is harder" orders its chains perfectly. A real Evol
model rewrites the prompt: requirements get merged into the sentence or listed tersely, and versions
gain requirement-free politeness, context or restatement. :func:`rewritten_chains` renders each
version afresh in such ways (its length orders the versions only partly right), and
:func:`filler_twins` pairs a version with a padded copy that asks for nothing more (a tie: longer, not
harder). Filler and phrasing templates come in a training and a held-out set (``held_out=True``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

# family -> templates; {n}, {k}, {who}, {place}, {topic}, {word}, {lang} are filled at random.
FAMILIES: dict[str, list[str]] = {
    "format": ["present the answer as a numbered list", "organise the answer under {k} headings",
               "put the key facts in a table with {k} columns", "return the result as JSON with the keys 'summary' and 'details'",
               "use bullet points, one idea per bullet", "end with a one-line TL;DR"],
    "length": ["keep it under {n} words", "write at least {k} paragraphs", "answer in exactly {k} sentences",
               "limit each paragraph to {k} sentences", "do not exceed {n} characters"],
    "audience": ["explain it so that {who} can follow", "tailor the answer to {who}",
                 "assume the reader is {who} with no background in the subject", "write for {who} and avoid jargon"],
    "examples": ["include at least {k} concrete examples", "illustrate each point with a real-world case",
                 "give a worked example with numbers", "add a short case study from {place}"],
    "reasoning": ["show your reasoning step by step before the final answer", "justify every claim you make",
                  "compare at least {k} alternative approaches and explain the trade-offs",
                  "first list your assumptions, then derive the answer from them",
                  "explain why the most obvious answer would be wrong"],
    "deepen": ["also discuss the limitations of your answer", "address the edge case where the input is empty or invalid",
               "consider the long-term consequences as well as the immediate ones",
               "explain the underlying mechanism, not just the outcome", "discuss how the answer changes over time"],
    "concretise": ["assume the setting is {place} and the budget is ${n}", "focus specifically on {topic}",
                   "use {topic} as the running example throughout", "restrict the answer to the period after {year}"],
    "lexical": ["do not use the word '{word}'", "avoid the passive voice", "begin every paragraph with a question",
                "use no more than {k} adjectives", "write every sentence in the present tense"],
    "style": ["use a formal academic tone", "write it in the voice of {who}", "make it persuasive",
              "keep a neutral, objective tone", "add a light touch of humour without losing accuracy"],
    "verification": ["cite a source for each factual claim", "state how confident you are in each part",
                     "point out which parts are uncertain and why", "include a checklist the reader can use to verify the result"],
    "multilingual": ["also give a one-sentence summary in {lang}", "translate the key terms into {lang}",
                     "provide the final answer in both English and {lang}"],
    "structure": ["split the answer into an introduction, {k} main sections and a conclusion",
                  "number each step and refer back to earlier steps by number", "group the points by priority, highest first"],
}
SLOTS = {
    "who": ["a ten-year-old", "a busy executive", "a first-year nursing student", "a retired engineer", "a tourist",
            "a small-business owner", "a high-school teacher", "a software intern"],
    "place": ["rural Kenya", "Tokyo", "a small town in Canada", "Berlin", "Sao Paulo", "a university campus"],
    "topic": ["renewable energy", "household budgeting", "public transport", "online privacy", "sleep", "supply chains"],
    "word": ["very", "important", "good", "thing", "really", "basically"],
    "lang": ["French", "Spanish", "German", "Japanese", "Portuguese"],
}
CONNECTORS = ["{s} Also, {c}.", "{s} Additionally, {c}.", "{s} Make sure to {c}.", "{s} The response must {c}.",
              "{s} In your answer, {c}.", "{s} Furthermore, {c}.", "{s} Please {c}."]


def _fill(template: str, rng: random.Random) -> str:
    values = {key: rng.choice(options) for key, options in SLOTS.items()}
    values.update(n=rng.choice([50, 100, 150, 200, 300, 500]), k=rng.choice([2, 3, 4, 5]), year=rng.choice([1990, 2000, 2010, 2015]))
    return template.format(**values)


def add_constraint(text: str, family: str, rng: random.Random) -> str:
    """``text`` with one more requirement from ``family``, attached in one of several ways."""
    clause = _fill(rng.choice(FAMILIES[family]), rng)
    if "\nRequirements:\n" in text:
        return f"{text}\n- {clause[0].upper()}{clause[1:]}."
    if rng.random() < 0.15:
        return f"{text.rstrip()}\n\nRequirements:\n- {clause[0].upper()}{clause[1:]}."
    return rng.choice(CONNECTORS).format(s=text.rstrip(), c=clause)


def constraint_chains(seeds: Sequence[str], families: Sequence[str] | None = None, steps: int = 5,
                      seed: int = 0) -> list[list[str]]:
    """One chain per seed instruction: the seed, then ``steps`` versions each adding a requirement from a
    different family (drawn from ``families``, default all). Version ``i`` of a chain is harder than ``j < i``."""
    rng = random.Random(seed)
    fams = list(families or FAMILIES)
    chains = []
    for text in seeds:
        chain = [text]
        for fam in rng.sample(fams, min(steps, len(fams))):
            chain.append(add_constraint(chain[-1], fam, rng))
        chains.append(chain)
    return chains


def chain_pairs(chains: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    """(harder, easier) for every ordered pair of versions within each chain."""
    return [(chain[j], chain[i]) for chain in chains for i in range(len(chain)) for j in range(i + 1, len(chain))]


def order_accuracy(chains: Sequence[Sequence[str]], scores: Sequence[Sequence[float]]) -> float:
    """Share of within-chain version pairs a scorer orders right (ties count one half)."""
    good = total = 0.0
    for chain, s in zip(chains, scores, strict=True):
        for i in range(len(chain)):
            for j in range(i + 1, len(chain)):
                total += 1
                good += 1.0 if s[j] > s[i] else 0.5 if s[j] == s[i] else 0.0
    return good / total if total else float("nan")


# Families held out of training for evaluation (never tuned on): the rest teach the ordering.
EVAL_FAMILIES = ("verification", "multilingual", "structure", "style")
TRAIN_FAMILIES = tuple(f for f in FAMILIES if f not in EVAL_FAMILIES)


# -- length-neutral chains: versions rewritten, with requirement-free filler ---------------------------
# family -> terse phrases of one more requirement, to merge into the task sentence.
TERSE: dict[str, list[str]] = {
    "format": ["as a numbered list", "under {k} headings", "with a {k}-column table", "as JSON", "in bullet points",
               "with a TL;DR at the end"],
    "length": ["in under {n} words", "in at least {k} paragraphs", "in exactly {k} sentences",
               "at most {k} sentences per paragraph", "within {n} characters"],
    "audience": ["for {who}", "so {who} can follow", "aimed at {who}"],
    "examples": ["with {k} concrete examples", "with a real-world case per point", "with a worked numeric example",
                 "with a case study from {place}"],
    "reasoning": ["step by step", "justifying every claim", "comparing {k} approaches", "stating assumptions first",
                  "explaining why the obvious answer fails"],
    "deepen": ["including limitations", "covering empty or invalid input", "covering long-term effects",
               "explaining the mechanism", "noting how it changes over time"],
    "concretise": ["set in {place} on a ${n} budget", "focused on {topic}", "using {topic} as the example",
                   "only after {year}"],
    "lexical": ["without the word '{word}'", "with no passive voice", "opening each paragraph with a question",
                "with at most {k} adjectives", "in the present tense"],
    "style": ["in a formal academic tone", "in the voice of {who}", "persuasively", "in a neutral tone",
              "with light humour"],
    "verification": ["citing sources", "with confidence levels", "flagging uncertain parts",
                     "with a verification checklist"],
    "multilingual": ["plus a {lang} summary", "with key terms in {lang}", "in English and {lang}"],
    "structure": ["as intro, {k} sections and conclusion", "with numbered, cross-referenced steps",
                  "ordered by priority"],
}
# How a version is phrased, training vs held-out: connectors of long clauses, headers of requirement lists,
# and requirement-free filler (politeness, context, restatement; {seed} is the task itself).
PHRASING: dict[bool, dict[str, list[str]]] = {
    False: {"connectors": CONNECTORS, "headers": ["Requirements:", "Rules:"],
            "verbose": ["It is really important to me that you {c}.", "When you write it, please make sure to {c}."],
            "fillers": ["Hi there! I hope you're having a good day.",
                        "I've been thinking about this for a while and would really appreciate your help.",
                        "Thanks so much in advance, this means a lot to me.",
                        "This came up in a conversation with a friend last week and I got curious.",
                        "To put it another way, here is what I'm asking: {seed}",
                        "Take whatever approach you think is best.",
                        "I'm asking out of general curiosity, nothing formal or urgent.",
                        "Here is the task I have for you today."]},
    True: {"connectors": ["{s} On top of that, {c}.", "{s} Be sure to {c}.", "{s} Note that you should {c}.",
                          "{s} One more thing: {c}."],
           "headers": ["Constraints:", "Guidelines:"],
           "verbose": ["I would be grateful if you could {c}.", "One thing that matters a lot here: {c}."],
           "fillers": ["Hello! Hope all is well on your end.",
                       "A colleague and I were discussing this over lunch and couldn't agree, so I'm turning to you.",
                       "Many thanks, I really appreciate any help you can give.",
                       "Just to restate the question in my own words: {seed}",
                       "Feel free to answer in whatever way you like.",
                       "No pressure at all, I'm simply interested in the topic.",
                       "I've looked around online but found the explanations a bit confusing.",
                       "Let me describe what I need."]},
}
FILLER_RATE = 0.25  # chance of filler per version (again after each): length orders ~82% of training-seed pairs


def _terse(family: str, rng: random.Random) -> str:
    return _fill(rng.choice(TERSE[family]), rng)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def add_filler(text: str, seed_text: str, held_out: bool, rng: random.Random) -> str:
    """``text`` with one requirement-free sentence before or after it (asks for nothing more)."""
    filler = rng.choice(PHRASING[held_out]["fillers"]).format(seed=seed_text.strip())
    return f"{filler} {text}" if rng.random() < 0.5 and "{seed}" not in filler else f"{text.rstrip()} {filler}"


def render_version(task: str, families: Sequence[str], held_out: bool, rng: random.Random) -> str:
    """``task`` asking for one requirement of each of ``families``, phrased in one of several ways
    (appended clauses, verbose clauses, merged terse phrases, a requirement list, a lead-in)."""
    if not families:
        return task
    style = PHRASING[held_out]
    base = task.rstrip()
    mode = rng.choice(["append", "verbose", "merge", "list", "lead"])
    if mode in ("append", "verbose"):
        out = base
        for fam in families:
            clause = _fill(rng.choice(FAMILIES[fam]), rng)
            form = rng.choice(style["connectors"] if mode == "append" else style["verbose"])
            out = form.format(s=out, c=clause) if "{s}" in form else f"{out} {form.format(c=clause)}"
        return out
    phrases = [_terse(fam, rng) for fam in families]
    if mode == "merge":
        return f"{base.rstrip('.?!:')}, {_join(phrases)}."
    if mode == "list":
        header = rng.choice(style["headers"])
        return f"{base}\n{header} " + "; ".join(phrases) + "."
    return f"{_join(phrases)[0].upper()}{_join(phrases)[1:]}: {base}"


def rewritten_chains(seeds: Sequence[str], families: Sequence[str] | None = None, steps: int = 5, seed: int = 0,
                     held_out: bool = False, filler_rate: float = FILLER_RATE) -> list[list[str]]:
    """Like :func:`constraint_chains` (version ``i`` asks for the first ``i`` of ``steps`` requirements), but
    each version is phrased afresh and, at ``filler_rate``, padded with requirement-free filler, so a
    version with more requirements is often shorter. ``held_out`` picks the held-out phrasing templates."""
    rng = random.Random(seed)
    fams = list(families or FAMILIES)
    chains = []
    for text in seeds:
        picked = rng.sample(fams, min(steps, len(fams)))
        chain = []
        for i in range(len(picked) + 1):
            version = render_version(text, picked[:i], held_out, rng)
            while rng.random() < filler_rate:
                version = add_filler(version, text, held_out, rng)
            chain.append(version)
        chains.append(chain)
    return chains


def filler_twins(chains: Sequence[Sequence[str]], held_out: bool = False, seed: int = 0) -> list[tuple[str, str]]:
    """(padded, version) for every version of every chain: the padded copy gains only filler, so the two
    ask for the same requirements (a tie, not "longer is harder")."""
    rng = random.Random(seed)
    return [(add_filler(v, chain[0], held_out, rng), v) for chain in chains for v in chain]
