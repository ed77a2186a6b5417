"""A person's own reminders and promises, for people: their local times and /snooze's words.

Pure functions (no IO, no memory): `bot.commands` reads memory and renders with these, and
the CLI shows operators the same lines. Never decides who may see what: callers pass only
what the viewer may see.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.memory import Upcoming

_SPAN = re.compile(r"^(?P<n>\d{1,4})\s*(?P<unit>m|min|mins|h|hr|hrs|d)$")
_UNIT_S = {"m": 60, "min": 60, "mins": 60, "h": 3600, "hr": 3600, "hrs": 3600, "d": 86400}


def known_timezone(name: str) -> str | None:
    """The IANA name as zoneinfo knows it, or None ('Europe/Lisbon' yes, 'Mars/Base' no)."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def local_time(epoch: float, timezone: str) -> str:
    """'Thu 2026-12-03 09:00 Europe/Lisbon'."""
    moment = datetime.fromtimestamp(epoch, ZoneInfo(timezone))
    return f"{moment:%a %Y-%m-%d %H:%M} {timezone}"


def snooze_until(word: str, *, due_at: float | None, now: float, timezone: str) -> float | None:
    """When '/snooze N WORD' moves an intention to, or None when WORD is not one we read.

    '30m', '2h', '1d': that long after the later of now and its due time (a reminder that
    has not fired yet moves back; one that fired comes again that long from now).
    'tomorrow': the same local time (its due time's, else now's) on tomorrow's date."""
    word = word.strip().lower()
    if word == "tomorrow":
        zone = ZoneInfo(timezone)
        today = datetime.fromtimestamp(now, zone)
        at = datetime.fromtimestamp(due_at if due_at is not None else now, zone)
        day = today.date() + timedelta(days=1)
        return datetime.combine(day, at.time().replace(tzinfo=None), zone).timestamp()
    match = _SPAN.match(word)
    if match is None or int(match["n"]) == 0:
        return None
    return max(now, due_at or now) + int(match["n"]) * _UNIT_S[match["unit"]]


def upcoming_line(item: Upcoming, timezone: str) -> str:
    """'#12 reminder · Thu 2026-12-03 09:00 Europe/Lisbon · “stand up” (repeats)'."""
    when = local_time(item.due_at, timezone) if item.due_at is not None else "no time set"
    repeats = " (repeats)" if item.recurring else ""
    return f"#{item.id} {item.kind} · {when} · “{item.text}”{repeats}"
