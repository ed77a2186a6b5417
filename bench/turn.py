"""Per-turn overhead with the offline brain (no model latency): guard, ingest, context, store.

For each size (10k, 100k, 1M prefilled messages) a working copy of the cached database
takes TURNS turns through `Mind.turn`, one Mind per entrance instance; the sizes take turns
BLOCK at a time, so that the host's changing speed weighs on each alike. Conversations are
picked as traffic picks them (busy ones more often), the author as the right account (the
DM's person, or a member of the group). Texts: everyday chatter drawn from the prefill's
Zipf vocabulary, questions the offline brain answers from memory ("what did I tell you on
discord?", "what have you promised?", "where else are you?"), and requests with a time
(new intentions, checked for conflicts). The memory's clock runs from just after the
prefilled history. The model step is left out of every figure. Rate buckets are set never
to refuse (bench.common.LIMITS_TOML); a turn the guard refuses anyway is counted, not
timed.

Goals: at 1M, p50 <= 5 ms and p99 <= 20 ms; p50 at 1M <= 1.5 x p50 at 10k.

python -m bench.turn [N ...]    (default: 10000 100000 1000000)
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import sys
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
from bot import llm
from bot.config import ModelConfig
from bot.context import Context
from bot.memory import Memory
from bot.mind import Mind
from bot.models import Author, Incoming, Reply
from bot.soul import sync_soul_file

TURNS = 400
WARM_UP = 20
BLOCK = 20
PARTS = ("guard", "ingest", "context", "store")


@dataclass
class Timings:
    """Milliseconds per turn: the total (model left out) and each part."""

    total: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PARTS})
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


class Turner:
    """One working copy of a prefilled memory and a Mind per entrance instance on it."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.config = bench_config(db)
        self.memory = Memory(db, busy_timeout_ms=self.config.memory.busy_timeout_ms)
        self.world, self.rng = prefill.World(prefill.SEED), random.Random(11)
        self.minds: dict[str, Mind] = {}
        self.timings = Timings()
        self.n = 0

    async def open(self) -> None:
        await self.memory.open()
        await prefill.shift_clock(self.memory)
        await sync_soul_file(self.memory, SOUL)
        for entrance, instance in prefill.INSTANCES.items():
            await self.memory.register_instance(instance, entrance, "bench-host", os.getpid(), None)
            self.minds[entrance] = Mind(
                self.memory, self.config, instance_id=instance, entrance=entrance
            )
        await self.turns(WARM_UP, count=False)

    async def turns(self, count_of: int, *, count: bool = True) -> None:
        for _ in range(count_of):
            message = incoming(self.world, self.rng, self.n, self.memory.now)
            self.n += 1
            mind = self.minds[message.entrance]
            reply = await mind.turn(message)
            if not count:
                continue
            if reply is None or reply.model is None:
                self.timings.refused += 1
            else:
                self.timings.add(mind.last_timings)


async def measure(sizes: tuple[int, ...], turns: int = TURNS) -> dict[int, Timings]:
    """TURNS turns on each size, interleaved in blocks of BLOCK turns: the machine's speed
    drifts (other tenants of the host), and interleaving makes it drift under every size
    alike, so the sizes compare fairly."""
    folder = run_dir("turn")
    turners = {size: Turner(prefill.working_copy(size, folder)) for size in sizes}
    try:
        for turner in turners.values():
            await turner.open()
        progress(f"turn: {turns} turns on each of {', '.join(map(str, sizes))} messages")
        for _ in range(turns // BLOCK):
            for turner in turners.values():
                await turner.turns(BLOCK)
    finally:
        for turner in turners.values():
            await turner.memory.close()
        shutil.rmtree(folder, ignore_errors=True)
    return {size: turner.timings for size, turner in turners.items()}


def label(size: int) -> str:
    return f"{size // 1000}k" if size < 1_000_000 else f"{size // 1_000_000}M"


def figures(results: dict[int, Timings]) -> list[Figure]:
    rows = []
    top = max(results)
    for size, t in results.items():
        p50, p99 = median(t.total), percentile(t.total, 0.99)
        goal = size == top
        rows += [
            Figure(
                f"turn @{label(size)}: p50 (model excluded)",
                f"{p50:.2f} ms",
                "<= 5 ms" if goal else "",
                p50 <= 5 if goal else None,
            ),
            Figure(
                f"turn @{label(size)}: p99 (model excluded)",
                f"{p99:.2f} ms",
                "<= 20 ms" if goal else "",
                p99 <= 20 if goal else None,
            ),
        ]
        for name, p in (("p50", 0.5), ("p99", 0.99)):
            split = "/".join(t.part(part, p) for part in PARTS)
            rows.append(Figure(f"turn @{label(size)}: {name} guard/ingest/context/store ms", split))
    if len(results) > 1:
        small = min(results)
        ratio = median(results[top].total) / median(results[small].total)
        rows.append(
            Figure(
                f"turn p50 @{label(top)} / p50 @{label(small)}",
                f"{ratio:.2f}x",
                "<= 1.5x",
                ratio <= 1.5,
            )
        )
    refused = sum(t.refused for t in results.values())
    rows.append(Figure("turn: turns the guard refused (not timed)", str(refused), "0", not refused))
    return rows


async def stubbed_model(config: ModelConfig, context: Context) -> llm.Answer:
    """A reply made without litellm: what the turn costs when the model's client does
    nothing on the event loop after answering."""
    return llm.Answer(reply=Reply(text=f"Noted: {context.text[:60]}"), model="bench/stub")


async def measure_stubbed(size: int, turns: int = TURNS) -> Timings:
    """The same turns with `llm.complete` replaced: litellm's success logging (a standard
    logging payload and a cost lookup, about 1 ms a call) runs on the event loop while the
    turn awaits its store, so it shows up in `store`; this shows the turn without it."""
    real = llm.complete
    llm.complete = stubbed_model
    folder = run_dir("turn-stubbed")
    turner = Turner(prefill.working_copy(size, folder))
    try:
        await turner.open()
        await turner.turns(turns)
    finally:
        llm.complete = real
        await turner.memory.close()
        shutil.rmtree(folder, ignore_errors=True)
    return turner.timings


async def run(sizes: tuple[int, ...] = prefill.SIZES, turns: int = TURNS) -> list[Figure]:
    logging.getLogger("bot").setLevel(logging.WARNING)
    await prefill.ensure(sizes)
    rows = figures(await measure(sizes, turns))
    top = max(sizes)
    progress(f"turn: {turns} turns on {top} messages, the model stubbed out of litellm")
    stubbed = await measure_stubbed(top, turns)
    split = "/".join(stubbed.part(part, 0.5) for part in PARTS)
    return [
        *rows,
        Figure(
            f"turn @{label(top)}, model stubbed (no litellm): p50 / p99",
            f"{median(stubbed.total):.2f} / {percentile(stubbed.total, 0.99):.2f} ms",
        ),
        Figure(f"turn @{label(top)}, model stubbed: p50 guard/ingest/context/store ms", split),
    ]


if __name__ == "__main__":
    chosen = tuple(int(a) for a in sys.argv[1:]) or prefill.SIZES
    print_figures(asyncio.run(run(chosen)))
