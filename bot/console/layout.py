"""What every console page shares: the console's state, the guard on every endpoint, the
layout template and the navigation.

A page module (bot/console/pages/<page>.py) declares `ROUTES` built with `page_route` /
`action_route` (never a bare Starlette Route: those would skip the guard) and optionally
`NAV` (its entry in the top bar). Endpoints receive `(request, user)` and return
`render(...)` of a template that extends `base.html`. The guard signs the user in from the
session cookie, refuses a missing role (403, audited), and on any state-changing request
refuses a missing or wrong CSRF token (403, audited) before the endpoint runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bot.console.auth import COOKIE, SignedIn, same_secret, signed_in

if TYPE_CHECKING:
    from bot.commands import Commands
    from bot.config import Config
    from bot.console.live import ChangeFeed
    from bot.memory import ConsoleRole, Memory
    from bot.outcome import Outcome

log = logging.getLogger(__name__)

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
Endpoint = Callable[[Request, SignedIn], Awaitable[Response]]


@dataclass(frozen=True)
class NavItem:
    """A page's entry in the top bar, shown to users with at least `role`."""

    path: str
    label: str
    role: ConsoleRole = "viewer"
    order: int = 50


@dataclass
class Console:
    """What the pages work with, one per process (`request.app.state.console`)."""

    config: Config
    memory: Memory
    commands: Commands
    feed: ChangeFeed
    secure_cookies: bool
    nav: list[NavItem] = field(default_factory=list)
    web_chat: Any | None = None  # the hosted web entrance (adapters/web), when enabled
    chat_problem: str | None = None  # why the web entrance could not start here

    @property
    def timezone(self) -> str:
        return self.config.persona.timezone


def console_of(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _guarded(endpoint: Endpoint, role: ConsoleRole) -> Callable[[Request], Awaitable[Response]]:
    async def guarded_endpoint(request: Request) -> Response:
        console = console_of(request)
        user = await signed_in(console.memory, request.cookies.get(COOKIE))
        changing = request.method not in ("GET", "HEAD")
        if user is None:
            if changing or request.headers.get("HX-Request"):
                return PlainTextResponse("sign in first", status_code=401)
            return RedirectResponse("/sign-in", status_code=303)
        if changing and not await csrf_ok(request, user):
            await console.memory.audit(
                user.actor, "console.refused", request.url.path, reason="missing or wrong CSRF"
            )
            return PlainTextResponse("missing or wrong CSRF token", status_code=403)
        if not user.may(role):
            await console.memory.audit(
                user.actor, "console.refused", request.url.path, reason=f"needs {role}"
            )
            return PlainTextResponse(f"this needs the {role} role", status_code=403)
        return await endpoint(request, user)

    guarded_endpoint.__name__ = endpoint.__name__
    return guarded_endpoint


async def csrf_ok(request: Request, user: SignedIn) -> bool:
    given = request.headers.get("X-CSRF-Token")
    if given is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()  # Starlette caches it for the endpoint
            raw = form.get("csrf")
            given = raw if isinstance(raw, str) else None
    return same_secret(given, user.csrf)


def page_route(path: str, endpoint: Endpoint, *, role: ConsoleRole = "viewer") -> Route:
    """A page or fragment anyone with `role` may read (GET)."""
    return Route(path, _guarded(endpoint, role), methods=["GET"])


def action_route(path: str, endpoint: Endpoint, *, role: ConsoleRole) -> Route:
    """A state-changing POST: signed in, `role` at least, the CSRF token required."""
    return Route(path, _guarded(endpoint, role), methods=["POST"])


def render(
    request: Request,
    template: str,
    user: SignedIn | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    console = console_of(request)
    nav = [item for item in console.nav if user is not None and user.may(item.role)]
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {"user": user, "nav": nav, "timezone": console.timezone, **context},
        status_code=status_code,
    )


def local_time(moment: datetime | float | None, timezone: str) -> str:
    """A time as the console shows it: in the persona's timezone, to the second."""
    if moment is None:
        return "-"
    if isinstance(moment, int | float):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S")


TEMPLATES.env.filters["local_time"] = local_time


def outcome_response(request: Request, user: SignedIn, outcome: Outcome) -> Response:
    """What an htmx action answers: the outcome's sentence (`_outcome.html`, swapped into
    the page's `#outcome-area`, outside the live fragments) and an `HX-Trigger: changed`
    header so the live fragments redraw at once. An outcome inside a live fragment would be
    wiped by the redraw its own commit causes. 403 when the command router refused."""
    status_code = 403 if outcome.status == "refused" else 200
    answer = render(request, "_outcome.html", user, status_code=status_code, outcome=outcome)
    answer.headers["HX-Trigger"] = "changed"
    return answer
