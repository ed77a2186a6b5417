"""Self-test of tests/fakes/openai_api.py, driving the real ``litellm.acompletion`` against it.

These tests also pin down how litellm 1.106.12 behaves, since ``bot.llm`` relies on it:

- litellm retries on its own: the OpenAI SDK inside it gets ``max_retries=num_retries``
  (default 2) and retries 408/409/429/5xx answers and timeouts with a backoff of about
  0.5 s, 1 s, ... Pass ``num_retries=0`` per call to get exactly one request; setting
  the global ``litellm.num_retries = 0`` does NOT do that (0 is read as "unset").
  litellm's own wrapper-level retry needs ``tenacity``, which is not installed, so it
  is a silent no-op here.
- ``fallbacks=[...]`` retries the call with each model in turn, reusing every other
  keyword (``api_base`` included); a dict entry such as ``{"model": ..., "api_base": ...}``
  overrides keywords for that model. When all fail, a plain ``Exception`` is raised.
- ``timeout=`` is per attempt; exceeding it raises ``litellm.Timeout``.
- Errors map by status: 400 BadRequestError, 401 AuthenticationError, 429 RateLimitError,
  500 InternalServerError, 502 BadGatewayError, 503 ServiceUnavailableError. Their common
  base is ``openai.APIError``, not ``litellm.APIError``.
- ``response_format`` is passed through to the request body unchanged.
"""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported: no network

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import litellm
import openai
import pytest

from tests.fakes.openai_api import FakeOpenAI

litellm.suppress_debug_info = True

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [
    {"role": "system", "content": "You are Mirror, one persona on many entrances."},
    {"role": "user", "content": "Hello there, who are you?"},
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


async def complete(fake: FakeOpenAI, **kwargs: Any) -> Any:
    """``litellm.acompletion`` against the fake; keywords override the defaults."""
    params: dict[str, Any] = {
        "model": "openai/fake-model",
        "api_base": fake.base_url,
        "api_key": "sk-test",
        "messages": MESSAGES,
        **kwargs,
    }
    return await litellm.acompletion(**params)


async def test_queued_reply_comes_back_with_usage(fake: FakeOpenAI) -> None:
    fake.queue_reply("I am Mirror, a fake reply with some length.")

    response = await complete(fake)

    assert response.choices[0].message.content == "I am Mirror, a fake reply with some length."
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].finish_reason == "stop"
    assert response.model == "fake-model"  # the request's model, echoed
    assert response.id.startswith("chatcmpl-")
    usage = response.usage
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens == len("I am Mirror, a fake reply with some length.") // 4
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # the recorded body carries the system prompt and the bare model name
    (body,) = fake.requests
    assert body["model"] == "fake-model"
    assert body["messages"][0] == MESSAGES[0]


async def test_default_and_responder_when_queue_is_empty(fake: FakeOpenAI) -> None:
    response = await complete(fake)
    assert response.choices[0].message.content == "fake reply"

    fake.responder = lambda body: body["messages"][-1]["content"].upper()
    response = await complete(fake)
    assert response.choices[0].message.content == "HELLO THERE, WHO ARE YOU?"

    fake.responder = lambda body: None  # None falls through to the default
    response = await complete(fake)
    assert response.choices[0].message.content == "fake reply"


async def test_response_format_is_passed_through_and_json_comes_back(fake: FakeOpenAI) -> None:
    fake.queue_json({"reply": "hi", "intentions": []})

    response = await complete(fake, response_format={"type": "json_object"})

    assert json.loads(response.choices[0].message.content) == {"reply": "hi", "intentions": []}
    assert fake.requests[0]["response_format"] == {"type": "json_object"}


async def test_fallback_model_answers_when_the_first_fails(fake: FakeOpenAI) -> None:
    fake.fail_model("openai/fake-model")  # the queue is left for the fallback
    fake.queue_reply("from the fallback")

    response = await complete(fake, fallbacks=["openai/fake-b"], num_retries=0)

    assert response.choices[0].message.content == "from the fallback"
    assert response.model == "fake-b"
    assert [body["model"] for body in fake.requests] == ["fake-model", "fake-b"]


async def test_dict_fallback_may_use_another_api_base(fake: FakeOpenAI) -> None:
    fake.fail_model("fake-model", status=503)
    async with FakeOpenAI() as other:
        other.queue_reply("from the other server")
        fallback = {"model": "openai/fake-b", "api_base": other.base_url}

        response = await complete(fake, fallbacks=[fallback], num_retries=0)

        assert response.choices[0].message.content == "from the other server"
        assert [body["model"] for body in other.requests] == ["fake-b"]
    assert [body["model"] for body in fake.requests] == ["fake-model"]


async def test_all_fallbacks_failing_raises_a_plain_exception(fake: FakeOpenAI) -> None:
    fake.fail_model("fake-model")
    fake.fail_model("fake-b")

    with pytest.raises(Exception, match="All fallback attempts failed") as caught:
        await complete(fake, fallbacks=["openai/fake-b"], num_retries=0)

    assert type(caught.value) is Exception  # not a litellm exception class
    assert len(fake.requests) == 2


