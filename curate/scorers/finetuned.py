"""The fine-tuned scorer kind: a LoRA-tuned MiniLM cross-encoder (:mod:`curate.scorers.crossencoder`)
behind the same :class:`~curate.scorers.model.Scorer` interface (fit / predict / save / load, a Step). Saved as ``scorer.json`` (``"kind": "cross-encoder"``) + ``adapter.safetensors`` (LoRA weights fp16, the
head, the length covariate and the calibration map onto the output scale; < 2 MiB). The base weights
come from the installed MiniLM package (or ``base``, a local folder, recorded in scorer.json).
Predictions go through the workspace cache per row, kept as each chunk of a few seconds ends, so a killed
scoring run resumes (:mod:`curate.scorers.prediction_cache`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import curate.scorers.crossencoder as ce
import curate.scorers.prediction_cache as prediction_cache
import curate.scorers.readermap as readermap
from curate.defaults import DEITA, EMBED, SCORER, TRAIN
from curate.errors import ScorerError, ScorerFolderError
from curate.hardware import import_torch
from curate.quiet import quiet_transformers
from curate.scorers.features import Row, input_texts, label_values
from curate.scorers.model import KINDS, Scorer, training_fingerprint
from curate.scorers.saved import SAVE_ID, read_tensors, save_scorer_folder
from curate.storage.files import folder_fingerprint
from curate.storage.step import StepContext, add_counts

KIND = "cross-encoder"
# Builds a scorer's net (and folds its LoRA in) once: two threads first using one scorer object at once folded the
# adapter into one net twice, and every score after that was wrong, kept in the prediction cache too. Module-level,
# not per object: a scorer is pickled to Ray's workers, a lock is not; a build is rare and seconds long anyway.
_BUILD_LOCK = threading.RLock()


def default_base() -> str:
    from curate.embed.encoder import default_model_path

    return str(default_model_path())


def check_base_folder(base: str | None) -> None:
    """A ``base`` that is no folder is an error naming it (transformers read it as a Hub repo id: "Repo id must...")."""
    if base is not None and not Path(base).expanduser().is_dir():
        said = "is not a folder" if Path(base).expanduser().exists() else "does not exist"
        raise ScorerFolderError(f"base {base}: the base model folder {said}")


def load_tensors(net, tensors: dict[str, np.ndarray]) -> None:
    """Put shipped tensors (:func:`~curate.scorers.crossencoder.trainable_tensors`) into a freshly built net;
    ValueError unless they are exactly its set."""
    torch = import_torch()
    from peft import set_peft_model_state_dict

    want, have = ce.trainable_tensors(net), {k: v for k, v in tensors.items() if k.split(".")[0] in ("lora", "head", "cov")}
    unfit = sorted({*want.keys() ^ have.keys(), *(k for k in want.keys() & have.keys() if want[k].shape != have[k].shape)})
    if unfit:  # named here: torch's own message lists every tensor of the model
        raise ValueError(f"{len(unfit)} tensors missing, extra or of another shape, e.g. {unfit[0]} "
                         f"{[getattr(d.get(unfit[0]), 'shape', None) for d in (have, want)]} (saved, reader)")
    part = {p: {k[len(p) + 1:]: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()
                if k.startswith(p + ".")} for p in ("lora", "head", "cov")}
    set_peft_model_state_dict(net.encoder, part["lora"])
    net.head.load_state_dict(part["head"])
    net.cov.load_state_dict(part["cov"])


def merged_for_inference(net):
    """The reader with its LoRA folded into the base weights (peft ``merge_and_unload``), in eval mode: the
    same scores with one matmul per layer instead of three (faster on a CPU). Consumes ``net``'s adapter."""
    net.encoder = net.encoder.merge_and_unload()
    return net.eval()


