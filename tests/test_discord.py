"""The Discord entrance: a real `mirror run discord` process against FakeDiscord.

The fake (tests/fakes/discord_api.py) runs in the test's event loop; the entrance is a
separate OS process pointed at it through `[entrances.discord] api_base / gateway_url`.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.discord import is_fence_line, split_for_discord, text_for_persona
from bot.memory import Memory
from tests.conftest import run_mirror
from tests.fakes.discord_api import DEFAULT_BOT_USER_ID, DEFAULT_TOKEN, FakeDiscord
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.server import free_port
from tests.processes import ChatProcess, MirrorProcess
from tests.waiting import wait_until

BOT = DEFAULT_BOT_USER_ID
TOKEN = DEFAULT_TOKEN
GUILD = 200_000_000_000_000_001
CHANNEL = 300_000_000_000_000_001
OPEN_CHANNEL = 300_000_000_000_000_002  # in [entrances.discord] channels: no mention needed
ALICE = 400_000_000_000_000_001
BOB = 400_000_000_000_000_002
COORDINATOR = 400_000_000_000_000_009
ALICE_DM = 500_000_000_000_000_001
CONNECTED = "discord entrance connected"

Sent = dict[str, Any]


# -------------------------------------------------------------------- helpers


def fences_balanced(chunk: str) -> bool:
    return sum(is_fence_line(line) for line in chunk.split("\n")) % 2 == 0


def visible_content(text: str) -> str:
    """The text without fence lines and whitespace: what a split must keep, in order."""
    return "".join("".join(line for line in text.split("\n") if not is_fence_line(line)).split())


def without_blank_edges(text: str) -> str:
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def in_channel(channel_id: int) -> Callable[[Sent], bool]:
    return lambda sent: sent["channel_id"] == channel_id


def replying_to(message: dict[str, Any]) -> Callable[[Sent], bool]:
    def check(sent: Sent) -> bool:
        reference = sent["message_reference"]
        return reference is not None and reference["message_id"] == int(message["id"])

    return check


def discord_config(write_config: Callable[..., Path], fake: FakeDiscord, extra: str = "") -> Path:
    return write_config(
        "[entrances.discord]\nenabled = true\n"
        f'api_base = "{fake.api_base}"\ngateway_url = "{fake.gateway_url}"\n'
        f'channels = ["{OPEN_CHANNEL}"]\n\n' + extra
    )


async def start_discord(config: Path, *args: str, **env: str) -> MirrorProcess:
    """`mirror run discord`, once its instance has started and the gateway is connected."""
    process = MirrorProcess(
        "run",
        "discord",
        "--config",
        str(config),
        *args,
        env={"MIRROR_DISCORD_TOKEN": TOKEN, **env},
    )
    await process.start()
    try:
        await process.wait_for_line(lambda line: CONNECTED in line, stream="stderr", timeout=30)
    except BaseException:
        await process.stop(signal.SIGKILL)
        raise
    return process


async def run_mirror_async(
    *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`mirror ARGS` (with MIRROR_DISCORD_TOKEN) without blocking the loop serving the fake."""
    if token is None:
        return await asyncio.to_thread(run_mirror, *args)
    return await asyncio.to_thread(lambda: run_mirror(*args, MIRROR_DISCORD_TOKEN=token))


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    fake.add_guild(GUILD, "Heron Club", channels=[(CHANNEL, "general"), (OPEN_CHANNEL, "wren")])
    for user_id, name in ((ALICE, "alice"), (BOB, "bob"), (COORDINATOR, "carol")):
        fake.add_user(user_id, name)
    async with fake:
        yield fake


@pytest.fixture
async def processes() -> AsyncIterator[list[MirrorProcess]]:
    """Processes a test starts; whatever still runs at the end is killed (quick teardown:
    tests that care about a clean stop stop their process themselves)."""
    started: list[MirrorProcess] = []
    yield started
    for process in started:
        await process.stop(signal.SIGKILL)


