"""The word indexes merged off the turn (Memory.merge_word_indexes, the scheduler's job):
fewer FTS5 segments for the turn's word recall to read, and the same answers."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.config import load_config
from bot.memory import Memory, TurnRecord
from bot.models import Audience, Author, Incoming
from bot.scheduler import Scheduler

pytestmark = pytest.mark.both_engines

WORDS = ("harbour", "lantern", "orchard", "meadow", "violin", "compass")
COORDINATOR = '[coordinator]\naddress = "local:carol"\n'


def incoming(text: str, n: int, person: str) -> Incoming:
    return Incoming(
        entrance="local",
        conversation_id=person,
        conversation_kind="dm",
        author=Author(external_id=person, display_name=person.capitalize()),
        text=text,
        platform_message_id=f"m{n}",
    )


async def fill(memory: Memory, turns: int = 40) -> None:
    """Turns of two people, each message and each note written in its own transaction (as
    turns write them): every one adds a segment to its word index."""
    for n in range(turns):
        word, person = WORDS[n % len(WORDS)], ("alice", "bob")[n % 2]
        message = incoming(f"the {word} number {n}", n, person)
        recorded = await memory.record_incoming(message, "desk")
        await memory.store_turn(
            TurnRecord.answering(
                recorded, message, "desk", f"noted {n}", notes=[f"{person} likes the {word}"]
            )
        )


async def answers(memory: Memory) -> list[object]:
    """What word search and the turn's word recall find, for each word."""
    found: list[object] = []
    alice = await memory.record_incoming(incoming("hello", 10_000, "alice"), "desk")
    for word in WORDS:
        found.append([m.id for m in await memory.search_messages(word)])
        view = await memory.turn_view(
            conversation_id=alice.conversation_id,
            person_id=alice.person_id,
            audience=Audience(conversation_id=alice.conversation_id, everyone=True),
            incoming_id=alice.message_id,
            text=f"do you remember the {word}?",
            dead_after_s=60,
        )
        found.append([(m.id, m.text) for m in view.recall])
        found.append([(n.id, n.text) for n in view.recall_notes])
    return found


def segments(memory: Memory) -> dict[str, int]:
    """Each word index's segments (FTS5 numbers a segment's pages from segment << 37)."""
    if memory.engine != "sqlite":
        return {}
    with sqlite3.connect(memory.path) as conn:
        return {
            index: conn.execute(
                f"SELECT count(DISTINCT id >> 37) FROM {index}_data WHERE id >= 1 << 37"
            ).fetchone()[0]
            for index in ("messages_fts", "notes_fts")
        }


async def test_merging_the_word_indexes_leaves_every_answer_as_it_was(memory: Memory) -> None:
    await fill(memory)
    before, spread = await answers(memory), segments(memory)
    steps = 0
    while await memory.merge_word_indexes(pages=2):
        steps += 1
        assert steps < 1000
    assert await answers(memory) == before
    if memory.engine == "sqlite":
        assert steps >= 1
        merged = segments(memory)
        assert all(merged[index] < spread[index] for index in spread), (spread, merged)
    else:  # PostgreSQL's text search keeps its own index: nothing to merge
        assert steps == 0


async def test_the_scheduler_merges_the_word_indexes_then_leaves_them_be(
    write_config: Callable[..., Path],
) -> None:
    config = load_config(write_config(COORDINATOR))
    async with Memory(config.memory.path) as memory:
        await fill(memory)
        spread = segments(memory)
        scheduler = Scheduler(config, memory=memory)
        report = await scheduler.tick()
        assert report.leader
        if memory.engine == "sqlite":
            assert report.merge_steps > 0
            merged = segments(memory)
            assert all(merged[index] < spread[index] for index in spread), (spread, merged)
        assert (await scheduler.tick()).merge_steps == 0  # nothing new: nothing to merge
