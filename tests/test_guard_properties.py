"""Property-based tests (hypothesis) for the guard's parsers and arithmetic, SOUL.md parsing
and coordinator command parsing: whatever the input, no crash and the stated invariants."""

from __future__ import annotations

import re

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bot.commands import parse_command
from bot.guard import (
    ACK_WORDS,
    CUT_NOTE,
    Bucket,
    EchoWindow,
    clip_incoming,
    decode_text,
    echo_match,
    is_bare_acknowledgement,
    loop_reason,
    normalize_code,
    normalize_for_echo,
    similar,
    take_token,
)
from bot.soul import SoulError, parse_soul

ASCII_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
SEPARATORS = st.sampled_from([" ", "  ", ", ", ". ", "! ", "\n", " 👍 ", "... ", " - "])
NOT_ACK = st.from_regex(r"[a-z]{3,12}", fullmatch=True).filter(lambda w: w not in ACK_WORDS)
NOTE = re.compile(r"\n\[cut: (\d+) characters omitted\]$")


# Bare acknowledgements and near-duplicates -------------------------------------------------


@given(st.text())
def test_ack_detector_never_raises(text: str) -> None:
    assert isinstance(is_bare_acknowledgement(text), bool)


@given(
    st.lists(st.sampled_from(sorted(ACK_WORDS)), min_size=1, max_size=6),
    st.lists(SEPARATORS, min_size=7, max_size=7),
    st.booleans(),
)
def test_a_few_ack_words_with_any_punctuation_are_bare(
    words: list[str], separators: list[str], shout: bool
) -> None:
    text = separators[0] + "".join(w + s for w, s in zip(words, separators[1:], strict=False))
    assert is_bare_acknowledgement(text.upper() if shout else text)


@given(st.lists(st.sampled_from(sorted(ACK_WORDS)), max_size=5), NOT_ACK, st.integers(0, 5))
def test_a_word_with_content_is_not_bare(words: list[str], word: str, at: int) -> None:
    words.insert(min(at, len(words)), word)
    assert not is_bare_acknowledgement(" ".join(words))


@given(st.text(st.sampled_from(".!?…-—*~ \n👍🙏✅[]()")))
def test_only_punctuation_or_emoji_is_bare(text: str) -> None:
    assert is_bare_acknowledgement(text)


@given(st.text(), st.text())
def test_similarity_is_reflexive_and_symmetric(a: str, b: str) -> None:
    assert similar(a, a)
    assert similar(a, b) == similar(b, a)


@given(st.lists(st.tuples(st.text(max_size=60), st.booleans()), max_size=6))
def test_loop_reason_never_raises_and_people_never_loop(recent: list[tuple[str, bool]]) -> None:
    reason = loop_reason(recent)
    assert reason in (None, "bare acknowledgements", "repeating itself")
    if recent and not recent[0][1]:
        assert reason is None  # the newest message is a person's


# Huge messages and invalid UTF-8 --------------------------------------------------------------


@given(st.text(max_size=3000), st.integers(min_value=64, max_value=2000))
def test_clip_incoming_respects_the_limit_and_counts_what_it_cut(text: str, limit: int) -> None:
    clipped = clip_incoming(text, limit)
    assert len(clipped) <= limit
    if len(text) <= limit:
        assert clipped == text
        return
    match = NOTE.search(clipped)
    assert match is not None
    head = clipped[: match.start()]
    assert text.startswith(head)
    assert int(match.group(1)) == len(text) - len(head)


def test_clip_note_format_is_what_the_tests_parse() -> None:
    assert CUT_NOTE.format(omitted=5) == "[cut: 5 characters omitted]"


@given(st.binary(max_size=500))
def test_decode_text_takes_any_bytes(data: bytes) -> None:
    text = decode_text(data)
    text.encode("utf-8")  # always storable
    assert "\x00" not in text


# Echo normalisation --------------------------------------------------------------------------


@given(st.text(max_size=300))
def test_echo_normalisation_is_idempotent_and_never_raises(text: str) -> None:
    once = normalize_for_echo(text)
    assert normalize_for_echo(once) == once
    assert "  " not in once and once == once.strip()


# ASCII text with the markers normalisation drops (forwards, quotes, headers) mixed in.
MARKED_ASCII = st.lists(
    st.text(alphabet=st.characters(max_codepoint=127), max_size=30)
    | st.sampled_from(
        [
            *("Fwd: ", "RE:", "> ", ">>", "|", "\n", ":", "--"),
            *(" -- Original Message -- ", "\n---- Forwarded message ----\n"),
            "Begin forwarded message:",
        ]
    ),
    max_size=12,
).map("".join)