# -------------------------------------------------------------------- pure functions


def test_short_text_is_one_message_and_blank_text_none() -> None:
    assert split_for_discord("hello\n\nthere") == ["hello\n\nthere"]
    assert split_for_discord(" \n\n") == []
    assert split_for_discord("x" * 2000) == ["x" * 2000]


def test_split_prefers_paragraphs_and_reopens_a_cut_code_block_with_its_language() -> None:
    paragraphs = ["First " + "a" * 1200, "Second " + "b" * 1200, "Third " + "c" * 300]
    assert split_for_discord("\n\n".join(paragraphs)) == [
        paragraphs[0],
        paragraphs[1] + "\n\n" + paragraphs[2],
    ]

    code = "\n".join(f"    total += values[{i}] * weights[{i}]" for i in range(130))
    text = "Here it is:\n\n```python\n" + code + "\n```\n\nThat's all."
    chunks = split_for_discord(text)
    assert len(chunks) == 3
    assert chunks[0].startswith("Here it is:\n\n```python\n") and chunks[0].endswith("\n```")
    assert chunks[1].startswith("```python\n    total") and chunks[1].endswith("\n```")
    assert chunks[2].startswith("```python\n") and chunks[2].endswith("```\n\nThat's all.")
    assert all(len(c) <= 2000 and fences_balanced(c) for c in chunks)
    assert visible_content("".join(chunks)) == visible_content(text)


def test_a_code_block_that_fits_in_one_message_is_not_cut() -> None:
    block = "```js\n" + "\n".join(f"console.log({i});" for i in range(60)) + "\n```"
    text = "p" * 1500 + "\n" + block + "\nafter"
    first, second = split_for_discord(text)
    assert first == "p" * 1500
    assert second == block + "\nafter"


def test_an_unclosed_block_is_closed_and_long_lines_are_cut_at_spaces() -> None:
    [chunk] = split_for_discord("```\nprint(1)")
    assert chunk == "```\nprint(1)\n```"
    words = " ".join(["lorem"] * 800)  # one 4799-character line
    chunks = split_for_discord(words)
    assert all(len(c) <= 2000 and not c.startswith(" ") for c in chunks)
    assert "".join(chunks) == words


def test_text_for_persona_drops_our_mention_and_names_the_others() -> None:
    text = text_for_persona(
        f"<@{BOT}> ask <@!{ALICE}> about <@{BOB}> and <@&77>", me=BOT, names={ALICE: "alice"}
    )
    assert text == f"ask @alice about <@{BOB}> and <@&77>"
    assert text_for_persona("hi <@&55> there", me=BOT, my_roles=[55]) == "hi there"


_WORD = st.text(alphabet="abcdefghij xyz`#*_-.,()", min_size=1, max_size=12)
_PROSE_LINE = st.lists(_WORD, max_size=40).map(" ".join)
_LONG_LINE = st.integers(50, 400).map(lambda n: " ".join(["word"] * n))
_FENCE = st.sampled_from(["```", "```python", "```js", "  ```", "```" + "x" * 40])
_LINES = st.lists(st.one_of(_PROSE_LINE, _LONG_LINE, _FENCE, st.just("")), max_size=120)


@settings(max_examples=200, deadline=None)
@given(lines=_LINES, limit=st.integers(100, 2000))
def test_every_chunk_fits_balances_its_fences_and_keeps_the_text(
    lines: list[str], limit: int
) -> None:
    text = "\n".join(lines)
    chunks = split_for_discord(text, limit)
    for chunk in chunks:
        assert len(chunk) <= limit
        assert chunk.strip()
        assert fences_balanced(chunk), chunk
    assert visible_content("\n".join(chunks)) == visible_content(text)
    if len(text) <= limit and fences_balanced(text):
        assert chunks == ([without_blank_edges(text)] if text.strip() else [])


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=3000), limit=st.integers(100, 600))
def test_any_text_fits_and_keeps_its_content(text: str, limit: int) -> None:
    chunks = split_for_discord(text, limit)
    assert all(len(chunk) <= limit for chunk in chunks)
    assert visible_content("\n".join(chunks)) == visible_content(text)


