"""The people page in a real browser, against a real `mirror console` and a `mirror chat`
whose entrance lets people in by pairing: a pairing code approved by a click, access
revoked and allowed again by clicks, each reaching the person's next message; a viewer sees
the list without names, accounts or codes and cannot change access even by hand."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.console.conftest import (
    Chat,
    Console,
    add_user,
    console_toml,
    csrf_of,
    mirror_json,
    page_screenshot,
    sign_in,
    start_console,
)
from tests.fakes.server import free_port

PAIRING = '[access.local]\npolicy = "pairing"\n'


def audited(console: Console) -> set[tuple[str, str]]:
    from bot.config import load_config

    with sqlite3.connect(load_config(console.config).memory.path) as conn:
        return set(conn.execute("SELECT actor, action FROM audit"))


@pytest.fixture
def console(write_config: Callable[..., Path]) -> Iterator[Console]:
    """A console whose local entrance (`mirror chat`) lets in only people it paired."""
    running = start_console(write_config(console_toml(free_port(), PAIRING)))
    try:
        yield running
    finally:
        running.process.stop()


@pytest.fixture
def admin_page(console: Console, new_page: Callable[[], Any]) -> Any:
    page = new_page()
    page.goto(console.link)
    page.wait_for_selector("#whoami")
    return page


def test_pairing_approved_then_access_revoked_and_allowed_from_the_page(
    console: Console, admin_page: Any, tmp_path: Path
) -> None:
    dave = Chat(console.config, "phone", "dave")
    try:
        asked = dave.say("hello, may I talk to you?")
        assert "approve this code" in asked
        [waiting] = mirror_json(console.config, "pair", "list")
        assert waiting["code"] in asked

        page = admin_page
        page.goto(console.url + "/people")
        request = page.locator(f"article.pairing[data-code='{waiting['code']}']")
        expect(request).to_contain_text("local:dave")  # live: no reload needed after this
        request.get_by_role("button", name="Approve").click()
        expect(page.locator("#outcome")).to_contain_text("Approved: dave (local:dave)")
        expect(page.locator("#no-pairings")).to_be_visible()
        assert "Wren" in dave.say("What is your name?")

        account = page.locator("tr.account[data-account='local:dave']")
        expect(account.locator("td.access")).to_have_text("let in")
        page_screenshot(page, "people", tmp_path)
        account.get_by_role("button", name="Revoke").click()
        expect(page.locator("#outcome")).to_contain_text("Revoked: local:dave")
        expect(account.locator("td.access")).to_have_text("revoked")
        assert "taken back your access" in dave.say("What is your name?")

        account.get_by_role("button", name="Allow").click()
        expect(page.locator("#outcome")).to_contain_text("Allowed: local:dave")
        expect(account.locator("td.access")).to_have_text("let in")
        assert "Wren" in dave.say("What is your name?")

        done = audited(console)  # every decision with the console user as the actor
        for action in ("access.paired", "access.revoked", "access.granted"):
            assert ("console:admin", action) in done, action
    finally:
        dave.quit()


def test_a_pairing_request_denied_from_the_page_is_not_let_in(
    console: Console, admin_page: Any
) -> None:
    erin = Chat(console.config, "desk", "erin")
    try:
        asked = erin.say("hello?")
        [waiting] = mirror_json(console.config, "pair", "list")
        assert waiting["code"] in asked
        page = admin_page
        page.goto(console.url + "/people")
        page.locator(f"article.pairing[data-code='{waiting['code']}']").get_by_role(
            "button", name="Deny"
        ).click()
        expect(page.locator("#outcome")).to_contain_text("Denied: erin (local:erin)")
        assert mirror_json(console.config, "pair", "list") == []
        account = page.locator("tr.account[data-account='local:erin']")
        expect(account.locator("td.access")).to_have_text("denied at pairing")

        # Linking her Telegram account makes it hers: the same person, the same closed door.
        page.fill("#link-form input[name=first]", "local:erin")
        page.fill("#link-form input[name=second]", "telegram:777")
        page.click("#link-form button[type=submit]")
        expect(page.locator("#outcome")).to_contain_text("Linked: local:erin, telegram:777")
        person = page.locator("li.person", has=account)
        expect(person.locator("tr.account")).to_have_count(2)
        assert {"local:erin", "telegram:777"} <= {
            address
            for found in mirror_json(console.config, "people")
            for address in found["identities"]
        }
    finally:
        erin.quit()


def test_a_viewer_sees_people_without_private_content_and_cannot_change_access(
    console: Console, new_page: Callable[[], Any]
) -> None:
    fay = Chat(console.config, "phone", "fay")
    try:
        fay.say("hello there")
    finally:
        fay.quit()
    [waiting] = mirror_json(console.config, "pair", "list")
    add_user(console.config, "vera", "viewer", "a long viewer password")
    viewer = new_page()
    sign_in(viewer, console, "vera", "a long viewer password")
    viewer.goto(console.url + "/people")
    expect(viewer.locator("li.person")).to_have_count(1)
    expect(viewer.locator("li.person")).to_contain_text("an account on local")
    expect(viewer.locator("#no-pairings")).to_contain_text("1 waiting")
    content = viewer.content()
    assert "fay" not in content and waiting["code"] not in content
    expect(viewer.locator("li.person button")).to_have_count(0)

    token = csrf_of(viewer)
    for path, form in (
        ("/people/allow", {"account": "local:fay"}),
        ("/people/revoke", {"account": "local:fay"}),
        (f"/people/pairings/{waiting['code']}/approve", {}),
        ("/people/link", {"first": "local:fay", "second": "local:vera"}),
    ):
        refused = viewer.request.post(console.url + path, form={**form, "csrf": token})
        assert refused.status == 403, path
    assert mirror_json(console.config, "pair", "list") == [waiting]
