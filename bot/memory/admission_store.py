"""Admission in memory.db: whether a message otherwise let in may be answered now.

Token buckets (rate limits), bot-exchange streaks and budgets, once-only notices, the
outgoing log the echo index is fed from, daily model usage, and the record of a refused
message. Only SQL and the bookkeeping that must be atomic lives here; the rules themselves
(bucket arithmetic, the bot budget) are the pure functions of `bot.guard`, called inside
the transaction so two processes can never both take the last token. Who a speaker is
(accounts, grants, links) is `bot.memory.identity_store`'s; the one exception here is the
coordinator closing the door (a pairing request denied, an access grant revoked): it is
marked per account in `guard_notices` ('access-denied:ID', 'access-revoked:ID'), which the
guard reads for unknown accounts and pruning keeps.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from bot.guard import BotDecision, BotStreak, next_bot_exchange, person_spoke
from bot.memory.conversation_store import ask_sent_in, sent_messages
from bot.memory.coordinator_store import enqueue_outgoing_in
from bot.memory.database import Database, audit_in
from bot.memory.identity_store import GRANTED_SQL, Refusal, _code_problem
from bot.memory.outbox_store import enqueue_in
from bot.memory.rate_buckets import give_back_in, read_buckets_in, take_tokens_in, warn_once_in
from bot.memory.records import (
    Account,
    Admission,
    AdmitRequest,
    BucketSpec,
    CodeError,
    FactsRequest,
    GuardFacts,
    Outgoing,
    SentMessage,
    SentSince,
)

RECENT_INCOMING_SQL = """
    SELECT m.text, COALESCE(i.is_bot, 0) AS is_bot FROM messages m
    LEFT JOIN identities i ON i.id = m.identity_id
    WHERE m.conversation_id = :conversation AND m.direction = 'in' AND m.id <= :message
    ORDER BY m.id DESC LIMIT :limit
"""
# What a person wrote before a given message (newest first): their own words, which the
# persona may have quoted back ("you told me …"). Echoes are not their words.
SAID_BEFORE_SQL = """
    SELECT text FROM messages
    WHERE person_id = :person AND id < :before AND direction = 'in' AND status <> 'echo'
      AND created_at > :since
    ORDER BY id DESC LIMIT :limit
