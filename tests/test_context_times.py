"""How the prompt writes a moment (`Context.local_time`): on the person's clock, exactly as
strftime("%a %Y-%m-%d %H:%M") writes it in the C locale, across zones and DST changes."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from tests.test_lean_imports import turn_context


@pytest.mark.parametrize(
    "zone", ["UTC", "Europe/Lisbon", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]
)
def test_a_moment_is_written_as_strftime_writes_it(zone: str) -> None:
    context = turn_context().model_copy(update={"timezone": zone})
    rng = random.Random(zone)
    for _ in range(2000):  # 1906-2096: both sides of many DST changes
        moment = datetime.fromtimestamp(rng.uniform(-2e9, 4e9), UTC)
        expected = moment.astimezone(ZoneInfo(zone)).strftime("%a %Y-%m-%d %H:%M")
        assert context.local_time(moment) == expected
