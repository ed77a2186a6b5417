"""The first five minutes with MirrorOS, offline: real `mirror chat` processes, the shipped
config, one person on two instances. Each answer is checked for what it means, not its
exact words."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bot.cli import LOCAL_PERSON
from tests.conftest import ROOT
from tests.processes import ChatProcess


def shipped_config(tmp_path: Path, soul_file: Path) -> Path:
    shipped = (ROOT / "config" / "mirror.toml").read_text(encoding="utf-8")
    config = tmp_path / "mirror.toml"
    config.write_text(
        shipped.replace('"var/memory.db"', f'"{tmp_path / "memory.db"}"').replace(
            '"soul/SOUL.md"', f'"{soul_file}"'
        ),
        encoding="utf-8",
    )
    return config


def notes_in(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT text FROM notes ORDER BY id")]


async def test_first_five_minutes_with_two_instances(tmp_path: Path, soul_file: Path) -> None:
    config = shipped_config(tmp_path, soul_file)
    db = tmp_path / "memory.db"
    phone = await ChatProcess(config, "phone", LOCAL_PERSON).start()
    desk: ChatProcess | None = None
    try:
        hello = (await phone.say("hello"))["text"]
        assert "Wren" in hello  # greeted in the persona's own name
        assert "offline brain" in hello  # told once that it runs offline
        assert "Noted" not in hello and notes_in(db) == []  # a greeting is no fact

        named = (await phone.say("My name is Sam"))["text"]
        assert "Sam" in named and "offline brain" not in named
        with sqlite3.connect(db) as conn:
            assert ("Sam",) in conn.execute("SELECT name FROM people").fetchall()

        for fact in ["I'm allergic to peanuts", "I live in Porto"]:
            assert "Noted" in (await phone.say(fact))["text"]
        assert notes_in(db) == ["Sam is allergic to peanuts", "Sam lives in Porto"]

        known = (await phone.say("What do you know about me?"))["text"]
        assert "allergic to peanuts" in known and "Porto" in known

        promised = (await phone.say("Can you call me tomorrow at 3pm?"))["text"]
        assert promised.startswith("Yes, I'll call you") and "15:00" in promised

        alone = (await phone.say("Where else are you?"))["text"]
        assert "only instance" in alone and "scheduler" not in alone

        assert "You're welcome" in (await phone.say("thanks!"))["text"]

        desk = await ChatProcess(config, "desk", LOCAL_PERSON).start()
        greeted = (await desk.say("hi"))["text"]
        assert "Sam" in greeted  # the name given on the phone holds on the desk

        told = (await desk.say("What did I tell you on phone?"))["text"]
        assert "allergic to peanuts" in told and "Porto" in told
        assert "call me tomorrow" in told  # requests are things told, too
        assert "hello" not in told.lower().split("told me:")[1]  # not small talk…
        assert "What do you know" not in told  # …nor questions

        recalled = (await desk.say("What do you know about me?"))["text"]
        assert "allergic to peanuts" in recalled and "Porto" in recalled

        sides = (await desk.say("Where else are you?"))["text"]
        assert "'phone'" in sides and "online" in sides and "scheduler" not in sides

        helped = (await desk.say("/help"))["text"]
        assert "/link" in helped and "/pending" in helped  # the coordinator sees theirs

        pending = (await desk.say("/pending"))["text"]
        assert "Only my" not in pending and "I don't know the command" not in pending
    finally:
        assert await phone.quit() == 0
        if desk is not None:
            assert await desk.quit() == 0
