"""The last `curate run` of a workspace, as ``ws.info()`` and `curate info` show it: ``OUT/run.json`` beside the run's
workspace (``OUT/workspace``) read as its state in words: running, finished, failed (with its error), interrupted,
or killed (a ``running`` record whose process, on this host, is gone), with its command and times."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from curate.storage.processes import alive

RUN_RECORD = "run.json"  # in a run's out folder, beside its workspace (``OUT/workspace``)
RUN_WORKSPACE = "workspace"


def killed_run(record: dict[str, Any]) -> str | None:
    """``killed (its process N is gone)`` for a ``running`` record whose process, on this host, is gone (killed -9,
    the machine restarted): the record says running forever; None for any other record."""
    pid = record.get("pid")
    if record.get("status") != "running" or not isinstance(pid, int) or record.get("hostname") != socket.gethostname():
        return None
    return None if alive(pid) else f"killed (its process {pid} is gone)"


def last_run(workspace: Path) -> dict[str, Any] | None:
    """The last run whose workspace is ``workspace`` (a run's ``OUT/workspace``; None for any other, or no record
    yet): ``status`` (``running``, ``ok``, ``failed``, ``interrupted``, ``killed``, ``unreadable``), ``state`` (it in
    words, the error's too), ``command``, ``started_at``, ``finished_at``, ``exit_code``, ``steps_finished``,
    ``record`` (the file)."""
    path = workspace.parent / RUN_RECORD
    if workspace.name != RUN_WORKSPACE or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
        if "record_version" not in record or "status" not in record:  # a training run's run.json, say: no status
            raise ValueError("not a curate run's record (no record_version or status)")
    except (OSError, ValueError) as exc:  # UnicodeDecodeError too
        return {"status": "unreadable", "state": f"unreadable ({exc}); the next curate run --out {workspace.parent} "
                f"writes it anew", "record": str(path)}
    status = str(record.get("status"))
    killed = killed_run(record)
    error = record.get("error") if isinstance(record.get("error"), dict) else None
    because = f": {error.get('type')}: {error.get('message')}" if error else ""
    state = (killed if killed else
             f"running (pid {record.get('pid')} on {record.get('hostname')})" if status == "running" else
             "finished" if status == "ok" else f"{status} (exit {record.get('exit_code')}){because}")
    return {"status": "killed" if killed else status, "state": state, "command": record.get("command"),
            "started_at": record.get("started_at"), "finished_at": record.get("finished_at"),
            "exit_code": record.get("exit_code"), "steps_finished": record.get("steps_finished"), "record": str(path)}


def last_run_line(run: dict[str, Any]) -> str:
    """One line for people: ``last run: failed (exit 75): RetryLaterError: ...; started 2026-12-07T..., finished ...;
    steps finished: load, dedup; command: curate run pool.jsonl --out OUT (OUT/run.json)``."""
    if run["status"] == "unreadable":
        return f"last run: {run['record']}: {run['state']}"
    times = f"; started {run.get('started_at')}" + (f", finished {run['finished_at']}" if run.get("finished_at") else "")
    steps = f"; steps finished: {', '.join(run['steps_finished']) or 'none'}" if run.get("steps_finished") is not None \
        else ""
    command = f"; command: {run['command']}" if run.get("command") else ""
    return f"last run: {run['state']}{times}{steps}{command} ({run['record']})"
