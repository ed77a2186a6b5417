"""Four instance processes on one memory.db, turning as fast as they can.

Each worker is its own OS process (`python -m bench.processes worker ...`) with its own
instance id and entrance, running `Mind.turn` (guard and offline brain included) in a loop
on a copy of the 100k prefilled memory, in its entrance's conversations. After two warm-up
turns (the first request with a time loads dateparser: about a second) each says it is
ready; all start together and stop after SECONDS. Reported: total turns/s, p50 and p99
per turn with and without the model step (the offline brain is CPU work here; a real model
is a wait), the split of the slowest 1%, 'database is locked' errors (goal 0), other errors
and turns the guard refused (rate buckets as in bench.common.LIMITS_TOML: never).

The floor, measured in the same run right before: four processes doing one-row insert
transactions with sqlite3 directly and the pragmas of bot.memory (WAL, synchronous=NORMAL,
busy_timeout, BEGIN IMMEDIATE). Reported as turns/s divided by floor commits/s; a turn
commits three times (the incoming message, the guard's rate buckets, the reply), so the
database's share of the work is about three times that ratio.

python -m bench.processes [SECONDS] [FLOOR_SECONDS]     (default: 20 5)
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import socket
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import prefill
from bench.common import (
    Figure,
    emit,
    median,
    percentile,
    print_figures,
    progress,
    read_json_line,
    run_dir,
    spawn_python,
    write_config,
)

WORKERS = 4
SIZE = 100_000
BUSY_TIMEOUT_MS = 5000
SPLIT = ("guard", "ingest", "context", "model", "store")


# Children ------------------------------------------------------------------------------


def wait_for_go() -> None:
    """Block until the parent writes a line (every worker starts at once)."""
    sys.stdin.readline()


async def turn_worker(config_path: str, entrance: str, seconds: float, shift: float) -> None:
    """One instance process: Mind.turn in a loop on its own instance id."""
    from bench.turn import incoming
    from bot.config import load_config
    from bot.memory import Memory
    from bot.mind import Mind

    logging.basicConfig(level=logging.ERROR)
    config = load_config(Path(config_path))
    instance = f"bench-{entrance}"
    world = prefill.World(prefill.SEED)
    rng = random.Random(100 + prefill.ENTRANCES.index(entrance))
    async with Memory(config.memory.path, busy_timeout_ms=config.memory.busy_timeout_ms) as memory:
        memory.clock = lambda: time.time() - shift
        await memory.register_instance(instance, entrance, socket.gethostname(), os.getpid(), None)
        mind = Mind(memory, config, instance_id=instance, entrance=entrance)
        for text in ("hello there", "can you call me on Friday at 3pm?"):  # imports, caches
            warm_up = incoming(world, rng, 0, memory.now, entrance)
            await mind.turn(warm_up.model_copy(update={"text": text}))
        emit({"ready": instance})
        await asyncio.get_running_loop().run_in_executor(None, wait_for_go)
        latencies: list[float] = []
        parts: list[list[float]] = []  # per answered turn: ms of each part of SPLIT
        locked, errors, refused, n = 0, 0, 0, 1
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            message = incoming(world, rng, n, memory.now, entrance)
            n += 1
            started = time.perf_counter()
            try:
                reply = await mind.turn(message)
            except sqlite3.OperationalError as exc:
                locked += "locked" in str(exc)
                errors += "locked" not in str(exc)
                continue
            except Exception:
                errors += 1
                continue
            if reply is None or reply.model is None:
                refused += 1
                continue
            latencies.append(time.perf_counter() - started)
            split = mind.last_timings
            parts.append([round(getattr(split, p, 0.0) * 1000, 1) for p in SPLIT])
    emit(
        {
            "instance": instance,
            "latencies": latencies,
            "parts": parts,
            "locked": locked,
            "errors": errors,
            "refused": refused,
        }
    )


def floor_worker(path: str, seconds: float) -> None:
    """The raw SQLite floor: one-row insert transactions, same pragmas as bot.memory."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    emit({"ready": os.getpid()})
    wait_for_go()
    commits = locked = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO floor (pid, at) VALUES (?, ?)", (os.getpid(), time.time()))
            conn.execute("COMMIT")
            commits += 1
        except sqlite3.OperationalError as exc:
            locked += "locked" in str(exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    conn.close()
    emit({"commits": commits, "locked": locked})


# The parent ----------------------------------------------------------------------------


def start_together(args_list: list[list[str]]) -> list[dict[str, object]]:
    """Spawn children, wait until each is ready, start them at once, collect results."""
    children = [spawn_python("-m", "bench.processes", *args) for args in args_list]
    try:
        for child in children:
            read_json_line(child)
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        return [read_json_line(child) for child in children]
    finally:
        for child in children:
            try:
                child.wait(timeout=30)
            except Exception:
                child.kill()


def measure_floor(folder: Path, seconds: float) -> tuple[float, int]:
    """Commits/s of four raw sqlite3 processes, and their 'database is locked' count."""
    path = folder / "floor.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE floor (id INTEGER PRIMARY KEY, pid INTEGER, at REAL)")
    conn.close()
    results = start_together([["floor", str(path), str(seconds)] for _ in range(WORKERS)])
    commits = sum(int(r["commits"]) for r in results)  # type: ignore[call-overload]
    return commits / seconds, sum(int(r["locked"]) for r in results)  # type: ignore[call-overload]


