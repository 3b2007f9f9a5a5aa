"""A small OpenAI-compatible chat server on loopback that injects faults and counts requests.

Used by the judge-engine tests and ``evals/bench_judge_client.py``. It runs aiohttp in a
background thread. Each request is identified by the content of its last user message; faults are
chosen by markers inside that text, so a test decides per row what goes wrong:

``[429x2]``      first 2 attempts answer 429 with ``Retry-After: <retry_after>``
``[500x1]``      first attempt answers 500
``[always500]``  every attempt answers 500
``[timeoutx1]``  first attempt sleeps ``hang_seconds`` (longer than the client's timeout)
``[malformedx1]`` first attempt answers 200 with a body that is not JSON
``[nologprobs]`` answers without logprobs (text is a digit)
``[badtext]``    answers without logprobs and with text that holds no digit
``[lowmass]``    logprobs where digits 1-3 are absent and the rest carry little mass

Otherwise it answers a digit with a top-logprobs list over digits 1-6 (deterministic per text),
or, when ``response_format`` asks for JSON, ``{"label": ..., "confidence": ...}``. With
``slots``/``latency`` it models a server with C concurrent slots and fixed latency L. Usage is
reported with every answer: ``prompt_tokens`` is characters // 4 of the messages, or
``usage_prompt_tokens`` when given (a tokenizer that counts far fewer tokens than curate's estimate).
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
                 hang_seconds: float = 3.0, usage_prompt_tokens: int | None = None):
        self.latency = latency
        self.usage_prompt_tokens = usage_prompt_tokens
        self.slots = slots
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self.port = _free_port()
        self.counts: collections.Counter[str] = collections.Counter()
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self.total = 0
        self.inflight = 0
        self.max_inflight = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None

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
            self.counts[key] += 1
            self.total += 1
            attempt = self.counts[key]
            self.times[key].append(time.monotonic())
        if self._slots is not None:
            async with self._slots:
                await asyncio.sleep(self.latency)
        elif self.latency:
            await asyncio.sleep(self.latency)

        def fault(name: str) -> bool:
            m = re.search(rf"\[{name}x(\d+)\]", key)
            return bool(m) and attempt <= int(m.group(1))

        if fault("429"):
            return web.json_response({"error": {"message": "rate limited", "type": "rate_limit"}}, status=429,
                                     headers={"Retry-After": self.retry_after})
        if fault("500") or "[always500]" in key:
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        if fault("timeout"):
            await asyncio.sleep(self.hang_seconds)
        if fault("malformed"):
            return web.Response(text='{"id": "x", "choices": [ {"mess', content_type="application/json")

        fmt = body.get("response_format") or {}
        logprobs = None
        if fmt.get("type") in ("json_schema", "json_object"):
            content = json.dumps({"label": "general", "confidence": 0.5})
            if "[badjsonx1]" in key and attempt <= 1:
                content = '{"label": "general"'
        elif "[badtext]" in key:
            content = "banana"
        else:
            top = _digit_logprobs(key)
            if "[lowmass]" in key:
                top = [{"token": "4", "logprob": math.log(0.1)}, {"token": "The", "logprob": math.log(0.8)}]
            content = top[0]["token"]
            if body.get("logprobs") and "[nologprobs]" not in key:
                n = int(body.get("top_logprobs") or 0)
                logprobs = {"content": [{"token": content, "logprob": top[0]["logprob"], "bytes": None,
                                         "top_logprobs": top[:n]}]}
            if "[nologprobs]" in key:
                content = "4"
        prompt_tokens = sum(len(str(m.get("content", ""))) // 4 for m in messages)
        if self.usage_prompt_tokens is not None:
            prompt_tokens = self.usage_prompt_tokens
        return web.json_response({
            "id": f"chatcmpl-{self.total}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fault"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": logprobs, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
        })

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fault", "object": "model"}]})

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._slots = asyncio.Semaphore(self.slots) if self.slots else None
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
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
