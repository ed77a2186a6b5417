"""Promises kept: an intention that falls due becomes a turn of the entrance owning its
conversation — one scheduler tick queues it, that instance's courier runs it through the
same pipeline, the platform gets exactly one follow-up in the persona's words; late when
the entrance was down, reported to the coordinator when it cannot be delivered."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import llm
from bot.config import Config
from bot.context import Context, render_messages
from bot.instance import Instance
from bot.scheduler import Scheduler
from tests.conftest import sqlite_memory_at_version
from tests.test_instance_door import Platform, said, tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config(tmp_path: Path, soul_file: Path) -> Iterator[Config]:
    with tiny_config(tmp_path, soul_file) as cfg:
        yield cfg


class Clock:
    """Memory's clock, moved by the test (the turn's "now" reads it too)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# Wednesday 2026-12-02 10:00 UTC: "Friday at 3pm" is 2026-12-04 15:00 UTC.
WEDNESDAY = 1_796_205_600.0
FRIDAY_3PM = WEDNESDAY + 2 * 86400 + 5 * 3600


@pytest.fixture
async def door(config: Config) -> AsyncIterator[tuple[Instance, Platform, Clock]]:
    platform = Platform()
    clock = Clock(WEDNESDAY)
    instance = Instance(config, instance_id="tiny", entrance="tiny", send=platform.send)
    instance.memory.clock = clock
    async with instance:
        yield instance, platform, clock


def intention_row(config: Config, intention_id: int) -> dict[str, Any]:
    with sqlite3.connect(config.memory.path) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM intentions WHERE id = ?", (intention_id,)).fetchone()
    return dict(row)


def outbox_keys(config: Config, prefix: str) -> list[str]:
    with sqlite3.connect(config.memory.path) as conn:
        found = conn.execute(
            "SELECT dedupe_key FROM outbox WHERE dedupe_key LIKE ? ORDER BY id", (f"{prefix}%",)
        ).fetchall()
    return [key for (key,) in found]


def text_to(platform: Platform, target: str, since: int) -> str:
    return " ".join(p["text"] for p in platform.sent[since:] if p["target"] == target)


async def test_a_promise_due_now_is_followed_up_once_in_its_conversation_in_the_persona_words(
    door: tuple[Instance, Platform, Clock], config: Config
) -> None:
    instance, platform, clock = door
    reply = await instance.handle(said("can you call me on Friday at 3pm?"))
    assert reply is not None
    [promise] = await instance.memory.intentions()
    assert promise.due_at is not None and promise.due_at.timestamp() == FRIDAY_3PM
    scheduler = Scheduler(config, memory=instance.memory)
    assert instance.courier is not None

    clock.now = FRIDAY_3PM - 60  # a minute early: nothing yet
    assert (await scheduler.tick()).due == []

    clock.now = FRIDAY_3PM + 5
    before = len(platform.sent)
    assert (await scheduler.tick()).due == [promise.id]
    await instance.courier.deliver_due()
    follow_up = text_to(platform, "c-ann", before)
    assert "you asked me to call you" in follow_up
    assert "can't place calls" in follow_up and "reminder" in follow_up
    assert "late" not in follow_up.lower()
    assert {p["target"] for p in platform.sent[before:]} == {"c-ann"}

    # Exactly once: another tick and another delivery say nothing more.
    sent = len(platform.sent)
    assert (await scheduler.tick()).due == []
    assert await instance.courier.deliver_due() == 0
    assert len(platform.sent) == sent
    row = intention_row(config, promise.id)
    assert row["status"] == "done" and row["follow_up"] == "sent"

    # Recorded with provenance: an outgoing message that drew on the promise.
    with sqlite3.connect(config.memory.path) as conn:
        (out_id,) = conn.execute(
            "SELECT json_extract(payload, '$.out_id') FROM outbox WHERE dedupe_key = ?",
            (f"due-reply:{promise.id}",),
        ).fetchone()
    provenance = await instance.memory.provenance(out_id)
    assert provenance is not None and ("intention", promise.id) in provenance.rows

    # Expiry spares what was followed up.
    clock.now += 30 * 86400
    assert (await scheduler.tick()).expired == []


