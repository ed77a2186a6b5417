"""Per-turn overhead with the offline brain (no model latency): guard, ingest, context, store.

For each size (10k, 100k, 1M prefilled messages) a working copy of the cached database
takes TURNS turns through `Mind.turn`, one Mind per entrance instance; the sizes take turns
BLOCK at a time, so that the host's changing speed weighs on each alike. Conversations are
picked as traffic picks them (busy ones more often), the author as the right account (the
DM's person, or a member of the group). Texts: everyday chatter drawn from the prefill's
Zipf vocabulary, questions the offline brain answers from memory ("what did I tell you on
discord?", "what have you promised?", "where else are you?"), and requests with a time
(new intentions, checked for conflicts). The memory's clock runs from just after the
prefilled history. Rate buckets are set never to refuse (bench.common.LIMITS_TOML); a turn
the guard refuses anyway is counted, not timed.

What a figure measures, at every size alike: the turn from `Mind.turn`'s start to its end,
minus the model step and minus the query's embedding. Recall by meaning is as shipped (on
when the `recall` extra is installed, unless BENCH_RECALL=off); each turn's text is
embedded just before the turn, through `bot.recall.meaning` and its cache as a process
keeps it, and that embedding is timed on its own (each distinct text's first embedding,
at whichever size draws it first; the other sizes find it in the cache). Before, the
smallest size paid every embedding inside its context part (11-15 ms), the others none.
The vectors held are those the process's embedder writes during the run (the prefill has
none): bench/recall.py measures the turn with a full index of 20 000 vectors. At the
largest size, blocks with recall by meaning switched off (FTS5 only) are interleaved with
the others, and the statements a turn runs are counted (SQLite's trace: a statement
re-reported for its triggers counts once, each row of an executemany counts), and the
CPU a turn takes (the process's, all threads, less the model step's wall time: a figure
that a busy host disturbs far less than the wall-clock ones).

The working copy's word indexes (FTS5) are merged before the turns, as the scheduler keeps
a running memory's (`Scheduler.merge_word_indexes`): the prefill leaves them as SQLite's
automerge does (18 segments at 1M), which a live memory has only until its scheduler's
first minute. BENCH_MERGE=off measures them as the prefill left them.

Goals (issue 18, offline brain): at 1M, p50 <= 4 ms and p99 <= 15 ms, recall by meaning
on and off; p50 at 1M <= 1.5 x p50 at 10k.

python -m bench.turn [N ...]    (default: 10000 100000 1000000)
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import prefill
from bench.common import (
    SOUL,
    Figure,
    bench_config,
    median,
    percentile,
    print_figures,
    progress,
    run_dir,
)
from bot import recall
from bot.memory import Memory
from bot.memory.database import run_in_thread
from bot.mind import Mind
from bot.models import Author, Incoming
from bot.soul import sync_soul_file

TURNS = 400
MERGED = os.environ.get("BENCH_MERGE", "").lower() not in {"off", "0", "false", "no"}
WARM_UP = 20
BLOCK = 20
PARTS = ("guard", "ingest", "context", "store")
P50_GOAL_MS, P99_GOAL_MS = 4.0, 15.0
# Texts embedded so far, by any size: each distinct text's first embedding is the one
# timed (the sizes draw the same texts; later ones find the vector in the cache).
_EMBEDDED: set[str] = set()


@dataclass
class Timings:
    """Milliseconds per turn: the total (model and query embedding left out) and each part;
    the query's embedding, timed before the turn; statements run per turn (when counted)."""

    total: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PARTS})
    embedding: list[float] = field(default_factory=list)
    statements: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    refused: int = 0

    def add(self, timings: object) -> None:
        values = {part: getattr(timings, part, 0.0) for part in PARTS}
        for part, value in values.items():
            self.parts[part].append(value * 1000)
        self.total.append(sum(values.values()) * 1000)

    def part(self, name: str, p: float) -> str:
        return f"{percentile(self.parts[name], p):.2f}"


def texts(world: prefill.World, rng: random.Random, entrance: str) -> str:
    """What people say in a turn: mostly chatter, some questions and requests."""
    roll = rng.random()
    if roll < 0.1:
        other = rng.choice([e for e in prefill.ENTRANCES if e != entrance])
        return f"what did I tell you on {other}?"
    if roll < 0.2:
        return "what have you promised?"
    if roll < 0.25:
        return "where else are you?"
    if roll < 0.35:
        day = rng.choice(("Monday", "Tuesday", "Friday", "Saturday"))
        return f"can you {world.words(rng, 2, 6)} on {day} at {rng.randint(1, 11)}pm?"
    if roll < 0.5:
        return f"do you remember the {world.words(rng, 1, 4)}?"
    return world.words(rng, 3, 25)


