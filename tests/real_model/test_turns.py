"""What only a real model shows, one turn at a time: a real tokenizer and window, JSON cut off
by the token limit, a slow single-request server shared by four instances, a client that
gives up while the server goes on generating, and usage that costs nothing.

Turns run in real `mirror chat --jsonl` processes (and, where memory must be filled first,
an in-process `Instance` on the offline brain that then switches to the real model). The
content of SmolLM2-135M's answers is not judged: only that a real model answered, in prose.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_config
from bot.instance import Instance
from bot.models import Author, Incoming
from tests.processes import ChatProcess
from tests.real_model.conftest import MAX_TOKENS, MODEL, N_CTX, LlamaServer, model_toml

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(900)]

TURN_S = 240.0  # one turn, queued behind up to three others on a ~60 tokens/s CPU model


def query(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def usage(db: Path) -> list[tuple[str, int, int, float]]:
    """(model, prompt tokens, completion tokens, cost) of every model call, in order."""
    return [
        (str(model), int(p), int(c), float(cost))
        for model, p, c, cost in query(
            db,
            "SELECT model, prompt_tokens, completion_tokens, cost_usd FROM model_usage ORDER BY id",
        )
    ]


@pytest.fixture
def config_for(write_config: Callable[..., Path], llama_server: LlamaServer) -> Callable[..., Path]:
    def write(**model: Any) -> Path:
        return write_config(model_toml(llama_server, **model))

    return write


def looks_like_json(text: str) -> bool:
    return text.lstrip().startswith(("{", "```"))


async def test_a_turn_is_answered_by_the_real_model_and_its_usage_is_recorded_at_zero_cost(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    chat = await ChatProcess(config_for(), "desk", "ann").start()
    try:
        reply = await chat.say("Hello! Who are you, in one sentence?", timeout=TURN_S)
    finally:
        await chat.stop()
    assert reply["model"] == MODEL, reply
    assert reply["text"].strip() and not looks_like_json(reply["text"])
    [(model, prompt, completion, cost)] = usage(tmp_path / "memory.db")
    assert model == MODEL
    assert 0 < prompt <= N_CTX - MAX_TOKENS and 0 < completion <= MAX_TOKENS
    assert cost == 0.0  # a local model: litellm knows no price for it
    [(status,)] = query(tmp_path / "memory.db", "SELECT status FROM messages WHERE direction='in'")
    assert status == "answered"


async def test_json_cut_off_by_the_token_limit_reaches_the_person_as_prose(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    # Six tokens: `{"reply": "` takes four, so the JSON cannot close (llama.cpp's grammar
    # keeps it JSON until the limit cuts it).
    chat = await ChatProcess(config_for(max_tokens=6), "desk", "bo").start()
    try:
        reply = await chat.say("Tell me about the river near your home.", timeout=TURN_S)
    finally:
        await chat.stop()
    assert reply["model"] == MODEL, reply
    assert reply["text"].strip() and not looks_like_json(reply["text"]), reply["text"]
    [(model, _, completion, _)] = usage(tmp_path / "memory.db")
    assert model == MODEL and completion <= 6
    [(_, text)] = query(
        tmp_path / "memory.db", "SELECT status, text FROM messages WHERE direction = 'out'"
    )
    assert text == reply["text"]


async def test_four_instances_queue_on_the_single_request_server_and_no_turn_is_lost(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    config = config_for()
    people = ["ann", "bo", "cy", "di"]
    chats = await asyncio.gather(
        *(ChatProcess(config, f"desk-{person}", person).start() for person in people)
    )
    try:
        replies = await asyncio.gather(
            *(
                chat.say(f"Hi, I'm {person.title()}. What should I call you?", timeout=TURN_S)
                for chat, person in zip(chats, people, strict=True)
            )
        )
    finally:
        await asyncio.gather(*(chat.stop() for chat in chats))
    assert [reply["model"] for reply in replies] == [MODEL] * 4, replies
    db = tmp_path / "memory.db"
    statuses = query(db, "SELECT instance_id, status FROM messages WHERE direction = 'in'")
    assert sorted(statuses) == [(f"desk-{p}", "answered") for p in people]
    assert [row[0] for row in usage(db)] == [MODEL] * 4


async def test_a_turn_whose_client_times_out_gets_an_apology_and_the_next_turn_the_model(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    # The client gives up after 0.3 s; llama.cpp goes on generating that answer, so the
    # next request queues behind it (and must still be answered).
    impatient = await ChatProcess(config_for(timeout_s=0.3, retries=0), "hasty", "ann").start()
    try:
        apology = await impatient.say("Write me a long poem about herons.", timeout=TURN_S)
    finally:
        await impatient.stop()
    assert apology["model"] != MODEL, apology  # the apology, from the offline brain
    patient = await ChatProcess(config_for(), "calm", "ann").start()
    try:
        answer = await patient.say("Are you there now?", timeout=TURN_S)
    finally:
        await patient.stop()
    assert answer["model"] == MODEL, answer
    db = tmp_path / "memory.db"
    rows = query(
        db,
        "SELECT instance_id, direction, status FROM messages ORDER BY id",
    )
    # Both messages recorded, both answered by something: the first by an apology.
    assert [(i, d) for i, d, _ in rows] == [
        ("hasty", "in"),
        ("hasty", "out"),
        ("calm", "in"),
        ("calm", "out"),
    ]
    assert rows[0][2] != "answered" and rows[2][2] == "answered"


# The window: a long conversation, measured in the model's own tokens ----------------------


@pytest.fixture
async def long_conversation(
    write_config: Callable[..., Path], llama_server: LlamaServer, tmp_path: Path
) -> AsyncIterator[tuple[Instance, Path]]:
    """An in-process instance whose conversation with Ann already holds 40 long messages
    (written on the offline brain, in milliseconds), then switched to the real model."""
    # No rate limit: forty messages in a second are the test's, not a flood.
    path = write_config(model_toml(llama_server) + "[limits]\nperson_per_minute = 0\n")
    config = load_config(path)
    real = config.model
    config.model = real.model_copy(update={"name": "mirror/offline"})
    instance = Instance(config, instance_id="desk", entrance="local", watch_soul=False)
    async with instance:
        for n in range(40):
            text = (
                f"Note {n}: the heron colony by the old mill had {n + 3} nests this spring, "
                "and the water level in the reed beds rose after the storms of the week; "
                "the warden counted eggs, fledglings, and one very loud grey heron twice."
            )
            await instance.handle(said(text, n), deliver=False)
        config.model = real
        yield instance, tmp_path / "memory.db"


def said(text: str, n: int) -> Incoming:
    return Incoming(
        entrance="local",
        conversation_id="ann-desk",
        conversation_kind="dm",
        author=Author(external_id="ann", display_name="Ann"),
        text=text,
        platform_message_id=f"m{n}",
    )


async def test_a_long_conversation_is_cut_to_the_model_window_in_its_real_tokens(
    long_conversation: tuple[Instance, Path],
) -> None:
    instance, db = long_conversation
    before = len(usage(db))
    reply = await instance.handle(said("How many nests were there in the end?", 99), deliver=False)
    assert reply is not None and reply.model == MODEL, reply
    [(model, prompt, _, _)] = usage(db)[before:]
    # The server counted the prompt itself: it fits beside the answer, and the window is
    # used, not left mostly empty by a cautious estimate.
    assert model == MODEL
    assert prompt + MAX_TOKENS <= N_CTX
    assert prompt >= N_CTX - MAX_TOKENS - 400, prompt


async def test_without_the_window_the_same_conversation_overflows_the_model(
    long_conversation: tuple[Instance, Path],
) -> None:
    """The control: the per-section estimates alone send more than the model takes (so
    the test above shows the window at work, not an accident of sizes)."""
    instance, _ = long_conversation
    instance.config.model = instance.config.model.model_copy(
        update={"context_tokens": None, "tokenizer": None, "retries": 0}
    )
    reply = await instance.handle(said("How many nests were there in the end?", 99), deliver=False)
    assert reply is not None and reply.model != MODEL, reply
