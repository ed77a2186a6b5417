"""Identity in memory.db: accounts, the people they belong to, and who is let in.

Accounts (identities) and people, access grants, one-time codes (pairing and linking),
linking and unlinking accounts. Linking is explicit, by an admin or a one-time code said
on the other account, never by display name; every change is audited in the same
transaction that makes it. Rate limits, bot budgets and echoes are
`bot.memory.admission_store`'s; this module never decides whether a message is answered.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from bot.memory.conversation_store import identity_in
from bot.memory.database import Database, audit_in
from bot.memory.outbox_store import enqueue_in
from bot.memory.records import Account, CodeError, LinkResult, PendingPairing
from bot.models import Person


@dataclass(frozen=True)
class Refusal:
    """Why a code or account cannot be used. A transaction returns it rather than raising,
    so the audit entry it wrote commits; the method then raises `CodeError(reason)`."""

    reason: str


# Whether any account of the person was let in (admission_store reads it in its snapshot).
GRANTED_SQL = """
    SELECT 1 FROM identities i JOIN access_grants g ON g.identity_id = i.id
    WHERE i.person_id = :person LIMIT 1
"""


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


class IdentityStore(Database):
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
        if isinstance(result, Refusal):
            raise CodeError(result.reason)
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

        def run(conn: sqlite3.Connection) -> LinkResult | Refusal:
            now = self.now
            row = conn.execute(
                "SELECT * FROM guard_codes WHERE code = ? AND kind = 'link'", (code,)
            ).fetchone()
            problem = _code_problem(row, now)
            if problem is None and row["identity_id"] == identity_id:
                problem = "say it on your other account, not the one that asked for it"
            if problem is not None:
                audit_in(conn, now, actor, "identity.link_refused", code, {"reason": problem})
                return Refusal(problem)
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
        if isinstance(result, Refusal):
            raise CodeError(result.reason)
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

        def run(conn: sqlite3.Connection) -> Account | Refusal:
            now = self.now
            account = _find_account(conn, entrance, external_id)
            if account is None:
                return Refusal(f"I know no account {entrance}:{external_id}")
            others = conn.execute(
                "SELECT count(*) FROM identities WHERE person_id = ? AND id <> ?",
                (account.person_id, account.identity_id),
            ).fetchone()[0]
            if not others:
                return Refusal(f"{entrance}:{external_id} is not linked to another account")
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
        if isinstance(result, Refusal):
            raise CodeError(result.reason)
        return result

    # A person's settings ------------------------------------------------------------

    async def person_timezone(self, person_id: int) -> str | None:
        """The timezone the person set (an IANA name), None when they set none."""
        row = await self.read(
            lambda conn: conn.execute(
                "SELECT timezone FROM people WHERE id = ?", (person_id,)
            ).fetchone()
        )
        return row["timezone"] if row else None

    async def set_person_timezone(self, person_id: int, timezone: str, actor: str) -> None:
        """Store the person's timezone (validated by the caller), audited."""

        def run(conn: sqlite3.Connection) -> None:
            now = self.now
            conn.execute("UPDATE people SET timezone = ? WHERE id = ?", (timezone, person_id))
            audit_in(conn, now, actor, "person.timezone", str(person_id), {"timezone": timezone})

        await self.write(run)

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
