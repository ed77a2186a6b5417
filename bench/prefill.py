"""A realistic memory.db of N messages, built once per size and cached under var/bench/.

The world (the same for every size and seed):
- 50 people, each with an account on each of the 4 entrances (discord, telegram, email,
  local); once an account has written, `Memory.link_identities` links it to that person's
  other accounts, so the four share one person_id;
- 200 conversations: 150 DMs (each person on three entrances) and 50 groups of 3 to 15
  members; how busy a conversation is follows a Zipf law, as do the words of the texts
  (a few very common words, a long tail of rare ones: what full-text search meets);
- the persona answers most DM messages and a third of group messages; some replies carry
  notes and intentions (a few for another entrance), later replies mark intentions done;
- between chunks the scheduler ticks (surfacing conflicts to the coordinator's outbox,
  expiring old intentions), every outbox row is delivered, the coordinator decides most
  items, and admins edit the soul now and then.

Timestamps are simulated (about 1400 messages a day from 2025-01-01); benchmarks run their
memory with a clock shifted to just after the last message (`clock_after`).

Writes go through bot.memory: `Memory.write` runs the very functions `record_incoming` and
`store_turn` run (`record_incoming_in`, `store_turn_in`), 5000 messages a transaction, with
the simulated time; nothing here writes SQL. A database is cached as
var/bench/memory-N-pPREFILL-sSCHEMA-seedS.db (SCHEMA hashes schema/*.sql): a change to the
schema or to this file's PREFILL version builds anew. One build serves every size: growing
to the largest missing size, it snapshots each smaller one on the way (online backup).

python -m bench.prefill [N ...]      (default: 10000 100000 1000000)
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import itertools
import json
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT, SOUL, VAR, copy_database, progress
from bot.commands import Command, Commands
from bot.config import Config, load_config
from bot.intentions import normalize_subject
from bot.memory import (
    Memory,
    NewIntention,
    Recorded,
    TurnRecord,
    record_incoming_in,
    store_turn_in,
)
from bot.models import Author, Incoming, OutboxItem
from bot.outbox import OutboxCourier
from bot.scheduler import Scheduler
from bot.soul import sha256_of, sync_soul_file
from bot.speaker import operator

PREFILL_VERSION = 1  # bump when the generated data changes shape
SEED = 7
CHUNK = 5000  # messages a transaction; sizes are multiples of it
SIZES = (10_000, 100_000, 1_000_000)
START = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
EXCHANGE_EVERY_S = 105.0  # mean time between incoming messages: ~1400 messages a day
ENTRANCES = ("discord", "telegram", "email", "local")
INSTANCES = {entrance: f"{entrance}-1" for entrance in ENTRANCES}
MODEL = "anthropic/claude-sonnet-4-5"  # prefilled replies come from a real model

FIRST_NAMES = """Ada Bruno Chiara Dmitri Elif Farah Gustav Hana Ibrahim Jonas Keiko Lena Mateo
Nadia Oskar Priya Quentin Rosa Samir Tove Ugo Vera Wanjiru Xavier Yusuf Zofia Amara Bodhi
Carmen Dario Esme Finn Greta Hugo Ines Jasper Kofi Liv Marek Noor Olga Pablo Rhea Sven Talia
Umar Viggo Wren Yara Zeno""".split()
# Real words first (most common first); a long tail of made-up words follows.
COMMON = """the i to you and a it is that of in for on my me we can at this be have with
what just do so but are was not your will about if all get when out up there one time how
now know like think see go good want need today tomorrow meeting friday report garden call
late back work email send help thanks next week train coffee review draft weekend project
deadline lunch music book invoice travel doctor school paint river kettle lantern harbour
orchard violin pebble meadow budget plan dinner kids flight hotel ticket price photo song
party cake birthday rain sun morning evening night office client team notes slides numbers
contract payment bank rent car bike bus station airport passport visa list shop milk bread
promise promised remember forgot discord telegram local sorry great nice cool maybe sure
okay yes no please question answer idea problem fix update news story film game match
score""".split()


def schema_tag() -> str:
    """The schema's identity: how many files and a hash of their text."""
    files = sorted((ROOT / "schema").glob("*.sql"))
    digest = hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in files))
    return f"{len(files)}-{digest.hexdigest()[:8]}"


def cache_path(size: int, seed: int = SEED) -> Path:
    return VAR / f"memory-{size}-p{PREFILL_VERSION}-s{schema_tag()}-seed{seed}.db"


