"""The guard's tables in memory.db: access grants, one-time codes, identity links, token
buckets, bot-exchange budgets, once-only notices, the outgoing log the echo index is fed
from, and daily model usage.

Only SQL and the bookkeeping that must be atomic lives here; the rules themselves (bucket
arithmetic, the bot budget) are the pure functions of `bot.guard`, called inside the
transaction so two processes can never both take the last token.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.guard import (
    BotBudget,
    BotDecision,
    BotStreak,
    Bucket,
    next_bot_exchange,
    person_spoke,
    take_token,
)
from bot.memory.conversation_store import identity_in
from bot.memory.coordinator_store import Outgoing, enqueue_outgoing_in
from bot.memory.database import Database, audit_in
from bot.memory.outbox_store import enqueue_in
from bot.models import Person

# The persona's outgoing messages committed since a process last looked (every entrance's,
# in id order): an indexed range over outgoing_log, which a trigger fills and pruning keeps
# to about two days. Each process keeps its own word index of them (bot.guard.EchoWindow).
SENT_SINCE_SQL = """
    SELECT l.message_id, l.at, m.conversation_id, m.text FROM outgoing_log l
    JOIN messages m ON m.id = l.message_id
    WHERE l.message_id > :after AND l.at > :since
    ORDER BY l.message_id
"""
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
GRANTED_SQL = """
    SELECT 1 FROM identities i JOIN access_grants g ON g.identity_id = i.id
    WHERE i.person_id = :person LIMIT 1