class CrossEncoderScorer(Scorer):
    """A scorer that reads (instruction[, response]) with a LoRA-tuned MiniLM; see the module docstring.
    ``output_range``: the scale predictions land on (the calibration map's range; DEITA's 1-6 by default).
    ``base``: the MiniLM folder the adapter was trained on (default: the packaged model).
    ``device``: where fit and predict run: ``cpu`` (the default: the shipped readers run on any machine), ``cuda``,
    ``cuda:N``, or ``auto`` (CUDA when torch sees one); a runtime setting, not saved.
    """

    kind = KIND
    heads: tuple[str, ...] = ("score",)  # a linear head on the pooled text, beside the length covariate
    output_map = readermap.OUTPUT_MAP
    base_name = "all-MiniLM-L6-v2"

    def __init__(self, *, reads: Sequence[str] = ("instruction", "response"), name: str | None = None,
                 imitates: dict[str, Any] | None = None, max_length: int | None = None, lora_r: int = SCORER.lora_rank,
                 base: str | None = None, output_range: tuple[float, float] = DEITA.score_scale,
                 batch_size: int = SCORER.predict_batch_size,
                 device: str = "cpu", head: str = "score"):
        super().__init__(reads=reads, name=name, imitates=imitates, batch_size=batch_size)
        if head not in self.heads:
            raise ScorerError(f"head {head!r}: the {self.kind} kind has a {' or a '.join(self.heads)} head")
        self.head = head
        self.device = device
        self.max_length = int(max_length if max_length is not None else self.default_max_length(reads, head))
        self.lora_r = int(lora_r)
        self.base = base
        self.output_range = tuple(output_range)
        self._net = None
        self._tok = None
        self._merged = None  # the LoRA-merged net that predicts (built on first use, dropped by fit)
        self.loaded_from: Path | None = None  # the folder load() read it from, named when its weights do not fit

    # -- the network --------------------------------------------------------------------------------
    @staticmethod
    def default_base() -> str:
        return default_base()

    @staticmethod
    def default_max_length(reads: Sequence[str], head: str = "score") -> int:
        """Tokens read per row when none are given: the lengths the shipped adapters were trained with."""
        return 256 if "response" in reads else 128

    @property
    def device(self) -> str:
        return self._device_name

    @device.setter
    def device(self, name: str) -> None:  # refused when set, before any model is loaded; a loaded net moves with it
        if name not in ("cpu", "auto") and not str(name).startswith("cuda"):
            raise ScorerError(f"device {name!r}: cpu, cuda, cuda:N or auto")
        self._device_name = name
        for net in (getattr(self, "_net", None), getattr(self, "_merged", None)):  # it stayed: a CUDA net met CPU inputs
            if net is not None:
                net.to(self._device())

    def _device(self) -> str:
        from curate.hardware import resolve_device

        return resolve_device(None if self.device == "auto" else self.device)

    def _load_net(self):
        with _BUILD_LOCK:
            return self._load_net_once()

    def _load_net_once(self):
        if self._net is None:
            from transformers import AutoTokenizer

            self._check_saved_base()  # a saved scorer's base may have moved since it was trained
            base = self.base or self.default_base()
            self._tok = AutoTokenizer.from_pretrained(base)
            with quiet_transformers():  # crossencoder.py imports no curate module (see its docstring)
                self._net = ce.build_net(base, r=self.lora_r, alpha=2 * self.lora_r,
                                         **self._head_options(self._tok)).to(self._device())
            if self.weights:
                try:
                    load_tensors(self._net, self.weights)
                except (ValueError, RuntimeError) as exc:  # weights saved for another base, LoRA rank or head
                    self._net = None
                    where = self.loaded_from or repr(self)  # a folder (or base) refused: a setting, exit 78
                    raise ScorerFolderError(f"{where}: its saved weights do not load into {base}: "
                                            f"{exc}") from None
        return self._net, self._tok

    def _check_saved_base(self) -> None:
        """:func:`check_base_folder` of ``base``, naming the scorer folder that records it (another machine's path)."""
        try:
            check_base_folder(self.base)
        except ScorerFolderError as exc:
            if self.loaded_from is None:
                raise
            raise ScorerFolderError(f"{self.loaded_from}: trained on a base model folder that is not here: {exc}; put "
                                    "that model there, or name where it is as 'base' in its scorer.json") from None

    def _head_options(self, tok) -> dict[str, Any]:
        """What :func:`~curate.scorers.crossencoder.build_net` needs beyond the base: nothing for the score head."""
        return {}

    def _point_targets(self, y: np.ndarray, label_range: tuple[float, float]) -> np.ndarray:
        """The pointwise training targets: the labels standardised (the score head learns a ranking scale)."""
        return (y - y.mean()) / y.std()

    def _inference_net(self):
        with _BUILD_LOCK:
            if self._merged is None:
                net, _ = self._load_net()
                self._merged, self._net = merged_for_inference(net), None  # fit() rebuilds the adapter from weights
            return self._merged, self._tok

    def _plan(self):
        """The CPU batches: length buckets under the padded-token budget (:mod:`curate.embed.batching`); on a
        GPU, ``batch_size`` rows in length order."""
        from curate.embed.batching import token_budget_batches

        return None if self._device() != "cpu" else partial(token_budget_batches, max_tokens=EMBED.batch_tokens,
                                                             max_rows=self.batch_size)

    def _texts(self, rows: Sequence[Row]) -> tuple[list[str], list[str] | None]:
        texts = input_texts(rows, self.reads)
        return texts["instruction"], texts.get("response")

    def predict_raw(self, rows: Sequence[Row], cache_dir: str | os.PathLike | None = None, on_rows=None,
                    cache_use: dict[str, int] | None = None) -> np.ndarray:
        """Raw network scores (before calibration); under ``cache_dir`` kept per row as each chunk ends, so a killed
        pass keeps what it finished (:mod:`curate.scorers.prediction_cache`); ``cache_use``: see :meth:`Scorer.embed`
        (with what the move of the cache's earlier layouts did: rows read from it, files removed unread or damaged)."""
        ins, res = self._texts(rows)
        if not ins:
            return np.zeros(0, dtype=np.float32)
        net, tok = self._inference_net()

        computed, predicted = [0], set()

        def predict(positions: list[int]) -> np.ndarray:
            computed[0] += len(positions)
            predicted.update(keys[i] for i in positions)
            return ce.predict_net(net, tok, [ins[i] for i in positions],
                                  None if res is None else [res[i] for i in positions], max_length=self.max_length,
                                  batch_size=self.batch_size, on_rows=on_rows, plan=self._plan(), device=self._device())

        keys = prediction_cache.row_keys(ins, res)
        chars = [len(t) + (0 if res is None else len(res[i])) for i, t in enumerate(ins)]  # chunks: similar lengths
        if cache_dir is None:  # the chunks a cached pass would score (batch-mates move a row's last digits)
            raw = prediction_cache.predict_cached(predict, keys, None, first_rows=self.batch_size, lengths=chars)
            repeated = len(ins) - computed[0]  # a Ray actor's batch: no cache, only a row scored once for its repeats
            add_counts(cache_use, turns_from_prediction_cache=0, turns_predicted=computed[0],
                       **({"turns_repeating_a_row_of_the_pass": repeated} if repeated else {}))
            return raw
        fingerprint = self.fingerprint()  # once: a base folder's files are checked by it
        moved = prediction_cache.move_legacy(cache_dir, fingerprint, ins, res)  # counted, not logged
        if moved.rows_moved or moved.files_removed or moved.damaged:
            add_counts(cache_use, turns_from_old_cache_layout=moved.rows_moved,
                       old_cache_files_removed_unread=len(moved.files_removed),
                       old_cache_files_damaged=len(moved.damaged))
        raw = prediction_cache.predict_cached(predict, keys, prediction_cache.cache_folder(cache_dir, fingerprint),
                                              first_rows=self.batch_size, lengths=chars, on_rows=on_rows)
        repeated = sum(1 for key in keys if key in predicted) - computed[0]  # a row scored once for its repeats
        add_counts(cache_use, turns_from_prediction_cache=len(ins) - computed[0] - repeated, turns_predicted=computed[0],
                   **({"turns_repeating_a_row_of_the_pass": repeated} if repeated else {}))
        return raw

    def run_cache_dir(self, ctx: StepContext) -> Path | None:
        """The context's cache folder, None where it is thrown away after the run (``ctx.keep_outputs`` False: a Ray
        actor's batch, whose forward passes were written as shards and merged for nothing)."""
        return ctx.cache_dir if ctx.keep_outputs else None

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        if "calibration.x" not in self.weights:
            raise ScorerError("this cross-encoder scorer has no calibration map; fit() or load() it first")
        return readermap.apply_map(raw, self.weights["calibration.x"], self.weights["calibration.y"])

    def predict(self, rows: Sequence[Row], cache_dir: str | os.PathLike | None = None, on_rows=None,
                cache_use: dict[str, int] | None = None) -> np.ndarray:
        if not (rows := list(rows)):
            return np.zeros(0)
        if not self.weights:
            raise ScorerError("this scorer is not fitted; call fit() or Scorer.load()")
        return self.calibrate(self.predict_raw(rows, cache_dir=cache_dir, on_rows=on_rows, cache_use=cache_use))

    def fit(self, rows: Sequence[Row] | Any, scores: Sequence[float] | np.ndarray | None = None, *,
            label_range: tuple[float, float] | None = None, epochs: float = SCORER.finetune_epochs, lr: float = SCORER.finetune_lr,
            batch_size: int = SCORER.finetune_batch_size, pairs: Sequence[tuple[Row, Row, float]] | None = None, seed: int = 0,
            log=None, on_step=None, checkpoint_dir: str | os.PathLike | None = None,
            on_resume=None, step_tokens: int | None = None) -> CrossEncoderScorer:
        """Fine-tune on (row, score) labels, plus optional preference ``pairs`` (row 1, row 2, P(1 beats 2))
        of the same instruction. Starts from the current adapter when loaded (warm start), else fresh.
        ``on_step(step, steps)``: progress, after each training step; ``on_resume(step, steps)``: once, before the
        first step, when progress saved under ``checkpoint_dir`` was read back (``step`` of ``steps`` done before).
        ``step_tokens``: padded tokens per forward pass (default ``TRAIN.cpu_step_tokens`` on the CPU, the whole
        batch on a GPU); a larger batch runs as several passes whose gradients add up into one step (same update).
        ``label_range``: the judge's scale, mapped linearly onto ``output_range`` (default: the labels' range).
        ``checkpoint_dir`` (a workspace's cache folder): progress is saved there as training goes, and a rerun of
        the same fit continues from it (after a kill) or reads the finished run back (:mod:`curate.scorers.checkpoint`);
        the calibration pass's forward passes are cached there too."""
        rows = list(rows)
        y = np.asarray(label_values(rows, scores), dtype=np.float64)  # a NaN label trained a net that scores NaN
        ins, res = self._texts(rows)
        torch = import_torch()
        base_files = None
        if self.base is not None:  # recorded once trained (a warm start on other files: anew), for fingerprint()
            check_base_folder(self.base)
            base_files = folder_fingerprint(Path(self.base).expanduser())
        start = Scorer.fingerprint(self)  # the config and the weights it starts from (none, or a warm start's)
        if self._net is None and not self.weights:  # fresh LoRA adapters draw their init from torch's RNG: seed it
            torch.manual_seed(seed)
        net, tok = self._load_net()
        lo, hi = label_range or (float(y.min()), float(y.max()))
        z = self._point_targets(y, (lo, hi))
        points = [(ins[i], res[i] if res is not None else None, float(z[i])) for i in range(len(rows))]
        prs = []
        for r1, r2, p in pairs or []:
            t = input_texts([r1, r2], self.reads)
            if "response" in self.reads:  # two responses to one instruction
                prs.append((t["instruction"][0], t["response"][0], t["response"][1], float(p)))
            else:
                prs.append((None, t["instruction"][0], t["instruction"][1], float(p)))
        device = self._device()
        amp = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else None
        checkpoint = None
        if checkpoint_dir is not None:  # named by all that decides the run: start weights, labels, pairs, settings
            from curate.scorers.checkpoint import TrainingCheckpoint, checkpoint_key

            key = checkpoint_key({"scorer": start, "points": training_fingerprint({"i": ins, "r": res or []}, z),
                                  "pairs": prs, "settings": [epochs, lr, batch_size, seed],
                                  **({"base_files": base_files} if base_files is not None else {}),
                                  **({"autocast": "bfloat16"} if amp is not None else {})})  # GPU steps: their own
            checkpoint = TrainingCheckpoint(Path(checkpoint_dir) / "finetune" / f"{self.kind}-{key}.pt",
                                            on_restore=on_resume)
        from curate.embed.batching import token_budget_batches

        step_tokens = step_tokens or (TRAIN.cpu_step_tokens if device == "cpu" else None)
        plan = partial(token_budget_batches, max_tokens=step_tokens, max_rows=batch_size) if step_tokens else None
        info = ce.train_net(net, tok, points=points, pairs=prs, max_length=self.max_length, epochs=epochs, lr=lr,
                            batch_size=batch_size, seed=seed, log=log, device=device, amp_dtype=amp,
                            on_step=on_step, checkpoint=checkpoint, step_plan=plan)
        info["device"] = device
        self.weights = {k: np.asarray(v) for k, v in ce.trainable_tensors(net).items()}
        if base_files is not None:  # trained on these files: an interrupted warm start keeps the record it had
            self.metadata["base_files"] = base_files
        load_tensors(net, self.weights)  # the fp16-rounded adapter that is saved is the one that predicts
        self._merged = None
        target = readermap.linear_map(y, (lo, hi), self.output_range)
        raw = self.predict_raw(rows, cache_dir=checkpoint_dir)  # cached: a killed calibration pass resumes too
        self.weights["calibration.x"], self.weights["calibration.y"] = readermap.quantile_map(raw, target)
        self.metadata.update({"n_train": len(rows), "training_fingerprint": training_fingerprint({"i": ins, "r": res or []}, y),
                              "label_mean": float(y.mean()), "label_std": float(y.std()), "train": info})
        return self

    # -- provenance and persistence -----------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "reads": self.reads, "max_length": self.max_length, "lora_r": self.lora_r,
                "base": self.base or f"packaged {self.base_name}", "output_range": self.output_range,
                "name": self.name, "imitates": self.imitates}

    def fingerprint(self) -> str:
        """:meth:`Scorer.fingerprint` (config, weights), once a ``base`` folder is checked to hold the files the scorer
        was trained on: its adapter was tuned on those weights, and new weights there scored differently under the
        same key (answered from old predictions). A scorer saved before the check was recorded is not checked; the
        key stays as it was (naming the files in it made every row of such a scorer run again after the upgrade)."""
        trained_on = self.metadata.get("base_files")
        if self.base is not None and trained_on is not None:
            self._check_saved_base()
            now = folder_fingerprint(Path(self.base).expanduser())
            if now != trained_on:
                raise ScorerError(f"{self.base}: the base model folder's files changed since this scorer was trained "
                                  f"on them (files {trained_on}, now {now}): its adapter was tuned on the old weights. "
                                  "Put the old files back, or train the scorer again on this folder")
        return super().fingerprint()

    def fresh(self) -> CrossEncoderScorer:
        return type(self)(reads=self.reads, name=self.name, imitates=self.imitates, max_length=self.max_length,
                          lora_r=self.lora_r, base=self.base, output_range=self.output_range, device=self.device,
                          **self._options())

    def _options(self) -> dict[str, Any]:
        """The constructor's options beyond the cross-encoder's (the small-LM reader's head and prompt)."""
        return {}

    @classmethod
    def _saved_options(cls, doc: dict[str, Any]) -> dict[str, Any]:
        """:meth:`_options` as read back from a saved ``scorer.json``."""
        return {}

    def save(self, directory: str | os.PathLike) -> Path:
        if not self.weights:
            raise ScorerError("nothing to save: the scorer is not fitted")
        return save_scorer_folder(directory, "adapter.safetensors",
                                  {k: np.ascontiguousarray(v) for k, v in self.weights.items()}, self.config(),
                                  self.metadata, self.metrics)

    @classmethod
    def _from_saved(cls, path: Path, doc: dict[str, Any]) -> CrossEncoderScorer:
        if not (path / "adapter.safetensors").is_file():
            raise ScorerError(f"{path}: not a saved {cls.kind} scorer (no adapter.safetensors beside scorer.json)")
        base = doc.get("base")
        scorer = cls(reads=doc["reads"], name=doc.get("name"), imitates=doc.get("imitates"),
                     max_length=doc["max_length"], lora_r=doc["lora_r"],
                     base=None if not base or base.startswith("packaged") else base,
                     output_range=tuple(doc["output_range"]), **cls._saved_options(doc))
        scorer.weights = read_tensors(path / "adapter.safetensors", doc.get(SAVE_ID))
        if fault := readermap.map_fault(scorer.weights):  # found when loaded, not after a pass over every row
            raise ScorerError(f"{path}: adapter.safetensors holds {fault}: a damaged or hand-edited file; train the "
                              "scorer again")
        scorer.loaded_from = path
        scorer.metadata = doc.get("metadata", {})
        scorer.metrics = doc.get("metrics", {})
        return scorer

    def __repr__(self) -> str:
        return f"CrossEncoderScorer({self.column!r}, reads={self.reads}, max_length={self.max_length})"


KINDS[KIND] = CrossEncoderScorer
