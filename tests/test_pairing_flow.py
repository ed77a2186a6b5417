"""Pairing end to end: a stranger asking to be let in is announced at once to the
coordinator's private chat with Approve / Deny buttons; pressing one (or `/deny-pair`,
`mirror pair deny`) decides and the requester is told; a pending person is reminded once,
then silence; `mirror people revoke` takes access back (told once, then silence) until
`mirror people allow`.

The process tests run a real `mirror run telegram` against the fake Bot API, with the CLI as
separate `mirror` processes on the same memory.db; the rules of the door are checked on
memory directly as well.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.commands import ONLY_ADMINS, Commands, parse_button
from bot.config import load_config
from bot.gate import Gatekeeper
from bot.memory import Memory
from bot.models import Author, Incoming
from bot.people import (
    PAIR_DENIED,
    PAIRED_WELCOME,
    REVOKED_NOTICE,
    approve_pairing,
    link_accounts,
    revoke_access,
)
from bot.speaker import Roster
from tests.conftest import run_mirror
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram
from tests.processes import MirrorProcess

COORDINATOR = 4242
ADMIN = 5151
ZOE = 7001
YAN = 7002
XIA = 7003
WES = 7004
FIRST_REPLY_S = 30.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def pairing_config(write_config: Callable[..., Path], fake: FakeTelegram) -> Path:
    return write_config(
        f'[coordinator]\naddress = "telegram:{COORDINATOR}"\n\n'
        f'[access]\nadmins = ["telegram:{ADMIN}"]\n\n'
        '[access.telegram]\npolicy = "pairing"\n\n'
        "[entrances.telegram]\nenabled = true\n"
        f'base_url = "{fake.base_url}"\nbase_file_url = "{fake.base_file_url}"\n'
    )


@contextlib.asynccontextmanager
async def telegram_entrance(config: Path) -> AsyncIterator[MirrorProcess]:
    process = MirrorProcess(
        "run", "telegram", "--config", str(config), env={"MIRROR_TELEGRAM_TOKEN": DEFAULT_TOKEN}
    )
    await process.start()
    try:
        await process.wait_for_line(lambda line: "polling as @" in line, stream="stderr")
        yield process
    finally:
        assert await process.stop() == 0, process.tail()


async def mirror(*args: str) -> str:
    """A `mirror` CLI command in its own process (off the loop serving the fake)."""
    result = await asyncio.to_thread(run_mirror, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def to(chat: int) -> Callable[[dict[str, Any]], bool]:
    return lambda sent: sent["chat_id"] == chat


async def say(fake: FakeTelegram, user: int, text: str, name: str) -> dict[str, Any]:
    """`user` writes in their private chat; returns the Update's message."""
    return fake.push_message(user, text, user_id=user, first_name=name)["message"]


async def answer_to(fake: FakeTelegram, message: dict[str, Any]) -> dict[str, Any]:
    [sent] = await fake.wait_for_sent(
        lambda s: s["reply_to_message_id"] == message["message_id"], timeout=FIRST_REPLY_S
    )
    return sent


async def silence_then_help(fake: FakeTelegram, user: int, name: str, text: str) -> None:
    """`user` writes `text` and gets no answer. Proved with a barrier: the entrance handles
    one chat's messages in order, so when their /help right after is answered, `text` was
    handled (and answered, had there been an answer) before."""
    since = len(fake.sent)
    await say(fake, user, text, name)
    asked = await say(fake, user, "/help", name)
    await answer_to(fake, asked)
    assert [s["reply_to_message_id"] for s in fake.sent[since:] if s["chat_id"] == user] == [
        asked["message_id"]
    ]


async def ask_to_pair(
    fake: FakeTelegram, memory: Memory, user: int, name: str, text: str
) -> tuple[str, dict[str, Any]]:
    """A stranger writes; returns their code and the announcement the coordinator got."""
    asked = await say(fake, user, text, name)
    code_reply = await answer_to(fake, asked)
    [code] = [p.code for p in await memory.pending_pairings() if p.account == f"telegram:{user}"]
    assert code in code_reply["text"] and "ask my coordinator to approve" in code_reply["text"]
    [announcement] = await fake.wait_for_sent(
        lambda s: s["chat_id"] == COORDINATOR and code in s["text"]
    )
    return code, announcement


