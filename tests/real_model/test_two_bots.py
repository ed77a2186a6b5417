"""The seed experiment, reproduced: two MirrorOS personas, both answered by a real model, talking
to each other in one Discord channel until the guard ends it.

Wren and Robin each have their own memory.db, SOUL.md and coordinator, and each lists the
other's bot account in `[access.discord] bots`. Each runs as a real `mirror run discord`
process. The fake Discord serves one bot per server, so the shared channel is two fakes with
the same guild and channel ids, one per bot, joined by a bridge in the test: what one
persona posts in the channel is posted into the other's fake under its bot account, exactly
what the other bot would receive from Discord. One message from a person (seen by both)
starts it. The guard must end the exchange within its budget and tell each coordinator once
per stop; memory must hold the transcript. The test records how many exchanges it took and
whether the model fell into acknowledgements ("Acknowledged. Standing by.") before the
budget ended it: the summary is printed and written to var/real_model/loop-summary.txt.

The slow variant runs the two personas in this process on a test clock (memory's clock):
one message every three minutes never builds a streak, and the hourly budget ends it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.config import load_config
from bot.guard import is_bare_acknowledgement, similar
from bot.instance import Instance
from bot.models import Author, Incoming
from bot.outbox import Button
from tests.fakes.discord_api import DEFAULT_TOKEN, FakeDiscord
from tests.processes import MirrorProcess
from tests.real_model.conftest import (
    MODEL,
    SUMMARY_DIR,
    LlamaServer,
    model_toml,
    persona_dir,
)
from tests.waiting import wait_until

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(1800)]

GUILD = 200_000_000_000_000_777
CHANNEL = 300_000_000_000_000_777
WREN_BOT, ROBIN_BOT = 500_000_000_000_000_101, 500_000_000_000_000_102
ADA = 400_000_000_000_000_001  # the person who starts it
WREN_COORDINATOR, ROBIN_COORDINATOR = 400_000_000_000_000_011, 400_000_000_000_000_012
STREAK_BUDGET, HOURLY_BUDGET = 8, 20  # the shipped [guard] defaults
OPENING = (
    "Hello Wren and Robin! You are both in this channel now. Please talk with each other: "
    "ask each other questions and keep the conversation going."
)
FINAL = ("answered", "unanswered", "refused", "echo")
LOOP_S = 1500.0  # the whole exchange, every turn queued on one CPU model server


def query(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def channel_transcript(db: Path, channel: int) -> list[tuple[str, str, str]]:
    """(direction, status, text) of every message of the channel in memory, in order."""
    return [
        (str(d), str(s), str(t))
        for d, s, t in query(
            db,
            "SELECT m.direction, m.status, m.text FROM messages m JOIN conversations c "
            "ON c.id = m.conversation_id WHERE c.external_id = ? ORDER BY m.id",
            str(channel),
        )
    ]


def words(texts: list[str]) -> list[str]:
    """Texts as a multiset of their words (turns run concurrently: order may differ)."""
    return sorted(" ".join(text.split()) for text in texts)


def refusals(db: Path) -> list[str]:
    """Why the guard refused messages, oldest first."""
    return [
        str(json.loads(detail or "{}").get("reason"))
        for (detail,) in query(
            db, "SELECT detail FROM audit WHERE action = 'guard.refused' ORDER BY id"
        )
    ]


@dataclass
class Persona:
    name: str
    bot_id: int
    coordinator: int
    db: Path
    config: Path
    fake: FakeDiscord
    process: MirrorProcess | None = None
    # The channel messages others posted into this persona's fake: its platform ids.
    received: list[int] = field(default_factory=list)

    def posts(self) -> list[str]:
        """What this persona posted in the channel, in order."""
        return [str(s["content"]) for s in self.fake.sent if s["channel_id"] == CHANNEL]

    def notices(self) -> list[str]:
        """The bot-stop notices its coordinator got (in their DM)."""
        return [
            str(s["content"])
            for s in self.fake.sent
            if s["channel_id"] != CHANNEL and "I stopped answering bots" in str(s["content"])
        ]

    def status(self, platform_id: int) -> str | None:
        found = query(
            self.db,
            "SELECT status FROM messages WHERE direction = 'in' AND entrance = 'discord' "
            "AND platform_message_id = ?",
            str(platform_id),
        )
        return str(found[0][0]) if found else None


def persona_config(
    root: Path, name: str, coordinator: int, other_bot: int, fake: FakeDiscord, model: str
) -> tuple[Path, Path]:
    db, soul = persona_dir(root, name)
    config = root / name.lower() / "mirror.toml"
    config.write_text(
        f'[memory]\npath = "{db}"\n\n[soul]\npath = "{soul}"\n\n'
        f'[coordinator]\naddress = "discord:{coordinator}"\n\n'
        "[entrances.discord]\nenabled = true\n"
        f'api_base = "{fake.api_base}"\ngateway_url = "{fake.gateway_url}"\n'
        f'channels = ["{CHANNEL}"]\n\n'
        f'[access.discord]\nbots = ["{other_bot}"]\n\n'
        f"[guard]\nbot_exchanges_per_conversation = {STREAK_BUDGET}\n"
        f"bot_exchanges_per_hour = {HOURLY_BUDGET}\n\n" + model,
        encoding="utf-8",
    )
    return db, config


def fake_for(bot_id: int, name: str, other: tuple[int, str], coordinator: int) -> FakeDiscord:
    fake = FakeDiscord(bot_user_id=bot_id, bot_username=name)
    fake.add_guild(GUILD, "Seed Lab", channels=[(CHANNEL, "bots")])
    fake.add_user(other[0], other[1], bot=True)
    fake.add_user(ADA, "ada")
    fake.add_user(coordinator, f"{name}-coordinator")
    return fake


@dataclass
class Line:
    speaker: str
    text: str
    at: float


async def bridge(source: Persona, target: Persona, said: list[Line]) -> None:
    """Post into `target`'s fake everything `source` posts in the channel, as its bot."""
    seen = 0
    while True:
        await source.fake.wait_for_sent(
            lambda sent: sent["channel_id"] == CHANNEL, since=seen, timeout=24 * 3600
        )
        new, seen = source.fake.sent[seen:], len(source.fake.sent)
        for sent in new:
            if sent["channel_id"] != CHANNEL:
                continue
            said.append(Line(source.name, str(sent["content"]), time.monotonic()))
            message = await target.fake.push_message(
                CHANNEL, str(sent["content"]), author_id=source.bot_id, author_bot=True
            )
            target.received.append(int(message["id"]))


