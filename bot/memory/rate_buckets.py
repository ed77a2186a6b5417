"""Token buckets in memory.db (the guard's rate limits): read, take, give back, warn once.

The bucket arithmetic is `bot.guard.take_token`'s, called inside the caller's write
transaction, so two processes can never both take the last token. A turn takes its tokens
either in the guard's admission (`bot.memory.admission_store.admit_in`) or, when the guard
asked for it, in the transaction that records the message (`EarlyTake`, from
`bot.memory.conversation_store.insert_incoming_in`): one write transaction a turn fewer.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from bot.guard import Bucket, take_token
from bot.memory.records import PERSON_KEY, Admission, BucketSpec

_PERSON_PREFIX = PERSON_KEY.removesuffix("{person}")
_UPSERT = (
    "INSERT INTO rate_buckets (key, tokens, updated_at, warned) VALUES (?, ?, ?, {warned})"
    " ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens,"
    " updated_at = excluded.updated_at, warned = {warned}"
)


def _person_bucket(spec: BucketSpec, person_id: int) -> BucketSpec:
    """`spec` with the speaker's person id in its key, if it names the speaker's bucket."""
    if spec.key != PERSON_KEY:
        return spec
    return BucketSpec(PERSON_KEY.format(person=person_id), spec.rate_per_s, spec.burst)


def read_buckets_in(conn: sqlite3.Connection, buckets: list[BucketSpec]) -> sqlite3.Cursor:
    """Every bucket in one read (a turn takes from two: the person's and the entrance's)."""
    return conn.execute(
        "SELECT key, tokens, updated_at, warned FROM rate_buckets"
        " WHERE key IN (SELECT value FROM json_each(:keys))",
        {"keys": json.dumps([spec.key for spec in buckets])},
    )


def take_tokens_in(
    conn: sqlite3.Connection,
    now: float,
    buckets: list[BucketSpec],
    issued: Iterable[sqlite3.Row] | None = None,
    *,
    mark_empty: bool = True,
) -> tuple[str | None, bool]:
    """Take one token from every bucket, or from none: (empty bucket key, first warning).

    `issued`: the buckets' rows from a read (`read_buckets_in`) issued earlier in this
    transaction and not consumed yet (on PostgreSQL it then travels with the statement
    before it).
    `mark_empty` False: an empty bucket is left as it is (its first warning is then the
    refusal's to claim, `warn_once_in`, and the result's second value is False)."""
    states: list[tuple[BucketSpec, bool, Bucket, bool]] = []
    rows = {
        row["key"]: row
        for row in (issued if issued is not None else read_buckets_in(conn, buckets))
    }
    for spec in buckets:
        row = rows.get(spec.key)
        current = Bucket(row["tokens"], row["updated_at"]) if row else None
        allowed, state = take_token(current, now, spec.rate_per_s, spec.burst)
        states.append((spec, allowed, state, bool(row["warned"]) if row else False))
    empty = next((item for item in states if not item[1]), None)
    if empty is None:
        conn.executemany(
            _UPSERT.format(warned=0),
            [(spec.key, state.tokens, state.updated_at) for spec, _, state, _ in states],
        )
        return None, False
    spec, _, state, warned = empty
    if not mark_empty:
        return spec.key, False
    conn.execute(_UPSERT.format(warned=1), (spec.key, state.tokens, state.updated_at))
    return spec.key, not warned


def give_back_in(conn: sqlite3.Connection, buckets: Iterable[BucketSpec]) -> None:
    """Return the token each bucket gave (up to its burst): a message that took them when it
    was recorded was then refused before its admission (an echo, say)."""
    conn.executemany(
        "UPDATE rate_buckets SET tokens = CASE WHEN tokens + 1 > :burst THEN :burst"
        " ELSE tokens + 1 END WHERE key = :key",
        [{"key": spec.key, "burst": spec.burst} for spec in buckets],
    )


def warn_once_in(conn: sqlite3.Connection, key: str) -> bool:
    """Mark a bucket's limiting episode warned: True for the first refusal of the episode
    (the next token taken from it ends the episode)."""
    return bool(
        conn.execute(
            "UPDATE rate_buckets SET warned = 1 WHERE key = ? AND warned = 0", (key,)
        ).rowcount
    )


class EarlyTake:
    """A message's admission, taken in the transaction that records it (`take_tokens` of
    `insert_incoming_in`). Its reads are issued with the recording's first reads, which
    they do not depend on (on PostgreSQL: in the same message)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        buckets: list[BucketSpec],
        entrance: str,
        author: str,
        conversation: str,
        platform_id: str | None,
    ) -> None:
        self.buckets = buckets
        # The speaker's bucket is named by their person id, which this transaction has not
        # read yet: its read finds it through the identity.
        named = [spec for spec in buckets if spec.key != PERSON_KEY]
        self.read = read_buckets_in(conn, named) if named else None
        self.person_read = (
            conn.execute(
                "SELECT b.key, b.tokens, b.updated_at, b.warned FROM identities i"
                " JOIN rate_buckets b ON b.key = :prefix || i.person_id"
                " WHERE i.entrance = :entrance AND i.external_id = :author",
                {"prefix": _PERSON_PREFIX, "entrance": entrance, "author": author},
            )
            if any(spec.key == PERSON_KEY for spec in buckets)
            else None
        )
        # A person's word starts a bot streak over: that is the guard's admission to decide.
        self.streak = conn.execute(
            "SELECT 1 FROM bot_streaks WHERE conversation_id = (SELECT id FROM conversations"
            " WHERE entrance = ? AND external_id = ?)",
            (entrance, conversation),
        )
        # Recorded before (a platform's redelivery, a turn run again after a crash): the
        # guard's admission decides, as it does for any message it checks again.
        self.known = (
            conn.execute(
                "SELECT 1 FROM messages WHERE entrance = ? AND platform_message_id = ?",
                (entrance, platform_id),
            )
            if platform_id is not None
            else None
        )

    def take(self, conn: sqlite3.Connection, now: float, person_id: int) -> Admission | None:
        """Take the tokens (None: not here, the guard's admission will: a bot streak in the
        conversation, or a message recorded before). An empty bucket is left unmarked: the
        refusal claims its warning (`warn_once_in`)."""
        if self.streak.fetchone() is not None:
            return None
        if self.known is not None and self.known.fetchone() is not None:
            return None
        buckets = [_person_bucket(spec, person_id) for spec in self.buckets]
        rows = [*(self.read or ()), *(self.person_read or ())]
        limited_by, _ = take_tokens_in(conn, now, buckets, rows, mark_empty=False)
        return Admission(limited_by is None, limited_by, taken=() if limited_by else tuple(buckets))