# -------------------------------------------------------------------- through a process


async def test_mention_in_a_server_and_a_dm_are_answered_other_talk_only_recorded(
    fake: FakeDiscord,
    write_config: Callable[..., Path],
    memory: Memory,
    processes: list[MirrorProcess],
) -> None:
    processes.append(await start_discord(discord_config(write_config, fake)))

    chatter = await fake.push_message(CHANNEL, "The heron is back on the pond.", author_id=BOB)
    from_bot = await fake.push_message(
        CHANNEL, "beep", author_id=600, author_bot=True, mentions_bot=True
    )
    asked = await fake.push_message(
        CHANNEL, "hello, who are you?", author_id=ALICE, mentions_bot=True
    )
    [reply] = await fake.wait_for_sent(replying_to(asked), timeout=30)
    assert reply["channel_id"] == CHANNEL and reply["guild_id"] == GUILD
    assert reply["message_reference"]["fail_if_not_exists"] is False
    assert reply["payload"]["allowed_mentions"]["replied_user"] is False
    assert "Wren" in reply["content"]
    assert CHANNEL in fake.typing

    open_talk = await fake.push_message(OPEN_CHANNEL, "anyone here?", author_id=BOB)
    await fake.wait_for_sent(replying_to(open_talk), timeout=30)

    dm = await fake.push_message(ALICE_DM, "what is your name?", author_id=ALICE)
    [answer] = await fake.wait_for_sent(replying_to(dm), timeout=30)
    assert answer["channel_id"] == ALICE_DM and "Wren" in answer["content"]

    # A coordinator command in a server is not run there: items carry private content.
    command = await fake.push_message(CHANNEL, "/pending", author_id=ALICE, mentions_bot=True)
    [notice] = await fake.wait_for_sent(replying_to(command), timeout=30)
    assert notice["content"] == "Only my admins can do that."

    assert len(fake.sent) == 4  # no answer to the chatter, the other bot, or our own echoes
    log = {m.platform_message_id: m for m in await memory.message_log(50) if m.direction == "in"}
    assert log[asked["id"]].text == "hello, who are you?"  # our mention is not in the text
    assert log[asked["id"]].status == "answered"
    assert log[chatter["id"]].status == "observed"  # recorded for the other instances
    assert log[chatter["id"]].conversation_kind == "group"
    assert log[from_bot["id"]].status == "refused"  # the guard: a bot not on the allowlist
    assert log[dm["id"]].conversation_kind == "dm"
    pushed = (chatter, from_bot, asked, open_talk, dm, command)
    assert set(log) == {m["id"] for m in pushed}  # our own echoed replies are not incoming


