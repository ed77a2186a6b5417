"""memory.db: schema, migrations, idempotent ingestion, concurrency across processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bot.memory import Memory, ReplyDelivery, SchemaTooNew, TurnRecord
from bot.memory.database import schema_files, split_statements
from bot.models import Author, Incoming
from tests.conftest import sqlite_memory_at_version

# Store contract: each test using `memory` runs on SQLite and on PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.both_engines


def incoming(
    text: str,
    *,
    pid: str | None = "m1",
    person: str = "alice",
    kind: str = "dm",
    conversation: str | None = None,
    entrance: str = "local",
) -> Incoming:
    return Incoming(
        entrance=entrance,
        conversation_id=conversation or person,
        conversation_kind=kind,  # type: ignore[arg-type]
        author=Author(external_id=person, display_name=person.capitalize()),
        text=text,
        platform_message_id=pid,
    )


async def test_new_database_gets_every_schema_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "memory.db"
    async with Memory(path) as memory:
        assert memory.schema_version == len(schema_files())
    conn = sqlite3.connect(path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "instances",
        "people",
        "identities",
        "conversations",
        "messages",
        "messages_fts",
        "notes",
        "intentions",
        "conflicts",
        "outbox",
        "soul_versions",
        "audit",
        "leases",
    } <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_reopening_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    async with Memory(path) as memory:
        await memory.record_incoming(incoming("hello"), "desk")
    async with Memory(path) as memory:
        assert memory.schema_version == len(schema_files())
        assert len(await memory.message_log()) == 1


async def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    async with Memory(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(schema_files()) + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew, match="upgrade MirrorOS"):
        async with Memory(path):
            pass


def test_statement_splitter_keeps_trigger_bodies_whole() -> None:
    statements = split_statements(
        textwrap.dedent("""
        -- a comment
        CREATE TABLE t (x);
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN
            INSERT INTO t VALUES (1);
            INSERT INTO t VALUES (2);
        END;
    """)
    )
    assert len(statements) == 2
    assert statements[1].endswith("END;")


async def test_the_same_platform_message_recorded_twice_is_one_row(memory: Memory) -> None:
    first = await memory.record_incoming(incoming("hello", pid="42"), "desk")
    second = await memory.record_incoming(incoming("hello", pid="42"), "desk")
    assert first.created and not second.created
    assert first.message_id == second.message_id
    assert len(await memory.message_log()) == 1


async def test_same_id_on_two_entrances_is_two_messages(memory: Memory) -> None:
    await memory.record_incoming(incoming("hi", pid="1", entrance="telegram"), "tg")
    await memory.record_incoming(incoming("hi", pid="1", entrance="discord"), "dc")
    assert len(await memory.message_log()) == 2


async def test_one_person_per_account_and_one_conversation_per_chat(memory: Memory) -> None:
    a = await memory.record_incoming(incoming("one", pid="1"), "desk")
    b = await memory.record_incoming(incoming("two", pid="2"), "desk")
    c = await memory.record_incoming(incoming("three", pid="3", person="bob"), "desk")
    assert a.person_id == b.person_id != c.person_id
    assert a.conversation_id == b.conversation_id != c.conversation_id


async def test_search_respects_privacy(memory: Memory) -> None:
    alice = await memory.record_incoming(incoming("my locker code is 4711", pid="1"), "phone")
    bob = await memory.record_incoming(incoming("hello", pid="2", person="bob"), "desk")
    await memory.record_incoming(
        incoming("the locker room is open", pid="3", kind="group", conversation="hall"), "desk"
    )
    everything = await memory.search_messages("locker")
    assert len(everything) == 2
    for_bob = await memory.search_messages("locker", audience=bob.person_id)
    assert [m.text for m in for_bob] == ["the locker room is open"]
    for_alice = await memory.search_messages("locker", audience=alice.person_id)
    assert len(for_alice) == 2


async def test_search_survives_fts_syntax_in_user_text(memory: Memory) -> None:
    await memory.record_incoming(incoming('what about "quotes" AND (parens) NEAR*', pid="1"), "d")
    assert len(await memory.search_messages('"quotes" AND (parens')) == 1
    assert await memory.search_messages("*** ") == []


async def test_a_turns_reply_is_stored_claimed_for_its_own_send(memory: Memory) -> None:
    """No courier takes a reply its turn is about to send (it would race the turn's send);
    if the turn's process dies first, its next start gives the row back."""
    message = incoming("what is your name?")
    recorded = await memory.record_incoming(message, "phone")
    stored = await memory.store_turn(
        TurnRecord.answering(
            recorded, message, "phone", "Wren.", delivery=ReplyDelivery("alice", "reply:m1")
        )
    )
    assert stored.outbox is not None and stored.outbox.status == "sending"
    assert not await memory.outbox_due("local")
    assert await memory.claim_outbox("local", "courier") == []
    assert await memory.release_claims("local", "phone") == 1
    [again] = await memory.claim_outbox("local", "courier")
    assert (again.id, again.text, again.payload["out_id"]) == (
        stored.outbox.id,
        "Wren.",
        stored.message_id,
    )


async def test_a_version_9_memory_keeps_its_replies_provenance_in_one_row_each(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    conn = sqlite_memory_at_version(path, 9)
    conn.execute(
        "INSERT INTO conversations (id, entrance, external_id, kind, created_at)"
        " VALUES (1, 'telegram', 'c1', 'dm', 0)"
    )
    conn.execute(
        "INSERT INTO messages (id, conversation_id, instance_id, entrance, direction, text,"
        " created_at, visibility) VALUES (7, 1, 'phone', 'telegram', 'out', 'hi', 0, 'private')"
    )
    conn.executemany(
        "INSERT INTO message_context (message_id, kind, row_id) VALUES (7, ?, ?)",
        [("soul", 2), ("message", 12), ("message", 3)],
    )
    conn.close()
    async with Memory(path) as memory:
        assert memory.schema_version == len(schema_files())
        provenance = await memory.provenance(7)
        assert await memory.provenance(8) is None
    assert provenance is not None
    assert provenance.rows == [("message", 3), ("message", 12), ("soul", 2)]


async def test_lease_is_held_by_one_holder_until_it_expires(memory: Memory) -> None:
    now = [1000.0]
    memory.clock = lambda: now[0]
    held, lease = await memory.acquire_lease("scheduler", "a", "h", 1, ttl_s=10)
    assert held and lease.epoch == 1
    held, lease = await memory.acquire_lease("scheduler", "b", "h", 2, ttl_s=10)
    assert not held and lease.holder == "a"
    now[0] += 11
    held, lease = await memory.acquire_lease("scheduler", "b", "h", 2, ttl_s=10)
    assert held and lease.epoch == 2
    await memory.release_lease("scheduler", "b")
    held, lease = await memory.acquire_lease("scheduler", "a", "h", 1, ttl_s=10)
    assert held and lease.epoch == 3


WRITER = """
import asyncio, sys
from bot.memory import Memory
from bot.models import Author, Incoming

async def main(path, name, count):
    async with Memory(path) as memory:
        for i in range(count):
            await memory.record_incoming(Incoming(
                entrance="local", conversation_id=name, author=Author(external_id=name),
                text=f"{name} {i}", platform_message_id=f"{name}-{i}"), name)
            if i % 10 == 0:
                await memory.heartbeat(name)
            await memory.audit(name, "test.write", str(i))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_two_processes_writing_at_once_lose_nothing(memory_location: Path | str) -> None:
    path = memory_location
    async with Memory(path):
        pass  # schema in place before the race, as `mirror` does on start
    count = 300
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name, str(count)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second")
    ]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    assert not any("locked" in e for e in errors)
    async with Memory(path) as memory:
        assert len(await memory.message_log(limit=10_000)) == 2 * count
        assert len(await memory.audit_log("test.write", limit=10_000)) == 2 * count


async def test_backup_is_a_consistent_copy(memory: Memory, tmp_path: Path) -> None:
    await memory.record_incoming(incoming("keep me"), "desk")
    await memory.backup(tmp_path / "copy.db")
    async with Memory(tmp_path / "copy.db") as copy:
        assert [m.text for m in await copy.message_log()] == ["keep me"]
