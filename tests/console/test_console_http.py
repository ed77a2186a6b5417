"""The console's security rules at the HTTP level (Starlette's TestClient, the app in this
process): every page needs a session, links work once, cookies are locked down, CSRF and
roles are checked on the server, failed sign-ins are limited and audited."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Mount, Route

from bot.config import Config, load_config
from bot.console.app import create_app
from bot.console.auth import hash_password, mint_sign_in_link, refuse_unsafe_bind
from bot.memory import Memory
from tests.conftest import run_mirror
from tests.console.conftest import conflicts_in, console_toml, seed_conflict

with warnings.catch_warnings():  # Starlette 1.x would rather have httpx2; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

BASE = "http://127.0.0.1"


def in_thread(work: Callable[[Memory], Any], config: Config) -> Any:
    """Run `work(memory)` on memory.db in a thread of its own (TestClient owns this one's
    loop while the app runs)."""
    result: list[Any] = []

    async def go() -> None:
        async with Memory(config.memory.path) as memory:
            result.append(await work(memory))

    worker = threading.Thread(target=asyncio.run, args=(go(),))
    worker.start()
    worker.join(60)
    return result[0]


@pytest.fixture
def config_path(write_config: Callable[..., Path]) -> Path:
    return write_config(console_toml(8377))


@pytest.fixture
def config(config_path: Path) -> Config:
    return load_config(config_path)


@pytest.fixture
def client(config: Config) -> Iterator[TestClient]:
    with TestClient(create_app(config), base_url=BASE, follow_redirects=False) as found:
        yield found


def link(config: Config, user: str = "admin", role: str = "admin") -> str:
    url = in_thread(lambda memory: mint_sign_in_link(memory, config, user=user, role=role), config)
    return str(url).split(":8377", 1)[1]


def signed_in(client: TestClient, config: Config, role: str = "admin") -> str:
    """Sign `client` in as a user of `role`; the session's CSRF token."""
    answer = client.get(link(config, user=f"{role}1", role=role))
    assert answer.status_code == 303
    page = client.get("/")
    found = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def audit(config: Config, action: str) -> list[tuple[str, str | None]]:
    with sqlite3.connect(config.memory.path) as conn:
        return list(
            conn.execute("SELECT actor, detail FROM audit WHERE action = ? ORDER BY id", (action,))
        )


def test_every_page_needs_a_session(client: TestClient) -> None:
    app = client.app
    checked = 0
    for route in app.routes:  # type: ignore[attr-defined]
        if isinstance(route, Mount) or not isinstance(route, Route) or route.path == "/sign-in":
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        for method in route.methods or ():
            if method == "HEAD":
                continue
            answer = client.request(method, path)
            if method == "GET":
                assert answer.status_code == 303, path
                assert answer.headers["location"] == "/sign-in"
            else:
                assert answer.status_code == 401, (method, path)
            checked += 1
    assert checked >= 8
    assert client.get("/static/htmx.min.js").status_code == 200  # static files are public


def test_a_sign_in_link_works_once_and_sets_a_locked_down_cookie(
    client: TestClient, config: Config
) -> None:
    path = link(config)
    first = client.get(path)
    assert first.status_code == 303 and first.headers["location"] == "/"
    cookie = next(v for k, v in first.headers.multi_items() if k == "set-cookie")
    assert "mirror_console=" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # loopback, nothing in front
    assert client.get("/").status_code == 200

    client.cookies.clear()
    again = client.get(path)
    assert again.status_code == 403 and "used or expired" in again.text
    assert client.get("/").status_code == 303
    assert audit(config, "console.sign_in_refused")


def test_cookies_are_secure_behind_a_proxy(
    write_config: Callable[..., Path],
) -> None:
    config = load_config(write_config(console_toml(8377, "")))
    config.console.behind_proxy = True
    with TestClient(create_app(config), base_url=BASE, follow_redirects=False) as client:
        answer = client.get(link(config))
        assert "Secure" in answer.headers["set-cookie"]


def test_binding_beyond_loopback_needs_a_proxy(config: Config, config_path: Path) -> None:
    config.console.host = "0.0.0.0"
    assert "behind_proxy" in (refuse_unsafe_bind(config) or "")
    config.console.behind_proxy = True
    assert refuse_unsafe_bind(config) is None
    refused = run_mirror("console", "--host", "0.0.0.0", "--config", str(config_path))
    assert refused.returncode == 2
    assert "refusing to serve the console on 0.0.0.0" in refused.stderr


def test_a_post_without_the_csrf_token_is_refused_and_audited(
    client: TestClient, config: Config, config_path: Path
) -> None:
    token = signed_in(client, config)
    seed_conflict(config_path)
    [item] = conflicts_in(config_path)
    target = f"/queue/{item['id']}/dismiss"
    assert client.post(target).status_code == 403
    assert client.post(target, data={"csrf": "wrong"}).status_code == 403
    assert client.post(target, headers={"X-CSRF-Token": token + "x"}).status_code == 403
    assert conflicts_in(config_path)[0]["status"] == "open"
    assert len(audit(config, "console.refused")) == 3
    done = client.post(target, data={"csrf": token})
    assert done.status_code == 303  # a plain form: back to the queue
    assert conflicts_in(config_path)[0]["status"] == "dismissed"