def prune_stale(pattern: str, keep: set[Path]) -> None:
    """Delete cached databases under VAR matching `pattern` that are not in `keep` (built
    for an older schema or prefill version: about 500 MB each round)."""
    for stale in VAR.glob(pattern):
        if stale not in keep:
            progress(f"prefill: removing stale cache {stale.name}")
            stale.unlink()


BUILD_LOG = VAR / "prefill-build.json"


def last_build_seconds(size: int = SIZES[-1]) -> float | None:
    """How long the last build up to `size` messages took (None if not built here)."""
    try:
        log = json.loads(BUILD_LOG.read_text())
    except (OSError, ValueError):
        return None
    return float(log["seconds"]) if log.get("size") == size else None


@dataclass(frozen=True)
class Person:
    name: str
    accounts: dict[str, str]  # entrance -> external id

    def display(self, entrance: str) -> str:
        return self.accounts[entrance] if entrance == "email" else self.name


@dataclass(frozen=True)
class Conversation:
    entrance: str
    external_id: str
    kind: str  # dm | group
    members: tuple[int, ...]  # indexes into World.people; a DM has one


@dataclass
class World:
    """People, conversations and vocabulary, all drawn from one seed."""

    seed: int
    people: list[Person] = field(default_factory=list)
    conversations: list[Conversation] = field(default_factory=list)
    conversation_weights: list[float] = field(default_factory=list)
    vocabulary: list[str] = field(default_factory=list)
    word_weights: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        for n, name in enumerate(FIRST_NAMES[:50]):
            self.people.append(
                Person(
                    name,
                    {
                        "discord": str(1_100_000_000_000_000 + n * 7919),
                        "telegram": str(700_000_000 + n * 104_729),
                        "email": f"{name.lower()}.{n}@example.org",
                        "local": name.lower(),
                    },
                )
            )
        for n in range(50):  # 150 DMs: each person on the three entrances but one
            for entrance in ENTRANCES:
                if entrance != ENTRANCES[n % 4]:
                    external = f"{entrance}-dm-{self.people[n].accounts[entrance]}"
                    self.conversations.append(Conversation(entrance, external, "dm", (n,)))
        for n, entrance in enumerate(["discord"] * 22 + ["telegram"] * 20 + ["email"] * 8):
            members = tuple(sorted(rng.sample(range(50), rng.randint(3, 15))))
            self.conversations.append(
                Conversation(entrance, f"{entrance}-group-{n}", "group", members)
            )
        ranks = list(range(1, len(self.conversations) + 1))
        rng.shuffle(ranks)
        self.conversation_weights = list(itertools.accumulate(r**-0.9 for r in ranks))
        self.vocabulary = COMMON + [made_up_word(rng) for _ in range(6000)]
        self.word_weights = list(
            itertools.accumulate(r**-1.05 for r in range(1, len(self.vocabulary) + 1))
        )

    def pick_conversation(self, rng: random.Random, entrance: str | None = None) -> Conversation:
        """A conversation, busy ones more often (only this entrance's, when given)."""
        if entrance is None:
            return rng.choices(self.conversations, cum_weights=self.conversation_weights)[0]
        weights = itertools.pairwise([0.0, *self.conversation_weights])
        ours = [
            (c, b - a)
            for c, (a, b) in zip(self.conversations, weights, strict=True)
            if c.entrance == entrance
        ]
        return rng.choices([c for c, _ in ours], weights=[w for _, w in ours])[0]

    def words(self, rng: random.Random, low: int, high: int) -> str:
        count = min(high, low + int(rng.expovariate(1 / ((high - low) / 3))))
        return " ".join(rng.choices(self.vocabulary, cum_weights=self.word_weights, k=count))


def made_up_word(rng: random.Random) -> str:
    syllables = "ka lo mi ren su ta vi no be dra fel gon hu ish jo kel mar ost pra quo".split()
    return "".join(rng.choices(syllables, k=rng.randint(2, 4)))


@dataclass(frozen=True)
class Exchange:
    """One incoming message and, maybe, the persona's reply to it."""

    incoming: Incoming
    writer: tuple[int, str]  # (person index, entrance)
    reply_at: float | None
    reply_text: str
    notes: list[str]
    intention: tuple[str, float, int, str | None] | None  # text, due, duration, target
    mark_done: bool


@dataclass
class Chunk:
    exchanges: list[Exchange] = field(default_factory=list)
    writers: set[tuple[int, str]] = field(default_factory=set)
    ends_at: float = 0.0


