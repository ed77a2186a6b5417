"""The soul editor, for admins only (the guard refuses everyone else, even a hand-made
request): SOUL.md edited in the page, checked as you type by the same parser every process
uses (`bot.soul.parse_soul`), with the diff against the active version before saving; the
versions with their diffs, and rollback.

Saving goes through `bot.soul_admin.save_soul` (a new version, written to SOUL.md so the
file stays the source every process watches); a rollback runs `/soul rollback N` through
the command router, exactly as in an admin's chat. Both are audited with `console:NAME` as
the actor. A rejected edit shows why and saves nothing.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from bot.commands import Command
from bot.console.auth import SignedIn
from bot.console.layout import NavItem, action_route, console_of, page_route, render
from bot.models import SoulVersion
from bot.outcome import Outcome, invalid

NAV = NavItem("/soul", "Soul", role="admin", order=30)
HISTORY = 20  # versions listed, each with its diff against the one before


@dataclass(frozen=True)
class DiffLine:
    kind: str  # add | del | hunk | file | same
    text: str


def diff_lines(before: str, after: str, before_name: str, after_name: str) -> list[DiffLine]:
    """A unified diff, one line each with its kind (for colouring)."""
    found = []
    for line in difflib.unified_diff(
        before.splitlines(), after.splitlines(), before_name, after_name, lineterm=""
    ):
        if line.startswith(("---", "+++")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        found.append(DiffLine(kind, line))
    return found


def edited_text(raw: object) -> str:
    """The textarea's text as a file would hold it (browsers send CRLF line ends)."""
    return str(raw or "").replace("\r\n", "\n").replace("\r", "\n")


async def active_version(request: Request) -> SoulVersion | None:
    """The active version; the file is recorded first when memory has none yet."""
    from bot.soul import sync_soul_file

    console = console_of(request)
    version = await console.memory.active_soul()
    if version is None:
        config = console.config
        version = await sync_soul_file(
            console.memory, config.soul.path, max_bytes=config.soul.max_bytes
        )
    return version


async def soul_page(request: Request, user: SignedIn) -> Response:
    active = await active_version(request)
    return render(request, "soul.html", user, active=active, text=active.text if active else "")


async def check_fragment(request: Request, user: SignedIn) -> Response:
    """Is the text in the editor a valid soul, and what would saving it change?"""
    form = await request.form()
    text = edited_text(form.get("text"))
    active = await console_of(request).memory.active_soul()
    return _check(request, user, text, active)


def _check(
    request: Request,
    user: SignedIn,
    text: str,
    active: SoulVersion | None,
    *,
    outcome: Outcome | None = None,
    status_code: int = 200,
) -> Response:
    from bot.soul import SoulError, parse_soul

    config = console_of(request).config
    error, soul = None, None
    try:
        soul = parse_soul(text, max_bytes=config.soul.max_bytes)
    except SoulError as exc:
        error = str(exc)
    before = active.text if active else ""
    name = f"v{active.id} (active)" if active else "(no version yet)"
    # htmx swaps the fragment into the editor; a plain form post (no script) gets the page.
    whole_page = not request.headers.get("HX-Request")
    return render(
        request,
        "soul.html" if whole_page else "_soul_check.html",
        user,
        status_code=status_code,
        check=whole_page,
        text=text,
        error=error,
        soul=soul,
        unchanged=soul is not None and active is not None and soul.sha256 == active.sha256,
        diff=diff_lines(before, text, name, "your edit"),
        active=active,
        outcome=outcome,
    )


async def save(request: Request, user: SignedIn) -> Response:
    """Save the edit as a new version (and SOUL.md); a rejected one saves nothing."""
    from bot.soul import SoulError
    from bot.soul_admin import save_soul

    console = console_of(request)
    form = await request.form()
    text = edited_text(form.get("text"))
    before = await console.memory.active_soul()
    base = str(form.get("base") or "")
    if before is not None and base.isdigit() and int(base) != before.id:
        # Another admin (or an edit of the file) made a newer version since this editor
        # opened: saving now would silently undo it. The diff is now against that one.
        outcome = invalid(
            f"Not saved: version {before.id} was saved since you opened the editor "
            f"({before.source}{' by ' + before.author if before.author else ''}). The "
            "changes below are against it now; save again to replace it."
        )
        status_code = 200 if request.headers.get("HX-Request") else 409
        return _check(request, user, text, before, outcome=outcome, status_code=status_code)
    try:
        version = await save_soul(console.memory, console.config, text, user.actor)
    except SoulError as exc:
        outcome = invalid(f"Not saved: {exc}. The active version stays.")
        # htmx swaps only 2xx answers in: the page shows the refusal; a script gets 422.
        status_code = 200 if request.headers.get("HX-Request") else 422
        return _check(request, user, text, before, outcome=outcome, status_code=status_code)
    except OSError as exc:
        outcome = invalid(
            f"Not saved: SOUL.md could not be written ({exc}). The active version stays."
        )
        return _check(request, user, text, before, outcome=outcome)
    if before is not None and before.id == version.id:
        outcome = Outcome(f"Nothing to save: that is version {version.id} already.")
    else:
        outcome = Outcome(
            f"Saved: version {version.id} ({version.name}) is active; every instance speaks "
            "with it from its next turn.",
            changed=True,
        )
    return _check(request, user, text, version, outcome=outcome)


async def history_fragment(request: Request, user: SignedIn) -> Response:
    """The newest versions, each with its diff against the one before it."""
    memory = console_of(request).memory
    versions = await memory.soul_history(limit=HISTORY + 1)
    shown = []
    for index, version in enumerate(versions[:HISTORY]):
        older = versions[index + 1] if index + 1 < len(versions) else None
        diff = (
            diff_lines(older.text, version.text, f"v{older.id}", f"v{version.id}")
            if older is not None
            else []
        )
        shown.append({"version": version, "diff": diff, "older": older})
    active_id = versions[0].id if versions else None
    return render(request, "_soul_history.html", user, versions=shown, active_id=active_id)


async def rollback(request: Request, user: SignedIn) -> Response:
    """/soul rollback N through the command router, as an admin types it in chat; the page
    comes back with the now active version in the editor."""
    console = console_of(request)
    number = int(request.path_params["id"])
    outcome = await console.commands.run(user.speaker, Command("soul", ["rollback", str(number)]))
    assert outcome is not None  # /soul is a declared command
    active = await console.memory.active_soul()
    return render(
        request,
        "soul.html",
        user,
        status_code={"ok": 200, "invalid": 422, "refused": 403}[outcome.status],
        active=active,
        text=active.text if active else "",
        outcome=outcome,
    )


ROUTES = [
    page_route("/soul", soul_page, role="admin"),
    page_route("/soul/history", history_fragment, role="admin"),
    action_route("/soul/check", check_fragment, role="admin"),
    action_route("/soul", save, role="admin"),
    action_route("/soul/versions/{id:int}/rollback", rollback, role="admin"),
]
