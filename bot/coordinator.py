"""The coordinator's items and decisions, independent of any platform.

Rendering is pure functions; `Coordinator.run` applies a decision to memory. Who may run
which command is declared and checked once, in `bot.commands` (the router), before any of
this runs. Buttons carry the same commands (`button_data` / `parse_button`), so a press and
a typed `/resolve` are one code path.
"""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

from bot.config import Config
from bot.memory import ItemDetails, ItemError, Memory, Outgoing, Side
from bot.models import Intention
from bot.outcome import Outcome

log = logging.getLogger(__name__)

CONFLICT_CHOICES = {"a": "keep A", "b": "keep B", "both": "keep both", "neither": "drop both"}
REQUEST_CHOICES = {"approve": "approve", "deny": "deny"}


def choices_for(details: ItemDetails) -> dict[str, str]:
    return REQUEST_CHOICES if details.item.kind == "request" else CONFLICT_CHOICES


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

    @property
    def timezone(self) -> str:
        return self.config.persona.timezone

    async def run(self, name: str, args: list[str], *, actor: str) -> Outcome:
        """Run a coordinator command (the router has checked who may); raises ItemError
        for an unknown item, a bad choice or an item already decided."""
        if name == "pending":
            pending = await self.memory.pending_details()
            if not pending:
                return Outcome("Nothing is waiting for you.")
            return Outcome("\n\n".join(describe_item(d, self.timezone) for d in pending))
        if not args:
            raise ItemError(f"/{name} needs an item id, e.g. /{name} 12")
        details = await self._details(args[0])
        if name == "show":
            return Outcome(describe_item(details, self.timezone))
        if name == "dismiss":
            return await self._dismiss(details, actor, " ".join(args[1:]) or None)
        if name in ("approve", "deny"):
            return await self._decide_request(details, name, actor, " ".join(args[1:]) or None)
        # resolve
        rest = args[1:]
        notify = "--notify" in rest
        rest = [a for a in rest if a != "--notify"]
        if not rest:
            raise ItemError(
                f"/resolve {details.item.id} needs a choice: "
                + ", ".join(choices_for(details))
                + " or your own words"
            )
        if details.item.kind == "request":
            choice = rest[0].lower()
            if choice not in REQUEST_CHOICES:
                raise ItemError(f"item {details.item.id} is a request: use approve or deny")
            return await self._decide_request(details, choice, actor, " ".join(rest[1:]) or None)
        return await self._resolve(details, rest, actor, notify=notify)

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
        outgoing = self._notifications(details, statuses) if notify else []
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
        told = self._requester_update(details, approved=verb == "approve")
        outgoing += told
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
        heard = " I'll tell the person who asked." if told else ""
        return Outcome(f"#{item.id} {resolution}.{heard}", changed=True)

    def _requester_update(self, details: ItemDetails, *, approved: bool) -> list[Outgoing]:
        """The person who asked, told in their own conversation what became of the request
        (nothing when it came from no conversation)."""
        side = details.sides[0]
        if side.conversation_external_id is None:
            return []
        outcome = "passed" if approved else "denied"
        return [
            Outgoing(
                entrance=side.intention.entrance,
                target=side.conversation_external_id,
                text=request_update(side.intention, approved=approved),
                dedupe_key=f"{outcome}:{details.item.id}",
                payload={"kind": outcome, "item_id": details.item.id},
            )
        ]

    def _notifications(self, details: ItemDetails, statuses: dict[int, str]) -> list[Outgoing]:
        """A follow-up to each affected person, on their own entrance and conversation,
        about their own side only: the other side may be someone's private chat, and the
        coordinator's note and decision text quote both sides."""
        messages = []
        for side in details.sides:
            if side.conversation_external_id is None:
                continue
            intention = side.intention
            kept = statuses.get(intention.id) == "resolved"
            messages.append(
                Outgoing(
                    entrance=intention.entrance,
                    target=side.conversation_external_id,
                    text=own_side_update(intention, kept=kept, timezone=self.timezone),
                    dedupe_key=f"notify:{details.item.id}:{intention.id}",
                    payload={"kind": "notify", "item_id": details.item.id},
                )
            )
        return messages


def request_update(intention: Intention, *, approved: bool) -> str:
    """What the person who made a cross-entrance request hears of the decision."""
    if approved:
        return (
            f"My coordinator passed on “{intention.text}” to {intention.target_entrance}, "
            "as you asked."
        )
    return f"My coordinator decided not to pass on “{intention.text}”; I won't be able to do that."


def own_side_update(intention: Intention, *, kept: bool, timezone: str) -> str:
    """What the person behind one side of a decision hears: only their own plan."""
    when = ""
    if intention.due_at:
        when = " on " + intention.due_at.astimezone(ZoneInfo(timezone)).strftime("%a %H:%M")
    if kept:
        return f"An update on “{intention.text}”: my coordinator decided it stands{when}."
    return (
        f"An update on “{intention.text}”: my coordinator decided I can't keep that{when} "
        "after all; can we pick another time?"
    )
