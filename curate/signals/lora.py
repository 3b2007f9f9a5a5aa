"""Brief LoRA tuning of the base model on a small reference set: LoBaSS's reference model.

peft LoRA (Hu et al. 2021; the setup shared with :mod:`curate.train.harness`, see
:mod:`curate.signals.peft_lora`) on the target projections, trained in float32 with AdamW on the response
tokens of the reference conversations (the same chat-template requests the engine scores), then merged into
the weights for scoring (peft's ``merge_and_unload``). The adapter is cached under
``<cache_dir>/signals/lora/<fingerprint>/`` (peft's ``adapter_model.safetensors`` + ``adapter_config.json``,
and ``adapter.json`` with the settings and training statistics; a file lock stops two processes training
the same one), keyed by the base model's files, the reference set and the tuning settings; a re-run loads it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.defaults import SIGNAL
from curate.errors import CurateError
from curate.hardware import import_torch
from curate.quiet import quiet_transformers
from curate.signals.cache import json_fingerprint
from curate.signals.peft_lora import attach_lora, response_logits
from curate.signals.template import Request
from curate.storage.files import folder_fingerprint
from curate.storage.progress import progress_bar
from curate.storage.write_errors import writing

VERSION = 2  # 2: peft adapters (1: the hand-written LoRA); bump when tuning changes meaning
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
    """A tuned peft adapter saved in ``folder``, and how it was made."""
    fingerprint: str
    config: LoraConfig
    folder: Path
    meta: dict[str, Any]

    def merged(self, model: Any) -> Any:
        """``model`` with the adapter merged into its weights (peft ``merge_and_unload``; modifies ``model``)."""
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(self.folder)).merge_and_unload()

    def describe(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, **asdict(self.config), **self.meta}

    @classmethod
    def load(cls, folder: Path) -> Adapter:
        """The adapter saved in ``folder``; one whose losses or tensors are not finite (a diverged tuning) is refused."""
        from safetensors.numpy import load_file

        info = json.loads((folder / META_FILE).read_text())
        losses = [v for k, v in info.get("meta", {}).items() if k.startswith("loss")]
        weights = folder / "adapter_model.safetensors"
        tensors = load_file(str(weights)) if weights.is_file() else {}
        if not all(math.isfinite(v) for v in losses) or not all(np.isfinite(t).all() for t in tensors.values()):
            raise CurateError(f"{folder}: a diverged reference adapter (losses {losses}, or weights, not finite); "
                              "remove this folder and tune again with a lower lr (LoraConfig(lr=...))")
        cfg = info["config"]
        cfg["targets"] = tuple(cfg["targets"])
        return cls(info["fingerprint"], LoraConfig(**cfg), folder, info["meta"])


def adapter_fingerprint(model_dir: Path, requests: Sequence[Request], config: LoraConfig) -> str:
    """Names the tuned model: the base model's files, the exact reference token ids, the settings."""
    data = json_fingerprint([[list(r.context), list(r.target)] for r in requests])
    return json_fingerprint({"version": VERSION, "base": folder_fingerprint(model_dir), "data": data,
                             "config": asdict(config)})


