"""`mirror memory migrate`: a prefilled SQLite memory into empty PostgreSQL and back, every
table verified (rows and checksum), ids kept and the persona able to go on writing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.memory import Memory, NewIntention, ReplyDelivery, TurnRecord, pg_copy
from bot.memory.pg_copy import catalog, checksums
from bot.models import Author, Incoming
from tests.conftest import run_mirror
from tests.pg import Cluster, sql_rows

FRIDAY = 1_900_000_000.0


def said(text: str, pid: str, *, person: str, entrance: str = "telegram") -> Incoming:
    return Incoming(
        entrance=entrance,
        conversation_id=f"chat-{person}",
        conversation_kind="dm",
        author=Author(external_id=person, display_name=person.title()),
        text=text,
        platform_message_id=pid,
    )


def promise(recorded_id: int, conversation: int, person: int, owner: str) -> NewIntention:
    return NewIntention(
        owner_instance=owner,
        entrance="telegram",
        conversation_id=conversation,
        person_id=person,
        visibility="private",
        text=f"call the bakery ({owner})",
        subject="bakery call",
        due_at=FRIDAY,
        duration_s=1800,
        target_entrance=None,
        source_message_id=recorded_id,
    )


async def prefill(memory: Memory) -> None:
    """A memory that has lived a little: souls, turns with provenance, a conflict decided,
    notes, the outbox, links, usage, audit, a vector."""
    await memory.record_soul_version(text="# Ada v1", name="Ada", sha256="a1", source="file")
    await memory.record_soul_version(text="# Ada v2", name="Ada", sha256="a2", source="cli")
    for n, person in enumerate(("ana", "bo", "chen")):
        message = said(
            f"Hello, I am {person}, can you call the bakery on Friday?", f"p{n}", person=person
        )
        recorded = await memory.record_incoming(message, "phone")
        await memory.store_turn(
            TurnRecord.answering(
                recorded,
                message,
                "phone",
                f"Sure {person}, noted.",
                soul_version=2,
                model="openai/x",
                context_rows=[("soul", 2), ("message", recorded.message_id)],
                intentions=[
                    promise(
                        recorded.message_id,
                        recorded.conversation_id,
                        recorded.person_id,
                        f"inst{n}",
                    )
                ],
                notes=[f"{person} likes bread"],
                prompt_tokens=100 + n,
                completion_tokens=7,
                cost_usd=0.001,
                delivery=ReplyDelivery(target=f"chat-{person}", dedupe_key=f"reply:{n}"),
            )
        )
    [item, *_] = await memory.pending_items()
    await memory.decide_item(
        item.id,
        status="resolved",
        choice="a",
        resolution="Keep the first call.",
        note="café first",
        actor="coordinator",
        intention_statuses={item.intention_a: "resolved"},
        kept=["call the bakery (inst0)"],
        outgoing=[],
    )
    await memory.link_identities(("telegram", "ana"), ("discord", "ana#1"), "admin")
    await memory.grant_access("discord", "stranger", "admin")
    await memory.audit("admin", "test.prefill", "x", detail="ü ✓")
    await memory.write(
        lambda conn: conn.execute(
            "INSERT INTO vectors (kind, row_id, model, vector, created_at) VALUES (?, ?, ?, ?, ?)",
            ("message", 1, "mini", bytes(range(16)), FRIDAY),
        )
    )


async def test_a_lived_in_memory_moves_to_postgresql_and_back_unchanged(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    source = tmp_path / "memory.db"
    async with Memory(source) as memory:
        await prefill(memory)
    url = pg_cluster.new_database(empty=True)
    try:
        moved = run_mirror("memory", "migrate", "--db", str(source), "--to", url, "--json")
        assert moved.returncode == 0, moved.stderr
        report = {row["table"]: row for row in json.loads(moved.stdout)}
        assert set(report) == {table.name for table in catalog()}
        assert all(row["ok"] for row in report.values())
        for table in ("soul_versions", "audit", "reply_context", "usage_daily", "vectors"):
            assert report[table]["rows"] > 0, table
        original = checksums(source)
        assert checksums(url) == original

        async with Memory(url) as memory:  # the persona goes on, on PostgreSQL
            assert [m.text for m in await memory.search_messages("bakery")][:1] == [
                "Hello, I am chen, can you call the bakery on Friday?"
            ]
            assert [s.name for s in await memory.soul_history()] == ["Ada", "Ada"]
            recorded = await memory.record_incoming(said("again", "p9", person="dan"), "desk")
            assert recorded.message_id == 7  # the sequence moved past the 6 copied rows
            assert (await memory.provenance(2)).rows == [("message", 1), ("soul", 2)]  # type: ignore[union-attr]

        back = tmp_path / "back.db"
        returned = run_mirror("memory", "migrate", "--db", url, "--to", str(back))
        assert returned.returncode == 0, returned.stderr
        assert "checksum match" in returned.stdout
        again = checksums(back)
        assert again["soul_versions"] == original["soul_versions"]
        assert again["messages"][0] == original["messages"][0] + 1
        async with Memory(back) as memory:
            assert len(await memory.search_messages("bakery")) == 3  # FTS rebuilt on SQLite
    finally:
        pg_cluster.drop(url)


async def test_a_target_that_holds_rows_is_refused(tmp_path: Path, pg_url: str) -> None:
    source = tmp_path / "memory.db"
    async with Memory(source) as memory:
        await prefill(memory)
    async with Memory(pg_url) as memory:
        await memory.audit("someone", "already.here")
    refused = run_mirror("memory", "migrate", "--db", str(source), "--to", pg_url)
    assert refused.returncode == 2
    assert "not empty" in refused.stderr and "audit" in refused.stderr


async def test_big_tables_get_their_indexes_and_triggers_back(
    tmp_path: Path, pg_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past BULK_ROWS a table's indexes are rebuilt after its rows and its triggers are off
    meanwhile: afterwards the schema is whole again (same indexes as a fresh database, the
    triggers firing)."""
    source = tmp_path / "memory.db"
    async with Memory(source) as memory:
        await prefill(memory)
    monkeypatch.setattr(pg_copy, "BULK_ROWS", 1)
    fresh, url = pg_cluster.new_database(), pg_cluster.new_database(empty=True)
    try:
        pg_copy.copy_memory(source, url)
        assert checksums(url) == checksums(source)
        shape = (
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
            " UNION ALL SELECT tgname, tgenabled::text FROM pg_trigger WHERE NOT tgisinternal"
            " ORDER BY 1"
        )
        assert sql_rows(url, shape) == sql_rows(fresh, shape)
        async with Memory(url) as memory:
            message = said("one more", "p10", person="ana")
            recorded = await memory.record_incoming(message, "phone")
            await memory.store_turn(TurnRecord.answering(recorded, message, "phone", "ok"))
        logged = sql_rows(url, "SELECT count(*) FROM outgoing_log")
        assert logged == [(4,)]  # 3 copied, 1 by the trigger
    finally:
        pg_cluster.drop(url)
        pg_cluster.drop(fresh)