@dataclass
class Progress:
    """What the stream remembers between chunks (all deterministic)."""

    messages: int = 0  # planned
    chunks: int = 0  # written
    exchanges: int = 0
    now: float = START  # the planner's time (runs a chunk ahead)
    clock: float = START  # memory's clock: the end of the last chunk written
    soul_version: int | None = None
    linked: set[tuple[int, str]] = field(default_factory=set)
    open_intentions: dict[int, list[int]] = field(default_factory=dict)  # person -> ids
    recent: dict[int, list[int]] = field(default_factory=dict)  # conversation -> message ids


class Filler:
    """Grows one memory.db chunk by chunk; `fill_to(n)` stops at exactly n messages."""

    def __init__(self, memory: Memory, config: Config, seed: int) -> None:
        self.memory = memory
        self.config = config
        self.world = World(seed)
        self.rng = random.Random(seed * 1_000_003 + 1)  # the planner's
        self.decisions = random.Random(seed * 1_000_003 + 2)  # the coordinator's
        self.progress = Progress()
        self.commands = Commands(memory, config)
        self.scheduler = Scheduler(config, memory=memory, name="scheduler")

    async def start(self) -> None:
        # A bigger page cache for the building connection only: the 1M build takes
        # 165 s instead of 190 s (it keeps more of the growing indexes in memory).
        await self.memory.write(lambda conn: conn.execute("PRAGMA cache_size = -262144"))
        self.memory.clock = lambda: self.progress.clock
        soul = await sync_soul_file(self.memory, SOUL)
        self.progress.soul_version = soul.id if soul else None
        for entrance, instance in INSTANCES.items():
            await self.memory.register_instance(instance, entrance, "bench-host", 1000, None)
        await self.memory.register_instance("laptop", "local", "laptop", 2000, None)
        await self.memory.stop_instance("laptop")

    async def fill_to(self, count: int, report: Callable[[int], None] | None = None) -> None:
        """Plan the next chunk in this thread while the writer thread stores the last one."""
        chunk = self.plan_chunk(count)
        while chunk is not None:
            writing = asyncio.ensure_future(self.memory.write(self._write_chunk, chunk.exchanges))
            following = self.plan_chunk(count)
            await writing
            await self.between_chunks(chunk)
            if report is not None:
                report(self.written)
            chunk = following

    @property
    def written(self) -> int:
        """Messages stored so far (the planner runs a chunk ahead)."""
        return self.progress.chunks * CHUNK

    def plan_chunk(self, count: int) -> Chunk | None:
        budget = min(CHUNK, count - self.progress.messages)
        if budget <= 0:
            return None
        chunk, used = Chunk(), 0
        while used < budget:
            exchange = self.plan_exchange(allow_reply=budget - used >= 2)
            chunk.exchanges.append(exchange)
            chunk.writers.add(exchange.writer)
            used += 1 + (exchange.reply_at is not None)
        chunk.ends_at = self.progress.now
        self.progress.messages += used
        return chunk

    def plan_exchange(self, *, allow_reply: bool) -> Exchange:
        rng, world, progress = self.rng, self.world, self.progress
        progress.now += rng.expovariate(1 / EXCHANGE_EVERY_S)
        progress.exchanges += 1
        conversation = world.pick_conversation(rng)
        author_index = rng.choice(conversation.members)
        author, entrance = world.people[author_index], conversation.entrance
        incoming = Incoming.model_construct(
            entrance=entrance,
            conversation_id=conversation.external_id,
            conversation_kind=conversation.kind,
            conversation_title=None if conversation.kind == "dm" else conversation.external_id,
            author=Author.model_construct(
                external_id=author.accounts[entrance],
                display_name=author.display(entrance),
                is_bot=False,
            ),
            text=world.words(rng, 3, 40 if entrance == "email" else 25),
            platform_message_id=f"p{progress.exchanges}",
            reply_to_platform_id=None,
            received_at=datetime.fromtimestamp(progress.now, UTC),
        )
        answers = rng.random() < (0.95 if conversation.kind == "dm" else 0.35)
        if not (allow_reply and answers):
            return Exchange(incoming, (author_index, entrance), None, "", [], None, False)
        intention = None
        if rng.random() < 0.03:
            what = f"{rng.choice(('call', 'send', 'review', 'book', 'remind'))} {author.name}"
            thing = world.words(rng, 1, 4)
            due = round((progress.now + rng.uniform(7200, 10 * 86400)) / 900) * 900
            target = (
                rng.choice([e for e in ENTRANCES if e != entrance]) if rng.random() < 0.1 else None
            )
            intention = (f"{what} about the {thing}", due, rng.choice((1800, 3600, 5400)), target)
        notes = [f"{author.name} mentioned {world.words(rng, 2, 8)}"] if rng.random() < 0.05 else []
        return Exchange(
            incoming,
            (author_index, entrance),
            progress.now + rng.uniform(2, 30),
            world.words(rng, 8, 60),
            notes,
            intention,
            rng.random() < 0.04,
        )

    def _write_chunk(self, conn: sqlite3.Connection, plan: list[Exchange]) -> None:
        """Runs inside Memory.write's transaction, in the writer connection's thread."""
        for exchange in plan:
            incoming = exchange.incoming
            instance = INSTANCES[incoming.entrance]
            at = incoming.received_at.timestamp()
            recorded = record_incoming_in(conn, at, incoming, instance)
            if exchange.reply_at is not None:
                self._store_reply(conn, exchange, recorded, instance)
            self.progress.recent.setdefault(recorded.conversation_id, []).append(
                recorded.message_id
            )
            del self.progress.recent[recorded.conversation_id][:-3]

    def _store_reply(
        self, conn: sqlite3.Connection, exchange: Exchange, recorded: Recorded, instance: str
    ) -> None:
        assert exchange.reply_at is not None
        incoming, person = exchange.incoming, recorded.person_id
        pending = self.progress.open_intentions.setdefault(person, [])
        intentions = []
        if exchange.intention is not None:
            text, due, duration, target = exchange.intention
            intentions.append(
                NewIntention(
                    owner_instance=instance,
                    entrance=incoming.entrance,
                    conversation_id=recorded.conversation_id,
                    person_id=person,
                    visibility=incoming.visibility,
                    text=text,
                    subject=normalize_subject(text),
                    due_at=due,
                    duration_s=duration,
                    target_entrance=target,
                    source_message_id=recorded.message_id,
                )
            )
        done = [pending.pop(0)] if exchange.mark_done and pending else []
        recent = self.progress.recent.get(recorded.conversation_id, [])
        soul = self.progress.soul_version
        stored = store_turn_in(
            conn,
            exchange.reply_at,
            TurnRecord(
                incoming_id=recorded.message_id,
                conversation_id=recorded.conversation_id,
                entrance=incoming.entrance,
                instance_id=instance,
                person_id=person,
                visibility=incoming.visibility,
                reply_text=exchange.reply_text,
                soul_version=soul,
                model=MODEL,
                context_rows=[("message", m) for m in [recorded.message_id, *recent]]
                + ([("soul", soul)] if soul else []),
                intentions=intentions,
                notes=exchange.notes,
                done=done,
                prompt_tokens=1800,
                completion_tokens=120,
                cost_usd=0.0072,
            ),
        )
        pending.extend(stored.intention_ids)

    async def between_chunks(self, chunk: Chunk) -> None:
        """What happens in a few simulated days besides messages."""
        self.progress.clock = chunk.ends_at + 60
        await self.link_new_accounts(chunk.writers)
        for instance in INSTANCES.values():
            await self.memory.heartbeat(instance, self.progress.soul_version)
        await self.scheduler.tick()  # surfaces items, expires intentions, marks the dead
        await self.deliver_outbox()
        await self.decide_items()
        self.progress.chunks += 1
        if self.progress.chunks % 40 == 0:  # every 200k messages, about five months
            await self.edit_soul()

    async def link_new_accounts(self, writers: set[tuple[int, str]]) -> None:
        """Link each account that has written to the first account of its person."""
        for n, entrance in sorted(writers - self.progress.linked):
            person = self.world.people[n]
            first = next((e for e in ENTRANCES if (n, e) in self.progress.linked), None)
            if first is not None:
                await self.memory.link_identities(
                    (first, person.accounts[first]),
                    (entrance, person.accounts[entrance]),
                    "admin:bench",
                )
            self.progress.linked.add((n, entrance))

    async def deliver_outbox(self) -> None:
        async def sent(item: OutboxItem) -> None:
            return None

        for entrance in ENTRANCES:
            await OutboxCourier(self.memory, entrance, INSTANCES[entrance], sent).deliver_due()

    async def decide_items(self) -> None:
        """The coordinator answers most surfaced items; a few wait, some are dismissed."""
        for item in await self.memory.pending_items():
            if item.status != "surfaced" or self.decisions.random() < 0.1:
                continue
            if item.kind == "request":
                choice = "approve" if self.decisions.random() < 0.7 else "deny"
                command = Command(choice, [str(item.id)])
            elif self.decisions.random() < 0.15:
                command = Command("dismiss", [str(item.id)])
            else:
                choice = self.decisions.choice(("A", "B", "both", "neither"))
                command = Command("resolve", [str(item.id), choice])
            await self.commands.run(operator("local:coordinator"), command)

    async def edit_soul(self) -> None:
        edit = datetime.fromtimestamp(self.progress.clock, UTC).strftime("%B %Y")
        text = SOUL.read_text(encoding="utf-8") + f"\n\n# Season\nEdited in {edit}.\n"
        version, _ = await self.memory.record_soul_version(
            text=text, name="Mirror", sha256=sha256_of(text), source="cli", author="admin"
        )
        self.progress.soul_version = version.id


