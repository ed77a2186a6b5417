"""SQLite and PostgreSQL side by side: the turn, four writing processes, awareness.

A throwaway PostgreSQL cluster (tests/pg.py's, with fsync and synchronous commit ON, as a
server would run) on 127.0.0.1; the prefilled SQLite memories of bench/prefill.py are
copied into it with `bot.memory.pg_copy` (what `mirror memory migrate` does), then:
- turn: the same turns as bench/turn.py, at 10k and 1M messages, on the SQLite working
  copy and on its PostgreSQL copy, interleaved in blocks (goal on PostgreSQL at 1M:
  p50 <= 10 ms on loopback);
- processes: four processes recording messages and taking tokens from one shared bucket
  as fast as they can for SECONDS (goal: no error reaches them; the bucket never gives
  more than it holds);
- awareness: bench/awareness.py's writer and courier on PostgreSQL: commit -> delivery by
  the outbox courier, woken by LISTEN/NOTIFY (goal p99 <= 100 ms), and the idle courier's
  CPU.

python -m bench.pg [SECONDS [SIZE ...]]      (default: 10 s; 10000 1000000 messages)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from bench import prefill
from bench.awareness import latencies_ms
from bench.common import (
    Figure,
    cpu_seconds,
    median,
    percentile,
    print_figures,
    progress,
    read_json_line,
    run_dir,
    spawn_python,
)
from bench.turn import BLOCK, Turner, label

TURNS = 300
SIZES = (10_000, 1_000_000)
TURN_GOAL_MS = 10.0
DELIVERY_GOAL_MS = 100.0


def cluster() -> object:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.pg import Cluster, _bin_dir

    found = _bin_dir()
    if found is None:
        raise SystemExit("bench.pg: PostgreSQL is not installed (scripts/install-test-deps.sh)")
    return Cluster(found, durable=True)


def copy_in(size: int, url: str) -> float:
    from bot.memory.pg_copy import copy_memory

    started = time.perf_counter()
    copy_memory(prefill.cache_path(size), url)
    return time.perf_counter() - started


async def turns_side_by_side(urls: dict[int, str], turns: int) -> list[Figure]:
    folder = run_dir("pg-turn")
    turners: dict[tuple[str, int], Turner] = {}
    trips = dict.fromkeys(urls, 0)
    count_round_trips()
    for size, url in urls.items():
        turners[("sqlite", size)] = Turner(prefill.working_copy(size, folder))
        turners[("postgresql", size)] = Turner(url)  # type: ignore[arg-type]
    try:
        for turner in turners.values():
            await turner.open()
        progress(f"pg: {turns} turns on each of {len(turners)} memories, interleaved")
        for _ in range(turns // BLOCK):
            for (engine, size), turner in turners.items():
                before = ROUND_TRIPS[0]
                await turner.turns(BLOCK)
                if engine == "postgresql":
                    trips[size] += ROUND_TRIPS[0] - before
    finally:
        for turner in turners.values():
            await turner.memory.close()
        shutil.rmtree(folder, ignore_errors=True)
    rows = []
    for size in urls:
        lite, pg = turners[("sqlite", size)].timings, turners[("postgresql", size)].timings
        top = size == max(urls)
        pg50 = median(pg.total)
        rows += [
            Figure(
                f"turn @{label(size)} p50: SQLite | PostgreSQL",
                f"{median(lite.total):.2f} | {pg50:.2f} ms",
                f"PG <= {TURN_GOAL_MS:.0f} ms" if top else "",
                pg50 <= TURN_GOAL_MS if top else None,
            ),
            Figure(
                f"turn @{label(size)} p99: SQLite | PostgreSQL",
                f"{percentile(lite.total, 0.99):.2f} | {percentile(pg.total, 0.99):.2f} ms",
            ),
            Figure(
                f"turn @{label(size)} PG p50 guard/ingest/context/store ms",
                "/".join(pg.part(part, 0.5) for part in ("guard", "ingest", "context", "store")),
            ),
            Figure(
                f"turn @{label(size)} PG psycopg calls per turn (executemany: per row)",
                f"{trips[size] / max(len(pg.total) + pg.refused, 1):.1f}",
            ),
        ]
    return rows


# Calls this process makes on the server during the PostgreSQL turns (psycopg executes, an
# executemany counted per row; the process's background work included): each execute is a
# round trip, which on a loaded 2-core host costs 0.5-2 ms of scheduling whatever it asks.
ROUND_TRIPS = [0]


def count_round_trips() -> None:
    import psycopg

    if getattr(psycopg.ClientCursor, "_bench_counted", False):
        return
    execute, executemany = psycopg.ClientCursor.execute, psycopg.ClientCursor.executemany

    def counted(self, *args, **kwargs):
        ROUND_TRIPS[0] += 1
        return execute(self, *args, **kwargs)

    def counted_many(self, query, rows, **kwargs):
        rows = list(rows)
        ROUND_TRIPS[0] += len(rows)
        return executemany(self, query, rows, **kwargs)

    psycopg.ClientCursor.execute = counted  # type: ignore[method-assign]
    psycopg.ClientCursor.executemany = counted_many  # type: ignore[method-assign,assignment]
    psycopg.ClientCursor._bench_counted = True  # type: ignore[attr-defined]


def with_options(url: str) -> str:
    """BENCH_PG_SYNC=on: the memory's connections commit with synchronous_commit=on (a WAL
    flush per commit), to compare with the default (off: bot.memory.pg_engine)."""
    if os.environ.get("BENCH_PG_SYNC", "").lower() in {"on", "1", "yes"}:
        return f"{url}?options=-c%20synchronous_commit%3Don"
    return url


# Four writing processes ---------------------------------------------------------------------

BURST = 1000.0


async def hammer(location: str, name: str, seconds: float) -> None:
    from bot.memory import BucketSpec, Memory
    from bot.models import Author, Incoming

    commits, errors, taken = 0, 0, 0
    async with Memory(location) as memory:
        print(json.dumps({"ready": name}), flush=True)
        sys.stdin.readline()
        deadline = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            try:
                await memory.record_incoming(
                    Incoming(
                        entrance="local",
                        conversation_id=name,
                        author=Author(external_id=name),
                        text=f"{name} says {n}",
                        platform_message_id=f"{name}-{n}",
                    ),
                    name,
                )
                empty, _ = await memory.take_tokens([BucketSpec("shared", 0.0, BURST)])
                taken += empty is None
                commits += 2
            except Exception as exc:  # counted: the figure is that none happen
                errors += 1
                print(f"{name}: {exc}", file=sys.stderr)
    print(json.dumps({"commits": commits, "errors": errors, "taken": taken}), flush=True)


def processes(location: str, engine: str, seconds: float) -> list[Figure]:
    children = [
        spawn_python("-m", "bench.pg", "hammer", location, f"w{i}", str(seconds)) for i in range(4)
    ]
    try:
        for child in children:
            read_json_line(child)
        started = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [read_json_line(child) for child in children]
        spent = time.perf_counter() - started
    finally:
        for child in children:
            child.wait(timeout=60)
    commits = sum(int(r["commits"]) for r in results)  # type: ignore[call-overload]
    errors = sum(int(r["errors"]) for r in results)  # type: ignore[call-overload]
    taken = sum(int(r["taken"]) for r in results)  # type: ignore[call-overload]
    return [
        Figure(f"4 processes on {engine}: commits/s (record + bucket)", f"{commits / spent:.0f}"),
        Figure(f"4 processes on {engine}: errors reaching them", str(errors), "0", errors == 0),
        Figure(
            f"4 processes on {engine}: tokens taken from a bucket of {BURST:.0f}",
            str(taken),
            f"<= {BURST:.0f}",
            taken <= BURST,
        ),
    ]


def awareness(url: str, seconds: float, idle_seconds: float = 5) -> list[Figure]:
    args = [url, str(seconds)]
    children = [
        spawn_python("-m", "bench.awareness", role, *args) for role in ("writer", "courier")
    ]
    try:
        for child in children:
            read_json_line(child)
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        written, delivered = (read_json_line(child) for child in children)
        time.sleep(0.5)
        pid = children[1].pid
        before, started = cpu_seconds(pid), time.perf_counter()
        time.sleep(idle_seconds)
        idle = (cpu_seconds(pid) - before) / (time.perf_counter() - started) * 100
        assert children[1].stdin is not None
        children[1].stdin.write("stop\n")
        children[1].stdin.flush()
    finally:
        for child in children:
            child.wait(timeout=30)
    rows: list[list[float]] = written["outbox"]  # type: ignore[assignment]
    got = {int(i): at for i, at in delivered["delivered"]}  # type: ignore[attr-defined]
    delivery = latencies_ms(rows, got)
    p99 = percentile(delivery, 0.99)
    return [
        Figure(
            f"PG awareness: commit -> outbox delivered p50 ({len(delivery)} rows)",
            f"{percentile(delivery, 0.5):.1f} ms",
        ),
        Figure(
            "PG awareness: commit -> outbox delivered p99 (NOTIFY)",
            f"{p99:.1f} ms",
            f"<= {DELIVERY_GOAL_MS:.0f} ms",
            p99 <= DELIVERY_GOAL_MS,
        ),
        Figure(
            "PG awareness: rows never delivered",
            str(len(rows) - len(delivery)),
            "0",
            len(rows) == len(delivery),
        ),
        Figure(f"PG idle courier (LISTEN): CPU over {idle_seconds:.0f} s", f"{idle:.2f}% core"),
    ]


def run(seconds: float = 10, turns: int = TURNS, sizes: tuple[int, ...] = SIZES) -> list[Figure]:
    logging.getLogger("bot").setLevel(logging.WARNING)
    asyncio.run(prefill.ensure(sizes))
    server = cluster()
    server.start()  # type: ignore[attr-defined]
    rows: list[Figure] = []
    try:
        urls = {}
        for size in sizes:
            url = server.new_database(empty=True)  # type: ignore[attr-defined]
            progress(f"pg: copying the {size:,}-message memory into PostgreSQL")
            spent = copy_in(size, url)
            rows.append(
                Figure(f"migrate SQLite -> PostgreSQL, {label(size)} messages", f"{spent:.0f} s")
            )
            urls[size] = with_options(url)
        rows += asyncio.run(turns_side_by_side(urls, turns))
        folder = run_dir("pg-processes")
        try:
            progress(f"pg: four writing processes for {seconds:.0f} s on each engine")
            rows += processes(str(folder / "memory.db"), "SQLite", seconds)
            rows += processes(
                with_options(server.new_database(empty=True)),  # type: ignore[attr-defined]
                "PostgreSQL",
                seconds,
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        progress(f"pg: awareness (writer and courier) for {seconds:.0f} s")
        rows += awareness(urls[min(sizes)], seconds)
    finally:
        server.stop()  # type: ignore[attr-defined]
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["hammer"]:
        logging.basicConfig(level=logging.ERROR)
        asyncio.run(hammer(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    else:
        chosen = tuple(int(a) for a in sys.argv[2:]) or SIZES
        print_figures(run(float(sys.argv[1]) if sys.argv[1:] else 10, sizes=chosen))
