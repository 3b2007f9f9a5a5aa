"""A small OpenAI-compatible chat server on loopback that injects faults and counts requests.

Used by the judge-engine tests and ``evals/bench_judge_client.py``. It runs aiohttp in a
background thread. Each request is identified by the content of its last user message; faults are
chosen by markers inside that text, so a test decides per row what goes wrong:

``[429x2]``      first 2 attempts answer 429 with ``Retry-After: <retry_after>``
``[500x1]``      first attempt answers 500
``[always500]``  every attempt answers 500
``[timeoutx1]``  first attempt sleeps ``hang_seconds`` (longer than the client's timeout)
``[sleep2:4]``   attempt 2 sleeps 4 s before it is answered (any attempt number and seconds; one marker each)
``[malformedx1]`` first attempt answers 200 with a body that is not JSON
``[nologprobs]`` answers without logprobs (text is a digit)
``[badtext]``    answers without logprobs and with text that holds no digit
``[say:TEXT]``   answers TEXT (up to the next ``]``) without logprobs, as a server that ignores ``max_tokens: 1``
``[lowmass]``    logprobs where digits 1-3 are absent and the rest carry little mass
``[sampledonly]`` / ``[emptytop]`` / ``[top1]``: a server that ignores ``top_logprobs``: the sampled digit ``4``
                 (p=0.7; 5: 0.2, 3: 0.1 under it) has its own logprob and no ``top_logprobs`` key / an empty list /
                 a list of that one token

``[always400]``  every attempt answers 400 (a permanent error)
``[toolong]``    answers 400 as vLLM does for a prompt longer than the model's context (``maximum context length``)
``[length]``     answers with ``finish_reason: length`` (the generation stopped at max_tokens)
``[cutjson]``    a JSON answer cut off in its middle, ``finish_reason: length`` (as a JSON reply stopped at max_tokens)
``[tags12]``     an InsTag answer of 12 tags (any count), past the schema's bound, as a server that does not enforce
                 ``maxItems`` (OpenAI's structured outputs, JSON mode) or InsTag's own tagger may answer
``[echo]``       a JSON answer that copies the request's last assistant message (a few-shot example's answer), as
                 a small model copies a prompt's example
``[refusal]``    answers as OpenAI does when the model refuses: no content, ``message.refusal`` set
``[filtered]``   answers half a reply with ``finish_reason: content_filter``
``[empty]``      answers an empty text
``[digitrewrite]`` an Evol rewrite request answered with one digit (as every one was answered before 2026-12-07);
                 without it a rewrite request (a text request whose last user message is an Evol rewrite prompt's:
                 ``Task: ...`` or ``Question: ... Answer: ...``, then one line asking for the rewrite) is answered
                 with its parent and one sentence more (``Include example number N.``); with ``[rewrites:N]``, only
                 while its parent has fewer than N such sentences, then with its parent unchanged
``[rank]``       in an Evol rank request (a ``scores`` schema): answers ``{"scores": [1, 2, ...]}``, one per
                 ``[Version`` shown (without it, or with ``[badrank]``, the label JSON below: no ranking)

While ``hold_chat`` is set, chat requests are counted on arrival and answered only once it is cleared (requests
kept at the server while a test starts another process).

``messages`` keeps every chat request's messages, in arrival order. With ``api_key`` a request carrying another
key is answered 401 (``invalid_api_key``), as OpenAI answers a wrong key.

Otherwise it answers a digit with a top-logprobs list over digits 1-6 (deterministic per text),
or, when ``response_format`` asks for JSON, ``{"label": ..., "confidence": ...}`` (for the InsTag schema: the
query's first two words as its tags). With
``slots``/``latency`` it models a server with C concurrent slots and fixed latency L. Usage is
reported with every answer: ``prompt_tokens`` is characters // 4 of the messages, or
``usage_prompt_tokens`` when given (a tokenizer that counts far fewer tokens than curate's estimate).

It is also a fake of the files and batches APIs (``/v1/files``, ``/v1/batches``): a created batch stays
``in_progress`` while ``hold_batches`` is set (else for ``batch_seconds``), then every line is answered as
the chat endpoint would answer it (first attempt). Markers for batch lines: ``[batchexpire]`` (the first
batch holding it ends ``expired``; this line goes to the error file as ``batch_expired``, the others of
that batch complete), ``[batch500]`` (first time: status 500 in the output), ``[batch400]`` (always 400).
``batches_created``, ``uploads``, ``polls`` and ``batch_counts`` (lines submitted per custom_id) count.
An upload is answered only once ``hold_uploads`` is clear, a file's content once ``hold_files`` is (a run stalled
in its upload, or reading a finished batch's files); ``held_uploads`` has an event for each upload held, in the order
they came: setting one answers that upload alone.
``forget_batches()`` drops every batch (a provider that lost them: retrieving one answers 404);
``forget_files(*ids)`` drops files (a finished batch's output or error file deleted at the provider: 404).
``GET /v1/batches`` pages as OpenAI's does: newest first, ``limit`` (default 20, at most 100), ``after`` (a batch
id: the page starts after it), ``has_more``.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import math
import re
import socket
import threading
import time

from aiohttp import web


def _wrong_key() -> web.Response:
    return web.json_response({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                        "code": "invalid_api_key"}}, status=401)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# an Evol rewrite request's last user message (prompts/evol/*.md): its parent, then the line asking for the rewrite
_REWRITE = re.compile(r"\A(?:Task: |Question: .*?\n\nAnswer: )(?P<parent>.*)\n\n[^\n]+\Z", re.S)


def _digit_logprobs(text: str) -> list[dict]:
    h = hashlib.sha256(text.encode()).digest()
    weights = [1.0 + h[i] for i in range(6)]
    total = sum(weights) / 0.95  # digits carry 95% of the mass
    top = [{"token": str(k + 1), "logprob": math.log(w / total), "bytes": None} for k, w in enumerate(weights)]
    top.append({"token": "The", "logprob": math.log(0.05), "bytes": None})
    return sorted(top, key=lambda t: -t["logprob"])


class FaultServer:
    """``with FaultServer() as srv:`` -> ``srv.base_url``; ``srv.counts`` per last-user-message text."""

    def __init__(self, latency: float = 0.0, slots: int | None = None, retry_after: str = "1",
                 hang_seconds: float = 3.0, usage_prompt_tokens: int | None = None,
                 models: tuple[str, ...] = ("fault",), api_key: str | None = None):
        self.api_key = api_key  # set: a request with another key is refused with 401, as OpenAI does
        self.latency = latency
        self.models = tuple(models)
        self.usage_prompt_tokens = usage_prompt_tokens
        self.slots = slots
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self.port = _free_port()
        self.counts: collections.Counter[str] = collections.Counter()
        self.messages: list[list[dict]] = []  # every chat request's messages, in arrival order
        self.response_formats: list[dict] = []  # and its response_format ({} when none)
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self.total = 0
        self.inflight = 0
        self.max_inflight = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self.hold_chat = threading.Event()
        self.batch_seconds = 0.0
        self.hold_batches = threading.Event()
        self.hold_uploads = threading.Event()
        self.held_uploads: list[threading.Event] = []
        self.hold_files = threading.Event()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_counts: collections.Counter[str] = collections.Counter()
        self.batch_text_counts: collections.Counter[str] = collections.Counter()
        self.batches_created = self.uploads = self.polls = 0

    def forget_batches(self) -> None:
        """Forget every batch (a provider that dropped them): retrieving one answers 404 from now on."""
        with self._lock:
            self.batches.clear()

    def forget_files(self, *file_ids: str) -> None:
        """Forget these files (deleted at the provider): reading one answers 404 from now on."""
        with self._lock:
            for fid in file_ids:
                self.files.pop(fid, None)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await self._answer(request)
        finally:
            with self._lock:
                self.inflight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        messages = body.get("messages") or []
        key = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        with self._lock:
            self.messages.append(messages)
            self.response_formats.append(body.get("response_format") or {})
            self.counts[key] += 1
            self.total += 1
            attempt = self.counts[key]
            self.times[key].append(time.monotonic())
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _wrong_key()
        while self.hold_chat.is_set():
            await asyncio.sleep(0.02)
        if self._slots is not None:
            async with self._slots:
                await asyncio.sleep(self.latency)
        elif self.latency:
            await asyncio.sleep(self.latency)

        def fault(name: str) -> bool:
            m = re.search(rf"\[{name}x(\d+)\]", key)
            return bool(m) and attempt <= int(m.group(1))

        for number, seconds in re.findall(r"\[sleep(\d+):(\d+(?:\.\d+)?)\]", key):
            if attempt == int(number):
                await asyncio.sleep(float(seconds))
        if fault("429"):
            return web.json_response({"error": {"message": "rate limited", "type": "rate_limit"}}, status=429,
                                     headers={"Retry-After": self.retry_after})
        if "[toolong]" in key:  # vLLM 0.32's words (vllm/renderers/params.py) and its error body
            return web.json_response({"error": {"message": "This model's maximum context length is 2048 tokens. "
                                                "However, your prompt contains 2300 input tokens, which exceeds this "
                                                "limit even without any output tokens. Please reduce the length of "
                                                "the input prompt.", "type": "BadRequestError", "param": "input_tokens",
                                                "code": 400}}, status=400)
        if "[always400]" in key:
            return web.json_response({"error": {"message": "bad request", "type": "invalid_request_error"}},
                                     status=400)
        if fault("500") or "[always500]" in key:
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        if fault("timeout"):
            await asyncio.sleep(self.hang_seconds)
        if fault("malformed"):
            return web.Response(text='{"id": "x", "choices": [ {"mess', content_type="application/json")

        return web.json_response(self._completion(body, key, attempt))

    def _completion(self, body: dict, key: str, attempt: int) -> dict:
        """The chat completion body answering ``body`` (whose last user message is ``key``)."""
        messages = body.get("messages") or []
        fmt = body.get("response_format") or {}
        logprobs = None
        if fmt.get("type") == "json_schema" and "tags" in json.dumps(fmt):  # the InsTag prompt's IntentTags
            words = re.findall(r"[a-z]+", re.sub(r"\[[^]]*\]", "", key.lower().split("query:")[-1]))[:2] or ["general"]
            if many := re.search(r"\[tags(\d+)\]", key):
                words = [f"intent {i}" for i in range(1, int(many.group(1)) + 1)]
            content = json.dumps({"tags": [{"tag": w, "explanation": "a word of the query"} for w in words]})
        elif fmt.get("type") == "json_schema" and "scores" in json.dumps(fmt) and "[rank]" in json.dumps(messages) \
                and "[badrank]" not in json.dumps(messages):
            shown = next(str(m["content"]).count("[Version ") for m in reversed(messages)
                         if "[Version " in str(m.get("content")))
            content = json.dumps({"scores": list(range(1, shown + 1))})
        elif fmt.get("type") in ("json_schema", "json_object"):
            content = json.dumps({"label": "general", "confidence": 0.5})
            if "[badjsonx1]" in key and attempt <= 1:
                content = '{"label": "general"'
        elif "[badtext]" in key:
            content = "banana"
        elif said := re.search(r"\[say:([^]]*)\]", key):
            content = said.group(1)
        elif not body.get("logprobs") and "[digitrewrite]" not in key and (rewrite := _REWRITE.match(key)):
            parent, limit = rewrite.group("parent"), re.search(r"\[rewrites:(\d+)\]", key)
            done = parent.count("Include example")
            content = parent if limit and done >= int(limit.group(1)) else f"{parent} Include example number {done + 1}."
        else:
            top = _digit_logprobs(key)
            if "[lowmass]" in key:
                top = [{"token": "4", "logprob": math.log(0.1)}, {"token": "The", "logprob": math.log(0.8)}]
            ignored = re.search(r"\[(sampledonly|emptytop|top1)\]", key)
            if ignored:  # expected digit 3.9 under these odds; the sampled one alone says 4
                top = [{"token": d, "logprob": math.log(p)} for d, p in (("4", 0.7), ("5", 0.2), ("3", 0.1))]
            content = top[0]["token"]
            if body.get("logprobs") and "[nologprobs]" not in key:
                n = int(body.get("top_logprobs") or 0)
                logprobs = {"content": [{"token": content, "logprob": top[0]["logprob"], "bytes": None,
                                         "top_logprobs": top[:n]}]}
                if ignored:
                    given = {"sampledonly": None, "emptytop": [], "top1": top[:1]}[ignored.group(1)]
                    logprobs["content"][0].pop("top_logprobs")
                    if given is not None:
                        logprobs["content"][0]["top_logprobs"] = given
            if "[nologprobs]" in key:
                content = "4"
        prompt_tokens = sum(len(str(m.get("content", ""))) // 4 for m in messages)
        if self.usage_prompt_tokens is not None:
            prompt_tokens = self.usage_prompt_tokens
        if "[echo]" in key and fmt:
            content = next(str(m["content"]) for m in reversed(messages) if m.get("role") == "assistant")
        message = {"role": "assistant", "content": content}
        finish = "length" if "[length]" in key else "stop"
        if "[cutjson]" in json.dumps(messages):  # its re-asks too (their last message is the re-ask)
            message["content"], finish = content[:len(content) // 2], "length"
        if "[refusal]" in key:
            message, logprobs = {"role": "assistant", "content": None, "refusal": "I can't help with that."}, None
        elif "[filtered]" in key:
            message["content"], finish = "The first half of a repl", "content_filter"
        elif "[empty]" in key:
            message["content"], logprobs = "", None
        return {
            "id": f"chatcmpl-{self.total}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fault"),
            "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
        }

    # -- the files and batches APIs ----------------------------------------------------------------------
    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        field = form["file"]
        data = field.file.read() if hasattr(field, "file") else bytes(field)
        if self.hold_uploads.is_set():
            let_through = threading.Event()
            self.held_uploads.append(let_through)
            while self.hold_uploads.is_set() and not let_through.is_set():
                await asyncio.sleep(0.02)
        with self._lock:
            self.uploads += 1
            fid = f"file-{len(self.files) + 1}"
            self.files[fid] = data
        return web.json_response({"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                  "filename": getattr(field, "filename", "batch.jsonl"),
                                  "purpose": form.get("purpose", "batch"), "status": "processed"})

    async def _file_content(self, request: web.Request) -> web.Response:
        while self.hold_files.is_set():
            await asyncio.sleep(0.02)
        data = self.files.get(request.match_info["fid"])
        if data is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        data = self.files.get(body.get("input_file_id"))
        if data is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        lines = [json.loads(x) for x in data.decode().splitlines() if x.strip()]
        with self._lock:
            self.batches_created += 1
            bid = f"batch_{self.batches_created}"
            for line in lines:
                self.batch_counts[line["custom_id"]] += 1
                self.batch_text_counts[self._user_text(line["body"])] += 1
            self.batches[bid] = {
                "id": bid, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
                "status": "validating", "output_file_id": None, "error_file_id": None,
                "created_at": int(time.time()), "metadata": body.get("metadata"),
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "_started": time.monotonic()}
        return web.json_response(self._public(self.batches[bid]))

    @staticmethod
    def _user_text(body: dict) -> str:
        return next((m["content"] for m in reversed(body.get("messages") or []) if m.get("role") == "user"), "")

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _finish(self, batch: dict) -> None:
        """Answer every line of ``batch``: output and error files, final status."""
        lines = [json.loads(x) for x in self.files[batch["input_file_id"]].decode().splitlines() if x.strip()]
        out, err = [], []
        expired = False
        for n, line in enumerate(lines):
            key = self._user_text(line["body"])
            with self._lock:
                self.batch_text_counts[f"done:{key}"] += 1
                attempt = self.batch_text_counts[f"done:{key}"]
            rid = f"batch_req_{batch['id']}_{n}"
            if "[batchexpire]" in key and attempt == 1:
                expired = True
                err.append({"id": rid, "custom_id": line["custom_id"], "response": None,
                            "error": {"code": "batch_expired", "message": "This request could not be executed "
                                      "before the completion window expired."}})
                continue
            if "[batch400]" in key or ("[batch500]" in key and attempt == 1):
                status = 400 if "[batch400]" in key else 500
                out.append({"id": rid, "custom_id": line["custom_id"], "error": None,
                            "response": {"status_code": status, "request_id": rid,
                                         "body": {"error": {"message": f"fake {status}", "type": "x"}}}})
                continue
            out.append({"id": rid, "custom_id": line["custom_id"], "error": None,
                        "response": {"status_code": 200, "request_id": rid,
                                     "body": self._completion(line["body"], key, 1)}})
        with self._lock:
            for name, rows in (("output_file_id", out), ("error_file_id", err)):
                if rows:
                    fid = f"file-{len(self.files) + 1}"
                    self.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                    batch[name] = fid
            batch["status"] = "expired" if expired else "completed"
            batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}

    async def _get_batch(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["bid"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        with self._lock:
            self.polls += 1
        if batch["status"] in ("validating", "in_progress"):
            batch["status"] = "in_progress"
            if not self.hold_batches.is_set() and time.monotonic() - batch["_started"] >= self.batch_seconds:
                self._finish(batch)
        return web.json_response(self._public(batch))

    async def _list_batches(self, request: web.Request) -> web.Response:
        newest_first = [self._public(b) for b in reversed(self.batches.values())]
        limit = max(1, min(int(request.query.get("limit", 20)), 100))
        after = request.query.get("after")
        ids = [b["id"] for b in newest_first]
        start = ids.index(after) + 1 if after in ids else 0
        data = newest_first[start:start + limit]
        return web.json_response({"object": "list", "data": data, "has_more": start + limit < len(newest_first),
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})

    @web.middleware
    async def _check_key(self, request: web.Request, handler):
        """With ``api_key``: every endpoint but the chat one (which counts the request first) refuses another key."""
        if self.api_key is not None and request.path != "/v1/chat/completions" and \
                request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _wrong_key()
        return await handler(request)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._slots = asyncio.Semaphore(self.slots) if self.slots else None
        app = web.Application(middlewares=[self._check_key])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{fid}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches", self._list_batches)
        app.router.add_get("/v1/batches/{bid}", self._get_batch)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        loop.run_until_complete(site.start())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._serve, name="fault-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # serve standalone: python tests/fault_server.py [latency] [slots]
    import sys

    srv = FaultServer(latency=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0,
                      slots=int(sys.argv[2]) if len(sys.argv) > 2 else None).start()
    print(srv.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()
