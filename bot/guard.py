"""The guard's arithmetic and text rules: no IO, no clock, no SQL.

Everything here takes its inputs as arguments (texts, times, counters) and returns a value
(the one stateful piece, `EchoWindow`, is an in-memory index fed by its caller), so it is
trivially unit- and property-tested: bad input (invalid UTF-8, huge messages),
echo normalisation and matching, bare acknowledgements and near-duplicates (bot loops),
token-bucket arithmetic, the bot-exchange budget, and one-time codes. Policy that needs
memory (who may talk, pairing, links) lives in `bot.gate` and `bot.commands`; SQL in
`bot.memory`. This module must never import memory, config or an SDK.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Literal

from bot.models import clean_text

# Bad input ------------------------------------------------------------------------------

CUT_NOTE = "[cut: {omitted} characters omitted]"


def decode_text(data: bytes) -> str:
    """Bytes from a platform as text: invalid UTF-8 becomes U+FFFD, never an exception."""
    return clean_text(data.decode("utf-8", errors="replace").removeprefix("\ufeff"))


def clip_incoming(text: str, limit: int) -> str:
    """Cut a huge message to at most `limit` characters, the note included.

    The head is kept (people put the question first; mail puts the quoted history last),
    preferably ending at whitespace, followed by "[cut: N characters omitted]" where N
    counts exactly what was dropped. Text within the limit comes back unchanged.
    """
    if len(text) <= limit:
        return text
    if limit <= len(CUT_NOTE.format(omitted=len(text))) + 1:
        return text[: max(limit, 0)]
    head = limit
    for _ in range(3):  # the note's length depends on N; settle it in a couple of rounds
        note = "\n" + CUT_NOTE.format(omitted=len(text) - head)
        head = limit - len(note)
    head = max(head, 0)
    space = text.rfind(" ", max(head - 200, 0), head + 1)
    newline = text.rfind("\n", max(head - 200, 0), head + 1)
    boundary = max(space, newline)
    if boundary > 0:
        head = boundary
    kept = text[:head].rstrip()
    return f"{kept}\n{CUT_NOTE.format(omitted=len(text) - len(kept))}"


def is_empty(text: str) -> bool:
    """Nothing to answer: only whitespace (zero-width characters included)."""
    return not _strip_invisible(text).strip()


# Echo: text the persona sent somewhere coming back -----------------------------------------

_INVISIBLE = re.compile("[\u200b-\u200f\u2028-\u202f\u2060-\u206f\ufeff\u00ad]")
_QUOTE_MARKER = re.compile(r"^[ \t]*(?:[>|»][ \t]*)+", re.M)
_FORWARD_PREFIX = re.compile(r"^\s*(?:(?:fwd?|fw|re|aw|wg|tr|sv|vs)\s*:\s*)+", re.I | re.M)
_FORWARD_HEADER = re.compile(
    r"^[ \t]*(?:-{2,}\s*forwarded message\s*-{2,}|begin forwarded message:|"
    r"-{2,}\s*original message\s*-{2,})[ \t]*$",
    re.I | re.M,
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOPWORDS = frozenset(
    """about after again also and any are but can could did does for from had has have her
    his how into its just like more not now off our out over she should some than that the
    their them then there these they this those too very was were what when where which who
    why will with would you your yes""".split()
)


def _strip_invisible(text: str) -> str:
    return _INVISIBLE.sub("", text)


def normalize_for_echo(text: str) -> str:
    """Text reduced to what survives a forward, a bridge or a quote: lower-case words.

    Case, accents' composed forms, whitespace, punctuation, emoji, quote markers ("> "),
    forward/reply prefixes ("Fwd:", "Re:") and forwarded-message header lines are dropped;
    what is left is the words joined by single spaces. Idempotent.

    Every turn normalises the replies sent since its last look (the echo index) and the
    message itself: ASCII text takes a shorter way to the same words (`_ascii_words`: 22
    -> 9 µs for a 350-character reply), Unicode's word pattern being most of the cost.
    """
    if text.isascii():  # nothing invisible, NFKC and casefold change nothing but case
        return _ascii_words(_without_markers(text).lower())
    text = unicodedata.normalize("NFKC", _strip_invisible(text))
    folded = unicodedata.normalize("NFKC", _without_markers(text).casefold())
    return " ".join(_WORD.findall(folded))


def _without_markers(text: str) -> str:
    """Forwarded-message headers, quote markers and forward/reply prefixes dropped (each
    pattern tried only when the text holds a character it needs)."""
    if "--" in text or ":" in text:  # "---- Forwarded message ----", "Begin forwarded …:"
        text = _FORWARD_HEADER.sub(" ", text)
    if ">" in text or "|" in text or "»" in text:
        text = _QUOTE_MARKER.sub("", text)
    if ":" in text:  # "Fwd:", "Re:"
        text = _FORWARD_PREFIX.sub("", text)
    return text


# ASCII's characters that are not word characters (`_WORD`: letters and digits), as spaces.
_ASCII_GAPS = str.maketrans({chr(c): " " for c in range(128) if not chr(c).isalnum()})


def _ascii_words(text: str) -> str:
    """`_WORD`'s words of ASCII text, joined by single spaces."""
    return " ".join(text.translate(_ASCII_GAPS).split())


