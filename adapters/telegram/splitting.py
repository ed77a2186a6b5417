"""Telegram's text rules, pure: message length in UTF-16 units, splitting a reply to the
4096-unit limit, clipping, and the ids of messages and chats. No SDK, no IO: the manifest
imports this module, and so can anything that wants to test or reuse the rules.
"""

from __future__ import annotations

import re

# Characters of one message's text. Counted here in UTF-16 code units, the unit of Telegram's
# entity offsets: the cautious reading, as an emoji outside the BMP may count twice.
MESSAGE_LIMIT = 4096

_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_LINE = re.compile(r"\n")
_SENTENCE = re.compile(r"[.!?…][\"'”’»)\]]*(?=\s)")
_SPACE = re.compile(r"\s")
# (pattern, cut after the match?) from the best place to split to the worst.
_BOUNDARIES = ((_PARAGRAPH, False), (_LINE, False), (_SENTENCE, True), (_SPACE, False))
_NUMERIC_CHAT = re.compile(r"^-?\d+$")
_CHANNEL_NAME = re.compile(r"^@[A-Za-z0-9_]{4,32}$")


def telegram_length(text: str) -> int:
    """Length in UTF-16 code units (an emoji outside the BMP is two), as limits are counted."""
    return len(text.encode("utf-16-le")) // 2


def _fitting(text: str, limit: int) -> int:
    """How many leading characters of `text` fit in `limit` UTF-16 units."""
    if len(text) * 2 <= limit:
        return len(text)
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _cut_point(window: str, end: int) -> int:
    """Where to cut `window` (at most `end`): the last paragraph break, else line break, else
    sentence end, else space; a kind counts only if it keeps at least half the window, so
    one early paragraph break does not leave a tiny message. No boundary at all: cut at end."""
    latest = 0
    for pattern, after in _BOUNDARIES:
        cuts = [
            match.end() if after else match.start()
            for match in pattern.finditer(window)
            if 0 < (match.end() if after else match.start()) <= end
        ]
        if cuts:
            if cuts[-1] >= end // 2:
                return cuts[-1]
            latest = max(latest, cuts[-1])
    return latest or end


def split_for_telegram(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split a reply into messages of at most `limit` UTF-16 units, in order.

    Splits on paragraph, then line, then sentence, then word boundaries; only a word longer
    than a whole message is cut inside. Whitespace at the split points (and around the whole
    text) is dropped; everything else is kept. Empty or blank text gives no messages.
    """
    if limit < 2:
        raise ValueError("limit must be at least 2 (one character outside the BMP)")
    chunks: list[str] = []
    rest = text.strip()
    while rest:
        end = _fitting(rest, limit)
        if end == len(rest):
            chunks.append(rest)
            break
        # One character past the end, so a boundary right at the end is seen.
        cut = _cut_point(rest[: end + 1], end)
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return chunks


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` UTF-16 units, with an ellipsis when something was dropped."""
    if telegram_length(text) <= limit:
        return text
    return text[: _fitting(text, limit - 1)].rstrip() + "…"


def platform_id(chat_id: int | str, message_id: int) -> str:
    """A message's id in memory: Telegram message ids are only unique within one chat."""
    return f"{chat_id}:{message_id}"


def chat_target(target: str) -> int | str | None:
    """An outbox target as a chat id: a number, or '@channelname' (None: neither, so no
    chat has it)."""
    if _NUMERIC_CHAT.match(target):
        return int(target)
    return target if _CHANNEL_NAME.match(target) else None
