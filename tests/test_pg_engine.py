"""Memory on PostgreSQL: migrations, the dialect, awareness across hosts (LISTEN/NOTIFY),
serialised writes from several processes, and selecting the engine by URL."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot.config import load_config
from bot.memory import (
    PERSON_KEY,
    Admission,
    BucketSpec,
    Memory,
    NewIntention,
    ReplyDelivery,
    SchemaTooNew,
    SentSince,
    TurnRecord,
)
from bot.memory.pg_dialect import translate
from bot.memory.schema import schema_files
from bot.models import Author, Incoming
from tests.conftest import run_mirror
from tests.pg import Cluster, sql_rows
from tests.waiting import wait_until

pytestmark = pytest.mark.both_engines


def incoming(text: str, pid: str, *, person: str = "ana", kind: str = "dm") -> Incoming:
    return Incoming(
        entrance="telegram",
        conversation_id=person if kind == "dm" else "group",
        conversation_kind=kind,  # type: ignore[arg-type]
        author=Author(external_id=person, display_name=person.capitalize()),
        text=text,
        platform_message_id=pid,
    )


# Migrations ---------------------------------------------------------------------------------


def test_postgresql_schema_files_mirror_the_sqlite_ones() -> None:
    from bot.memory.pg_engine import schema_files as pg_files

    assert [(n, p.name) for n, p in pg_files()] == [(n, p.name) for n, p in schema_files()]


async def test_an_empty_database_gets_every_schema_file_once(pg_cluster: Cluster) -> None:
    url = pg_cluster.new_database(empty=True)
    try:
        async with Memory(url) as memory:
            assert memory.schema_version == len(schema_files())
        async with Memory(url) as memory:  # opening again applies nothing
            assert memory.schema_version == len(schema_files())
        applied = sql_rows(url, "SELECT version FROM schema_migrations ORDER BY version")
        assert [row[0] for row in applied] == list(range(1, len(schema_files()) + 1))
    finally:
        pg_cluster.drop(url)


async def test_a_newer_database_is_refused(pg_url: str) -> None:
    newer = len(schema_files()) + 1
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, 'x', 0)",
            (newer,),
        )
    with pytest.raises(SchemaTooNew, match="upgrade MirrorOS"):
        async with Memory(pg_url):
            pass


# The dialect --------------------------------------------------------------------------------


def test_sqlite_constructs_become_their_postgresql_counterparts() -> None:
    insert = translate("INSERT OR IGNORE INTO reply_context (message_id, used) VALUES (?, ?)")
    assert insert.sql.endswith("VALUES (%s, %s) ON CONFLICT DO NOTHING")
    assert not insert.returns_id
    added = translate("INSERT INTO audit (at, actor) VALUES (:at, :actor)")
    assert added.sql.endswith("VALUES (%(at)s, %(actor)s) RETURNING id") and added.returns_id
    where = translate(
        "SELECT id FROM intentions INDEXED BY intentions_active WHERE follow_up IS NOT 'queued'"
        " AND conversation_id IS :chat AND due_at IS NOT NULL AND key LIKE 'due:%'"
    ).sql
    assert where == (
        "SELECT id FROM intentions WHERE follow_up IS DISTINCT FROM 'queued'"
        " AND conversation_id IS NOT DISTINCT FROM %(chat)s AND due_at IS NOT NULL"
        " AND key LIKE 'due:%%'"
    )
    search = translate(
        "SELECT rowid FROM messages_fts WHERE messages_fts MATCH :q ORDER BY rowid DESC"
    ).sql
    assert "search_vector @@ websearch_to_tsquery('mirror_text', %(q)s)" in search
    assert search.endswith("ORDER BY id DESC")
    assert translate("UPDATE OR IGNORE messages SET text = ?").ignore_unique


def test_a_view_of_the_newest_word_matches_reads_them_as_its_table() -> None:
    """`FROM messages m JOIN … WHERE m.id IN (newest matches) AND …` reads the matches as
    `m`: PostgreSQL stops at the view's LIMIT instead of hashing every match first."""
    view = translate(
        "SELECT m.id, c.kind FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " WHERE m.id IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH :q"
        " ORDER BY rowid DESC LIMIT 200) AND m.visibility = 'group'"
        " ORDER BY m.id DESC LIMIT :limit"
    ).sql
    assert view == (
        "SELECT m.id, c.kind FROM (SELECT * FROM messages WHERE search_vector @@"
        " websearch_to_tsquery('mirror_text', %(q)s) ORDER BY id DESC LIMIT 200) m"
        " JOIN conversations c ON c.id = m.conversation_id WHERE m.visibility = 'group'"
        " ORDER BY m.id DESC LIMIT %(limit)s"
    )
    every = translate(  # all the matches, not the newest: left as it is
        "SELECT m.id FROM messages m WHERE m.id IN (SELECT rowid FROM messages_fts"
        " WHERE messages_fts MATCH :q) AND m.person_id = :p"
    ).sql
    assert "WHERE m.id IN (SELECT id FROM messages WHERE search_vector @@" in every


def test_a_json_list_is_an_array_an_index_can_look_up() -> None:
    listed = translate("SELECT * FROM conflicts WHERE id IN (SELECT value FROM json_each(?))")
    assert listed.sql.endswith(
        "WHERE id = ANY (CAST(ARRAY(SELECT json_array_elements_text(CAST(%s AS json)))"
        " AS bigint[]))"
    )
    unlisted = translate("SELECT 1 FROM o WHERE target NOT IN (SELECT value FROM json_each(:t))")
    assert "WHERE NOT (target = ANY (" in unlisted.sql and "AS text[])" in unlisted.sql


def test_each_instances_newest_messages_are_looked_up_by_id() -> None:
    from bot.memory.hot_queries import RECENT_PER_INSTANCE_SQL

    sql = translate(RECENT_PER_INSTANCE_SQL).sql
    assert "WHERE m.id = ANY (ARRAY(\n        SELECT r.id FROM instances CROSS JOIN" in sql
    assert sql.rstrip().endswith("OFFSET %(skip)s), 0)))\n    ORDER BY m.id DESC")


def test_writes_that_return_nothing_to_read_may_wait_for_the_commit() -> None:
    upsert = translate(
        "INSERT OR REPLACE INTO rate_buckets (key, tokens, updated_at, warned) VALUES (?, ?, ?, 0)"
    )
    assert upsert.deferrable and upsert.rows is not None
    assert upsert.rows.row == "(%s, %s, %s, 0)" and upsert.rows.key == (0,)
    assert upsert.rows.tail.startswith(" ON CONFLICT (key) DO UPDATE SET")
    # The key's values are told apart among the parameters, not in the bound text.
    assert upsert.rows.key_params == (0,)
    scores = translate(
        "INSERT OR REPLACE INTO recall_scores (query_id, kind, row_id, fts_rank, vector_rank,"
        " similarity, fused) VALUES (?, 'note', ?, NULL, ?, ?, ?)"
    )
    assert scores.rows is not None and scores.rows.key == (0, 1, 2)
    assert scores.rows.key_params == (0, 1)  # 'note' is the same in every row
    folded = translate(
        "INSERT OR REPLACE INTO rate_buckets (key, tokens, updated_at, warned)"
        " VALUES (lower(?), ?, ?, 0)"
    )
    assert folded.rows is not None and folded.rows.key_params is None  # 'A', 'a': one key
    assert translate("INSERT INTO audit (at, actor) VALUES (?, ?)").deferrable  # lastrowid: lazy
    assert not translate("UPDATE intentions SET status = ? WHERE id = ? RETURNING id").deferrable
    assert not translate("SELECT id FROM audit").deferrable
    assert translate("INSERT INTO audit (at) SELECT at FROM audit").rows is None