def _repeats(heard: str, said: str, min_chars: int, min_fragment_chars: int) -> bool:
    """The echo rules on normalised texts (see `echo_match`)."""
    if len(heard) < min_chars or len(said) < min_chars:
        return False
    if said == heard or f" {said} " in f" {heard} ":
        return True
    return len(heard) >= min_fragment_chars and f" {heard} " in f" {said} "


def echo_match(
    incoming: str,
    sent: Iterable[str],
    *,
    min_chars: int = 20,
    min_fragment_chars: int = 48,
) -> str | None:
    """The sent text that `incoming` repeats, if any.

    An echo is, after normalisation: the same text (at least `min_chars` long, so "ok"
    said twice is not an echo); a sent text contained whole in the incoming one (a forward
    with a "Fwd:" line or a comment around it); or a long piece (`min_fragment_chars`) of a
    sent text (a bridge that quotes part of it). Matching is on whole words.
    """
    heard = normalize_for_echo(incoming)
    if len(heard) < min_chars:
        return None
    for original in sent:
        if _repeats(heard, normalize_for_echo(original), min_chars, min_fragment_chars):
            return original
    return None


@dataclass(frozen=True)
class _Sent:
    at: float
    conversation_id: int
    words: str  # normalised
    excerpt: str  # the original's first 200 characters, for the audit


class EchoWindow:
    """What the persona sent lately, normalised and indexed by word, in this process.

    Fed with outgoing messages in id order (`add`, from memory's outgoing log: every
    process sees every entrance's replies); `match` finds a repeat among them without
    touching the database, in bounded time whatever the size of memory: an exact repeat
    (after normalisation, which also drops "Fwd:" and "> ") is one dictionary lookup; other
    repeats are looked for among at most ~2 x `max_candidates` sent texts that share the
    incoming text's rarest words (true counts, from the index), newest first. Pure: the
    caller supplies the time.
    """

    def __init__(self, window_s: float = 86400.0, *, max_candidates: int = 64) -> None:
        self.window_s = window_s
        self.max_candidates = max_candidates
        self.last_id = 0
        self._sent: dict[int, _Sent] = {}
        self._by_text: dict[str, int] = {}
        self._by_word: dict[str, deque[int]] = {}  # ids in the order added (ascending)
        self._order: deque[tuple[float, int]] = deque()

    def __len__(self) -> int:
        return len(self._sent)

    def add(self, message_id: int, at: float, conversation_id: int, text: str) -> None:
        if message_id in self._sent:
            return
        self.last_id = max(self.last_id, message_id)
        words = normalize_for_echo(text)
        self._sent[message_id] = _Sent(at, conversation_id, words, text[:200])
        self._by_text[words] = message_id
        self._order.append((at, message_id))
        for word in set(_index_words(words)):
            self._by_word.setdefault(word, deque()).append(message_id)

    def expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self._order and self._order[0][0] <= horizon:
            _, message_id = self._order.popleft()
            sent = self._sent.pop(message_id, None)
            if sent is None:
                continue
            if self._by_text.get(sent.words) == message_id:
                del self._by_text[sent.words]
            for word in set(_index_words(sent.words)):
                ids = self._by_word.get(word)
                if not ids:
                    continue
                if ids[0] == message_id:
                    ids.popleft()
                else:
                    ids.remove(message_id)
                if not ids:
                    del self._by_word[word]

    def match(
        self,
        text: str,
        *,
        now: float,
        conversation_id: int | None = None,
        min_chars: int = 20,
        min_fragment_chars: int = 48,
    ) -> str | None:
        """The excerpt of a sent text `text` repeats (other conversations only), or None."""
        found = self.find(
            normalize_for_echo(text),
            now=now,
            conversation_id=conversation_id,
            min_chars=min_chars,
            min_fragment_chars=min_fragment_chars,
        )
        return found[1] if found is not None else None

    def find(
        self,
        heard: str,
        *,
        now: float,
        conversation_id: int | None = None,
        min_chars: int = 20,
        min_fragment_chars: int = 48,
    ) -> tuple[int, str] | None:
        """`match` for a text already passed through `normalize_for_echo`, with the id of
        the sent message: (id, excerpt), or None."""
        if len(heard) < min_chars:
            return None
        horizon = now - self.window_s
        exact = self._by_text.get(heard)
        for message_id in ([exact] if exact is not None else []) + self._candidates(heard):
            sent = self._sent[message_id]
            if sent.at <= horizon or sent.conversation_id == conversation_id:
                continue
            if _repeats(heard, sent.words, min_chars, min_fragment_chars):
                return message_id, sent.excerpt
        return None

    def _candidates(self, heard: str) -> list[int]:
        """Sent ids worth comparing with `heard`, newest first, at most 2 x max_candidates.

        A text containing all of `heard` (a piece of it was quoted) is in the posting of its
        rarest word; a text contained in `heard` (a forward with a comment) is in the
        posting of one of its words: the rarest postings are taken until the bound.
        """
        words = set(_index_words(heard))
        postings = sorted((ids for w in words if (ids := self._by_word.get(w))), key=len)
        limit = self.max_candidates
        found: dict[int, None] = {}
        for ids in postings:
            for message_id in islice(reversed(ids), limit):
                found.setdefault(message_id)
            if len(found) >= limit:
                break
        return sorted(found, reverse=True)[: 2 * limit]