def incoming(
    world: prefill.World, rng: random.Random, n: int, now: float, entrance: str | None = None
) -> Incoming:
    """The n-th turn's message, in a conversation picked as traffic picks it."""
    conversation = world.pick_conversation(rng, entrance)
    person = world.people[rng.choice(conversation.members)]
    entrance = conversation.entrance
    return Incoming(
        entrance=entrance,
        conversation_id=conversation.external_id,
        conversation_kind=conversation.kind,  # type: ignore[arg-type]
        conversation_title=None if conversation.kind == "dm" else conversation.external_id,
        author=Author(external_id=person.accounts[entrance], display_name=person.display(entrance)),
        text=texts(world, rng, entrance),
        platform_message_id=f"bench-turn-{n}",
        received_at=datetime.fromtimestamp(now, UTC),
    )


class StatementCounter:
    """Counts the statements SQLite runs on a memory's two connections (its trace hook).

    SQLite reports a statement again at the start of each trigger it fires (the FTS5
    triggers of messages and notes), and FTS5's own statements as comments: a statement
    right after the same one counts once, comments not at all."""

    def __init__(self) -> None:
        self.count = 0
        self._last = ""

    def __call__(self, sql: str) -> None:
        if sql.startswith("--") or sql == self._last:
            return
        self._last = sql
        self.count += 1

    async def attach(self, memory: Memory) -> None:
        for conn in (memory._reader, memory._writer):
            if conn is not None:
                await run_in_thread(conn, lambda raw: raw.set_trace_callback(self))


