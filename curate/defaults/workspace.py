"""Defaults of workspace, pools, progress, the Ray engine, the report and `curate run`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportDefaults:
    """The HTML curation report (``ws.report`` / ``curate report`` / ``curate run``)."""
    path: str = "report.html"            # the file written (in ``curate run``: OUT/this)
    samples: int = 3                     # rows kept and rows dropped shown


@dataclass(frozen=True)
class PoolDefaults:
    """Reading a pool (``curate.pools``, ``ws.load``, ``curate load``)."""
    format: str = "auto"                 # the source's record shape, read per record
    on_error: str = "raise"              # a bad record stops the read (skip: leave it out, listed in rejects.jsonl)
    max_field_chars: int = 1_000_000     # a text field longer than this is a bad record, not a row


@dataclass(frozen=True)
class WorkspaceDefaults:
    """Sharing a workspace between processes and threads (``curate.storage``)."""
    lock_notice_s: float = 1.5           # a wait for the workspace lock longer than this is logged once, naming the
                                         # holder (pid, command); a shorter one is the ordinary turn-taking of writes


@dataclass(frozen=True)
class ProgressDefaults:
    """Progress bars (``curate.storage.progress``)."""
    log_interval_s: float = 30.0         # where stderr is no terminal (a log file, a container's log): one
                                         # newline-ended progress line at most this often, plus the last one
    env: str = "CURATE_PROGRESS"         # set to 0: no progress bars at all (CLI and API), e.g. in a pipeline


@dataclass(frozen=True)
class ScaleDefaults:
    """The Ray engine's inference passes (``curate.scale``, ``--engine ray``)."""
    batch_rows: int = 512                # rows per actor call at most: large pools keep the encoder's throughput (it
                                         # batches them by EMBED.batch_size)
    signal_batch_rows: int = 64          # the same in a pass computing token signals (a causal LM per row: 512 rows
                                         # were 4-8 minutes of SmolLM2 on 2 CPU cores, all lost to a kill)
    calls_per_actor: int = 4             # a pass is split into at least this many calls per actor (below the above):
                                         # a small pool's rows come back call by call (Ray Data hands an actor a
                                         # block, a shard's rows: one small shard may still run on one actor)
    commit_wait_max_s: float = 60.0      # a pass's column writes are spaced out (each rewrites the columns), by at most
                                         # this: one slow write held the next back ~5 min, all lost to a kill
    task_shuffle_max_rows: int = 100_000  # a pool up to this groups (dedup, MinHash) in tasks, not aggregator actors


@dataclass(frozen=True)
class RunDefaults:
    """``curate run``: the one-command pipeline."""
    out: str = "curate-run"              # the output folder (workspace, exports, report)
    engine: str = "single"               # single (this process) | ray


REPORT = ReportDefaults()
POOL = PoolDefaults()
WORKSPACE = WorkspaceDefaults()
PROGRESS = ProgressDefaults()
SCALE = ScaleDefaults()
RUN = RunDefaults()
