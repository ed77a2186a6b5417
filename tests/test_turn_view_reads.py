"""The turn's one read of memory (`Memory.turn_view`) in few statements, and the heap a
process settles after its first turn.

No timings here (bench/turn.py prints them): these pin the shapes behind the figures.
"""

from __future__ import annotations

import gc
import sqlite3
from pathlib import Path

import pytest

from bot.config import Config, load_config
from bot.memory import Memory
from bot.memory.hot_queries import RECENT_PER_INSTANCE_SQL
from bot.mind import Mind
from bot.models import Audience, Author, Incoming

pytestmark = pytest.mark.both_engines

# instance -> how many messages it recorded (one recorded none, one fewer than the limit)
WRITTEN = {"discord-1": 5, "email-1": 0, "local-1": 2, "telegram-1": 7}


def incoming(n: int, entrance: str, person: str = "alice") -> Incoming:
    return Incoming(
        entrance=entrance,
        conversation_id=f"dm-{person}",
        conversation_kind="dm",
        author=Author(external_id=person, display_name=person.capitalize()),
        text=f"note number {n} from {entrance}",
        platform_message_id=f"{entrance}-{n}",
    )


async def test_each_instance_in_the_view_holds_its_own_newest_messages(memory: Memory) -> None:
    recorded_ids: dict[str, list[int]] = {instance: [] for instance in WRITTEN}
    n = 0
    for instance in WRITTEN:
        await memory.register_instance(instance, instance.split("-")[0], "host", 1, None)
    # Interleaved, so that no instance's messages sit together in id order.
    for round_ in range(max(WRITTEN.values())):
        for instance, count in WRITTEN.items():
            if round_ < count:
                n += 1
                found = await memory.record_incoming(incoming(n, instance.split("-")[0]), instance)
                recorded_ids[instance].append(found.message_id)
    last = await memory.record_incoming(incoming(n + 1, "telegram", "bob"), "telegram-1")
    recorded_ids["telegram-1"].append(last.message_id)

    view = await memory.turn_view(
        conversation_id=last.conversation_id,
        person_id=last.person_id,
        audience=Audience(conversation_id=last.conversation_id, everyone=True),
        incoming_id=last.message_id,
        text="hello",
        dead_after_s=60,
    )

    assert [instance.id for instance in view.instances] == sorted(WRITTEN)
    for instance in view.instances:
        newest_first = recorded_ids[instance.id][::-1][:3]
        assert [m.id for m in instance.recent] == newest_first, instance.id
        assert all(m.instance_id == instance.id for m in instance.recent)


async def test_newest_per_instance_is_read_by_index_seeks(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    async with Memory(path) as memory:
        for instance in WRITTEN:
            await memory.register_instance(instance, instance.split("-")[0], "host", 1, None)
        for n in range(40):
            await memory.record_incoming(incoming(n, "discord"), "discord-1")
    conn = sqlite3.connect(path)
    try:
        plan = [
            row[3]
            for row in conn.execute(
                f"EXPLAIN QUERY PLAN {RECENT_PER_INSTANCE_SQL}",
                {"everyone": 0, "conversation": 1, "person": 1, "skip": 2},
            )
        ]
    finally:
        conn.close()
    scans = [line for line in plan if line.startswith("SCAN")]
    # The loop runs over the instances (a handful of rows), never over messages.
    assert scans and all(line.split()[1] == "instances" for line in scans), plan
    assert not any("TEMP B-TREE" in line for line in plan), plan


@pytest.fixture
def config(tmp_path: Path, soul_file: Path) -> Config:
    cfg = load_config(Path(__file__).parents[1] / "config" / "mirror.toml", db=tmp_path / "m.db")
    cfg.soul.path = soul_file
    cfg.recall.enabled = False  # the encoder is not what this is about
    return cfg


async def test_a_process_settles_its_heap_after_its_first_turn(
    memory: Memory, config: Config
) -> None:
    await memory.register_instance("local-1", "local", "host", 1, None)
    mind = Mind(memory, config, instance_id="local-1", entrance="local")
    reply = await mind.turn(incoming(1, "local"))
    assert reply is not None and reply.answered
    assert gc.get_freeze_count() > 0