def buttons_of(sent: dict[str, Any]) -> dict[str, str]:
    keyboard = sent["reply_markup"]["inline_keyboard"]
    return {button["text"]: button["callback_data"] for row in keyboard for button in row}


async def press(fake: FakeTelegram, user: int, sent: dict[str, Any], data: str) -> dict[str, Any]:
    update = fake.push_callback_query(sent["chat_id"], user, sent["message_id"], data)
    query_id = update["callback_query"]["id"]
    await fake.wait_for_request("answerCallbackQuery", lambda p: p["callback_query_id"] == query_id)
    [answer] = [a for a in fake.callback_answers if a["callback_query_id"] == query_id]
    return answer


# end to end: one `mirror run telegram` ------------------------------------------------------


async def test_announced_request_approved_with_a_button_after_one_reminder(
    fake: FakeTelegram, write_config: Callable[..., Path], memory: Memory
) -> None:
    config = pairing_config(write_config, fake)
    async with telegram_entrance(config):
        code, announcement = await ask_to_pair(
            fake, memory, ZOE, "Zoe", "Hi! Ana said you'd help me plan the trip."
        )
        assert announcement["text"].startswith(f"Zoe (telegram:{ZOE}) asks to talk with me")
        assert "Ana said you'd help me plan the trip." in announcement["text"]
        assert f"/deny-pair {code}" in announcement["text"]
        buttons = buttons_of(announcement)
        assert buttons == {
            "Approve": f"mirror:approve-pair:{code}",
            "Deny": f"mirror:deny-pair:{code}",
        }

        # Writing again: reminded once that the code waits; the third time, silence. The
        # coordinator is asked once.
        again = await say(fake, ZOE, "hello?", "Zoe")
        reminder = await answer_to(fake, again)
        assert code in reminder["text"] and "still waiting" in reminder["text"]
        await silence_then_help(fake, ZOE, "Zoe", "anyone there?")
        assert len([s for s in fake.sent if s["chat_id"] == COORDINATOR]) == 1
        assert len(await memory.pending_pairings()) == 1

        # A button is the command: someone else's press is refused and changes nothing.
        refused = await press(fake, ZOE, announcement, buttons["Approve"])
        assert refused["text"] == ONLY_ADMINS and refused["show_alert"]
        approved = await press(fake, COORDINATOR, announcement, buttons["Approve"])
        assert approved["text"] == f"Approved: Zoe (telegram:{ZOE}) can talk to me now."
        [edit] = await fake.wait_for_edits()
        assert edit["text"].endswith("Decision: " + approved["text"])
        assert edit["reply_markup"] is None
        await fake.wait_for_sent(lambda s: s["chat_id"] == ZOE and s["text"] == PAIRED_WELCOME)

        talk = await say(fake, ZOE, "what is your name?", "Zoe")
        assert "Wren" in (await answer_to(fake, talk))["text"]
    [paired] = await memory.audit_log("access.paired")
    assert paired.actor == f"telegram:{COORDINATOR}"


