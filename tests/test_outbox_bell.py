"""The outbox bell (bot/memory/bell.py): a courier wakes when another process queues a row
for it, and not at the commits that queue nothing; a ring before the wait ends it at once.
On both engines (SQLite: a file heard through inotify; PostgreSQL: the NOTIFY's payload)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bot.memory import Memory
from bot.memory.bell import FileWatch
from bot.models import OutboxItem
from bot.outbox import OutboxCourier

pytestmark = [
    pytest.mark.both_engines,
    pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's"),
]


@pytest.fixture
async def other(memory: Memory) -> Any:
    """Another process's memory on the same store (for the bell, the same as one)."""
    store = Memory(memory.path if memory.engine == "sqlite" else str(memory.path))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def heard(memory: Memory) -> None:
    for _ in range(100):  # PostgreSQL's LISTEN connection opens on first use
        if memory.hears_outbox:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the outbox bell is not heard")


async def test_a_row_queued_elsewhere_ends_the_wait(memory: Memory, other: Memory) -> None:
    await heard(memory)
    await memory.wait_for_outbox(0)  # what rang before the test
    waiting = asyncio.create_task(memory.wait_for_outbox(60))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # nothing was queued: it waits
    await other.enqueue(entrance="telegram", target="chat-1", text="are you there?")
    await asyncio.wait_for(waiting, 10)  # a plain sleep would have lasted the minute


async def test_commits_that_queue_nothing_do_not_end_the_wait(
    memory: Memory, other: Memory
) -> None:
    await heard(memory)
    await memory.wait_for_outbox(0)
    started = time.monotonic()
    waiting = asyncio.create_task(memory.wait_for_outbox(1.0))
    for n in range(10):  # before the bell, each of these woke every courier
        await other.audit("test", "poke", str(n))
        await asyncio.sleep(0.03)
    await waiting
    assert time.monotonic() - started >= 0.9


async def test_a_ring_before_the_wait_ends_it_at_once(memory: Memory, other: Memory) -> None:
    await heard(memory)
    await memory.wait_for_outbox(0)
    await other.enqueue(entrance="discord", target="chan-1", text="hello")
    if memory.engine == "postgresql":
        await asyncio.sleep(0.5)  # the NOTIFY travels to the listener meanwhile
    started = time.monotonic()
    await memory.wait_for_outbox(60)
    assert time.monotonic() - started < 5


async def test_an_idle_courier_sleeps_through_others_commits_and_a_queued_row_goes_out(
    memory: Memory, other: Memory
) -> None:
    sent: list[OutboxItem] = []

    async def send(item: OutboxItem) -> str:
        sent.append(item)
        return "platform-1"

    looks = 0
    look = memory.outbox_due

    async def counted(*args: Any, **kwargs: Any) -> bool:
        nonlocal looks
        looks += 1
        return await look(*args, **kwargs)

    memory.outbox_due = counted  # type: ignore[method-assign]
    # recheck_s far away: only the bell can make it deliver within the test.
    courier = OutboxCourier(memory, "telegram", "courier-1", send, recheck_s=60)
    running = asyncio.create_task(courier.run())
    try:
        await heard(memory)
        await asyncio.sleep(0.3)  # its first look
        looks = 0
        for n in range(20):  # others' turns: commits that queue nothing for it
            await other.audit("test", "poke", str(n))
            await asyncio.sleep(0.05)
        # Before the bell: a look after each commit (20), paced by poll_s.
        assert looks <= 2
        await other.enqueue(entrance="telegram", target="chat-1", text="are you there?")
        for _ in range(100):
            if sent:
                break
            await asyncio.sleep(0.05)
        assert [item.text for item in sent] == ["are you there?"]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


def test_a_missing_file_cannot_be_watched(tmp_path: Path) -> None:
    assert FileWatch.open(tmp_path / "absent.db-bell") is None


async def test_a_watch_whose_file_is_deleted_says_it_is_no_longer_alive(tmp_path: Path) -> None:
    path = tmp_path / "memory.db-bell"
    path.write_bytes(b"")
    watch = FileWatch.open(path)
    assert watch is not None
    try:
        assert not await watch.wait(0.1)
        path.write_bytes(b"\n")
        assert await watch.wait(5)
        assert watch.alive
        path.unlink()
        await watch.wait(5)
        assert not watch.alive  # memory makes the file and a watch anew (`hears_outbox`)
    finally:
        watch.close()


async def test_a_cancelled_wait_is_cancelled_even_as_its_event_comes(tmp_path: Path) -> None:
    # asyncio.wait_for (Python 3.11) returned the event instead, and the courier that was
    # being stopped went on waiting: `mirror chat` hung at Ctrl-D, children of a killed
    # `mirror up` outlived it (seen in full test runs).
    path = tmp_path / "memory.db-bell"
    path.write_bytes(b"")
    for _ in range(20):
        watch = FileWatch.open(path)
        assert watch is not None
        waiting = asyncio.create_task(watch.wait(60))
        await asyncio.sleep(0.001)
        watch.close()  # sets the event the wait is on...
        waiting.cancel()  # ...and the stop comes in the same turn of the loop
        with pytest.raises(asyncio.CancelledError):
            await waiting


async def test_the_bell_file_takes_memory_dbs_permissions(tmp_path: Path) -> None:
    """As SQLite's -wal and -shm: a group that may write memory.db may ring and hear it."""
    from bot.memory.bell import Bell

    db = tmp_path / "memory.db"
    db.write_bytes(b"")
    db.chmod(0o660)
    bell = Bell(tmp_path / "memory.db-bell", db)
    bell.ring()
    assert (tmp_path / "memory.db-bell").stat().st_mode & 0o777 == 0o660
    assert bell.heard
    waiting = asyncio.create_task(bell.wait(10))
    await asyncio.sleep(0.05)
    bell.ring()
    assert await waiting
    bell.close()
