"""A scriptable fake of an OpenAI-compatible chat completions API, served by aiohttp.

In-process use (pytest)::

    async with FakeOpenAI() as fake:
        fake.queue_reply("hello")
        resp = await litellm.acompletion(
            model="openai/fake-model", api_base=fake.base_url, api_key="sk-test",
            messages=[{"role": "user", "content": "hi"}],
        )
        assert fake.requests[0]["messages"][0]["content"] == "hi"

Out-of-process use (for tests that drive separate ``mirror`` processes)::

    python -m tests.fakes.openai_api --port 0
    # prints "READY http://127.0.0.1:PORT/v1" and serves until SIGTERM / SIGINT

and script it over HTTP through the control routes under ``/_fake/``:

- ``POST /_fake/queue`` with one of ``{"content": "...", "model": "..."}``,
  ``{"json": {...}}``, ``{"error": 500, "message": "boom"}`` or
  ``{"delay": 2.5, "content": "..."}``;
- ``POST /_fake/fail_model`` ``{"model": "m", "status": 500}``,
  ``POST /_fake/slow_model`` ``{"model": "m", "seconds": 2.0}``;
- ``GET /_fake/requests`` returns the recorded request bodies;
- ``POST /_fake/reset`` forgets the queue, recordings and per-model behaviour.

How a chat request is answered, in order:

1. a model registered with ``fail_model`` fails at once (the queue is not consumed);
2. a model registered with ``slow_model`` sleeps first, then continues below;
3. the next queued item (FIFO) is used: a reply, an error, or a delay-then-reply;
4. otherwise ``responder(body)`` is asked, and a non-None string is the reply;
5. otherwise ``default_content`` is the reply.

Note: the OpenAI SDK inside litellm retries 408/409/429/5xx responses on its own
(twice by default), so one queued error may be followed by retries that consume the next
queued item. Pass ``should_retry=False`` to ``queue_error``/``fail_model`` to send
``x-should-retry: false``, which makes the SDK give up after the first answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from tests.fakes.server import FakeServer

__all__ = ["FakeOpenAI", "Responder"]

Responder = Callable[[dict[str, Any]], str | None]
"""Computes a reply's content from a request body; None falls through to the default."""

_ItemKind = Literal["reply", "error", "delay"]


@dataclass(frozen=True)
class _Scripted:
    """One queued behaviour."""

    kind: _ItemKind
    content: str = ""
    model: str | None = None
    status: int = 500
    message: str = "boom"
    seconds: float = 0.0
    should_retry: bool | None = None


@dataclass(frozen=True)
class _Failure:
    status: int
    message: str
    should_retry: bool | None


