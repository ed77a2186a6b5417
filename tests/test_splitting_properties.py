"""Property-based tests (hypothesis) of splitting replies into messages: Telegram chunks fit,
are not blank and give back the text; Discord chunks fit, keep every line in its code block
and balance their fences."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from adapters.discord import is_fence_line, split_for_discord
from adapters.telegram import split_for_telegram, telegram_length
from tests.strategies import FAST

PROSE_PIECE = st.sampled_from(
    ["word", "Sentence.", "end!", "why?", "“quoted.”", "😀", "é", "(aside.)", "…", "x" * 30]
)
PROSE = st.lists(
    st.tuples(PROSE_PIECE, st.sampled_from([" ", " ", " ", "\n", "\n\n", "\n \n", "\t", "  "])),
    max_size=120,
).map(lambda pairs: "".join(a + b for a, b in pairs))


def longest_word(text: str) -> int:
    return max((telegram_length(word) for word in text.split()), default=0)


def assert_split_for_telegram(text: str, limit: int, chunks: list[str]) -> None:
    """Chunks fit, are not blank, and are the text in order but for whitespace at the cuts;
    a cut without whitespace only splits a word longer than a whole message."""
    stripped = text.strip()
    assert (chunks == []) == (stripped == "")
    position = 0
    for index, chunk in enumerate(chunks):
        assert chunk and chunk == chunk.strip()
        assert telegram_length(chunk) <= limit
        gap_end = position
        while gap_end < len(stripped) and stripped[gap_end].isspace():
            gap_end += 1
        if index and gap_end == position:  # cut inside a word: only one too long for a message
            tail, head = chunks[index - 1].split()[-1], chunk.split()[0]
            assert telegram_length(tail + head) > limit
        assert stripped.startswith(chunk, gap_end)
        position = gap_end + len(chunk)
    assert position == len(stripped)
    if longest_word(text) <= limit:
        assert [word for chunk in chunks for word in chunk.split()] == text.split()


@settings(max_examples=100, deadline=None)
@given(st.one_of(PROSE, st.text(max_size=400)), st.integers(2, 200))
def test_telegram_chunks_fit_and_give_back_the_text_but_the_cut_whitespace(
    text: str, limit: int
) -> None:
    assert_split_for_telegram(text, limit, split_for_telegram(text, limit))


@FAST
@given(PROSE.filter(lambda p: p.strip()), st.integers(9_000, 20_000))
def test_telegram_splits_long_prose_at_its_real_limit(prose: str, size: int) -> None:
    text = (prose * (size // len(prose) + 1))[:size]
    chunks = split_for_telegram(text)
    assert len(chunks) >= 3
    assert_split_for_telegram(text, 4096, chunks)


def fences_balanced(chunk: str) -> bool:
    return sum(is_fence_line(line) for line in chunk.split("\n")) % 2 == 0


def code_lines(text: str) -> list[tuple[str, str | None]]:
    """Each line that is not a fence, with the info string of the code block it is in."""
    lines: list[tuple[str, str | None]] = []
    fence: str | None = None
    for line in text.split("\n"):
        if is_fence_line(line):
            fence = line.strip()[3:] if fence is None else None
        else:
            lines.append((line, fence))
    return lines


def shows_something(chunk: str, text: str) -> bool:
    """A line to read, and no code block with nothing in it but of the text's own."""
    blocks, block = [], None
    for line in chunk.split("\n"):
        if block is not None:
            block.append(line)
        if is_fence_line(line):
            if block is None:
                block = [line]
            else:
                blocks.append(block)
                block = None
    empty = ["\n".join(b) for b in blocks if not any(line.strip() for line in b[1:-1])]
    closed = text + ("" if fences_balanced(text) else "\n```")  # as the split closes it
    if not any(line.strip() for line, _ in code_lines(chunk)):
        return chunk in closed
    return all(f"\n{b}\n" in f"\n{closed}\n" for b in empty)


# Lines shorter than a message (at most 54 characters, the limit is 100 or more).
DISCORD_LINE = st.one_of(
    st.lists(st.text("abcdefgh xyz`#*_-.,()", min_size=1, max_size=10), max_size=5).map(" ".join),
    st.sampled_from(
        [
            "```",
            "```",
            "```python",
            "```js",
            "  ```",
            "   ```py",
            "    ``` not a fence",
            "````",
            "``` ",
            "```" + "x" * 40,
            "a ``` in a line",
            "",
            "",
            "   ",
        ]
    ),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(DISCORD_LINE, min_size=8, max_size=150), st.integers(100, 400))