# Behaviour on both engines ------------------------------------------------------------------


async def test_search_ignores_case_and_accents_and_keeps_privacy(memory: Memory) -> None:
    await memory.record_incoming(incoming("Meet me at the Café Lumière", "1"), "phone")
    await memory.record_incoming(incoming("the cafe downstairs", "2", person="bo"), "phone")
    await memory.record_incoming(incoming("cafe for the team", "3", kind="group"), "phone")
    everyone = await memory.search_messages("CAFE")
    assert [m.platform_message_id for m in everyone] == ["3", "2", "1"]
    ana = (await memory.account("telegram", "ana", create=False)).person_id  # type: ignore[union-attr]
    seen = await memory.search_messages("lumiere cafe", audience=ana)
    assert [m.platform_message_id for m in seen] == ["1"]
    assert await memory.search_messages('cafe" OR x*') is not None  # user text is not syntax


TAKER = """
import asyncio, json, sys
from bot.memory import BucketSpec, Memory

async def main(location, tries):
    taken = 0
    async with Memory(location) as memory:
        for _ in range(tries):
            empty, _ = await memory.take_tokens([BucketSpec("shared", 0.0001, 20)])
            taken += empty is None
    print(json.dumps(taken))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_four_processes_never_take_more_tokens_than_the_bucket_holds(
    memory: Memory,
) -> None:
    """The token bucket is read, decided and written in one serialised transaction: four
    processes hammering one bucket of 20 take exactly 20, and no process sees an error."""
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, str(memory.path), "40"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [taker.communicate(timeout=120) for taker in takers]
    assert [taker.returncode for taker in takers] == [0] * 4, [err for _, err in results]
    assert sum(json.loads(out) for out, _ in results) == 20
    empty, _ = await memory.take_tokens([BucketSpec("shared", 0.0001, 20)])
    assert empty == "shared"


async def test_data_version_moves_when_another_process_commits(memory: Memory) -> None:
    await wait_until(lambda: memory.data_version_now() is not None, 10, "listening")
    first = memory.data_version_now()
    other = Memory(memory.path)
    await other.open()
    try:
        await other.record_incoming(incoming("news", "n1"), "elsewhere")
    finally:
        await other.close()
    await wait_until(lambda: memory.data_version_now() not in (None, first), 10, "a new version")


async def test_a_write_reads_back_rowcounts_ids_and_the_last_of_repeated_rows(
    memory: Memory,
) -> None:
    """On PostgreSQL, writes with nothing to read at once travel with the next statement or
    the commit (pg_engine's deferred writes, executemany as one INSERT): what a store reads
    back is what SQLite gives, row by row."""
    bucket = "INSERT OR REPLACE INTO rate_buckets (key, tokens, updated_at, warned) VALUES"

    def run(conn: Any) -> tuple[int, int, int, int]:
        first = conn.execute("INSERT INTO audit (at, actor, action) VALUES (1, 'test', 'a')")
        second = conn.execute("INSERT INTO audit (at, actor, action) VALUES (2, 'test', 'b')")
        conn.executemany(
            f"{bucket} (?, ?, ?, 0)", [("k", 1.0, 1.0), ("j", 5.0, 1.0), ("k", 2.0, 2.0)]
        )
        kept = conn.executemany(
            "INSERT OR IGNORE INTO rate_buckets (key, tokens, updated_at, warned)"
            " VALUES (?, ?, ?, 0)",
            [("j", 9.0, 9.0), ("50%", 3.0, 3.0)],
        )
        moved = conn.execute("UPDATE audit SET subject = 'x' WHERE actor = 'test'")
        seen = conn.execute("SELECT count(*) FROM audit WHERE subject = 'x'").fetchone()[0]
        return second.lastrowid - first.lastrowid, kept.rowcount, moved.rowcount, seen

    assert await memory.write(run) == (1, 1, 2, 2)
    buckets = await memory.read(
        lambda conn: [
            (row[0], str(row[1]))
            for row in conn.execute(
                "SELECT key, tokens FROM rate_buckets WHERE key IN ('50%', 'j', 'k') ORDER BY key"
            )
        ]
    )
    assert buckets == [("50%", "3.0"), ("j", "5.0"), ("k", "2.0")]


async def test_rows_of_one_insert_read_back_as_written(memory: Memory) -> None:
    """executemany's rows, bound into one INSERT on PostgreSQL, read back as SQLite keeps
    them, whatever their values hold."""
    written = [
        (0.5, "ana", "rows.test", 'it\'s \\ a "quote" -- not a comment; é ✓', None),
        (-2.25, "bo", "rows.test", "", '{"n": -5}'),
        (1e300, "%s %(x)s ?", "rows.test", r"\x00ff", "NULL"),
        (-5, "cy", "rows.test", "-", "0"),
        (7, "dee", "rows.test", None, None),
    ]

    def run(conn: Any) -> list[tuple[Any, ...]]:
        conn.executemany(
            "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
            written,
        )
        return [
            tuple(row)
            for row in conn.execute(
                "SELECT at, actor, action, subject, detail FROM audit"
                " WHERE action = 'rows.test' ORDER BY id"
            )
        ]

    assert await memory.write(run) == written


async def test_a_failing_write_undoes_its_whole_transaction(memory: Memory) -> None:
    def run(conn: Any) -> None:
        conn.execute("INSERT INTO audit (at, actor, action) VALUES (1, 'test', 'undone')")
        conn.execute("INSERT INTO people (name, created_at) VALUES (NULL, 0)")  # NOT NULL
        conn.execute("UPDATE audit SET subject = 'after' WHERE actor = 'test'")

    with pytest.raises(Exception, match=r"(?i)null"):
        await memory.write(run)
    left = await memory.read(
        lambda conn: conn.execute("SELECT count(*) FROM audit WHERE actor = 'test'").fetchone()
    )
    assert left[0] == 0
    await memory.record_incoming(incoming("still writable", "f1"), "desk")


async def test_a_commit_of_deferred_writes_only_is_seen_by_other_processes(
    memory: Memory,
) -> None:
    await memory.record_incoming(incoming("before", "v1"), "desk")
    await wait_until(lambda: memory.data_version_now() is not None, 10, "listening")
    first = memory.data_version_now()
    other = Memory(memory.path)
    await other.open()
    try:
        await other.write(
            lambda conn: conn.execute("UPDATE messages SET status = 'answered' WHERE id > 0")
        )
    finally:
        await other.close()
    await wait_until(lambda: memory.data_version_now() not in (None, first), 10, "a new version")


# PostgreSQL only ----------------------------------------------------------------------------


async def test_a_dropped_listen_connection_listens_again_and_rereads(pg_url: str) -> None:
    """Killing the LISTEN connection (a network cut) loses nothing: it connects again, and
    the version moves on, so every poller reads what was committed meanwhile."""
    async with Memory(pg_url) as memory:
        await wait_until(lambda: memory.data_version_now() is not None, 10, "listening")
        before = memory.data_version_now()
        sql_rows(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'mirroros-listen' AND datname = current_database()",
        )
        writer = Memory(pg_url)
        await writer.open()
        try:
            await writer.record_incoming(incoming("while deaf", "d1"), "elsewhere")
        finally:
            await writer.close()
        await wait_until(
            lambda: memory.data_version_now() not in (None, before), 15, "listening again"
        )
        assert [m.text for m in await memory.message_log()] == ["while deaf"]
        health = await memory.health()
        assert health["listen"] is True and health["schema_version"] == len(schema_files())


def listen_threads() -> int:
    return sum(thread.name == "pg-listen" for thread in threading.enumerate())


async def test_closing_memory_ends_its_listen_thread(pg_url: str) -> None:
    before = listen_threads()
    async with Memory(pg_url) as memory:
        await wait_until(lambda: memory.data_version_now() is not None, 10, "listening")
        assert listen_threads() == before + 1
    assert listen_threads() == before  # joined: gone once close returns


async def test_closing_memory_closes_all_its_connections(pg_url: str) -> None:
    """The writer, the reader, the reader's side line and the listener: none is left."""

    def ours() -> list[str]:
        rows = sql_rows(
            pg_url,
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'mirroros%' ORDER BY 1",
        )
        return [str(row[0]) for row in rows]

    def view(conn: Any) -> int:
        conn.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?", ("zebra",))
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])

    async with Memory(pg_url) as memory:
        await memory.record_incoming(incoming("a zebra", "c1"), "desk")
        await wait_until(lambda: memory.data_version_now() is not None, 10, "listening")
        await memory.read(view)  # the side line connects meanwhile
        await wait_until(lambda: "mirroros-reader-side" in ours(), 10, "the side line up")
        assert ours() == [
            "mirroros-listen",
            "mirroros-reader",
            "mirroros-reader-side",
            "mirroros-writer",
        ]
    await wait_until(lambda: ours() == [], 10, "every connection closed")


