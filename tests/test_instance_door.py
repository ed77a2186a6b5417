"""`Instance` as the adapters' only door: replies split and sent in order through the
adapter's `send`, partial sends queued once, button presses and commands decided in bot/,
and `/help` generated from the command declarations for each speaker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config, load_config
from bot.entrance import EntranceSettings, Manifest, register, unregister
from bot.instance import Instance
from bot.memory import Memory
from bot.models import Author, Incoming
from bot.outbox import Button, Unreachable
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]


def words_of_three(text: str, limit: int) -> list[str]:
    """A tiny platform: three words a message."""
    words = text.split()
    return [" ".join(words[i : i + 3]) for i in range(0, len(words), 3)]


class TinySettings(EntranceSettings):
    pass


TINY = Manifest(
    name="tiny",
    label="Tiny",
    runtime="tests.test_instance_door:NoRuntime",
    settings=TinySettings,
    message_limit=3,
    split=words_of_three,
    capabilities=frozenset({"buttons"}),
)


class Platform:
    """What the adapter's `send` reached; fails on the parts listed in `fail_at`."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail_at: set[int] = set()
        self.calls = 0
        self.delay_s = 0.0  # how long the platform takes to accept each part
        self.no_such: set[str] = set()  # targets that are no chat of this platform

    async def send(
        self,
        target: str,
        text: str,
        *,
        reply_to: str | None = None,
        buttons: Sequence[Button] = (),
        key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str | None:
        self.calls += 1
        if target in self.no_such:
            raise Unreachable(f"{target!r} is no chat here")
        if self.calls in self.fail_at:
            raise ConnectionError("the platform is down")
        await asyncio.sleep(self.delay_s)
        self.sent.append(
            {"target": target, "text": text, "reply_to": reply_to, "buttons": list(buttons)}
        )
        return f"p{len(self.sent)}"


@contextlib.contextmanager
def tiny_config(tmp_path: Path, soul_file: Path) -> Iterator[Config]:
    """The shipped config on a fresh memory, with the tiny entrance registered and its
    account "boss" as the coordinator; times in UTC."""
    register(TINY)
    cfg = load_config(ROOT / "config" / "mirror.toml", db=tmp_path / "m.db")
    cfg.soul.path = soul_file
    cfg.coordinator.address = "tiny:boss"
    cfg.persona.timezone = "UTC"
    try:
        yield cfg
    finally:
        unregister("tiny")


@pytest.fixture
def config(tmp_path: Path, soul_file: Path) -> Iterator[Config]:
    with tiny_config(tmp_path, soul_file) as cfg:
        yield cfg


@pytest.fixture
async def door(config: Config) -> AsyncIterator[tuple[Instance, Platform]]:
    platform = Platform()
    instance = Instance(config, instance_id="tiny", entrance="tiny", send=platform.send)
    async with instance:
        yield instance, platform


def said(text: str, *, person: str = "ann", kind: str = "dm", pid: str = "m1") -> Incoming:
    return Incoming(
        entrance="tiny",
        conversation_id=f"c-{person}" if kind == "dm" else "g1",
        conversation_kind=kind,  # type: ignore[arg-type]
        author=Author(external_id=person, display_name=person.title()),
        text=text,
        platform_message_id=pid,
    )


def pending(config: Config) -> list[tuple[str, str, dict[str, Any]]]:
    """Outbox rows still to send: (target, text, payload)."""
    with sqlite3.connect(config.memory.path) as conn:
        found = conn.execute(
            "SELECT target, text, payload FROM outbox WHERE status = 'pending' ORDER BY id"
        ).fetchall()
    return [(target, text, json.loads(payload or "{}")) for target, text, payload in found]


async def test_a_reply_is_split_to_the_limit_and_sent_in_order_replying_to_the_message(
    door: tuple[Instance, Platform],
) -> None:
    instance, platform = door
    reply = await instance.handle(said("hello, who are you?"))
    assert reply is not None and reply.text
    parts = platform.sent
    assert len(parts) > 1 and all(len(p["text"].split()) <= 3 for p in parts)
    assert " ".join(p["text"] for p in parts) == " ".join(reply.text.split())
    assert [p["reply_to"] for p in parts] == ["m1"] + [None] * (len(parts) - 1)
    assert {p["target"] for p in parts} == {"c-ann"}


async def test_what_fails_mid_reply_is_queued_once_and_what_arrived_is_not_repeated(
    door: tuple[Instance, Platform], config: Config
) -> None:
    instance, platform = door
    platform.fail_at = {3}
    reply = await instance.handle(said("hello, who are you?"))
    assert reply is not None
    arrived = [p["text"] for p in platform.sent]
    assert len(arrived) == 2
    [(target, text, payload)] = pending(config)
    assert target == "c-ann" and payload == {}  # the rest needs no reply-to
    assert " ".join([*arrived, text]).split() == reply.text.split()


async def test_a_reply_that_cannot_start_is_queued_with_its_reply_to(
    door: tuple[Instance, Platform], config: Config
) -> None:
    instance, platform = door
    platform.fail_at = {1}
    reply = await instance.handle(said("hello, who are you?"))
    assert reply is not None and platform.sent == []
    [(target, text, payload)] = pending(config)  # the reply's own row, tried again later
    assert target == "c-ann" and text.split() == reply.text.split()
    assert payload["reply_to"] == "m1" and payload["out_id"] == reply.message_id


async def test_outbox_rows_go_through_the_same_send_with_buttons_on_the_last_part(
    door: tuple[Instance, Platform],
) -> None:
    instance, platform = door
    courier = instance.deliver_outbox()
    await instance.memory.enqueue(
        entrance="tiny",
        target="boss",
        text="one two three four five",
        payload={"buttons": [{"label": "Keep A", "data": "mirror:resolve:1:A"}]},
        dedupe_key="t1",
    )
    # The running courier (it heard the enqueue) and this call race to claim the row:
    # whichever wins, it goes out once, in two parts.
    await courier.deliver_due()
    await wait_until(lambda: len(platform.sent) >= 2, what=lambda: f"two parts: {platform.sent}")
    assert [p["text"] for p in platform.sent] == ["one two three", "four five"]
    assert platform.sent[0]["buttons"] == []
    assert platform.sent[1]["buttons"] == [Button("Keep A", "mirror:resolve:1:A")]


async def test_a_stopping_entrance_first_finishes_the_row_its_courier_is_sending(
    config: Config,
) -> None:
    platform = Platform()
    platform.delay_s = 0.1
    instance = Instance(config, instance_id="tiny", entrance="tiny", send=platform.send)
    await instance.start()
    instance.deliver_outbox()
    await instance.memory.enqueue(
        entrance="tiny", target="boss", text="one two three four five six seven", dedupe_key="t1"
    )
    await wait_until(lambda: platform.sent, what="the courier's first part")
    await instance.stop()  # mid-row: the rest of it goes out before the entrance stops
    assert [p["text"] for p in platform.sent] == ["one two three", "four five six", "seven"]
    with sqlite3.connect(config.memory.path) as conn:
        assert conn.execute("SELECT status FROM outbox").fetchall() == [("sent",)]


async def test_a_row_for_a_target_that_cannot_exist_fails_at_once_without_retries(
    door: tuple[Instance, Platform], config: Config
) -> None:
    instance, platform = door
    platform.no_such = {"tiny-group-7"}
    courier = instance.courier  # its loop is not started: this test delivers
    assert courier is not None
    await instance.memory.enqueue(entrance="tiny", target="tiny-group-7", text="hi", dedupe_key="g")
    await instance.memory.enqueue(entrance="tiny", target="c-ann", text="hello", dedupe_key="a")
    assert await courier.deliver_due() == 1
    with sqlite3.connect(config.memory.path) as conn:
        rows = conn.execute("SELECT target, status, attempts FROM outbox ORDER BY id").fetchall()
    assert rows == [("tiny-group-7", "failed", 1), ("c-ann", "sent", 1)]
    assert platform.calls == 2  # one try each: the first is not tried again later


async def test_help_shows_each_speaker_what_they_may_use(door: tuple[Instance, Platform]) -> None:
    instance, _ = door
    person = await instance.handle(said("/help"))
    boss = await instance.handle(said("/help", person="boss", pid="m2"))
    assert person is not None and boss is not None
    assert "/link" in person.text and "/resolve" not in person.text
    assert "/soul" not in person.text
    assert "/resolve" in boss.text and "/soul" in boss.text and "/link" in boss.text


async def test_a_button_press_is_decided_in_bot_not_in_the_adapter(
    door: tuple[Instance, Platform],
) -> None:
    instance, _ = door
    stranger = await instance.press("eve", "mirror:resolve:1:A", conversation="c-eve", private=True)
    assert stranger.status == "refused" and "coordinator" in stranger.text
    in_group = await instance.press("boss", "mirror:resolve:1:A", conversation="g1", private=False)
    assert in_group.status == "refused" and "private chat" in in_group.text
    boss = await instance.press("boss", "mirror:resolve:1:A", conversation="c-boss", private=True)
    assert boss.status == "invalid" and "no item 1" in boss.text
    refusals = await instance.memory.audit_log("coordinator.refused")
    assert {entry.actor for entry in refusals} == {"tiny:eve", "tiny:boss"}


async def test_commands_in_a_group_that_show_private_items_are_refused(
    door: tuple[Instance, Platform],
) -> None:
    instance, platform = door
    reply = await instance.handle(said("/pending", person="boss", kind="group"))
    assert reply is not None and "private chat" in reply.text
    assert platform.sent and platform.sent[0]["target"] == "g1"


async def test_a_command_delivered_twice_is_recorded_once_and_answered_once(
    door: tuple[Instance, Platform], config: Config
) -> None:
    instance, platform = door
    soul = said("/soul show", person="eve", pid="m9")
    first = await instance.handle(soul)
    assert first is not None and first.text == "Only my admins can do that."
    assert await instance.handle(soul) is None  # the platform delivered it again
    assert [p["text"] for p in platform.sent] == ["Only my admins", "can do that."]
    assert len(await instance.memory.audit_log("admin.refused")) == 1
    with sqlite3.connect(config.memory.path) as conn:
        rows = conn.execute(
            "SELECT direction, status FROM messages WHERE text = '/soul show'"
        ).fetchall()
    assert rows == [("in", "answered")]


async def test_a_sent_reply_is_marked_sent_with_the_platforms_message_id(
    door: tuple[Instance, Platform], config: Config
) -> None:
    instance, _ = door
    reply = await instance.handle(said("hello, who are you?"))
    assert reply is not None and reply.message_id is not None and reply.outbox is not None
    with sqlite3.connect(config.memory.path) as conn:
        status, platform_id = conn.execute(
            "SELECT status, platform_message_id FROM messages WHERE id = ?", (reply.message_id,)
        ).fetchone()
        outbox_status = conn.execute(
            "SELECT status FROM outbox WHERE id = ?", (reply.outbox.id,)
        ).fetchone()[0]
    assert (status, platform_id, outbox_status) == ("sent", "p1", "sent")


async def test_a_turn_a_dead_process_left_is_answered_once_by_the_next_holder(
    config: Config,
) -> None:
    # A process recorded three messages and died before answering them.
    async with Memory(config.memory.path) as memory:
        now = memory.now
        for pid, age in (("fresh", 5), ("late", 900), ("ancient", 7 * 3600)):
            incoming = said(f"hello, who are you? ({pid})", pid=pid)
            await memory.record_incoming(
                incoming.model_copy(update={"received_at": datetime.fromtimestamp(now - age, UTC)}),
                "tiny",
            )
    platform = Platform()
    async with Instance(config, instance_id="tiny", entrance="tiny", send=platform.send) as tiny:
        tiny.deliver_outbox()

        async def answered() -> list[dict[str, Any]]:
            firsts = [p for p in platform.sent if p["reply_to"] in ("fresh", "late")]
            return firsts if len(firsts) == 2 else []

        firsts = await wait_until(answered, 15.0, "both unfinished turns answered")
        late = next(p for p in firsts if p["reply_to"] == "late")
        assert late["text"].startswith("Sorry for the")  # a late answer says so
        assert not [p for p in platform.sent if p["reply_to"] == "ancient"]
        # Answered once: another pass finds nothing to do.
        assert await tiny.resume_turns(stale_after_s=0) == 0
        statuses = {
            m.platform_message_id: m.status
            for m in await tiny.memory.message_log(20)
            if m.direction == "in"
        }
        assert statuses == {"fresh": "answered", "late": "answered", "ancient": "missed"}
        [notice] = [r for r in await tiny.memory.outbox() if r.dedupe_key.startswith("missed:")]
        assert notice.target == "boss" and "1 message(s) on Tiny" in notice.text
        assert "ancient" not in notice.text and "hello" not in notice.text  # no content


async def test_a_turn_every_model_failed_is_tried_again_with_backoff_then_answered(
    door: tuple[Instance, Platform], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot import llm

    instance, platform = door
    real = llm.complete
    calls = 0

    async def down_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise llm.ModelUnavailable("every model failed")
        return await real(*args, **kwargs)

    monkeypatch.setattr(llm, "complete", down_once)
    first = await instance.handle(said("what is your name?", pid="m5"))
    assert first is not None and not first.answered  # the apology, stored and sent
    assert await instance.resume_turns(stale_after_s=0) == 0  # not due yet: backoff
    instance.memory.clock = lambda: time.time() + 120  # retry_after_s (60) has passed
    assert await instance.resume_turns(stale_after_s=0) == 1
    replies = [p["text"] for p in platform.sent if p["reply_to"] == "m5"]
    assert len(replies) == 2 and replies[0].startswith("Sorry") and replies[1].startswith("I'm")
    statuses = [m.status for m in await instance.memory.message_log(10) if m.direction == "in"]
    assert statuses == ["answered"]


async def test_memory_that_cannot_be_written_at_start_leaves_nothing_running(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It once left aiosqlite's threads running: the process printed a traceback and hung."""
    from bot.memory import MemoryUnavailable

    def workers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if "_connection_worker_thread" in t.name]

    before = set(workers())

    async def full_disk(self: Memory, *args: Any) -> Any:
        raise MemoryUnavailable(f"cannot write {self.path}: database or disk is full")

    monkeypatch.setattr(Memory, "register_instance", full_disk)
    instance = Instance(config, instance_id="tiny", entrance="tiny", send=Platform().send)
    with pytest.raises(MemoryUnavailable):
        await instance.start()
    await wait_until(lambda: not (set(workers()) - before), 5.0, "memory's threads ended")
