"""One run of the openai-batch backend (``curate.llm.batch``) over a call's requests: resume this workspace's open
submissions, record, upload and create new batches within the per-batch limits and ``max_cost``, poll until all
settle, collect their output and error files (a finished batch by one run at a time), resubmit what failed
transiently or was lost by the server, and report every request to the runner."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

from curate.codes import FailureCode
from curate.llm.base import OnDone, Request, failure_result, format_usd
from curate.llm.batch_claims import ClaimBeat, _CallClaims
from curate.llm.batch_collect import find_batch, lost_files_reason, read_files, unanswered
from curate.llm.batch_jsonl import ENDPOINT, batch_line, read_output_line, split_batches
from curate.llm.batch_notices import status_notice, waiting_notice
from curate.llm.batch_state import SETTLED, new_owner, normal_url, running_calls

FINAL = ("completed", "expired", "failed", "cancelled")


class _Call(_CallClaims):
    """One ``run`` of ``backend`` (an ``OpenAIBatchBackend``, held as ``b``): resume this workspace's open
    submissions, submit the rest, poll until all settle."""

    def __init__(self, backend: Any, client: Any, by_key: dict[str, Request], on_done: OnDone):
        self.b, self.client, self.by_key, self.on_done = backend, client, by_key, on_done
        self.delivered: set[str] = set()
        self.reserved: dict[str, float] = {}
        self.open: dict[str, dict[str, Any]] = {}  # sid -> entry, not yet final
        self.me = new_owner()  # recorded on this call's submissions: others leave them alone while it runs
        self.beats = ClaimBeat(backend.state, self.me)  # its claims' heartbeat, while ``go`` runs
        self.waiting: set[str] = set()  # submissions a live other run is turning into a batch
        self.waiting_collect: set[str] = set()  # finished batches a live other run is collecting

    def deliver(self, key: str, result: dict[str, Any], cached: bool = False) -> None:
        """Report ``key``'s result to the call (once); ``cached``: another run paid for it and counts it (a cache hit
        here: neither this backend's spending nor the call's)."""
        b = self.b
        if "failure" not in result and not cached:
            usage = result.get("usage") or {}
            b.spent_usd += result.get("cost_usd") or 0.0
            b.prompt_tokens += usage.get("prompt_tokens", 0)
            b.completion_tokens += usage.get("completion_tokens", 0)
        self.reserved.pop(key, None)
        if key in self.by_key:
            if key not in self.delivered:
                self.delivered.add(key)
                self.on_done(self.by_key[key], result, **({"cached": True} if cached else {}))  # 2-argument callbacks
        elif "failure" not in result:
            b.cache.put(key, result)  # an answer from an earlier call's batch: keep it, it was paid for

    async def go(self) -> None:
        running_calls().add(self.me["call"])
        try:  # runs of other machines wait while its claims beat (a thread: beating while this loop delivers)
            with self.beats:
                await self.go_on()
        finally:
            running_calls().discard(self.me["call"])
            self.alert(self.beats.news(), during=sys.exc_info()[1])

    async def go_on(self) -> None:
        covered: set[str] = set()  # the keys of this backend's open submissions (keys_in_open_batches), read once
        for sid, entry in self.b.state.submissions().items():
            if self.b._mine(entry) and entry.get("status") not in SETTLED:
                if self.b.state.taken_up(sid, entry, keys := self.b.state.keys(sid), self.by_key, self.me):
                    self.open[sid] = entry
                    covered.update(keys)
        if self.open:
            self.b._say(f"resuming {len(self.open)} batch(es) submitted earlier; nothing of them is sent again")
        self.reserved.update({key: self.b._worst(self.by_key[key]) for key in covered & set(self.by_key)})
        fresh = [r for k, r in self.by_key.items() if k not in covered]
        await self.submit(self.within_budget(fresh), attempt=0)
        for sid in list(self.open):
            if not self.open[sid].get("batch_id"):
                await self.create(sid)
        await self.poll()
        for key, req in self.by_key.items():  # e.g. a submission's batch vanished at the provider
            if key not in self.delivered:
                self.delivered.add(key)
                self.on_done(req, failure_result("no answer came back from the batch", FailureCode.TRANSIENT))

    def within_budget(self, requests: list[Request]) -> list[Request]:
        b = self.b
        if b.max_cost is None:
            return requests
        keep = []
        for req in requests:
            worst = b._worst(req)
            if b.spent_usd + sum(self.reserved.values()) + worst <= b.max_cost:
                self.reserved[req.key] = worst
                keep.append(req)
            else:
                self.deliver(req.key, failure_result(
                    f"not sent: max_cost {format_usd(b.max_cost)} reached (spent {format_usd(b.spent_usd)}, "
                    f"{format_usd(sum(self.reserved.values()))} reserved by batched requests; this one may cost up "
                    f"to {format_usd(worst)})", FailureCode.BUDGET))
        return keep

    async def submit(self, requests: list[Request], attempt: int, parent: str | None = None) -> None:
        """Record, upload and create one batch per group of ``requests`` within the per-batch limits."""
        lines = [batch_line(r, self.b.model) for r in requests]
        for group in split_batches(lines, self.b.max_requests, self.b.max_bytes):
            sid = uuid.uuid4().hex[:16]
            keys = [requests[i].key for i in group]
            self.open[sid] = self.b.state.record(sid, keys, status="uploading", model=self.b.model,
                                                 base_url=normal_url(self.b.base_url), owner=self.me, attempt=attempt, parent=parent,
                                                 requests=len(keys), created=time.time())
            data = b"".join(lines[i] for i in group)
            upload = await self.client.files.create(file=(f"curate-{sid}.jsonl", data), purpose="batch")
            await self.create(sid, uploaded=upload.id)

    async def create(self, sid: str, uploaded: str | None = None) -> None:
        """Create the batch of a recorded submission, unless one was already created for it (then adopt it) or a live
        other run owns it (then wait for that run to record its batch: it creates it). ``uploaded``: the file this call
        has just uploaded for its new submission (no batch of it can exist yet)."""
        if uploaded is None:
            entry, mine = self.b.state.claim(sid, self.me)
            self.open[sid] = entry
            self.notice_takeover(entry, mine)
            if not mine:
                return self.wait_for_owner(sid, entry)
        entry = self.open[sid]
        found = None if uploaded or (entry.get("status") == "uploading" and not entry.get("input_file_id")) else (
            await find_batch(self.client, sid, entry.get("input_file_id")))
        if found is None:
            fields = {"status": "creating", "input_file_id": uploaded} if uploaded else {}
            if not entry.get("input_file_id") and not uploaded:  # killed before its upload finished: upload again
                data = b"".join(batch_line(self.by_key[k], self.b.model) for k in self.b.state.keys(sid)
                                if k in self.by_key)
                fields["input_file_id"] = (await self.client.files.create(file=(f"curate-{sid}.jsonl", data),
                                                                          purpose="batch")).id
            if (entry := self.confirmed(sid, "owner", **fields)) is None:  # taken over (stalled): that run creates it
                return  # ``fields`` recorded only while the claim is this call's: the taker's record stays as it is
            found = await self.client.batches.create(input_file_id=entry["input_file_id"], endpoint=ENDPOINT,
                                                     completion_window=self.b.completion_window,
                                                     metadata={"curate_submission": sid})
            self.b.submitted_batches += 1
            self.b.requests_sent += entry.get("requests", 0)
            self.b._say(f"submitted batch {found.id} ({entry.get('requests', 0):,} requests)")
        self.open[sid] = self.b.state.record(sid, status=found.status, batch_id=found.id)

    async def poll(self) -> None:
        import openai

        delay, first = self.b.poll_s, True
        self.b._say(waiting_notice(self.open.values(), self.b))  # once: answers may take hours, said nowhere else
        while self.open:
            if not first:
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, self.b.poll_max_s)
            first = False
            self.alert(self.beats.news())
            for sid in list(self.open):
                if not self.open[sid].get("batch_id"):  # another run's: has it created it, or is it gone?
                    await self.create(sid)
                    if self.open[sid].get("status") in SETTLED and not self.open[sid].get("batch_id"):
                        self.open.pop(sid)  # one settled with its batch (collected meanwhile) is collected below
                    if not self.open.get(sid, {}).get("batch_id"):
                        continue
                try:
                    batch = await self.client.batches.retrieve(self.open[sid]["batch_id"])
                except openai.NotFoundError:  # the server forgot it: not an error of the model or endpoint
                    if await self.lost(sid):
                        delay = self.b.poll_s
                    continue
                if batch.status != self.open[sid].get("status") and self.open[sid].get("status") not in SETTLED:
                    self.open[sid] = self.b.state.record(sid, status=batch.status)
                    self.b._say(status_notice(batch))
                if batch.status in FINAL:
                    if await self.collect(sid, batch):
                        delay = self.b.poll_s  # a resubmitted share: poll it from the start again

    async def lost(self, sid: str) -> bool:
        """The server no longer knows this submission's batch (404): submit its requests again in a new batch (none was
        answered), then mark it lost, with the reason. One run at a time does (as a collect); another waits, then polls
        the batches it made. True if this call has new batches to poll."""
        bid = self.open[sid]["batch_id"]
        entry = self.b.state.claim_collect(sid, self.me)
        self.notice_takeover(entry, entry is not None)
        if entry is None:
            if sid not in self.waiting_collect:
                self.waiting_collect.add(sid)
                self.b._say(f"batch {bid} is unknown to the server (HTTP 404); another run still going resubmits it: "
                            "waiting for it")
            return False
        self.open.pop(sid)
        attempt = entry.get("attempt", 0)
        keys = {k for k in self.b.state.keys(sid) if k in self.by_key and k not in self.delivered}
        if entry.get("status") == "collected":  # another run collected it first: its answers are in the cache
            hits = self.b.state.paid_elsewhere(sid, self.me, keys, self.b.cache)
            for key, result in self.b.cache.get_many(sorted(keys)).items():
                self.deliver(key, result, cached=key in hits)
        spent = failure_result(f"batch {bid} was lost by the server (HTTP 404), {attempt} resubmission(s) spent",
                               FailureCode.TRANSIENT)
        retry = self.adopt_children(sid, {k: spent for k in keys if k not in self.delivered})
        resend = attempt < self.b.resubmits
        if entry.get("status") not in SETTLED and not self.confirmed(sid, "collector"):
            return False  # stalled past the expiry, taken over: that run resubmits it, this call polls what it made
        if entry.get("status") not in SETTLED:
            self.b._say(f"batch {bid} is unknown to the server (HTTP 404): marked lost; " + (
                f"submitting its {len(retry):,} request(s) again in a new batch" if retry and resend else
                "resubmissions spent" if retry else "none of its requests is left to send again here"))
        if resend and retry:
            await self.submit([self.by_key[k] for k in retry], attempt=attempt + 1, parent=sid)
        else:
            for key, failure in retry.items():
                self.deliver(key, failure)
        if entry.get("status") not in SETTLED:  # after its resubmissions are recorded, if still its claim
            self.confirmed(sid, "collector", status="lost", reason=f"the server answers HTTP 404 for batch {bid}: it no "
                           "longer knows it, so none of its requests was answered")
        return len(keys) > len(retry) or (resend and bool(retry))

    async def collect(self, sid: str, batch: Any) -> bool:
        """Deliver a finished batch's answers; resubmit its transient/expired share (and the requests whose answers
        sat in a file the server lost) alone, unless an earlier collect did. True if resubmitted. While a live other
        run collects it, this call waits (the batch stays open here) and collects after it."""
        claimed = self.b.state.claim_collect(sid, self.me, delivering=time.time())
        self.notice_takeover(claimed, claimed is not None)
        if claimed is None:
            if sid not in self.waiting_collect:
                self.waiting_collect.add(sid)
                self.b._say(f"batch {batch.id} is being collected by another run still going: waiting for it")
            return False
        self.open.pop(sid)
        keys = set(self.b.state.keys(sid))
        seen: set[str] = set()
        retry: dict[str, dict[str, Any]] = {}  # key -> the failure to report if it cannot be resubmitted
        lines, lost = await read_files(self.client, batch)
        if claimed.get("status") not in SETTLED and not self.confirmed(sid, "collector"):
            return False  # stalled past the expiry, taken over: that run delivers it, this call collects after it
        paid = set(self.b.cache.get_many([k for k in keys if k not in self.by_key])) if claimed.get("delivering") else (
            set())  # those an earlier collect delivered, as its claim read: their cost and tokens count once
        hits = self.b.state.paid_elsewhere(sid, self.me, keys & set(self.by_key), self.b.cache)  # those an earlier collect's call counts
        for line in lines:
            key = line.get("custom_id")
            if key not in keys or key in seen:
                continue
            seen.add(key)
            outcome, result = read_output_line(line, self.b.price, self.by_key.get(key))
            if outcome == "retry":
                retry[key] = result
            elif key not in paid and key not in self.delivered:  # by its own collect taken over: counted then
                self.deliver(key, result, cached=key in hits)
        report, resend = unanswered(batch, keys - seen, lost)
        for key, failure in report.items():
            self.deliver(key, failure)
        wanted = {k: v for k, v in {**retry, **resend}.items() if k in self.by_key and k not in self.delivered}
        retry = self.adopt_children(sid, wanted)
        attempt = claimed.get("attempt", 0)
        resubmit = bool(retry) and attempt < self.b.resubmits
        if resubmit:
            why = lost_files_reason(batch, lost) if lost else f"batch {batch.id} {batch.status}"
            if claimed.get("status") not in SETTLED and not self.confirmed(sid, "collector"):
                return False
            self.b._say(f"{why}: resubmitting {len(retry):,} request(s) alone")
            await self.submit([self.by_key[k] for k in retry], attempt=attempt + 1, parent=sid)
        else:
            for key, failure in retry.items():
                self.deliver(key, failure)
        if claimed.get("status") not in SETTLED:  # a second collect leaves the first one's record as it is
            lost_fields = {"lost_files": list(lost), "reason": lost_files_reason(batch, lost)} if lost else {}
            self.confirmed(sid, "collector", status="collected", final_status=batch.status, **lost_fields,
                           resubmitted=len(wanted) - len(retry) + (len(retry) if resubmit else 0))  # after its resubmissions, if still its claim
        return resubmit or len(wanted) > len(retry)

    def adopt_children(self, sid: str, retry: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The share of ``retry`` no earlier collect (or lost batch's handling) of ``sid`` resubmitted (another run's, or
        one killed before it settled ``sid``); the batches that hold the rest, down a chain of lost ones, are polled by
        this call, not made again."""
        adopt, left = self.b.state.covering(sid, set(retry))
        for child, entry in adopt.items():
            self.open.setdefault(child, entry)
        return {k: v for k, v in retry.items() if k in left}
