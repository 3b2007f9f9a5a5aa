"""A hostile machine: a disk that fills mid-write, a late Ctrl-C, a pipe or a device where a file was expected.

A full disk is made without mounts: a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) in a child process cuts a write
short as a full disk does, and a link to /dev/full fails every write with ENOSPC. Nothing here writes to a device
node itself: the links to one live in tmp_path, and curate writes through a link to a device, never over it.
"""

import json
import os
import re
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import curate
from curate.errors import InputError
from curate.exit_codes import EXIT_CONFIG
from curate.pools.shards import shard_paths
from curate.session import Workspace
from tests.conftest import write_jsonl
from tests.test_reliability_workspace import (  # noqa: F401  (small_ws: a fixture)
    CLI_TIMEOUT_S,
    REPO,
    _as_from_a_terminal,
    _cli_command,
    _one_line_error,
    _pool_file,
    curate_cli,
    curate_said,
    small_ws,
)
from tests.train_fixtures import tiny_lm  # noqa: F401  (a session fixture)

# A child that limits the size of the files it writes (SIGXFSZ ignored: a write past it fails, as on a full disk,
# instead of killing the process), then writes vectors bigger than that; it prints the one line the CLI would.
_CUT_SHORT = """
import resource, signal, sys
import numpy as np
from curate.cli import _os_error_line
from curate.session import Workspace
from curate.storage.vector_shards import VectorStore

which, folder = sys.argv[1], sys.argv[2]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65_536, resource.RLIM_INFINITY))
try:
    if which == "store":
        store = VectorStore(folder)
        with store.lock():
            store.add(np.array([b"%032d" % i for i in range(1000)], dtype="S32"), np.ones((1000, 64), np.float32))
    else:
        ws = Workspace.open(folder)
        ws.add_embeddings("default", np.ones((len(ws), 8192), np.float32), {"kind": "test"})
except OSError as exc:
    print(_os_error_line(exc))
else:
    print("written")
"""


