"""Fixtures for the console's tests: a real `mirror console` process on a free port with a
temporary memory, real `mirror` processes driven synchronously, and Debian's Chromium
driven by Playwright's sync API (Playwright cannot download its own browser here).

Browser tests are plain sync functions (pytest-asyncio's auto mode leaves them alone; the
sync Playwright API must not run inside an event loop). A failing browser test leaves a
screenshot of each page it opened in var/screenshots/<test>-<n>.png.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import ROOT, mirror_env
from tests.fakes.server import free_port

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "var" / "screenshots"
LINK = re.compile(r"console: (http://\S+/sign-in\?token=\S+)")
COORDINATOR = "carol"


def wait_for(condition: Callable[[], T], timeout: float = 10.0, what: str = "it") -> T:
    """The sync twin of tests.waiting.wait_until: poll `condition` until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {value!r}")
        time.sleep(0.02)


class Process:
    """A child process whose output lines are collected by threads as they arrive."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env or mirror_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        for stream, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._collect, args=(stream, into), daemon=True).start()

    def _collect(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(
        self, predicate: Callable[[str], bool], *, since: int = 0, timeout: float = 60.0
    ) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines[since:] if predicate(line)), None)
                if found is not None:
                    return found
                if self.proc.poll() is not None:
                    raise AssertionError(f"process exited: {self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching line within {timeout}s: {self.tail()}")
                self._changed.wait(left)

    def tail(self) -> str:
        return (
            "\nstdout: " + "\n".join(self.lines[-20:]) + "\nstderr: " + "\n".join(self.stderr[-30:])
        )

    def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


def mirror(*args: str, env: dict[str, str] | None = None) -> Process:
    return Process([sys.executable, "-m", "bot.cli", *args], env=env)


class Chat(Process):
    """`mirror chat --jsonl` as instance INSTANCE, talking as PERSON."""

    def __init__(self, config: Path, instance: str, person: str) -> None:
        super().__init__(
            [
                sys.executable,
                "-m",
                "bot.cli",
                "chat",
                "--config",
                str(config),
                "--instance",
                instance,
                "--as",
                person,
                "--jsonl",
            ]
        )
        self.wait_for_line(lambda line: '"type": "ready"' in line)

    def say(self, text: str) -> str:
        before = len(self.lines)
        self.write(text)
        line = self.wait_for_line(lambda line: '"type": "reply"' in line, since=before)
        return str(json.loads(line)["text"])

    def quit(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        finally:
            code = self.stop()
        return code


class Console:
    """A running `mirror console`: its URL, its first sign-in link, an HTTP client."""

    def __init__(self, process: Process, url: str, link: str, config: Path) -> None:
        self.process = process
        self.url = url
        self.link = link
        self.config = config

    def new_link(self, user: str = "admin", role: str = "admin") -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bot.cli",
                "console",
                "link",
                "--user",
                user,
                "--role",
                role,
                "--config",
                str(self.config),
            ],
            cwd=ROOT,
            env=mirror_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        found = LINK.search(done.stdout)
        assert found, done.stdout + done.stderr
        return found.group(1)


def console_toml(port: int, extra: str = "") -> str:
    return (
        f"[console]\nenabled = true\nport = {port}\n\n"
        f'[coordinator]\naddress = "local:{COORDINATOR}"\n\n'
        f'[access]\nadmins = ["local:{COORDINATOR}"]\n\n' + extra
    )


@pytest.fixture
def console_config(write_config: Callable[..., Path]) -> Path:
    return write_config(console_toml(free_port()))


def start_console(config: Path, env: dict[str, str] | None = None) -> Console:
    process = mirror("console", "--config", str(config), env=env)
    try:
        line = process.wait_for_line(lambda line: "sign-in?token=" in line)
        found = LINK.search(line)
        assert found, line
        link = found.group(1)
        url = link.split("/sign-in")[0]

        def serving() -> bool:
            try:
                return httpx.get(url + "/sign-in", timeout=1).status_code == 200
            except httpx.HTTPError:
                assert process.proc.poll() is None, process.tail()
                return False

        wait_for(serving, 30, "the console to serve")
    except BaseException:
        process.stop()
        raise
    return Console(process, url, link, config)


@pytest.fixture
def console(console_config: Path) -> Iterator[Console]:
    running = start_console(console_config)
    try:
        yield running
    finally:
        running.process.stop()


# The browser ----------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. Not for the session: while the sync Playwright API is
    running, its event loop counts as this thread's running loop, and pytest-asyncio could
    not run an async test in the same worker; so keep async tests out of browser modules."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/install-test-deps.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield found
        finally:
            found.close()


@pytest.fixture
def new_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    """Open pages in fresh browser contexts (each its own cookies); screenshots of all of
    them when the test fails."""
    contexts: list[Any] = []
    pages: list[Any] = []

    def open_page() -> Any:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        pages.append(page)
        return page

    yield open_page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for number, page in enumerate(pages, start=1):
            try:
                page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}-{number}.png"))
            except Exception:  # a closed page: nothing to show
                pass
    for context in contexts:
        context.close()


@pytest.fixture
def admin_page(console: Console, new_page: Callable[[], Any]) -> Any:
    """A page signed in as the local admin with the one-time link."""
    page = new_page()
    page.goto(console.link)
    page.wait_for_selector("#whoami")
    page.wait_for_selector("#live-state[data-state=live]")
    return page


def sign_in(page: Any, console: Console, name: str, password: str) -> None:
    page.goto(console.url + "/sign-in")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_selector("#whoami")


def add_user(config: Path, name: str, role: str, password: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot.cli",
            "console",
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            "--config",
            str(config),
        ],
        cwd=ROOT,
        env=mirror_env(),
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def mirror_json(config: Path, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", *args, "--json", "--config", str(config)],
        cwd=ROOT,
        env=mirror_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def csrf_of(page: Any) -> str:
    headers = json.loads(page.get_attribute("body", "hx-headers"))
    return str(headers["X-CSRF-Token"])


def seed_conflict(config: Path) -> None:
    """What two `mirror chat` processes leave behind when alice (on phone) and bob (on desk)
    both ask for Friday 3pm in private chats, written straight to memory (faster than two
    chat processes, for tests about who may decide rather than how items arise), plus a
    message in a group."""
    import asyncio

    from bot.config import load_config
    from bot.memory import Memory, NewIntention
    from bot.models import Author, Incoming

    cfg = load_config(config)

    async def seed() -> None:
        async with Memory(cfg.memory.path) as memory:
            due = memory.now + 3 * 86400
            for instance, person, text in (
                ("phone", "alice", "Can you call me on Friday at 3pm?"),
                ("desk", "bob", "Could you review my draft on Friday at 3pm?"),
            ):
                recorded = await memory.record_incoming(
                    Incoming(
                        entrance="local",
                        conversation_id=f"{instance}:{person}",
                        author=Author(external_id=person, display_name=person),
                        text=text,
                    ),
                    instance,
                    status="observed",
                )
                await memory.add_intention(
                    NewIntention(
                        instance,
                        "local",
                        recorded.conversation_id,
                        recorded.person_id,
                        "private",
                        text.split(" on ")[0],
                        text.split()[2],
                        due,
                        3600,
                        None,
                        recorded.message_id,
                    )
                )
            await memory.record_incoming(
                Incoming(
                    entrance="local",
                    conversation_id="club",
                    conversation_kind="group",
                    author=Author(external_id="dana", display_name="dana"),
                    text="the club meets on the pier",
                ),
                "phone",
                status="observed",
            )

    # In a thread of its own: the sync Playwright API owns this thread's event loop.
    worker = threading.Thread(target=asyncio.run, args=(seed(),))
    worker.start()
    worker.join(60)


def conflicts_in(config: Path) -> list[dict[str, Any]]:
    """The coordinator's items as memory.db holds them (a read, cheaper than the CLI)."""
    import sqlite3

    from bot.config import load_config

    with sqlite3.connect(load_config(config).memory.path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM conflicts ORDER BY id")]


SHOTS = ROOT / "docs" / "screenshots"


def page_screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """A screenshot of a page for the README: docs/screenshots/NAME.png when the env var
    MIRROR_UPDATE_SCREENSHOTS=1, else in the test's tmp folder (taken either way, so a
    page that cannot be drawn fails the test)."""
    folder = SHOTS if os.environ.get("MIRROR_UPDATE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