async def test_a_follow_up_in_a_group_carries_nothing_private_from_elsewhere(
    door: tuple[Instance, Platform, Clock], config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, platform, clock = door
    await instance.handle(said("my locker code is PLUM-4242, keep it to yourself", pid="d1"))
    await instance.handle(
        said("can you remind us to book the room on Friday at 3pm?", kind="group", pid="g1")
    )
    [promise] = await instance.memory.intentions()
    seen: list[Context] = []
    complete = llm.complete

    async def watching(model: Any, context: Context) -> llm.Answer:
        seen.append(context)
        return await complete(model, context)

    monkeypatch.setattr(llm, "complete", watching)
    clock.now = FRIDAY_3PM + 5
    before = len(platform.sent)
    assert (await Scheduler(config, memory=instance.memory).tick()).due == [promise.id]
    assert instance.courier is not None
    await instance.courier.deliver_due()
    follow_up = text_to(platform, "g1", before)
    assert "book the room" in follow_up
    assert "PLUM-4242" not in follow_up
    [context] = seen
    assert context.due is not None and context.conversation_kind == "group"
    rendered = render_messages(context)
    assert "PLUM-4242" not in str(rendered)
    # What a real model is told: what fell due, and what it can and cannot do.
    system = rendered[0]["content"]
    assert "A promise fell due" in system and "book the room" in system
    assert "cannot place phone" in system
    assert rendered[-1]["content"].startswith("(internal event")


async def test_a_follow_up_after_downtime_says_it_is_late_and_expiry_waits_for_it(
    door: tuple[Instance, Platform, Clock], config: Config
) -> None:
    instance, platform, clock = door
    await instance.handle(said("can you call me on Friday at 3pm?"))
    [promise] = await instance.memory.intentions()
    config.scheduler.due_give_up_after_s = 3600
    scheduler = Scheduler(config, memory=instance.memory)

    clock.now = FRIDAY_3PM + 5
    assert (await scheduler.tick()).due == [promise.id]  # the entrance is not delivering
    clock.now += 8 * 86400  # past expiry and past the give-up delay
    report = await scheduler.tick()
    assert report.expired == [] and report.waiting == [promise.id]
    assert (await scheduler.tick()).waiting == []  # the coordinator is told once
    assert outbox_keys(config, "due-late:") == [f"due-late:{promise.id}"]

    before = len(platform.sent)
    assert instance.courier is not None
    await instance.courier.deliver_due()
    follow_up = text_to(platform, "c-ann", before)
    assert "late" in follow_up and "call you" in follow_up
    assert intention_row(config, promise.id)["status"] == "done"


async def test_a_conversation_the_platform_refuses_is_reported_once_not_retried_forever(
    door: tuple[Instance, Platform, Clock], config: Config
) -> None:
    instance, platform, clock = door
    await instance.handle(said("can you call me on Friday at 3pm?"))
    [promise] = await instance.memory.intentions()
    platform.fail_at = set(range(platform.calls + 1, platform.calls + 1000))
    clock.now = FRIDAY_3PM + 5
    assert (await Scheduler(config, memory=instance.memory).tick()).due == [promise.id]
    assert instance.courier is not None
    for _ in range(10):  # the backoff runs on memory's clock
        await instance.courier.deliver_due()
        clock.now += 3600
    row = intention_row(config, promise.id)
    assert row["follow_up"] == "unreachable" and row["status"] == "open"
    assert outbox_keys(config, "due-unreachable:") == [f"due-unreachable:{promise.id}"]
    assert outbox_keys(config, "due-reply:") == [f"due-reply:{promise.id}"]


async def test_upgrading_a_version_5_memory_follows_up_no_promise_already_past_due(
    tmp_path: Path, config: Config
) -> None:
    from bot.memory import Memory
    from bot.memory.database import schema_files

    path = tmp_path / "old.db"
    conn = sqlite_memory_at_version(path, 5)
    now = time.time()
    conn.execute(
        "INSERT INTO conversations (id, entrance, external_id, kind, created_at)"
        " VALUES (1, 'tiny', 'c-ann', 'dm', ?)",
        (now,),
    )
    for intention_id, due_at in [(1, now - 86400), (2, now + 86400)]:
        conn.execute(
            "INSERT INTO intentions (id, owner_instance, entrance, conversation_id, visibility,"
            " text, subject, due_at, created_at, updated_at)"
            " VALUES (?, 'tiny', 'tiny', 1, 'private', 'call Ann', 'call ann', ?, ?, ?)",
            (intention_id, due_at, now, now),
        )
    conn.close()
    async with Memory(path) as memory:
        assert memory.schema_version == len(schema_files())
        memory.clock = lambda: now + 2 * 86400
        config.memory.path = path
        # The old promise is left to expiry; the one still ahead is followed up when due.
        assert (await Scheduler(config, memory=memory).tick()).due == [2]


async def test_a_backlog_of_due_promises_is_queued_by_back_to_back_ticks(
    door: tuple[Instance, Platform, Clock], config: Config
) -> None:
    """More promises fall due at once than one tick's batch: the scheduler ticks again at
    once until they are all queued, rather than one batch per interval."""
    from bot.memory import NewIntention
    from bot.scheduler import DUE_BATCH

    instance, _, clock = door
    await instance.handle(said("hello, who are you?"))
    [message] = [m for m in await instance.memory.message_log(5) if m.direction == "in"]
    count = DUE_BATCH * 2 + 7
    for n in range(count):
        await instance.memory.add_intention(
            NewIntention(
                "tiny",
                "tiny",
                message.conversation_id,
                message.person_id,
                "private",
                f"water plant {n}",
                f"water plant {n}",
                FRIDAY_3PM + n,  # one second apart: no two collide
                1,
                None,
                None,
            )
        )
    clock.now = FRIDAY_3PM + count + 5
    scheduler = Scheduler(config, memory=instance.memory)
    await scheduler.run_tick()  # what the interval job runs
    assert len(outbox_keys(config, "due:")) == count