async def test_commits_wait_for_no_wal_flush_unless_the_url_asks(pg_url: str) -> None:
    """synchronous_commit=off by default (SQLite's synchronous=NORMAL: a commit survives any
    MirrorOS process's crash); a URL that sets it keeps its own."""

    def setting(conn: Any) -> str:
        row = conn.execute("SELECT current_setting('synchronous_commit')").fetchone()
        return str(row[0])

    async with Memory(pg_url) as memory:
        assert await memory.write(setting) == "off"
        assert await memory.read(setting) == "off"
    async with Memory(f"{pg_url}?options=-c%20synchronous_commit%3Don") as memory:
        assert await memory.write(setting) == "on"


async def test_planner_settings_are_the_memorys_unless_the_url_asks(pg_url: str) -> None:
    """JIT off (it compiled the turn view's newest-messages read for 10 ms, to run it in
    0.3), generic plans for the prepared reads, and a page read priced as a cached one
    (word recall through the GIN index rather than a walk of 59 000 rows), by default; a
    URL keeps its own."""

    def settings(conn: Any) -> tuple[str, str, str]:
        row = conn.execute(
            "SELECT current_setting('jit'), current_setting('plan_cache_mode'),"
            " current_setting('random_page_cost')"
        ).fetchone()
        return str(row[0]), str(row[1]), str(row[2])

    async with Memory(pg_url) as memory:
        assert await memory.read(settings) == ("off", "force_generic_plan", "1.1")
        assert await memory.write(settings) == ("off", "force_generic_plan", "1.1")
    own = "-c jit=on -c plan_cache_mode=auto -c random_page_cost=4".replace(" ", "%20")
    async with Memory(f"{pg_url}?options={own.replace('=', '%3D')}") as memory:
        assert await memory.read(settings) == ("on", "auto", "4")


async def test_a_read_is_prepared_on_its_connection_and_answers_as_before(pg_url: str) -> None:
    """A read seen once is PREPAREd on its connection (typed from a call that gives every
    parameter a value), and later calls EXECUTE it; values its types would read otherwise
    (a float for a bigint, text for an id) and reads PostgreSQL cannot prepare still
    answer, as plain statements."""
    async with Memory(pg_url) as memory:
        for n in range(3):
            await memory.record_incoming(incoming(f"m{n}", f"p{n}"), "desk")
        [ana] = sql_rows(pg_url, "SELECT id FROM people")
        by_person = (
            "SELECT text FROM messages WHERE direction = 'in'"
            " AND (:person IS NULL OR person_id = :person) ORDER BY id"
        )
        by_id = "SELECT text FROM messages WHERE id = :id"

        def texts(conn: Any, sql: str, params: dict[str, Any]) -> list[str]:
            return [row["text"] for row in conn.execute(sql, params)]

        def prepared(conn: Any) -> list[str]:
            rows = conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()
            return [str(row[0]) for row in rows]

        everyone = ["m0", "m1", "m2"]
        assert await memory.read(texts, by_person, {"person": None}) == everyone
        assert not any("person_id" in s for s in await memory.read(prepared))  # untyped yet
        for person in (ana[0], None, ana[0], ana[0] + 1000):
            expected = everyone if person in (ana[0], None) else []
            assert await memory.read(texts, by_person, {"person": person}) == expected
        assert any("person_id = $1" in s for s in await memory.read(prepared))
        first = sql_rows(pg_url, "SELECT min(id) FROM messages")[0][0]
        for value in (first, float(first), str(first), first):
            assert await memory.read(texts, by_id, {"id": value}) == ["m0"]
        by_key = "SELECT text FROM messages WHERE id = :key"  # PREPARE (text): refused
        for value in (str(first), first, str(first)):
            assert await memory.read(texts, by_key, {"key": value}) == ["m0"]
        assert sum("WHERE id = $1" in s for s in await memory.read(prepared)) == 1  # by_id
        # With no parameters too (the same text is planned again each time it is sent)...
        newest = "SELECT max(id) FROM messages"
        last = sql_rows(pg_url, newest)[0][0]
        for _ in range(3):
            assert await memory.read(lambda conn: conn.execute(newest).fetchone()[0]) == last
        assert any(s.endswith(f" AS {newest}") for s in await memory.read(prepared))
        # ...unless a literal holds a % (unbound, it is not doubled as a placeholder's is).
        pattern = "SELECT count(*) FROM messages WHERE text LIKE 'm%'"
        for _ in range(3):
            assert await memory.read(lambda conn: conn.execute(pattern).fetchone()[0]) == 3
        assert not any("LIKE" in s for s in await memory.read(prepared))


