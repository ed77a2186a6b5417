"""Who is speaking, decided once per message: the account, its roles and the audience.

`Roster` holds what config says about accounts (admins, the coordinator, each entrance's
allow and bot lists) plus the persona's own accounts that adapters register. It turns an
`Incoming` into a `Speaker` once; everything later in the turn (commands, the guard, the
context) reads that value instead of asking again. Pure: no IO, no memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from bot.accounts import AccountRef
from bot.config import Config
from bot.models import Audience, Incoming

Role = Literal["own", "bot", "listed_bot", "admin", "coordinator", "allowed"]
"""own: one of the persona's accounts; bot: the platform says it is a bot; listed_bot: a bot
in [access.ENTRANCE] bots; admin: in [access] admins; coordinator: the configured coordinator;
allowed: in [access.ENTRANCE] allow."""


@dataclass(frozen=True)
class Speaker:
    """One message's author as the persona sees them, and where they are speaking."""

    account: AccountRef
    name: str | None
    roles: frozenset[Role]
    private: bool  # in a private chat with the persona (a DM, a mail thread, a terminal)
    conversation: str = ""  # the platform's conversation id
    label: str | None = None  # how audits name a speaker with no platform account (the CLI)

    def has(self, role: Role) -> bool:
        return role in self.roles

    @property
    def is_bot(self) -> bool:
        return "bot" in self.roles

    @property
    def own(self) -> bool:
        return "own" in self.roles

    @property
    def coordinator(self) -> bool:
        return "coordinator" in self.roles

    @property
    def admin(self) -> bool:
        return "admin" in self.roles

    @property
    def trusted(self) -> bool:
        """Admins and the coordinator: trusted with admin commands, never rate-limited."""
        return self.admin or self.coordinator

    @property
    def vetted(self) -> bool:
        """Let in by configuration alone (no pairing needed)."""
        return self.trusted or "listed_bot" in self.roles or "allowed" in self.roles

    def audience(self, conversation_id: int, person_id: int, *, elsewhere: bool) -> Audience:
        """Who the answer in this conversation is for (see `bot.models.Audience`).

        The coordinator's wider view exists only in their own private chat; a group sees
        only itself, whoever speaks there; a reply going elsewhere sees nothing private.
        """
        if elsewhere:
            return Audience(conversation_id=None)
        if not self.private:
            return Audience(conversation_id=conversation_id)
        return Audience(
            conversation_id=conversation_id, person_id=person_id, everyone=self.coordinator
        )

    @property
    def actor(self) -> str:
        """How audits name this speaker."""
        return self.label or self.account.key


class Roster:
    """What config says about accounts, plus the persona's own accounts."""

    def __init__(self, config: Config, own_accounts: Iterable[AccountRef] = ()) -> None:
        self.config = config
        self.coordinator = config.coordinator.parsed
        self.admins = frozenset(AccountRef.parse(item) for item in config.access.admins)
        self.own: set[AccountRef] = set(own_accounts)
        self._listed: dict[tuple[str, str], frozenset[AccountRef]] = {}

    def add_own(self, account: AccountRef) -> None:
        """An account of the persona itself (adapters add theirs once they know the id)."""
        self.own.add(account)

    def listed(self, account: AccountRef, which: Literal["allow", "bots"]) -> bool:
        """Is the account in [access.ENTRANCE] allow (or bots)?"""
        key = (account.entrance, which)
        ids = self._listed.get(key)
        if ids is None:
            rules = self.config.access.entrance(account.entrance)
            raw = rules.allow if which == "allow" else rules.bots
            ids = frozenset(AccountRef.of(account.entrance, item) for item in raw)
            self._listed[key] = ids
        return account in ids

    def roles(self, account: AccountRef, *, is_bot: bool = False) -> frozenset[Role]:
        roles: set[Role] = set()
        if account in self.own:
            roles.add("own")
        if is_bot:
            roles.add("bot")
            if self.listed(account, "bots"):
                roles.add("listed_bot")
        if account in self.admins:
            roles.add("admin")
        if account == self.coordinator:
            roles.add("coordinator")
        if self.listed(account, "allow"):
            roles.add("allowed")
        return frozenset(roles)

    def speaker(self, incoming: Incoming) -> Speaker:
        """The author of `incoming`, resolved once."""
        author = incoming.author
        account = AccountRef.of(incoming.entrance, author.external_id)
        return Speaker(
            account=account,
            name=author.display_name,
            roles=self.roles(account, is_bot=author.is_bot),
            private=incoming.conversation_kind == "dm",
            conversation=incoming.conversation_id,
        )

    def presser(self, account: AccountRef, conversation: str, *, private: bool) -> Speaker:
        """Whoever pressed a button (a person: platforms do not let bots press)."""
        return Speaker(
            account=account,
            name=None,
            roles=self.roles(account),
            private=private,
            conversation=conversation,
        )


def operator(actor: str = "cli") -> Speaker:
    """The admin at the machine (the CLI): trusted with every command, audited as `actor`."""
    return Speaker(
        account=AccountRef("cli", actor),
        name=actor,
        roles=frozenset({"admin", "coordinator"}),
        private=True,
        label=actor,
    )