@given(MARKED_ASCII)
def test_echo_normalisation_of_ascii_takes_a_short_way_to_the_same_words(text: str) -> None:
    from bot import guard

    markers_dropped = guard._FORWARD_PREFIX.sub(
        "", guard._QUOTE_MARKER.sub("", guard._FORWARD_HEADER.sub(" ", text))
    )
    unicode_way = " ".join(guard._WORD.findall(markers_dropped.casefold()))
    assert normalize_for_echo(text) == unicode_way


@given(ASCII_TEXT)
def test_echo_normalisation_ignores_case(text: str) -> None:
    assert normalize_for_echo(text.upper()) == normalize_for_echo(text.lower())


SENTENCE = st.builds(
    lambda words, marks: "".join(w + m for w, m in zip(words, marks, strict=False)),
    st.lists(st.from_regex(r"[A-Za-z0-9']{1,10}", fullmatch=True), min_size=5, max_size=20),
    st.lists(SEPARATORS, min_size=20, max_size=20),
)


@given(SENTENCE, st.sampled_from(["Fwd: ", "> ", "Re: Fwd: ", ">> ", "FW: ", ""]), SEPARATORS)
def test_a_forward_or_quote_of_sent_text_is_an_echo(text: str, prefix: str, end: str) -> None:
    assume(len(normalize_for_echo(text)) >= 20)
    assert echo_match(prefix + text + end, [text]) == text
    if len(normalize_for_echo(text)) >= 48:  # a long piece of a sent text
        assert echo_match(prefix + text.upper(), ["unrelated words " + text]) is not None


@given(
    st.lists(SENTENCE, min_size=1, max_size=30),
    st.integers(min_value=0, max_value=29),
    st.sampled_from(["Fwd: ", "> ", "look: ", ""]),
    st.text(max_size=60),
)
def test_echo_window_finds_what_echo_match_finds(
    sent: list[str], pick: int, prefix: str, other: str
) -> None:
    window = EchoWindow(window_s=1000)
    for n, text in enumerate(sent):
        window.add(n + 1, 10.0 + n, conversation_id=1, text=text)
    chosen = sent[pick % len(sent)]
    if len(normalize_for_echo(chosen)) >= 20:
        assert window.match(prefix + chosen, now=100.0) is not None
    # Sound: whatever the window calls an echo, the plain rule agrees.
    for incoming in (other, prefix + chosen):
        if window.match(incoming, now=100.0) is not None:
            assert echo_match(incoming, sent) is not None


# Token buckets -------------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    st.floats(min_value=0, max_value=50, allow_nan=False),
    st.integers(min_value=1, max_value=100),
    st.lists(
        st.tuples(
            st.floats(min_value=-10, max_value=100, allow_nan=False),
            st.floats(min_value=0, max_value=5, allow_nan=False),
        ),
        max_size=40,
    ),
)
def test_token_bucket_never_negative_never_above_burst(
    rate: float, burst: int, steps: list[tuple[float, float]]
) -> None:
    bucket: Bucket | None = None
    now, taken, elapsed = 1000.0, 0.0, 0.0
    for dt, cost in steps:
        now += dt
        elapsed += max(dt, 0.0)
        allowed, after = take_token(bucket, now, rate, burst, cost)
        assert 0.0 <= after.tokens <= burst
        if bucket is not None:
            assert after.updated_at >= bucket.updated_at  # time never runs backwards
        taken += cost if allowed else 0.0
        bucket = after
    assert taken <= burst + rate * elapsed + 1e-6  # never more than burst plus refill


# Codes, SOUL.md and commands --------------------------------------------------------------------


@given(st.text(max_size=40))
def test_normalize_code_is_idempotent(text: str) -> None:
    assert normalize_code(normalize_code(text)) == normalize_code(text)


@given(st.one_of(st.binary(max_size=2000), st.text(max_size=2000)))
def test_parse_soul_raises_only_soul_error(data: bytes | str) -> None:
    try:
        soul = parse_soul(data)
    except SoulError:
        return
    assert soul.name and {"voice", "values", "boundaries"} <= set(soul.sections)


SOUL_LINES = st.sampled_from(
    ["# Name", "Wren", "## Voice", "## Values", "## Boundaries", "```", "", "- be kind", "## name"]
)


@given(st.lists(SOUL_LINES, max_size=30))
def test_parse_soul_on_soul_like_text_raises_only_soul_error(lines: list[str]) -> None:
    try:
        parse_soul("\n".join(lines))
    except SoulError:
        pass


@given(st.text(max_size=300))
def test_parse_command_never_raises(text: str) -> None:
    command = parse_command(text)
    if command is not None:
        assert text.strip().startswith("/")
        assert command.name == command.name.lower()
        assert all(isinstance(arg, str) for arg in command.args)


@given(st.sampled_from(["/resolve", "/link", "/soul", "/approve-pair"]), st.text(max_size=80))
def test_parse_command_with_odd_arguments(name: str, rest: str) -> None:
    command = parse_command(f"{name} {rest}")
    assert command is not None and command.name == name[1:]