def _cut_short(which: str, folder: Path) -> str:
    r = subprocess.run([sys.executable, "-c", _CUT_SHORT, which, str(folder)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    return r.stdout.strip()


def test_a_vector_store_shard_cut_short_by_a_full_disk_names_the_store_and_the_short_write(tmp_path):
    """numpy's np.save said "64000 requested and 16352 written": no file, no errno, no hint of a full disk."""
    store = tmp_path / "cache" / "embeddings"
    line = _cut_short("store", store)
    assert re.fullmatch(rf"{re.escape(str(store))}: write cut short, \d+ of 64000 array items written \(likely no "
                        r"space left on device, or a file size limit\)", line), line
    assert not [p for p in store.iterdir() if p.name.startswith((".tmp-", "shard-"))]  # no half shard left


def test_an_embedding_matrix_cut_short_by_a_full_disk_names_its_file(small_ws):  # noqa: F811
    line = _cut_short("matrix", small_ws.path)
    folder = small_ws.path / "embeddings"
    assert line.startswith(f"{folder}/default-") and ".npy: write cut short, " in line, line
    assert "of 40960 array items written (likely no space left on device" in line, line
    assert list(folder.iterdir()) == []  # neither the temporary file nor a matrix without its metadata


def _small_files_only() -> None:
    """In the child before exec: files past 64 KiB cannot be written, as on a disk that fills (a write past the limit
    fails with EFBIG instead of SIGXFSZ killing the process)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65_536, resource.RLIM_INFINITY))


def test_a_load_onto_a_full_disk_names_the_file_it_was_writing(tmp_path):
    """pyarrow's "[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device" named no file."""
    pool = _pool_file(tmp_path / "pool.jsonl", "a long row to fill the disk with, " * 4, 2000)
    r = subprocess.run(_cli_command("load", pool, "--workspace", tmp_path / "ws"), capture_output=True, text=True,
                       timeout=CLI_TIMEOUT_S, preexec_fn=_small_files_only,
                       env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"})
    line = _one_line_error(r)
    assert re.match(rf"error: {re.escape(str(tmp_path / 'ws' / 'staging'))}/[0-9a-f]{{32}}/raw-00000\.arrow: .*File "
                    "too large", line), line
    assert not (tmp_path / "ws").exists()  # the load that made the workspace removed it


# `curate ARGS...` run as the console script does, then a real signal sent as the process exits (the command done,
# its SystemExit on the way up): a Ctrl-C or a scheduler's SIGTERM that comes a moment too late.
_SIGNALLED_AT_EXIT = """
import os, signal, sys
import curate.cli

signum = getattr(signal, sys.argv[1])
sys.argv = ["curate", *sys.argv[2:]]
try:
    curate.cli.main()
finally:
    os.kill(os.getpid(), signum)
    sum(range(1000))  # the handler runs here
"""


def _signalled_at_exit(signum: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _SIGNALLED_AT_EXIT, signum, *map(str, args)], capture_output=True,
                          text=True, timeout=CLI_TIMEOUT_S, env={**os.environ, "PYTHONPATH": str(REPO)},
                          preexec_fn=_as_from_a_terminal)


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_after_the_command_finished_keeps_its_exit_code(tmp_path, small_ws, signum):  # noqa: F811
    """It exited -2 with a traceback (the KeyboardInterrupt replaced the SystemExit): a finished export failed."""
    r = _signalled_at_exit(signum, "export", small_ws.path, "--out", tmp_path / "e.jsonl")
    assert r.returncode == 0 and r.stderr == "", (r.returncode, r.stderr[-3000:])
    assert r.stdout.startswith("wrote 5 rows") and len((tmp_path / "e.jsonl").read_text().splitlines()) == 5
    (tmp_path / "file").write_text("")
    refused = _signalled_at_exit(signum, "export", small_ws.path, "--out", tmp_path / "file" / "e.jsonl")
    line = _one_line_error(refused, code=EXIT_CONFIG)  # a refusal keeps its exit code
    assert line.startswith(f"error: {tmp_path / 'file' / 'e.jsonl'}: {tmp_path / 'file'} is a file"), line


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_a_pipe_or_a_device_named_as_a_pool_file_is_said_to_be_one(tmp_path):
    """`curate load f.jsonl` of a FIFO, or of a link to /dev/null, said "file: no such file or folder" of a file that
    is there. Nothing is written: the link to the device lives in tmp_path and a load only reads its source."""
    fifo = tmp_path / "f.jsonl"
    os.mkfifo(fifo)
    null = tmp_path / "null.jsonl"
    null.symlink_to("/dev/null")
    line = _one_line_error(curate_cli("load", fifo, "--workspace", tmp_path / "ws"), code=65)  # bad input
    assert line.startswith(f"error: {fifo}: file: not a regular file but a pipe (FIFO); curate reads a pool from "
                           "regular files only"), line
    line = _one_line_error(curate_cli("load", null, "--workspace", tmp_path / "ws"), code=65)
    assert line.startswith(f"error: {null}: file: not a regular file but a character device (/dev/null)"), line
    assert not (tmp_path / "ws").exists() and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    read_end, write_end = os.pipe()  # what `curate load <(zcat pool.jsonl.gz)` is given: /dev/fd/N, a pipe
    try:
        r = subprocess.run(_cli_command("load", f"/dev/fd/{read_end}", "--workspace", tmp_path / "ws"),
                           capture_output=True, text=True, timeout=CLI_TIMEOUT_S, pass_fds=(read_end,))
    finally:
        os.close(read_end)
        os.close(write_end)
    assert _one_line_error(r, code=65) == (f"error: /dev/fd/{read_end}: file: not a regular file but a pipe (FIFO); curate "
                                  "reads a pool from regular files only: write it to a file first (e.g. zcat "
                                  "pool.jsonl.gz > pool.jsonl)")


def test_a_pipe_among_a_folders_or_a_globs_shards_is_refused_not_left_out(tmp_path):
    """A folder or a glob read its regular files and left a FIFO named like a shard out in silence."""
    folder = tmp_path / "pool"
    folder.mkdir()
    _pool_file(folder / "a.jsonl", "row", 3)
    os.mkfifo(folder / "b.jsonl")
    for source in (folder, folder / "*.jsonl"):
        with pytest.raises(InputError, match=rf"^{re.escape(str(folder / 'b.jsonl'))}: file: not a regular file but "
                           r"a pipe \(FIFO\)"):
            shard_paths(str(source))


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs sysfs, where even root creates no file")
@pytest.mark.parametrize("name", ["e.jsonl", "e.parquet", "report.html"])
def test_an_export_or_report_into_a_folder_it_cannot_write_names_the_out_path_first(small_ws, name):  # noqa: F811
    """It named the temporary file beside it (/ro/.e.jsonl.<uuid>.tmp: Read-only file system), never --out. sysfs
    refuses to create a file (as a read-only disk does, root included): nothing is written there."""
    out = Path("/sys") / name
    line = _one_line_error(curate_cli("report" if name.endswith(".html") else "export", small_ws.path, "--out", out))
    assert line.startswith(f"error: {out}: ") and f"/sys/.{name}." in line, line
    assert not out.exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_export_to_standard_output_on_a_full_disk_says_standard_output(small_ws):  # noqa: F811
    """It said "[Errno 28] No space left on device" of nothing. stdout is /dev/full opened for writing, without
    O_CREAT or O_TRUNC: the device is written to, never replaced."""
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        r = subprocess.run(_cli_command("export", small_ws.path, "--out", "-"), stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=CLI_TIMEOUT_S)
    finally:
        os.close(full)
    assert r.returncode == 1 and r.stderr.strip() == "error: standard output: No space left on device", r.stderr


def _read_only(folder: Path, *command) -> list[str]:
    """``command`` run with ``folder`` mounted read-only over itself, in a mount namespace of its own (gone with the
    process: nothing changes outside it), as on a read-only disk where root cannot write either."""
    return ["unshare", "-rm", "sh", "-c", 'mount --bind -o ro "$1" "$1" && shift && exec "$@"', "sh", str(folder),
            *map(str, command)]


def _can_mount_read_only(tmp_path: Path) -> bool:
    try:
        r = subprocess.run(_read_only(tmp_path, "touch", tmp_path / "x"), capture_output=True, text=True, timeout=60)
    except FileNotFoundError:  # no unshare
        return False
    return r.returncode != 0 and "Read-only file system" in r.stderr


def test_score_on_a_read_only_workspace_whose_rows_are_all_scored_reports_them(tmp_path, small_ws):  # noqa: F811
    """It failed on the column lock (locks/column-complexity.lock: Read-only file system), with nothing to write."""
    if not _can_mount_read_only(tmp_path):
        pytest.skip("needs unshare and a read-only bind mount in a namespace of its own")
    untouched = Workspace(tmp_path / "unscored")
    untouched.load(_pool_file(tmp_path / "other.jsonl", "row", 2))
    line = _one_line_error(subprocess.run(_read_only(untouched.path, *_cli_command("score", untouched.path, "--scorer",
                                          "default")), capture_output=True, text=True, timeout=CLI_TIMEOUT_S))
    assert line.startswith(f"error: {untouched.path / 'locks'}") and line.endswith(": Read-only file system"), line
    assert curate_said("score", small_ws.path, "--scorer", "default").returncode == 0  # the setup: in this process
    r = subprocess.run(_read_only(small_ws.path, *_cli_command("score", small_ws.path, "--scorer", "default")),
                       capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "complexity: 5 rows — computed 0, reused 5, failed 0" in r.stdout, r.stdout


# Four shards of one size tier on a disk with room for them and little more: their merge runs out of space.
_MERGE_ON_A_FULL_DISK = """
import sys
import numpy as np
from curate.cli import _os_error_line
from curate.storage.vector_shards import MERGE_FANIN, VectorStore

store = VectorStore(sys.argv[1] + "/store")
with store.lock():
    for s in range(MERGE_FANIN):
        store.add(np.array([b"%032d" % (s * 100 + i) for i in range(100)], dtype="S32"), np.ones((100, 128), "f4"))
    try:
        store.compact()
    except OSError as exc:
        print(_os_error_line(exc))
    print(len(store.shards()), "shards", len(store), "rows")
"""


def test_a_vector_store_merge_on_a_full_disk_is_an_error_naming_the_store_not_a_sigbus(tmp_path):
    """The merge writes into a memory-mapped file; left sparse, the first page the full disk could not hold killed
    the process with SIGBUS (exit 135, no word). A 300 KiB tmpfs of its own namespace is the full disk."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=300k tmpfs "$1" && shift && exec "$@"', "sh", disk]
    try:
        probe = subprocess.run([*mount, "true"], capture_output=True, timeout=60)
    except FileNotFoundError:
        probe = None
    if probe is None or probe.returncode:
        pytest.skip("needs unshare and a tmpfs mount in a namespace of its own")
    r = subprocess.run([*mount, sys.executable, "-c", _MERGE_ON_A_FULL_DISK, disk], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    assert r.stdout.splitlines() == [f"{disk}/store: No space left on device", "4 shards 400 rows"], r.stdout


def _read_a_little_then_close(command: list, unbuffered: str) -> subprocess.CompletedProcess:
    """``command`` with stdout a pipe of one page (4 KiB) whose reader takes 100 bytes and leaves, as ``| head -c
    100`` does; the output is bigger than the pipe holds, so the reader is gone before it is all written."""
    import fcntl

    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": unbuffered}
    try:
        proc = subprocess.Popen(command, stdout=write_end, stderr=subprocess.PIPE, text=True, env=env)
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        assert len(reader.read(100)) == 100
    _, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)
    return subprocess.CompletedProcess(command, proc.returncode, "", stderr)


@pytest.mark.parametrize("unbuffered", ["1", ""])  # sys.stdout.buffer is the raw FileIO under PYTHONUNBUFFERED
@pytest.mark.parametrize("what", ["export -", "export /dev/stdout", "report /dev/stdout"])
def test_output_into_a_pipe_whose_reader_leaves_exits_141_in_silence(tmp_path, what, unbuffered):
    """`curate export ws --out - | head` exited 1 (typer's answer to EPIPE) and, unbuffered, 0 saying "wrote 20
    rows" of rows the pipe never took (a raw write takes part and says so by its count alone). It now ends as a Unix
    tool killed by SIGPIPE does: exit 128 + 13, nothing on stderr, no "wrote" line."""
    ws = Workspace(tmp_path / "ws")
    ws.load(_pool_file(tmp_path / "pool.jsonl", "a long row for a pipe, " * 40, 20))  # about 20 KiB of JSON Lines
    command, out = what.split()
    r = _read_a_little_then_close(_cli_command(command, ws.path, "--out", out), unbuffered)
    assert (r.returncode, r.stderr) == (141, ""), (r.returncode, r.stderr[-3000:])


def test_a_table_printed_into_a_pipe_whose_reader_leaves_exits_141_in_silence(tmp_path):
    """What curate prints through rich (`curate info`) met rich's own answer to a broken pipe: exit 1, which a shell
    with ``set -o pipefail`` takes for a failure, where the raw writes of ``--out -`` exit 141."""
    ws = Workspace(tmp_path / "ws")
    fields = {f"a_field_with_a_long_name_{i:03d}": i for i in range(300)}  # info lists them: about 9 KiB
    ws.load(write_jsonl(tmp_path / "pool.jsonl", [{"instruction": "row", "output": "ok", **fields}]))
    r = _read_a_little_then_close(_cli_command("info", ws.path), "")
    assert (r.returncode, r.stderr) == (141, ""), (r.returncode, r.stderr[-3000:])


def test_help_into_a_pipe_whose_reader_leaves_exits_141_in_silence():
    """typer prints ``--help`` through a rich Console of its own, whose broken pipe exited 1 (`curate run --help |
    head` read as a failure under ``set -o pipefail``); the help is about 13 KiB, more than the pipe holds."""
    r = _read_a_little_then_close(_cli_command("run", "--help"), "")
    assert (r.returncode, r.stderr) == (141, ""), (r.returncode, r.stderr[-3000:])


def test_version_is_printed():
    r = subprocess.run(_cli_command("--version"), capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (r.returncode, r.stdout, r.stderr) == (0, f"curate {curate.__version__}\n", ""), r


# Each of the training writes that np.savez / torch.save make, in a child whose files cannot pass 64 KiB (as on a
# disk that fills); it prints the CLI's line for the error and what the folder holds after it.
_SAVES_CUT_SHORT = """
import random, resource, signal, sys
from pathlib import Path
import numpy as np
import torch
from curate.cli import _os_error_line
from curate.scorers.checkpoint import TrainingCheckpoint
from curate.train.gradfeatures import FeatureStore
from curate.train.records import RECORD_KEYS, save_records

which, folder = sys.argv[1], Path(sys.argv[2])
folder.mkdir()
n = 4000
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65_536, resource.RLIM_INFINITY))
try:
    if which == "records":
        save_records(folder, [f"row{i}" for i in range(n)], {k: np.ones(n) for k in RECORD_KEYS})
    elif which == "features":
        FeatureStore(folder).add([f"row{i}" for i in range(n)], np.ones((n, 64), np.float32))
    else:
        net = torch.nn.Linear(128, 128)
        opt = torch.optim.AdamW(net.parameters())
        parts = {"trainable": net.state_dict, "opt": opt, "sched": torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1),
                 "rng": random.Random(0), "best": {}, "history": []}
        TrainingCheckpoint(folder / "run.pt").save(1, parts)
except OSError as exc:
    print(_os_error_line(exc))
else:
    print("written")
print(sorted(p.name for p in folder.iterdir()))
"""


@pytest.mark.parametrize("which, name", [("records", "records.npz"), ("features", "part-"), ("checkpoint", "run.pt")])
def test_a_training_save_cut_short_by_a_full_disk_names_its_file_and_leaves_none(tmp_path, which, name):
    """np.savez and torch.save wrote under the final name, or a temporary one left behind, and their errors named no
    file: numpy's "[Errno 27] File too large", torch's "[enforce fail at inline_container.cc:672] . unexpected pos"."""
    folder = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", _SAVES_CUT_SHORT, which, str(folder)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line, left = r.stdout.strip().splitlines()
    assert line.startswith(f"{folder}/{name}") and line.endswith(": File too large"), line
    assert left == "[]", left  # neither a part of the file under its name nor the temporary one


def test_an_os_error_in_a_librarys_own_error_is_read_from_its_text_never_made_up():
    """safetensors raises SafetensorError and tokenizers a bare Exception, no OSError: the CLI showed a traceback."""
    from curate.storage.write_errors import carried_os_error

    full = carried_os_error(Exception("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert (full.errno, full.strerror, full.filename) == (28, "No space left on device", None)
    denied = carried_os_error(Exception('Error while serializing: I/O error: Permission denied (os error 13) at path '
                                        '"/sys/.tmpbHOkk3"'))
    assert (denied.errno, denied.strerror, denied.filename) == (13, "Permission denied", "/sys/.tmpbHOkk3")
    assert carried_os_error(Exception("File too large (os error 27)")).errno == 27  # tokenizers' save
    assert carried_os_error(Exception("Error while serializing: invalid header")) is None  # no OS reason: none made up
    # a missing input met in a save's body (a tokenizer file read): no write's error, not pinned on what is written
    assert carried_os_error(Exception("No such file or directory (os error 2)")) is None
    assert carried_os_error(KeyboardInterrupt()) is None


# A scorer saved, then another saved over it under a file size limit below its weights' size (a full disk):
# safetensors' SafetensorError ("Error while serializing: I/O error: File too large (os error 27)") is no OSError
_SCORER_SAVE_CUT_SHORT = """
import resource, signal, sys
from pathlib import Path
from curate.cli import _os_error_line
from curate.scorers import Scorer
from tests.test_scorers import synthetic

folder = Path(sys.argv[1])
texts, scores = synthetic()
Scorer(reads=["instruction"], features=["length"], embed_inputs=[]).fit(texts, scores).save(folder)
bigger = Scorer(reads=["instruction"], features=["length", "stats"], embed_inputs=[]).fit(texts, scores)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (512, resource.RLIM_INFINITY))  # its weights file is bigger
try:
    bigger.save(folder)
