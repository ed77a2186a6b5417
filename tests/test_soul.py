"""SOUL.md: parsing, validation, versions, and the live watcher."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.memory import Memory
from bot.soul import SoulError, SoulWatcher, parse_soul, sync_soul_file
from tests.conftest import SOUL_EXAMPLE
from tests.waiting import wait_until

# Store contract: each test using `memory` runs on SQLite and on PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.both_engines

VALID = """# Name
Ada

## Voice
Dry.

## Values
Truth.

## Boundaries
None worth naming.

## Hobbies
Knitting.
"""


def test_the_shipped_soul_is_valid() -> None:
    soul = parse_soul(SOUL_EXAMPLE.read_bytes())
    assert soul.name == "Wren"
    assert soul.voice and soul.values and soul.boundaries


def test_free_sections_are_kept_in_order() -> None:
    soul = parse_soul(VALID)
    assert soul.name == "Ada"
    assert list(soul.sections) == ["name", "voice", "values", "boundaries", "hobbies"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (VALID.replace("# Name\nAda\n", ""), "missing section '# Name'"),
        (VALID.replace("Ada", "   "), "the name is empty"),
        (VALID.replace("## Voice\nDry.\n", ""), "missing section '## Voice'"),
        (VALID.replace("## Values\nTruth.\n", ""), "missing section '## Values'"),
        (
            VALID.replace("## Boundaries\nNone worth naming.\n", ""),
            "missing section '## Boundaries'",
        ),
        (VALID.replace("Dry.", ""), "section '## Voice' is empty"),
        (VALID + "\n## Voice\nagain\n", "appears twice"),
        ("   \n", "empty"),
    ],
)
def test_invalid_souls_say_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(SoulError, match=reason):
        parse_soul(text)


def test_oversize_and_non_utf8_are_rejected() -> None:
    with pytest.raises(SoulError, match="limit"):
        parse_soul(VALID + "x" * 40_000)
    with pytest.raises(SoulError, match="not UTF-8"):
        parse_soul(VALID.encode() + b"\xff\xfe")


def test_headings_inside_code_fences_are_text() -> None:
    soul = parse_soul(VALID + "```\n## Voice\n```\n")
    assert "## Voice" in soul.sections["hobbies"]


@given(st.text(max_size=400))
def test_parser_never_crashes_on_arbitrary_text(text: str) -> None:
    try:
        parse_soul(text)
    except SoulError:
        pass


async def test_same_content_is_one_version(memory: Memory, soul_file: Path) -> None:
    first = await sync_soul_file(memory, soul_file)
    second = await sync_soul_file(memory, soul_file)
    assert first is not None and second is not None and first.id == second.id
    assert len(await memory.soul_history()) == 1


async def test_invalid_file_keeps_last_good_version_and_is_audited(
    memory: Memory, soul_file: Path
) -> None:
    good = await sync_soul_file(memory, soul_file)
    soul_file.write_text("# Name\n\n## Voice\nx\n", encoding="utf-8")
    active = await sync_soul_file(memory, soul_file)
    assert active is not None and good is not None and active.id == good.id
    [rejected] = await memory.audit_log("soul.rejected")
    assert "name is empty" in str(rejected.detail["reason"])


async def test_running_watcher_picks_up_an_edit_and_rejects_a_bad_one(
    memory: Memory, soul_file: Path
) -> None:
    watcher = SoulWatcher(memory, soul_file)
    await watcher.start()
    try:
        await asyncio.wait_for(watcher.ready.wait(), 5)
        first = await memory.active_soul()
        assert first is not None and first.name == "Wren"

        soul_file.write_text(first.text.replace("Wren", "Kestrel"), encoding="utf-8")

        async def renamed() -> bool:
            active = await memory.active_soul()
            return active is not None and active.name == "Kestrel"

        await wait_until(renamed, 5.0, "the soul renamed Kestrel")

        soul_file.write_text("not a soul at all", encoding="utf-8")
        await wait_until(lambda: memory.audit_log("soul.rejected"), 5.0, "the bad soul rejected")
        active = await memory.active_soul()
        assert active is not None and active.name == "Kestrel"
    finally:
        await watcher.stop()
