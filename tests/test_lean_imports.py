"""Lean processes (issue 24): what a process imports is what its model needs.

Real `mirror` processes run with PYTHONPROFILEIMPORTTIME=1, so every module they import is
listed on their stderr: processes that never call a model (`mirror status`, the scheduler,
CLI commands) never import litellm, even on a real-model config; an entrance whose model is
an OpenAI-compatible server litellm has no entry for answers without importing it. And the
direct path behaves as litellm does against the fake OpenAI-compatible API: the same
request body, the same retries and the same refusals (a refused key or an unknown model is
not retried; a missing key is not even sent).
"""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot import llm
from bot.config import Config
from bot.context import Context
from tests.conftest import run_mirror
from tests.fakes.openai_api import FakeOpenAI
from tests.processes import ChatProcess, MirrorProcess

IMPORTS = {"PYTHONPROFILEIMPORTTIME": "1"}
# Models a process would reach through litellm, if it ever called one.
REAL_MODEL = '[model]\nname = "anthropic/claude-sonnet-4-5"\nfallbacks = ["openai/gpt-4o-mini"]\n'


def imported(stderr: str | list[str]) -> set[str]:
    """Top-level packages a process imported, from its `-X importtime` lines."""
    lines = stderr.splitlines() if isinstance(stderr, str) else stderr
    names = set()
    for line in lines:
        if "import time:" in line and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name.split(".")[0])
    assert "bot" in names, "no -X importtime output: the check would pass for nothing"
    return names