def test_statements_are_bound_as_psycopg_binds_them(pg_url: str) -> None:
    """The engine's own client-side binding (`Binder`: no `mogrify` per statement) writes
    the text `ClientCursor.mogrify` writes, for every kind of value the stores bind and for
    the placeholders it knows; what it does not know is left to `mogrify`, errors too."""
    from bot.memory.pg_engine import Binder, connect

    raw = connect(pg_url)
    try:
        cursor: Any = raw.cursor()
        binder = Binder(raw)
        values: list[Any] = [
            0, 7, -7, 2**63 - 1, -(2**63), 2**70, True, False, None, 0.0, -0.0, 1.5, -2.25,
            1e300, float("inf"), float("-inf"), float("nan"), "", "plain", "it's", "back\\slash",
            "ünïcödé ✓", "50% off", "--", "a\nb", b"\x00\xffbytes", b"",
        ]  # fmt: skip
        for value in values:
            for sql in ("SELECT %s", "SELECT x FROM t WHERE a = %s AND b <> %s -- %%"):
                params = [value] * sql.count("%s")
                assert binder.bind(sql, params) == cursor.mogrify(sql, params), (sql, value)
            named = "SELECT %(v)s, %(v)s, 'lit %%', %(w)s"
            given = {"v": value, "w": -1, "unused": 3}
            assert binder.bind(named, given) == cursor.mogrify(named, given), value
            [[back]] = raw.execute(binder.bind("SELECT %s", [value])).fetchall()
            if isinstance(value, float):  # a float's literal reads back as numeric
                back = float(back)
            same = value != value and back != back  # NaN
            assert same or back == (bytes(value) if isinstance(value, bytes) else value), value
        for sql, params in (
            ("SELECT %s, %s", [1]),  # too few
            ("SELECT %(a)s", [1]),  # a name, given a position
            ("SELECT %s", {"a": 1}),  # a position, given a name
            ("SELECT %(a)s", {"b": 1}),  # a name not given
            ("SELECT '%' || %s", [1]),  # a stray %
        ):
            with pytest.raises((psycopg.ProgrammingError, TypeError)) as raised:
                cursor.mogrify(sql, params)
            with pytest.raises(type(raised.value)):
                binder.bind(sql, params)
    finally:
        raw.close()


async def test_reads_and_writes_go_on_unprepared_when_the_server_lost_the_prepared_statements(
    pg_url: str,
) -> None:
    """Behind a pooler in transaction mode (or after DEALLOCATE) a prepared read or write
    is gone: the transaction runs again, unprepared, and nothing is lost or written
    twice."""
    async with Memory(pg_url) as memory:
        await memory.record_incoming(incoming("one", "l1"), "desk")
        by_text = "SELECT count(*) AS n FROM messages WHERE text = :text"

        def count(conn: Any) -> int:
            return int(conn.execute(by_text, {"text": "one"}).fetchone()["n"])

        def count_then_write(conn: Any) -> int:
            found = count(conn)
            conn.execute("INSERT INTO audit (at, actor, action) VALUES (1, 'x', 'lost')")
            conn.execute(
                "INSERT INTO audit (at, actor, action, detail) VALUES (?, ?, ?, ?)",
                (2, "y", "lost", None),
            )
            return found

        def forget(conn: Any) -> None:
            conn.raw.execute("DEALLOCATE ALL")

        for call in (memory.read, memory.write):
            for _ in range(3):  # seen, prepared, executed
                assert await call(count) == 1
            await call(forget)
        assert await memory.read(count) == 1
        for _ in range(3):  # the writes too: seen, prepared, executed
            assert await memory.write(count_then_write) == 1
        await memory.write(forget)
        # A write alone: its prepared INSERT is lost at the COMMIT's message; written once.
        await memory.write(
            lambda conn: conn.execute(
                "INSERT INTO audit (at, actor, action, detail) VALUES (?, ?, ?, ?)",
                (3, "z", "lost", None),
            )
        )
        assert await memory.write(count_then_write) == 1
        assert await memory.write(count_then_write) == 1
        assert sql_rows(pg_url, "SELECT count(*) FROM audit WHERE action = 'lost'") == [(11,)]


async def test_a_write_is_prepared_too_its_null_parameters_typed_by_their_columns(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write seen once is PREPAREd on the writer (a parameter that was None then is typed
    by its column), and later calls EXECUTE it: the same rows as plain statements. A value
    its type would read otherwise (text for a number) goes as a plain statement."""
    async with Memory(pg_url) as memory:
        insert = "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)"
        given: list[tuple[Any, ...]] = [
            (1.5, "ana", "said", None, None),
            (2, "bo", "said", "it's", None),
            (3, "cy", "said", None, "50% off"),
            ("4", "di", "said", None, None),  # text for a double: not prepared, still written
            (5, "ed", "said", "x", "y"),
        ]
        sent = statements_sent(monkeypatch)
        for values in given:
            await memory.write(lambda conn, v=values: conn.execute(insert, v))
        inserts = [m for m in sent if "INTO audit" in m or "EXECUTE" in m]
        # Seen; PREPAREd before the next write; executed, unless a value does not fit.
        shown = re.compile(r"INSERT INTO audit|PREPARE mirror_\d+|EXECUTE mirror_\d+")
        assert [shown.findall(m)[0] for m in inserts] == [
            "INSERT INTO audit",
            "PREPARE mirror_1",
            "EXECUTE mirror_1",
            "EXECUTE mirror_1",
            "INSERT INTO audit",
            "EXECUTE mirror_1",
        ], inserts

        def prepared(conn: Any) -> list[tuple[str, str]]:
            rows = conn.execute(
                "SELECT statement, parameter_types::text FROM pg_prepared_statements"
            ).fetchall()
            return [(str(row[0]), str(row[1])) for row in rows]

        [(_, types)] = [found for found in await memory.write(prepared) if "INTO audit" in found[0]]
        assert types == '{"double precision",text,text,text,text}', types
        assert sql_rows(
            pg_url, "SELECT at, actor, subject, detail FROM audit WHERE action = 'said' ORDER BY id"
        ) == [
            (1.5, "ana", None, None),
            (2.0, "bo", "it's", None),
            (3.0, "cy", None, "50% off"),
            (4.0, "di", None, None),
            (5.0, "ed", "x", "y"),
        ]


async def test_reads_issued_before_any_is_consumed_read_what_they_would_one_by_one(
    memory: Memory,
) -> None:
    """Execute all, then fetch (the turn view, the guard): each read answers as if it had
    been consumed at once, in the order issued, writes in between included."""

    def run(conn: Any) -> tuple[int, int, int, list[str]]:
        count = "SELECT count(*) FROM audit WHERE actor = 'pipe'"
        before = conn.execute(count)
        conn.execute("INSERT INTO audit (at, actor, action) VALUES (1, 'pipe', 'a')")
        after = conn.execute(count)
        actions = conn.execute("SELECT action FROM audit WHERE actor = 'pipe' ORDER BY id")
        conn.execute(count)  # issued, never consumed
        unused = conn.execute("SELECT action FROM audit WHERE actor = 'nobody'")
        return (
            after.fetchone()[0],
            before.fetchone()[0],
            len(unused.fetchall()),
            [row[0] for row in actions],
        )

    assert await memory.write(run) == (1, 0, 0, ["a"])


def line_of(cursor: Any) -> str:
    """Which of a process's connections a cursor is on: its application name (the reader,
    its side line, the writer, the listener)."""
    return str(cursor.connection.info.parameter_status("application_name"))


def statements_sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every message psycopg sends from now on (a round trip each), in order."""
    import psycopg

    sent: list[str] = []
    execute = psycopg.ClientCursor.execute

    def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.ClientCursor, "execute", counted)
    return sent


