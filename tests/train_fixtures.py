"""Shared by the training tests (tests/test_train.py and the LESS / Instruction Mining / planner tests):
a tiny random-initialised causal LM folder with SmolLM2's real tokenizer and chat template, and small
synthetic rows whose responses a tiny model learns in a few epochs on the CPU.

Use ``from tests.train_fixtures import tiny_lm, learnable_rows, row_inputs`` (``tiny_lm`` is a session
pytest fixture; importing it into a test module makes it available there).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from curate.rows import turns
from curate.storage.step import RowInput

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def build_tiny_lm(folder: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """Save a random Llama (``hidden`` wide, ``layers`` deep) with the packaged SmolLM2 tokenizer into ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from curate.llm.local import prepare_model

    source = prepare_model()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / name)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """A tiny random Llama folder (hidden 32, 2 layers, SmolLM2 tokenizer and chat template)."""
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


ANSWERS = {
    "colour": "The colour is a bright and cheerful red.",
    "number": "The number you want is forty two.",
    "animal": "That animal is a small grey cat.",
    "city": "The city you mean is Paris in France.",
}
NOISE_WORDS = ("zebra quantum violet marmalade oblique kettle yonder sprocket flamingo tundra "
               "walnut gadget ember plinth saffron quiver nebula trowel").split()


def conversation(user: str, assistant: str | None) -> list[dict[str, str]]:
    msgs = [{"role": "user", "content": user}]
    if assistant is not None:
        msgs.append({"role": "assistant", "content": assistant})
    return msgs


def learnable_rows(n: int = 40, noisy: tuple[int, ...] = (), seed: int = 0) -> list[list[dict[str, str]]]:
    """``n`` single-turn conversations in four topics, each topic with one fixed answer (learnable in a few
    epochs); rows in ``noisy`` get a random word salad instead (their label flipped to noise)."""
    rng = random.Random(seed)
    topics = list(ANSWERS)
    out = []
    for i in range(n):
        topic = topics[i % len(topics)]
        question = f"Question {i}: tell me the {topic}."
        if i in noisy:
            answer = " ".join(rng.choice(NOISE_WORDS) for _ in range(9)) + "."
        else:
            answer = ANSWERS[topic]
        out.append(conversation(question, answer))
    return out


def row_inputs(conversations: list[list[dict[str, str]]], prefix: str = "r") -> list[RowInput]:
    """RowInputs (ids ``r0``, ``r1``, ...) as a step would see them."""
    return [RowInput(f"{prefix}{i}", c, turns(c)) for i, c in enumerate(conversations)]
