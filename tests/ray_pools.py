"""Generated pools for the Ray engine's tests: exact and normalised repeats, near-duplicates, multi-turn,
instruction-only rows and malformed records, written as one file or as shards."""

import random

from tests.conftest import write_jsonl

WORDS = ("data model train graph sort cache tree vector query index shard merge split token score rank budget "
         "filter kernel batch stream queue lock thread socket parser schema column matrix loss gradient").split()


# -- a generated pool: exact and normalised repeats, near-duplicates, multi-turn, instruction-only, rejects ----
def generated_pool(n: int, seed: int = 0) -> list:
    rnd = random.Random(seed)
    records: list = []
    while len(records) < n:
        k = len(records)
        words = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 12)))
        answer = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(8, 40))) + "."
        roll = rnd.random()
        if roll < 0.04 and records:  # an exact repeat of an earlier record: id <hash>-2, exact duplicate
            records.append(rnd.choice([r for r in records[-50:] if isinstance(r, dict)] or [records[0]]))
        elif roll < 0.07 and records:  # the same text up to trailing spaces: an exact duplicate, another id
            prev = next((r for r in reversed(records) if isinstance(r, dict) and "instruction" in r), None)
            if prev:
                records.append({**prev, "instruction": prev["instruction"] + " \t"})
        elif roll < 0.12 and records:  # one word changed: a near-duplicate for admission
            prev = next((r for r in reversed(records) if isinstance(r, dict) and "instruction" in r), None)
            if prev:
                records.append({**prev, "instruction": prev["instruction"] + " " + rnd.choice(WORDS)})
        elif roll < 0.17:
            records.append({"messages": [
                {"role": "user", "content": f"Explain {words}"}, {"role": "assistant", "content": answer},
                {"role": "user", "content": f"And {rnd.choice(WORDS)}?"}, {"role": "assistant", "content": answer[:40]}]})
        elif roll < 0.20:
            records.append({"instruction": f"Describe {words} #{k}"})  # instruction-only: quality has no response
        elif roll < 0.22:
            records.append(rnd.choice(['{"instruction": "broken', '{"output": "no instruction"}', '[1, 2]']))
        else:
            records.append({"instruction": f"How do I {words}?", "input": rnd.choice(["", "in Python", "fast"]),
                            "output": answer, "source": rnd.choice(["a", "b", 3])})
    return records


def write_shards(folder, records, shards: int):
    folder.mkdir()
    size = -(-len(records) // shards)
    for i in range(shards):
        write_jsonl(folder / f"part-{i:05d}.jsonl", records[i * size:(i + 1) * size])
    return folder


# -- a two-node Ray cluster on 127.0.0.1, started and stopped by process group ------------------------------


def instructions(n: int, start: int = 0) -> list:
    return [{"instruction": f"Task {i}: explain how a {WORDS[i % len(WORDS)]} works, step by step.",
             "output": f"A {WORDS[i % len(WORDS)]} works like this, {i} times over."} for i in range(start, start + n)]