async def test_deny_by_button_chat_and_cli_then_revoke_and_silence(
    fake: FakeTelegram, write_config: Callable[..., Path], memory: Memory
) -> None:
    config = pairing_config(write_config, fake)
    async with telegram_entrance(config):
        # Deny pressed: Yan is told, then hears nothing, and is asked about no more.
        code, announcement = await ask_to_pair(fake, memory, YAN, "Yan", "let me in")
        denied = await press(fake, COORDINATOR, announcement, buttons_of(announcement)["Deny"])
        assert denied["text"].startswith(f"Denied: Yan (telegram:{YAN}) is not let in")
        await fake.wait_for_sent(lambda s: s["chat_id"] == YAN and s["text"] == PAIR_DENIED)
        asked_before = len([s for s in fake.sent if s["chat_id"] == COORDINATOR])
        await silence_then_help(fake, YAN, "Yan", "please?")
        await silence_then_help(fake, YAN, "Yan", "please!!")
        assert len([s for s in fake.sent if s["chat_id"] == COORDINATOR]) == asked_before
        assert await memory.pending_pairings() == []

        # /deny-pair typed by an admin in their private chat.
        code, _ = await ask_to_pair(fake, memory, XIA, "Xia", "hi there")
        typed = await say(fake, ADMIN, f"/deny-pair {code}", "Ada")
        assert (await answer_to(fake, typed))["text"].startswith(f"Denied: Xia (telegram:{XIA})")
        await fake.wait_for_sent(lambda s: s["chat_id"] == XIA and s["text"] == PAIR_DENIED)

        # `mirror pair deny` at the machine; the running entrance delivers the outcome.
        code, _ = await ask_to_pair(fake, memory, WES, "Wes", "good evening")
        out = await mirror("pair", "deny", code.lower(), "--config", str(config))
        assert out.startswith(f"Denied: Wes (telegram:{WES})")
        await fake.wait_for_sent(lambda s: s["chat_id"] == WES and s["text"] == PAIR_DENIED)
        denials = await memory.audit_log("access.pair_denied")
        assert sorted(entry.actor for entry in denials) == sorted(
            [f"telegram:{COORDINATOR}", f"telegram:{ADMIN}", "cli"]
        )

        # Zoe was let in; `mirror people revoke` takes it back: told once, then silence.
        code, _ = await ask_to_pair(fake, memory, ZOE, "Zoe", "hello")
        await mirror("pair", "approve", code, "--config", str(config))
        await fake.wait_for_sent(lambda s: s["chat_id"] == ZOE and s["text"] == PAIRED_WELCOME)
        talk = await say(fake, ZOE, "what is your name?", "Zoe")
        assert "Wren" in (await answer_to(fake, talk))["text"]
        out = await mirror("people", "revoke", f"telegram:{ZOE}", "--config", str(config))
        assert out.strip() == f"Revoked: telegram:{ZOE} can no longer talk to me."
        after = await say(fake, ZOE, "what is your name?", "Zoe")
        assert (await answer_to(fake, after))["text"] == REVOKED_NOTICE
        await silence_then_help(fake, ZOE, "Zoe", "hello??")
        # Letting her in again is an explicit decision.
        out = await mirror("people", "allow", f"telegram:{ZOE}", "--config", str(config))
        assert out.strip() == f"Allowed: telegram:{ZOE} can talk to me now."
        back = await say(fake, ZOE, "who are you?", "Zoe")
        assert "Wren" in (await answer_to(fake, back))["text"]
    [revoked] = await memory.audit_log("access.revoked")
    assert revoked.actor == "cli"


# the rules of the door, on memory -----------------------------------------------------------


def incoming(person: str, text: str, entrance: str = "telegram") -> Incoming:
    return Incoming(
        entrance=entrance,
        conversation_id=f"dm-{person}",
        conversation_kind="dm",
        author=Author(external_id=person, display_name=person.capitalize()),
        text=text,
    )


class Door:
    """One entrance's guard and router, wired as `Instance` wires them."""

    def __init__(self, memory: Memory, config_path: Path, entrance: str = "telegram") -> None:
        self.memory = memory
        self.config = load_config(config_path)
        self.roster = Roster(self.config)
        self.gate = Gatekeeper(
            memory, self.config, self.roster, instance_id=entrance, entrance=entrance
        )
        self.commands = Commands(memory, self.config)

    async def write(self, message: Incoming) -> tuple[bool, str | None]:
        recorded = await self.memory.record_incoming(message, "test")
        verdict = await self.gate.check(message, self.roster.speaker(message), recorded)
        return verdict.allow, verdict.reply

    async def command(self, message: Incoming) -> str:
        outcome = await self.commands.run_text(self.roster.speaker(message), message.text)
        assert outcome is not None
        return outcome.text


def door_config(write_config: Callable[..., Path]) -> Path:
    return write_config(
        f'[coordinator]\naddress = "telegram:{COORDINATOR}"\n\n'
        '[access]\nadmins = ["telegram:boss"]\n\n'
        '[access.telegram]\npolicy = "pairing"\nallow = ["friend"]\n\n'
        '[access.discord]\npolicy = "pairing"\n'
    )