def estimate_tokens(text: str) -> int:
    """Crude token estimate: a token is about four characters (at least 1 for non-empty text)."""
    return max(1, len(text) // 4) if text else 0


def _message_text(messages: Any) -> str:
    """Concatenate the text of all messages (string or list-of-parts content)."""
    parts: list[str] = []
    if not isinstance(messages, list):
        return ""
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    parts.append(part["text"])
    return "\n".join(parts)


def _strip_provider(model: str) -> str:
    """litellm sends "openai/x" as "x"; accept either spelling when registering models."""
    return model.removeprefix("openai/")


def _error_response(failure: _Failure) -> web.Response:
    if failure.status == 429:
        error_type = "rate_limit_error"
    elif failure.status >= 500:
        error_type = "server_error"
    else:
        error_type = "invalid_request_error"
    headers: dict[str, str] = {}
    if failure.should_retry is not None:
        headers["x-should-retry"] = "true" if failure.should_retry else "false"
    body = {"error": {"message": failure.message, "type": error_type, "param": None, "code": None}}
    return web.json_response(body, status=failure.status, headers=headers)


class FakeOpenAI(FakeServer):
    """A fake OpenAI-compatible server on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: tuple[str, ...] = ("fake-model",),
        default_content: str = "fake reply",
    ) -> None:
        super().__init__(host=host, port=port)
        self.models: list[str] = list(models)
        self.default_content = default_content
        self.responder: Responder | None = None
        self.requests: list[dict[str, Any]] = []
        self._queue: deque[_Scripted] = deque()
        self._failing: dict[str, _Failure] = {}
        self._slow: dict[str, float] = {}
        self._closing = asyncio.Event()
        self._recorded = asyncio.Condition()

    # ----------------------------------------------------------------- lifecycle

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_post("/_fake/queue", self._ctl_queue)
        app.router.add_post("/_fake/fail_model", self._ctl_fail_model)
        app.router.add_post("/_fake/slow_model", self._ctl_slow_model)
        app.router.add_get("/_fake/requests", self._ctl_requests)
        app.router.add_post("/_fake/reset", self._ctl_reset)
        return app

    async def start(self) -> None:
        """Bind and serve; with ``port=0`` a free port is picked (see ``base_url``)."""
        if not self.running:
            self._closing = asyncio.Event()
            self._recorded = asyncio.Condition()
        await super().start()

    async def stop(self) -> None:
        """Stop serving; pending delays end at once. Safe to call twice."""
        self._closing.set()
        await super().stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, the value to pass as litellm's ``api_base``."""
        if not self.running:
            raise RuntimeError("FakeOpenAI is not started")
        return f"{self.url}/v1"

    # ----------------------------------------------------------------- scripting

    def queue_reply(self, content: str, *, model: str | None = None) -> None:
        """Answer the next request with ``content`` (``model`` overrides the echoed model)."""
        self._queue.append(_Scripted("reply", content=content, model=model))

    def queue_json(self, obj: Any, *, model: str | None = None) -> None:
        """Answer the next request with ``json.dumps(obj)`` as content."""
        self.queue_reply(json.dumps(obj), model=model)

    def queue_error(
        self, status: int = 500, message: str = "boom", *, should_retry: bool | None = None
    ) -> None:
        """Fail the next request with an OpenAI-style error body and ``status``."""
        self._queue.append(
            _Scripted("error", status=status, message=message, should_retry=should_retry)
        )

    def queue_delay(self, seconds: float, then_content: str = "late reply") -> None:
        """Sleep ``seconds`` before answering the next request with ``then_content``."""
        self._queue.append(_Scripted("delay", content=then_content, seconds=seconds))

    def fail_model(
        self,
        model_name: str,
        status: int = 500,
        message: str | None = None,
        *,
        should_retry: bool | None = None,
    ) -> None:
        """Make every request naming ``model_name`` fail (with or without ``openai/``)."""
        text = message or f"fake failure for model {_strip_provider(model_name)}"
        self._failing[_strip_provider(model_name)] = _Failure(status, text, should_retry)

    def slow_model(self, model_name: str, seconds: float) -> None:
        """Make every request naming ``model_name`` sleep ``seconds`` before it is answered."""
        self._slow[_strip_provider(model_name)] = seconds

    def reset(self) -> None:
        """Forget the queue, recordings, responder and per-model behaviour."""
        self._queue.clear()
        self.requests.clear()
        self._failing.clear()
        self._slow.clear()
        self.responder = None

    @property
    def pending(self) -> int:
        """How many queued items are not consumed yet."""
        return len(self._queue)

    async def wait_for_requests(
        self,
        count: int,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` chat requests were recorded; return them."""
        async with asyncio.timeout(timeout), self._recorded:
            await self._recorded.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    # ----------------------------------------------------------------- serving

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the server stops."""
        try:
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _record(self, body: dict[str, Any]) -> None:
        async with self._recorded:
            self.requests.append(body)
            self._recorded.notify_all()

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error_response(_Failure(400, "request body is not JSON", False))
        if not isinstance(body, dict):
            return _error_response(_Failure(400, "request body must be an object", False))
        await self._record(body)
        requested_model = str(body.get("model", ""))

        failure = self._failing.get(requested_model)
        if failure is not None:
            return _error_response(failure)
        if requested_model in self._slow:
            await self._sleep(self._slow[requested_model])

        content: str | None = None
        model = requested_model
        if self._queue:
            item = self._queue.popleft()
            if item.kind == "error":
                return _error_response(_Failure(item.status, item.message, item.should_retry))
            if item.kind == "delay":
                await self._sleep(item.seconds)
            content = item.content
            model = item.model or requested_model
        elif self.responder is not None:
            content = self.responder(body)
        if content is None:
            content = self.default_content

        if body.get("stream"):
            return await self._stream(request, body, model, content)
        return web.json_response(self._completion(body, model, content))

    def _usage(self, body: dict[str, Any], content: str) -> dict[str, int]:
        prompt = estimate_tokens(_message_text(body.get("messages")))
        completion = estimate_tokens(content)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _completion(self, body: dict[str, Any], model: str, content: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(body, content),
        }

    async def _stream(
        self, request: web.Request, body: dict[str, Any], model: str, content: str
    ) -> web.StreamResponse:
        """Server-sent events: role chunk, a few content chunks, stop chunk, [usage], [DONE]."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
        }

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            payload = {**base, "choices": choices, **extra}
            await response.write(f"data: {json.dumps(payload)}\n\n".encode())

        for piece in _pieces(content):
            await send([{"index": 0, "delta": piece, "logprobs": None, "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
        stream_options = body.get("stream_options") or {}
        if isinstance(stream_options, dict) and stream_options.get("include_usage"):
            await send([], usage=self._usage(body, content))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _list_models(self, request: web.Request) -> web.Response:
        now = int(time.time())
        data = [
            {"id": m, "object": "model", "created": now, "owned_by": "fake"} for m in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    # ----------------------------------------------------------------- control routes

    async def _ctl_queue(self, request: web.Request) -> web.Response:
        spec = await request.json()
        if not isinstance(spec, dict):
            raise web.HTTPBadRequest(text="expected a JSON object")
        if "error" in spec:
            self.queue_error(
                int(spec["error"]),
                str(spec.get("message", "boom")),
                should_retry=spec.get("should_retry"),
            )
        elif "delay" in spec:
            self.queue_delay(float(spec["delay"]), str(spec.get("content", "late reply")))
        elif "json" in spec:
            self.queue_json(spec["json"], model=spec.get("model"))
        elif "content" in spec:
            self.queue_reply(str(spec["content"]), model=spec.get("model"))
        else:
            raise web.HTTPBadRequest(text="expected one of: content, json, error, delay")
        return web.json_response({"queued": self.pending})

    async def _ctl_fail_model(self, request: web.Request) -> web.Response:
        spec = await request.json()
        self.fail_model(
            str(spec["model"]),
            int(spec.get("status", 500)),
            spec.get("message"),
            should_retry=spec.get("should_retry"),
        )
        return web.json_response({"ok": True})

    async def _ctl_slow_model(self, request: web.Request) -> web.Response:
        spec = await request.json()
        self.slow_model(str(spec["model"]), float(spec["seconds"]))
        return web.json_response({"ok": True})

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


def _pieces(content: str) -> Iterator[dict[str, str]]:
    """Deltas of a streamed reply: the role first, then the content in up to four pieces."""
    yield {"role": "assistant", "content": ""}
    size = max(1, -(-len(content) // 4))
    for start in range(0, len(content), size):
        yield {"content": content[start : start + size]}


async def _serve(port: int, default_content: str) -> None:
    fake = FakeOpenAI(port=port, default_content=default_content)
    await fake.serve_until_signalled("/v1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI-compatible API.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--default-content", default="fake reply", help="reply when unscripted")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.port, args.default_content))


if __name__ == "__main__":
    main()
