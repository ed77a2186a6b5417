"""The promises page in a real browser, against a real `mirror console` and `mirror chat`:
a reminder asked for in the chat appears (due time in the browser's timezone) and is
cancelled or marked done by a click, which the person's own /reminders then shows; a
viewer sees private ones redacted and cannot end one even by hand."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.console.conftest import (
    Chat,
    Console,
    add_user,
    csrf_of,
    mirror_json,
    page_screenshot,
    sign_in,
)

BROWSER_TIMEZONE = "Asia/Tokyo"  # not the persona's (UTC): the page must send its own


@pytest.fixture
def tokyo_page(console: Console, browser: Any) -> Iterator[Any]:
    """A page signed in as the local admin, in a browser whose timezone is Tokyo's."""
    context = browser.new_context(
        viewport={"width": 1200, "height": 900}, timezone_id=BROWSER_TIMEZONE
    )
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # "Cancel #N?"
        page.goto(console.link)
        page.wait_for_selector("#whoami")
        yield page
    finally:
        context.close()


def active(console: Console) -> dict[str, str]:
    """Intention text -> status, for every intention."""
    return {item["text"]: item["status"] for item in mirror_json(console.config, "intentions")}


def test_a_reminder_from_a_chat_appears_and_is_cancelled_from_the_page(
    console: Console, tokyo_page: Any, tmp_path: Path
) -> None:
    from bot.reminders import local_time

    chat = Chat(console.config, "phone", "alice")
    try:
        chat.say("remind me to water the plants tomorrow")
        chat.say("remind me to call the bank in 2 hours")
        due = {item["text"]: item for item in mirror_json(console.config, "intentions", "--due")}
        plants, bank = due["water the plants"], due["call the bank"]

        page = tokyo_page
        page.goto(console.url + "/promises")
        expect(page.locator("#viewer-timezone")).to_have_text(BROWSER_TIMEZONE)
        row = page.locator(f"tr.promise[data-intention='{plants['id']}']")
        expect(row).to_contain_text("water the plants")
        expect(row).to_contain_text("alice")
        expect(row).to_contain_text("phone on local")
        at = datetime.fromisoformat(plants["due_at"]).timestamp()
        expect(row.locator("td.due")).to_contain_text(local_time(at, BROWSER_TIMEZONE))
        expect(row.locator("td.due")).to_contain_text("theirs: " + local_time(at, "UTC"))
        page_screenshot(page, "promises", tmp_path)

        row.get_by_role("button", name="Cancel").click()
        expect(page.locator("#outcome")).to_contain_text("Cancelled: #")
        expect(row).to_have_count(0)
        page.locator(f"tr.promise[data-intention='{bank['id']}']").get_by_role(
            "button", name="Done"
        ).click()
        expect(page.locator("#outcome")).to_contain_text("Marked done")
        expect(page.locator("#no-promises")).to_be_visible()

        statuses = active(console)
        assert statuses["water the plants"] == "cancelled"
        assert statuses["call the bank"] == "done"
        assert "You have no reminders" in chat.say("/reminders")
    finally:
        chat.quit()


def test_a_viewer_sees_private_promises_redacted_and_cannot_end_one(
    console: Console, new_page: Callable[[], Any]
) -> None:
    chat = Chat(console.config, "phone", "alice")
    try:
        chat.say("remind me to water the plants tomorrow")
    finally:
        chat.quit()
    [item] = mirror_json(console.config, "intentions", "--due")
    add_user(console.config, "vera", "viewer", "a long viewer password")
    viewer = new_page()
    sign_in(viewer, console, "vera", "a long viewer password")
    viewer.goto(console.url + "/promises")
    row = viewer.locator(f"tr.promise[data-intention='{item['id']}']")
    expect(row).to_contain_text("a plan from a private conversation")
    assert "water the plants" not in viewer.content() and "alice" not in viewer.content()
    expect(row.locator("button")).to_have_count(0)
    refused = viewer.request.post(
        f"{console.url}/promises/{item['id']}/cancel", form={"csrf": csrf_of(viewer)}
    )
    assert refused.status == 403
    assert active(console)["water the plants"] == "open"