def test_discord_chunks_keep_every_line_in_its_code_block(lines: list[str], limit: int) -> None:
    """Lines shorter than a message are never cut: each chunk is the next stretch of lines
    (blank lines outside code dropped at its edges), and each line renders in the same code
    block, with its language tag, as in the whole text (a tag over 32 characters is dropped)."""
    text = "\n".join(lines)
    chunks = split_for_discord(text, limit)
    original = code_lines(text)
    position = 0
    for chunk in chunks:
        assert len(chunk) <= limit
        assert fences_balanced(chunk), chunk
        edges = chunk.split("\n")
        assert edges[0].strip() and edges[-1].strip()  # blank edges are dropped
        shown = code_lines(chunk)
        assert shows_something(chunk, text), chunk
        # Skip the blank lines dropped between this chunk and the last: at the edges of a
        # message, or a stretch of a code block with nothing to show but blank lines.
        while not same_lines(shown, original[position : position + len(shown)]):
            assert not original[position][0].strip(), (chunk, original[position:])
            position += 1
        position += len(shown)
    assert all(not line.strip() for line, _ in original[position:])
    if any(line.strip() for line, _ in original):
        assert chunks  # something to read is always sent
    if not text.strip():
        assert chunks == []


def same_lines(shown: list[tuple[str, str | None]], kept: list[tuple[str, str | None]]) -> bool:
    """The same lines in the same code blocks; a block reopened in a later chunk keeps its
    language tag unless the tag is too long (over 32 characters with the fence)."""
    return len(shown) == len(kept) and all(
        line == kept_line
        and (
            fence == kept_fence or (fence == "" and kept_fence is not None and len(kept_fence) > 29)
        )
        for (line, fence), (kept_line, kept_fence) in zip(shown, kept, strict=True)
    )


@settings(max_examples=80, deadline=None)
@given(
    st.one_of(
        st.text(max_size=2500),
        st.lists(st.one_of(DISCORD_LINE, st.text(max_size=900)), max_size=30).map("\n".join),
    ),
    st.integers(100, 600),
)
def test_discord_chunks_fit_are_never_blank_and_balance_their_fences(text: str, limit: int) -> None:
    # Known limit: a fence line longer than a message minus 37 characters is cut like any
    # line, so the rest of its info string shows as code in the next message.
    assume(all(len(line) <= limit - 37 for line in text.split("\n") if is_fence_line(line)))
    chunks = split_for_discord(text, limit)
    for chunk in chunks:
        assert len(chunk) <= limit
        assert chunk.strip()
        assert fences_balanced(chunk), chunk
        assert shows_something(chunk, text), chunk
    shown = "".join(line for c in chunks for line in c.split("\n") if not is_fence_line(line))
    assert "".join(shown.split()) == "".join(
        "".join(line for line in text.split("\n") if not is_fence_line(line)).split()
    )
    if len(text) <= limit and fences_balanced(text) and text.strip():
        lines = text.split("\n")
        while not lines[0].strip():
            lines.pop(0)
        while not lines[-1].strip():
            lines.pop()
        assert chunks == ["\n".join(lines)]  # one message: the text as written


def test_the_helpers_see_what_the_properties_need() -> None:
    """The helpers the properties rely on see what they must (a guard against vacuous tests)."""
    assert not fences_balanced("```\ncode")
    assert not shows_something("```py\n```", "a\n```py\ncode\n```")  # an added empty box
    assert not shows_something("```\n\n```", "```\n\ncode\n```")
    assert not shows_something("a\n```py\n```", "a\n```py\ncode\n```")
    assert shows_something("```\n```", "x\n```\n```\ny")  # the text's own
    assert shows_something("a\n```\n```", "a\n```") and shows_something("```\nb\n```", "b")
    assert code_lines("a\n```py\nb\n```") == [("a", None), ("b", "py")]
    assert same_lines([("x", "")], [("x", "p" * 30)]) and not same_lines([("x", "")], [("x", "p")])


def test_an_outbox_target_is_a_telegram_chat_id_or_a_channel_name_or_nothing() -> None:
    from adapters.telegram.splitting import chat_target

    assert chat_target("-1001234") == -1001234
    assert chat_target("@mirror_news") == "@mirror_news"
    # None: the courier fails the row at once (bot.outbox.Unreachable), no retries.
    assert chat_target("telegram-dm-703979702") is None
    assert chat_target("@x") is None