@pytest.mark.both_engines  # the door's SQL, on SQLite and PostgreSQL
async def test_revoking_one_account_closes_the_door_on_the_linked_ones(
    memory: Memory, write_config: Callable[..., Path]
) -> None:
    door = Door(memory, door_config(write_config))
    discord = Door(memory, door_config(write_config), "discord")
    await door.write(incoming("vic", "hi"))
    [pending] = await memory.pending_pairings()
    await approve_pairing(memory, pending.code, "cli")
    await link_accounts(memory, "telegram:vic", "discord:vic", "cli")
    assert (await discord.write(incoming("vic", "hey", "discord")))[0]  # access follows links

    outcome = await door.command(incoming("boss", "/revoke discord:vic"))
    assert outcome == "Revoked: telegram:vic, discord:vic can no longer talk to me."
    assert await discord.write(incoming("vic", "hey?", "discord")) == (False, REVOKED_NOTICE)
    assert await discord.write(incoming("vic", "hey??", "discord")) == (False, None)
    assert await door.write(incoming("vic", "hello")) == (False, REVOKED_NOTICE)
    assert await door.write(incoming("vic", "hello?")) == (False, None)
    assert await memory.pending_pairings() == []  # no new code, no new announcement

    # Not an admin: refused and audited, nothing changes.
    assert await door.command(incoming("mallory", "/revoke telegram:friend")) == ONLY_ADMINS
    assert (await memory.audit_log("admin.refused"))[0].actor == "telegram:mallory"


@pytest.mark.both_engines  # the door's SQL, on SQLite and PostgreSQL
async def test_revoke_says_when_config_or_policy_still_lets_the_account_in(
    memory: Memory, write_config: Callable[..., Path]
) -> None:
    config = load_config(door_config(write_config))
    await memory.account("telegram", "friend")
    await memory.account("local", "pat")
    friend = await revoke_access(memory, config, "telegram:friend", "cli")
    assert "had not been let in" in friend.text
    assert "config lets telegram:friend in" in friend.text
    local = await revoke_access(memory, config, "local:pat", "cli")
    assert "local's access policy is 'open', not 'pairing'" in local.text
    unknown = await revoke_access(memory, config, "telegram:nobody", "cli")
    assert not unknown.ok and "I know no account telegram:nobody" in unknown.text
    with pytest.raises(ValueError):
        await revoke_access(memory, config, "nobody", "cli")


@pytest.mark.both_engines  # the door's SQL, on SQLite and PostgreSQL
async def test_an_expired_code_is_asked_about_again_but_a_denied_account_never(
    memory: Memory, write_config: Callable[..., Path]
) -> None:
    now = [1_800_000_000.0]
    memory.clock = lambda: now[0]
    door = Door(memory, door_config(write_config))
    await door.write(incoming("una", "hi"))
    await door.write(incoming("una", "hi?"))
    now[0] += 3601  # the code expired: the next message gets a new one, announced again
    allowed, reply = await door.write(incoming("una", "still there?"))
    assert not allowed and reply is not None and "ask my coordinator to approve" in reply
    announced = sorted(
        (item for item in await memory.outbox() if item.payload.get("kind") == "pairing"),
        key=lambda item: item.id,
    )
    assert [item.target for item in announced] == [str(COORDINATOR)] * 2
    [pending] = await memory.pending_pairings()
    assert pending.code in announced[1].text and pending.code not in announced[0].text

    assert (await door.command(incoming("boss", f"/deny-pair {pending.code}"))).startswith(
        "Denied: Una (telegram:una)"
    )
    again = await door.command(incoming("boss", f"/deny-pair {pending.code}"))
    assert again == f"I can't deny {pending.code}: that code was already used."
    now[0] += 86400 * 30  # a denial stands (pruning keeps it)
    await memory.prune_guard()
    assert await door.write(incoming("una", "hello again")) == (False, None)
    assert len([i for i in await memory.outbox() if i.payload.get("kind") == "pairing"]) == 2


def test_pairing_buttons_read_back_as_the_commands_they_stand_for() -> None:
    approve = parse_button("mirror:approve-pair:K7QM-3XWD")
    assert approve is not None and (approve.name, approve.args) == ("approve-pair", ["K7QM-3XWD"])
    deny = parse_button("mirror:deny-pair:K7QM-3XWD")
    assert deny is not None and (deny.name, deny.args) == ("deny-pair", ["K7QM-3XWD"])
    assert parse_button("mirror:revoke-pair:K7QM-3XWD") is None
    assert parse_button("mirror:deny-pair:k7qm 3xwd") is None
