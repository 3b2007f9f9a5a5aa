"""A fine-tuned model as a plain Hugging Face folder that any engine can serve (vLLM, transformers, an API server).

``export_model(run, out)`` writes the run's last epoch into ``out``: a LoRA run merged into its base weights
(peft ``merge_and_unload``), safetensors, the base's tokenizer and chat template, and ``curate-model.json``
naming the run. MoDS needs it: the seed model answers every candidate instruction, and vLLM serves one folder.
The vLLM backends name such a folder's model by its run (``curate.llm.local.folder_model_name``), so the
answers of two seed models exported to the same path never share cache entries.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from curate.errors import OutPathError
from curate.quiet import quiet_transformers
from curate.storage.files import EXPORTED_MODEL_FILE, exported_model, passing_lock
from curate.storage.folders import folder_written_whole
from curate.storage.write_errors import check_writable
from curate.train.harness import TrainRun


def check_model_target(out: str | os.PathLike) -> None:
    """Refuse ``out`` before any training when :func:`export_model` would refuse it after: an existing file, a
    folder that is not an export of curate's, or one on a read-only disk (an OSError naming it)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or exported_model(out) is None):
        raise OutPathError(f"{out} exists and is not a model curate exported; choose another folder")
    check_writable(out)


def export_model(run: TrainRun, out: str | os.PathLike, epoch: int | None = None) -> Path:
    """Write ``run``'s model after ``epoch`` (default: the last finished) to ``out`` as a full Hugging Face
    folder. A folder already holding that export is kept as it is; any other existing folder is refused
    unless it is an earlier export of curate's, which is replaced whole. Exports to one folder, from any
    threads or processes, take turns."""
    out = Path(out)
    epoch = run.epochs_done if epoch is None else epoch
    info = {"run": run.info["fingerprint"], "epoch": epoch, "base": str(run.model_dir),
            "base_fingerprint": run.info["model_fingerprint"], "rows": len(run.ids),
            "lora_rank": run.config.lora_rank}
    out.parent.mkdir(parents=True, exist_ok=True)
    with passing_lock(out.parent / f".{out.name}.export.lock"):  # removed after: none left in the user's folder  # one writer of ``out`` at a time, any process
        if out.exists():
            if exported_model(out) == info:
                return out
            if exported_model(out) is None:
                raise OutPathError(f"{out} exists and is not a model curate exported; choose another folder")
        model, tokenizer = run.load_model(epoch, device="cpu")
        if run.config.lora_rank:
            model = model.merge_and_unload()  # the adapter folded into the base weights: one plain model
        # a reader never meets it half-written or half-deleted; transformers' "Writing model shards" bar hidden
        with folder_written_whole(out) as tmp, quiet_transformers():
            model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            for name in ("chat_template.jinja", "generation_config.json"):  # kept as the base has them
                if (run.model_dir / name).is_file() and not (tmp / name).is_file():
                    shutil.copy(run.model_dir / name, tmp / name)
            (tmp / EXPORTED_MODEL_FILE).write_text(json.dumps(info, indent=1))
    return out
