"""SQLite and PostgreSQL side by side: the turn, four writing processes, awareness.

A PostgreSQL cluster (tests/pg.py's, with fsync and synchronous commit ON, as a server
would run) on 127.0.0.1, kept under var/bench/pg-cluster between runs; the prefilled SQLite
memories of bench/prefill.py are copied into it with `bot.memory.pg_copy` (what `mirror
memory migrate` does) once per prefill and schema (2 minutes at 1M messages), settled as
a running memory would be (the guard's tables pruned, vacuumed: `settle`), and kept as
template databases: a run works on a file copy of one (seconds). Then:
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

BENCH_PG_TURN_ONLY=1: the turn figures only; BENCH_PG_PROFILE=1: where the PostgreSQL
turns' time goes, statement by statement (stderr; =full: whole texts); BENCH_PG_FRESH=1:
a throwaway cluster and a fresh copy; BENCH_PG_SYNC=on: commits wait for the WAL flush.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from typing import Any

from bench import prefill
from bench.awareness import latencies_ms
from bench.common import (
    ROOT,
    VAR,
    Figure,
    cpu_reference_ms,
    cpu_seconds,
    median,
    percentile,
    print_figures,
    progress,
    read_json_line,
    run_dir,
    spawn_python,
)
from bench.turn import BLOCK, PARTS, Turner, label

TURNS = 300
SIZES = (10_000, 1_000_000)
TURN_GOAL_MS = 10.0
DELIVERY_GOAL_MS = 100.0


# The cluster lives here across runs: it keeps each prefilled memory's PostgreSQL copy as a
# template database (the copy of 1M messages takes minutes; a run's own database is a file
# copy of the template: seconds). BENCH_PG_FRESH=1: a throwaway cluster and a fresh copy.
CLUSTER_DIR = VAR / "pg-cluster"
SCHEMA_DIR = ROOT / "schema" / "postgresql"


def cluster() -> object:
    sys.path.insert(0, str(ROOT))
    from tests.pg import Cluster, _bin_dir

    found = _bin_dir()
    if found is None:
        raise SystemExit("bench.pg: PostgreSQL is not installed (scripts/install-test-deps.sh)")
    fresh = os.environ.get("BENCH_PG_FRESH", "").lower() in {"1", "on", "yes"}
    return Cluster(found, durable=True, keep=None if fresh else CLUSTER_DIR)


def schema_key(planner: bool) -> str:
    """A digest of schema/postgresql's numbered files (and planner.sql when `planner`)."""
    digest = hashlib.sha256()
    for path in sorted(SCHEMA_DIR.glob("*.sql")):
        if planner or path.name[0].isdigit():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:8]


# How a template is made beyond the copy (`settle`): part of its name, so a change of it
# makes new templates.
TEMPLATE_RECIPE = "settled-1"


def template_name(size: int, planner: bool = True) -> str:
    """The cached copy of `size`'s prefilled memory for this schema (and planner.sql)."""
    recipe = f"{prefill.cache_path(size).name}/{TEMPLATE_RECIPE}"
    tag = hashlib.sha256(recipe.encode()).hexdigest()[:6]
    return f"bench_{size}_{tag}_{schema_key(False)}_{schema_key(True) if planner else 'x'}"


def databases(server: Any) -> set[str]:
    import psycopg

    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def copy_in(server: Any, size: int) -> tuple[str, float]:
    """A database of this run holding `size`'s prefilled memory, and the seconds it took:
    a file copy of the cached template, which is made first when missing (from the
    template of the same numbered schema files when there is one, planner.sql applied on
    it; otherwise copied from SQLite by `bot.memory.pg_copy`, what `mirror memory migrate`
    does)."""
    from bot.memory import Memory
    from bot.memory.pg_copy import copy_memory

    started = time.perf_counter()
    found = databases(server)
    for stale in found:  # a run that died before dropping its database (not this run's)
        if stale.startswith(("run_", "test_")) and not stale.startswith(f"run_{os.getpid()}_"):
            server.admin(f"DROP DATABASE {stale} WITH (FORCE)")
    wanted = template_name(size)
    sibling = template_name(size, planner=False).removesuffix("_x")
    for stale in found:  # another prefill or numbered schema: 1-2 GB each, never used again
        if stale.startswith(f"bench_{size}_") and not stale.startswith(sibling):
            server.admin(f"DROP DATABASE {stale}")
    if wanted not in found:
        bases = [n for n in sorted(found) if n.startswith(sibling) and "building" not in n]
        building = f"{wanted}_building"
        server.admin(f"DROP DATABASE IF EXISTS {building}")
        if bases:
            progress(f"pg: {bases[0]} -> {wanted} (planner.sql changed)")
            server.admin(f"CREATE DATABASE {building} TEMPLATE {bases[0]} STRATEGY FILE_COPY")

            async def migrate() -> None:
                async with Memory(server.url(building)):
                    pass

            asyncio.run(migrate())
        else:
            progress(f"pg: copying the {size:,}-message memory into PostgreSQL (cached after)")
            server.admin(f"CREATE DATABASE {building} TEMPLATE template0")
            copy_memory(prefill.cache_path(size), server.url(building))
        settle(server, building)
        server.admin(f"ALTER DATABASE {building} RENAME TO {wanted}")
    name = f"run_{os.getpid()}_{size}"
    server.admin(f"CREATE DATABASE {name} TEMPLATE {wanted} STRATEGY FILE_COPY")
    return server.url(name), time.perf_counter() - started