except OSError as exc:
    print(_os_error_line(exc))
else:
    print("written")
print(sorted(p.name for p in folder.parent.iterdir()))
print(Scorer.load(folder).features)
"""


def test_a_scorer_save_cut_short_by_a_full_disk_names_its_folder_and_keeps_the_earlier_scorer(tmp_path):
    """It was a traceback ending in SafetensorError, naming no file."""
    folder = tmp_path / "sc"
    r = subprocess.run([sys.executable, "-c", _SCORER_SAVE_CUT_SHORT, str(folder)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line, left, features = r.stdout.strip().splitlines()
    assert line == f"{folder}: File too large", line
    assert left == "['sc']", left  # no temporary folder, no lock beside it
    assert features == "['length']", features  # the earlier scorer, whole


# A fine-tune whose first epoch's checkpoint (transformers' save_pretrained, safetensors) meets a full disk
_EPOCH_SAVE_CUT_SHORT = """
import resource, signal, sys
from pathlib import Path
from curate.cli import _os_error_line
from curate.train.harness import TrainConfig, finetune
from tests.train_fixtures import learnable_rows, row_inputs

model, out = sys.argv[1], Path(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65_536, resource.RLIM_INFINITY))
try:
    finetune(model, row_inputs(learnable_rows(4)), out, TrainConfig(epochs=1, batch_size=4), device="cpu")
