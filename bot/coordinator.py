"""The coordinator's commands and items, independent of any platform.

Parsing and rendering are pure functions; `Coordinator` applies a command to memory. Only
the configured coordinator identity may act: anyone else gets a clear refusal, which is
audited, and nothing changes. Adapters turn button presses into the same commands
(`button_data` / `parse_button`), so a press and a typed `/resolve` are one code path.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from bot.config import Config
from bot.memory import Memory
from bot.memory.coordinator_store import ItemDetails, Outgoing, Side
from bot.memory.intention_store import ItemError

log = logging.getLogger(__name__)

COMMANDS = ("pending", "show", "resolve", "dismiss", "approve", "deny", "help")
HELP = """Coordinator commands:
/pending                      items waiting for you
/show ID                      both sides of an item
/resolve ID CHOICE [note]     CHOICE: A, B, both, neither, or your own words
/dismiss ID                   close an item without a decision
/approve ID  /deny ID         for requests that need another entrance
Add --notify to /resolve to tell each affected person on their own entrance."""
REFUSED = "Only my coordinator can do that."
ONLY_IN_PRIVATE = (
    "Coordinator commands work only in a private chat with me: the answers show private "
    "conversations."
)
CONFLICT_CHOICES = {"a": "keep A", "b": "keep B", "both": "keep both", "neither": "drop both"}
REQUEST_CHOICES = {"approve": "approve", "deny": "deny"}
_BUTTON = re.compile(
    r"^mirror:(?P<verb>resolve|approve|deny|dismiss):(?P<id>\d+)(?::(?P<choice>\w+))?$"
)


@dataclass(frozen=True)
class Command:
    name: str
    args: list[str]


@dataclass(frozen=True)
class Outcome:
    """What the coordinator is told; `changed` when memory changed."""

    text: str
    changed: bool = False


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
    match = _BUTTON.match(data)
    if not match:
        return None
    args = [match["id"]] + ([match["choice"]] if match["choice"] else [])
    return Command(match["verb"], args)


def choices_for(details: ItemDetails) -> dict[str, str]:
    return REQUEST_CHOICES if details.item.kind == "request" else CONFLICT_CHOICES


def buttons_for(details: ItemDetails) -> list[dict[str, str]]:
    """Buttons an adapter renders for an item: label and callback data."""
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


def describe_side(label: str, side: Side, timezone: str) -> str:
    intention = side.intention
    where = f"{intention.owner_instance} on {intention.entrance}"
    who = intention.person_name or "someone"
    kind = "private chat" if side.conversation_kind == "dm" else (side.conversation_kind or "chat")
    due = ""
    if intention.due_at:
        due = " · due " + intention.due_at.astimezone(ZoneInfo(timezone)).strftime(
            "%a %Y-%m-%d %H:%M"
        )
    target = f" · needs {intention.target_entrance}" if intention.target_entrance else ""
    return f"{label}: “{intention.text}” ({where}, {who}, {kind}{due}{target}) [{intention.status}]"


def describe_item(details: ItemDetails, timezone: str) -> str:
    """An item as the coordinator sees it: id, both sides (private content too), choices."""
    item = details.item
    title = "Request" if item.kind == "request" else "Conflict"
    lines = [f"{title} #{item.id} on '{item.subject}': {item.reason} [{item.status}]"]
    labels = ["A", "B"]
    for label, side in zip(labels, details.sides, strict=False):
        lines.append(describe_side(label, side, timezone))
    if details.decision is not None:
        lines.append(
            f"B: your earlier decision #{details.decision.id}: {details.decision.resolution}"
        )
    if item.status in ("open", "surfaced"):
        if item.kind == "request":
            lines.append(f"Reply /approve {item.id} or /deny {item.id}")
        else:
            lines.append(
                f"Reply /resolve {item.id} A|B|both|neither [note], or /resolve {item.id} "
                "followed by your own words"
            )
    elif item.resolution:
        lines.append(f"Decided by {item.resolved_by}: {item.resolution}")
    return "\n".join(lines)


class Coordinator:
    def __init__(self, memory: Memory, config: Config) -> None:
        self.memory = memory
        self.config = config
        address = config.coordinator.parsed
        self.identity = (address.entrance, address.id)

    @property
    def timezone(self) -> str:
        return self.config.persona.timezone

    def is_coordinator(self, entrance: str, external_id: str) -> bool:
        return (entrance, external_id) == self.identity

    async def handle(
        self, entrance: str, external_id: str, text: str, *, private: bool
    ) -> Outcome | None:
        """Apply a coordinator command; None when the text is not one of ours.

        Commands are refused outside private chats: their answers show private content.
        """
        command = parse_command(text)
        if command is None or command.name not in COMMANDS:
            return None
        return await self._checked(command, entrance, external_id, private)

    async def press(self, entrance: str, external_id: str, data: str, *, private: bool) -> Outcome:
        command = parse_button(data)
        if command is None:
            return Outcome("That button is not one of mine.")
        return await self._checked(command, entrance, external_id, private)

    async def _checked(
        self, command: Command, entrance: str, external_id: str, private: bool
    ) -> Outcome:
        actor = f"{entrance}:{external_id}"
        if not private:
            await self.memory.audit(
                actor, "coordinator.refused", command.name, reason="not a private chat"
            )
            return Outcome(ONLY_IN_PRIVATE)
        return await self.run(command, actor=actor, entrance=entrance, external_id=external_id)

    async def run(
        self,
        command: Command,
        *,
        actor: str,
        entrance: str | None = None,
        external_id: str | None = None,
        trusted: bool = False,
    ) -> Outcome:
        """Run a command; `trusted` is for the CLI (an admin at the machine)."""
        if not trusted and (
            entrance is None or not self.is_coordinator(entrance, external_id or "")
        ):
            await self.memory.audit(actor, "coordinator.refused", command.name, args=command.args)
            log.warning("refused /%s from %s: not the coordinator", command.name, actor)
            return Outcome(REFUSED)
        try:
            return await self._run(command, actor)
        except ItemError as exc:
            await self.memory.audit(
                actor, "coordinator.invalid", command.name, reason=str(exc), args=command.args
            )
            return Outcome(str(exc))

    async def _run(self, command: Command, actor: str) -> Outcome:
        if command.name == "help":
            return Outcome(HELP)
        if command.name == "pending":
            pending = await self.memory.pending_details()
            if not pending:
                return Outcome("Nothing is waiting for you.")
            return Outcome("\n\n".join(describe_item(d, self.timezone) for d in pending))
        if not command.args:
            raise ItemError(f"/{command.name} needs an item id, e.g. /{command.name} 12")
        details = await self._details(command.args[0])
        if command.name == "show":
            return Outcome(describe_item(details, self.timezone))
        if command.name == "dismiss":
            return await self._dismiss(details, actor, " ".join(command.args[1:]) or None)
        if command.name in ("approve", "deny"):
            return await self._decide_request(
                details, command.name, actor, " ".join(command.args[1:]) or None
            )
        # resolve
        args = command.args[1:]
        notify = "--notify" in args
        args = [a for a in args if a != "--notify"]
        if not args:
            raise ItemError(
                f"/resolve {details.item.id} needs a choice: "
                + ", ".join(choices_for(details))
                + " or your own words"
            )
        if details.item.kind == "request":
            choice = args[0].lower()
            if choice not in REQUEST_CHOICES:
                raise ItemError(f"item {details.item.id} is a request: use approve or deny")
            return await self._decide_request(details, choice, actor, " ".join(args[1:]) or None)
        return await self._resolve(details, args, actor, notify=notify)

    async def _details(self, raw_id: str) -> ItemDetails:
        if not raw_id.lstrip("#").isdigit():
            raise ItemError(f"'{raw_id}' is not an item id; /pending lists them")
        details = await self.memory.item_details(int(raw_id.lstrip("#")))
        if details is None:
            raise ItemError(f"there is no item {raw_id}; /pending lists them")
        if details.item.status not in ("open", "surfaced"):
            raise ItemError(
                f"item {details.item.id} is already {details.item.status}"
                + (f": {details.item.resolution}" if details.item.resolution else "")
            )
        return details

    async def _resolve(
        self, details: ItemDetails, args: list[str], actor: str, *, notify: bool
    ) -> Outcome:
        key = args[0].lower()
        sides = details.sides
        a = sides[0].intention
        b = sides[1].intention if len(sides) > 1 else None
        statuses: dict[int, str]
        if key in CONFLICT_CHOICES:
            note = " ".join(args[1:]) or None
            if key == "a":
                statuses = {a.id: "resolved"} | ({b.id: "cancelled"} if b else {})
            elif key == "b":
                statuses = {a.id: "cancelled"} | ({b.id: "resolved"} if b else {})
            elif key == "both":
                statuses = {a.id: "resolved"} | ({b.id: "resolved"} if b else {})
            else:
                statuses = {a.id: "cancelled"} | ({b.id: "cancelled"} if b else {})
            choice = key.upper() if key in ("a", "b") else key
        else:
            note = None
            choice = "other"
            statuses = {a.id: "resolved"} | ({b.id: "resolved"} if b else {})
        kept_sides = [s for s in sides if statuses.get(s.intention.id) == "resolved"]
        if details.decision is not None and key == "b":
            kept = details.decision.kept
        else:
            kept = [s.intention.text for s in kept_sides]
        if choice == "other":
            resolution = " ".join(args)
        else:
            parts = [
                f"{'keep' if statuses.get(s.intention.id) == 'resolved' else 'drop'} "
                f"“{s.intention.text}” ({s.intention.owner_instance})"
                for s in sides
            ]
            if details.decision is not None:
                parts.append(
                    f"earlier decision #{details.decision.id} "
                    f"{'stands' if key == 'b' else 'is replaced'}"
                )
            resolution = "; ".join(parts)
        outgoing = self._notifications(details, resolution, note) if notify else []
        await self.memory.decide_item(
            details.item.id,
            status="resolved",
            choice=choice,
            resolution=resolution,
            note=note,
            actor=actor,
            intention_statuses=statuses,
            kept=kept,
            outgoing=outgoing,
        )
        told = f" I'll tell {len(outgoing)} affected person(s)." if outgoing else ""
        return Outcome(f"Resolved #{details.item.id}: {resolution}.{told}", changed=True)

    async def _dismiss(self, details: ItemDetails, actor: str, note: str | None) -> Outcome:
        await self.memory.decide_item(
            details.item.id,
            status="dismissed",
            choice="dismiss",
            resolution="dismissed without a decision",
            note=note,
            actor=actor,
            intention_statuses={
                s.intention.id: "open" for s in details.sides if s.intention.status == "conflicted"
            },
            kept=[],
            outgoing=[],
        )
        return Outcome(f"Dismissed #{details.item.id}.", changed=True)

    async def _decide_request(
        self, details: ItemDetails, verb: str, actor: str, note: str | None
    ) -> Outcome:
        item = details.item
        if item.kind != "request":
            raise ItemError(
                f"item {item.id} is a conflict: use /resolve {item.id} A|B|both|neither"
            )
        intention = details.sides[0].intention
        outgoing: list[Outgoing] = []
        if verb == "approve":
            target_entrance = intention.target_entrance or ""
            conversation = await self.memory.latest_conversation(
                target_entrance, kind="group"
            ) or await self.memory.latest_conversation(target_entrance)
            if conversation is None:
                raise ItemError(
                    f"I know no conversation on {target_entrance} yet, so there is nowhere to "
                    f"send it; /deny {item.id} or try again once someone talks to me there"
                )
            outgoing.append(
                Outgoing(
                    entrance=target_entrance,
                    target=conversation[0],
                    text=intention.text,
                    dedupe_key=f"request:{item.id}",
                    payload={"kind": "request", "item_id": item.id},
                )
            )
            resolution = f"approved: “{intention.text}” goes to {target_entrance}"
            statuses = {intention.id: "resolved"}
        else:
            resolution = f"denied: “{intention.text}” is not sent"
            statuses = {intention.id: "cancelled"}
        await self.memory.decide_item(
            item.id,
            status="resolved",
            choice=verb,
            resolution=resolution,
            note=note,
            actor=actor,
            intention_statuses=statuses,
            kept=[intention.text] if verb == "approve" else [],
            outgoing=outgoing,
        )
        return Outcome(f"#{item.id} {resolution}.", changed=True)

    def _notifications(
        self, details: ItemDetails, resolution: str, note: str | None
    ) -> list[Outgoing]:
        """A follow-up to each affected person, on their own entrance and conversation."""
        messages = []
        for side in details.sides:
            if side.conversation_external_id is None:
                continue
            intention = side.intention
            text = f"An update on “{intention.text}”: my coordinator decided: {resolution}."
            if note:
                text += f" ({note})"
            messages.append(
                Outgoing(
                    entrance=intention.entrance,
                    target=side.conversation_external_id,
                    text=text,
                    dedupe_key=f"notify:{details.item.id}:{intention.id}",
                    payload={"kind": "notify", "item_id": details.item.id},
                )
            )
        return messages
