"""Learnability with a brief reference tuning on one device, into the column learn<STEPS>_<DEVICE>.

    PYTHONPATH=. python3 evals/device_gpu_learnability.py WORKSPACE DEVICE STEPS
The workspace needs a selection ``ref`` (the reference rows). The reference adapter (float32 on either device) and
the log-probabilities are cached in the workspace by model, data and settings, not by device: to compare devices, run
each in its own workspace (evals/device_gpu_rerun.sh does).
"""
import sys
import time

from curate import Workspace
from curate.signals import Learnability, LoraConfig

ws, dev, steps = Workspace(sys.argv[1]), sys.argv[2], int(sys.argv[3])
t = time.time()
step = Learnability.from_selection(ws, "ref", lora=LoraConfig(steps=steps), device=dev, column=f"learn{steps}_{dev}")
ws.apply(step)
print("learn", dev, steps, "seconds", round(time.time() - t, 1), "adapter", step.adapter_fingerprint[:16],
      step.adapter.meta if step.adapter else None)
