"""Property-based tests (hypothesis) of SOUL.md parsing: any bytes or text give a soul or a
one-line SoulError, and a valid soul round-trips whatever its newlines, headings and BOM."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.soul import SoulError, parse_soul
from tests.strategies import ANY_TEXT, FAST

SOUL_WORD = st.text("abcdefghijklmnopqrstuvwxyzÄéß0123456789.,'!?", min_size=1, max_size=10)
SOUL_BODY_LINE = st.one_of(
    st.lists(SOUL_WORD, min_size=1, max_size=8).map(" ".join),
    st.sampled_from(["", "- be kind", "### a sub-heading is text", "#hashtag", "  indented"]),
)
# A body with text, and sometimes a code block holding what would otherwise be a heading.
SOUL_BODY = st.tuples(
    st.lists(SOUL_BODY_LINE, max_size=5),
    st.lists(SOUL_WORD, min_size=1, max_size=6).map(" ".join),
    st.booleans(),
).map(
    lambda parts: "\n".join(
        [*parts[0], parts[1], *(["```", "## Voice", "# Name", "```"] if parts[2] else [])]
    )
)
SOUL_NAME = st.from_regex(r"[A-Za-zÀ-ÿ][A-Za-zÀ-ÿ0-9 .'-]{0,30}", fullmatch=True)
FREE_TITLE = st.sampled_from(["Hobbies", "Memories", "Quirks", "Style notes", "Friends"])


@st.composite
def souls(draw: st.DrawFn) -> tuple[str, str, dict[str, str]]:
    """A valid SOUL.md: (text, expected name, expected sections in file order)."""
    name = draw(SOUL_NAME)
    decorated = draw(st.sampled_from(["{}", "**{}**", "_{}_", "`{}`", "  {}  "])).format(name)
    titles = ["Name", "Voice", "Values", "Boundaries", *draw(st.sets(FREE_TITLE, max_size=2))]
    titles = draw(st.permutations(titles))
    bodies = {title: decorated if title == "Name" else draw(SOUL_BODY) for title in titles}
    parts = []
    for title in titles:
        marks = draw(st.sampled_from(["#", "##"]))
        shown = draw(st.sampled_from([title, title.upper(), title.lower()]))
        closing = draw(st.sampled_from(["", " #", " ##"]))
        parts.append(f"{marks} {shown}{closing}\n{bodies[title]}\n")
    text = draw(st.sampled_from(["", "Notes before the first heading.\n\n"])) + "\n".join(parts)
    expected = {title.lower(): bodies[title].strip() for title in titles}
    return text, name.strip().strip("*_` "), expected


@given(st.one_of(st.binary(max_size=600), ANY_TEXT), st.integers(0, 1000))
def test_parse_soul_takes_any_input_and_raises_only_soul_error(
    data: bytes | str, max_bytes: int
) -> None:
    try:
        soul = parse_soul(data, max_bytes=max_bytes)
    except SoulError as exc:
        assert str(exc) and "\n" not in str(exc)  # one line, for the log and the audit
        return
    assert soul.name and {"name", "voice", "values", "boundaries"} <= set(soul.sections)


@FAST
@given(souls(), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_a_valid_soul_round_trips(
    soul: tuple[str, str, dict[str, str]], newline: str, bom: bool
) -> None:
    text, name, sections = soul
    text = text.replace("\n", newline)
    parsed = parse_soul(("\ufeff" if bom else "") + text)
    assert parsed.name == name
    assert parsed.sections == sections and list(parsed.sections) == list(sections)
    assert parsed.text == text  # preserved as written, without a byte-order mark
    assert parsed.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert parse_soul(text.encode("utf-8")) == parsed  # bytes and str read alike
    assert parse_soul(parsed.text) == parsed  # stable: the stored text parses the same


@FAST
@given(souls(), st.integers(1, 200))
def test_an_oversize_soul_is_refused_and_one_at_the_limit_is_not(
    soul: tuple[str, str, dict[str, str]], over: int
) -> None:
    raw = soul[0].encode("utf-8")
    assert parse_soul(raw, max_bytes=len(raw)).name == soul[1]
    for data in (raw, soul[0]):
        with pytest.raises(SoulError, match="limit"):
            parse_soul(data, max_bytes=max(len(raw) - over, 0))


INVALID_UTF8 = st.sampled_from(
    [b"\xff", b"\xfe", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"]
)


@FAST
@given(souls(), INVALID_UTF8, st.integers(0, 10_000))
def test_invalid_utf8_anywhere_in_a_soul_is_refused_as_such(
    soul: tuple[str, str, dict[str, str]], bad: bytes, at: int
) -> None:
    raw = soul[0].encode("utf-8")
    at %= len(raw) + 1
    with pytest.raises(SoulError, match="not UTF-8"):
        parse_soul(raw[:at] + bad + raw[at:])


@FAST
@given(souls(), st.text(st.characters(categories=("Cs",)), min_size=1, max_size=3))
def test_a_soul_text_with_lone_surrogates_is_refused_not_crashed_on(
    soul: tuple[str, str, dict[str, str]], surrogates: str
) -> None:
    with pytest.raises(SoulError):
        parse_soul(soul[0] + surrogates)
