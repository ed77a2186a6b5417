"""Promises: the open intentions and reminders of every instance, soonest first, with due
times in the viewer's timezone (the browser's, which the page sends; else the persona's)
and, when it differs, in the person's own; cancel or mark done.

Cancel and done end an intention through the same memory call `/cancel N` and `/done N`
use (`Memory.end_own_intention`, for the intention's own person: a repeating reminder
stops for good on cancel, goes on after done), audited with `console:NAME` as the actor;
they need the coordinator role. A viewer sees a private intention only as a redacted line:
no text, no person.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bot.console.auth import SignedIn
from bot.console.layout import NavItem, action_route, console_of, page_route, render
from bot.outcome import Outcome, invalid

if TYPE_CHECKING:
    from bot.memory import Upcoming

NAV = NavItem("/promises", "Promises", role="viewer", order=50)
ACTIVE = ("open", "conflicted", "resolved")  # the statuses /reminders lists
SHOWN = 200


@dataclass(frozen=True)
class PromiseView:
    """One active intention as this user may see it (text None: private, hidden)."""

    id: int
    kind: str
    text: str | None
    person_name: str | None
    owner_instance: str
    entrance: str
    status: str
    recurring: bool
    due_viewer: str | None
    due_theirs: str | None  # in the person's timezone when it is not the viewer's
    target_entrance: str | None
    private: bool
    may_end: bool


def viewer_timezone(request: Request) -> str:
    from bot.reminders import known_timezone

    asked = request.query_params.get("tz") or ""
    return known_timezone(asked) or console_of(request).timezone


async def promise_views(request: Request, user: SignedIn, timezone: str) -> list[PromiseView]:
    from bot.reminders import local_time

    console = console_of(request)
    memory = console.memory
    found = [item for status in ACTIVE for item in await memory.intentions(status, limit=SHOWN)]
    # Kind, repetition and the person's timezone: from what falls due (one query), else
    # from the person's own list (what /reminders shows them) for a dated one whose
    # follow-up already ran; an undated intention is a promise (reminders have a time).
    upcoming: dict[int, Upcoming] = {
        coming.id: coming for coming in await memory.due_intentions(limit=SHOWN * 2)
    }
    for person_id in {
        item.person_id
        for item in found
        if item.id not in upcoming and item.due_at is not None and item.person_id is not None
    }:
        for own in await memory.own_intentions(person_id, limit=SHOWN):
            upcoming[own.id] = own
    found.sort(key=lambda item: (item.due_at is None, item.due_at or 0, item.id))
    shown = []
    for item in found[:SHOWN]:
        mine = upcoming.get(item.id)
        hidden = item.visibility == "private" and not user.sees_private
        due = item.due_at.timestamp() if item.due_at is not None else None
        theirs = (mine.timezone if mine else None) or console.timezone
        shown.append(
            PromiseView(
                id=item.id,
                kind=mine.kind if mine else "promise",
                text=None if hidden else item.text,
                person_name=None if hidden else item.person_name,
                owner_instance=item.owner_instance,
                entrance=item.entrance,
                status=item.status,
                recurring=bool(mine and mine.recurring),
                due_viewer=local_time(due, timezone) if due is not None else None,
                due_theirs=(
                    local_time(due, theirs)
                    if due is not None and theirs != timezone and not hidden
                    else None
                ),
                target_entrance=item.target_entrance,
                private=item.visibility == "private",
                may_end=item.person_id is not None,
            )
        )
    return shown


async def promises_page(request: Request, user: SignedIn) -> Response:
    return render(request, "promises.html", user)


async def promises_fragment(
    request: Request, user: SignedIn, outcome: Outcome | None = None
) -> Response:
    timezone = viewer_timezone(request)
    # htmx swaps only 2xx answers in, so the page shows a refusal; a script gets its code.
    status_code = 200
    if outcome is not None and not request.headers.get("HX-Request"):
        status_code = {"ok": 200, "invalid": 422, "refused": 403}[outcome.status]
    return render(
        request,
        "_promises.html",
        user,
        status_code=status_code,
        promises=await promise_views(request, user, timezone),
        viewer_timezone=timezone,
        outcome=outcome,
    )


async def end(request: Request, user: SignedIn) -> Response:
    """Cancel or mark done one intention, as its person's /cancel N or /done N would."""
    console = console_of(request)
    memory = console.memory
    number = int(request.path_params["id"])
    verb = str(request.path_params["verb"])
    if verb not in ("cancel", "done"):
        return await _answer(request, user, invalid("No such action."))
    status = "cancelled" if verb == "cancel" else "done"
    item = await memory.intention(number)
    text = None
    if item is not None and item.person_id is not None:
        text = await memory.end_own_intention(number, item.person_id, status, actor=user.actor)
    if text is None:
        outcome = invalid(f"#{number} is not an open promise or reminder of a person any more.")
    else:
        hidden = item is not None and item.visibility == "private" and not user.sees_private
        what = f"#{number}" if hidden else f"#{number} “{text}”"
        verb_done = "Cancelled" if status == "cancelled" else "Marked done"
        outcome = Outcome(f"{verb_done}: {what}.", changed=True)
    return await _answer(request, user, outcome)


async def _answer(request: Request, user: SignedIn, outcome: Outcome) -> Response:
    if request.headers.get("HX-Request"):
        return await promises_fragment(request, user, outcome)
    if outcome.status != "ok":
        return render(request, "error.html", user, status_code=422, error=outcome.text)
    return RedirectResponse("/promises", status_code=303)


ROUTES = [
    page_route("/promises", promises_page),
    page_route("/promises/list", promises_fragment),
    action_route("/promises/{id:int}/{verb:str}", end, role="coordinator"),
]
