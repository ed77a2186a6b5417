"""The soul editor in a real browser (Debian's Chromium through Playwright), against a real
`mirror console` and a running `mirror chat`: an edit typed in the page is checked as it is
typed, a rejected one saves nothing, a valid one reaches the chat's next reply; rollback;
only admins may edit, even by a hand-made POST."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def soul_path(console: Console) -> Path:
    from bot.config import load_config

    return load_config(console.config).soul.path


def versions(console: Console) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = mirror_json(console.config, "soul", "history")
    return found


def test_a_soul_edit_typed_in_the_page_changes_the_next_reply_of_a_running_chat(
    console: Console, admin_page: Any, tmp_path: Path
) -> None:
    chat = Chat(console.config, "phone", "alice")
    try:
        assert "Wren" in chat.say("What is your name?")
        page = admin_page
        page.goto(console.url + "/soul")
        editor = page.locator("#soul-text")
        original = editor.input_value()
        assert original == soul_path(console).read_text()
        before = versions(console)

        # Invalid: the required Voice section is gone. The check shows why as it is typed,
        # and saving anyway saves nothing.
        broken = original.replace("## Voice", "## Tone")
        editor.fill(broken)
        expect(page.locator("#soul-error")).to_contain_text("missing section '## Voice'")
        page.click("#soul-save")
        expect(page.locator("#soul-outcome")).to_contain_text("Not saved")
        expect(page.locator("#soul-error")).to_contain_text("missing section '## Voice'")
        # The same refusal for a form posted without a script: the page, with status 422.
        posted = page.request.post(
            console.url + "/soul", form={"text": broken, "csrf": csrf_of(page)}
        )
        assert posted.status == 422 and "missing section &#39;## Voice&#39;" in posted.text()
        assert versions(console) == before
        assert soul_path(console).read_text() == original
        assert "Wren" in chat.say("What is your name?")

        # Valid: the diff against the active version shows before saving.
        editor.fill(original.replace("Wren", "Heron"))
        expect(page.locator("#soul-valid")).to_contain_text("Valid soul “Heron”")
        expect(page.locator("#soul-diff .del")).to_contain_text(["-Wren"])
        expect(page.locator("#soul-diff .add")).to_contain_text(["+Heron"])
        page.click("#soul-save")
        expect(page.locator("#soul-outcome")).to_contain_text("Saved: version 2 (Heron)")
        expect(page.locator("#soul-active")).to_contain_text("v2 · Heron")

        newest = versions(console)[0]
        assert newest["id"] == 2 and newest["name"] == "Heron"
        assert newest["author"] == "console:admin"  # audited as the console user
        assert "Heron" in soul_path(console).read_text()  # the file stays the source
        assert "Heron" in chat.say("What is your name?")

        expect(page.locator("#soul-history li.version")).to_have_count(2)
        editor.evaluate("editor => { editor.scrollTop = 0; }")
        page_screenshot(page, "soul", tmp_path)
    finally:
        chat.quit()


def test_a_rollback_from_the_history_brings_the_old_soul_back(
    console: Console, admin_page: Any
) -> None:
    page = admin_page
    page.goto(console.url + "/soul")
    editor = page.locator("#soul-text")
    editor.fill(editor.input_value().replace("Wren", "Heron"))
    expect(page.locator("#soul-valid")).to_contain_text("Heron")
    page.click("#soul-save")
    expect(page.locator("#soul-outcome")).to_contain_text("Saved: version 2")

    page.locator("li.version[data-version='1']").get_by_role(
        "button", name="Roll back to v1"
    ).click()
    expect(page.locator("#soul-outcome")).to_contain_text("Soul version 3 is active")
    expect(page.locator("#soul-active")).to_contain_text("v3 · Wren")
    assert "# Name\nWren" in page.locator("#soul-text").input_value()
    [third, *_] = versions(console)
    assert (third["id"], third["source"], third["author"]) == (3, "rollback", "console:admin")
    assert (
        "Wren" in soul_path(console).read_text() and "Heron" not in soul_path(console).read_text()
    )

    chat = Chat(console.config, "phone", "alice")
    try:
        assert "Wren" in chat.say("What is your name?")
    finally:
        chat.quit()


def test_a_viewer_cannot_save_the_soul_even_with_a_hand_made_post(
    console: Console, new_page: Callable[[], Any]
) -> None:
    add_user(console.config, "vera", "viewer", "a long viewer password")
    viewer = new_page()
    sign_in(viewer, console, "vera", "a long viewer password")
    expect(viewer.locator("header nav")).not_to_contain_text("Soul")
    assert viewer.goto(console.url + "/soul").status == 403
    viewer.goto(console.url + "/")
    original = soul_path(console).read_text()
    before = versions(console)

    token = csrf_of(viewer)
    edit = {"text": original.replace("Wren", "Mallory"), "csrf": token}
    assert viewer.request.post(console.url + "/soul", form=edit).status == 403
    assert (
        viewer.request.post(console.url + "/soul/versions/1/rollback", form={"csrf": token}).status
        == 403
    )
    assert soul_path(console).read_text() == original
    assert versions(console) == before


def test_a_coordinator_who_is_not_an_admin_cannot_edit_the_soul(
    console: Console, new_page: Callable[[], Any]
) -> None:
    add_user(console.config, "cora", "coordinator", "a long coordinator password")
    page = new_page()
    sign_in(page, console, "cora", "a long coordinator password")
    expect(page.locator("header nav")).to_contain_text("People")
    expect(page.locator("header nav")).not_to_contain_text("Soul")
    assert page.goto(console.url + "/soul").status == 403
    page.goto(console.url + "/people")
    original = soul_path(console).read_text()
    before = versions(console)
    edit = {"text": original.replace("Wren", "Mallory"), "csrf": csrf_of(page)}
    assert page.request.post(console.url + "/soul", form=edit).status == 403
    refused = page.request.post(
        console.url + "/soul/versions/1/rollback", form={"csrf": csrf_of(page)}
    )
    assert refused.status == 403
    assert soul_path(console).read_text() == original
    assert versions(console) == before


def test_a_save_over_a_version_made_since_the_editor_opened_asks_for_a_second_look(
    console: Console, admin_page: Any, new_page: Callable[[], Any]
) -> None:
    first = admin_page
    first.goto(console.url + "/soul")
    second = new_page()
    second.goto(console.new_link())
    second.goto(console.url + "/soul")

    editor = second.locator("#soul-text")
    editor.fill(editor.input_value().replace("Wren", "Heron"))
    expect(second.locator("#soul-valid")).to_contain_text("Heron")
    second.click("#soul-save")
    expect(second.locator("#soul-outcome")).to_contain_text("Saved: version 2")

    mine = first.locator("#soul-text")
    mine.fill(mine.input_value().replace("Wren", "Kestrel"))
    expect(first.locator("#soul-valid")).to_contain_text("Kestrel")
    first.click("#soul-save")
    expect(first.locator("#soul-outcome")).to_contain_text("version 2 was saved since")
    expect(first.locator("#soul-diff .del")).to_contain_text(["-Heron"])  # against v2 now
    assert versions(console)[0]["name"] == "Heron"

    first.click("#soul-save")  # seen: saved on the second try
    expect(first.locator("#soul-outcome")).to_contain_text("Saved: version 3 (Kestrel)")
    assert "Kestrel" in soul_path(console).read_text()