def settle(server: Any, name: str) -> None:
    """Bring a copied memory to the state of one that has been running: the guard's tables
    pruned as its gate prunes them (the prefill writes weeks of outgoing_log, a live memory
    keeps two days), then vacuumed, as autovacuum would have by then. Without this, the
    first turn's prune deletes 440 000 rows at 1M messages, and until autovacuum comes by
    the planner walks their dead index entries whenever it looks for the newest `at` (the
    guard's window read: 0.5-2 ms of planning instead of 0.08 ms)."""
    import psycopg

    from bot.memory import Memory

    async def prune() -> None:
        async with Memory(server.url(name)) as memory:
            await prefill.shift_clock(memory)
            await memory.prune_guard()

    asyncio.run(prune())
    with psycopg.connect(server.url(name), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


async def turns_side_by_side(urls: dict[int, str], turns: int) -> list[Figure]:
    folder = run_dir("pg-turn")
    turners: dict[tuple[str, int], Turner] = {}
    trips = dict.fromkeys(urls, 0)
    count_round_trips()
    profiling = os.environ.get("BENCH_PG_PROFILE", "").lower() in {"1", "on", "yes", "full"}
    if profiling:
        profile_statements()
    for size, url in urls.items():
        turners[("sqlite", size)] = Turner(prefill.working_copy(size, folder))
        turners[("postgresql", size)] = Turner(url)  # type: ignore[arg-type]
    try:
        for turner in turners.values():
            await turner.open()
        progress(f"pg: {turns} turns on each of {len(turners)} memories, interleaved")
        PROFILE.clear()  # the warm-up's statements are not the turns'
        for _ in range(turns // BLOCK):
            for (engine, size), turner in turners.items():
                before = ROUND_TRIPS[0]
                await turner.turns(BLOCK)
                if engine == "postgresql":
                    trips[size] += ROUND_TRIPS[0] - before
        if profiling:
            print_profile(turns // BLOCK * BLOCK * len(urls))
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
                f"turn @{label(size)} p50 guard/ingest/context/store ms: SQLite | PG",
                " | ".join(
                    "/".join(timings.part(part, 0.5) for part in PARTS) for timings in (lite, pg)
                ),
            ),
            Figure(  # the process's, all threads: what the host's load disturbs least
                f"turn @{label(size)} CPU p50: SQLite | PostgreSQL (this process)",
                f"{median(lite.cpu):.2f} | {median(pg.cpu):.2f} ms",
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


# BENCH_PG_PROFILE=1: time each psycopg execute of the PostgreSQL turns by its text
# (literals and numbers masked), printed on stderr after the turns: where a turn's time goes.
PROFILE: dict[str, list[float]] = {}
_MASK = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?(?:e-?\d+)?\b")


def profile_statements() -> None:
    import psycopg

    execute = psycopg.ClientCursor.execute

    def timed(self, query, *args, **kwargs):
        started = time.perf_counter()
        try:
            return execute(self, query, *args, **kwargs)
        finally:
            text = query if isinstance(query, str) else str(query)
            masked = _MASK.sub("?", " ".join(text.split()))
            where = masked.find(" WHERE ")  # the view's selects differ after their FROM
            key = masked[:160] if where < 0 else f"{masked[:40]} …{masked[where:][:150]}"
            if os.environ.get("BENCH_PG_PROFILE") == "full":  # whole texts
                key = masked
            PROFILE.setdefault(key, []).append((time.perf_counter() - started) * 1000)

    psycopg.ClientCursor.execute = timed  # type: ignore[method-assign]


def print_profile(turns: int) -> None:
    ranked = sorted(PROFILE.items(), key=lambda item: -sum(item[1]))
    total = sum(sum(times) for times in PROFILE.values())
    print(f"PG statements: {total / max(turns, 1):.2f} ms per turn in execute", file=sys.stderr)
    for key, times in ranked[:25]:
        per = sum(times) / max(turns, 1)
        print(
            f"{per:7.2f} ms/turn {len(times) / max(turns, 1):5.2f}x p50 {median(times):6.2f}"
            f" max {max(times):7.2f}  {key}",
            file=sys.stderr,
        )


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
    urls: dict[int, str] = {}
    made: list[str] = []  # this run's databases, dropped at the end (the cluster is kept)
    try:
        for size in sizes:
            url, spent = copy_in(server, size)
            rows.append(
                Figure(
                    f"PG database of {label(size)} messages (migrate, or copy of the cached one)",
                    f"{spent:.0f} s",
                )
            )
            urls[size] = with_options(url)
        rows += asyncio.run(turns_side_by_side(urls, turns))
        if os.environ.get("BENCH_PG_TURN_ONLY", "").lower() in {"1", "on", "yes"}:
            return rows
        folder = run_dir("pg-processes")
        try:
            progress(f"pg: four writing processes for {seconds:.0f} s on each engine")
            rows += processes(str(folder / "memory.db"), "SQLite", seconds)
            made.append(server.new_database(empty=True))  # type: ignore[attr-defined]
            rows += processes(with_options(made[-1]), "PostgreSQL", seconds)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        progress(f"pg: awareness (writer and courier) for {seconds:.0f} s")
        rows += awareness(urls[min(sizes)], seconds)
    finally:
        try:
            for url in [*urls.values(), *made]:
                server.drop(url.split("?", 1)[0])  # type: ignore[attr-defined]
        finally:
            server.stop()  # type: ignore[attr-defined]
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["hammer"]:
        logging.basicConfig(level=logging.ERROR)
        asyncio.run(hammer(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    else:
        chosen = tuple(int(a) for a in sys.argv[2:]) or SIZES
        # The host's speed drifts (this machine: 1.5-2x within an hour): said with the figures.
        reference = "machine: CPU reference (3M-step Python loop), start | end"
        before = cpu_reference_ms()
        rows = run(float(sys.argv[1]) if sys.argv[1:] else 10, sizes=chosen)
        print_figures([*rows, Figure(reference, f"{before:.0f} | {cpu_reference_ms():.0f} ms")])