async def shift_for(db: Path) -> float:
    from bot.memory import Memory

    async with Memory(db) as memory:
        return await prefill.shift_clock(memory)


@dataclass
class TurnResults:
    turns_per_s: float
    p50: float
    p99: float
    p99_no_model: float
    locked: int
    errors: int
    refused: int
    slowest: list[list[float]]  # the split (ms, SPLIT order) of the slowest 1 % of turns


def measure_turns(folder: Path, seconds: float) -> TurnResults:
    db = prefill.working_copy(SIZE, folder)
    config = write_config(folder, db)
    shift = asyncio.run(shift_for(db))
    results = start_together(
        [
            ["worker", str(config), entrance, str(seconds), str(shift)]
            for entrance in prefill.ENTRANCES[:WORKERS]
        ]
    )
    latencies = [x for r in results for x in r["latencies"]]  # type: ignore[attr-defined]
    parts = [x for r in results for x in r["parts"]]  # type: ignore[attr-defined]
    ranked = sorted(zip(latencies, parts, strict=True), reverse=True)
    no_model = [sum(split) - split[SPLIT.index("model")] for split in parts]
    return TurnResults(
        turns_per_s=len(latencies) / seconds,
        p50=median(latencies),
        p99=percentile(latencies, 0.99),
        p99_no_model=percentile(no_model, 0.99) / 1000,
        locked=sum(int(r["locked"]) for r in results),  # type: ignore[call-overload]
        errors=sum(int(r["errors"]) for r in results),  # type: ignore[call-overload]
        refused=sum(int(r["refused"]) for r in results),  # type: ignore[call-overload]
        slowest=[split for _, split in ranked[: max(1, len(ranked) // 100)]],
    )


def run(seconds: float = 20, floor_seconds: float = 5) -> list[Figure]:
    asyncio.run(prefill.ensure([SIZE]))
    folder = run_dir("processes")
    try:
        progress(f"processes: raw SQLite floor, {WORKERS} processes for {floor_seconds:.0f} s")
        floor, floor_locked = measure_floor(folder, floor_seconds)
        progress(f"processes: {WORKERS} instance processes turning for {seconds:.0f} s")
        turns = measure_turns(folder, seconds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ratio = turns.turns_per_s / floor if floor else float("nan")
    worst = [sum(split[i] for split in turns.slowest) / len(turns.slowest) for i in range(5)]
    return [
        Figure(f"4 processes: turns/s ({seconds:.0f} s, 100k memory)", f"{turns.turns_per_s:.0f}"),
        Figure("4 processes: p50 per turn (model included)", f"{turns.p50 * 1000:.1f} ms"),
        Figure("4 processes: p99 per turn (model included)", f"{turns.p99 * 1000:.1f} ms"),
        Figure("4 processes: p99 per turn (model excluded)", f"{turns.p99_no_model * 1000:.1f} ms"),
        Figure(
            f"4 processes: slowest 1% {'/'.join(SPLIT)} ms",
            "/".join("n/a" if i == 0 and not v else f"{v:.0f}" for i, v in enumerate(worst)),
        ),
        Figure(
            "4 processes: 'database is locked' errors", str(turns.locked), "0", not turns.locked
        ),
        Figure("4 processes: other turn errors", str(turns.errors), "0", not turns.errors),
        Figure("4 processes: turns the guard refused", str(turns.refused), "0", not turns.refused),
        Figure(
            f"raw SQLite floor: commits/s of 4 processes ({floor_seconds:.0f} s)", f"{floor:.0f}"
        ),
        Figure("raw floor: 'database is locked' errors", str(floor_locked), "0", not floor_locked),
        Figure("turns/s / floor commits/s", f"{ratio:.4f}"),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        config_path, entrance, seconds, shift = sys.argv[2:6]
        asyncio.run(turn_worker(config_path, entrance, float(seconds), float(shift)))
    elif sys.argv[1:2] == ["floor"]:
        floor_worker(sys.argv[2], float(sys.argv[3]))
    else:
        print_figures(run(*(float(a) for a in sys.argv[1:3])))
