"""The coordinator queue: the items the coordinator's private channel gets, with both
sides and the choices (Keep A / Keep B / Both / Neither / own words, dismiss, approve or deny
a cross-entrance request), and pairing requests to approve or deny. Live: new items appear
without a reload.

Every decision runs the chat command it stands for through the command router
(`bot.commands.Commands.run`) with the console user as the speaker, so it is checked and
audited exactly as `/resolve` in the coordinator's chat, with `console:NAME` as the actor.
A viewer sees each item's number, kind, status and due time, and a side's text only when
it came from a group; deciding needs the coordinator role.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bot.commands import Command
from bot.console.auth import SignedIn
from bot.console.layout import (
    NavItem,
    action_route,
    console_of,
    outcome_response,
    page_route,
    render,
)
from bot.memory import ItemDetails
from bot.outcome import Outcome

NAV = NavItem("/queue", "Coordinator queue", role="viewer", order=20)
VERBS = ("resolve", "dismiss", "approve", "deny")  # the queue's commands, nothing else
CHOICES = (("A", "Keep A"), ("B", "Keep B"), ("both", "Both"), ("neither", "Neither"))


@dataclass(frozen=True)
class SideView:
    label: str
    text: str | None  # None: private, not shown to this user
    where: str
    who: str | None
    due: object
    status: str
    target_entrance: str | None


def sides_for(details: ItemDetails, user: SignedIn) -> list[SideView]:
    shown = []
    for label, side in zip(("A", "B"), details.sides, strict=False):
        intention = side.intention
        hidden = intention.visibility == "private" and not user.sees_private
        kind = "private chat" if side.conversation_kind == "dm" else (side.conversation_kind or "")
        shown.append(
            SideView(
                label=label,
                text=None if hidden else intention.text,
                where=f"{intention.owner_instance} on {intention.entrance}, {kind}".rstrip(", "),
                who=None if hidden else intention.person_name,
                due=intention.due_at,
                status=intention.status,
                target_entrance=intention.target_entrance,
            )
        )
    return shown


async def queue_page(request: Request, user: SignedIn) -> Response:
    return render(request, "queue.html", user)


async def queue_fragment(request: Request, user: SignedIn) -> Response:
    from bot.people import pending_pairings

    console = console_of(request)
    pending = await console.memory.pending_details()
    items = [{"details": details, "sides": sides_for(details, user)} for details in pending]
    pairings = await pending_pairings(console.memory) if user.sees_private else []
    return render(request, "_queue.html", user, items=items, pairings=pairings, choices=CHOICES)


async def _answer(request: Request, user: SignedIn, outcome: Outcome) -> Response:
    if request.headers.get("HX-Request"):
        return outcome_response(request, user, outcome)
    if outcome.status == "refused":
        return render(request, "error.html", user, status_code=403, error=outcome.text)
    return RedirectResponse("/queue", status_code=303)


async def decide(request: Request, user: SignedIn) -> Response:
    """/resolve, /dismiss, /approve or /deny ID, as the coordinator would type it."""
    console = console_of(request)
    item_id = str(request.path_params["id"])
    verb = str(request.path_params["verb"])
    if verb not in VERBS:
        return render(request, "error.html", user, status_code=404, error="No such action.")
    form = await request.form()
    args = [item_id]
    if verb == "resolve":
        words = str(form.get("own_words") or "").split()
        args += words or [str(form.get("choice") or "")]
        if str(form.get("notify") or "") == "on":
            args.append("--notify")
    outcome = await console.commands.run(user.speaker, Command(verb, args))
    assert outcome is not None  # every verb here is a declared command
    return await _answer(request, user, outcome)


async def pairing(request: Request, user: SignedIn) -> Response:
    """/approve-pair or /deny-pair CODE, through the command router like the decisions."""
    console = console_of(request)
    code = str(request.path_params["code"])
    verb = str(request.path_params["verb"])
    if verb not in ("approve", "deny"):
        return render(request, "error.html", user, status_code=404, error="No such action.")
    outcome = await console.commands.run(user.speaker, Command(f"{verb}-pair", [code]))
    assert outcome is not None
    return await _answer(request, user, outcome)


ROUTES = [
    page_route("/queue", queue_page),
    page_route("/queue/items", queue_fragment),
    action_route("/queue/{id:int}/{verb:str}", decide, role="coordinator"),
    action_route("/pairings/{code:str}/{verb:str}", pairing, role="coordinator"),
]