def quiet(personas: Sequence[Persona]) -> bool:
    """The exchange is over: every message each persona received is handled, and every
    reply it gave is posted and passed on (nothing in flight anywhere)."""
    for persona in personas:
        statuses = [persona.status(pid) for pid in persona.received]
        if any(status not in FINAL for status in statuses):
            return False
        # Each answer (or apology, when the model failed) is one post in the channel.
        if len(persona.posts()) != statuses.count("answered") + statuses.count("unanswered"):
            return False
    passed_on = sum(len(p.received) for p in personas) - len(personas)  # minus the opening
    return passed_on == sum(len(p.posts()) for p in personas)


@pytest_asyncio.fixture
async def pair(tmp_path: Path, llama_server: LlamaServer) -> AsyncIterator[tuple[Persona, Persona]]:
    wren_fake = fake_for(WREN_BOT, "wren", (ROBIN_BOT, "robin"), WREN_COORDINATOR)
    robin_fake = fake_for(ROBIN_BOT, "robin", (WREN_BOT, "wren"), ROBIN_COORDINATOR)
    model = model_toml(llama_server)
    async with wren_fake, robin_fake:
        personas = []
        for name, bot, coordinator, other, fake in [
            ("Wren", WREN_BOT, WREN_COORDINATOR, ROBIN_BOT, wren_fake),
            ("Robin", ROBIN_BOT, ROBIN_COORDINATOR, WREN_BOT, robin_fake),
        ]:
            db, config = persona_config(tmp_path, name, coordinator, other, fake, model)
            persona = Persona(name, bot, coordinator, db, config, fake)
            persona.process = MirrorProcess(
                "run",
                "discord",
                "--config",
                str(config),
                env={"MIRROR_DISCORD_TOKEN": DEFAULT_TOKEN},
            )
            personas.append(persona)
        try:
            for persona in personas:
                assert persona.process is not None
                await persona.process.start()
            await asyncio.gather(
                *(
                    p.process.wait_for_line(
                        lambda line: "discord entrance connected" in line,
                        stream="stderr",
                        timeout=90,
                    )
                    for p in personas
                    if p.process is not None
                )
            )
            yield personas[0], personas[1]
        finally:
            codes = await asyncio.gather(
                *(p.process.stop(timeout=60) for p in personas if p.process is not None)
            )
            assert codes == [0, 0], "".join(p.process.tail() for p in personas if p.process)


