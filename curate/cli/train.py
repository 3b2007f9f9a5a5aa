"""`curate train`: fine-tune a small LM on the pool, recording each row (data map, EL2N, GraNd)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from curate.cli.common import app, console, option
from curate.cli.group import CommandGroup
from curate.defaults import SELECT, TRAIN

if TYPE_CHECKING:  # curate.train imports the harness: not at the CLI's start
    from curate.train.runfile import RunStart

train_app = typer.Typer(cls=CommandGroup, no_args_is_help=True, help="Training in the loop: a resumable fine-tune that records "
                        "every row each epoch (Dataset Cartography, Data Diet EL2N / GraNd).")
app.add_typer(train_app, name="train")


# The training options `train run` and `train model` share, defined once (defaults: curate.defaults.TRAIN).
MODEL = typer.Option(None, "--model", "-m", help="A Hugging Face causal LM folder (default: the packaged "
                     "SmolLM2-135M-Instruct).")
DEVICE = typer.Option(None, "--device", help="cpu | cuda (default: cuda when present).")
EPOCHS = option(TRAIN, "epochs", "Epochs (a data map needs >= 2).")
MODEL_EPOCHS = option(TRAIN, "epochs", "Epochs (at least 1).")
LORA_RANK = option(TRAIN, "lora_rank", "LoRA rank (merged into the weights when a model is exported); 0 = full "
                   "fine-tune.")
LEARNING_RATE = option(TRAIN, "learning_rate", "Peak learning rate (linear warm-up, then linear decay).")
BATCH_SIZE = option(TRAIN, "batch_size", "Rows per optimizer step.")
MAX_LENGTH = option(TRAIN, "max_length", "Tokens per row (longer are cut).")
SEED = option(TRAIN, "seed", "Seed of the row order and of the initial weights.")


@train_app.command("run")
def run_cmd(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    selection: str | None = typer.Option(None, "--selection", help="Train on this selection's kept rows "
                                         "(default: the whole pool)."),
    model: Path | None = MODEL,
    device: str | None = DEVICE,
    epochs: int = EPOCHS,
    lora_rank: int = LORA_RANK,
    learning_rate: float = LEARNING_RATE,
    batch_size: int = BATCH_SIZE,
    max_length: int = MAX_LENGTH,
    seed: int = SEED,
) -> None:
    """Fine-tune and write the columns confidence, variability, correctness, el2n, grand. Cached: a re-run
    reads the finished run; a killed run resumes at its last checkpoint (mid-epoch ones every
    TRAIN.checkpoint_seconds)."""
    from curate.report.datamap import region_counts
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    run = ws.train(selection, model=model, device=device, epochs=epochs, lora_rank=lora_rank,
                   learning_rate=learning_rate, batch_size=batch_size, max_length=max_length, seed=seed)
    console.print(f"trained {len(run.ids):,} rows for {run.epochs_done} epochs ({len(run.skipped):,} skipped: "
                  f"no answered turn); run folder {run.out_dir}")
    if run.start is not None:
        console.print(f"  {started_from(run.start)}", highlight=False)
    for line in unfinished_lines(run.out_dir):
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    for s in run.info.get("epoch_stats", []):
        console.print(f"  epoch {s['epoch']}: mean loss {s['mean_loss']:.4f}, {s['seconds']:.1f} s "
                      f"({s['record_seconds']:.1f} s of it for the records)")
    counts = region_counts(ws)
    console.print("data map: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
                  + "; select with `curate select --method cartography|el2n|grand`")


def started_from(start: RunStart) -> str:
    """Where ``finetune`` started the run it returned, in words."""
    if start.kind == "cache":
        return "a finished run read from the cache (nothing trained)"
    if start.kind == "resumed":
        return (f"resumed at epoch {start.epoch}, step {start.step} of {start.steps} (the steps before it read "
                "from its checkpoint)")
    return "trained from the start"


def unfinished_lines(out_dir: Path) -> list[str]:
    """The cache's unfinished runs beside ``out_dir`` (other settings, rows or model), each in words: they are
    kept (their settings resume them), so the user hears of the disk they hold."""
    from curate.train.runfile import unfinished_beside

    lines = []
    for other in unfinished_beside(out_dir):
        what = ", ".join(f"{k} {v}" for k, v in other.differs.items()) or "the same settings, other rows or model"
        then = ("training now in another process" if other.training else
                "its settings resume it; remove the folder to free the disk")
        lines.append(f"kept beside it: an unfinished run ({what}; epoch {other.epochs_done} of {other.epochs} done, "
                     f"{other.bytes / 2**20:,.1f} MiB) in {other.folder}: {then}")
    return lines


@train_app.command("model")
def model_cmd(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    selection: str = typer.Option(..., "--selection", help="Fine-tune on this selection's kept rows (MoDS: the seed)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the fine-tuned model to (a Hugging Face folder)."),
    model: Path | None = MODEL,
    device: str | None = DEVICE,
    epochs: int = MODEL_EPOCHS,
    lora_rank: int = LORA_RANK,
    learning_rate: float = LEARNING_RATE,
    batch_size: int = BATCH_SIZE,
    max_length: int = MAX_LENGTH,
    seed: int = SEED,
) -> None:
    """Fine-tune on a selection and write the model as a plain Hugging Face folder that vLLM serves (MoDS' seed
    model: let it answer the pool, judge its answers, select with --method necessity). Cached and resumable."""
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    folder = ws.fine_tune(selection, out, model=model, device=device, epochs=epochs, lora_rank=lora_rank,
                          learning_rate=learning_rate, batch_size=batch_size, max_length=max_length, seed=seed)
    console.print(f"fine-tuned on selection {selection!r}; model folder {folder}", highlight=False)
    seed_from = ws.selection(selection).provenance.get("input_selection")  # MoDS: the quality filter's rows
    for what, command in mods_next_steps(str(workspace), selection, str(folder), seed_from):
        console.print(f"  {what + ':':<15} {command}", soft_wrap=True, highlight=False)


def mods_next_steps(workspace: str, seed: str, folder: str, seed_from: str | None) -> list[tuple[str, str]]:
    """MoDS after its seed model (what each step is, its command): the model's answers, their quality (the shipped
    scorer, offline), the necessity selection among ``seed_from`` (the rows the seed was chosen from). README's MoDS
    section runs the same commands."""
    among = f" --from {seed_from}" if seed_from else ""
    return [("its answers", f"curate score {workspace} --judge answer --backend vllm --model {folder} "
                            "--column seed_answer"),
            ("judge them", f"curate score {workspace} --scorer default --response-column seed_answer"),
            ("select (MoDS)", f"curate select {workspace} --method necessity --name mods{among} --param seed={seed} "
                              "--param answer_score=seed_answer_quality --param "
                              f"max_answer_score={SELECT.mods_max_answer_score:g} --param answers=seed_answer")]


@train_app.command("map")
def map_cmd(workspace: Path = typer.Argument(..., help="Workspace directory.")) -> None:
    """The data map's regions and how the run was trained."""
    from curate.report.datamap import region_counts
    from curate.session import Workspace

    ws = Workspace.open(workspace)
    counts = region_counts(ws)
    prov = ws.column_provenance("confidence").get("train") or {}
    console.print(f"run {prov.get('run')}: {prov.get('rows')} rows, {prov.get('epochs_done')} epochs")
    for region, n in counts.items():
        console.print(f"  {region}: {n:,}")
