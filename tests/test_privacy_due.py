"""Privacy when promises fall due: follow-ups, reminders, /reminders and the scheduler's
notices are outputs too, computed for their audience (DESIGN.md, the privacy rule).

The worlds here run the instances' couriers against recording platforms
(`PrivacyWorld(deliver=True)`), move the clock past the promises, run one scheduler tick
and let every courier deliver: every text handed to a platform is checked against the
audience of the conversation it goes to, as prompts, answers and outbox rows are.
"""

from __future__ import annotations

from pathlib import Path

from tests.privacy_world import COORDINATOR, Account, PrivacyWorld, group_chat, private_chat

DAY = 86_400.0

ALICE = Account("telegram", "alice", "Alice")
BOB = Account("discord", "bob", "Bob")
CLEO = Account("telegram", "cleo", "Cleo")


def leaks(world: PrivacyWorld) -> str:
    return "\n".join(str(leak) for leak in world.leaks) + "\n" + world.report()


def sent_to(world: PrivacyWorld, account: Account) -> str:
    return " ".join(
        text
        for entrance, target, text in world.sent
        if (entrance, target) == (account.entrance, account.external_id)
    )


async def test_a_private_reminder_falls_due_in_its_own_chat_only(tmp_path: Path) -> None:
    async with PrivacyWorld(tmp_path, deliver=True, recall=False) as world:
        secret, _ = await world.tell(
            ALICE, "remind me to call my divorce lawyer {token} tomorrow at 9am"
        )
        other, _ = await world.tell(BOB, "remind me to water the {token} plants tomorrow at 9am")
        await world.time_passes(2 * DAY)
        to_alice, to_bob = sent_to(world, ALICE), sent_to(world, BOB)

    assert not world.leaks, leaks(world)
    # The check saw real follow-ups (else it tested nothing): each in its own chat.
    assert secret in to_alice and other not in to_alice, to_alice
    assert other in to_bob and secret not in to_bob, to_bob


async def test_double_booked_promises_reach_the_coordinator_and_nobody_else(
    tmp_path: Path,
) -> None:
    async with PrivacyWorld(tmp_path, deliver=True, recall=False) as world:
        secret, _ = await world.tell(ALICE, "can you call my landlord {token} on Friday at 3pm?")
        other, _ = await world.tell(BOB, "can you call my dentist {token} on Friday at 3pm?")
        # Surfaced to the coordinator, reminded, then escalated and followed up when due.
        for _ in range(8):
            await world.time_passes(DAY)
        to_coordinator = sent_to(world, COORDINATOR)

    assert not world.leaks, leaks(world)
    assert secret in to_coordinator and other in to_coordinator, to_coordinator


async def test_reminders_listed_in_a_group_or_to_another_person_hold_nobody_elses(
    tmp_path: Path,
) -> None:
    book_club = group_chat("telegram", "book-club")
    async with PrivacyWorld(tmp_path, deliver=True, recall=False) as world:
        secret, _ = await world.tell(ALICE, "remind me to pick up the {token} results on Monday")
        await world.say(ALICE, book_club, "hello all, Alice here")
        in_group = await world.say(ALICE, book_club, "/reminders")
        told_cleo = await world.say(CLEO, private_chat(CLEO), "/reminders")
        told_cleo_in_words = await world.say(CLEO, private_chat(CLEO), "what are my reminders?")
        own = await world.say(ALICE, private_chat(ALICE), "/reminders")
        own_in_words = await world.say(ALICE, private_chat(ALICE), "what are my reminders?")

    assert not world.leaks, leaks(world)
    assert secret not in in_group.text + told_cleo.text + told_cleo_in_words.text
    # The listings work where they may: as a command and in words.
    assert secret in own.text, own.text
    assert secret in own_in_words.text and "Mon" in own_in_words.text, own_in_words.text
    # Cleo has none; and her question is not answered with someone's command.
    assert "no reminders" in told_cleo_in_words.text, told_cleo_in_words.text
    assert "/reminders”" not in told_cleo_in_words.text, told_cleo_in_words.text


async def test_a_group_request_falls_due_in_the_group_not_in_another(tmp_path: Path) -> None:
    book_club = group_chat("telegram", "book-club")
    book_club_key = (book_club.entrance, book_club.external_id)
    chess = group_chat("telegram", "chess")
    async with PrivacyWorld(tmp_path, deliver=True, recall=False) as world:
        token = world.token()
        await world.say(ALICE, book_club, f"can you book the hall {token} for us tomorrow at 6pm?")
        await world.say(CLEO, chess, "can you book the board room for us tomorrow at 6pm?")
        await world.time_passes(2 * DAY)

    assert not world.leaks, leaks(world)
    to_group = [text for where, target, text in world.sent if (where, target) == book_club_key]
    assert token in " ".join(to_group), world.report()