async def test_a_long_reply_is_split_without_breaking_its_code_block(
    fake: FakeDiscord,
    write_config: Callable[..., Path],
    processes: list[MirrorProcess],
) -> None:
    code = "\n".join(f"    result.append(transform(item_{i}, factor={i}))" for i in range(60))
    text = (
        "Here is the script you asked for.\n\n"
        + ("It reads the input, transforms each item and prints the result. " * 8).strip()
        + "\n\n```python\ndef run(items):\n    result = []\n"
        + code
        + "\n    return result\n```\n\n"
        + ("Run it with your own items; it only needs the standard library. " * 20).strip()
    )
    assert 4000 < len(text) < 5000
    async with FakeOpenAI() as model:
        model.queue_delay(1.0, json.dumps({"reply": text}))
        config = discord_config(
            write_config,
            fake,
            f'[model]\nname = "openai/fake-model"\napi_base = "{model.base_url}"\nretries = 0\n',
        )
        bot = await start_discord(config, OPENAI_API_KEY="sk-test")
        processes.append(bot)
        asked = await fake.push_message(
            CHANNEL, "write me the script", author_id=ALICE, mentions_bot=True
        )
        # Asked to stop mid-turn, the entrance finishes the turn and sends the reply first.
        await model.wait_for_requests(1, timeout=30)
        stopping = asyncio.create_task(bot.stop())
        sent = await fake.wait_for_sent(in_channel(CHANNEL), count=3, timeout=30)
        assert await stopping == 0
    chunks = [s["content"] for s in sent]
    assert all(len(chunk) <= 2000 and fences_balanced(chunk) for chunk in chunks), chunks
    assert [s["id"] for s in sent] == sorted(s["id"] for s in sent)
    assert visible_content("\n".join(chunks)) == visible_content(text)
    assert sent[0]["message_reference"]["message_id"] == int(asked["id"])
    assert [s["message_reference"] for s in sent[1:]] == [None] * (len(sent) - 1)
    # The block is cut once, closed and reopened as Python; prose is cut at paragraphs.
    assert chunks[0].startswith("Here is the script") and chunks[0].endswith("\n```")
    assert chunks[1].startswith("```python\n")
    assert chunks[-1].endswith("standard library.")


async def test_a_coordinator_button_resolves_a_conflict_even_after_a_restart(
    fake: FakeDiscord,
    write_config: Callable[..., Path],
    processes: list[MirrorProcess],
) -> None:
    config = discord_config(
        write_config, fake, f'[coordinator]\naddress = "discord:{COORDINATOR}"\n'
    )
    phone, desk = ChatProcess(config, "phone", "alice"), ChatProcess(config, "desk", "bob")
    processes += [phone, desk]
    bot, *_ = await asyncio.gather(start_discord(config), phone.start(), desk.start())
    processes.append(bot)
    await phone.say("Can you call me on Friday at 3pm?")
    await desk.say("Could you review my draft on Friday at 3pm?")
    report = await run_mirror_async("scheduler", "--once", "--config", str(config))
    assert "surfaced 1" in report.stdout, report.stdout + report.stderr

    [item] = await fake.wait_for_sent(lambda s: bool(s["components"]), timeout=30)
    conflicts = json.loads(
        (await run_mirror_async("conflicts", "--json", "--config", str(config))).stdout
    )
    [conflict] = conflicts
    assert item["channel_id"] == fake.open_dm(COORDINATOR)  # a DM to the coordinator
    assert f"Conflict #{conflict['id']}" in item["content"]
    buttons = {
        button["label"]: button["custom_id"]
        for row in item["components"]
        for button in row["components"]
    }
    assert buttons["Keep A"] == f"mirror:resolve:{conflict['id']}:A"
    assert set(buttons) == {"Keep A", "Keep B", "Both", "Neither"}

    # The buttons need no state in the process: they work after a restart.
    assert await bot.stop() == 0
    processes.append(await start_discord(config))

    async def press(user_id: int, channel_id: int = item["channel_id"]) -> dict[str, Any]:
        message_id = item["id"] if channel_id == item["channel_id"] else None
        payload = await fake.push_interaction(
            channel_id, buttons["Keep A"], user_id=user_id, message_id=message_id
        )
        return await fake.wait_for_interaction_response(
            lambda r: r["interaction_id"] == int(payload["id"]), timeout=15
        )

    # Typed commands in the coordinator's DM take the same path as any message.
    command = await fake.push_message(item["channel_id"], "/pending", author_id=COORDINATOR)
    [pending] = await fake.wait_for_sent(replying_to(command), timeout=15)
    assert f"Conflict #{conflict['id']}" in pending["content"]

    # Someone else, or the coordinator outside their DM: refused, only they see it.
    for refused, why in (
        (await press(BOB), "Only my coordinator can do that."),
        (await press(COORDINATOR, channel_id=CHANNEL), "only in a private chat"),
    ):
        assert why in refused["content"]
        assert refused["data"]["flags"] & 64  # ephemeral
    assert fake.messages[item["id"]]["components"]  # nothing changed
    [still_open] = json.loads(
        (await run_mirror_async("conflicts", "--json", "--config", str(config))).stdout
    )
    assert still_open["status"] == "surfaced"

    accepted = await press(COORDINATOR)
    assert accepted["type"] == 7  # the pressed message is updated in place
    edited = fake.messages[item["id"]]
    assert edited["content"].startswith(
        item["content"] + f"\n\nDecision: Resolved #{conflict['id']}"
    )
    assert edited["components"] == []

    [resolved] = json.loads(
        (await run_mirror_async("conflicts", "--json", "--config", str(config))).stdout
    )
    assert resolved["status"] == "resolved" and resolved["choice"] == "A"
    assert resolved["resolved_by"] == f"discord:{COORDINATOR}"
    assert len([s for s in fake.sent if s["components"]]) == 1  # surfaced once, not again