def _index_words(words: str) -> list[str]:
    return [w for w in words.split() if len(w) >= 3 and w not in _STOPWORDS]


# Bot loops: bare acknowledgements and near-duplicates ---------------------------------------

ACK_WORDS = frozenset(
    """ok okay okey oki k kk ack acked ackd acknowledge acknowledged understood understand
    noted note roger copy copied that got it gotcha thanks thank you thx ty tysm cheers done
    end eof over out fin bye goodbye cya later cool nice great good fine sure yes yep yeah yup
    ya right alright all perfect received will wait waiting i ll im am me we here standing by
    hold on np no problem worries sounds agreed affirmative confirmed confirm same too
    stop stopping idle ready standby""".split()
)
_ACK_MAX_WORDS = 6


def is_bare_acknowledgement(text: str) -> bool:
    """A message that says nothing but "received": "ack", ".", "[END]", "ok", "👍",
    "Understood, I'll wait". Only punctuation or emoji counts too."""
    folded = unicodedata.normalize("NFKC", _strip_invisible(text)).casefold()
    words = _WORD.findall(folded)
    if not words:
        return True
    return len(words) <= _ACK_MAX_WORDS and all(word in ACK_WORDS for word in words)


def similar(a: str, b: str, threshold: float = 0.8) -> bool:
    """Near-identical after echo normalisation: the same words, give or take one or two.

    Symmetric and reflexive; two texts with no words at all (".", "👍") are similar.
    """
    words_a = set(normalize_for_echo(a).split())
    words_b = set(normalize_for_echo(b).split())
    if not words_a or not words_b:
        return not words_a and not words_b
    return len(words_a & words_b) / len(words_a | words_b) >= threshold


def loop_reason(
    recent: Sequence[tuple[str, bool]],
    *,
    ack_run: int = 2,
    repeat_run: int = 3,
    threshold: float = 0.8,
) -> str | None:
    """Why a bot exchange should end now, or None.

    `recent` is the conversation's latest incoming messages, newest first (the current one
    included), as (text, from a bot). Ends on `ack_run` bare acknowledgements in a row from
    bots, or on `repeat_run` near-identical bot messages in a row.
    """
    if ack_run > 0 and len(recent) >= ack_run:
        run = recent[:ack_run]
        if all(bot and is_bare_acknowledgement(text) for text, bot in run):
            return "bare acknowledgements"
    if repeat_run > 1 and len(recent) >= repeat_run:
        run = recent[:repeat_run]
        if all(bot for _, bot in run) and all(
            similar(run[0][0], text, threshold) for text, _ in run[1:]
        ):
            return "repeating itself"
    return None


