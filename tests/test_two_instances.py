"""Two real `mirror chat` processes on one memory.db are two instances of one persona."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import run_mirror
from tests.processes import ChatProcess
from tests.waiting import wait_until


async def test_fact_told_on_phone_is_known_on_desk_but_private_to_alice(
    write_config: Callable[..., Path],
) -> None:
    config = write_config()
    phone = await ChatProcess(config, "phone", "alice").start()
    desk = await ChatProcess(config, "desk", "alice").start()
    try:
        told = await phone.say("My locker code is 4711.")
        assert "offline brain" in told["text"]  # said once per conversation
        assert "offline brain" not in (await phone.say("thanks"))["text"]

        answer = await desk.say("What did I tell you on phone?")
        assert "locker code is 4711" in answer["text"]

        where = await desk.say("Where else are you?")
        assert "'phone'" in where["text"] and "online" in where["text"]
    finally:
        await phone.quit()
        await desk.quit()

    bob = await ChatProcess(config, "desk", "bob").start()
    try:
        answer = await bob.say("What did I tell you on phone?")
        assert "4711" not in answer["text"]
        where = await bob.say("Where else are you?")
        assert "4711" not in where["text"]
        assert "private conversation" in where["text"]
    finally:
        await bob.quit()


async def test_soul_edit_shows_in_the_next_reply_without_restart(
    write_config: Callable[..., Path], soul_file: Path
) -> None:
    config = write_config()
    chat = await ChatProcess(config, "phone", "alice").start()
    try:
        assert "Wren" in (await chat.say("What is your name?"))["text"]
        soul_file.write_text(soul_file.read_text().replace("Wren", "Kestrel"))
        replies: list[str] = []

        async def says_the_new_name() -> bool:
            replies.append((await chat.say("What is your name?"))["text"])
            return "Kestrel" in replies[-1]

        await wait_until(
            says_the_new_name, 10, lambda: f"Kestrel in a reply; the last: {replies[-1]!r}", 0.2
        )
    finally:
        assert await chat.quit() == 0

    history = json.loads(run_mirror("soul", "history", "--json", "--config", str(config)).stdout)
    assert [v["name"] for v in history] == ["Kestrel", "Wren"]


async def test_memory_why_shows_soul_and_context_rows(write_config: Callable[..., Path]) -> None:
    config = write_config()
    chat = await ChatProcess(config, "phone", "alice").start()
    try:
        await chat.say("The heron is back on the pond.")
        reply = await chat.say("What have you promised?")
    finally:
        await chat.quit()
    why = json.loads(
        run_mirror(
            "memory", "why", str(reply["message_id"]), "--json", "--config", str(config)
        ).stdout
    )
    assert why["soul_version"] == 1
    assert why["model"] == "mirror/offline"
    kinds = {row["kind"] for row in why["context"]}
    assert {"soul", "message"} <= kinds
    text = run_mirror("memory", "why", str(reply["message_id"]), "--config", str(config)).stdout
    assert "soul version  1" in text
    assert run_mirror("memory", "why", "9999", "--config", str(config)).returncode == 2


async def test_sigterm_stops_chat_cleanly_and_marks_instance_stopped(
    write_config: Callable[..., Path],
) -> None:
    config = write_config()
    chat = await ChatProcess(config, "phone", "alice").start()
    await chat.say("hello")
    assert await chat.stop() == 0
    status = json.loads(run_mirror("status", "--json", "--config", str(config)).stdout)
    [instance] = status["instances"]
    assert instance["id"] == "phone" and instance["status"] == "stopped"
