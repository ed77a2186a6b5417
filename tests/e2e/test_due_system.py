"""A promise made through `mirror chat --jsonl` arrives at its due time, exactly once, with
real `mirror run scheduler` and `mirror chat` processes; with the entrance down at the due
minute, it arrives once when the entrance is back, saying it is late; and Telegram killed
(kill -9) at each step of the follow-up turn sends it once after its restart (at most twice
in the crash matrix's one documented window).

Friday 15:00 arrives in seconds: every process after the promise runs with
MIRROR_CLOCK_OFFSET_S (bot.clock), the seconds between now and the due time.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_crash_matrix import ALICE, TWICE_AT_MOST, polling, telegram
from tests.fakes.telegram_api import FakeTelegram
from tests.processes import ChatProcess, MirrorProcess
from tests.waiting import wait_until

SETTINGS = (
    '[coordinator]\naddress = "local:carol"\n\n[scheduler]\ninterval_s = 0.2\nlease_s = 1.0\n'
)


def db_rows(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


async def promise_made(config: Path, db: Path) -> tuple[int, float]:
    """Ann asks, through the terminal entrance, to be called on Friday at 3pm."""
    chat = await ChatProcess(config, "desk", "ann").start()
    try:
        reply = await chat.say("can you call me on Friday at 3pm?")
        assert "I'll call you" in reply["text"]
    finally:
        await chat.quit()
    [(intention_id, due_at)] = db_rows(db, "SELECT id, due_at FROM intentions")
    assert isinstance(intention_id, int) and isinstance(due_at, float)
    return intention_id, due_at


def follow_ups(chat: ChatProcess) -> list[str]:
    return [event["text"] for event in chat.events("outbox") if "call you" in event["text"]]


def keys(db: Path, prefix: str) -> list[object]:
    return [
        row[0]
        for row in db_rows(
            db, "SELECT dedupe_key FROM outbox WHERE dedupe_key LIKE ?", f"{prefix}%"
        )
    ]


async def ticks_after(db: Path, moment: float) -> None:
    """Wait until the scheduler ticks after `moment` (its heartbeat is its last tick, on its
    shifted clock): a second later, it has had several chances to queue anything twice."""
    await wait_until(
        lambda: db_rows(
            db, "SELECT 1 FROM instances WHERE id = 'scheduler' AND last_seen > ?", moment
        ),
        timeout=30,
        what="the scheduler ticking again",
    )


async def test_a_promise_made_in_chat_arrives_at_its_due_time_exactly_once(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(SETTINGS)
    db = tmp_path / "memory.db"
    intention_id, due_at = await promise_made(config, db)

    # Three seconds before Friday 15:00, for every process from now on.
    offset = str(due_at - time.time() - 3)
    env = {"MIRROR_CLOCK_OFFSET_S": offset}
    scheduler = await MirrorProcess("run", "scheduler", "--config", str(config), env=env).start()
    chat = await ChatProcess(config, "desk", "ann", env=env).start()
    try:
        await wait_until(lambda: follow_ups(chat), timeout=60, what="the follow-up")
        [(followed_at,)] = db_rows(
            db, "SELECT follow_up_at FROM intentions WHERE id = ?", intention_id
        )
        assert isinstance(followed_at, float) and followed_at >= due_at  # not before it fell due
        await ticks_after(db, followed_at + 1.0)
        [text] = follow_ups(chat)
        assert "you asked me to call you" in text and "can't place calls" in text
        assert "late" not in text
        assert keys(db, "due:") == [f"due:{intention_id}"]
        assert keys(db, "due-reply:") == [f"due-reply:{intention_id}"]
        assert db_rows(db, "SELECT status, follow_up FROM intentions") == [("done", "sent")]
    finally:
        await chat.quit()
        await scheduler.stop()


async def test_with_the_entrance_down_at_the_due_minute_the_follow_up_comes_late_once(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(SETTINGS)
    db = tmp_path / "memory.db"
    intention_id, due_at = await promise_made(config, db)

    # Friday 15:00 has just come, and nobody is at the terminal.
    env = {"MIRROR_CLOCK_OFFSET_S": str(due_at - time.time() + 1)}
    scheduler = await MirrorProcess("run", "scheduler", "--config", str(config), env=env).start()
    try:
        await wait_until(lambda: keys(db, "due:"), timeout=30, what="the follow-up queued")
        [(payload,)] = db_rows(db, "SELECT payload FROM outbox WHERE dedupe_key LIKE 'due:%'")
        assert json.loads(str(payload)) == {"kind": "due", "intention_id": intention_id}
        # Ten minutes later, Ann opens the terminal again.
        later = {"MIRROR_CLOCK_OFFSET_S": str(due_at - time.time() + 600)}
        chat = await ChatProcess(config, "desk", "ann", env=later).start()
        try:
            [text] = await wait_until(lambda: follow_ups(chat), timeout=60, what="the follow-up")
            assert "late" in text and "you asked me to call you" in text
            # Marked sent once the platform took it: just after the terminal showed it.
            [(sent_at,)] = await wait_until(
                lambda: db_rows(
                    db,
                    "SELECT sent_at FROM outbox WHERE dedupe_key = ? AND sent_at IS NOT NULL",
                    f"due-reply:{intention_id}",
                ),
                what="the follow-up marked sent",
            )
            assert isinstance(sent_at, float)
            await ticks_after(db, time.time() + float(env["MIRROR_CLOCK_OFFSET_S"]) + 1.0)
            assert len(follow_ups(chat)) == 1
            assert keys(db, "due-reply:") == [f"due-reply:{intention_id}"]
        finally:
            await chat.quit()
    finally:
        await scheduler.stop()


DUE_CELLS = ["during-model", "after-store", "during-send", "after-send"]


@pytest.mark.parametrize("cell", DUE_CELLS)
async def test_telegram_killed_during_a_follow_up_sends_it_once_after_restart(
    cell: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    db = tmp_path / "memory.db"
    async with FakeTelegram() as fake:
        config = write_config(
            SETTINGS + "\n[entrances.telegram]\nenabled = true\n"
            f'base_url = "{fake.base_url}"\nbase_file_url = "{fake.base_file_url}"\n'
        )
        first = await polling(telegram(config))
        try:
            fake.push_message(ALICE, "can you call me on Friday at 3pm?", user_id=ALICE)
            await wait_until(lambda: fake.sent, 60.0, "the promise")
        finally:
            assert await first.stop() == 0, first.tail()
        [(intention_id, due_at)] = db_rows(db, "SELECT id, due_at FROM intentions")
        assert isinstance(due_at, float)

        def follow_ups() -> list[str]:
            return [str(s["text"]) for s in fake.sent if "you asked me" in str(s.get("text"))]

        # Friday 15:00 has come: the entrance is killed in the middle of the follow-up.
        shifted = {"MIRROR_CLOCK_OFFSET_S": str(due_at - time.time() + 1)}
        scheduler = await MirrorProcess(
            "run", "scheduler", "--config", str(config), env=shifted
        ).start()
        try:
            # Not waited for to poll: the follow-up (queued by the scheduler) may be sent,
            # and the process killed, before it says it polls.
            crashing = await telegram(config, MIRROR_CRASH_AT=cell, **shifted).start()
            assert crashing.proc is not None
            code = await asyncio.wait_for(crashing.proc.wait(), 60)
            assert code == -signal.SIGKILL, crashing.tail()
            second = await polling(telegram(config, **shifted))
            try:
                await wait_until(follow_ups, 60.0, f"the follow-up after a kill at {cell}")

                def settled() -> bool:
                    return not db_rows(db, "SELECT 1 FROM outbox WHERE status <> 'sent'")

                await wait_until(settled, 30.0, "nothing left in the outbox")
                await ticks_after(db, time.time() + float(shifted["MIRROR_CLOCK_OFFSET_S"]) + 1)
                count = len(follow_ups())
                assert 1 <= count <= (2 if cell in TWICE_AT_MOST else 1), follow_ups()
                assert keys(db, "due-reply:") == [f"due-reply:{intention_id}"]
                assert db_rows(db, "SELECT status, follow_up FROM intentions") == [("done", "sent")]
            finally:
                assert await second.stop() == 0, second.tail()
        finally:
            await scheduler.stop()


async def test_a_scheduler_killed_while_queueing_a_follow_up_queues_it_once_after_restart(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(SETTINGS)
    db = tmp_path / "memory.db"
    intention_id, due_at = await promise_made(config, db)
    env = {"MIRROR_CLOCK_OFFSET_S": str(due_at - time.time() + 1)}
    chat = await ChatProcess(config, "desk", "ann", env=env).start()
    try:
        crashing = await MirrorProcess(
            "run",
            "scheduler",
            "--config",
            str(config),
            env={**env, "MIRROR_CRASH_AT": "during-due-queue"},
        ).start()
        assert crashing.proc is not None
        assert await asyncio.wait_for(crashing.proc.wait(), 60) == -signal.SIGKILL
        await crashing.stop()
        # Killed before its commit: nothing was claimed, nothing queued, nothing said.
        assert keys(db, "due:") == [] and follow_ups(chat) == []
        assert db_rows(db, "SELECT follow_up FROM intentions") == [(None,)]
        scheduler = await MirrorProcess(
            "run", "scheduler", "--config", str(config), env=env
        ).start()
        try:
            await wait_until(lambda: follow_ups(chat), timeout=60, what="the follow-up")
            await ticks_after(db, time.time() + float(env["MIRROR_CLOCK_OFFSET_S"]) + 1.0)
            assert len(follow_ups(chat)) == 1
            assert keys(db, "due:") == [f"due:{intention_id}"]
        finally:
            await scheduler.stop()
    finally:
        await chat.quit()