async def test_rate_limits_are_retried_a_failed_reply_is_queued_and_resume_keeps_answering(
    fake: FakeDiscord,
    write_config: Callable[..., Path],
    processes: list[MirrorProcess],
) -> None:
    processes.append(await start_discord(discord_config(write_config, fake)))
    route = f"POST /api/v10/channels/{CHANNEL}/messages"

    # One 429 (with Via): discord.py waits and retries.
    fake.inject_429(route, retry_after=0.2)
    first = await fake.push_message(CHANNEL, "hello", author_id=ALICE, mentions_bot=True)
    await fake.wait_for_sent(replying_to(first), timeout=30)
    statuses = [r["status"] for r in fake.requests if f"{r['method']} {r['path']}" == route]
    assert statuses == [429, 200]

    # discord.py gives up after five: the reply goes to the outbox and the courier sends it.
    fake.inject_429(route, retry_after=0.05, times=5)
    second = await fake.push_message(CHANNEL, "still there?", author_id=ALICE, mentions_bot=True)
    [late] = await fake.wait_for_sent(replying_to(second), timeout=30)
    statuses = [r["status"] for r in fake.requests if f"{r['method']} {r['path']}" == route]
    assert statuses[2:] == [429] * 5 + [200]
    assert late["payload"]["nonce"].startswith("outbox-")

    # The gateway drops the connection: discord.py resumes the session and answers on.
    assert await fake.close_gateway(4000) == 1
    await fake.wait_until(
        lambda: fake.resume_count == 1 and fake.connected, timeout=15, what="resumed"
    )
    third = await fake.push_message(CHANNEL, "and now?", author_id=ALICE, mentions_bot=True)
    await fake.wait_for_sent(replying_to(third), timeout=30)
    assert fake.identify_count == 1


async def test_an_outbox_row_is_delivered_exactly_once_across_a_restart(
    fake: FakeDiscord,
    write_config: Callable[..., Path],
    memory: Memory,
    processes: list[MirrorProcess],
) -> None:
    # The killed process's entrance lease runs out after 2 s; the restart waits for it.
    config = discord_config(write_config, fake, "[persona]\ninstance_dead_after_s = 2\n")
    first = await start_discord(config)
    processes.append(first)
    one = await memory.enqueue(
        entrance="discord", target=str(CHANNEL), text="first note", dedupe_key="note:1"
    )
    await fake.wait_for_sent(lambda s: s["content"] == "first note", timeout=30)
    assert one is not None

    async def first_marked_sent() -> bool:
        return {item.id: item.status for item in await memory.outbox()}[one] == "sent"

    await wait_until(first_marked_sent, 15.0, "the first note marked sent")
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL

    # Written while no Discord process runs: the next one delivers it.
    await memory.enqueue(
        entrance="discord", target=str(CHANNEL), text="second note", dedupe_key="note:2"
    )
    processes.append(await start_discord(config, "--standby"))
    [second] = await fake.wait_for_sent(lambda s: s["content"] == "second note", timeout=30)
    assert second["payload"]["enforce_nonce"] is True
    await memory.enqueue(
        entrance="discord", target=str(CHANNEL), text="third note", dedupe_key="note:3"
    )
    await fake.wait_for_sent(lambda s: s["content"] == "third note", timeout=30)

    async def all_marked_sent() -> bool:
        return {item.status for item in await memory.outbox()} == {"sent"}

    await wait_until(all_marked_sent, 15.0, "every note marked sent")
    assert [s["content"] for s in fake.sent] == ["first note", "second note", "third note"]


