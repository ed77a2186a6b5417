"""Intentions recalled by meaning (issue 21): a promise made on one entrance comes back on
another to a question about it, in the prompt's "Recalled from memory" and in the offline
brain's answer, only for an audience that may see the conversation it was made in, and
only while it is open.

Every test here needs the `recall` extra (in the dev extra, so CI runs them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.privacy_world import (
    SAM,
    SAM_ON_DISCORD,
    Account,
    PrivacyWorld,
    group_chat,
    needs_recall,
    private_chat,
    recalled_section,
)

pytestmark = needs_recall

ROBIN = Account("discord", "robin", "Robin")
REQUEST = "can you call the dentist on Friday at 3pm?"
QUESTION = "did you promise anything about the dentist?"
# Not one word in common with the promise: found by meaning or not at all.
BY_MEANING = "is anything planned for my teeth?"


async def test_promise_made_on_telegram_is_recalled_on_discord(tmp_path: Path) -> None:
    async with PrivacyWorld(tmp_path, entrances=("telegram", "discord")) as world:
        await world.link(SAM, SAM_ON_DISCORD)
        promised = await world.say(SAM, private_chat(SAM), REQUEST)
        assert "I'll call" in promised.text  # the offline brain wrote an intention
        await world.settle_embedders()
        asked = await world.say(SAM_ON_DISCORD, private_chat(SAM_ON_DISCORD), QUESTION)
        by_meaning = await world.say(SAM_ON_DISCORD, private_chat(SAM_ON_DISCORD), BY_MEANING)
        await world.settle_embedders()
        assert world.memory is not None and asked.reply is not None
        scores = await world.memory.recall_scores(asked.reply.message_id or 0)

    for turn in (asked, by_meaning):
        recalled = recalled_section(turn.prompt)
        assert "[intention]" in recalled and "dentist" in recalled, recalled
    # The offline brain answers a question about promises with the one it recalled.
    for turn in (asked, by_meaning):
        assert "open promise" in turn.text and "dentist" in turn.text, turn.text
    # The provenance (`mirror memory why`) keeps the intention's scores.
    [found] = [s for s in scores if s["kind"] == "intention"]
    assert found["vector_rank"] == 1 and found["similarity"] > 0.2


async def test_a_private_promise_is_not_recalled_for_other_audiences(tmp_path: Path) -> None:
    lunch = group_chat("discord", "lunch")
    async with PrivacyWorld(tmp_path, entrances=("telegram", "discord")) as world:
        await world.link(SAM, SAM_ON_DISCORD)
        await world.say(SAM, private_chat(SAM), REQUEST)
        await world.settle_embedders()
        someone_else = await world.say(ROBIN, private_chat(ROBIN), QUESTION)
        in_a_group = await world.say(SAM_ON_DISCORD, lunch, QUESTION)
        at_home = await world.say(SAM_ON_DISCORD, private_chat(SAM_ON_DISCORD), QUESTION)

    assert "dentist" in recalled_section(at_home.prompt)  # the same question finds it where it may
    for turn in (someone_else, in_a_group):
        # Not even the context data the offline brain reads holds it (the open list shows
        # a redacted line for it, without its text).
        assert "dentist" not in turn.prompt.replace(QUESTION, "")
        assert "dentist" not in turn.text.replace(QUESTION, "")


async def test_a_promise_kept_is_no_longerrecalled_section(tmp_path: Path) -> None:
    async with PrivacyWorld(tmp_path, entrances=("telegram",)) as world:
        await world.say(SAM, private_chat(SAM), REQUEST)
        await world.settle_embedders()
        before = await world.say(SAM, private_chat(SAM), BY_MEANING)
        done = await world.say(SAM, private_chat(SAM), "that's done")
        assert "marked it done" in done.text
        after = await world.say(SAM, private_chat(SAM), BY_MEANING + " (asking again)")

    assert "[intention]" in recalled_section(before.prompt)
    assert "[intention]" not in recalled_section(after.prompt)


async def test_a_promise_is_recalled_on_postgresql_too(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same story on PostgreSQL (the intentions' index rows and their read-back
    through the privacy rule, as translated)."""
    monkeypatch.setenv("MIRROR_DB", pg_url)  # the world's config names a file; this wins
    await test_promise_made_on_telegram_is_recalled_on_discord(tmp_path)
    (tmp_path / "again").mkdir()  # the same database, a second story: the rule still holds
    await test_a_private_promise_is_not_recalled_for_other_audiences(tmp_path / "again")
