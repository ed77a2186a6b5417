"""The console in a real browser (Debian's Chromium through Playwright), against a real
`mirror console` process and real `mirror chat` / `mirror run telegram` processes."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.conftest import mirror_env
from tests.console.conftest import (
    Chat,
    Console,
    Process,
    add_user,
    conflicts_in,
    csrf_of,
    mirror,
    page_screenshot,
    seed_conflict,
    sign_in,
    start_console,
    wait_for,
)
from tests.fakes.telegram_api import DEFAULT_TOKEN


def test_the_one_time_link_signs_in_once(console: Console, new_page: Callable[[], Any]) -> None:
    page = new_page()
    page.goto(console.link)
    expect(page.locator("#whoami")).to_have_text("admin (admin)")
    expect(page.locator("h1")).to_have_text("Mirror view")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")

    again = new_page()
    again.goto(console.link)
    expect(again.locator("[role=alert]")).to_contain_text("used or expired")
    again.goto(console.url + "/queue")  # no session: back to the sign-in page
    expect(again.locator("h1")).to_have_text("Sign in")


def test_a_conflict_from_two_chats_appears_live_and_is_resolved_by_clicks(
    console: Console, admin_page: Any, tmp_path: Path
) -> None:
    page = admin_page
    page.goto(console.url + "/queue")
    expect(page.locator("#queue-empty")).to_be_visible()
    phone = Chat(console.config, "phone", "alice")
    desk = Chat(console.config, "desk", "bob")
    try:
        phone.say("Can you call me on Friday at 3pm?")
        assert "coordinator" in desk.say("Could you review my draft on Friday at 3pm?")

        item = page.locator("article.item")  # no reload: the event stream brings it
        expect(item).to_have_count(1)
        expect(item.locator("[data-side=A]")).to_contain_text("call")
        expect(item.locator("[data-side=B]")).to_contain_text("review")
        item_id = item.get_attribute("data-item")
        page_screenshot(page, "queue", tmp_path)

        item.get_by_role("button", name="Keep A").click()
        expect(page.locator("#outcome")).to_contain_text(f"Resolved #{item_id}")
        expect(page.locator("#queue-empty")).to_be_visible()

        [decided] = conflicts_in(console.config)
        assert decided["status"] == "resolved" and decided["choice"] == "A"
        assert decided["resolved_by"] == "console:admin"  # audited as the console user

        promised = desk.say("What have you promised?")
        assert "My coordinator decided" in promised
        assert "drop “review bob's draft”" in promised
        assert "My coordinator decided" in phone.say("What have you promised?")
    finally:
        phone.quit()
        desk.quit()


def test_the_timeline_shows_a_telegram_message_as_it_lands(
    console_config: Path, new_page: Callable[[], Any]
) -> None:
    fake = Process([sys.executable, "-m", "tests.fakes.telegram_api", "--port", "0"])
    telegram: Process | None = None
    running: Console | None = None
    try:
        url = fake.wait_for_line(lambda line: line.startswith("READY ")).split()[1]
        config = console_config
        config.write_text(
            config.read_text() + f'\n[entrances.telegram]\nenabled = true\nbase_url = "{url}/bot"\n'
            f'base_file_url = "{url}/file/bot"\n'
        )
        telegram = mirror(
            "run",
            "telegram",
            "--config",
            str(config),
            env=mirror_env(MIRROR_TELEGRAM_TOKEN=DEFAULT_TOKEN),
        )
        running = start_console(config)
        page = new_page()
        page.goto(running.link)
        page.wait_for_selector("#whoami")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
        # The Telegram instance shows up in the mirror view once it registers.
        expect(page.locator("tr[data-instance=telegram]")).to_contain_text("alive")

        text = "the heron is back on the pond"
        pushed = httpx.post(
            f"{url}/_fake/push_message",
            json={"chat_id": 4242, "text": text, "user_id": 4242, "first_name": "Tess"},
        )
        assert pushed.status_code == 200, pushed.text
        db = config.parent / "memory.db"

        def stored() -> bool:
            with sqlite3.connect(db) as conn:
                return (
                    conn.execute("SELECT 1 FROM messages WHERE text = ?", (text,)).fetchone()
                    is not None
                )

        wait_for(stored, 30, "the message in memory.db")
        # From its commit in the Telegram process to the open page, without a reload. The
        # issue's "within a second" is a figure for bench/console.py (commit to event, p99);
        # here a loaded CI machine gets room, and only a page that never updates fails.
        landed = page.locator("li.msg.in[data-entrance=telegram]", has_text=text)
        expect(landed).to_be_visible(timeout=5_000)
        expect(landed).to_contain_text("Tess")
    finally:
        if running is not None:
            running.process.stop()
        if telegram is not None:
            telegram.stop()
        fake.stop()


def test_a_viewer_sees_no_private_text_and_cannot_resolve_even_by_hand(
    console: Console, admin_page: Any, new_page: Callable[[], Any]
) -> None:
    seed_conflict(console.config)
    [item] = conflicts_in(console.config)

    add_user(console.config, "vera", "viewer", "a long viewer password")
    viewer = new_page()
    sign_in(viewer, console, "vera", "a long viewer password")
    expect(viewer.locator("#whoami")).to_have_text("vera (viewer)")
    expect(viewer.locator("li.msg").first).to_be_visible()
    expect(viewer.locator("li.msg .redacted").first).to_have_text("a private message on local")
    expect(viewer.locator("li.msg", has_text="the club meets on the pier")).to_be_visible()
    assert "call me" not in viewer.content() and "alice" not in viewer.content()

    viewer.goto(console.url + "/queue")
    expect(viewer.locator("article.item")).to_have_count(1)
    expect(viewer.locator("article.item button")).to_have_count(0)  # nothing to press
    expect(viewer.locator("article.item")).not_to_contain_text("call")

    # A hand-made POST with the viewer's own session and CSRF token: refused by the server.
    refused = viewer.request.post(
        f"{console.url}/queue/{item['id']}/resolve",
        form={"choice": "A"},
        headers={"X-CSRF-Token": csrf_of(viewer)},
    )
    assert refused.status == 403
    assert conflicts_in(console.config)[0]["status"] == "open"


def test_a_post_without_the_csrf_token_is_refused(console: Console, admin_page: Any) -> None:
    seed_conflict(console.config)
    [item] = conflicts_in(console.config)
    target = f"{console.url}/queue/{item['id']}/dismiss"
    assert admin_page.request.post(target).status == 403  # the admin's cookie, no token
    assert admin_page.request.post(target, headers={"X-CSRF-Token": "guess"}).status == 403
    assert conflicts_in(console.config)[0]["status"] == "open"
    done = admin_page.request.post(target, headers={"X-CSRF-Token": csrf_of(admin_page)})
    assert done.status == 200
    assert conflicts_in(console.config)[0]["status"] == "dismissed"


def test_the_persona_answers_in_the_web_chat_as_its_own_instance(
    console: Console, admin_page: Any, tmp_path: Path
) -> None:
    page = admin_page
    page.goto(console.url + "/chat")
    page.fill("#say input[name=text]", "What is your name?")
    page.click("#say button[type=submit]")
    reply = page.locator("ol.chat li.msg.out")
    expect(reply).to_contain_text("Wren")
    expect(page.locator("#say input[name=text]")).to_have_value("")
    page_screenshot(page, "chat", tmp_path)

    page.goto(console.url + "/")
    expect(page.locator("tr[data-instance=web]")).to_contain_text("alive")
    said = page.locator("li.msg.out[data-entrance=web]").first
    expect(said).to_contain_text("Wren")
    page_screenshot(page, "mirror", tmp_path)
    said.locator("a.why").click()  # its provenance: soul version and context rows
    expect(page.locator("#soul-version")).to_contain_text("v1")
