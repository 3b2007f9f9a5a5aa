"""Training in the loop: a small, resumable fine-tuning harness that records what happens to each row.

:func:`~curate.train.harness.finetune` (peft LoRA or full SFT of any Hugging Face causal LM folder, loss on
response tokens only) writes a checkpoint and per-row records (loss, gold-token probability, token accuracy,
EL2N, output-layer gradient norm) after every epoch and resumes after a kill. Signals built on it:
Dataset Cartography (:mod:`curate.train.cartography`) and Data Diet EL2N / GraNd (:mod:`curate.train.diet`).
"""

from curate.train.harness import TrainConfig, TrainRun, finetune, run_folder
from curate.train.losses import eval_loss

__all__ = ["TrainConfig", "TrainRun", "eval_loss", "finetune", "run_folder"]

# H15b (additive): the QQT planner (numpy only). LESS and Instruction Mining live in curate.train.less and
# curate.train.mining (not imported here: they register selectors, which would pull curate.select into the harness).
from curate.train.planner import Plan, plan  # noqa: E402

__all__ += ["Plan", "plan"]