class Turner:
    """One working copy of a prefilled memory and a Mind per entrance instance on it."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.config = bench_config(db)
        self.memory = Memory(db, busy_timeout_ms=self.config.memory.busy_timeout_ms)
        self.world, self.rng = prefill.World(prefill.SEED), random.Random(11)
        self.minds: dict[str, Mind] = {}
        self.timings = Timings()
        self.counter: StatementCounter | None = None
        self.n = 0

    async def open(self) -> None:
        await self.memory.open()
        await prefill.shift_clock(self.memory)
        # As the scheduler keeps them (in steps of 100 pages; here at once); SQLite only.
        if MERGED and self.memory.engine == "sqlite":
            while await self.memory.merge_word_indexes(pages=100_000):
                pass
            # The merge rewrote the index (48 MB at 1M) into the WAL: copied back now, not
            # by background checkpoints during the first turns.
            writer = self.memory._writer
            assert writer is not None
            await run_in_thread(
                writer, lambda raw: raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            )
        await sync_soul_file(self.memory, SOUL)
        for entrance, instance in prefill.INSTANCES.items():
            await self.memory.register_instance(instance, entrance, "bench-host", os.getpid(), None)
            self.minds[entrance] = Mind(
                self.memory, self.config, instance_id=instance, entrance=entrance
            )
        await self.turns(WARM_UP, count=False)

    async def count_statements(self) -> None:
        self.counter = StatementCounter()
        await self.counter.attach(self.memory)

    async def turns(self, count_of: int, *, count: bool = True) -> None:
        for _ in range(count_of):
            message = incoming(self.world, self.rng, self.n, self.memory.now)
            self.n += 1
            mind = self.minds[message.entrance]
            # The query's vector, before the turn (and out of its figures): the turn's own
            # `recall.meaning` finds it in the cache.
            started = time.perf_counter()
            await recall.meaning(self.memory, self.config, message.text, mind.instance_id)
            embedded = (time.perf_counter() - started) * 1000
            new_text = message.text not in _EMBEDDED and self.config.recall.enabled is not False
            _EMBEDDED.add(message.text)
            before = self.counter.count if self.counter is not None else 0
            cpu = time.process_time()
            reply = await mind.turn(message)
            cpu = (time.process_time() - cpu) * 1000
            if not count:
                continue
            if reply is None or reply.model is None:
                self.timings.refused += 1
                continue
            self.timings.add(mind.last_timings)
            self.timings.cpu.append(cpu - mind.last_timings.model * 1000)
            if new_text:
                self.timings.embedding.append(embedded)
            if self.counter is not None:
                self.timings.statements.append(self.counter.count - before)


async def measure(
    sizes: tuple[int, ...], turns: int = TURNS
) -> tuple[dict[int, Timings], Timings | None]:
    """TURNS turns on each size, interleaved in blocks of BLOCK turns: the machine's speed
    drifts (other tenants of the host), and interleaving makes it drift under every size
    alike, so the sizes compare fairly. At the largest size, as many turns again with
    recall by meaning off (when it is on), in blocks between the others: those Timings
    come second (None when recall by meaning is off anyway)."""
    folder = run_dir(f"turn-{os.getpid()}")
    turners = {size: Turner(prefill.working_copy(size, folder)) for size in sizes}
    top = turners[max(sizes)]
    meaning = recall.active(top.config.recall)
    on, off = top.timings, Timings() if meaning else None
    try:
        for turner in turners.values():
            await turner.open()
        await top.count_statements()
        recall_is = "on" if meaning else "off"
        progress(
            f"turn: {turns} turns on each of {', '.join(map(str, sizes))} messages"
            f" (recall by meaning {recall_is})"
            + (f", {turns} more at {max(sizes)} with it off" if off is not None else "")
            + ("; word indexes merged" if MERGED else "; word indexes as the prefill left them")
        )
        for _ in range(turns // BLOCK):
            for turner in turners.values():
                await turner.turns(BLOCK)
            if off is not None:
                top.config.recall.enabled, top.timings = False, off
                await top.turns(BLOCK)
                top.config.recall.enabled, top.timings = True, on
    finally:
        for turner in turners.values():
            await turner.memory.close()
        shutil.rmtree(folder, ignore_errors=True)
    return {size: turner.timings for size, turner in turners.items()}, off


def label(size: int) -> str:
    return f"{size // 1000}k" if size < 1_000_000 else f"{size // 1_000_000}M"


def turn_rows(name: str, t: Timings, goal: bool) -> list[Figure]:
    """p50 and p99 of the turn (with the goals when `goal`), and their split by part."""
    p50, p99 = median(t.total), percentile(t.total, 0.99)
    rows = [
        Figure(
            f"{name}: p50",
            f"{p50:.2f} ms",
            f"<= {P50_GOAL_MS:g} ms" if goal else "",
            p50 <= P50_GOAL_MS if goal else None,
        ),
        Figure(
            f"{name}: p99",
            f"{p99:.2f} ms",
            f"<= {P99_GOAL_MS:g} ms" if goal else "",
            p99 <= P99_GOAL_MS if goal else None,
        ),
    ]
    for which, p in (("p50", 0.5), ("p99", 0.99)):
        split = "/".join(t.part(part, p) for part in PARTS)
        rows.append(Figure(f"{name}: {which} guard/ingest/context/store ms", split))
    return rows


def figures(
    results: dict[int, Timings], off: Timings | None = None, *, meaning: bool = True
) -> list[Figure]:
    rows = []
    top, small = max(results), min(results)
    recall_is = "recall by meaning on" if meaning else "FTS5 only (recall by meaning off)"
    for size, t in results.items():
        name = f"turn @{label(size)}, {recall_is}"
        rows += turn_rows(name, t, size == top)
    if off is not None:
        rows += turn_rows(f"turn @{label(top)}, FTS5 only (recall by meaning off)", off, True)
    if meaning:
        embedding = [ms for t in [*results.values(), off] if t is not None for ms in t.embedding]
        rows.append(
            Figure(
                "turn: query embedding, before the turn (each text's first), p50 / p99",
                f"{median(embedding):.2f} / {percentile(embedding, 0.99):.2f} ms",
            )
        )
    timed: list[tuple[str, Timings | None]] = [(recall_is, results[top]), ("FTS5 only", off)]
    for name, cpu_of in timed:
        if cpu_of is not None:
            rows.append(
                Figure(
                    f"turn @{label(top)}, {name}: CPU per turn, p50 / p99 (model out)",
                    f"{median(cpu_of.cpu):.2f} / {percentile(cpu_of.cpu, 0.99):.2f} ms",
                )
            )
    counted = [n for t in (results[top], off) if t is not None for n in t.statements]
    if counted:
        rows.append(
            Figure(
                f"turn @{label(top)}: SQL statements per turn, mean (min-max)",
                f"{sum(counted) / len(counted):.1f} ({min(counted)}-{max(counted)})",
            )
        )
    if len(results) > 1:
        ratio = median(results[top].total) / median(results[small].total)
        rows.append(
            Figure(
                f"turn p50 @{label(top)} / p50 @{label(small)}",
                f"{ratio:.2f}x",
                "<= 1.5x",
                ratio <= 1.5,
            )
        )
    refused = sum(t.refused for t in [*results.values(), off] if t is not None)
    rows.append(Figure("turn: turns the guard refused (not timed)", str(refused), "0", not refused))
    return rows


async def run(sizes: tuple[int, ...] = prefill.SIZES, turns: int = TURNS) -> list[Figure]:
    logging.getLogger("bot").setLevel(logging.WARNING)
    recall.one_blas_thread()  # as a chat process runs it (before numpy loads)
    await prefill.ensure(sizes)
    results, off = await measure(sizes, turns)
    return figures(results, off, meaning=off is not None)


if __name__ == "__main__":
    chosen = tuple(int(a) for a in sys.argv[1:]) or prefill.SIZES
    print_figures(asyncio.run(run(chosen)))
