"""Synthetic same-task versions with added constraints: complexity pairs ordered by construction.

Evol's in-depth evolution (``prompts/evol/``: add a constraint, deepen, concretise, add reasoning steps)
makes each version of a seed instruction ask for one requirement more than the last, so the versions of
one seed are ordered by complexity without a judge. :func:`constraint_chains` builds such chains from
seed instructions with constraint additions written here (families of varied templates with random
slots, several ways of attaching them); families can be held out whole, so an evaluation never sees
the templates it is tested on. Only the standard library is imported (the GPU training script loads
this file by path).
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