async def test_messages_posted_while_the_entrance_was_down_are_answered_once_on_restart(
    fake: FakeDiscord,
    write_config: Callable[..., Path],
    memory: Memory,
    processes: list[MirrorProcess],
) -> None:
    # The killed process's entrance lease runs out after 2 s; the restart waits for it.
    config = discord_config(write_config, fake, "[persona]\ninstance_dead_after_s = 2\n")
    first = await start_discord(config)
    processes.append(first)
    chatter = await fake.push_message(CHANNEL, "The heron is back on the pond.", author_id=BOB)
    answered = await fake.push_message(ALICE_DM, "what is your name?", author_id=ALICE)
    await fake.wait_for_sent(replying_to(answered), timeout=30)

    async def chatter_recorded() -> bool:
        return any(m.platform_message_id == chatter["id"] for m in await memory.message_log(10))

    await wait_until(chatter_recorded, 15.0, "the chatter recorded")

    async def reply_marked_sent() -> bool:  # kill -9 after the mark, not in its window
        return all(row.status == "sent" for row in await memory.outbox())

    await wait_until(reply_marked_sent, 15.0, "the reply's outbox row marked sent")
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL

    # Posted while no Discord process runs: Discord will not send these on the next IDENTIFY.
    dm = fake.store_message(ALICE_DM, "are you there?", author_id=ALICE)
    talk = fake.store_message(CHANNEL, "Anyone seen the heron today?", author_id=BOB)
    asked = fake.store_message(CHANNEL, "did you miss us?", author_id=ALICE, mentions_bot=True)
    second = await start_discord(config, "--standby")
    processes.append(second)
    await second.wait_for_line(
        lambda line: "caught up on 3 message(s)" in line and "in 2 channel(s)" in line,
        stream="stderr",
        timeout=30,
    )

    # Catching up ran each message through on_message to the end: every reply is out.
    replies = {m["id"]: [s for s in fake.sent if replying_to(m)(s)] for m in (answered, dm, asked)}
    assert {key: len(sent) for key, sent in replies.items()} == {
        answered["id"]: 1,  # answered before the kill, not again
        dm["id"]: 1,
        asked["id"]: 1,
    }
    assert replies[dm["id"]][0]["channel_id"] == ALICE_DM
    assert replies[asked["id"]][0]["channel_id"] == CHANNEL
    assert len(fake.sent) == 3  # nothing for the talk that did not mention the persona
    log = {m.platform_message_id: m for m in await memory.message_log(50) if m.direction == "in"}
    assert log[dm["id"]].status == "answered" and log[dm["id"]].conversation_kind == "dm"
    assert log[asked["id"]].status == "answered" and log[asked["id"]].text == "did you miss us?"
    assert log[talk["id"]].status == "observed"  # recorded for the other instances