def summarise(
    title: str, personas: Sequence[Persona], said: list[Line], started: float, ended: float
) -> str:
    lines = [f"{title} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"]
    lines.append(
        f"model {MODEL} (SmolLM2-135M-Instruct Q4_1, llama.cpp); budgets: {STREAK_BUDGET} "
        f"bot exchanges in a row, {HOURLY_BUDGET} an hour; {ended - started:.0f} s in all"
    )
    acks = [line for line in said if is_bare_acknowledgement(line.text)]
    for persona in personas:
        reasons = refusals(persona.db)
        lines.append(
            f"- {persona.name}: posted {len(persona.posts())} messages (1 to the person, "
            f"{len(persona.posts()) - 1} to the other bot); refused {len(reasons)}: "
            f"{'; '.join(reasons) or 'none'}; coordinator notices: {len(persona.notices())}"
        )
    first_stop = next(
        (
            reason
            for persona in personas
            for reason in refusals(persona.db)
            if reason.startswith(("bot budget", "bot loop"))
        ),
        None,
    )
    repeats = sum(1 for a, b in itertools.pairwise(said) if similar(a.text, b.text))
    degenerated = any(r.startswith("bot loop") for p in personas for r in refusals(p.db))
    lines.append(
        f"messages passed between the bots: {len(said)}; bare acknowledgements among them: "
        f"{len(acks)}; near-repeats of the message before: {repeats}; the model degenerated "
        f"(acknowledgements or repeating itself) before the budget ended it: "
        f"{'yes' if degenerated else 'no'} (first stop: {first_stop})"
    )
    lines.append("transcript (as the channel saw it):")
    lines.extend(f"  {line.speaker}: {line.text[:160]!r}" for line in said)
    return "\n".join(lines) + "\n"


def write_summary(name: str, text: str) -> None:
    SUMMARY_DIR.mkdir(parents=True, exist_ok=True)
    (SUMMARY_DIR / name).write_text(text, encoding="utf-8")
    print(text)


async def test_two_personas_on_a_real_model_loop_until_the_guard_stops_them(
    pair: tuple[Persona, Persona],
) -> None:
    wren, robin = pair
    said: list[Line] = []
    bridges = [
        asyncio.create_task(bridge(wren, robin, said)),
        asyncio.create_task(bridge(robin, wren, said)),
    ]
    started = time.monotonic()
    try:
        for persona in (wren, robin):  # one message, in the channel both bots read
            message = await persona.fake.push_message(CHANNEL, OPENING, author_id=ADA)
            persona.received.append(int(message["id"]))
        await wait_until(
            lambda: quiet([wren, robin]),
            LOOP_S,
            lambda: f"the bots to stop ({len(said)} messages so far)",
            interval=0.5,
        )
        ended = time.monotonic()
        # Notices go out through each persona's outbox: give them the time to arrive.
        for persona in (wren, robin):
            if any(r.startswith("bot budget") for r in refusals(persona.db)):
                await wait_until(persona.notices, 60, f"{persona.name}'s coordinator told")
    finally:
        for task in bridges:
            task.cancel()
        await asyncio.gather(*bridges, return_exceptions=True)

    summary = summarise(
        "Two MirrorOS personas on one real model", [wren, robin], said, started, ended
    )
    write_summary("loop-summary.txt", summary)

    # The exchange ended on the guard's word (budget or loop), not on a failing model.
    assert refusals(wren.db) or refusals(robin.db), summary
    for persona in (wren, robin):
        posts = persona.posts()
        reasons = refusals(persona.db)
        # Within the budget: never more bot messages answered than it allows in a row.
        assert 1 <= len(posts) <= STREAK_BUDGET + 1, summary
        assert all(r.startswith(("bot budget", "bot loop")) for r in reasons), summary
        # Each coordinator hears once of each stop for the budget, and never twice.
        budget_stops = [r for r in reasons if r.startswith("bot budget")]
        assert len(persona.notices()) == (1 if budget_stops else 0), summary
        # Memory holds the transcript: the person's opening, what the other bot said and
        # every reply, as the channel carried them.
        transcript = channel_transcript(persona.db, CHANNEL)
        assert words([t for d, _, t in transcript if d == "out"]) == words(posts)
        heard = [line.text for line in said if line.speaker != persona.name]
        assert words([t for d, _, t in transcript if d == "in"]) == words([OPENING, *heard])
    # A real model answered (not the offline brain's apology).
    models = query(wren.db, "SELECT DISTINCT model FROM model_usage")
    assert models == [(MODEL,)]


# The slow variant: one message every three minutes, on a test clock ----------------------


class Clock:
    """Memory's clock for both personas, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Channel:
    """The adapter's `send` for one persona: what it posted, by target."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

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
        self.sent.append((target, text))
        return f"p{len(self.sent)}"


SLOW_HOURLY, SLOW_GAP_S, PAUSE_S = 6, 120.0, 180.0


