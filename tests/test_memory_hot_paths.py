"""The hot paths that bench/ measures: query plans, batched writes, background checkpoints.

No timings here (those are printed by bench/): these tests pin the shapes that make the
figures, so a later change cannot quietly bring back a scan or a commit per item.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.context import BUDGETS, Context, intention_line, trim_context
from bot.memory import LeaseLost, Memory, NewIntention, Outgoing
from bot.memory.hot_queries import DUE_IDS_SQL as _DUE_IDS
from bot.memory.hot_queries import REPLY_ID_SQL
from bot.memory.hot_queries import due_params as _due_params
from bot.models import Audience, Author, Incoming, TurnView, ViewIntention
from tests.waiting import wait_until


def incoming(text: str, n: int, *, person: str = "alice", kind: str = "dm") -> Incoming:
    return Incoming(
        entrance="telegram",
        conversation_id=f"{kind}-{person}",
        conversation_kind=kind,  # type: ignore[arg-type]
        author=Author(external_id=person, display_name=person.capitalize()),
        text=text,
        platform_message_id=f"m{n}",
    )


def plans(path: Path, statements: list[str]) -> dict[str, str]:
    """EXPLAIN QUERY PLAN of each traced statement (parameters already inlined)."""
    conn = sqlite3.connect(path)
    try:
        return {
            sql: "\n".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            for sql in statements
        }
    finally:
        conn.close()


async def test_mirror_view_reads_no_table_in_full_and_sorts_nothing(memory: Memory) -> None:
    for n in range(30):
        recorded = await memory.record_incoming(incoming(f"garden report {n}", n), "phone")
    await memory.add_intention(
        NewIntention(
            "phone", "telegram", None, None, "group", "call Bob", "call bob", None, 3600, None, None
        )
    )
    traced: list[str] = []
    reader = memory._reader
    assert reader is not None
    await reader._execute(lambda raw: raw.set_trace_callback(traced.append), reader._conn)
    await memory.turn_view(
        conversation_id=recorded.conversation_id,
        person_id=recorded.person_id,
        audience=Audience(conversation_id=recorded.conversation_id, person_id=recorded.person_id),
        incoming_id=recorded.message_id,
        text="how is the garden report?",
        dead_after_s=60,
    )
    await reader._execute(lambda raw: raw.set_trace_callback(None), reader._conn)
    selects = [  # ours, not FTS5's own statements on its shadow tables
        sql for sql in traced if sql.lstrip().upper().startswith("SELECT") and "'main'." not in sql
    ]
    assert len(selects) >= 8
    for sql, plan in plans(memory.path, selects).items():
        # A sub-select's rows (the latest decisions, LIMITed), read back as it made them.
        subselects = {line.split()[1] for line in plan.splitlines() if line.startswith("CO-")}
        for line in plan.splitlines():
            if line.startswith("SCAN"):  # tiny tables, full-text indexes, partial indexes
                small = line.split()[1] in (
                    "instances",
                    "messages_fts",
                    "notes_fts",
                    "CONSTANT",
                    "json_each",  # the ids of recalled rows
                    *subselects,
                )
                partial = line.endswith(("intentions_active", "conflicts_decided"))
                assert small or partial, (sql, plan)
            assert "TEMP B-TREE" not in line, (sql, plan)
    joined = "\n".join(plans(memory.path, selects).values())
    assert "messages_offline_replies" in joined
    assert "conflicts_decided" in joined
    assert "intentions_active" in joined


async def test_outbox_due_rows_are_found_by_index_seeks(memory: Memory) -> None:
    conn = sqlite3.connect(memory.path)
    try:
        for targets in (None, ["coordinator"]):
            plan = "\n".join(
                row[3]
                for row in conn.execute(
                    f"EXPLAIN QUERY PLAN {_DUE_IDS}", _due_params("local", targets, 0.0, 10)
                )
            )
            seeks = [line for line in plan.splitlines() if "outbox" in line]
            assert len(seeks) == 2 and all("USING INDEX outbox_due" in s for s in seeks), plan
            assert "SCAN outbox" not in plan
    finally:
        conn.close()


async def test_a_stored_reply_is_named_by_one_step_back_in_its_conversation(
    memory: Memory,
) -> None:
    """The reply's id in its outbox row and reply_context (`REPLY_ID_SQL`): the newest of
    its conversation, read from the end of messages_conversation, never a scan or a sort."""
    conn = sqlite3.connect(memory.path)
    try:
        plan = "\n".join(
            row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN SELECT {REPLY_ID_SQL}", (1,))
        )
        assert "USING COVERING INDEX messages_conversation (conversation_id=?)" in plan, plan
        assert "SCAN messages" not in plan and "TEMP B-TREE" not in plan, plan
    finally:
        conn.close()


async def test_outbox_due_says_whether_a_claim_would_find_anything(memory: Memory) -> None:
    now = [1_000.0]
    memory.clock = lambda: now[0]
    assert not await memory.outbox_due("telegram")
    await memory.enqueue(entrance="telegram", target="42", text="hi", dedupe_key="a")
    assert await memory.outbox_due("telegram")
    assert await memory.outbox_due("telegram", targets=["42"])
    assert not await memory.outbox_due("telegram", targets=["43"])
    assert not await memory.outbox_due("discord")
    claimed = await memory.claim_outbox("telegram", "courier", claim_s=60)
    assert [item.text for item in claimed] == ["hi"]
    assert not await memory.outbox_due("telegram")  # claimed, and the claim is fresh
    now[0] += 61
    assert await memory.outbox_due("telegram")  # the claimer died: its row is due again
    assert [item.text for item in await memory.claim_outbox("telegram", "other")] == ["hi"]


async def test_the_couriers_check_is_a_peek_on_the_event_loop(
    memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each courier asks `outbox_due` whenever memory changed (in bench/lean about twice a
    message and entrance): on SQLite a peek, no hop to the reader thread and back."""
    await memory.enqueue(entrance="telegram", target="42", text="hi", dedupe_key="a")

    async def no_read(*_: object) -> None:
        raise AssertionError("outbox_due went to the reader thread")

    reader = memory.read
    monkeypatch.setattr(memory, "read", no_read)
    assert await memory.outbox_due("telegram")
    assert not await memory.outbox_due("discord")
    # A peek that finds SQLite busy (a checkpoint resetting the log) answers None: the
    # check is then a read like any other.
    monkeypatch.setattr(memory, "read", reader)
    monkeypatch.setattr(memory, "peek", lambda *_: None)
    assert await memory.outbox_due("telegram")
    assert not await memory.outbox_due("discord")