async def test_the_fake_keeps_channel_history_and_pages_it_like_discord(
    fake: FakeDiscord,
) -> None:
    with pytest.raises(RuntimeError):  # with no bot connected, nothing can be pushed
        await fake.push_message(CHANNEL, "lost", author_id=ALICE)
    stored = [fake.store_message(CHANNEL, f"m{n}", author_id=ALICE) for n in range(5)]
    ids = [int(m["id"]) for m in stored]
    fake.store_message(OPEN_CHANNEL, "elsewhere", author_id=BOB)
    headers = {"Authorization": f"Bot {TOKEN}"}
    url = f"{fake.api_base}/channels/{CHANNEL}/messages"

    async def page(**query: int) -> list[int]:
        async with http.get(url, params=query, headers=headers) as response:
            assert response.status == 200, await response.text()
            return [int(m["id"]) for m in await response.json()]

    async with aiohttp.ClientSession() as http:
        assert await page() == ids[::-1]  # newest first
        assert await page(limit=2) == [ids[4], ids[3]]
        assert await page(after=ids[1], limit=2) == [ids[3], ids[2]]  # the oldest after it
        assert await page(before=ids[3]) == [ids[2], ids[1], ids[0]]
        assert await page(around=ids[2], limit=3) == [ids[3], ids[2], ids[1]]
        async with http.post(url, json={"content": "from the bot"}, headers=headers) as response:
            sent = int((await response.json())["id"])
        assert await page(after=ids[4]) == [sent]
        async with http.get(url, params={"limit": 0}, headers=headers) as response:
            assert response.status == 400
    assert [m["content"] for m in fake.history(CHANNEL)] == [
        *(f"m{n}" for n in range(5)),
        "from the bot",
    ]
    assert fake.sent[0]["content"] == "from the bot"


async def test_a_refused_token_exits_2_with_one_line(
    fake: FakeDiscord, write_config: Callable[..., Path]
) -> None:
    result = await run_mirror_async(
        "run",
        "discord",
        "--config",
        str(discord_config(write_config, fake)),
        token="WRONG.TOKEN",
    )
    assert result.returncode == 2
    assert failure_lines(result.stderr) == [
        "mirror: discord: the Discord token was refused: check MIRROR_DISCORD_TOKEN"
    ]
    assert fake.identify_count == 0


async def test_a_refused_message_content_intent_exits_2_naming_the_developer_portal(
    write_config: Callable[..., Path],
) -> None:
    async with FakeDiscord(refuse_privileged=True) as fake:
        result = await run_mirror_async(
            "run",
            "discord",
            "--config",
            str(discord_config(write_config, fake)),
            token=fake.token,
        )
        assert fake.identify_count == 1
    assert result.returncode == 2
    [line] = failure_lines(result.stderr)
    assert line.startswith("mirror: discord: Discord refused the message_content intent")
    assert "Developer Portal" in line and "Message Content Intent" in line


_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ")


def failure_lines(stderr: str) -> list[str]:
    """stderr without INFO log records: what the admin is told (no traceback, no warning)."""
    return [line for line in stderr.splitlines() if not _LOG_RECORD.match(line)]


async def test_no_route_to_discord_is_retried_with_one_line_each_and_no_traceback(
    write_config: Callable[..., Path], processes: list[MirrorProcess]
) -> None:
    """It once printed a raw aiohttp traceback and exited 1 (Telegram retried)."""
    port = free_port()
    closed = FakeDiscord(port=port)  # not started yet: nothing listens on the port
    config = write_config(
        "[entrances.discord]\nenabled = true\n"
        f'api_base = "{closed.api_base}"\ngateway_url = "{closed.gateway_url}"\n'
    )
    process = MirrorProcess(
        "run", "discord", "--config", str(config), env={"MIRROR_DISCORD_TOKEN": TOKEN}
    )
    processes.append(await process.start())
    for _ in range(2):
        await process.wait_for_line(
            lambda line: "discord: cannot reach the API" in line and "retrying in" in line,
            stream="stderr",
            timeout=30,
        )
    async with closed as fake:  # the network comes back: the same process connects
        fake.add_guild(GUILD, "Heron Club", channels=[(CHANNEL, "general")])
        await process.wait_for_line(lambda line: CONNECTED in line, stream="stderr", timeout=60)
        assert await process.stop(signal.SIGTERM) == 0
    assert "Traceback" not in process.tail()
