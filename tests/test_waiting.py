"""tests/waiting.py: the suite's one poll-until helper."""

from __future__ import annotations

import pytest

from tests.waiting import wait_until


async def test_the_first_truthy_value_of_a_sync_condition_is_returned() -> None:
    calls: list[int] = []

    def third_call() -> list[int] | None:
        calls.append(len(calls))
        return calls if len(calls) == 3 else None

    assert await wait_until(third_call, 1.0, "the third call", interval=0) == [0, 1, 2]


async def test_an_async_condition_is_awaited() -> None:
    async def ready() -> str:
        return "ready"

    assert await wait_until(ready, 1.0, "ready") == "ready"


async def test_a_timeout_names_what_was_awaited_and_the_last_value() -> None:
    with pytest.raises(AssertionError) as raised:
        await wait_until(lambda: [], 0.05, "a row")
    assert str(raised.value) == "timed out after 0.05 s waiting for a row; last value: []"


async def test_a_false_or_none_last_value_is_left_out_and_what_can_be_computed_late() -> None:
    state = ["early"]

    def never() -> bool:
        state[0] = "late"
        return False

    with pytest.raises(AssertionError, match=r"^timed out after 0.05 s waiting for late$"):
        await wait_until(never, 0.05, lambda: state[0])