async def test_a_batch_of_items_is_surfaced_in_one_fenced_write(memory: Memory) -> None:
    due = memory.now + 86400
    for n in range(5):
        for owner in ("phone", "desk"):
            await memory.add_intention(
                NewIntention(
                    owner,
                    "local",
                    None,
                    None,
                    "group",
                    f"{owner} {n}",
                    f"{owner} {n}",
                    due + n * 7200,
                    3600,
                    None,
                    None,
                )
            )
    held, lease = await memory.acquire_lease("scheduler", "me", "host", 1, ttl_s=60)
    assert held
    items = await memory.items_to_surface()
    assert len(items) == 5 and all(len(d.sides) == 2 for d in items)
    batch = [
        (d.item.id, Outgoing("local", "coordinator", f"item {d.item.id}", f"s:{d.item.id}"))
        for d in items
    ]

    async def send(batch: list[tuple[int, Outgoing]], what: str, epoch: int) -> list[int]:
        return await memory.mark_items_sent(
            batch, what, lease="scheduler", holder="me", epoch=epoch, remind_after_s=3600
        )

    assert await send(batch, "surfaced", lease.epoch) == [d.item.id for d in items]
    assert await memory.items_to_surface() == []
    assert len(await memory.outbox()) == 5
    assert await send(batch, "surfaced", lease.epoch) == []  # each queued once (dedupe keys)
    stale = [(items[0].item.id, Outgoing("local", "coordinator", "stale", "stale"))]
    with pytest.raises(LeaseLost):
        await send(stale, "reminded", lease.epoch + 1)
    assert len(await memory.outbox()) == 5


