"""Recurring plans: APScheduler CronTrigger fields (JSON-ready) and their next occurrence.

Pure logic, no IO. A recurrence is a dict of CronTrigger fields plus its IANA `timezone`
({"day_of_week": "mon-fri", "hour": 8, "minute": 30, "timezone": "Europe/Lisbon"}); the
trigger computes each occurrence, so a daylight-saving change keeps the wall-clock time.
Never a home-made calendar.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")

_DAYS = {
    "monday": "mon",
    "tuesday": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "friday": "fri",
    "saturday": "sat",
    "sunday": "sun",
}
_EVERY = re.compile(
    r"\bevery\s+(?P<days>day|weekday|weekend(?:\s+day)?|"
    r"(?:(?:mon|tues|wednes|thurs|fri|satur|sun)day(?:s)?(?:\s*(?:,|and)\s*)?)+)"
    r"(?:\s+(?:at|by|around)\s+(?P<time>\d{1,2}(?::\d{2})?\s*(?:am|pm)?))?",
    re.I,
)
_CLOCK = re.compile(r"^(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ampm>am|pm)?$", re.I)


def normalized(fields: dict[str, Any] | None, timezone: str) -> dict[str, Any] | None:
    """Only CronTrigger fields, with a timezone (`timezone` when none is given); None when
    the trigger refuses them (or nothing is left)."""
    if not fields:
        return None
    kept = {key: value for key, value in fields.items() if key in CRON_FIELDS}
    if not kept:
        return None
    kept["timezone"] = str(fields.get("timezone") or timezone)
    try:
        trigger(kept)
    except (ValueError, TypeError, KeyError):
        return None
    return kept


def trigger(recurrence: dict[str, Any]) -> Any:
    from apscheduler.triggers.cron import CronTrigger

    fields = {key: value for key, value in recurrence.items() if key in CRON_FIELDS}
    return CronTrigger(timezone=recurrence.get("timezone") or "UTC", **fields)


def next_occurrence(recurrence: dict[str, Any], after: datetime) -> datetime | None:
    """The first occurrence strictly after `after` (None: the rule has no more)."""
    found: datetime | None = trigger(recurrence).get_next_fire_time(
        None, after + timedelta(seconds=1)
    )
    return found


def parse_every(text: str, timezone: str, default_time: str) -> dict[str, Any] | None:
    """ "every weekday at 8:30", "every Monday at 9", "every day at 21:00" as CronTrigger
    fields in `timezone`; a day with no time of day gets `default_time` ("HH:MM")."""
    match = _EVERY.search(text)
    if match is None:
        return None
    days = match.group("days").lower()
    fields: dict[str, Any] = {}
    if days.startswith("weekday"):
        fields["day_of_week"] = "mon-fri"
    elif days.startswith("weekend"):
        fields["day_of_week"] = "sat,sun"
    elif days != "day":
        named = re.findall(r"(mon|tues|wednes|thurs|fri|satur|sun)day", days)
        fields["day_of_week"] = ",".join(_DAYS[f"{name}day"] for name in named)
    clock = clock_time(match.group("time")) if match.group("time") else None
    hour, minute = clock or clock_time(default_time) or (9, 0)
    fields.update(hour=hour, minute=minute, timezone=timezone)
    return fields


def clock_time(text: str) -> tuple[int, int] | None:
    """ "8:30", "9", "9pm", "21:00" as (hour, minute); None when it is no time of day."""
    match = _CLOCK.match(text.strip())
    if match is None:
        return None
    hour, minute = int(match.group("h")), int(match.group("m") or 0)
    ampm = (match.group("ampm") or "").lower()
    if ampm == "pm" and hour < 12:
        hour += 12
    elif ampm == "am" and hour == 12:
        hour = 0
    if hour > 23 or minute > 59:
        return None
    return hour, minute


def describe(recurrence: dict[str, Any]) -> str:
    """ "every weekday at 08:30" (for replies)."""
    days = str(recurrence.get("day_of_week", "*"))
    words = {"*": "day", "mon-fri": "weekday", "sat,sun": "weekend day"}
    names = {short: long.capitalize() for long, short in _DAYS.items()}
    when = words.get(days) or " and ".join(names.get(d, d) for d in days.split(","))
    hour, minute = str(recurrence.get("hour")), str(recurrence.get("minute", 0))
    at = f" at {int(hour):02d}:{int(minute):02d}" if hour.isdigit() and minute.isdigit() else ""
    return f"every {when}{at}"