async def build(sizes: list[int], seed: int = SEED, *, verbose: bool = True) -> float:
    """Build the databases of these sizes in one growing stream; returns seconds."""
    sizes = sorted(sizes)
    if any(size % CHUNK for size in sizes):
        raise ValueError(f"sizes must be multiples of {CHUNK}")
    started = time.perf_counter()
    VAR.mkdir(parents=True, exist_ok=True)
    prune_stale(f"memory-*-seed{seed}.db", {cache_path(size, seed) for size in SIZES})
    building = VAR / f"building-{sizes[-1]}-seed{seed}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
    config = load_config(ROOT / "config" / "mirror.toml", db=building)
    every = max(CHUNK, sizes[-1] // 20)

    def report(written: int) -> None:
        if verbose and written % every == 0:
            spent = time.perf_counter() - started
            left = spent / written * (sizes[-1] - written)
            progress(
                f"prefill: {written:,} of {sizes[-1]:,} messages after {spent:.0f} s"
                f" (about {left:.0f} s to go)"
            )

    if verbose:
        progress(f"prefill: building memories of {', '.join(f'{s:,}' for s in sizes)} messages")
    async with Memory(building) as memory:
        filler = Filler(memory, config, seed)
        await filler.start()
        for size in sizes[:-1]:
            await filler.fill_to(size, report)
            partial = VAR / f"building-copy-{size}-seed{seed}.db"
            await memory.backup(partial)
            partial.rename(cache_path(size, seed))  # a reader never sees half a copy
        await filler.fill_to(sizes[-1], report)
    building.rename(cache_path(sizes[-1], seed))
    spent = time.perf_counter() - started
    BUILD_LOG.write_text(json.dumps({"size": sizes[-1], "seconds": round(spent, 1)}))
    if verbose:
        progress(f"prefill: built in {spent:.0f} s")
    return spent


async def ensure(sizes: list[int] | tuple[int, ...] = SIZES, seed: int = SEED) -> float:
    """Build whichever sizes are not cached yet; returns the seconds spent (0 when cached)."""

    def missing() -> list[int]:
        return [size for size in sizes if not cache_path(size, seed).exists()]

    if not missing():
        return 0.0
    # Two benchmarks started at once would build into the same files: the second waits
    # for the first's build, then finds its sizes cached.
    VAR.mkdir(parents=True, exist_ok=True)
    with (VAR / "prefill.lock").open("w") as lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        wanted = missing()
        return await build(wanted, seed) if wanted else 0.0


def working_copy(size: int, folder: Path, seed: int = SEED) -> Path:
    """A private copy of the cached database of this size (benchmarks write to it)."""
    return copy_database(cache_path(size, seed), folder / f"memory-{size}.db")


async def shift_clock(memory: Memory) -> float:
    """Run this memory's clock from just after its last message; returns the shift (s).

    The prefilled history is simulated; a benchmark's turns come right after it, so time
    windows (the last hour, the last day) hold what they would in a live memory."""
    latest = await memory.message_log(1)
    last = latest[0].created_at.timestamp() if latest else time.time()
    shift = time.time() - (last + 60)
    memory.clock = lambda: time.time() - shift
    return shift


async def describe(db: Path) -> str:
    """What a prefilled database holds, in one line (read through Memory)."""
    async with Memory(db) as memory:
        status = await memory.status(dead_after_s=30)
        people = await memory.people()
    accounts = sum(len(person.identities) for person in people)
    return (
        f"{status.messages} messages, {len(people)} people with {accounts} linked accounts,"
        f" {status.open_intentions} open intentions, {status.open_conflicts} open conflicts,"
        f" soul v{status.soul.id if status.soul else '-'}, {db.stat().st_size / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    wanted = [int(a) for a in sys.argv[1:]] or list(SIZES)
    spent = asyncio.run(ensure(wanted))
    print(f"prefill: built in {spent:.1f}s" if spent else "prefill: all cached")
    for size in wanted:
        print(f"{size:>9}: {cache_path(size).name}: {asyncio.run(describe(cache_path(size)))}")
