"""People: everyone the persona knows, their linked accounts, access per entrance (allow,
revoke), linking two accounts, and pairing codes waiting for a decision (approve, deny).

Decisions go through the chat command router where a command exists (`/revoke`,
`/approve-pair`, `/deny-pair`, with the console user as the speaker) and through
`bot.people` otherwise (`allow_access`, `link_accounts`), audited with `console:NAME` as the
actor; deciding needs the coordinator role. A viewer sees the list read-only and without
private content: no names, no account ids, no pairing codes; only each person's number,
the entrances of their accounts and whether they are let in.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bot.commands import Command
from bot.console.auth import SignedIn
from bot.console.layout import NavItem, action_route, console_of, page_route, render
from bot.outcome import Outcome, invalid

NAV = NavItem("/people", "People", role="viewer", order=40)
SHOWN = 200  # people listed, newest first


@dataclass(frozen=True)
class AccountView:
    """One account as this user may see it (address None: hidden from a viewer)."""

    entrance: str
    address: str | None
    policy: str
    access: str  # open | config | let in | revoked | denied | not let in | allowlist
    may_allow: bool
    may_revoke: bool


@dataclass(frozen=True)
class PersonView:
    id: int
    name: str | None
    accounts: list[AccountView]


async def people_views(request: Request, user: SignedIn) -> list[PersonView]:
    from bot.accounts import AccountRef
    from bot.people import list_people
    from bot.speaker import Roster

    console = console_of(request)
    memory, config = console.memory, console.config
    roster = Roster(config)
    shown = []
    for person in (await list_people(memory))[:SHOWN]:
        refs = [AccountRef.parse(address) for address in person.identities]
        policies = [config.access.entrance(ref.entrance).policy for ref in refs]
        # Grants and closed doors matter only where the entrance lets people in by pairing.
        granted = "pairing" in policies and await memory.person_granted(person.id)
        accounts = []
        for address, ref, policy in zip(person.identities, refs, policies, strict=True):
            closed = None
            if policy == "pairing" and not granted:
                found = await memory.account(ref.entrance, ref.external_id, create=False)
                closed = await memory.access_closed(found.identity_id) if found else None
            if roster.roles(ref) & {"admin", "coordinator", "allowed"}:
                access = "config"
            elif policy == "open":
                access = "open"
            elif policy == "allowlist":
                access = "allowlist"
            elif granted:
                access = "let in"
            elif closed is not None:
                access = closed[0]  # revoked | denied
            else:
                access = "not let in"
            accounts.append(
                AccountView(
                    entrance=ref.entrance,
                    address=address if user.sees_private else None,
                    policy=policy,
                    access=access,
                    may_allow=policy == "pairing" and access in ("not let in", "revoked", "denied"),
                    may_revoke=policy == "pairing" and access == "let in",
                )
            )
        shown.append(
            PersonView(
                id=person.id, name=person.name if user.sees_private else None, accounts=accounts
            )
        )
    return shown


async def people_page(request: Request, user: SignedIn) -> Response:
    return render(request, "people.html", user)


async def people_fragment(
    request: Request, user: SignedIn, outcome: Outcome | None = None
) -> Response:
    from bot.people import pending_pairings

    console = console_of(request)
    pairings = await pending_pairings(console.memory)
    # htmx swaps only 2xx answers in, so the page shows a refusal; a script gets its code.
    status_code = 200
    if outcome is not None and not request.headers.get("HX-Request"):
        status_code = {"ok": 200, "invalid": 422, "refused": 403}[outcome.status]
    return render(
        request,
        "_people.html",
        user,
        status_code=status_code,
        people=await people_views(request, user),
        pairings=pairings if user.sees_private else [],
        waiting=len(pairings),
        outcome=outcome,
    )


async def _answer(request: Request, user: SignedIn, outcome: Outcome) -> Response:
    if request.headers.get("HX-Request"):
        return await people_fragment(request, user, outcome)
    if outcome.status != "ok":
        return render(request, "error.html", user, status_code=422, error=outcome.text)
    return RedirectResponse("/people", status_code=303)


async def access(request: Request, user: SignedIn) -> Response:
    """Allow or revoke one account's access (ENTRANCE:ID in the form's `account`)."""
    from bot.people import allow_access

    console = console_of(request)
    verb = str(request.path_params["verb"])
    form = await request.form()
    account = str(form.get("account") or "").strip()
    if verb == "revoke":
        found = await console.commands.run(user.speaker, Command("revoke", [account]))
        assert found is not None  # /revoke is a declared command
        outcome = found
    elif verb == "allow":
        try:
            outcome = await allow_access(console.memory, console.config, account, user.actor)
        except ValueError as exc:
            outcome = invalid(str(exc))
    else:
        outcome = invalid("No such action.")
    return await _answer(request, user, outcome)


async def link(request: Request, user: SignedIn) -> Response:
    """Link two accounts (ENTRANCE:ID each) to one person, as `mirror link A B` does."""
    from bot.people import link_accounts

    console = console_of(request)
    form = await request.form()
    first = str(form.get("first") or "").strip()
    second = str(form.get("second") or "").strip()
    try:
        outcome = await link_accounts(console.memory, first, second, user.actor)
    except ValueError as exc:
        outcome = invalid(str(exc))
    return await _answer(request, user, outcome)


async def pairing(request: Request, user: SignedIn) -> Response:
    """/approve-pair or /deny-pair CODE through the command router."""
    console = console_of(request)
    verb = str(request.path_params["verb"])
    if verb not in ("approve", "deny"):
        return await _answer(request, user, invalid("No such action."))
    code = str(request.path_params["code"])
    outcome = await console.commands.run(user.speaker, Command(f"{verb}-pair", [code]))
    assert outcome is not None  # both are declared commands
    return await _answer(request, user, outcome)


ROUTES = [
    page_route("/people", people_page),
    page_route("/people/list", people_fragment),
    action_route("/people/link", link, role="coordinator"),
    action_route("/people/pairings/{code:str}/{verb:str}", pairing, role="coordinator"),
    action_route("/people/{verb:str}", access, role="coordinator"),
]