async def test_errors_map_to_litellm_exceptions(fake: FakeOpenAI) -> None:
    fake.queue_error(500, "boom")
    with pytest.raises(litellm.InternalServerError, match="boom"):
        await complete(fake, num_retries=0)

    fake.queue_error(429, "slow down")
    with pytest.raises(litellm.RateLimitError):
        await complete(fake, num_retries=0)

    fake.queue_error(400, "bad request")
    with pytest.raises(litellm.BadRequestError):
        await complete(fake, num_retries=0)

    # litellm.APIError is NOT their common base; openai.APIError is
    fake.queue_error(503, "unavailable")
    with pytest.raises(openai.APIError) as caught:
        await complete(fake, num_retries=0)
    assert isinstance(caught.value, litellm.ServiceUnavailableError)
    assert not isinstance(caught.value, litellm.APIError)
    assert len(fake.requests) == 4


async def test_sdk_retries_on_its_own_by_default(fake: FakeOpenAI) -> None:
    fake.fail_model("fake-model")
    with pytest.raises(litellm.InternalServerError):
        await complete(fake)  # no num_retries: the OpenAI SDK's default of 2 retries
    assert len(fake.requests) == 3

    # a retry consumes the next queued item: one queued error is invisible to the caller
    fake.reset()
    fake.queue_error(500)
    fake.queue_reply("second try")
    response = await complete(fake, num_retries=1)
    assert response.choices[0].message.content == "second try"
    assert len(fake.requests) == 2

    # unless the error says x-should-retry: false
    fake.reset()
    fake.queue_error(500, should_retry=False)
    with pytest.raises(litellm.InternalServerError):
        await complete(fake)
    assert len(fake.requests) == 1


async def test_delay_longer_than_timeout_raises_litellm_timeout(fake: FakeOpenAI) -> None:
    fake.queue_delay(5.0, then_content="too late")

    started = time.monotonic()
    with pytest.raises(litellm.Timeout):
        await complete(fake, timeout=0.5, num_retries=0)

    assert time.monotonic() - started < 2.0
    assert len(fake.requests) == 1


async def test_slow_model_times_out_and_others_do_not(fake: FakeOpenAI) -> None:
    fake.slow_model("fake-slow", 5.0)
    with pytest.raises(litellm.Timeout):
        await complete(fake, model="openai/fake-slow", timeout=0.3, num_retries=0)

    response = await complete(fake, timeout=0.3, num_retries=0)
    assert response.choices[0].message.content == "fake reply"


async def test_streaming(fake: FakeOpenAI) -> None:
    fake.queue_reply("a streamed reply in pieces")

    stream = await complete(fake, stream=True, stream_options={"include_usage": True})
    pieces: list[str] = []
    usage = None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        usage = getattr(chunk, "usage", None) or usage

    assert "".join(pieces) == "a streamed reply in pieces"
    assert usage is not None and usage.completion_tokens > 0
    assert fake.requests[0]["stream"] is True


async def test_wait_for_requests(fake: FakeOpenAI) -> None:
    fake.queue_delay(0.2, then_content="eventually")
    task = asyncio.create_task(complete(fake, num_retries=0))

    (body,) = await fake.wait_for_requests(1, timeout=5.0)
    assert body["messages"][-1]["content"] == MESSAGES[-1]["content"]
    assert (await task).choices[0].message.content == "eventually"

    with pytest.raises(TimeoutError):
        await fake.wait_for_requests(2, timeout=0.1)


async def test_models_and_control_routes(fake: FakeOpenAI) -> None:
    root = fake.base_url.removesuffix("/v1")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake.base_url}/models") as resp:
            assert [m["id"] for m in (await resp.json())["data"]] == ["fake-model"]
        for spec in ({"content": "one"}, {"json": {"n": 2}}, {"error": 502}):
            async with http.post(f"{root}/_fake/queue", json=spec) as resp:
                assert resp.status == 200
        assert fake.pending == 3

        first = await complete(fake, num_retries=0)
        second = await complete(fake, num_retries=0)
        assert first.choices[0].message.content == "one"
        assert json.loads(second.choices[0].message.content) == {"n": 2}
        with pytest.raises(litellm.BadGatewayError):
            await complete(fake, num_retries=0)

        async with http.get(f"{root}/_fake/requests") as resp:
            assert len(await resp.json()) == 3
        async with http.post(f"{root}/_fake/reset") as resp:
            assert resp.status == 200
        assert fake.requests == [] and fake.pending == 0


async def test_cli_mode_serves_until_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.openai_api",
        "--port",
        "0",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=10.0)).decode().strip()
        assert line.startswith("READY http://127.0.0.1:")
        base_url = line.removeprefix("READY ")
        root = base_url.removesuffix("/v1")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{root}/_fake/queue", json={"content": "from the cli"}) as resp:
                assert resp.status == 200
            response = await litellm.acompletion(
                model="openai/fake-model",
                api_base=base_url,
                api_key="sk-test",
                messages=MESSAGES,
                num_retries=0,
            )
            assert response.choices[0].message.content == "from the cli"
            async with http.get(f"{root}/_fake/requests") as resp:
                assert (await resp.json())[0]["messages"] == MESSAGES
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=10.0) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
