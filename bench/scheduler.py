"""One scheduler tick with 100k intentions and 10k conflicts.

The memory (built once, cached as var/bench/scheduler-I-C-sSCHEMA.db): C pairs of
overlapping intentions from two instances (C conflicts for the coordinator) and the rest
spread one an hour over the following years, all due from a month on, all open. On a
working copy, one `Scheduler` (the leader) ticks:
- first: its first tick on this memory (after a warm-up tick on an empty one, so that
  first-call imports are not counted), which surfaces 100 items to the outbox;
- busy: every tick until all C items are surfaced (100 a tick), p50 and max;
- idle: 20 ticks once nothing is left to surface.
Goal: a tick <= 50 ms (first, busy p50 and idle p50).

python -m bench.scheduler [INTENTIONS] [CONFLICTS]    (default: 100000 10000)
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time
from pathlib import Path

from bench.common import (
    VAR,
    Figure,
    bench_config,
    copy_database,
    median,
    print_figures,
    progress,
    run_dir,
)
from bench.prefill import prune_stale, schema_tag
from bot.memory import Memory, NewIntention
from bot.scheduler import Scheduler

DAY = 86400.0
GOAL_MS = 50.0
BATCH = 5000


def intentions(total: int, conflicts: int, start: float) -> list[NewIntention]:
    """`conflicts` overlapping pairs from two instances, the rest spread out one per hour."""
    made = []
    for n in range(conflicts):
        due = start + n * 7200.0
        for owner in ("phone", "desk"):
            text = f"{owner} task {n}"
            made.append(
                NewIntention(
                    owner, "local", None, None, "private", text, text, due, 3600, None, None
                )
            )
    for n in range(total - 2 * conflicts):
        due = start + conflicts * 7200.0 + n * 3600.0
        text = f"chore {n}"
        made.append(
            NewIntention(
                f"inst{n % 4}", "local", None, None, "group", text, text, due, 1800, None, None
            )
        )
    return made


def cache_path(total: int, conflicts: int) -> Path:
    return VAR / f"scheduler-{total}-{conflicts}-s{schema_tag()}.db"


async def ensure(total: int, conflicts: int) -> Path:
    """The cached memory of this many intentions and conflicts (built when missing)."""
    path = cache_path(total, conflicts)
    if path.exists():
        return path
    VAR.mkdir(parents=True, exist_ok=True)
    prune_stale("scheduler-*.db", set())
    progress(f"scheduler: building a memory of {total:,} intentions (once)")
    building = path.with_suffix(".building")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    async with Memory(building) as memory:
        batch = intentions(total, conflicts, memory.now + 30 * DAY)
        found = 0
        for i in range(0, len(batch), BATCH):
            found += await memory.add_intentions(batch[i : i + BATCH])
            if (i + BATCH) % 25_000 == 0:
                progress(f"scheduler: {i + BATCH} intentions, {found} conflicts")
    building.rename(path)
    progress(f"scheduler: memory built in {time.perf_counter() - started:.1f}s")
    return path


async def timed_tick(scheduler: Scheduler) -> tuple[float, int]:
    started = time.perf_counter()
    report = await scheduler.tick()
    return (time.perf_counter() - started) * 1000, len(report.surfaced)


async def warm_up(folder: Path) -> None:
    """A tick with one item on an empty memory: first-call imports are not the figure."""
    db = folder / "warm-up.db"
    async with Memory(db) as memory:
        await memory.add_intentions(intentions(2, 1, memory.now + DAY))
        await Scheduler(bench_config(db), memory=memory).tick()


async def measure(db: Path) -> dict[str, float]:
    config = bench_config(db)
    async with Memory(db) as memory:
        conflicts = len(await memory.conflicts("open", limit=1_000_000))
        scheduler = Scheduler(config, memory=memory)
        first, surfaced = await timed_tick(scheduler)
        busy: list[float] = []
        while surfaced:  # drain: surface everything, 100 items a tick
            took, surfaced = await timed_tick(scheduler)
            if surfaced:
                busy.append(took)
        idle = [(await timed_tick(scheduler))[0] for _ in range(20)]
        left = len(await memory.conflicts("open", limit=1_000_000))
    return {
        "conflicts": conflicts,
        "left": left,
        "first": first,
        "busy_p50": median(busy),
        "busy_max": max(busy, default=float("nan")),
        "idle_p50": median(idle),
    }


async def run(total: int = 100_000, conflicts: int = 10_000) -> list[Figure]:
    logging.getLogger("bot").setLevel(logging.WARNING)
    cached = await ensure(total, conflicts)
    folder = run_dir("scheduler")
    db = copy_database(cached, folder / "memory.db")
    progress(f"scheduler: ticking over {total} intentions and their conflicts")
    try:
        await warm_up(folder)
        r = await measure(db)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    label = f"{total // 1000}k intentions, {r['conflicts']:.0f} conflicts"

    def tick(name: str, value: float, goal: bool = True) -> Figure:
        return Figure(
            name,
            f"{value:.1f} ms",
            f"<= {GOAL_MS:.0f} ms" if goal else "",
            value <= GOAL_MS if goal else None,
        )

    return [
        tick(f"scheduler tick ({label}): first, surfaces 100", r["first"]),
        tick("scheduler tick: busy (100 surfaced) p50", r["busy_p50"]),
        tick("scheduler tick: busy (100 surfaced) max", r["busy_max"], goal=False),
        tick("scheduler tick: idle p50 (nothing to surface)", r["idle_p50"]),
        Figure(
            "scheduler: items left unsurfaced after draining",
            f"{r['left']:.0f}",
            "0",
            r["left"] == 0,
        ),
    ]


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print_figures(asyncio.run(run(*args)))
