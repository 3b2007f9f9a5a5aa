"""The peak memory a benchmark's part process reports."""

from __future__ import annotations

from pathlib import Path


def own_peak_mb() -> float:
    """This process's own peak resident memory (VmHWM, MiB): unlike ``ru_maxrss``, it does not inherit the peak of
    the parent this process was forked from."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