def _batch(picked: Sequence[Request], pad_id: int, device: str) -> tuple[Any, Any, Any, Any, Any]:
    """Right-padded (input ids, attention mask, rows, cols, targets): (rows, cols) predict the response tokens."""
    torch = import_torch()
    width = max(r.length for r in picked)
    ids = torch.full((len(picked), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    rows: list[int] = []
    cols: list[int] = []
    targets: list[int] = []
    for k, r in enumerate(picked):
        seq = list(r.context) + list(r.target[:-1])
        ids[k, :len(seq)] = torch.tensor(seq)
        mask[k, :len(seq)] = 1
        rows += [k] * len(r.target)
        cols += range(len(r.context) - 1, len(r.context) - 1 + len(r.target))
        targets += r.target
    return (ids.to(device), mask.to(device), torch.tensor(rows, device=device), torch.tensor(cols, device=device),
            torch.tensor(targets, device=device))


class _NumpyRng:
    """A numpy Generator behind the get/setstate a training checkpoint saves and restores."""

    def __init__(self, generator: np.random.Generator):
        self.generator = generator

    def getstate(self) -> dict[str, Any]:
        return self.generator.bit_generator.state

    def setstate(self, state: dict[str, Any]) -> None:
        self.generator.bit_generator.state = state


def train_adapter(model_dir: Path, requests: Sequence[Request], config: LoraConfig, folder: Path,
                  device: str = "cpu", pad_id: int = 0, progress: bool = False,
                  checkpoint_path: Path | None = None, saved_as: Path | None = None) -> None:
    """Tune a peft LoRA adapter on the response tokens of ``requests`` (float32) and save it into ``folder``
    (``save_pretrained``: safetensors, plus ``adapter.json``). ``checkpoint_path``: progress saved there as it goes
    (:mod:`curate.scorers.checkpoint`), so a killed tuning continues from its last save. ``saved_as``: the folder
    that ``folder`` (a temporary one) becomes, named in a failed save's error (a full disk)."""
    torch = import_torch()
    from transformers import AutoModelForCausalLM

    if not requests:
        raise CurateError("learnability needs a reference set with at least one answered turn")
    torch.manual_seed(config.seed)
    with quiet_transformers():  # its "Loading weights" bar, beside curate's own
        base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    try:
        model = attach_lora(base, config.rank, config.alpha, list(config.targets)).to(device)
    except ValueError as e:  # peft: no module matches the targets
        raise CurateError(f"LoRA: {e}; pass lora_targets= with the names of the model's attention projections"
                          ) from e
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.0)
    rng = np.random.default_rng(config.seed)
    losses: list[float] = []
    started = time.perf_counter()
    checkpoint, parts, done = None, {}, 0
    if checkpoint_path is not None:
        from curate.scorers.checkpoint import TrainingCheckpoint

        checkpoint = TrainingCheckpoint(checkpoint_path)
        parts = {"net": model, "opt": opt, "sched": torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0),
                 "rng": _NumpyRng(rng), "best": {}, "history": losses,
                 "trainable": lambda: {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}}
        done = checkpoint.restore(parts)
    with progress_bar(config.steps, "tuning the reference (LoRA)", progress, unit="step", initial=done,
                      leave=False) as bar:  # off with CURATE_PROGRESS=0; lines in a log
        for step in range(done + 1, config.steps + 1):
            picked = [requests[i] for i in rng.choice(len(requests), size=min(config.batch, len(requests)), replace=False)]
            ids, mask, rows, cols, targets = _batch(picked, pad_id, device)
            logits, _ = response_logits(model, ids, mask, rows, cols)
            loss = torch.nn.functional.cross_entropy(logits.float(), targets)
            if not math.isfinite(value := float(loss.detach())):  # before the step: nothing diverged is saved
                raise CurateError(f"the reference LoRA tuning diverged: loss {value} at step {step} of {config.steps} "
                                  f"(lr {config.lr}); nothing was saved: try a lower lr (LoraConfig(lr=...))")
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(value)
            if checkpoint is not None:
                checkpoint.step_done(step, config.steps, parts)
            bar.update()
    first = float(np.mean(losses[: max(1, len(losses) // 10)]))
    last = float(np.mean(losses[-max(1, len(losses) // 10):]))
    diverged = [n for n, p in model.named_parameters() if p.requires_grad and not bool(p.isfinite().all())]
    if diverged:  # the last step's update (its loss was finite)
        raise CurateError(f"the reference LoRA tuning diverged: {len(diverged)} adapter tensors not finite after "
                          f"step {config.steps} (lr {config.lr}), e.g. {diverged[0]}; nothing was saved: try a lower lr")
    meta = {"reference_turns": len(requests), "loss_first_steps": round(first, 4), "loss_last_steps": round(last, 4),
            "seconds": round(time.perf_counter() - started, 1)}
    with writing(saved_as or folder, folder if saved_as else None):  # safetensors' full disk: an OSError naming it
        model.save_pretrained(str(folder))
        (folder / META_FILE).write_text(json.dumps({"fingerprint": adapter_fingerprint(model_dir, requests, config),
                                                    "config": asdict(config), "meta": meta}, indent=1))


def tuned_adapter(model_dir: Path, requests: Sequence[Request], config: LoraConfig, cache_dir: Path,
                  device: str = "cpu", pad_id: int = 0, progress: bool = False) -> Adapter:
    """The adapter for (model, reference requests, config): loaded from the cache, else trained and stored."""
    from filelock import FileLock

    fp = adapter_fingerprint(model_dir, requests, config)
    root = Path(cache_dir) / "signals" / "lora"
    folder = root / fp
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{fp}.lock")):
        if not (folder / META_FILE).exists():
            for leftover in root.glob(f".{fp}.*.tmp"):  # a tuning SIGKILL stopped: under the lock, none is live
                shutil.rmtree(leftover, ignore_errors=True)
            tmp = root / f".{fp}.{uuid.uuid4().hex[:8]}.tmp"
            tmp.mkdir()
            progress_file = root / f"{fp}.progress.pt"  # a killed tuning continues from here
            try:
                train_adapter(model_dir, requests, config, tmp, device, pad_id, progress, progress_file, folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            os.replace(tmp, folder)
            progress_file.unlink(missing_ok=True)  # the adapter itself is kept now
    return Adapter.load(folder)
