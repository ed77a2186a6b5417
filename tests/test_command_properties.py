"""Property-based tests (hypothesis) of coordinator commands and buttons: any text is parsed
without raising, a command's arguments are the words after it, and button data round-trips
within Telegram's 64 bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot.commands import Command, button_data, parse_button, parse_command
from tests.strategies import ANY_TEXT

COMMAND_NAME = st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True)
BOT_NAME = st.from_regex(r"[A-Za-z0-9_]{1,32}", fullmatch=True)
ARGUMENT_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)


@given(ANY_TEXT)
def test_only_a_text_starting_with_a_slash_is_a_command_and_any_text_is_taken(text: str) -> None:
    command = parse_command(text)
    if not text.strip().startswith("/"):
        assert command is None
        return
    assert command is not None
    assert command.name == command.name.lower()
    assert "@" not in command.name and not any(c.isspace() for c in command.name)
    assert all(arg and not any(c.isspace() for c in arg) for arg in command.args)


@given(COMMAND_NAME, BOT_NAME, ARGUMENT_TEXT, st.sampled_from(["", " ", "\n", "  \t"]))
def test_command_arguments_are_the_words_after_it(
    name: str, bot: str, rest: str, padding: str
) -> None:
    """'/resolve 12 A take the call' -> ['12', 'A', 'take', ...]: every word kept as typed,
    apostrophes, quotes and backslashes included (a note is the person's own words)."""
    expected = Command(name, rest.split())
    assert parse_command(f"{padding}/{name} {rest}{padding}") == expected
    # Telegram sends /cmd@botname in groups, and people type commands in any case.
    assert parse_command(f"/{name}@{bot} {rest}") == expected
    assert parse_command(f"/{name.upper()} {rest}") == expected


@given(st.sampled_from(["approve-pair", "approve_pair", "soul", "link"]), BOT_NAME, ARGUMENT_TEXT)
def test_the_guard_commands_are_recognised_the_way_access_reads_them(
    name: str, bot: str, rest: str
) -> None:
    # bot.commands reads command.name with "_" as "-" (Telegram allows no "-" in commands).
    for text in (f"/{name} {rest}", f"/{name.title()}@{bot} {rest}"):
        command = parse_command(text)
        assert command is not None
        assert command.name.replace("_", "-") == name.replace("_", "-")


BUTTON_VERBS = st.sampled_from(["resolve", "approve", "deny", "dismiss"])


@given(
    BUTTON_VERBS,
    st.integers(0, 2**63 - 1),
    st.none() | st.from_regex(r"\w{1,12}", fullmatch=True),
)
def test_button_data_round_trips_through_parse_button(
    verb: str, item_id: int, choice: str | None
) -> None:
    data = button_data(verb, item_id, choice)
    assert parse_button(data) == Command(verb, [str(item_id), *([choice] if choice else [])])


@given(
    BUTTON_VERBS, st.integers(0, 2**63 - 1), st.sampled_from([None, "A", "B", "both", "neither"])
)
def test_button_data_fits_telegrams_64_bytes(verb: str, item_id: int, choice: str | None) -> None:
    assert len(button_data(verb, item_id, choice).encode("utf-8")) <= 64


@given(st.one_of(ANY_TEXT, st.builds("mirror:{}:{}".format, BUTTON_VERBS, ANY_TEXT)))
def test_parse_button_takes_any_data_and_yields_only_known_verbs(data: str) -> None:
    command = parse_button(data)
    if command is None:
        return
    assert data.startswith("mirror:" + command.name + ":")
    assert command.name in ("resolve", "approve", "deny", "dismiss")
    assert command.args and command.args[0].isdigit() and len(command.args) <= 2
