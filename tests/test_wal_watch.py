"""Memory on SQLite hears other processes' commits (bot/memory/wal_watch.py): a poller that
waits for a change sleeps until one comes, and an idle outbox courier stops waking up 20
times a second to look."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bot.memory import Memory
from bot.memory.wal_watch import WalWatch
from bot.models import OutboxItem
from bot.outbox import OutboxCourier

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's")


def commit_in_another_process(path: Path) -> None:
    code = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute(\"INSERT INTO audit (at, actor, action) VALUES (1, 'test', 'poke')\")\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=30)


async def test_a_commit_by_another_process_ends_the_wait(memory: Memory) -> None:
    assert memory.hears_changes
    seen = memory.data_version_now()
    waiting = asyncio.create_task(memory.wait_for_change(60, seen=seen))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # nothing was written: it waits
    await asyncio.to_thread(commit_in_another_process, memory.path)
    await asyncio.wait_for(waiting, 10)  # a plain sleep would have lasted the minute
    assert memory.data_version_now() not in (None, seen)  # and the commit is visible


async def test_a_wait_without_writes_lasts_its_timeout(memory: Memory) -> None:
    assert memory.hears_changes
    started = time.monotonic()
    await memory.wait_for_change(0.3, seen=memory.data_version_now())
    assert time.monotonic() - started >= 0.25


async def test_a_commit_made_before_the_wait_ends_it_at_once(memory: Memory) -> None:
    seen = memory.data_version_now()
    await asyncio.to_thread(commit_in_another_process, memory.path)
    await asyncio.wait_for(memory.wait_for_change(60, seen=seen), 5)


async def test_an_idle_courier_sleeps_and_a_queued_row_still_goes_out_at_once(
    memory: Memory,
) -> None:
    sent: list[OutboxItem] = []

    async def send(item: OutboxItem) -> str:
        sent.append(item)
        return "platform-1"

    looks = 0
    peek = memory.data_version_now

    def counted() -> Any:
        nonlocal looks
        looks += 1
        return peek()

    memory.data_version_now = counted  # type: ignore[method-assign]
    # recheck_s far away: only a heard change can make it deliver within the test.
    courier = OutboxCourier(memory, "telegram", "courier-1", send, recheck_s=60)
    running = asyncio.create_task(courier.run())
    other = Memory(memory.path)
    await other.open()
    try:
        await asyncio.sleep(0.3)  # its first look
        looks = 0
        await asyncio.sleep(1.0)
        # Before: a look every poll_s (50 ms), 20 a second while nothing happened.
        assert looks <= 3
        await other.enqueue(entrance="telegram", target="chat-1", text="are you there?")
        for _ in range(100):
            if sent:
                break
            await asyncio.sleep(0.05)
        assert [item.text for item in sent] == ["are you there?"]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await other.close()


def test_a_missing_file_cannot_be_watched(tmp_path: Path) -> None:
    assert WalWatch.open(tmp_path / "absent.db-wal") is None


async def test_a_watch_whose_file_is_deleted_says_it_is_no_longer_alive(tmp_path: Path) -> None:
    path = tmp_path / "memory.db-wal"
    path.write_bytes(b"")
    watch = WalWatch.open(path)
    assert watch is not None
    try:
        assert not await watch.wait(0.1)
        path.write_bytes(b"frames")
        assert await watch.wait(5)
        assert watch.alive
        path.unlink()
        await watch.wait(5)
        assert not watch.alive  # memory opens a new one (`Memory.hears_changes`)
    finally:
        watch.close()


async def test_a_cancelled_wait_is_cancelled_even_as_its_event_comes(tmp_path: Path) -> None:
    # asyncio.wait_for (Python 3.11) returned the event instead, and the courier that was
    # being stopped went on waiting: `mirror chat` hung at Ctrl-D, children of a killed
    # `mirror up` outlived it (seen in full test runs).
    path = tmp_path / "memory.db-wal"
    path.write_bytes(b"")
    for _ in range(20):
        watch = WalWatch.open(path)
        assert watch is not None
        waiting = asyncio.create_task(watch.wait(60))
        await asyncio.sleep(0.001)
        watch.close()  # sets the event the wait is on...
        waiting.cancel()  # ...and the stop comes in the same turn of the loop
        with pytest.raises(asyncio.CancelledError):
            await waiting