except OSError as exc:
    print(_os_error_line(exc))
else:
    print("written")
print(sorted(p.name for p in out.iterdir() if "epoch" in p.name))
"""


def test_a_fine_tune_checkpoint_cut_short_by_a_full_disk_names_the_epoch_and_leaves_none(tmp_path, tiny_lm):  # noqa: F811
    """model.save_pretrained raised safetensors' SafetensorError: a traceback, no file named."""
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", _EPOCH_SAVE_CUT_SHORT, str(tiny_lm), str(out)], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line, left = r.stdout.strip().splitlines()
    assert line == f"{out / 'epoch-1'}: File too large", line
    assert left == "[]", left  # neither the epoch nor its temporary folder


def test_a_scorer_out_on_a_read_only_disk_is_refused_before_the_fit_naming_out(tmp_path):
    """It trained fully, then failed on the lock beside --out (ro/.sc.save.lock: Read-only file system)."""
    from tests.conftest import write_jsonl

    if not _can_mount_read_only(tmp_path):
        pytest.skip("needs unshare and a read-only bind mount in a namespace of its own")
    rows = [{"instruction": f"Task {i % 10}", "output": "word " * (i + 1), "s": float(i % 5 + 1)} for i in range(40)]
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", rows))
    read_only = tmp_path / "ro"
    read_only.mkdir()
    for out in (read_only / "sc", read_only / "team" / "sc"):  # the folder, or a folder the save would create
        r = subprocess.run(_read_only(read_only, *_cli_command("train-scorer", ws.path, "--target", "s", "--out", out,
                                                               "--embed-inputs", "none")),
                           capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        line = _one_line_error(r)
        assert line.startswith(f"error: {out}: Read-only file system (writing its temporary {read_only}/."), line
        assert r.stdout == "", r.stdout  # no fold figures: nothing was fitted
    assert list(read_only.iterdir()) == []


_FINE_TUNE_TO = """
import sys
from curate.cli import _os_error_line
from curate.session import Workspace

ws = Workspace.open(sys.argv[1])
try:
    ws.fine_tune("seed", sys.argv[3], model=sys.argv[2], device="cpu", progress=False, epochs=1, batch_size=4)
except OSError as exc:
    print(_os_error_line(exc))
print((ws.cache_dir / "train").exists())
"""


def test_a_fine_tune_into_a_read_only_folder_is_refused_before_it_trains(tmp_path, small_ws, tiny_lm):  # noqa: F811
    """It trained, then failed exporting on the lock beside --out (ro/.model.export.lock: Read-only file system)."""
    if not _can_mount_read_only(tmp_path):
        pytest.skip("needs unshare and a read-only bind mount in a namespace of its own")
    small_ws.select(method="random", name="seed", budget=4)
    read_only, out = tmp_path / "ro", tmp_path / "ro" / "model"
    read_only.mkdir()
    r = subprocess.run(_read_only(read_only, sys.executable, "-c", _FINE_TUNE_TO, small_ws.path, tiny_lm, out),
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line, trained = r.stdout.strip().splitlines()
    assert line.startswith(f"{out}: Read-only file system (writing its temporary {read_only}/.model."), line
    assert trained == "False", trained  # no run was trained


FIRST_TORCH_IMPORT_STOPPED = """
import json, os, signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a kernel has it (a test's child may inherit it ignored)
from curate.embed.encoder import encode

threading.Thread(target=lambda: (time.sleep(0.2), os.kill(os.getpid(), signal.SIGINT)), daemon=True).start()
try:
    encode(["a first text"])   # its first call imports torch (through sentence-transformers): ~1 s or more
    print(json.dumps({"interrupted": False}))
except KeyboardInterrupt:
    whole = "torch" in sys.modules
    again = encode(["a first text"])  # the re-run of the cell, without a kernel restart
    print(json.dumps({"interrupted": True, "torch_whole_at_interrupt": whole, "again": list(again.shape)}))
"""


def test_a_ctrl_c_during_torch_first_import_leaves_torch_whole():
    """The notebook's stop button in the middle of torch's first import (the first embedding, the selection's bf16
    probe) broke torch for the process: every later `import torch` failed ("Trying to override a python impl for
    DispatchKey.Meta", "bad call flags") until a kernel restart. The interrupt is held until the import ends."""
    proc = subprocess.run([sys.executable, "-c", FIRST_TORCH_IMPORT_STOPPED], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(Path(curate.__file__).parents[1])})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"interrupted": True, "torch_whole_at_interrupt": True, "again": [1, 384]}, got
