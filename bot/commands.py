"""Every slash command, declared once: who may use it, where, its help line, its handler.

Chat (any entrance), buttons and the CLI reach the same handlers through `Commands.run`,
with the `Speaker` decided once for the message. The router checks the declaration (a
private chat where required, the roles) and audits refusals; handlers only do the work and
return an `Outcome`. `/help` and the platforms' command menus (`command_menus`: Telegram's
setMyCommands, Discord's application commands) are generated from the declarations and show
each person what they may use. Commands act only on text a person sent on a platform (never
on the model's output) and never call the model.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.accounts import AccountRef
from bot.config import Config
from bot.coordinator import Coordinator
from bot.gate import lets_in
from bot.guard import new_code, normalize_code
from bot.memory import Account, BucketSpec, CodeError, ItemDetails, ItemError, Memory
from bot.outcome import Outcome, invalid, refused
from bot.people import approve_pairing, deny_pairing, revoke_access
from bot.reminders import known_timezone, local_time, snooze_until, upcoming_line
from bot.soul_admin import soul_command
from bot.speaker import Role, Roster, Speaker

log = logging.getLogger(__name__)

ONLY_COORDINATOR = "Only my coordinator can do that."
ONLY_ADMINS = "Only my admins can do that."
ONLY_IN_PRIVATE = (
    "Coordinator commands work only in a private chat with me: the answers show private "
    "conversations."
)
LINK_IN_PRIVATE = "Let's do that in a private chat: send /link to me directly."
LINK_CODE_REPLY = (
    "Your link code is {code}. Within {minutes} minutes, send /link {code} to me from your "
    "other account and I'll know both are you."
)
REMINDERS_IN_PRIVATE = (
    "Let's do that in a private chat: your reminders and promises are yours alone."
)
NOT_YOURS = "There is no such reminder of yours; /reminders lists them."
LINKED_NOTICE = (
    "Your account was just linked with {account}, so I treat both as you. If that wasn't "
    "you, tell my coordinator."
)

_BUTTON = re.compile(
    r"^mirror:(?P<verb>resolve|approve|deny|dismiss):(?P<id>\d+)(?::(?P<choice>\w+))?$"
)
# Pairing buttons carry the code (bot.people.pair_button): 'mirror:deny-pair:K7QM-3XWD'.
_PAIR_BUTTON = re.compile(r"^mirror:(?P<verb>approve-pair|deny-pair):(?P<code>[A-Z0-9-]{4,16})$")

COORDINATOR: frozenset[Role] = frozenset({"coordinator"})
ADMINS: frozenset[Role] = frozenset({"admin", "coordinator"})
ANYONE: frozenset[Role] = frozenset()


@dataclass(frozen=True)
class Command:
    """A parsed command: '/resolve 12 A take the call' -> ('resolve', ['12', 'A', ...])."""

    name: str
    args: list[str]


def parse_command(text: str) -> Command | None:
    """'/resolve 12 A take the call' -> Command('resolve', ['12', 'A', 'take', ...]).

    Arguments are the words as typed, split at any whitespace. No shell-style quoting: it ate
    the apostrophes and backslashes of a note ("I can't, it's late" read "I cant, its late").
    """
    stripped = text.strip()
    if not stripped.startswith("/"):
        return None
    words = stripped.split()
    name = words[0][1:].split("@", 1)[0].lower()  # Telegram sends /cmd@botname in groups
    return Command(name=name, args=words[1:])


def button_data(verb: str, item_id: int, choice: str | None = None) -> str:
    """Callback data for a button (<= 64 bytes, Telegram's limit)."""
    return f"mirror:{verb}:{item_id}" + (f":{choice}" if choice else "")


def parse_button(data: str) -> Command | None:
    """'mirror:resolve:12:A' -> Command('resolve', ['12', 'A']); None when it is not ours."""
    paired = _PAIR_BUTTON.match(data)
    if paired:
        return Command(paired["verb"], [paired["code"]])
    match = _BUTTON.match(data)
    if not match:
        return None
    return Command(match["verb"], [match["id"]] + ([match["choice"]] if match["choice"] else []))


def buttons_for(details: ItemDetails) -> list[dict[str, str]]:
    """The buttons under a coordinator item: label and the command they carry."""
    item = details.item
    if item.kind == "request":
        return [
            {"label": "Approve", "data": button_data("approve", item.id)},
            {"label": "Deny", "data": button_data("deny", item.id)},
        ]
    return [
        {"label": "Keep A", "data": button_data("resolve", item.id, "A")},
        {"label": "Keep B", "data": button_data("resolve", item.id, "B")},
        {"label": "Both", "data": button_data("resolve", item.id, "both")},
        {"label": "Neither", "data": button_data("resolve", item.id, "neither")},
    ]


@dataclass(frozen=True)
class Declaration:
    """One command: its name, usage, help line, who may use it and where."""

    name: str
    usage: str
    help: str
    roles: frozenset[Role] = ANYONE  # empty: anyone (people; bots never command)
    private_only: bool = False
    private_refusal: str = ONLY_IN_PRIVATE
    audit_refusal: str = "coordinator.refused"
    aliases: tuple[str, ...] = ()

    def allows(self, speaker: Speaker) -> bool:
        return self.allows_roles(speaker.roles)

    def allows_roles(self, roles: frozenset[Role]) -> bool:
        return not self.roles or bool(self.roles & roles)

    @property
    def args(self) -> str:
        """The usage after the name: '/snooze N 30m|2h|tomorrow' -> 'N 30m|2h|tomorrow'."""
        return self.usage.partition(" ")[2]

    @property
    def refusal(self) -> str:
        return ONLY_COORDINATOR if self.roles == COORDINATOR else ONLY_ADMINS


DECLARATIONS: tuple[Declaration, ...] = (
    Declaration("help", "/help", "what you can ask me to do"),
    Declaration(
        "link",
        "/link [CODE]",
        "connect your accounts on my other entrances",
        private_only=True,
        private_refusal=LINK_IN_PRIVATE,
    ),
    Declaration(
        "reminders",
        "/reminders",
        "your reminders and what I promised you, with their numbers",
        private_only=True,
        private_refusal=REMINDERS_IN_PRIVATE,
        audit_refusal="reminders.refused",
    ),
    Declaration("cancel", "/cancel N", "cancel one (a repeating one stops for good)"),
    Declaration("snooze", "/snooze N 30m|2h|tomorrow", "have one come again later"),
    Declaration("done", "/done N", "mark one done"),
    Declaration("timezone", "/timezone [Area/City]", "see or set the timezone I use for you"),
    Declaration(
        "pending",
        "/pending",
        "items waiting for the coordinator",
        roles=ADMINS,
        private_only=True,
    ),
    Declaration("show", "/show ID", "both sides of an item", roles=ADMINS, private_only=True),
    Declaration(
        "resolve",
        "/resolve ID CHOICE [note] [--notify]",
        "decide an item: A, B, both, neither, or your own words",
        roles=COORDINATOR,
        private_only=True,
    ),
    Declaration(
        "dismiss",
        "/dismiss ID",
        "close an item without a decision",
        roles=COORDINATOR,
        private_only=True,
    ),
    Declaration(
        "approve",
        "/approve ID",
        "send a request that needs another entrance",
        roles=COORDINATOR,
        private_only=True,
    ),
    Declaration(
        "deny",
        "/deny ID",
        "refuse a request that needs another entrance",
        roles=COORDINATOR,
        private_only=True,
    ),
    Declaration(
        "approve-pair",
        "/approve-pair CODE",
        "let in someone who was given a pairing code",
        roles=ADMINS,
        audit_refusal="admin.refused",
        aliases=("pair-approve", "approvepair"),
    ),
    Declaration(
        "deny-pair",
        "/deny-pair CODE",
        "refuse someone who asked to be let in (told once, then silence)",
        roles=ADMINS,
        audit_refusal="admin.refused",
        aliases=("pair-deny", "denypair"),
    ),
    Declaration(
        "revoke",
        "/revoke ENTRANCE:ID",
        "take back someone's access (told once at their next message, then silence)",
        roles=ADMINS,
        audit_refusal="admin.refused",
    ),
    Declaration(
        "soul",
        "/soul show|history|rollback VERSION",
        "see the persona's soul, its versions, roll back",
        roles=ADMINS,
        audit_refusal="admin.refused",
    ),
)
_BY_NAME = {name: d for d in DECLARATIONS for name in (d.name, *d.aliases)}
COMMAND_NAMES = tuple(d.name for d in DECLARATIONS)


def declaration(name: str) -> Declaration | None:
    """The declared command called `name` ("_" reads as "-": Telegram allows no "-")."""
    return _BY_NAME.get(name.lower().replace("_", "-"))


def is_declared(text: str) -> bool:
    """Is `text` one of the declared commands (whoever may use it)?"""
    command = parse_command(text)
    return command is not None and declaration(command.name) is not None


@dataclass(frozen=True)
class Menu:
    """The commands one audience finds in a platform's command menu: everyone's (`account`
    None) or those of one configured account in its private chat (the coordinator, an
    admin), which include everyone's."""

    account: AccountRef | None
    commands: tuple[Declaration, ...]


def command_menus(config: Config, entrance: str) -> list[Menu]:
    """The menus an entrance publishes: everyone's, then the coordinator's and each admin's
    on this entrance (their own commands added), generated from the declarations."""
    menus = [Menu(None, tuple(d for d in DECLARATIONS if not d.roles))]
    roster = Roster(config)
    accounts = [roster.coordinator, *sorted(roster.admins, key=str)]
    seen: set[AccountRef] = set()
    for account in accounts:
        if account.entrance != entrance or account in seen:
            continue
        seen.add(account)
        roles = roster.roles(account)
        menus.append(Menu(account, tuple(d for d in DECLARATIONS if d.allows_roles(roles))))
    return menus


def help_for(speaker: Speaker) -> str:
    """The commands this speaker may use, one line each (where they work, when limited)."""
    lines = []
    for item in DECLARATIONS:
        if not item.allows(speaker):
            continue
        where = " (in a private chat)" if item.private_only else ""
        lines.append(f"{item.usage} — {item.help}{where}")
    return "Commands you can use:\n" + "\n".join(lines)


Handler = Callable[[Speaker, Command], Awaitable[Outcome]]


class Commands:
    """The router for one instance: declarations checked, then the handler."""

    def __init__(self, memory: Memory, config: Config) -> None:
        self.memory = memory
        self.config = config
        self.coordinator = Coordinator(memory, config)
        self._handlers: dict[str, Handler] = {
            "help": self._help,
            "link": self._link,
            "approve-pair": self._approve_pair,
            "deny-pair": self._deny_pair,
            "revoke": self._revoke,
            "soul": self._soul,
            "pending": self._coordinator,
            "show": self._coordinator,
            "resolve": self._coordinator,
            "dismiss": self._coordinator,
            "approve": self._coordinator,
            "deny": self._coordinator,
            "reminders": self._reminders,
            "cancel": self._end,
            "done": self._end,
            "snooze": self._snooze,
            "timezone": self._timezone,
        }

    def takes(self, speaker: Speaker, text: str) -> bool:
        """Is `text` a declared command this router answers for this speaker (a person, not
        one of the persona's accounts)? Bots' commands go to the guard like any message."""
        return not speaker.is_bot and not speaker.own and is_declared(text)

    async def run_text(self, speaker: Speaker, text: str) -> Outcome | None:
        """Run a typed command; None when the text is not one of the declared commands
        (it then goes to the model, which answers unknown commands in words)."""
        command = parse_command(text)
        return None if command is None else await self.run(speaker, command)

    async def press(self, speaker: Speaker, data: str) -> Outcome:
        """A button press: the same command, the same checks as typing it."""
        command = parse_button(data)
        if command is None:
            return invalid("That button is not one of mine.")
        outcome = await self.run(speaker, command)
        assert outcome is not None  # button verbs are all declared
        return outcome

    async def run(self, speaker: Speaker, command: Command) -> Outcome | None:
        item = declaration(command.name)
        if item is None or speaker.is_bot or speaker.own:
            # A bot's "/soul …" goes through the guard like any of its messages, never
            # answered here: otherwise any bot could make the persona talk to it.
            return None
        command = Command(item.name, command.args)
        if not item.allows(speaker):
            subject = (
                item.name
                if item.audit_refusal == "coordinator.refused"
                else ("/" + " ".join([item.name, *command.args]))
            )
            await self.memory.audit(speaker.actor, item.audit_refusal, subject, args=command.args)
            log.warning("refused /%s from %s: not allowed", item.name, speaker.actor)
            return refused(item.refusal)
        if item.private_only and not speaker.private:
            await self.memory.audit(
                speaker.actor, item.audit_refusal, item.name, reason="not a private chat"
            )
            return refused(item.private_refusal)
        return await self._handlers[item.name](speaker, command)

    # handlers -------------------------------------------------------------------------

    async def _help(self, speaker: Speaker, command: Command) -> Outcome:
        return Outcome(help_for(speaker))

    async def _soul(self, speaker: Speaker, command: Command) -> Outcome:
        return await soul_command(self.memory, self.config, command.args, speaker.actor)

    async def _approve_pair(self, speaker: Speaker, command: Command) -> Outcome:
        if not command.args:
            return invalid("Usage: /approve-pair CODE")
        return await approve_pairing(self.memory, command.args[0], speaker.actor)

    async def _deny_pair(self, speaker: Speaker, command: Command) -> Outcome:
        if not command.args:
            return invalid("Usage: /deny-pair CODE")
        return await deny_pairing(self.memory, command.args[0], speaker.actor)

    async def _revoke(self, speaker: Speaker, command: Command) -> Outcome:
        if len(command.args) != 1:
            return invalid("Usage: /revoke ENTRANCE:ID (e.g. /revoke telegram:123456)")
        try:
            return await revoke_access(self.memory, self.config, command.args[0], speaker.actor)
        except ValueError as exc:
            return invalid(str(exc))

    async def _coordinator(self, speaker: Speaker, command: Command) -> Outcome:
        try:
            return await self.coordinator.run(command.name, command.args, actor=speaker.actor)
        except ItemError as exc:
            await self.memory.audit(
                speaker.actor,
                "coordinator.invalid",
                command.name,
                reason=str(exc),
                args=command.args,
            )
            return invalid(str(exc))

    async def _link(self, speaker: Speaker, command: Command) -> Outcome:
        account = await self.memory.account(
            speaker.account.entrance,
            speaker.account.external_id,
            display_name=speaker.name,
            is_bot=speaker.is_bot,
        )
        assert account is not None
        access = self.config.access
        minutes = round(access.link_code_ttl_s / 60)
        actor = speaker.actor
        if not command.args:
            if not await lets_in(self.memory, self.config, speaker, account):
                await self.memory.audit(actor, "identity.link_refused", None, reason="not let in")
                return refused("I can only link accounts I already talk with.")
            code, _ = await self.memory.mint_code(
                "link",
                account.identity_id,
                make_code=new_code,
                ttl_s=access.link_code_ttl_s,
                per_day=10,
                conversation=speaker.conversation,
            )
            if code is None:
                return refused("That's enough link codes for today; try again tomorrow.")
            return Outcome(LINK_CODE_REPLY.format(code=code, minutes=minutes))
        attempts = access.code_attempts_per_hour
        limited, _ = await self.memory.take_tokens(
            [BucketSpec(f"codes:{actor}", attempts / 3600, attempts)]
        )
        if limited is not None:
            await self.memory.audit(actor, "identity.link_refused", None, reason="too many tries")
            return refused("Too many code attempts; try again later.")
        try:
            result = await self.memory.redeem_link_code(
                normalize_code(command.args[0]),
                account.identity_id,
                actor,
                notice=LINKED_NOTICE.format(account=actor),
            )
        except CodeError as exc:
            return invalid(f"I can't link with that code: {exc}.")
        if result.merged_person is None:
            return Outcome("These accounts are already linked.")
        return Outcome(
            f"Linked: I now know {', '.join(result.accounts)} as one person.", changed=True
        )

    # a person's own reminders and promises ---------------------------------------------

    async def _person(self, speaker: Speaker) -> Account:
        account = await self.memory.account(
            speaker.account.entrance,
            speaker.account.external_id,
            display_name=speaker.name,
            is_bot=speaker.is_bot,
        )
        assert account is not None
        return account

    async def _timezone_of(self, person_id: int) -> str:
        return await self.memory.person_timezone(person_id) or self.config.persona.timezone

    async def _reminders(self, speaker: Speaker, command: Command) -> Outcome:
        person = (await self._person(speaker)).person_id
        found = await self.memory.own_intentions(person)
        if not found:
            return Outcome("You have no reminders, and I owe you nothing right now.")
        timezone = await self._timezone_of(person)
        lines = [upcoming_line(item, timezone) for item in found]
        return Outcome(
            "Yours (times in " + timezone + "):\n" + "\n".join(lines) + "\n"
            "/done N, /cancel N or /snooze N 30m|2h|tomorrow"
        )

    async def _end(self, speaker: Speaker, command: Command) -> Outcome:
        number = _number(command.args)
        if number is None:
            return invalid(f"Usage: /{command.name} N (the number /reminders shows)")
        person = (await self._person(speaker)).person_id
        status = "cancelled" if command.name == "cancel" else "done"
        text = await self.memory.end_own_intention(number, person, status, actor=speaker.actor)
        if text is None:
            return invalid(NOT_YOURS)
        what = f"“{text}”" if speaker.private else f"#{number}"  # a group sees no content
        verb = "Cancelled" if status == "cancelled" else "Marked done"
        return Outcome(f"{verb}: {what}.", changed=True)

    async def _snooze(self, speaker: Speaker, command: Command) -> Outcome:
        usage = "Usage: /snooze N 30m|2h|tomorrow (N: the number /reminders shows)"
        number = _number(command.args[:1])
        if number is None or len(command.args) != 2:
            return invalid(usage)
        person = (await self._person(speaker)).person_id
        item = await self.memory.own_intention(number, person)
        if item is None:
            return invalid(NOT_YOURS)
        timezone = await self._timezone_of(person)
        until = snooze_until(
            command.args[1], due_at=item.due_at, now=self.memory.now, timezone=timezone
        )
        if until is None:
            return invalid(usage)
        if not await self.memory.snooze_own_intention(number, person, until, actor=speaker.actor):
            return invalid(NOT_YOURS)
        return Outcome(f"Snoozed #{number} until {local_time(until, timezone)}.", changed=True)

    async def _timezone(self, speaker: Speaker, command: Command) -> Outcome:
        person = (await self._person(speaker)).person_id
        if not command.args:
            own = await self.memory.person_timezone(person)
            if own is None:
                return Outcome(
                    f"I use {self.config.persona.timezone} for you; set yours with "
                    "/timezone Area/City, e.g. /timezone Europe/Lisbon"
                )
            return Outcome(f"Your timezone is {own}.")
        name = known_timezone(command.args[0])
        if name is None or len(command.args) != 1:
            return invalid(
                f"I don't know the timezone '{' '.join(command.args)}'; use an Area/City name "
                "like Europe/Lisbon or America/New_York."
            )
        await self.memory.set_person_timezone(person, name, speaker.actor)
        return Outcome(f"Your timezone is now {name}.", changed=True)


def _number(args: list[str]) -> int | None:
    """'12' or '#12' -> 12; None when the first argument is not a number."""
    if not args:
        return None
    raw = args[0].lstrip("#")
    return int(raw) if raw.isdigit() else None
