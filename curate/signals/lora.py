"""Brief LoRA tuning of the base model on a small reference set: LoBaSS's reference model.

A minimal LoRA (Hu et al. 2021) in plain torch: each target ``nn.Linear`` gets a trainable low-rank
update ``(alpha / rank) · B·A`` (A small random, B zero), trained with AdamW on the response tokens of
the reference conversations (the same chat-template requests the engine scores), then merged into the
weights for scoring. The adapter is cached under ``<cache_dir>/signals/lora/<fingerprint>/`` (a file
lock stops two processes training the same one), keyed by the base model's files, the reference set
and the tuning settings; a re-run loads it.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.defaults import SIGNAL
from curate.errors import CurateError
from curate.signals.cache import folder_fingerprint, json_fingerprint
from curate.signals.template import Request

ADAPTER_FILE = "adapter.safetensors"
META_FILE = "adapter.json"


@dataclass(frozen=True)
class LoraConfig:
    """How the reference model is tuned."""
    steps: int = SIGNAL.lora_steps
    rank: int = SIGNAL.lora_rank
    alpha: float = SIGNAL.lora_alpha
    lr: float = SIGNAL.lora_lr
    batch: int = SIGNAL.lora_batch
    targets: tuple[str, ...] = SIGNAL.lora_targets
    seed: int = SIGNAL.seed

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclass
class Adapter:
    """Trained low-rank updates ``{module name: (A, B)}`` and how they were made."""
    fingerprint: str
    config: LoraConfig
    weights: dict[str, tuple[Any, Any]]
    meta: dict[str, Any]

    def merge_into(self, model: Any) -> None:
        """Add ``scale · B·A`` to each target module's weight (in place, in the weight's dtype)."""
        import torch

        with torch.no_grad():
            for name, (a, b) in self.weights.items():
                weight = model.get_submodule(name).weight
                delta = (b.float() @ a.float()) * self.config.scale
                weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))

    def describe(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, **asdict(self.config), **self.meta}

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        tensors = {}
        for name, (a, b) in self.weights.items():
            tensors[f"{name}.lora_A"] = a.contiguous()
            tensors[f"{name}.lora_B"] = b.contiguous()
        save_file(tensors, str(folder / ADAPTER_FILE))
        (folder / META_FILE).write_text(json.dumps({"fingerprint": self.fingerprint, "config": asdict(self.config),
                                                    "meta": self.meta}, indent=1))

    @classmethod
    def load(cls, folder: Path) -> Adapter:
        from safetensors.torch import load_file

        info = json.loads((folder / META_FILE).read_text())
        tensors = load_file(str(folder / ADAPTER_FILE))
        names = sorted({k.rsplit(".", 1)[0] for k in tensors})
        weights = {n: (tensors[f"{n}.lora_A"], tensors[f"{n}.lora_B"]) for n in names}
        cfg = info["config"]
        cfg["targets"] = tuple(cfg["targets"])
        return cls(info["fingerprint"], LoraConfig(**cfg), weights, info["meta"])


def adapter_fingerprint(model_dir: Path, requests: Sequence[Request], config: LoraConfig) -> str:
    """Names the tuned model: the base model's files, the exact reference token ids, the settings."""
    data = json_fingerprint([[list(r.context), list(r.target)] for r in requests])
    return json_fingerprint({"base": folder_fingerprint(model_dir), "data": data, "config": asdict(config)})


def _wrap(model: Any, config: LoraConfig) -> dict[str, tuple[Any, Any]]:
    """Attach trainable (A, B) to every target Linear via a forward hook; returns them by module name."""
    import torch

    found: dict[str, tuple[Any, Any]] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in config.targets:
            a = torch.empty(config.rank, module.in_features, dtype=torch.float32, device=module.weight.device)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            b = torch.zeros(module.out_features, config.rank, dtype=torch.float32, device=module.weight.device)
            a.requires_grad_(True)
            b.requires_grad_(True)
            found[name] = (a, b)

            def hook(mod: Any, inputs: Any, output: Any, a: Any = a, b: Any = b) -> Any:
                return output + (inputs[0] @ a.T @ b.T) * config.scale

            module.register_forward_hook(hook)
    if not found:
        raise CurateError(f"LoRA: no nn.Linear module named {', '.join(config.targets)} in the model; pass "
                          "lora_targets= with the names of its attention projections")
    return found


def train_adapter(model_dir: Path, requests: Sequence[Request], config: LoraConfig, device: str = "cpu",
                  pad_id: int = 0, progress: bool = False) -> Adapter:
    """Tune LoRA updates on the response tokens of ``requests`` (float32) and return them."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    if not requests:
        raise CurateError("learnability needs a reference set with at least one answered turn")
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(device)
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    weights = _wrap(model, config)
    opt = torch.optim.AdamW([t for pair in weights.values() for t in pair], lr=config.lr, weight_decay=0.0)
    rng = np.random.default_rng(config.seed)
    head = model.get_output_embeddings()
    losses: list[float] = []
    started = time.perf_counter()
    for _ in tqdm(range(config.steps), desc="lora", unit="step", disable=not progress, leave=False):
        picked = [requests[i] for i in rng.choice(len(requests), size=min(config.batch, len(requests)), replace=False)]
        width = max(r.length for r in picked)
        ids = torch.full((len(picked), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        rows, cols, targets = [], [], []
        for k, r in enumerate(picked):
            seq = list(r.context) + list(r.target[:-1])
            ids[k, :len(seq)] = torch.tensor(seq)
            mask[k, :len(seq)] = 1
            rows += [k] * len(r.target)
            cols += range(len(r.context) - 1, len(r.context) - 1 + len(r.target))
            targets += r.target
        hidden = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        logits = head(hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)])
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(targets, device=device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first = float(np.mean(losses[: max(1, len(losses) // 10)]))
    last = float(np.mean(losses[-max(1, len(losses) // 10):]))
    meta = {"reference_turns": len(requests), "loss_first_steps": round(first, 4), "loss_last_steps": round(last, 4),
            "seconds": round(time.perf_counter() - started, 1)}
    fp = adapter_fingerprint(model_dir, requests, config)
    out = {n: (a.detach().cpu(), b.detach().cpu()) for n, (a, b) in weights.items()}
    return Adapter(fp, config, out, meta)


def tuned_adapter(model_dir: Path, requests: Sequence[Request], config: LoraConfig, cache_dir: Path,
                  device: str = "cpu", pad_id: int = 0, progress: bool = False) -> Adapter:
    """The adapter for (model, reference requests, config): loaded from the cache, else trained and stored."""
    from filelock import FileLock

    fp = adapter_fingerprint(model_dir, requests, config)
    root = Path(cache_dir) / "signals" / "lora"
    folder = root / fp
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{fp}.lock")):
        if (folder / META_FILE).exists():
            return Adapter.load(folder)
        adapter = train_adapter(model_dir, requests, config, device, pad_id, progress)
        tmp = root / f".{fp}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir()
        adapter.save(tmp)
        os.replace(tmp, folder)
    return adapter
