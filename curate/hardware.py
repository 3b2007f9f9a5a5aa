"""What this machine's torch runs well: the device, and the float type for a small model on it.

bfloat16 halves memory and is fast where the hardware multiplies it natively (CUDA with bf16, CPUs with
AVX512-BF16 or AMX). On other CPUs (AVX2 only) it is emulated: vLLM-CPU then reads a 1,000-token prompt
~5x slower in bfloat16 than in float32 (evals/bench_local_dtype.py). ``auto`` picks per machine.
Loading a model goes through :data:`curate.quiet.quiet_transformers`: the library's own per-load bar hides curate's
step bars.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from curate.errors import OptionError

DTYPES = ("auto", "float32", "bfloat16")


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block and raise it as KeyboardInterrupt when the block ends. Only
    the main thread receives signals: elsewhere, and where SIGINT is not Python's default handler, nothing changes."""
    if threading.current_thread() is not threading.main_thread() or (
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


def import_torch() -> Any:
    """``torch``, imported with a Ctrl-C held until the import ends: torch does not survive an interrupt in the middle
    of its first import (its C extension registers operators once; every later ``import torch`` fails until the
    process restarts, in a notebook the kernel). curate imports it lazily, in work a user may stop: the places that
    meet it first (the selection's bf16 probe, an encoder or model's first load) go through here."""
    if "torch" not in sys.modules:
        with interrupts_held():
            import torch  # noqa: F401
    import torch  # waits for an import another thread has under way (sys.modules holds it half-made until it ends)

    return torch


@functools.cache  # the hardware does not change; every local model runner asks
def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (oneDNN's check, then a tiny bf16 matmul)."""
    torch = import_torch()

    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        a = torch.ones(4, 4, dtype=torch.bfloat16)
        return bool((a @ a)[0, 0].item() == 4.0)
    except (AttributeError, RuntimeError):
        return False


def resolve_device(device: str | None) -> str:
    """``cuda`` when asked or (with None) when present, else ``cpu``."""
    torch = import_torch()

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):  # torch's own message lists every device type it knows
        raise OptionError(f"device {device!r}: use cpu, cuda or cuda:N (torch device names)") from None
    if parsed.type not in ("cpu", "cuda"):  # mps, xpu, meta...: kernels and dtypes curate was never run on
        raise OptionError(f"device {device!r}: curate runs on cpu, cuda or cuda:N")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"device {device!r} asked for but torch sees no CUDA device")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise OptionError(f"device {device!r}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_dtype(dtype: str, device: str | None = None) -> str:
    """``auto``: bfloat16 on CUDA with bf16 and on CPUs with native bf16, else float32 (``device`` None: the
    device :func:`resolve_device` picks)."""
    if dtype not in DTYPES:
        raise OptionError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "auto":
        return dtype
    import torch

    device = resolve_device(device)
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_bf16() else "float32"




def check_model_location(model: str | os.PathLike | None, what: str, hint: str = "") -> None:
    """A model written as a path (``/…``, ``./…``, ``~/…``) that is no folder is an error naming it: the loaders
    (vLLM, sentence-transformers) read it as a Hugging Face repo id and fail on the id's spelling. A repo id
    (``org/name``) is left to them."""
    text = str(model or "")
    if text.startswith(("/", ".", "~")) and not Path(text).expanduser().is_dir():
        raise OptionError(f"{what} {text}: no such model folder{hint}")