async def spelled_out(memory: Memory, sent: list[str]) -> list[str]:
    """`sent` with each `EXECUTE name(…)` of the writer's prepared statements written out as
    the statement it runs (`PREPARE name (types) AS …`). (Its own read is left out of
    `sent`, and never prepared: a LIKE.)"""
    seen = len(sent)
    rows = await memory.write(
        lambda conn: conn.execute(
            "SELECT name, statement FROM pg_prepared_statements WHERE name LIKE 'mirror%'"
        ).fetchall()
    )
    del sent[seen:]
    named = {str(row[0]): str(row[1]) for row in rows}
    return [
        re.sub(r"EXECUTE (mirror_\d+)", lambda m: named.get(m.group(1), m.group(0)), message)
        for message in sent[:seen]
    ]


async def test_reads_issued_before_any_is_consumed_go_in_one_message(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the reads a transaction issues before consuming any travel together:
    the turn view's dozen independent reads cost one round trip, not one each. A read
    never consumed is not sent, and its cursor refuses to read after the transaction."""
    from bot.memory.schema import MemoryDbError

    async with Memory(pg_url) as memory:
        await memory.record_incoming(incoming("one", "q1"), "desk")
        sent = statements_sent(monkeypatch)

        def view(conn: Any) -> tuple[list[Any], Any]:
            issued = [
                conn.execute("SELECT count(*) FROM messages"),
                conn.execute("SELECT text FROM messages ORDER BY id"),
                conn.execute("SELECT count(*) FROM people"),
                conn.execute("SELECT count(*) FROM audit WHERE actor = 'nobody'"),
            ]
            got = [cursor.fetchall()[0][0] for cursor in issued[:-1]]
            return got, conn.execute("SELECT 'never consumed'")

        got, left = await memory.read(view)
        assert got == [1, "one", 1]
        assert len(sent) == 1 and "never consumed" not in sent[0]
        with pytest.raises(MemoryDbError):
            left.fetchone()


async def test_a_turn_view_with_recall_and_decisions_is_one_message(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn view's reads go in one message when nothing was embedded since the last view:
    the sides of the coordinator's decisions (named by a sub-select of the same decisions)
    and the read-back of what recall by meaning found (searched before the message, in the
    index as it stands) travel with the rest. Before, each went in a message of its own
    after the first. What the index's news adds to the hits is still read back."""
    import numpy as np

    from bot.config import RecallConfig
    from bot.embedding import DIMENSIONS, MODEL_NAME
    from bot.models import Audience

    def vector(axis: int) -> Any:
        found = np.zeros(DIMENSIONS, dtype=np.float32)
        found[axis] = 1.0
        return found

    async with Memory(pg_url) as memory:
        said = [
            await memory.record_incoming(incoming(text, f"v{n}", person="bo"), "desk")
            for n, text in enumerate(("the blue notebook", "the red umbrella"))
        ]
        for n in range(2):  # two instances promise one thing differently: a conflict
            await memory.add_intention(
                NewIntention(
                    f"desk-{n}",
                    "telegram",
                    None,
                    None,
                    "group",
                    f"call Bob {n}",
                    "call bob",
                    1.9e9,
                    3600,
                    None,
                    None,
                )
            )
        [item] = await memory.pending_items()
        await memory.decide_item(
            item.id,
            status="resolved",
            choice="a",
            resolution="The first.",
            note=None,
            actor="coordinator",
            intention_statuses={},
            kept=[],
            outgoing=[],
        )

        def embed(recorded: Any, axis: int) -> Any:
            return memory.write(
                lambda conn: conn.execute(
                    "INSERT INTO vectors (kind, row_id, model, vector, created_at)"
                    " VALUES ('message', ?, ?, ?, 0)",
                    (recorded.message_id, MODEL_NAME, vector(axis).tobytes()),
                )
            )

        await embed(said[0], 0)
        asking = await memory.record_incoming(incoming("what was it?", "v9"), "desk")

        async def view(axis: int) -> Any:
            memory.start_embedder(None, RecallConfig(), embeds=False)  # as `recall.meaning`
            return await memory.turn_view(
                conversation_id=asking.conversation_id,
                person_id=asking.person_id,
                audience=Audience(conversation_id=asking.conversation_id, everyone=True),
                incoming_id=asking.message_id,
                text="what was it?",
                dead_after_s=60,
                meaning=vector(axis),
            )

        for _ in range(3):  # loads the index; prepares the reads (`prepared_call`)
            await view(0)
        messages: list[str] = []
        execute = psycopg.ClientCursor.execute

        def reader_sent(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            # (Not a lone COMMIT: an idle reader ends its last read by itself.)
            if line_of(self) == "mirroros-reader":
                if str(query) != "COMMIT":
                    messages.append(str(query))
            return execute(self, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.ClientCursor, "execute", reader_sent)
        seen = await view(0)
        assert len(messages) == 1, messages
        assert [m.text for m in seen.recall] == ["the blue notebook"]
        assert [d.choice for d in seen.decisions] == ["a"] and seen.decisions[0].sides

        before = memory.data_version_now()
        await embed(said[1], 1)  # news: read, and its row read back after the search
        await wait_until(lambda: memory.data_version_now() != before, 10, "the commit heard")
        messages.clear()
        seen = await view(1)
        assert [m.text for m in seen.recall] == ["the red umbrella"]
        assert len(messages) == 3, messages  # the view, the index's new rows, the read-back


async def test_a_word_search_runs_beside_the_other_reads_and_survives_its_line(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A word search issued with other reads runs on the reader's side line meanwhile (in
    its own thread and connection); each read answers as before. The line connects in the
    background on first use (the reader searches itself until then); when it is lost, the
    reader reads the search itself and the line connects again."""
    import psycopg

    def side_backends() -> list[tuple[Any, ...]]:
        return sql_rows(
            pg_url,
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'mirroros-reader-side'"
            " AND datname = current_database()",
        )

    ran: list[tuple[str, str]] = []  # (connection, statement) of every execute
    execute = psycopg.ClientCursor.execute

    def traced(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        ran.append((line_of(self), str(query)))
        return execute(self, query, *args, **kwargs)

    def view(conn: Any) -> tuple[list[int], int]:
        found = conn.execute(
            "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid DESC",
            ("zebra",),
        )
        count = conn.execute("SELECT count(*) FROM messages")
        return [row[0] for row in found], count.fetchone()[0]

    async with Memory(pg_url) as memory:
        first = await memory.record_incoming(incoming("a zebra crossing", "z1"), "desk")
        await memory.record_incoming(incoming("no stripes here", "z2"), "desk")
        expected = ([first.message_id], 2)
        assert await memory.read(view) == expected  # the line connects meanwhile
        await wait_until(lambda: len(side_backends()) == 1, 10, "the side line connected")
        monkeypatch.setattr(psycopg.ClientCursor, "execute", traced)

        assert await memory.read(view) == expected
        searched = [thread for thread, text in ran if "@@" in text]
        assert searched == ["mirroros-reader-side"]
        assert any(t == "mirroros-reader" and "count" in q for t, q in ran)

        ran.clear()
        lost = side_backends()
        sql_rows(pg_url, f"SELECT pg_terminate_backend({lost[0][0]})")
        assert await memory.read(view) == expected  # read by the reader instead
        assert [t for t, q in ran if "@@" in q][-1] == "mirroros-reader"
        await memory.read(view)  # finds the line down: it connects again
        await wait_until(
            lambda: side_backends() not in ([], lost), 10, "the side line connected again"
        )
        ran.clear()
        assert await memory.read(view) == expected
        assert [t for t, q in ran if "@@" in q] == ["mirroros-reader-side"]


async def test_a_message_is_recorded_in_two_round_trips_and_once(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording a message from a known author in a known conversation: the BEGIN with the
    identity's and the conversation's reads, then the INSERT with the COMMIT (its id read
    after it). Before, the INSERT went alone, its id read before the COMMIT: three. The same
    platform id again is the same row, not created."""
    async with Memory(pg_url) as memory:
        first = await memory.record_incoming(incoming("one", "q1"), "desk")
        for n in range(3):  # its reads are prepared by now (`prepared_call`)
            await memory.record_incoming(incoming("warm", f"w{n}"), "desk")
        sent = statements_sent(monkeypatch)
        second = await memory.record_incoming(incoming("two", "q2"), "desk")
        assert len(sent) == 2, sent
        spelled = await spelled_out(memory, sent)
        assert "INSERT INTO messages" in spelled[1] and sent[1].endswith("COMMIT")
        # What the guard will compare it with (the persona's recent replies) comes along.
        sent.clear()
        third = await memory.record_incoming(incoming("three", "q3"), "desk", sent=SentSince(0, 0))
        assert len(sent) == 2 and "outgoing_log" in sent[0], sent
        assert third.created and third.sent == []
        # The rate limits' tokens are taken with it (the guard's admission, one write fewer).
        buckets = [BucketSpec(PERSON_KEY, 0.001, 5), BucketSpec("entrance:telegram", 0.001, 5)]
        for n in range(3):
            await memory.record_incoming(incoming("warm", f"t{n}"), "desk", take_tokens=buckets)
        sent.clear()
        fourth = await memory.record_incoming(incoming("four", "q4"), "desk", take_tokens=buckets)
        person_bucket = BucketSpec(f"person:{fourth.person_id}", 0.001, 5)
        assert len(sent) == 2 and "INSERT INTO rate_buckets" in sent[1], sent
        assert fourth.admission == Admission(True, taken=(person_bucket, buckets[1]))
        tokens = sql_rows(pg_url, "SELECT key, tokens FROM rate_buckets ORDER BY key")
        assert [key for key, _ in tokens] == ["entrance:telegram", f"person:{fourth.person_id}"]
        assert all(left == pytest.approx(1.0, abs=0.01) for _, left in tokens)  # 5 - 4 taken
        again = await memory.record_incoming(incoming("two", "q2"), "desk")

    assert first.created and second.created and second.message_id > first.message_id
    assert not again.created and again.message_id == second.message_id
    assert again.conversation_id == second.conversation_id == first.conversation_id


async def test_a_read_left_open_ends_with_the_next_read_or_when_the_reader_is_idle(
    pg_url: str,
) -> None:
    """A read's COMMIT travels with the next read; an idle reader ends it by itself (no
    snapshot held for long, nothing stale read after a write)."""

    def reader_idle() -> bool:
        states = sql_rows(
            pg_url,
            "SELECT state FROM pg_stat_activity"
            " WHERE application_name = 'mirroros-reader' AND datname = current_database()",
        )
        return states == [("idle",)]

    async with Memory(pg_url) as memory:
        await memory.record_incoming(incoming("one", "r1"), "desk")
        assert [m.text for m in await memory.message_log()] == ["one"]
        await memory.record_incoming(incoming("two", "r2"), "desk")
        assert [m.text for m in await memory.message_log()] == ["two", "one"]
        await wait_until(reader_idle, 10, "the reader's transaction ended")


async def test_writer_connection_lost_is_reconnected(pg_url: str) -> None:
    async with Memory(pg_url) as memory:
        await memory.record_incoming(incoming("one", "w1"), "desk")
        sql_rows(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE 'mirroros-%' AND datname = current_database()"
            " AND pid <> pg_backend_pid()",
        )
        # Found dead before the transaction began: connected again, nothing lost or doubled.
        await memory.record_incoming(incoming("two", "w2"), "desk")
        assert sorted(m.text for m in await memory.message_log()) == ["one", "two"]


async def test_calls_run_on_the_loops_thread_which_keeps_serving_while_they_wait(
    pg_url: str,
) -> None:
    """A memory call runs on the event loop's own thread (a greenlet: no hand-off to a
    worker thread). While it waits for the server (here: for the write lock, which another
    connection holds for half a second) the loop serves everything else: it is never
    blocked for the wait (how briefly it blocks at most is bench work). A call whose caller
    is cancelled meanwhile still runs to its end, and the connection serves the next call."""
    from bot.memory.pg_engine import WRITE_LOCK

    loop_thread = threading.current_thread()
    ran_on: list[threading.Thread] = []

    def noted(conn: Any, text: str) -> None:
        ran_on.append(threading.current_thread())
        conn.execute("INSERT INTO audit (at, actor, action) VALUES (1, 'test', ?)", (text,))

    holding = threading.Event()

    def hold_the_lock(seconds: float) -> None:
        with psycopg.connect(pg_url, autocommit=True) as other:
            other.execute("BEGIN")
            other.execute("SELECT pg_advisory_xact_lock(%s, %s)", WRITE_LOCK)
            holding.set()
            time.sleep(seconds)
            other.execute("COMMIT")

    async with Memory(pg_url) as memory:
        await memory.write(noted, "warm")
        assert ran_on == [loop_thread]
        ticks: list[float] = []

        async def tick() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        holder = asyncio.create_task(asyncio.to_thread(hold_the_lock, 0.5))
        await asyncio.to_thread(holding.wait, 10)
        started = time.monotonic()
        await memory.write(noted, "after the lock")
        waited = time.monotonic() - started
        during = [t for t in ticks if t >= started]
        ticker.cancel()
        await holder
        assert waited >= 0.4, waited  # it did wait for the lock
        assert len(during) > 50, len(during)  # the loop went on meanwhile
        # Never blocked for the wait (a blocked loop shows one gap as long as the wait).
        gaps = [b - a for a, b in itertools.pairwise(during)]
        assert max(gaps) < waited / 2, (max(gaps), waited)

        holding.clear()
        holder = asyncio.create_task(asyncio.to_thread(hold_the_lock, 0.3))
        await asyncio.to_thread(holding.wait, 10)
        cancelled = asyncio.create_task(memory.write(noted, "cancelled meanwhile"))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await holder
        await memory.write(noted, "next")
        actions = sql_rows(pg_url, "SELECT action FROM audit WHERE actor = 'test' ORDER BY id")
        assert [a for (a,) in actions] == ["warm", "after the lock", "cancelled meanwhile", "next"]


def test_a_connection_stops_waiting_in_poll_for_answers_that_come_late() -> None:
    """A greenlet waits for the server in `poll` (the loop blocked) only while answers
    come within SPIN_S: after three late ones in a row it hands its waits straight to the
    loop for a while, then tries again."""
    from bot.memory.pg_green import SPIN_S, Spin

    spin = Spin()
    assert spin.budget() == SPIN_S
    for _ in range(Spin.MISSES - 1):
        spin.answered(False)
    spin.answered(True)  # not in a row
    spin.answered(False)
    assert spin.budget() == SPIN_S
    for _ in range(Spin.MISSES):
        spin.answered(False)
    assert [spin.budget() for _ in range(Spin.REST)] == [0.0] * Spin.REST
    assert spin.budget() == SPIN_S


async def test_a_write_that_queued_outbox_rows_rings_for_itself_alone() -> None:
    """Calls share the loop's thread now: while one write waits for the server, another
    runs. The bell's ask belongs to the write transaction that made it (a context variable,
    not the thread's): the other neither takes it nor rings for it."""
    from bot.memory import pg_green
    from bot.memory.bell import ring_after_commit, take_ring

    def queuing() -> bool:
        take_ring()
        ring_after_commit()
        pg_green.wait_for(asyncio.sleep(0.05))  # waits for the server, say
        return take_ring()

    def plain() -> bool:
        take_ring()
        pg_green.wait_for(asyncio.sleep(0.01))
        return take_ring()

    first = asyncio.ensure_future(pg_green.run(queuing))
    await asyncio.sleep(0.01)
    assert await pg_green.run(plain) is False
    assert await first is True


def test_a_postgresql_url_selects_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql://mirror@127.0.0.1:5432/persona"
    monkeypatch.setenv("MIRROR_DB", url)
    config = load_config()
    assert config.memory.path == url and config.memory.engine == "postgresql"
    assert load_config(db=Path(url)).memory.path == url  # through a Path (--db) and back
    monkeypatch.delenv("MIRROR_DB")
    assert load_config(db="var/x.db").memory.engine == "sqlite"


def test_mirror_status_reads_a_postgresql_memory(pg_url: str) -> None:
    result = run_mirror("status", "--db", pg_url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["schema_version"] == len(schema_files())
    assert report["memory_path"].startswith("postgresql://")


async def test_a_version_9_memory_keeps_its_replies_provenance_in_one_row_each(
    pg_cluster: Cluster,
) -> None:
    import psycopg

    from bot.memory.pg_engine import SCHEMA_DIR, migrate

    url = pg_cluster.new_database(empty=True)
    try:
        with psycopg.connect(url, autocommit=True) as raw:
            migrate(raw, schema_files(SCHEMA_DIR)[:9])
            raw.execute(
                "INSERT INTO conversations (id, entrance, external_id, kind, created_at)"
                " VALUES (1, 'telegram', 'c1', 'dm', 0)"
            )
            raw.execute(
                "INSERT INTO messages (id, conversation_id, instance_id, entrance, direction,"
                " text, created_at, visibility) VALUES (7, 1, 'phone', 'telegram', 'out', 'hi',"
                " 0, 'private')"
            )
            raw.execute(
                "INSERT INTO message_context (message_id, kind, row_id) VALUES"
                " (7, 'soul', 2), (7, 'message', 12), (7, 'message', 3)"
            )
        async with Memory(url) as memory:
            assert memory.schema_version == len(schema_files())
            provenance = await memory.provenance(7)
        assert provenance is not None
        assert provenance.rows == [("message", 3), ("message", 12), ("soul", 2)]
    finally:
        pg_cluster.drop(url)


async def test_a_delivered_reply_is_marked_sent_with_its_platform_id_once(memory: Memory) -> None:
    message = incoming("what is your name?", "q1")
    recorded = await memory.record_incoming(message, "phone")
    stored = await memory.store_turn(
        TurnRecord.answering(
            recorded,
            message,
            "phone",
            "Wren.",
            delivery=ReplyDelivery(target="ana", dedupe_key="reply:q1"),
        )
    )
    claimed = stored.outbox  # stored claimed by the turn's instance, to send at once
    assert claimed is not None and claimed.status == "sending"
    assert claimed.payload["out_id"] == stored.message_id
    assert [claimed] == await memory.outbox()  # the row as stored (not read back: built)
    assert await memory.claim_outbox("telegram", "courier") == []  # no courier takes it
    # The platform id is already some other row's: the mark still happens, the id stays.
    assert await memory.mark_sent(claimed.id, "phone", "q1")
    sent = await memory.message(stored.message_id)
    assert sent is not None and sent.status == "sent" and sent.platform_message_id is None
    assert not await memory.mark_sent(claimed.id, "phone", "p-2")  # marked once
    assert [item.status for item in await memory.outbox()] == ["sent"]


async def test_a_reply_with_its_outbox_row_is_stored_in_one_round_trip(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply's INSERT, its outbox row (the reply's id in its payload), its context rows
    and the COMMIT go in one message: the rows name the reply's id in SQL, and the ids the
    INSERTs gave are read after the COMMIT. The same dedupe key again queues nothing."""
    async with Memory(pg_url) as memory:

        async def turn(pid: str, dedupe: str) -> Any:
            message = incoming("what is your name?", pid)
            recorded = await memory.record_incoming(message, "phone")
            delivery = ReplyDelivery(target="ana", dedupe_key=dedupe, payload={"chat": 7})
            answer = TurnRecord.answering(
                recorded,
                message,
                "phone",
                "Wren.",
                delivery=delivery,
                context_rows=[("message", recorded.message_id)],
            )
            sent.clear()
            return recorded, await memory.store_turn(answer)

        sent = statements_sent(monkeypatch)
        await turn("w1", "reply:w1")  # its statements are known to the connection by now
        recorded, stored = await turn("q1", "reply:q1")
        assert len(sent) == 1, sent
        spelled = await spelled_out(memory, sent)
        assert "INSERT INTO outbox" in spelled[0] and sent[0].endswith("COMMIT")
        assert stored.outbox is not None and stored.outbox.dedupe_key == "reply:q1"
        assert stored.outbox.payload == {"chat": 7, "out_id": stored.message_id}
        assert stored.outbox == (await memory.outbox())[0]  # as stored (newest first)
        provenance = await memory.provenance(stored.message_id)
        assert provenance is not None and provenance.rows == [("message", recorded.message_id)]
        _, again = await turn("q2", "reply:q1")
        assert again.outbox is None and len(await memory.outbox()) == 2


async def test_recall_by_meaning_works_on_postgresql(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21's vectors (bytea here), their index refresh (the snapshot's data version)
    and the recall scores (INSERT OR REPLACE) on PostgreSQL: a fact told on Telegram comes
    back on Discord to a question that shares no word with it."""
    from bot import embedding
    from tests.privacy_world import Account, PrivacyWorld, private_chat

    if embedding.missing():
        pytest.skip(f"recall extra not installed (missing {', '.join(embedding.missing())})")
    monkeypatch.setenv("MIRROR_DB", pg_url)  # the world's config names a file; this wins
    sam, sam_on_discord = Account("telegram", "sam", "Sam"), Account("discord", "sam-d", "Sam")
    async with PrivacyWorld(tmp_path, entrances=("telegram", "discord")) as world:
        assert world.memory is not None and world.memory.engine == "postgresql"
        await world.link(sam, sam_on_discord)
        await world.say(sam, private_chat(sam), "I'm allergic to peanuts")
        for instance in world.instances.values():
            assert await instance.memory.flush_embedder()
        asked = await world.say(
            sam_on_discord, private_chat(sam_on_discord), "is there anything I can't eat?"
        )
        for instance in world.instances.values():
            assert await instance.memory.flush_embedder()
        assert asked.reply is not None
        scores = await world.memory.recall_scores(asked.reply.message_id or 0)
    assert "peanuts" in asked.text
    assert [s for s in scores if s["vector_rank"] is not None and s["fts_rank"] is None]


def test_hot_queries_have_index_paths_on_postgresql(pg_url: str) -> None:
    """With sequential scans and sorts priced out, each hot query (as translated) is served
    by an index, in order: the indexes exist and their order survives the dialect."""
    import psycopg

    from bot.memory.hot_queries import (
        BOT_HOUR_SQL,
        DUE_IDS_SQL,
        GRANTED_SQL,
        RECENT_INCOMING_SQL,
        REPLY_ID_SQL,
        SENT_SINCE_SQL,
        due_params,
    )

    queries = {
        SENT_SINCE_SQL: {"after": 10, "since": 0.0},
        RECENT_INCOMING_SQL: {"conversation": 1, "message": 10, "limit": 3},
        GRANTED_SQL: {"person": 1},
        f"SELECT {REPLY_ID_SQL}": (1,),
        BOT_HOUR_SQL: {"conversation": 1, "since": 0.0},
        DUE_IDS_SQL: due_params("telegram", None, 100.0, 10),
        "SELECT id FROM messages WHERE conversation_id = :c AND id < :i ORDER BY id DESC LIMIT 5": {
            "c": 1,
            "i": 10,
        },
        "SELECT id FROM messages WHERE id IN (SELECT rowid FROM messages_fts"
        " WHERE messages_fts MATCH :q ORDER BY rowid DESC LIMIT 200)": {"q": '"bread"'},
    }
    with psycopg.connect(pg_url, cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_sort = off")
        for sql, params in queries.items():
            statement = translate(sql, True)
            plan = "\n".join(
                row[0]
                for row in conn.execute(f"EXPLAIN {statement.sql}", params)  # type: ignore[arg-type]
            )
            assert "Seq Scan" not in plan, (sql, plan)
            if REPLY_ID_SQL in sql:  # one step back, not the whole conversation's rows
                assert "Index Only Scan Backward" in plan and "Bitmap" not in plan, plan
            if sql != DUE_IDS_SQL:  # that one sorts the few due rows of two index seeks
                assert "Sort Key" not in plan, (sql, plan)


def test_the_turn_views_recent_messages_never_scan_the_messages(pg_url: str) -> None:
    """The generic plan of each instance's newest messages (prepared: `PreparedRead`), on
    10 000 analysed messages: as an IN it hash-joined a sequential scan of them all."""
    import psycopg

    from bot.memory.hot_queries import RECENT_PER_INSTANCE_SQL
    from bot.memory.pg_engine import session_options

    with psycopg.connect(pg_url, autocommit=True, options=session_options(pg_url)) as conn:
        conn.execute(
            "INSERT INTO instances (id, entrance, host, pid, started_at, last_seen, status_since)"
            " SELECT 'i' || n, 'telegram', 'h', n, 0, 0, 0 FROM generate_series(1, 5) n"
        )
        conn.execute(
            "INSERT INTO conversations (entrance, external_id, kind, created_at)"
            " SELECT 'telegram', 'c' || n, 'group', 0 FROM generate_series(1, 50) n"
        )
        conn.execute(
            "INSERT INTO messages (conversation_id, instance_id, entrance, direction, text,"
            " created_at, visibility) SELECT 1 + n % 50, 'i' || (1 + n % 5), 'telegram', 'in',"
            " 'note ' || n, n, 'group' FROM generate_series(1, 10000) n"
        )
        conn.execute("ANALYZE")
        sql = translate(RECENT_PER_INSTANCE_SQL).sql.replace("%(skip)s", "$1")
        for name in ("everyone", "conversation", "person"):
            sql = sql.replace(f"%({name})s", {"everyone": "true"}.get(name, "NULL"))
        conn.execute(f"PREPARE recent (bigint) AS {sql}")
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN EXECUTE recent(2)"))
    assert "Seq Scan on messages" not in plan, plan


def test_postgresql_schema_has_every_sqlite_table_column_and_index(pg_url: str) -> None:
    """The two schemas do not drift: every table, column and named index of schema/*.sql
    exists in schema/postgresql/*.sql (FTS5 tables excepted: they are columns there)."""
    import sqlite3

    from bot.memory.schema import split_statements

    lite = sqlite3.connect(":memory:")
    for _, path in schema_files():
        for statement in split_statements(path.read_text(encoding="utf-8")):
            lite.execute(statement)
    tables = [
        name
        for (name,) in lite.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '%fts%'"
        )
    ]
    columns = {(t, row[1]) for t in tables for row in lite.execute(f"PRAGMA table_info({t})")}
    indexes = {
        name
        for (name,) in lite.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    }
    pg_columns = set(
        sql_rows(
            pg_url,
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public'",
        )
    )
    pg_indexes = {row[0] for row in sql_rows(pg_url, "SELECT indexname FROM pg_indexes")}
    assert columns - pg_columns == set()
    assert indexes - pg_indexes == set()
