"""The one seam onto aiosqlite's private API (`bot.memory.database.run_in_thread`).

memory.db runs each logical write as one function in the connection's thread through
aiosqlite's private `Connection._execute(fn, *args)` and `_conn`, because every public
await costs a thread hand-off. A new aiosqlite may rename or reshape either; these tests
say so by name, instead of letting every memory test fail with an AttributeError.
"""

from __future__ import annotations

import inspect
import sqlite3
import threading
from pathlib import Path

import aiosqlite
import pytest

from bot.memory.database import run_in_thread

CHANGED = (
    f"aiosqlite {aiosqlite.__version__} changed the private API that "
    "bot.memory.database.run_in_thread relies on"
)


def test_aiosqlite_still_has_a_private_execute_taking_a_function_and_its_arguments() -> None:
    execute = getattr(aiosqlite.Connection, "_execute", None)
    assert execute is not None, f"{CHANGED}: Connection._execute is gone"
    assert inspect.iscoroutinefunction(execute), (
        f"{CHANGED}: Connection._execute is no longer a coroutine function"
    )
    parameters = list(inspect.signature(execute).parameters.values())
    assert [p.name for p in parameters[:2]] == ["self", "fn"], (
        f"{CHANGED}: Connection._execute{inspect.signature(execute)} no longer takes (fn, …)"
    )
    assert any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters), (
        f"{CHANGED}: Connection._execute{inspect.signature(execute)} no longer takes *args"
    )


def test_aiosqlite_still_exposes_its_sqlite3_connection_as_conn() -> None:
    assert hasattr(aiosqlite.Connection, "_conn"), f"{CHANGED}: Connection._conn is gone"


async def test_the_seam_runs_the_function_in_the_connections_thread_on_its_connection(
    tmp_path: Path,
) -> None:
    conn = await aiosqlite.connect(tmp_path / "seam.db", isolation_level=None)
    try:
        # Learn the connection's thread through the public API: a SQL function runs there.
        await conn.create_function("thread_id", 0, threading.get_ident)
        async with conn.execute("SELECT thread_id()") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        worker = row[0]
        assert worker != threading.get_ident()

        def probe(raw: sqlite3.Connection, table: str, value: int) -> tuple[int, bool]:
            # A TEMP table is private to one sqlite3 connection: the public API sees it
            # below only if this ran on the aiosqlite connection's own sqlite3 connection.
            raw.execute(f"CREATE TEMP TABLE {table} (v INTEGER)")
            raw.execute(f"INSERT INTO {table} VALUES (?)", (value,))
            return threading.get_ident(), isinstance(raw, sqlite3.Connection)

        ran_in, is_sqlite3 = await run_in_thread(conn, probe, "seam_probe", 42)
        assert is_sqlite3, f"{CHANGED}: _conn is not a sqlite3.Connection"
        assert ran_in == worker, f"{CHANGED}: _execute no longer runs in the connection's thread"
        async with conn.execute("SELECT v FROM temp.seam_probe") as cursor:
            seen = await cursor.fetchall()
        assert [tuple(r) for r in seen] == [(42,)], (
            f"{CHANGED}: _conn is not the connection that aiosqlite itself uses"
        )
    finally:
        await conn.close()


async def test_an_error_in_the_function_reaches_the_awaiting_caller(tmp_path: Path) -> None:
    conn = await aiosqlite.connect(tmp_path / "seam.db", isolation_level=None)
    try:

        def broken(raw: sqlite3.Connection) -> None:
            raw.execute("SELECT * FROM no_such_table")

        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            await run_in_thread(conn, broken)
    finally:
        await conn.close()


async def test_a_failed_connect_leaves_no_worker_thread_behind(tmp_path: Path) -> None:
    from bot.memory.database import connect

    before = set(threading.enumerate())
    with pytest.raises(sqlite3.OperationalError):
        await connect(tmp_path)  # a folder is no database
    assert hasattr(aiosqlite.connect(tmp_path / "x.db"), "_thread"), (
        f"{CHANGED}: Connection._thread is gone (bot.memory.database.connect joins it)"
    )
    leftover = [
        t
        for t in set(threading.enumerate()) - before
        if t.is_alive() and not t.name.startswith("asyncio_")  # the loop's own executor
    ]
    assert leftover == []


def test_a_memory_path_that_is_a_folder_is_one_clean_line_every_time(tmp_path: Path) -> None:
    """It once printed "Exception in thread … Event loop is closed" in about 3 runs of 5."""
    from tests.conftest import run_mirror

    folder = tmp_path / "memory.db"
    folder.mkdir()
    for _ in range(6):
        for command in (["soul", "history"], ["memory", "log"]):
            result = run_mirror(*command, MIRROR_DB=str(folder))
            assert result.returncode == 2
            assert result.stderr.strip().splitlines() == [
                f"mirror: cannot open {folder}: unable to open database file"
            ], result.stderr
