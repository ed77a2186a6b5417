"""One scheduler tick with 100k intentions and 10k conflicts.

python -m bench.scheduler [INTENTIONS] [CONFLICTS]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bot.config import load_config
from bot.memory import Memory, NewIntention
from bot.scheduler import Scheduler

ROOT = Path(__file__).resolve().parents[1]
DAY = 86400.0


def intentions(total: int, conflicts: int, start: float) -> list[NewIntention]:
    """`conflicts` overlapping pairs from two instances, the rest spread out one per hour."""
    made = []
    for n in range(conflicts):
        due = start + n * 7200.0
        for owner in ("phone", "desk"):
            made.append(
                NewIntention(
                    owner,
                    "local",
                    None,
                    None,
                    "private",
                    f"{owner} task {n}",
                    f"{owner} task {n}",
                    due,
                    3600,
                    None,
                    None,
                )
            )
    for n in range(total - 2 * conflicts):
        due = start + conflicts * 7200.0 + n * 3600.0
        made.append(
            NewIntention(
                f"inst{n % 4}",
                "local",
                None,
                None,
                "group",
                f"chore {n}",
                f"chore {n}",
                due,
                1800,
                None,
                None,
            )
        )
    return made


async def measure(total: int, conflicts: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        config = load_config(ROOT / "config" / "mirror.toml", db=Path(folder) / "m.db")
        async with Memory(config.memory.path) as memory:
            batch = intentions(total, conflicts, memory.now + 30 * DAY)
            found = 0
            for i in range(0, len(batch), 5000):
                found += await memory.add_intentions(batch[i : i + 5000])
            scheduler = Scheduler(config, memory=memory)
            started = time.perf_counter()
            await scheduler.tick()
            first_ms = (time.perf_counter() - started) * 1000
            busy = []
            while True:  # drain: surface everything, 100 items a tick
                started = time.perf_counter()
                report = await scheduler.tick()
                busy.append((time.perf_counter() - started) * 1000)
                if not report.surfaced:
                    break
            idle = []
            for _ in range(20):
                started = time.perf_counter()
                await scheduler.tick()
                idle.append((time.perf_counter() - started) * 1000)
    return {
        "conflicts": found,
        "first": first_ms,
        "busy_p50": statistics.median(busy),
        "idle_p50": statistics.median(idle),
        "idle_max": max(idle),
    }


async def main(total: int, conflicts: int) -> None:
    r = await measure(total, conflicts)
    print(
        f"scheduler tick, {total} intentions, {r['conflicts']:.0f} conflicts: "
        f"first {r['first']:.1f} ms (surfaces 100), busy p50 {r['busy_p50']:.1f} ms, "
        f"idle p50 {r['idle_p50']:.1f} ms, idle max {r['idle_max']:.1f} ms (goal <= 50 ms)"
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    asyncio.run(main(*(args or [100_000, 10_000])))
