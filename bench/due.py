"""Issue 17: promises that fall due become turns — how fast the scheduler queues them and
how late the follow-up reaches the platform.

1. burst: a memory of 100k open intentions (each in its own DM with its person) of which
   10k fall due in the same minute, written with plain SQL in one transaction (built
   fresh each run: under a second). Just after that minute, one `Scheduler` (the leader)
   ticks back to back until all 10k are claimed and queued as 'due' outbox rows. Reported:
   ticks needed, each tick's time (p50, max), and their sum: a live scheduler ticks again
   at once while a tick's due batch comes back full, so the sum is what queueing all of
   them takes there.
   Goal: all queued within 5 s, each tick <= 50 ms.
2. delay: a real scheduler (`Scheduler.run`, its APScheduler interval tick, the shipped
   interval) and an in-process entrance (`Instance` with a `send` that records when each
   message arrives, its courier running) on one fresh memory, on the real clock; 120
   intentions fall due at staggered instants over 20 s. Reported: p50 / p99 / max of
   (first part's arrival at the platform - due_at). Goal: p99 <= 2 s.

Everything happens in var/bench/run/due/ (removed at the end); about 40 s in all.

python -m bench.due
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    SOUL,
    Figure,
    bench_config,
    percentile,
    print_figures,
    progress,
    run_dir,
)
from bot.config import Config
from bot.entrance import EntranceSettings, Manifest, register, unregister
from bot.instance import Instance
from bot.memory import Memory
from bot.outbox import Button
from bot.scheduler import Scheduler

ENTRANCE = "bench_due"  # the in-process entrance of this benchmark
TOTAL = 100_000
DUE_TOGETHER = 10_000
QUEUE_GOAL_S = 5.0
TICK_GOAL_MS = 50.0
FOLLOW_UPS = 120
SPREAD_S = 20.0
LEAD_S = 3.0  # time for the entrance and the scheduler to start before the first is due
DELAY_GOAL_S = 2.0
WAIT_AFTER_S = 15.0  # after the last is due, how long to wait for stragglers


class DueSettings(EntranceSettings):
    pass


class NoRuntime:
    """Never started: the benchmark drives `Instance` itself."""


MANIFEST = Manifest(
    name=ENTRANCE,
    label="Bench",
    runtime="bench.due:NoRuntime",
    settings=DueSettings,
)


def build_memory(db: Path, total: int, due: dict[int, float], later_from: float) -> None:
    """`total` open intentions, one DM (with its person and identity) each: those in `due`
    fall due then, the others one every 30 s from `later_from`. One transaction of SQL."""
    created = time.time() - 86400
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO people (id, name, created_at) VALUES (?, ?, ?)",
            ((n, f"Person {n}", created) for n in range(1, total + 1)),
        )
        conn.executemany(
            "INSERT INTO identities (id, entrance, external_id, display_name, person_id,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            ((n, ENTRANCE, f"u{n}", f"Person {n}", n, created) for n in range(1, total + 1)),
        )
        conn.executemany(
            "INSERT INTO conversations (id, entrance, external_id, kind, person_id, created_at)"
            " VALUES (?, ?, ?, 'dm', ?, ?)",
            ((n, ENTRANCE, f"c{n}", n, created) for n in range(1, total + 1)),
        )
        conn.executemany(
            "INSERT INTO intentions (id, owner_instance, entrance, conversation_id, person_id,"
            " visibility, text, subject, due_at, duration_s, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 'private', ?, ?, ?, 1800, ?, ?)",
            (
                (
                    n,
                    ENTRANCE,
                    ENTRANCE,
                    n,
                    n,
                    f"send Person {n} the report",
                    f"send person {n} the report",
                    due.get(n, later_from + 30.0 * n),
                    created,
                    created,
                )
                for n in range(1, total + 1)
            ),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def due_rows(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        (count,) = conn.execute(
            "SELECT count(*) FROM outbox WHERE json_extract(payload, '$.kind') = 'due'"
        ).fetchone()
    finally:
        conn.close()
    return int(count)


def config_for(folder: Path, db: Path) -> Config:
    config = bench_config(db)
    soul = folder / "SOUL.md"
    shutil.copy(SOUL, soul)
    config.soul.path = soul
    config.persona.timezone = "UTC"
    return config


async def burst(folder: Path) -> dict[str, Any]:
    """Part 1: 10k of 100k intentions due in one minute, ticked back to back."""
    db = folder / "burst.db"
    async with Memory(db):  # the schema
        pass
    minute = float(int(time.time() // 60 + 24 * 60) * 60)  # a whole minute tomorrow
    rng = random.Random(17)
    chosen = rng.sample(range(1, TOTAL + 1), DUE_TOGETHER)
    due = {n: minute + rng.uniform(0, 59.999) for n in chosen}
    started = time.perf_counter()
    build_memory(db, TOTAL, due, later_from=minute + 3600)
    progress(f"due: {TOTAL:,} intentions written in {time.perf_counter() - started:.1f} s")
    config = config_for(folder, db)

    # A warm-up tick on an empty memory: first-call imports are not the figure.
    async with Memory(folder / "warm-up.db") as memory:
        await Scheduler(config, memory=memory).tick()

    ticks: list[float] = []
    queued = 0
    async with Memory(db) as memory:
        shift = minute + 60.5 - time.time()  # just after the due minute
        memory.clock = lambda: time.time() + shift
        scheduler = Scheduler(config, memory=memory)
        while queued < DUE_TOGETHER and len(ticks) < 5 * DUE_TOGETHER:
            began = time.perf_counter()
            report = await scheduler.tick()
            took = time.perf_counter() - began
            if not report.leader:
                raise RuntimeError("the benchmark's scheduler is not the leader")
            if not report.due:
                break  # nothing more falls due: the rest never will
            ticks.append(took)
            queued += len(report.due)
        idle_began = time.perf_counter()
        await scheduler.tick()
        idle = time.perf_counter() - idle_began
    return {
        "ticks": ticks,
        "queued": queued,
        "rows": due_rows(db),
        "idle": idle,
        "interval": config.scheduler.interval_s,
    }


class Platform:
    """The entrance's `send`: when the first part for each conversation arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.parts = 0

    async def send(
        self,
        target: str,
        text: str,
        *,
        reply_to: str | None = None,
        buttons: Sequence[Button] = (),
        key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str | None:
        self.parts += 1
        self.arrived.setdefault(target, time.time())
        return f"p{self.parts}"


async def delay(folder: Path) -> dict[str, Any]:
    """Part 2: a live scheduler and entrance; intentions fall due over SPREAD_S."""
    db = folder / "delay.db"
    async with Memory(db):
        pass
    config = config_for(folder, db)
    rng = random.Random(1717)
    start = time.time() + LEAD_S
    due = {
        n: start + (n - 1) * SPREAD_S / FOLLOW_UPS + rng.uniform(0, SPREAD_S / FOLLOW_UPS)
        for n in range(1, FOLLOW_UPS + 1)
    }
    # Intentions beyond FOLLOW_UPS fall due next month: a memory that is not empty.
    build_memory(db, 1000, due, later_from=start + 30 * 86400)
    platform = Platform()
    register(MANIFEST)
    try:
        instance = Instance(config, instance_id=ENTRANCE, entrance=ENTRANCE, send=platform.send)
        async with instance:
            instance.deliver_outbox()
            scheduler = Scheduler(config)
            running = asyncio.create_task(scheduler.run(), name="bench-due-scheduler")
            wanted = {f"c{n}" for n in due}
            deadline = max(due.values()) + WAIT_AFTER_S
            while time.time() < deadline and not wanted <= platform.arrived.keys():
                await asyncio.sleep(0.1)
            scheduler.request_stop()
            await running
    finally:
        unregister(ENTRANCE)
    delays = [
        platform.arrived[f"c{n}"] - at for n, at in due.items() if f"c{n}" in platform.arrived
    ]
    return {
        "delays": delays,
        "missing": len(due) - len(delays),
        "interval": config.scheduler.interval_s,
    }


async def run() -> list[Figure]:
    logging.getLogger("bot").setLevel(logging.WARNING)
    folder = run_dir("due")
    try:
        progress(f"due: {DUE_TOGETHER:,} of {TOTAL:,} intentions falling due in one minute")
        b = await burst(folder)
        progress(f"due: {FOLLOW_UPS} follow-ups falling due over {SPREAD_S:.0f} s, live")
        d = await delay(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    ticks, interval = b["ticks"], b["interval"]
    busy = ticks  # the ticks that queued something
    summed = sum(busy)
    # A live scheduler ticks again at once while a tick's due batch comes back full
    # (bot.scheduler DUE_BATCH): the backlog is queued by back-to-back ticks.
    live = summed
    all_queued = b["queued"] == DUE_TOGETHER == b["rows"]
    tick_p50, tick_max = percentile(busy, 0.5) * 1000, max(busy, default=float("nan")) * 1000
    delays = d["delays"]
    p50, p99 = percentile(delays, 0.5), percentile(delays, 0.99)
    label = f"{DUE_TOGETHER // 1000}k of {TOTAL // 1000}k due in one minute"
    return [
        Figure(
            f"due ({label}): queued / 'due' outbox rows",
            f"{b['queued']:,} / {b['rows']:,}",
            f"{DUE_TOGETHER:,}",
            all_queued,
        ),
        Figure("due: ticks needed to queue them all", f"{len(busy)}"),
        Figure(
            "due: tick p50 (while queueing)",
            f"{tick_p50:.1f} ms",
            f"<= {TICK_GOAL_MS:g} ms",
            tick_p50 <= TICK_GOAL_MS,
        ),
        Figure(
            "due: tick max (while queueing)",
            f"{tick_max:.1f} ms",
            f"<= {TICK_GOAL_MS:g} ms",
            tick_max <= TICK_GOAL_MS,
        ),
        Figure("due: first tick (takes the lease)", f"{busy[0] * 1000 if busy else 0:.1f} ms"),
        Figure(
            "due: ticks over 50 ms (WAL auto-checkpoint)",
            f"{sum(t * 1000 > TICK_GOAL_MS for t in busy)} of {len(busy)}",
        ),
        Figure("due: idle tick after (nothing due)", f"{b['idle'] * 1000:.1f} ms"),
        Figure(
            f"due: time to queue all (live: back-to-back while batches are full; "
            f"interval {interval:g} s)",
            f"{live:.1f} s",
            f"<= {QUEUE_GOAL_S:g} s",
            all_queued and live <= QUEUE_GOAL_S,
        ),
        Figure(
            f"due: {FOLLOW_UPS} follow-ups over {SPREAD_S:g} s, live: arrived",
            f"{len(delays)} / {FOLLOW_UPS}",
            f"{FOLLOW_UPS}",
            d["missing"] == 0,
        ),
        Figure(f"due: delay due -> platform p50 (tick {d['interval']:g} s)", f"{p50:.2f} s"),
        Figure(
            "due: delay due -> platform p99",
            f"{p99:.2f} s",
            f"<= {DELAY_GOAL_S:g} s",
            d["missing"] == 0 and p99 <= DELAY_GOAL_S,
        ),
        Figure("due: delay due -> platform max", f"{max(delays, default=float('nan')):.2f} s"),
    ]


if __name__ == "__main__":
    print_figures(asyncio.run(run()))