"""
BOT_HOUR_SQL = (
    "SELECT count(*) FROM bot_exchanges WHERE conversation_id = :conversation AND at > :since"
)


class CodeError(Exception):
    """A one-time code that cannot be used: unknown, expired, used, or the wrong account."""


@dataclass(frozen=True)
class FactsRequest:
    """What one check needs to read; each part is skipped when not asked for."""

    message_id: int
    conversation_id: int
    person_id: int
    sent_after: int | None = None  # outgoing messages with a larger id (None: skip)
    sent_since: float = 0.0
    recent_incoming: int = 0
    want_grant: bool = False
    usage_day: int | None = None


@dataclass(frozen=True)
class SentMessage:
    id: int
    at: float
    conversation_id: int
    text: str


@dataclass(frozen=True)
class GuardFacts:
    sent: list[SentMessage] = field(default_factory=list)  # oldest first
    recent_incoming: list[tuple[str, bool]] = field(default_factory=list)  # newest first
    granted: bool = False
    usage_tokens: int = 0
    usage_cost_usd: float = 0.0


@dataclass(frozen=True)
class BucketSpec:
    key: str
    rate_per_s: float
    burst: float


@dataclass(frozen=True)
class AdmitRequest:
    """Everything that must be decided atomically for a message otherwise let in."""

    buckets: list[BucketSpec] = field(default_factory=list)
    bot_conversation: int | None = None  # a bot wrote: apply the bot budget here
    bot_budget: BotBudget = field(default_factory=BotBudget)
    human_conversation: int | None = None  # a person wrote: the bot streak starts over


@dataclass(frozen=True)
class Admission:
    allowed: bool
    limited_by: str | None = None  # the bucket key that was empty
    first_warning: bool = False  # the first refusal of this limiting episode
    bot: BotDecision | None = None


@dataclass(frozen=True)
class Account:
    identity_id: int
    person_id: int
    entrance: str
    external_id: str
    display_name: str | None


@dataclass(frozen=True)
class PendingPairing:
    code: str
    account: str
    display_name: str | None
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class LinkResult:
    kept_person: int
    merged_person: int | None  # None: the accounts already were one person
    accounts: list[str]


def take_tokens_in(
    conn: sqlite3.Connection, now: float, buckets: list[BucketSpec]
) -> tuple[str | None, bool]:
    """Take one token from every bucket, or from none: (empty bucket key, first warning)."""
    states: list[tuple[BucketSpec, bool, Bucket, bool]] = []
    for spec in buckets:
        row = conn.execute(
            "SELECT tokens, updated_at, warned FROM rate_buckets WHERE key = ?", (spec.key,)
        ).fetchone()
        current = Bucket(row["tokens"], row["updated_at"]) if row else None
        allowed, state = take_token(current, now, spec.rate_per_s, spec.burst)
        states.append((spec, allowed, state, bool(row["warned"]) if row else False))
    empty = next((item for item in states if not item[1]), None)
    if empty is None:
        conn.executemany(
            "INSERT INTO rate_buckets (key, tokens, updated_at, warned) VALUES (?, ?, ?, 0)"
            " ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens,"
            " updated_at = excluded.updated_at, warned = 0",
            [(spec.key, state.tokens, state.updated_at) for spec, _, state, _ in states],
        )
        return None, False
    spec, _, state, warned = empty
    conn.execute(
        "INSERT INTO rate_buckets (key, tokens, updated_at, warned) VALUES (?, ?, ?, 1)"
        " ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens,"
        " updated_at = excluded.updated_at, warned = 1",
        (spec.key, state.tokens, state.updated_at),
    )
    return spec.key, not warned


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
        last_hour = conn.execute(
            BOT_HOUR_SQL, {"conversation": request.bot_conversation, "since": now - 3600}
        ).fetchone()[0]
        decision = next_bot_exchange(
            _bot_streak(conn, request.bot_conversation), last_hour, now, request.bot_budget
        )
        if not decision.allowed:
            _save_bot_streak(conn, request.bot_conversation, decision.state)
            return Admission(False, bot=decision)
    limited_by, first = take_tokens_in(conn, now, request.buckets)
    if limited_by is not None:
        return Admission(False, limited_by, first, bot=decision)
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


def _account(row: sqlite3.Row) -> Account:
    return Account(
        row["id"], row["person_id"], row["entrance"], row["external_id"], row["display_name"]
    )


def _find_account(conn: sqlite3.Connection, entrance: str, external_id: str) -> Account | None:
    row = conn.execute(
        "SELECT id, person_id, entrance, external_id, display_name FROM identities"
        " WHERE entrance = ? AND external_id = ?",
        (entrance, external_id),
    ).fetchone()
    return _account(row) if row else None


def _account_by_id(conn: sqlite3.Connection, identity_id: int) -> Account:
    row = conn.execute(
        "SELECT id, person_id, entrance, external_id, display_name FROM identities WHERE id = ?",
        (identity_id,),
    ).fetchone()
    return _account(row)


def _accounts_of(conn: sqlite3.Connection, person_id: int) -> list[str]:
    return [
        f"{row['entrance']}:{row['external_id']}"
        for row in conn.execute(
            "SELECT entrance, external_id FROM identities WHERE person_id = ? ORDER BY id",
            (person_id,),
        )
    ]


def merge_people_in(
    conn: sqlite3.Connection, now: float, a: int, b: int, actor: str, how: str
) -> LinkResult:
    """Make two people one: everything of the newer person moves to the older one."""
    if a == b:
        return LinkResult(a, None, _accounts_of(conn, a))
    keep, gone = min(a, b), max(a, b)  # ids grow with time: the smaller is the older
    params = {"keep": keep, "gone": gone}
    for table in ("identities", "messages", "notes", "intentions", "conversations"):
        conn.execute(f"UPDATE {table} SET person_id = :keep WHERE person_id = :gone", params)
    conn.execute("UPDATE people SET merged_into = :keep WHERE id = :gone", params)
    conn.execute("UPDATE people SET merged_into = :keep WHERE merged_into = :gone", params)
    accounts = _accounts_of(conn, keep)
    audit_in(
        conn,
        now,
        actor,
        "identity.linked",
        str(keep),
        {"kept_person": keep, "merged_person": gone, "accounts": accounts, "how": how},
    )
    return LinkResult(keep, gone, accounts)


class GuardStore(Database):
    # One check ------------------------------------------------------------------------

    async def guard_facts(self, request: FactsRequest) -> GuardFacts:
        """Everything a check reads, in one snapshot (one await)."""

        def run(conn: sqlite3.Connection) -> GuardFacts:
            sent: list[SentMessage] = []
            if request.sent_after is not None:
                sent = [
                    SentMessage(row[0], row[1], row[2], row[3])
                    for row in conn.execute(
                        SENT_SINCE_SQL,
                        {"after": request.sent_after, "since": request.sent_since},
                    )
                ]
            recent: list[tuple[str, bool]] = []
            if request.recent_incoming:
                recent = [
                    (row["text"], bool(row["is_bot"]))
                    for row in conn.execute(
                        RECENT_INCOMING_SQL,
                        {
                            "conversation": request.conversation_id,
                            "message": request.message_id,
                            "limit": request.recent_incoming,
                        },
                    )
                ]
            granted = bool(
                request.want_grant
                and conn.execute(GRANTED_SQL, {"person": request.person_id}).fetchone()
            )
            tokens, cost = 0, 0.0
            if request.usage_day is not None:
                row = conn.execute(
                    "SELECT prompt_tokens + completion_tokens AS tokens, cost_usd"
                    " FROM usage_daily WHERE day = ?",
                    (request.usage_day,),
                ).fetchone()
                if row is not None:
                    tokens, cost = row["tokens"], row["cost_usd"]
            return GuardFacts(sent, recent, granted, tokens, cost)

        return await self.read(run)

    async def sent_since(self, after: int, since: float) -> list[SentMessage]:
        """Outgoing messages with an id above `after`, sent after `since`, oldest first."""

        def run(conn: sqlite3.Connection) -> list[SentMessage]:
            return [
                SentMessage(row[0], row[1], row[2], row[3])
                for row in conn.execute(SENT_SINCE_SQL, {"after": after, "since": since})
            ]

        return await self.read(run)

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
    ) -> bool:
        """Mark a message refused/echo and audit why; claim a once-only notice (True when
        this call claimed it) and queue `outgoing` only then."""

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
                ("DELETE FROM guard_notices WHERE at < ?", now - keep_s),
                ("DELETE FROM rate_buckets WHERE updated_at < ?", now - 86400),
                ("DELETE FROM guard_codes WHERE expires_at < ?", now - keep_s),
                ("DELETE FROM bot_streaks WHERE last_at < ?", now - keep_s),
            ]
            return sum(conn.execute(sql, (limit,)).rowcount for sql, limit in statements)

        return await self.write(run)

    # Accounts, grants and codes ---------------------------------------------------------

    async def account(
        self,
        entrance: str,
        external_id: str,
        *,
        display_name: str | None = None,
        is_bot: bool = False,
        create: bool = True,
    ) -> Account | None:
        """An account's identity and person (created on first sight when `create`)."""

        def run(conn: sqlite3.Connection) -> Account | None:
            if create:
                identity_in(conn, self.now, entrance, external_id, display_name, is_bot)
            return _find_account(conn, entrance, external_id)

        if not create:
            return await self.read(run)
        return await self.write(run)

    async def person_granted(self, person_id: int) -> bool:
        row = await self.read(
            lambda conn: conn.execute(GRANTED_SQL, {"person": person_id}).fetchone()
        )
        return row is not None

    async def mint_code(
        self,
        kind: str,
        identity_id: int,
        *,
        make_code: Callable[[], str],
        ttl_s: float,
        per_day: int | None = None,
        conversation: str | None = None,
    ) -> tuple[str | None, bool]:
        """A one-time code for an account: (code, newly made).

        An unexpired unused code of the kind is returned again instead of a new one; with
        `per_day`, an account that made that many in 24 hours gets (None, False).
        """

        def run(conn: sqlite3.Connection) -> tuple[str | None, bool]:
            now = self.now
            active = conn.execute(
                "SELECT code FROM guard_codes WHERE identity_id = ? AND kind = ?"
                " AND used_at IS NULL AND expires_at > ? ORDER BY created_at DESC LIMIT 1",
                (identity_id, kind, now),
            ).fetchone()
            if active is not None:
                return active["code"], False
            if per_day is not None:
                made = conn.execute(
                    "SELECT count(*) FROM guard_codes WHERE identity_id = ? AND kind = ?"
                    " AND created_at > ?",
                    (identity_id, kind, now - 86400),
                ).fetchone()[0]
                if made >= per_day:
                    return None, False
            for _ in range(5):
                code = make_code()
                cursor = conn.execute(
                    "INSERT INTO guard_codes (code, kind, identity_id, conversation, created_at,"
                    " expires_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (code) DO NOTHING",
                    (code, kind, identity_id, conversation, now, now + ttl_s),
                )
                if cursor.rowcount:
                    return code, True
            raise CodeError("could not make a unique code")

        return await self.write(run)

    async def pending_pairings(self) -> list[PendingPairing]:
        def run(conn: sqlite3.Connection) -> list[PendingPairing]:
            return [
                PendingPairing(
                    row["code"],
                    f"{row['entrance']}:{row['external_id']}",
                    row["display_name"],
                    row["created_at"],
                    row["expires_at"],
                )
                for row in conn.execute(
                    "SELECT g.code, g.created_at, g.expires_at, i.entrance, i.external_id,"
                    " i.display_name FROM guard_codes g JOIN identities i ON i.id = g.identity_id"
                    " WHERE g.kind = 'pair' AND g.used_at IS NULL AND g.expires_at > ?"
                    " ORDER BY g.created_at",
                    (self.now,),
                )
            ]

        return await self.read(run)

    async def approve_pairing_code(
        self, code: str, actor: str, *, welcome: str | None = None
    ) -> Account:
        """Let the account that got `code` in: mark the code used, grant, audit, and queue
        `welcome` to its conversation. Raises CodeError (audited) when the code is unusable."""

        def run(conn: sqlite3.Connection) -> Account | str:
            now = self.now
            row = conn.execute(
                "SELECT * FROM guard_codes WHERE code = ? AND kind = 'pair'", (code,)
            ).fetchone()
            problem = _code_problem(row, now)
            if problem is not None:
                audit_in(conn, now, actor, "access.pair_refused", code, {"reason": problem})
                return problem
            conn.execute(
                "UPDATE guard_codes SET used_at = ?, used_by = ? WHERE code = ?",
                (now, actor, code),
            )
            conn.execute(
                "INSERT INTO access_grants (identity_id, granted_by, granted_at, code)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (identity_id) DO NOTHING",
                (row["identity_id"], actor, now, code),
            )
            account = _account_by_id(conn, row["identity_id"])
            audit_in(
                conn,
                now,
                actor,
                "access.paired",
                f"{account.entrance}:{account.external_id}",
                {"code": code},
            )
            if welcome and row["conversation"]:
                enqueue_in(
                    conn,
                    now,
                    entrance=account.entrance,
                    target=row["conversation"],
                    text=welcome,
                    payload={"kind": "paired"},
                    dedupe_key=f"paired:{code}",
                )
            return account

        result = await self.write(run)
        if isinstance(result, str):
            raise CodeError(result)
        return result

    async def grant_access(self, entrance: str, external_id: str, actor: str) -> Account:
        """Let an account in without a code (an admin's decision; audited)."""

        def run(conn: sqlite3.Connection) -> Account:
            now = self.now
            identity_in(conn, now, entrance, external_id, None, False)
            account = _find_account(conn, entrance, external_id)
            assert account is not None
            conn.execute(
                "INSERT INTO access_grants (identity_id, granted_by, granted_at)"
                " VALUES (?, ?, ?) ON CONFLICT (identity_id) DO NOTHING",
                (account.identity_id, actor, now),
            )
            audit_in(conn, now, actor, "access.granted", f"{entrance}:{external_id}")
            return account

        return await self.write(run)

    # Identity links -------------------------------------------------------------------

    async def redeem_link_code(
        self, code: str, identity_id: int, actor: str, *, notice: str | None = None
    ) -> LinkResult:
        """Link the account that says `code` with the one that made it (one transaction).

        `notice` is queued to the conversation where the code was made, so the first account
        hears that it was linked. Raises CodeError (audited) when the code is unusable."""

        def run(conn: sqlite3.Connection) -> LinkResult | str:
            now = self.now
            row = conn.execute(
                "SELECT * FROM guard_codes WHERE code = ? AND kind = 'link'", (code,)
            ).fetchone()
            problem = _code_problem(row, now)
            if problem is None and row["identity_id"] == identity_id:
                problem = "say it on your other account, not the one that asked for it"
            if problem is not None:
                audit_in(conn, now, actor, "identity.link_refused", code, {"reason": problem})
                return problem
            maker = _account_by_id(conn, row["identity_id"])
            sayer = _account_by_id(conn, identity_id)
            conn.execute(
                "UPDATE guard_codes SET used_at = ?, used_by = ? WHERE code = ?",
                (now, actor, code),
            )
            result = merge_people_in(conn, now, maker.person_id, sayer.person_id, actor, "code")
            if notice and row["conversation"]:
                enqueue_in(
                    conn,
                    now,
                    entrance=maker.entrance,
                    target=row["conversation"],
                    text=notice,
                    payload={"kind": "linked"},
                    dedupe_key=f"linked:{code}",
                )
            return result

        result = await self.write(run)
        if isinstance(result, str):
            raise CodeError(result)
        return result

    async def link_identities(
        self, first: tuple[str, str], second: tuple[str, str], actor: str
    ) -> LinkResult:
        """An admin links two accounts (each created if it never wrote yet)."""

        def run(conn: sqlite3.Connection) -> LinkResult:
            now = self.now
            people = [
                identity_in(conn, now, entrance, external_id, None, False)[1]
                for entrance, external_id in (first, second)
            ]
            return merge_people_in(conn, now, people[0], people[1], actor, "admin")

        return await self.write(run)

    async def unlink_identity(self, entrance: str, external_id: str, actor: str) -> Account:
        """Give an account a person of its own again.

        Its DM conversations go with it; messages, notes and intentions written before stay
        with the person it leaves (they are that person's history). Raises CodeError when the
        account is unknown or not linked to anyone."""

        def run(conn: sqlite3.Connection) -> Account | str:
            now = self.now
            account = _find_account(conn, entrance, external_id)
            if account is None:
                return f"I know no account {entrance}:{external_id}"
            others = conn.execute(
                "SELECT count(*) FROM identities WHERE person_id = ? AND id <> ?",
                (account.person_id, account.identity_id),
            ).fetchone()[0]
            if not others:
                return f"{entrance}:{external_id} is not linked to another account"
            person = conn.execute(
                "INSERT INTO people (name, created_at) VALUES (?, ?)",
                (account.display_name or external_id, now),
            ).lastrowid
            conn.execute(
                "UPDATE identities SET person_id = ? WHERE id = ?", (person, account.identity_id)
            )
            conn.execute(
                "UPDATE conversations SET person_id = :new WHERE kind = 'dm'"
                " AND entrance = :entrance AND person_id = :old AND EXISTS (SELECT 1 FROM"
                " messages m WHERE m.conversation_id = conversations.id"
                " AND m.identity_id = :identity)",
                {
                    "new": person,
                    "entrance": entrance,
                    "old": account.person_id,
                    "identity": account.identity_id,
                },
            )
            audit_in(
                conn,
                now,
                actor,
                "identity.unlinked",
                f"{entrance}:{external_id}",
                {"from_person": account.person_id, "new_person": person},
            )
            assert person is not None
            return Account(account.identity_id, person, entrance, external_id, account.display_name)

        result = await self.write(run)
        if isinstance(result, str):
            raise CodeError(result)
        return result

    async def people(self, limit: int = 1000) -> list[Person]:
        """People with their accounts (merged-away people left out), newest first."""

        def run(conn: sqlite3.Connection) -> list[Person]:
            found: dict[int, tuple[str, list[str]]] = {}
            for row in conn.execute(
                "SELECT p.id, p.name, i.entrance, i.external_id FROM people p"
                " JOIN identities i ON i.person_id = p.id"
                " WHERE p.merged_into IS NULL AND p.id IN (SELECT id FROM people"
                "   WHERE merged_into IS NULL ORDER BY id DESC LIMIT :limit)"
                " ORDER BY p.id DESC, i.id",
                {"limit": limit},
            ):
                _, accounts = found.setdefault(row["id"], (row["name"], []))
                accounts.append(f"{row['entrance']}:{row['external_id']}")
            return [
                Person(id=person_id, name=name, identities=accounts)
                for person_id, (name, accounts) in found.items()
            ]

        return await self.read(run)


def _code_problem(row: sqlite3.Row | None, now: float) -> str | None:
    if row is None:
        return "there is no such code"
    if row["used_at"] is not None:
        return "that code was already used"
    if row["expires_at"] <= now:
        return "that code has expired"
    return None