async def test_commits_are_checkpointed_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    async with Memory(path) as memory:
        size = path.stat().st_size
        for n in range(50):  # far below SQLite's own auto-checkpoint
            await memory.record_incoming(incoming("x" * 2000, n), "phone")

        await wait_until(
            lambda: path.stat().st_size > size, 10, "the WAL copied into memory.db", 0.01
        )
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 50
    conn.close()


def test_intention_budget_counts_the_lines_the_prompt_shows() -> None:
    intentions = [
        ViewIntention(
            id=n,
            owner_instance="phone",
            entrance="telegram",
            person_name="Ada",
            about_this_person=True,
            text=f"call Ada about the garden {n}",
            subject="call ada",
            due_at=datetime(2026, 1, 1, 15, tzinfo=UTC),
            status="open",
            target_entrance=None,
        )
        for n in range(60)
    ]
    context = Context(
        soul_name="Mirror",
        soul_text="# Name\nMirror",
        soul_version=None,
        instance_id="phone",
        entrance="telegram",
        style="short",
        timezone="UTC",
        now=datetime(2026, 1, 1, tzinfo=UTC),
        person_id=1,
        person_name="Ada",
        conversation_kind="dm",
        incoming_id=1,
        text="what have you promised?",
        view=TurnView(intentions=intentions),
    )
    kept = trim_context(context).view.intentions
    spent = sum(len(intention_line(context, item)) // 4 + 1 for item in kept)
    assert spent <= BUDGETS["intentions"]
    following = intention_line(context, intentions[len(kept)])
    assert spent + len(following) // 4 + 1 > BUDGETS["intentions"]
    assert kept == intentions[: len(kept)]  # newest first, none skipped


async def test_status_read_without_asyncio_is_the_status_memory_gives(memory: Memory) -> None:
    from bot.memory.snapshot import read_status

    recorded = await memory.record_incoming(incoming("hello", 1), "phone")
    await memory.register_instance("phone", "telegram", "host", 1, None)
    await memory.enqueue(entrance="telegram", target="42", text="hi", dedupe_key="k")
    assert recorded.created
    expected = await memory.status(dead_after_s=60)
    found = await asyncio.to_thread(read_status, memory.path, 60)
    assert found.model_dump(exclude={"alive"}) == expected.model_dump(exclude={"alive"})
    assert found.alive == expected.alive == {"phone": True}
    assert (found.messages, found.pending_outbox) == (1, 1)


def test_status_module_imports_neither_asyncio_nor_the_stores() -> None:
    code = (
        "import sys, bot.memory.snapshot; "
        "print(sorted(m for m in ('asyncio', 'aiosqlite', 'bot.memory.store') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_new_database_is_created_and_migrated_by_the_status_read(tmp_path: Path) -> None:
    from bot.memory.database import schema_files
    from bot.memory.snapshot import read_status

    status = read_status(tmp_path / "new" / "memory.db", 60)
    assert status.schema_version == len(schema_files())
    assert (status.messages, status.instances, status.soul) == (0, [], None)


async def test_data_version_now_changes_when_another_connection_commits(memory: Memory) -> None:
    first = memory.data_version_now()
    assert first is not None and memory.data_version_now() == first
    other = sqlite3.connect(memory.path, isolation_level=None)
    try:
        other.execute("INSERT INTO audit (at, actor, action) VALUES (1, 'test', 'poke')")
    finally:
        other.close()
    assert memory.data_version_now() not in (None, first)
    second = memory.data_version_now()
    await memory.audit("test", "poke again")  # this process's writer is another connection
    assert memory.data_version_now() != second