"""
# Doors the coordinator closed: kept by pruning (a denial or a revocation stands until the
# account is let in explicitly: a grant, `mirror people allow`, or [access.ENTRANCE] allow).
CLOSED_PREFIXES = ("access-denied:", "access-revoked:")
BOT_HOUR_SQL = (
    "SELECT count(*) FROM bot_exchanges WHERE conversation_id = :conversation AND at > :since"
)


def _bot_streak(conn: sqlite3.Connection, conversation_id: int) -> BotStreak | None:
    row = conn.execute(
        "SELECT streak, last_at, stopped_at, stop_reason, stop_kind FROM bot_streaks"
        " WHERE conversation_id = ?",
        (conversation_id,),
    ).fetchone()
    if row is None:
        return None
    return BotStreak(
        row["streak"], row["last_at"], row["stopped_at"], row["stop_reason"], row["stop_kind"]
    )


def _save_bot_streak(conn: sqlite3.Connection, conversation_id: int, state: BotStreak) -> None:
    conn.execute(
        "INSERT INTO bot_streaks (conversation_id, streak, last_at, stopped_at, stop_reason,"
        " stop_kind) VALUES (:conversation, :streak, :last_at, :stopped_at, :reason, :kind)"
        " ON CONFLICT (conversation_id) DO UPDATE SET streak = excluded.streak,"
        " last_at = excluded.last_at, stopped_at = excluded.stopped_at,"
        " stop_reason = excluded.stop_reason, stop_kind = excluded.stop_kind",
        {
            "conversation": conversation_id,
            "streak": state.streak,
            "last_at": state.last_at,
            "stopped_at": state.stopped_at,
            "reason": state.stop_reason,
            "kind": state.stop_kind,
        },
    )


def admit_in(conn: sqlite3.Connection, now: float, request: AdmitRequest) -> Admission:
    # The buckets' read is issued first, consumed last (`take_tokens_in`): it depends on
    # nothing read or written before it here, so on PostgreSQL it travels with the streak's
    # read, one round trip fewer a turn (bot/memory/pg_engine.py, `PgConnection`).
    buckets = read_buckets_in(conn, request.buckets)
    if request.human_conversation is not None:
        state = _bot_streak(conn, request.human_conversation)
        if state is not None:
            after = person_spoke(state)
            if after is None:
                conn.execute(
                    "DELETE FROM bot_streaks WHERE conversation_id = ?",
                    (request.human_conversation,),
                )
            elif after != state:
                _save_bot_streak(conn, request.human_conversation, after)
    decision: BotDecision | None = None
    if request.bot_conversation is not None:
        hour = conn.execute(
            BOT_HOUR_SQL, {"conversation": request.bot_conversation, "since": now - 3600}
        )
        streak = _bot_streak(conn, request.bot_conversation)  # with the hour's read
        decision = next_bot_exchange(streak, hour.fetchone()[0], now, request.bot_budget)
        if not decision.allowed:
            _save_bot_streak(conn, request.bot_conversation, decision.state)
            return Admission(False, bot=decision)
    # An empty bucket is left unmarked: the refusal claims its warning (`refuse_message`).
    limited_by, _ = take_tokens_in(conn, now, request.buckets, buckets, mark_empty=False)
    if limited_by is not None:
        return Admission(False, limited_by, bot=decision)
    if request.bot_conversation is not None and decision is not None:
        _save_bot_streak(conn, request.bot_conversation, decision.state)
        conn.execute(
            "INSERT INTO bot_exchanges (conversation_id, at) VALUES (?, ?)",
            (request.bot_conversation, now),
        )
    return Admission(True, bot=decision)


def _claim_notice_in(conn: sqlite3.Connection, now: float, key: str) -> bool:
    cursor = conn.execute(
        "INSERT INTO guard_notices (key, at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        (key, now),
    )
    return bool(cursor.rowcount)


def _enqueue(conn: sqlite3.Connection, now: float, outgoing: list[Outgoing]) -> None:
    for message in outgoing:
        enqueue_outgoing_in(conn, now, message)


class AdmissionStore(Database):
    # One check ------------------------------------------------------------------------

    async def guard_facts(self, request: FactsRequest) -> GuardFacts:
        """Everything a check reads, in one snapshot (one await)."""

        def run(conn: sqlite3.Connection) -> GuardFacts:
            # Execute all, then fetch: the reads are independent, so all are issued before
            # any is consumed (on PostgreSQL: one message, `PgConnection`).
            sent_rows = (
                ask_sent_in(conn, SentSince(request.sent_after, request.sent_since))
                if request.sent_after is not None
                else None
            )
            recent_rows = (
                conn.execute(
                    RECENT_INCOMING_SQL,
                    {
                        "conversation": request.conversation_id,
                        "message": request.message_id,
                        "limit": request.recent_incoming,
                    },
                )
                if request.recent_incoming
                else []
            )
            grant_row = (
                conn.execute(GRANTED_SQL, {"person": request.person_id})
                if request.want_grant
                else None
            )
            usage_row = (
                conn.execute(
                    "SELECT prompt_tokens + completion_tokens AS tokens, cost_usd"
                    " FROM usage_daily WHERE day = ?",
                    (request.usage_day,),
                )
                if request.usage_day is not None
                else None
            )
            sent = sent_messages(sent_rows) if sent_rows is not None else []
            recent = [(row["text"], bool(row["is_bot"])) for row in recent_rows]
            granted = bool(grant_row is not None and grant_row.fetchone())
            tokens, cost = 0, 0.0
            row = usage_row.fetchone() if usage_row is not None else None
            if row is not None:
                tokens, cost = row["tokens"], row["cost_usd"]
            return GuardFacts(sent, recent, granted, tokens, cost)

        return await self.read(run)

    async def sent_since(self, after: int, since: float) -> list[SentMessage]:
        """Outgoing messages with an id above `after`, sent after `since`, oldest first."""

        return await self.read(
            lambda conn: sent_messages(ask_sent_in(conn, SentSince(after, since)))
        )

    async def said_before(
        self, person_id: int, before: int, since: float, *, limit: int = 200
    ) -> list[str]:
        """Texts `person_id` sent the persona before message id `before` (echoes excepted),
        none older than `since`, newest first, at most `limit`."""

        def run(conn: sqlite3.Connection) -> list[str]:
            return [
                row[0]
                for row in conn.execute(
                    SAID_BEFORE_SQL,
                    {"person": person_id, "before": before, "since": since, "limit": limit},
                )
            ]

        return await self.read(run)

    async def admit(self, request: AdmitRequest) -> Admission:
        """Bot budget and token buckets, in one BEGIN IMMEDIATE transaction."""
        return await self.write(admit_in, self.now, request)

    async def give_back_tokens(self, buckets: Iterable[BucketSpec]) -> None:
        """A token back to each bucket (up to its burst): taken with a message's recording
        (`Admission.taken`), which the guard then refused before its admission."""
        await self.write(give_back_in, list(buckets))

    async def take_tokens(self, buckets: list[BucketSpec]) -> tuple[str | None, bool]:
        """Take a token from each bucket, or none: (the empty bucket's key, first warning)."""
        return await self.write(take_tokens_in, self.now, buckets)

    async def refuse_message(
        self,
        message_id: int,
        *,
        status: str,
        reason: str,
        actor: str,
        detail: dict[str, object] | None = None,
        notice_key: str | None = None,
        outgoing: list[Outgoing] | None = None,
        warn_bucket: str | None = None,
    ) -> bool:
        """Mark a message refused/echo and audit why; claim a once-only notice (True when
        this call claimed it) and queue `outgoing` only then.

        `warn_bucket`: the rate-limit bucket found empty; the notice is then its limiting
        episode's first warning (`warn_once_in`)."""

        def run(conn: sqlite3.Connection) -> bool:
            now = self.now
            conn.execute(
                "UPDATE messages SET status = ? WHERE id = ?",
                (status, message_id),
            )
            audit_in(
                conn,
                now,
                actor,
                f"guard.{status}",
                str(message_id),
                {"reason": reason, **(detail or {})},
            )
            if warn_bucket is not None:
                return warn_once_in(conn, warn_bucket)
            if notice_key is None or not _claim_notice_in(conn, now, notice_key):
                return False
            _enqueue(conn, now, outgoing or [])
            return True

        return await self.write(run)

    async def claim_notice(
        self,
        key: str,
        *,
        outgoing: list[Outgoing] | None = None,
        audit: tuple[str, str, dict[str, object]] | None = None,
    ) -> bool:
        """Claim a once-only notice across processes; queue and audit only when claimed."""

        def run(conn: sqlite3.Connection) -> bool:
            now = self.now
            if not _claim_notice_in(conn, now, key):
                return False
            _enqueue(conn, now, outgoing or [])
            if audit is not None:
                actor, action, detail = audit
                audit_in(conn, now, actor, action, key, detail)
            return True

        return await self.write(run)

    async def prune_guard(self, *, keep_s: float = 7 * 86400) -> int:
        """Drop guard rows nobody needs any more; returns how many went."""

        def run(conn: sqlite3.Connection) -> int:
            now = self.now
            statements = [
                ("DELETE FROM bot_exchanges WHERE at < ?", now - 86400),
                ("DELETE FROM outgoing_log WHERE at < ?", now - 2 * 86400),
                (
                    "DELETE FROM guard_notices WHERE at < ? AND key NOT LIKE 'access-denied:%'"
                    " AND key NOT LIKE 'access-revoked:%'",
                    now - keep_s,
                ),
                ("DELETE FROM rate_buckets WHERE updated_at < ?", now - 86400),
                ("DELETE FROM guard_codes WHERE expires_at < ?", now - keep_s),
                ("DELETE FROM bot_streaks WHERE last_at < ?", now - keep_s),
            ]
            return sum(conn.execute(sql, (limit,)).rowcount for sql, limit in statements)

        return await self.write(run)

    # Closing the door (pairing) ----------------------------------------------------------

    async def access_closed(self, identity_id: int) -> tuple[str, float] | None:
        """('denied' | 'revoked', when) if the coordinator closed the door on this account."""

        def run(conn: sqlite3.Connection) -> tuple[str, float] | None:
            row = conn.execute(
                "SELECT key, at FROM guard_notices WHERE key IN (?, ?) ORDER BY at DESC LIMIT 1",
                tuple(f"{prefix}{identity_id}" for prefix in CLOSED_PREFIXES),
            ).fetchone()
            if row is None:
                return None
            return row["key"].removeprefix("access-").split(":", 1)[0], row["at"]

        return await self.read(run)

    async def refuse_pairing_code(
        self, code: str, actor: str, *, notice: str | None = None
    ) -> Account:
        """Refuse the account that got pairing `code`: the code is used up, the door closed
        on the account, the denial audited, and `notice` queued to the conversation where the
        code was given. Raises CodeError (audited) when the code is unusable."""

        def run(conn: sqlite3.Connection) -> Account | Refusal:
            now = self.now
            row = conn.execute(
                "SELECT * FROM guard_codes WHERE code = ? AND kind = 'pair'", (code,)
            ).fetchone()
            problem = _code_problem(row, now)
            if problem is not None:
                audit_in(conn, now, actor, "access.pair_refused", code, {"reason": problem})
                return Refusal(problem)
            conn.execute(
                "UPDATE guard_codes SET used_at = ?, used_by = ? WHERE code = ?",
                (now, actor, code),
            )
            _close_in(conn, now, "access-denied:", [row["identity_id"]])
            found = conn.execute(
                "SELECT id, person_id, entrance, external_id, display_name FROM identities"
                " WHERE id = ?",
                (row["identity_id"],),
            ).fetchone()
            account = Account(
                found["id"],
                found["person_id"],
                found["entrance"],
                found["external_id"],
                found["display_name"],
            )
            audit_in(conn, now, actor, "access.pair_denied", _key(account), {"code": code})
            if notice and row["conversation"]:
                enqueue_in(
                    conn,
                    now,
                    entrance=account.entrance,
                    target=row["conversation"],
                    text=notice,
                    payload={"kind": "pair_denied"},
                    dedupe_key=f"pair-denied:{code}",
                )
            return account

        result = await self.write(run)
        if isinstance(result, Refusal):
            raise CodeError(result.reason)
        return result

    async def revoke_access(
        self, entrance: str, external_id: str, actor: str
    ) -> tuple[list[str], bool]:
        """Take back access from the person with this account: every grant of their linked
        accounts goes (access follows links), their pending pairing codes are used up, and
        the door is closed on each of their accounts. Returns (their accounts, whether any
        had been let in). Raises CodeError when the account is unknown."""

        def run(conn: sqlite3.Connection) -> tuple[list[str], bool] | Refusal:
            now = self.now
            found = conn.execute(
                "SELECT person_id FROM identities WHERE entrance = ? AND external_id = ?",
                (entrance, external_id),
            ).fetchone()
            if found is None:
                return Refusal(f"I know no account {entrance}:{external_id}")
            accounts = conn.execute(
                "SELECT id, entrance, external_id FROM identities WHERE person_id = ? ORDER BY id",
                (found["person_id"],),
            ).fetchall()
            ids = [row["id"] for row in accounts]
            marks = ",".join("?" * len(ids))
            had = conn.execute(
                f"DELETE FROM access_grants WHERE identity_id IN ({marks})", ids
            ).rowcount
            conn.execute(
                "UPDATE guard_codes SET used_at = ?, used_by = ? WHERE kind = 'pair'"
                f" AND used_at IS NULL AND identity_id IN ({marks})",
                [now, actor, *ids],
            )
            _close_in(conn, now, "access-revoked:", ids)
            names = [f"{row['entrance']}:{row['external_id']}" for row in accounts]
            audit_in(
                conn,
                now,
                actor,
                "access.revoked",
                f"{entrance}:{external_id}",
                {"accounts": names, "had_access": bool(had)},
            )
            return names, bool(had)

        result = await self.write(run)
        if isinstance(result, Refusal):
            raise CodeError(result.reason)
        return result


def _close_in(conn: sqlite3.Connection, now: float, prefix: str, identity_ids: list[int]) -> None:
    conn.executemany(
        "INSERT INTO guard_notices (key, at) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET at = excluded.at",
        [(f"{prefix}{identity}", now) for identity in identity_ids],
    )


def _key(account: Account) -> str:
    return f"{account.entrance}:{account.external_id}"
