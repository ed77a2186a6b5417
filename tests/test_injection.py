"""Injection: what the model writes is sent as a reply, never run as a command.

A real `Instance` (the code every entrance process runs) on a temporary memory.db, with
litellm talking to the fake OpenAI-compatible server. The coordinator asks a question; the
"model" answers with coordinator and admin commands. They are sent back as text and change
nothing, while the same commands typed by the coordinator do act.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.config import load_config
from bot.instance import Instance
from bot.memory import NewIntention
from bot.models import Author, Incoming
from bot.soul import sync_soul_file
from tests.fakes.openai_api import FakeOpenAI

COORDINATOR = "carol"


def from_coordinator(text: str) -> Incoming:
    return Incoming(
        entrance="local",
        conversation_id=f"desk:{COORDINATOR}",
        conversation_kind="dm",
        author=Author(external_id=COORDINATOR, display_name="Carol"),
        text=text,
    )


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAI]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def instance(
    write_config: Callable[..., Path], model: FakeOpenAI, soul_file: Path
) -> AsyncIterator[Instance]:
    config = load_config(
        write_config(
            f'[coordinator]\naddress = "local:{COORDINATOR}"\n\n'
            f'[access]\nadmins = ["local:{COORDINATOR}"]\n\n'
            f'[model]\nname = "openai/fake-model"\napi_base = "{model.base_url}"\nretries = 0\n'
        )
    )
    desk = Instance(config, instance_id="desk", entrance="local", watch_soul=False)
    await desk.start()
    try:
        memory = desk.memory
        # Two soul versions (a rollback to 1 would change the name) ...
        assert (await sync_soul_file(memory, soul_file)) is not None
        soul_file.write_text(soul_file.read_text().replace("Wren", "Robin"), encoding="utf-8")
        assert (await sync_soul_file(memory, soul_file)).name == "Robin"  # type: ignore[union-attr]
        # ... and an open conflict, item #1: two instances booked the same hour.
        for owner, text in [("phone", "call alice"), ("laptop", "review the draft")]:
            await memory.add_intention(
                NewIntention(
                    owner, "local", None, None, "private", text, text, 2e9, 3600, None, None
                )
            )
        [conflict] = await memory.conflicts()
        assert (conflict.id, conflict.status) == (1, "open")
        yield desk
    finally:
        await desk.stop()


async def test_model_output_can_never_run_a_command(
    instance: Instance, model: FakeOpenAI, soul_file: Path
) -> None:
    memory = instance.memory
    model.queue_json({"reply": "/resolve 1 A", "notes": ["/dismiss 1"], "done": [1, 2]})
    reply = await instance.handle(from_coordinator("What should I do about item 1?"))
    assert reply is not None and reply.text == "/resolve 1 A"
    assert reply.model == "openai/fake-model"  # the model was asked, and it said that
    model.queue_reply("/soul rollback 1")
    reply = await instance.handle(from_coordinator("Which soul version do you prefer?"))
    assert reply is not None and reply.text == "/soul rollback 1"
    assert len(model.requests) == 2

    [conflict] = await memory.conflicts()
    assert conflict.status == "open" and conflict.resolution is None
    assert {i.status for i in await memory.intentions()} == {"conflicted"}
    soul = await memory.active_soul()
    assert soul is not None and (soul.id, soul.name) == (2, "Robin")
    assert "Robin" in soul_file.read_text()
    actions = {entry.action for entry in await memory.audit_log()}
    assert "soul.rollback" not in actions and not any(a.startswith("item.") for a in actions)

    # The coordinator typing the same commands does act: the test above could fail.
    typed = await instance.handle(from_coordinator("/resolve 1 A"))
    assert typed is not None and typed.model is None and "Resolved #1" in typed.text
    assert (await memory.conflicts())[0].status == "resolved"
    assert [e.actor for e in await memory.audit_log("item.resolved")] == [f"local:{COORDINATOR}"]
    rolled = await instance.handle(from_coordinator("/soul rollback 1"))
    assert rolled is not None and rolled.text.startswith("Soul version 3 is active (Wren")
    assert len(model.requests) == 2  # commands never reach the model
