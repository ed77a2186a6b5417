"""The mirror view: every instance and entrance (alive, down since when, last turn) and the
live timeline of what each instance said and heard, filterable by entrance, person and
conversation; each reply links to its provenance (`mirror memory why`, as a page).

Privacy: admins and coordinators see everything (the coordinator's wider view); a viewer
sees group messages in full and every private message only as a redacted line ("a private
message on Telegram", with its instance and time: no text, no person), cannot filter by
person, and cannot open a private message's provenance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response

from bot.console.auth import SignedIn
from bot.console.layout import NavItem, console_of, page_route, render
from bot.models import Message

NAV = NavItem("/", "Mirror view", role="viewer", order=10)
PAGE_SIZE = 50


@dataclass(frozen=True)
class TimelineRow:
    """One message as this user may see it (text None: redacted)."""

    id: int
    at: datetime
    instance_id: str
    entrance: str
    direction: str
    conversation_id: int
    conversation_kind: str | None
    person_id: int | None
    person_name: str | None
    text: str | None
    private: bool
    status: str


def visible_row(message: Message, user: SignedIn) -> TimelineRow:
    hidden = message.visibility == "private" and not user.sees_private
    return TimelineRow(
        id=message.id,
        at=message.created_at,
        instance_id=message.instance_id,
        entrance=message.entrance,
        direction=message.direction,
        conversation_id=message.conversation_id,
        conversation_kind=message.conversation_kind,
        person_id=None if hidden else message.person_id,
        person_name=None if hidden else message.person_name,
        text=None if hidden else message.text,
        private=message.visibility == "private",
        status=message.status,
    )


def _int(raw: str | None) -> int | None:
    return int(raw) if raw and raw.strip().isdigit() else None


def timeline_filter(request: Request, user: SignedIn) -> dict[str, object]:
    params = request.query_params
    return {
        "entrance": params.get("entrance") or None,
        "person": _int(params.get("person")) if user.sees_private else None,
        "conversation": _int(params.get("conversation")),
    }


async def mirror_page(request: Request, user: SignedIn) -> Response:
    from bot.entrance import manifests

    chosen = timeline_filter(request, user)
    return render(
        request,
        "mirror.html",
        user,
        entrances=list(manifests()),
        chosen=chosen,
        query=request.url.query,
    )


async def instances_fragment(request: Request, user: SignedIn) -> Response:
    console = console_of(request)
    memory = console.memory
    instances = await memory.instances()
    last = await memory.last_turns([found.id for found in instances])
    dead_after = console.config.persona.instance_dead_after_s
    now = memory.now
    shown = []
    for found in instances:
        silent = found.status == "alive" and now - found.last_seen.timestamp() > dead_after
        shown.append(
            {
                "instance": found,
                "state": "silent" if silent else found.status,
                "since": found.last_seen if silent else found.status_since,
                "last_turn": last.get(found.id),
            }
        )
    return render(request, "_instances.html", user, instances=shown)


async def timeline_fragment(request: Request, user: SignedIn) -> Response:
    from bot.memory import TimelineFilter

    console = console_of(request)
    chosen = timeline_filter(request, user)
    query = TimelineFilter(
        entrance=chosen["entrance"],  # type: ignore[arg-type]
        person_id=chosen["person"],  # type: ignore[arg-type]
        conversation_id=chosen["conversation"],  # type: ignore[arg-type]
        before_id=_int(request.query_params.get("before")),
        limit=PAGE_SIZE,
    )
    found = await console.memory.timeline(query)
    rows = [visible_row(message, user) for message in found]
    older = rows[-1].id if len(rows) == PAGE_SIZE else None
    return render(request, "_timeline.html", user, rows=rows, older=older, chosen=chosen)


async def provenance_page(request: Request, user: SignedIn) -> Response:
    console = console_of(request)
    message_id = int(request.path_params["id"])
    message = await console.memory.message(message_id)
    found = await console.memory.provenance(message_id)
    if message is None or found is None:
        return render(request, "error.html", user, status_code=404, error="No such message.")
    if message.visibility == "private" and not user.sees_private:
        return render(
            request,
            "error.html",
            user,
            status_code=403,
            error="That message is from a private conversation; your role does not show it.",
        )
    soul = await console.memory.soul_version(found.soul_version) if found.soul_version else None
    used = []
    for kind, row_id in found.rows:
        text = None
        if kind == "message":
            row = await console.memory.message(row_id)
            if row is not None and (row.visibility != "private" or user.sees_private):
                text = row.text
        used.append({"kind": kind, "id": row_id, "text": text})
    return render(
        request,
        "message.html",
        user,
        message=visible_row(message, user),
        provenance=found,
        soul=soul,
        used=used,
    )


ROUTES = [
    page_route("/", mirror_page),
    page_route("/mirror/instances", instances_fragment),
    page_route("/mirror/timeline", timeline_fragment),
    page_route("/messages/{id:int}", provenance_page),
]
