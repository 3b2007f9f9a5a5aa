"""Reading the server's batches for the openai-batch backend (``curate.llm.batch``): the waits between polls, a finished
batch's output and error files, what becomes of the requests no line answers, and a batch created for a submission
whose id was never recorded.

A file the server no longer has (HTTP 404: deleted, or expired at the provider) is named with its batch, and the
requests whose answers it held are resubmitted as a lost batch's are, not reported as an error of the model or
endpoint (the words meant for a 404 on a request).
"""

from __future__ import annotations

import json
import math
from typing import Any

from curate.codes import FailureCode
from curate.errors import OptionError, python_and_cli
from curate.llm.base import failure_result


def check_polls(poll_s: float, poll_max_s: float) -> None:
    """Refuse a wait between polls that is not a finite number of seconds > 0: 0, a negative or nan polled in a busy
    loop, inf never polled again."""
    wrong = [f"{name} must be a finite number of seconds > 0 (got {value!r})" for name, value in
             ((python_and_cli("poll_s=", "--poll-interval"), poll_s), ("poll_max_s=", poll_max_s))
             if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
                     and value > 0)]
    if wrong:
        raise OptionError("; ".join(wrong))


async def read_files(client: Any, batch: Any) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(the lines of ``batch``'s output and error files, {file id: which file} for those the server answers 404)."""
    import openai

    lines: list[dict[str, Any]] = []
    lost: dict[str, str] = {}
    for name, file_id in (("output", batch.output_file_id), ("error", batch.error_file_id)):
        if not file_id:
            continue
        try:
            content = await client.files.content(file_id)
        except openai.NotFoundError:
            lost[file_id] = name
            continue
        lines += [json.loads(raw) for raw in content.text.splitlines() if raw.strip()]
    return lines, lost


async def find_batch(client: Any, sid: str, input_file_id: str | None) -> Any:
    """A batch already created for submission ``sid`` (killed before its id was recorded), if any: every page of the
    server's list is read (the client's auto-pagination, ``after=`` the last id), newest first."""
    async for batch in client.batches.list(limit=100):
        meta = batch.metadata or {}
        if meta.get("curate_submission") == sid or (input_file_id and batch.input_file_id == input_file_id):
            return batch
    return None


def lost_files_reason(batch: Any, lost: dict[str, str]) -> str:
    """Why a batch's unanswered requests have no answer: which of its files the server no longer knows."""
    files = " and ".join(f"{name} file {fid}" for fid, name in lost.items())
    return (f"the {files} of batch {batch.id} is unknown to the server (HTTP 404): the answers it held are lost"
            if len(lost) == 1 else f"the {files} of batch {batch.id} are unknown to the server (HTTP 404): the "
            "answers they held are lost")


def unanswered(batch: Any, keys: set[str], lost: dict[str, str]
               ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(failures to report now, failures to resubmit) for the requests of ``batch`` no line answered: a failed batch
    is not worth resending, a cancelled one was stopped on purpose; an expired one's requests and those whose
    answers sat in a lost file go again (each with the failure to report if they cannot)."""
    note = f"; {lost_files_reason(batch, lost)}" if lost else ""
    if batch.status == "failed":  # the batch as a whole was refused (e.g. validation): not worth resending
        errors = "; ".join(e.message or "" for e in ((batch.errors.data if batch.errors else None) or []))[:300]
        return {k: failure_result(f"batch {batch.id} failed: {errors or 'no reason given'}{note}",
                                  FailureCode.HTTP_ERROR) for k in keys}, {}
    if batch.status == "cancelled":  # someone cancelled it: report, do not resend
        return {k: failure_result(f"batch {batch.id} was cancelled before this request ran{note}",
                                  FailureCode.TRANSIENT) for k in keys}, {}
    why = lost_files_reason(batch, lost) if lost else f"batch {batch.id} {batch.status} before this request ran"
    return {}, {k: failure_result(why, FailureCode.TRANSIENT) for k in keys}
