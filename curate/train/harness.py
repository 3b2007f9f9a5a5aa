"""The fine-tuning harness: SFT of a small causal LM that records what happens to each row, epoch by epoch.

``finetune(model_dir, rows, out_dir, TrainConfig(...))`` trains any Hugging Face causal LM folder (default
in callers: the packaged SmolLM2-135M-Instruct, ``curate.signals.engine.default_model_dir()``) with peft
LoRA on every linear projection (``lora_rank > 0``) or as a full fine-tune (``lora_rank = 0``), AdamW with
linear warm-up and decay, loss on response tokens only (the chat-template requests of
:mod:`curate.train.examples`). CUDA when present (float32 weights, bfloat16 autocast), else the CPU (float32).

After each epoch ``out_dir/epoch-<k>/`` gets the checkpoint (the peft adapter, or the full weights),
``optimizer.pt`` (AdamW moments, the scheduler and torch's random state: LESS needs the moments) and
``records.npz`` (per-row records from that epoch's training forward passes; see :mod:`curate.train.records`), then
``run.json`` marks the epoch done; within an epoch, a mid-epoch checkpoint every ``TRAIN.checkpoint_seconds``
(:mod:`curate.train.checkpoints`), and one of the last completed step when a Ctrl-C stops the run
(:mod:`curate.train.step`). Calling ``finetune`` again with the same arguments resumes at the last
checkpoint, mid-epoch or not, to the same result as a run never stopped (a finished run returns at once);
the same ``out_dir`` with other arguments is refused. ``TrainRun.start`` says where the call started.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.codes import Failure
from curate.defaults import TRAIN
from curate.errors import CurateError, OptionError, python_and_cli
from curate.hardware import import_torch, resolve_device
from curate.quiet import quiet_transformers
from curate.signals.cache import json_fingerprint
from curate.signals.peft_lora import attach_lora
from curate.signals.template import Prompter, capped_length, check_model_folder
from curate.storage.files import (
    STALE_LEFTOVER_S,
    folder_fingerprint,
    newest_mtime,
    remove,
)
from curate.storage.progress import progress_bar
from curate.storage.step import RowInput
from curate.train.checkpoints import (  # OPTIMIZER_FILE: read here by LESS, evals and tests
    OPTIMIZER_FILE,  # noqa: F401
    Checkpointing,
    checkpoint_mid_epoch,
    finish_epoch,
    load_errors_as_damage,
    load_position,
    load_state,
    remove_unnamed,
    resumable,
)
from curate.train.examples import (
    Example,
    check_trainable,
    collate,
    encode_rows,
    epoch_batches,
    row_inputs,
    split_batch,
)
from curate.train.records import RECORD_KEYS, load_records
from curate.train.runfile import (
    FLOAT32,
    RunStart,
    check_precision,
    read_run_file,
    train_lock,
    training_precision,
    write_run_json,
)
from curate.train.step import DeferredStop, RandomState, keep_records, step_gradients

VERSION = 1  # bump when training or the records change meaning
GROUP_SIZE_BEFORE_KEYED = 32  # TRAIN.group_size of every run named before it was in the name (absent there)
RUN_FILE = "run.json"


# the settings `curate train run` and `curate train model` take as flags (--max-length ...): a refusal names both
CLI_SETTINGS = ("epochs", "lora_rank", "learning_rate", "batch_size", "max_length", "seed")


@dataclass(frozen=True)
class TrainConfig:
    """How a run trains; defaults from :data:`curate.defaults.TRAIN`."""
    epochs: int = TRAIN.epochs
    learning_rate: float = TRAIN.learning_rate
    batch_size: int = TRAIN.batch_size
    max_length: int = TRAIN.max_length
    lora_rank: int = TRAIN.lora_rank           # 0 = full fine-tune; else peft LoRA on the linear projections
    lora_alpha: float = TRAIN.lora_alpha
    seed: int = TRAIN.seed
    warmup_ratio: float = TRAIN.warmup_ratio
    record: bool = True                        # per-row records each epoch (from the training forward pass)
    lora_targets: str = TRAIN.lora_targets
    weight_decay: float = TRAIN.weight_decay
    max_grad_norm: float = TRAIN.max_grad_norm
    end_of_turn: bool = False                  # train the template's end-of-turn token too (a model that answers)

    def check(self) -> None:
        """Raise a :class:`CurateError` naming the first setting out of range."""
        rules = (("epochs", self.epochs >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
                 ("max_length", self.max_length >= 8, ">= 8 tokens"), ("lora_rank", self.lora_rank >= 0, ">= 0"),
                 ("learning_rate", self.learning_rate > 0, "> 0"), ("lora_alpha", self.lora_alpha > 0, "> 0"),
                 ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
                 ("weight_decay", self.weight_decay >= 0, ">= 0"),
                 ("max_grad_norm", self.max_grad_norm >= 0, ">= 0 (0: no clipping)"))
        for name, ok, wanted in rules:
            if not ok:  # NaN fails every comparison, so it lands here too
                flag = python_and_cli(f"{name}=", f"--{name.replace('_', '-')}") if name in CLI_SETTINGS else f"{name}="
                raise OptionError(f"training setting {name} must be {wanted}, got {getattr(self, name)!r} ({flag})")


def run_fingerprint(model_dir: Path, rows: Sequence[RowInput], config: TrainConfig, precision: str = FLOAT32) -> str:
    """Names a run: the model's files, the rows (ids and conversations, in order), the settings, the arithmetic
    (:mod:`curate.train.runfile`; absent at float32, so CPU runs cached before keep their names)."""
    data = json_fingerprint([[r.id, r.conversation] for r in rows])
    # epochs included: the learning-rate schedule spans all epochs, so a longer run is another run
    settings = asdict(config)
    if not settings["end_of_turn"]:  # absent at its default, so runs cached before it existed keep their names
        del settings["end_of_turn"]
    if TRAIN.group_size != GROUP_SIZE_BEFORE_KEYED:  # the epochs' batches: absent at 32 for the same reason
        settings["group_size"] = TRAIN.group_size
    if precision != FLOAT32:
        settings["precision"] = precision
    return json_fingerprint({"version": VERSION, "model": folder_fingerprint(Path(model_dir)), "data": data,
                             "config": settings})


def run_folder(root: Path, model_dir: Path, rows: Sequence[RowInput], config: TrainConfig, device: str | None = None
               ) -> Path:
    """A cache folder for this run on ``device`` (None: CUDA when present) under ``root`` (``root/<fingerprint>``)."""
    return Path(root) / run_fingerprint(model_dir, rows, config, training_precision(resolve_device(device)))[:20]


class TrainRun:
    """A (possibly unfinished) run in ``out_dir``: its ids, finished epochs, records and checkpoints."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        path = self.out_dir / RUN_FILE
        info = read_run_file(path)
        try:
            self.config = TrainConfig(**info["config"])
            self.model_dir = Path(info["model_dir"])
            self.ids: list[str] = list(info["ids"])
            self.skipped: dict[str, Failure] = {k: Failure.from_dict(v) for k, v in info["skipped"].items()}
            self.epochs_done: int = int(info["epochs_done"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CurateError(f"{path}: not a curate training run's record ({type(exc).__name__}: {exc}); use "
                              "another out_dir") from None
        self.info: dict[str, Any] = info
        self.start: RunStart | None = None  # where the finetune call that returned it started (None: opened here)

    @property
    def finished(self) -> bool:
        return self.epochs_done >= self.config.epochs

    def _epoch(self, epoch: int | None) -> int:
        e = self.epochs_done if epoch is None else epoch
        if not 1 <= e <= self.epochs_done:
            raise CurateError(f"{self.out_dir}: epoch {e} is not finished (epochs done: {self.epochs_done})")
        return e

    def records(self, epoch: int) -> dict[str, np.ndarray]:
        """Per-row records of ``epoch`` (1-based): ``id`` and ``loss``, ``gold_prob``, ``token_accuracy``,
        ``el2n``, ``grad_norm`` (aligned to :attr:`ids`)."""
        return load_records(self.checkpoint(epoch))

    def all_records(self) -> dict[str, np.ndarray]:
        """Every finished epoch's records stacked: each key -> [epochs, rows]."""
        recs = [self.records(e) for e in range(1, self.epochs_done + 1)]
        return {k: np.stack([r[k] for r in recs]) for k in RECORD_KEYS}

    def checkpoint(self, epoch: int | None = None) -> Path:
        """The folder of ``epoch`` (default: the last finished): adapter or weights, ``optimizer.pt``, records."""
        return self.out_dir / f"epoch-{self._epoch(epoch)}"

    def load_model(self, epoch: int | None = None, device: str | None = None, trainable: bool = False
                   ) -> tuple[Any, Any]:
        """(model, tokenizer) after ``epoch`` (default: the last finished), float32 on ``device``, eval mode.
        LoRA runs give a peft model (``trainable=True`` keeps the adapter's gradients on, for LESS)."""
        from transformers import AutoTokenizer

        model = _load(self.model_dir, self.config, self.checkpoint(epoch), trainable).to(resolve_device(device))
        return model.eval(), AutoTokenizer.from_pretrained(str(self.model_dir))

    def describe(self) -> dict[str, Any]:
        """Provenance of the run (for columns computed from it)."""
        return {"run": str(self.out_dir), "fingerprint": self.info["fingerprint"], "model": str(self.model_dir),
                "model_fingerprint": self.info["model_fingerprint"], "config": asdict(self.config),
                "epochs_done": self.epochs_done, "rows": len(self.ids), "skipped": len(self.skipped),
                "device": self.info.get("device"), "epoch_stats": self.info.get("epoch_stats", [])}


    def __repr__(self) -> str:
        return (f"TrainRun({str(self.out_dir)!r}, rows={len(self.ids):,}, skipped={len(self.skipped):,}, "
                f"epochs={self.epochs_done}/{self.config.epochs})")

    def _repr_html_(self) -> str:
        losses = ", ".join(f"{s['epoch']}: {s['mean_loss']:.3f}" for s in self.info.get("epoch_stats", []))
        return (f"<div><b>Training run</b> <code>{html.escape(str(self.out_dir))}</code>: {len(self.ids):,} rows "
                f"({len(self.skipped):,} skipped), epochs {self.epochs_done} of {self.config.epochs}"
                f"{', lora rank ' + str(self.config.lora_rank) if self.config.lora_rank else ', full fine-tune'}"
                f"<br>mean training loss by epoch: {html.escape(losses or 'none finished')}</div>")


def _load(model_dir: Path, config: TrainConfig, checkpoint: Path | None, trainable: bool) -> Any:
    """The model: base weights, plus a fresh or saved LoRA adapter, or full weights from ``checkpoint``
    (transformers' own "Loading weights" bar hidden: the run's bars are curate's)."""
    torch = import_torch()
    from transformers import AutoModelForCausalLM

    if config.lora_rank == 0:  # a damaged checkpoint: an error naming its folder and what to remove
        with quiet_transformers(), load_errors_as_damage(checkpoint):
            return AutoModelForCausalLM.from_pretrained(str(checkpoint or model_dir), dtype=torch.float32)
    from peft import PeftModel

    with quiet_transformers():  # the base model's own errors are its own: the checkpoint is not to blame
        base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if checkpoint is not None:
        with load_errors_as_damage(checkpoint):
            return PeftModel.from_pretrained(base, str(checkpoint), is_trainable=trainable)
    return attach_lora(base, config.lora_rank, config.lora_alpha, config.lora_targets)


def _start(out_dir: Path, model_dir: Path, rows: Sequence[RowInput], config: TrainConfig, fp: str,
           skipped: dict[str, Failure], examples: list[Example], device: str) -> dict[str, Any]:
    """Create or check ``run.json``; returns its contents."""
    path = out_dir / RUN_FILE
    if path.exists():
        for leftover in out_dir.glob(".epoch-*"):  # a save a SIGKILL stopped; a live writer's is younger than this
            if newest_mtime(leftover) < time.time() - STALE_LEFTOVER_S:
                remove(leftover)
        info = read_run_file(path)
        if info.get("fingerprint") != fp:
            raise CurateError(f"{out_dir} holds another run (model, rows or settings differ); use another out_dir")
        check_precision(out_dir, info, training_precision(device), device)  # a resume: not in other arithmetic
        return info
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"fingerprint": fp, "version": VERSION, "model_dir": str(model_dir.resolve()),
            "model_fingerprint": folder_fingerprint(model_dir), "config": asdict(config),
            "ids": [e.id for e in examples], "skipped": {k: f.to_dict() for k, f in skipped.items()},
            "epochs_done": 0, "device": device, "precision": training_precision(device), "epoch_stats": [],
            "tokens": {"rows": len(examples), "response_tokens": sum(len(e.positions) for e in examples),
                       "truncated_rows": sum(e.truncated for e in examples),
                       "context_only_turns": sum(e.context_only_turns for e in examples)}}
    write_run_json(path, info)
    return info


def finetune(model_dir: str | Path, rows: Sequence[RowInput], out_dir: str | Path,
             config: TrainConfig = TrainConfig(), *, device: str | None = None, progress: Any = None,
             step_tokens: int | None = None, checkpoint_steps: int | None = None,
             checkpoint_seconds: float | None = None) -> TrainRun:
    """SFT on the response tokens of ``rows``; see the module doc. ``progress``: an object with ``update(n)``
    (rows trained), or True for a tqdm bar. Rows without an answered turn are skipped (``TrainRun.skipped``
    says why). ``step_tokens``: padded tokens per forward pass (default ``TRAIN.cpu_step_tokens`` on the CPU,
    the whole batch on CUDA); a batch larger than that runs as several passes whose gradients add up into the
    same optimizer step, so it bounds activation memory without changing the run (not in its fingerprint).
    ``checkpoint_steps`` / ``checkpoint_seconds``: a mid-epoch checkpoint after that many optimizer steps or seconds
    of training, whichever comes first (default: every ``TRAIN.checkpoint_seconds``; :mod:`curate.train.checkpoints`),
    where a killed run resumes; when they come does not change the run."""
    config.check()
    checkpoint = Checkpointing(checkpoint_steps, checkpoint_seconds)
    rows = row_inputs(rows)
    model_dir, out_dir = check_model_folder(model_dir), Path(out_dir)
    device = resolve_device(device)
    fp = run_fingerprint(model_dir, rows, config, training_precision(device))
    if (done := _finished(out_dir, fp, config, model_dir, device)) is not None:  # read back without a lock: a finished run
        return done  # may sit where nothing can be written (a read-only mount)
    # one trainer of a run folder at a time, any process: a second one waits, then reads the finished run back
    # (both trained every epoch into one folder, each replacing the other's epoch-k/)
    with train_lock(out_dir):  # re-checked: a lock file removed or replaced while it was waited on excludes no one
        return _train(model_dir, rows, out_dir, config, device, fp, progress, step_tokens, checkpoint)


def _finished(out_dir: Path, fp: str, config: TrainConfig, model_dir: Path, device: str) -> TrainRun | None:
    """The run in ``out_dir`` if it is this one (``fp``, trained in ``device``'s arithmetic) and has trained every epoch
    asked for; else None."""
    if not (out_dir / RUN_FILE).exists():
        return None
    run = TrainRun(out_dir)
    if run.info["fingerprint"] != fp or run.epochs_done < config.epochs:
        return None
    check_precision(out_dir, run.info, training_precision(device), device)
    run.model_dir = model_dir.resolve()  # the same files (fingerprint), wherever the caller has them now
    run.start = RunStart("cache")
    return run


def _train(model_dir: Path, rows: list[RowInput], out_dir: Path, config: TrainConfig, device: str, fp: str,
           progress: Any, step_tokens: int | None, checkpoint: Checkpointing) -> TrainRun:
    """:func:`finetune`'s work, under the run folder's lock."""
    torch = import_torch()
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    if (done := _finished(out_dir, fp, config, model_dir, device)) is not None:  # a trainer we waited for finished it
        return done
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    examples, skipped = encode_rows(Prompter(tokenizer, capped_length(config.max_length, model_dir)), rows,
                                    end_of_turn=config.end_of_turn)
    check_trainable(examples, skipped)
    info = _start(out_dir, model_dir, rows, config, fp, skipped, examples, device)
    done = int(info["epochs_done"])
    part = resumable(out_dir, info)  # a mid-epoch checkpoint of epoch done + 1, or None
    remove_unnamed(out_dir, part["folder"] if part else None)
    torch.manual_seed(config.seed)
    last = out_dir / part["folder"] if part else out_dir / f"epoch-{done}" if done else None
    model = _load(model_dir, config, last, trainable=True)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = math.ceil(len(examples) / config.batch_size)  # an epoch's optimizer steps
    total = steps * config.epochs  # the whole run's: the schedule spans all epochs
    sched = get_linear_schedule_with_warmup(opt, int(config.warmup_ratio * total), total)
    if last is not None:
        load_state(last, opt, sched, device)
    begun = (RunStart("resumed", part["epoch"], part["step"], steps) if part else
             RunStart("resumed", done + 1, 0, steps) if done else RunStart("start"))
    left = len(examples) * (config.epochs - done) - (part["rows"] if part else 0)
    bar = progress_bar(left, "train", True) if progress is True else progress or None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    cuda = device.startswith("cuda")
    step_tokens = step_tokens or (None if cuda else TRAIN.cpu_step_tokens)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if training_precision(device) != FLOAT32 else None
    for epoch in range(done + 1, config.epochs + 1):
        started = time.perf_counter()
        rec = {k: np.full(len(examples), np.nan) for k in RECORD_KEYS}
        losses: list[float] = []
        timing = {"seconds": 0.0, "record_seconds": 0.0, "checkpoint_seconds": 0.0}
        if part and part["epoch"] == epoch:  # resume at the saved step: the epoch's order is its seed's
            rec, losses = load_position(out_dir / part["folder"])
            timing.update({k: float(part.get(k, 0.0)) for k in timing})
        checkpoint.start()
        batches = epoch_batches(examples, config.batch_size, TRAIN.group_size, config.seed, epoch)
        random_state = RandomState(cuda)
        finishing = DeferredStop(second_goes_through=True)  # a Ctrl-C after the last step waits for the epoch's save
        try:
            for index in batches[len(losses):]:
                parts = [collate(examples, p, pad, device) for p in split_batch(examples, index, step_tokens)]
                loss_value, got = step_gradients(model, parts, autocast, config.record, cuda, timing)
                if not math.isfinite(loss_value):  # stop before the step: the checkpoints saved so far stay valid
                    raise CurateError(f"training diverged: loss {loss_value} at epoch {epoch}, step {len(losses) + 1}; "
                                      f"nothing of epoch {epoch} was kept past its last checkpoint (try a lower "
                                      f"learning rate, now {config.learning_rate})")
                with DeferredStop():  # the step's update: whole or not at all (step.py)
                    if config.max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    losses.append(loss_value)
                    keep_records(rec, got)
                    random_state.take()
                if bar is not None:
                    bar.update(len(index))
                if len(losses) < len(batches) and checkpoint.due():
                    part, started = checkpoint_mid_epoch(out_dir, info, epoch, model, opt, sched, rec, losses,
                                                         timing, batches, started)
            finishing.__enter__()  # held from here (inside the try: no Ctrl-C falls between the loop and the hold)
        except KeyboardInterrupt:  # Ctrl-C: keep the completed steps of the epoch, discard the one it cut into
            finishing.__exit__(KeyboardInterrupt, None, None)  # the handlers it had put in place, if any, back
            if len(losses) > (part["step"] if part and part["epoch"] == epoch else 0):
                random_state.restore()
                checkpoint_mid_epoch(out_dir, info, epoch, model, opt, sched, rec, losses, timing, batches, started)
            raise
        with finishing:
            if cuda:
                torch.cuda.synchronize()
            timing["seconds"] += time.perf_counter() - started
            finish_epoch(out_dir, info, epoch, model, opt, sched, [e.id for e in examples],
                         rec if config.record else None, losses, timing)
    if bar is not None and hasattr(bar, "close"):
        bar.close()
    run = TrainRun(out_dir)
    run.model_dir = model_dir.resolve()
    run.start = begun
    return run