@pytest.mark.parametrize(
    "command",
    [("status",), ("status", "--json"), ("entrances",), ("scheduler", "--once"), ("--help",)],
)
def test_cli_commands_never_import_litellm(
    write_config: Callable[..., Path], command: tuple[str, ...]
) -> None:
    config = write_config(REAL_MODEL)
    args = (*command, "--config", str(config)) if command != ("--help",) else command
    result = run_mirror(*args, **IMPORTS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "litellm" not in imported(result.stderr)


async def test_the_scheduler_imports_neither_litellm_nor_typer(
    write_config: Callable[..., Path],
) -> None:
    # `mirror run NAME`, as `mirror up` and service units start a process that lives for
    # days, is parsed without Typer (bot/cli/child.py).
    config = write_config(REAL_MODEL + "\n[scheduler]\ninterval_s = 0.2\n")
    scheduler = MirrorProcess("run", "scheduler", "--config", str(config), env=IMPORTS)
    await scheduler.start()
    try:
        await scheduler.wait_for_line(lambda line: "now the leader" in line, stream="stderr")
    finally:
        code = await scheduler.stop(signal.SIGTERM)
    assert code == 0, scheduler.tail()
    assert not {"litellm", "typer"} & imported(scheduler.stderr)


@pytest.fixture
async def fake_model() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(models=("fake-model", "fake-b")) as fake:
        yield fake


def model_toml(fake: FakeOpenAI, name: str = "openai/fake-model") -> str:
    return f'[model]\nname = "{name}"\napi_base = "{fake.base_url}"\nretries = 0\n'


@pytest.mark.parametrize("client", ["direct", "litellm"])
async def test_an_entrance_imports_only_what_its_model_needs(
    write_config: Callable[..., Path], fake_model: FakeOpenAI, client: str
) -> None:
    fake_model.queue_json({"reply": "Hello from the fake model."})
    env = {**IMPORTS, "OPENAI_API_KEY": "sk-test"}
    if client == "litellm":
        env["MIRROR_MODEL_CLIENT"] = "litellm"
    chat = ChatProcess(write_config(model_toml(fake_model)), "desk", "alice", env=env)
    await chat.start()
    try:
        reply = await chat.say("hello there")
    finally:
        await chat.quit()
    assert reply["text"] == "Hello from the fake model."
    assert len(fake_model.requests) == 1
    assert ("litellm" in imported(chat.stderr)) is (client == "litellm")


# The direct path and litellm, side by side in this process ------------------------------


@pytest.fixture(params=["direct", "litellm"])
def client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    if request.param == "litellm":
        monkeypatch.setenv("MIRROR_MODEL_CLIENT", "litellm")
    else:
        monkeypatch.delenv("MIRROR_MODEL_CLIENT", raising=False)
    return str(request.param)


def turn_context(text: str = "Ring Bob on Friday") -> Context:
    from datetime import UTC, datetime

    return Context(
        soul_name="Wren",
        soul_text="# Name\nWren\n",
        soul_version=None,
        instance_id="desk",
        entrance="local",
        style="conversational",
        timezone="UTC",
        now=datetime(2026, 11, 23, 12, tzinfo=UTC),
        person_id=1,
        person_name="Alice",
        conversation_kind="dm",
        incoming_id=1,
        text=text,
    )


def model_config(fake: FakeOpenAI, **update: object) -> Config:
    config = Config()
    config.model.name = "openai/fake-model"
    config.model.api_base = fake.base_url
    config.model.retries = 0
    config.model.temperature = 0.3
    for key, value in update.items():
        setattr(config.model, key, value)
    return config


def test_only_models_litellm_knows_nothing_about_take_the_direct_path(
    fake_model: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MIRROR_MODEL_CLIENT", raising=False)
    monkeypatch.delenv("HOSTED_VLLM_API_BASE", raising=False)
    model = model_config(fake_model).model
    assert llm._direct_endpoint(model, "openai/fake-model") is not None
    assert llm._direct_endpoint(model, "hosted_vllm/my-local-model") is not None
    assert llm._direct_endpoint(model, "openai/gpt-4o-mini") is None  # priced: litellm
    assert llm._direct_endpoint(model, "anthropic/claude-sonnet-4-5") is None
    without_base = model.model_copy(update={"api_base": None})
    assert llm._direct_endpoint(without_base, "openai/fake-model") is None  # api.openai.com
    windowed = model.model_copy(update={"context_tokens": 4096})
    assert llm._direct_endpoint(windowed, "openai/fake-model") is None  # litellm counts
    monkeypatch.setenv("MIRROR_MODEL_CLIENT", "litellm")
    assert llm._direct_endpoint(model, "openai/fake-model") is None


async def test_both_clients_send_the_same_request(fake_model: FakeOpenAI, client: str) -> None:
    fake_model.queue_json({"reply": "I'll ring Bob.", "notes": ["Alice wants Bob rung"]})
    answer = await llm.complete(model_config(fake_model).model, turn_context())
    assert answer.reply.text == "I'll ring Bob." and answer.reply.notes == ["Alice wants Bob rung"]
    assert answer.model == "openai/fake-model" and answer.prompt_tokens > 0
    [request] = fake_model.requests
    assert sorted(request) == [
        "max_tokens",
        "messages",
        "model",
        "response_format",
        "temperature",
    ]
    assert request["model"] == "fake-model"
    assert request["response_format"] == {"type": "json_object"}
    assert (request["max_tokens"], request["temperature"]) == (800, 0.3)
    assert request["messages"][-1] == {"role": "user", "content": "Alice: Ring Bob on Friday"}
    assert json.dumps(request["messages"][0]).startswith('{"role": "system"')


@pytest.mark.parametrize(("status", "tries"), [(401, 1), (404, 1), (500, 3), (429, 3)])
async def test_both_clients_retry_alike(
    fake_model: FakeOpenAI, client: str, status: int, tries: int
) -> None:
    fake_model.fail_model("fake-model", status, should_retry=False)
    config = model_config(fake_model, retries=2, retry_backoff_s=0.01).model
    with pytest.raises(llm.ModelUnavailable, match="openai/fake-model"):
        await llm.complete(config, turn_context())
    assert len(fake_model.requests) == tries


async def test_both_clients_fall_back_after_a_timeout(fake_model: FakeOpenAI, client: str) -> None:
    fake_model.slow_model("fake-model", 3)
    fake_model.queue_reply("from the fallback")
    config = model_config(fake_model, timeout_s=0.5, fallbacks=["openai/fake-b"]).model
    answer = await llm.complete(config, turn_context())
    assert (answer.model, answer.reply.text) == ("openai/fake-b", "from the fallback")


async def test_both_clients_refuse_to_send_without_a_key(
    fake_model: FakeOpenAI, client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    await llm.preload(model_config(fake_model).model)  # litellm names missing keys once loaded
    config = model_config(fake_model, retries=2, retry_backoff_s=0.01).model
    with pytest.raises(llm.ModelUnavailable, match="OPENAI_API_KEY"):
        await llm.complete(config, turn_context())
    assert fake_model.requests == []
    assert "openai/fake-model needs OPENAI_API_KEY" in llm.offline_notice(config)