async def test_a_slow_loop_between_two_real_model_personas_stops_at_the_hourly_budget(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    """Each bot waits three minutes before it answers: longer than the streak gap, so the
    streak never builds; the hourly budget ends it. Loop detection (acknowledgements,
    repeats) is off here so the budget, not the model's mood, decides."""
    clock = Clock(time.time())
    personas: dict[str, tuple[Instance, Channel, int]] = {}
    for name, bot, coordinator, other in [
        ("Wren", WREN_BOT, WREN_COORDINATOR, ROBIN_BOT),
        ("Robin", ROBIN_BOT, ROBIN_COORDINATOR, WREN_BOT),
    ]:
        db, soul = persona_dir(tmp_path, name)
        path = tmp_path / name.lower() / "mirror.toml"
        path.write_text(
            f'[memory]\npath = "{db}"\n\n[soul]\npath = "{soul}"\n\n'
            f'[coordinator]\naddress = "discord:{coordinator}"\n\n'
            f'[access.discord]\nbots = ["{other}"]\n\n'
            f"[guard]\nbot_exchanges_per_hour = {SLOW_HOURLY}\nbot_streak_gap_s = {SLOW_GAP_S}\n"
            "bot_ack_run = 0\nbot_repeat_run = 0\n\n" + model_toml(llama_server),
            encoding="utf-8",
        )
        channel = Channel()
        instance = Instance(
            load_config(path), instance_id=name.lower(), entrance="discord", send=channel.send
        )
        instance.memory.clock = clock
        personas[name] = (instance, channel, bot)

    def message(n: int, text: str, author: str, bot: int | None) -> Incoming:
        return Incoming(
            entrance="discord",
            conversation_id=str(CHANNEL),
            conversation_kind="group",
            conversation_title="#bots (Seed Lab)",
            author=Author(external_id=str(bot or ADA), display_name=author, is_bot=bot is not None),
            text=text,
            platform_message_id=f"slow-{n}",
            places=(str(GUILD),),
        )

    said: list[Line] = []
    started = time.monotonic()
    wren, robin = personas["Wren"][0], personas["Robin"][0]
    async with wren, robin:
        for instance in (wren, robin):
            instance.deliver_outbox()  # what the guard tells the coordinator goes out too
        reply = await wren.handle(message(0, "Wren, say hello to Robin, please.", "ada", None))
        assert reply is not None and reply.model == MODEL, reply
        speaker, listener, n = "Wren", "Robin", 1
        while reply is not None and n < 4 * SLOW_HOURLY:
            said.append(Line(speaker, reply.text, time.monotonic()))
            clock.now += PAUSE_S
            instance, _, _ = personas[listener]
            reply = await instance.handle(
                message(n, reply.text, speaker.lower(), personas[speaker][2])
            )
            speaker, listener, n = listener, speaker, n + 1
        stopped, _, _ = personas[speaker]  # the one that said nothing
        stopper_name = speaker
        await wait_until(
            lambda: [t for t, x in personas[stopper_name][1].sent if "I stopped" in x],
            60,
            "the coordinator's notice",
        )
    ended = time.monotonic()

    reasons = refusals(stopped.config.memory.path)
    reason = f"{SLOW_HOURLY} bot exchanges within an hour"
    title = "Slow loop (one message every 3 test-clock minutes)"
    lines = [
        f"{title}: stopped by {stopper_name} after {len(said)} messages between the bots, "
        f"{(len(said)) * PAUSE_S / 60:.0f} test-clock minutes, {ended - started:.0f} s real; "
        f"refusals: {reasons}",
        *(f"  {line.speaker}: {line.text[:160]!r}" for line in said),
    ]
    write_summary("slow-loop-summary.txt", "\n".join(lines) + "\n")

    assert reasons == [f"bot budget: {reason}"], lines
    [(kind, streak)] = query(
        stopped.config.memory.path, "SELECT stop_kind, streak FROM bot_streaks"
    )
    assert kind == "hour" and streak < STREAK_BUDGET
    # It answered exactly its hourly budget of bot messages, each one three minutes apart.
    answered_bots = [line for line in said if line.speaker == stopper_name]
    assert len(answered_bots) == SLOW_HOURLY
    for name, (_, channel, _) in personas.items():
        notices = [x for _, x in channel.sent if "I stopped answering bots" in x]
        coordinator = WREN_COORDINATOR if name == "Wren" else ROBIN_COORDINATOR
        if name == stopper_name:
            assert [t for t, x in channel.sent if "I stopped" in x] == [str(coordinator)]
            assert reason in notices[0]
        else:
            assert notices == []
