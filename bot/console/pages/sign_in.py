"""Signing in and out: the one-time link `mirror console` prints, or a name and password.

The sign-in form is protected against login CSRF by a double-submit token (a cookie of its
own, repeated in the form); failed sign-ins are counted, rate-limited and audited.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bot.console.auth import (
    COOKIE,
    SignedIn,
    check_password,
    new_token,
    same_secret,
    start_session,
    token_hash,
)
from bot.console.layout import action_route, client_of, console_of, render

PRE_COOKIE = "mirror_console_pre"


def _with_session(request: Request, token: str) -> Response:
    console = console_of(request)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(console.config.console.session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=console.secure_cookies,
        path="/",
    )
    response.delete_cookie(PRE_COOKIE, path="/")
    return response


def _form(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    console = console_of(request)
    pre = new_token()
    response = render(request, "sign_in.html", None, status_code=status_code, pre=pre, error=error)
    response.set_cookie(
        PRE_COOKIE,
        pre,
        httponly=True,
        samesite="strict",
        secure=console.secure_cookies,
        path="/",
    )
    return response


async def sign_in_page(request: Request) -> Response:
    console = console_of(request)
    token = request.query_params.get("token")
    if token is None:
        return _form(request)
    found = await console.memory.use_sign_in_link(token_hash(token))
    if found is None:
        await console.memory.failed_sign_in(
            "(link)", client_of(request), "unknown, used or expired sign-in link"
        )
        return _form(
            request,
            "That sign-in link is used or expired; run `mirror console` for a new one.",
            status_code=403,
        )
    user, role = found
    session, _ = await start_session(console.memory, console.config, user, role)
    return _with_session(request, session)


async def sign_in_with_password(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    given = form.get("csrf")
    expected = request.cookies.get(PRE_COOKIE, "")
    if not expected or not same_secret(given if isinstance(given, str) else None, expected):
        return _form(request, "The form expired; try again.", status_code=403)
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    found = await check_password(console.memory, console.config, name, password, client_of(request))
    if isinstance(found, str):
        return _form(request, found, status_code=403)
    session, _ = await start_session(console.memory, console.config, found.name, found.role)
    return _with_session(request, session)


async def sign_out(request: Request, user: SignedIn) -> Response:
    console = console_of(request)
    token = request.cookies.get(COOKIE)
    if token:
        await console.memory.end_console_session(token_hash(token))
    await console.memory.audit(user.actor, "console.signed_out", user.name)
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


ROUTES = [
    Route("/sign-in", sign_in_page, methods=["GET"]),
    Route("/sign-in", sign_in_with_password, methods=["POST"]),
    action_route("/sign-out", sign_out, role="viewer"),
]
