"""A stand-in for an OpenAI-compatible chat server (vLLM, llama.cpp server, Ollama) on loopback.

A real aiohttp web server on 127.0.0.1 at a free port, serving `POST /v1/chat/completions` with the
OpenAI chat completion JSON shape. Each test says how it answers (`LLMStandin.reply`: a `Reply`, or a
function of the request's JSON that returns one) and reads back what it received (`requests`).

Handlers are cancelled when their client goes away (aiohttp's handler_cancellation), and the stand-in
records it: `disconnected` is set when a request's handler was cancelled before it answered, which is what
a server sees when a client abandons its request and closes the connection.

    async with LLMStandin() as llm:
        llm.reply = Reply(content='{"sentiment": "neutral", ...}')
        ... Judge(JudgeSettings(url=llm.url, model="m")) ...
        assert llm.requests[0].json["model"] == "m"
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    """One answer of the stand-in. status 200: a chat completion whose message content is `content`
    (None: a null content). Another status: an OpenAI-style error body carrying `error`. `body`, when
    given, is sent as it is instead (e.g. not JSON). `delay`: seconds the handler waits before answering."""
    content: str | None = ""
    status: int = 200
    error: str = "the stand-in was told to fail"
    finish_reason: str = "stop"
    delay: float = 0.0
    body: str | None = None
    choices: bool = True  # False: an empty "choices" list


@dataclass
class Received:
    """One request as the stand-in read it."""
    path: str
    headers: dict[str, str]
    json: Any
    at: float = field(default_factory=time.monotonic)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.json.get("messages", []))

    def content(self, role: str) -> str:
        """The content of the first message of that role ("" when there is none)."""
        return next((str(m.get("content", "")) for m in self.messages if m.get("role") == role), "")


def completion(content: str | None, model: str, finish_reason: str = "stop") -> dict[str, Any]:
    """A chat completion in the OpenAI JSON shape, with one choice."""
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": None,
            "finish_reason": finish_reason,
        }],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class LLMStandin:
    """The stand-in server; use it as an async context manager inside the test's event loop."""

    def __init__(self, reply: Reply | Callable[[Any], Reply] | None = None):
        self.reply: Reply | Callable[[Any], Reply] = reply if reply is not None else Reply()
        self.requests: list[Received] = []
        self.port = 0
        # Set when a request arrived (before any delay), and when a handler was cancelled because its
        # client went away before the answer was sent.
        self.arrived = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.answered = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL an OpenAI client is given (`.../v1`)."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> LLMStandin:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LLMStandin:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = {"unparsed": raw.decode("utf-8", "replace")}
        self.requests.append(Received(request.path, dict(request.headers), body))
        self.arrived.set()
        reply = self.reply(body) if callable(self.reply) else self.reply
        try:
            if reply.delay:
                await asyncio.sleep(reply.delay)
        except asyncio.CancelledError:
            self.disconnected.set()
            raise
        self.answered += 1
        if reply.body is not None:
            return web.Response(status=reply.status, text=reply.body, content_type="application/json")
        if reply.status != 200:
            error = {"error": {"message": reply.error, "type": "server_error", "param": None, "code": None}}
            return web.json_response(error, status=reply.status)
        answer = completion(reply.content, str(body.get("model", "")), reply.finish_reason)
        if not reply.choices:
            answer["choices"] = []
        return web.json_response(answer)