def test_roles_are_enforced_on_the_server(
    client: TestClient, config: Config, config_path: Path
) -> None:
    seed_conflict(config_path)
    [item] = conflicts_in(config_path)
    token = signed_in(client, config, role="viewer")
    refused = client.post(
        f"/queue/{item['id']}/resolve", data={"choice": "A"}, headers={"X-CSRF-Token": token}
    )
    assert refused.status_code == 403
    assert conflicts_in(config_path)[0]["status"] == "open"
    [(actor, detail)] = audit(config, "console.refused")
    assert actor == "console:viewer1" and "needs coordinator" in (detail or "")
    # A viewer sees no private text, and cannot filter by person.
    timeline = client.get("/mirror/timeline").text
    assert "call me" not in timeline and "a private message on local" in timeline
    assert "the club meets on the pier" in timeline
    assert 'name="person"' not in client.get("/").text
    private_id = re.search(r'class="msg in private" data-message="(\d+)"', timeline)
    assert private_id
    assert client.get(f"/messages/{private_id.group(1)}").status_code == 403
    assert client.get("/queue/items").status_code == 200

    client.cookies.clear()
    token = signed_in(client, config, role="coordinator")
    decided = client.post(
        f"/queue/{item['id']}/resolve",
        data={"own_words": "call alice, move the review"},
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert decided.status_code == 200 and f"Resolved #{item['id']}" in decided.text
    row = conflicts_in(config_path)[0]
    assert row["status"] == "resolved" and row["resolved_by"] == "console:coordinator1"
    assert row["resolution"] == "call alice, move the review"


def test_only_the_queue_commands_run_from_the_queue(client: TestClient, config: Config) -> None:
    token = signed_in(client, config, role="admin")
    answer = client.post("/queue/1/soul", headers={"X-CSRF-Token": token})
    assert answer.status_code == 404


def test_failed_sign_ins_are_limited_and_audited(
    client: TestClient, config: Config, config_path: Path
) -> None:
    hashed = hash_password("correct horse battery")
    in_thread(lambda memory: memory.add_console_user("ann", "coordinator", hashed, "test"), config)
    assert hashed.startswith("$argon2")

    def attempt(password: str) -> int:
        form = client.get("/sign-in")
        pre = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert pre
        answer = client.post(
            "/sign-in", data={"csrf": pre.group(1), "name": "ann", "password": password}
        )
        return answer.status_code

    limit = config.console.failed_sign_ins_per_hour
    assert all(attempt("wrong") == 403 for _ in range(limit))
    assert attempt("correct horse battery") == 403  # limited now, even with the right one
    refused = audit(config, "console.sign_in_refused")
    assert len(refused) == limit + 1 and "too many" in (refused[-1][1] or "")


def test_a_password_signs_in_and_the_login_form_needs_its_token(
    client: TestClient, config: Config
) -> None:
    hashed = hash_password("correct horse battery")
    in_thread(lambda memory: memory.add_console_user("ann", "viewer", hashed, "test"), config)
    no_token = client.post("/sign-in", data={"name": "ann", "password": "correct horse battery"})
    assert no_token.status_code == 403
    form = client.get("/sign-in")
    pre = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert pre
    answer = client.post(
        "/sign-in",
        data={"csrf": pre.group(1), "name": "ann", "password": "correct horse battery"},
    )
    assert answer.status_code == 303
    assert "ann (viewer)" in client.get("/").text


def test_console_user_add_keeps_an_argon2_hash(config_path: Path) -> None:
    made = run_mirror(
        "console",
        "user",
        "add",
        "bea",
        "--role",
        "coordinator",
        "--password-stdin",
        "--config",
        str(config_path),
        input="a fine password\n",
    )
    assert made.returncode == 0, made.stderr
    assert "created console user bea (coordinator)" in made.stdout
    with sqlite3.connect(load_config(config_path).memory.path) as conn:
        [(role, stored)] = conn.execute("SELECT role, password_hash FROM console_users")
    assert role == "coordinator" and stored.startswith("$argon2") and "fine" not in stored
    bad = run_mirror(
        "console",
        "user",
        "add",
        "bea",
        "--role",
        "boss",
        "--password-stdin",
        "--config",
        str(config_path),
        input="a fine password\n",
    )
    assert bad.returncode == 2 and "unknown role" in bad.stderr


def test_a_cross_entrance_request_is_denied_from_the_queue(
    client: TestClient, config: Config, config_path: Path
) -> None:
    from bot.memory import NewIntention

    request = NewIntention(
        "phone",
        "local",
        None,
        None,
        "group",
        "tell the Discord group we moved to Monday",
        "meeting",
        None,
        3600,
        "discord",
        None,
    )
    in_thread(lambda memory: memory.add_intention(request), config)
    [item] = conflicts_in(config_path)
    assert item["kind"] == "request"
    token = signed_in(client, config, role="coordinator")
    page = client.get("/queue/items").text
    assert f'hx-post="/queue/{item["id"]}/approve"' in page
    denied = client.post(
        f"/queue/{item['id']}/deny", headers={"X-CSRF-Token": token, "HX-Request": "true"}
    )
    assert denied.status_code == 200 and "denied" in denied.text
    assert denied.headers["HX-Trigger"] == "changed"
    row = conflicts_in(config_path)[0]
    assert row["status"] == "resolved" and row["choice"] == "deny"
    assert row["resolved_by"] == "console:coordinator1"