# Token buckets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """A token bucket's state: tokens left at `updated_at` (epoch seconds)."""

    tokens: float
    updated_at: float


def refill(bucket: Bucket | None, now: float, rate_per_s: float, burst: float) -> Bucket:
    """The bucket at `now`: a new one is full; time never runs backwards (clock skew
    between processes adds nothing); never above `burst`, never below zero."""
    if bucket is None:
        return Bucket(float(burst), now)
    elapsed = max(0.0, now - bucket.updated_at)
    tokens = min(float(burst), max(0.0, bucket.tokens) + elapsed * max(0.0, rate_per_s))
    return Bucket(tokens, max(now, bucket.updated_at))


def take_token(
    bucket: Bucket | None, now: float, rate_per_s: float, burst: float, cost: float = 1.0
) -> tuple[bool, Bucket]:
    """(allowed, new state): take `cost` tokens if there are enough, else take nothing."""
    current = refill(bucket, now, rate_per_s, burst)
    if current.tokens + 1e-9 >= cost:
        return True, Bucket(max(0.0, current.tokens - cost), current.updated_at)
    return False, current


# The bot-exchange budget ------------------------------------------------------------------


@dataclass(frozen=True)
class BotBudget:
    per_conversation: int = 8  # consecutive exchanges with bots (a human's word resets it)
    per_hour: int = 20  # exchanges with bots in the last hour (slow loops)
    streak_gap_s: float = 600.0  # this long without a bot message starts a new streak
    cooldown_s: float = 3600.0  # a stop lifts after the bots were quiet this long


@dataclass(frozen=True)
class BotStreak:
    """A conversation's exchange with bots: consecutive answers, and a stop if spent."""

    streak: int = 0
    last_at: float = 0.0
    stopped_at: float | None = None
    stop_reason: str | None = None
    stop_kind: Literal["streak", "hour"] | None = None


@dataclass(frozen=True)
class BotDecision:
    state: BotStreak
    allowed: bool
    reason: str | None = None
    newly_stopped: bool = False


def next_bot_exchange(
    state: BotStreak | None, last_hour: int, now: float, budget: BotBudget
) -> BotDecision:
    """May the persona answer one more bot message in this conversation?

    `last_hour` counts the bot exchanges it answered there in the last hour. A spent budget
    stops the conversation (sticky: further bot messages are refused quietly, so a loop
    stays stopped) until the bots are quiet for `cooldown_s`, or, for a spent streak, until
    a person speaks there (`person_spoke`).
    """
    if state is not None and state.stopped_at is not None:
        if now - state.last_at <= budget.cooldown_s:
            return BotDecision(
                replace(state, last_at=max(now, state.last_at)), False, state.stop_reason
            )
        state = None
    streak = 0
    if state is not None and now - state.last_at <= budget.streak_gap_s:
        streak = state.streak
    if streak >= budget.per_conversation:
        reason = f"{budget.per_conversation} bot exchanges in a row"
        return BotDecision(BotStreak(streak, now, now, reason, "streak"), False, reason, True)
    if last_hour >= budget.per_hour:
        reason = f"{budget.per_hour} bot exchanges within an hour"
        return BotDecision(BotStreak(streak, now, now, reason, "hour"), False, reason, True)
    return BotDecision(BotStreak(streak + 1, now), True)


def person_spoke(state: BotStreak | None) -> BotStreak | None:
    """A person wrote in the conversation: the streak starts over and a spent streak lifts.

    A stop for the hourly budget stays (a slow loop with people chatting in between would
    otherwise go on for ever); it lifts only when the bots are quiet for a while.
    """
    if state is None or state.stop_kind != "hour":
        return None
    return replace(state, streak=0)


# One-time codes -------------------------------------------------------------

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud, typed on a phone
CODE_LENGTH = 8


def new_code(length: int = CODE_LENGTH) -> str:
    """A one-time code like 'K7QM-3XWD' (about 40 bits: guessing needs ~10^12 tries)."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))
    return f"{raw[:4]}-{raw[4:]}" if length == 8 else raw


def normalize_code(text: str) -> str:
    """'k7qm 3xwd', 'K7QM-3XWD' -> 'K7QM-3XWD' (the stored form)."""
    raw = "".join(ch for ch in text.upper() if ch.isalnum())
    return f"{raw[:4]}-{raw[4:]}" if len(raw) == 8 else raw


def utc_day(now: float) -> int:
    """Days since the epoch, UTC: the key of the daily model budget."""
    return int(now // 86400)
