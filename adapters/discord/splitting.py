"""Discord's message limit and splitting a reply to it, pure: no SDK, no IO.

A reply longer than 2000 characters becomes several messages, cut at paragraph and line
breaks; a ``` code block cut between two messages is closed and reopened (with its language
tag) so every message renders on its own. The manifest imports this module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MESSAGE_LIMIT = 2000

_FENCE_LINE = re.compile(r" {0,3}```")
_CLOSER = "\n```"
# A code block reopened in the next chunk keeps its language tag ("```python"); a longer
# info string is not repeated, so that every piece of a line fits next to the opener.
_MAX_REOPEN = 32
_MIN_LIMIT = 100


@dataclass(frozen=True)
class _Piece:
    """A line of the text, or part of a line too long for one message."""

    text: str
    joined: bool  # continues the previous piece's line (no newline between them)
    fence_before: str | None  # the fence line of the code block open where this piece starts
    fence_after: str | None  # ... and where it ends
    is_fence: bool

    @property
    def blank(self) -> bool:
        return not self.joined and not self.text.strip()


def is_fence_line(line: str) -> bool:
    """A line that opens or closes a ``` code block."""
    return _FENCE_LINE.match(line) is not None


def _reopen(fence_line: str) -> str:
    stripped = fence_line.strip()
    return stripped if len(stripped) <= _MAX_REOPEN else "```"


def _break_line(line: str, width: int) -> list[str]:
    """Parts of at most `width` characters, cut after a space when there is one.

    A part does not start with a fence (which would open a code block the text never had)
    unless the line is a run of backticks too long to cut anywhere else.
    """
    parts: list[str] = []
    while len(line) > width:
        cut = line.rfind(" ", width // 2, width) + 1 or width
        safe = cut
        while safe > width // 2 and is_fence_line(line[safe:]):
            safe -= 1
        if not is_fence_line(line[safe:]):
            cut = safe
        parts.append(line[:cut])
        line = line[cut:]
    parts.append(line)
    return parts


def _pieces(text: str, width: int) -> list[_Piece]:
    pieces: list[_Piece] = []
    fence: str | None = None
    for line in text.split("\n"):
        fence_line = is_fence_line(line)
        after = (None if fence is not None else _reopen(line)) if fence_line else fence
        for index, part in enumerate(_break_line(line, width)):
            before = fence if index == 0 else after
            pieces.append(_Piece(part, index > 0, before, after, fence_line and index == 0))
        fence = after
    return pieces


def _block_length(pieces: Sequence[_Piece], start: int) -> int:
    """Characters of the code block opened at `start`, as one message of its own."""
    length = 0
    for index in range(start, len(pieces)):
        piece = pieces[index]
        length += len(piece.text) + (0 if index == start or piece.joined else 1)
        if index > start and piece.fence_after is None:
            return length
    return length + len(_CLOSER)  # left open: closed by the split


def _shows_something(pieces: Sequence[_Piece]) -> bool:
    """Text to read, or a code block the text itself left empty ("```\n```"), not only the
    blank lines of a block cut open (an empty code box sent on its own)."""
    if any(piece.text.strip() and not piece.is_fence for piece in pieces):
        return True
    opened = next((i for i, p in enumerate(pieces) if p.is_fence and p.fence_before is None), None)
    return opened is not None and any(p.fence_after is None for p in pieces[opened + 1 :])


def _render(pieces: Sequence[_Piece], start: int, end: int) -> str:
    """The message holding pieces[start:end]; "" when it would show nothing."""
    # A block cut where only blank lines and a fence of it fall on one side: the previous
    # message closed it already, or the next one opens it; an empty code box would show.
    first = start
    while first < end and pieces[first].blank and pieces[first].fence_before is not None:
        first += 1
    if first < end and pieces[first].is_fence and pieces[first].fence_before is not None:
        start = first + 1
    last = end
    while last > start and pieces[last - 1].blank and pieces[last - 1].fence_after is not None:
        last -= 1
    if last > start and pieces[last - 1].is_fence and pieces[last - 1].fence_before is None:
        end = last - 1
    while start < end and pieces[start].blank and pieces[start].fence_before is None:
        start += 1
    while end > start and pieces[end - 1].blank and pieces[end - 1].fence_after is None:
        end -= 1
    if start == end or not _shows_something(pieces[start:end]):
        return ""
    opener = pieces[start].fence_before
    out = [opener + "\n"] if opener else []
    for index in range(start, end):
        if index > start and not pieces[index].joined:
            out.append("\n")
        out.append(pieces[index].text)
    if pieces[end - 1].fence_after is not None:
        out.append(_CLOSER)
    return "".join(out)


def _fit(pieces: Sequence[_Piece], start: int, limit: int) -> tuple[int, list[int]]:
    """The end of the pieces from `start` that fit in one message, and sizes[k], the size
    of a message holding pieces[start:start + k] (before its closing fence)."""
    opener = pieces[start].fence_before
    sizes = [len(opener) + 1 if opener else 0]
    for index in range(start, len(pieces)):
        piece = pieces[index]
        grown = sizes[-1] + len(piece.text) + (0 if index == start or piece.joined else 1)
        if grown + (len(_CLOSER) if piece.fence_after else 0) > limit:
            return index, sizes
        sizes.append(grown)
    return len(pieces), sizes


def _best_cut(pieces: Sequence[_Piece], start: int, end: int, sizes: list[int], limit: int) -> int:
    """Where to end the chunk that may hold pieces[start:end]: the index of the next start.

    Best is a paragraph break, or just before a code block that then fits whole in the
    next message; then a line break outside code, then one inside code, then mid-line.
    Breaks that leave this chunk less than half full are only taken when nothing else is.
    """
    best, best_score = end, -100
    for cut in range(start + 1, end + 1):
        piece, previous = pieces[cut], pieces[cut - 1]
        full_enough = sizes[cut - start] >= limit // 2
        whole_block = (
            piece.is_fence and piece.fence_before is None and _block_length(pieces, cut) <= limit
        )
        if piece.joined:
            score = 0
        elif piece.fence_before is not None:
            score = 1
        elif whole_block or piece.blank or (previous.blank and previous.fence_after is None):
            score = 3
        else:
            score = 2
        if not (full_enough or whole_block):
            score -= 4
        if score >= best_score:
            best, best_score = cut, score
    return best


def split_for_discord(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split a reply into messages of at most `limit` characters, in order.

    Prefers paragraph and line breaks. A ``` code block cut between two messages is closed
    at the end of the first and reopened, with its language tag, at the start of the next,
    so every message renders on its own; a block the text leaves open is closed. Blank
    lines at the edges of a message are dropped (Discord trims them anyway), and so is a
    fence of a cut block with nothing of the block beside it: no empty code boxes.
    """
    if limit < _MIN_LIMIT:
        raise ValueError(f"limit must be at least {_MIN_LIMIT}")
    pieces = _pieces(text, limit - (_MAX_REOPEN + 1 + len(_CLOSER)))
    chunks: list[str] = []
    start = 0
    while start < len(pieces):
        end, sizes = _fit(pieces, start, limit)
        cut = end if end == len(pieces) else _best_cut(pieces, start, end, sizes, limit)
        chunk = _render(pieces, start, cut)
        if chunk:
            chunks.append(chunk)
        start = cut
    return chunks
