"""Live checks against the outside world, for `mirror setup` and `mirror doctor`.

Each probe is an async function with a time-out that returns a `Finding` (ok, warn or
fail; one line saying what it found; one saying what to do) and never raises for what it
is checking. They ask the platforms the cheapest question that proves a secret works
(Telegram `getMe`, Discord `users/@me`, an IMAP login, SMTP EHLO and login, one short model
call through `bot.llm`) at the base URLs of the config, so tests point them at fakes.
Secrets never appear in a finding. Heavy imports (httpx, the mail libraries, litellm) are
made inside the probes: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from bot.config import ModelConfig

Status = Literal["ok", "warn", "fail"]
DEFAULT_TIMEOUT_S = 10.0
SKEW_WARN_S = 30.0
SKEW_FAIL_S = 300.0


@dataclass(frozen=True)
class Finding:
    """One check's outcome: `line()` is what a person reads."""

    check: str
    status: Status
    detail: str
    todo: str = ""
    # What the probe learnt, for the caller: the bot's id and name, the server's clock.
    facts: dict[str, Any] = field(default_factory=dict, compare=False)

    def line(self) -> str:
        text = f"{self.status:<5} {self.check}: {self.detail}"
        return f"{text} — {self.todo}" if self.todo else text

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status,
            "detail": self.detail,
            "todo": self.todo,
        }


def ok(check: str, detail: str, **facts: Any) -> Finding:
    return Finding(check, "ok", detail, facts=facts)


def warn(check: str, detail: str, todo: str, **facts: Any) -> Finding:
    return Finding(check, "warn", detail, todo, facts=facts)


def fail(check: str, detail: str, todo: str, **facts: Any) -> Finding:
    return Finding(check, "fail", detail, todo, facts=facts)


def _hide(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _server_clock(headers: Any, sent_at: float, received_at: float) -> dict[str, float]:
    """The platform's Date header against our clock at the middle of the request."""
    raw = headers.get("date")
    if not raw:
        return {}
    try:
        theirs = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return {}
    if theirs.tzinfo is None:
        theirs = theirs.replace(tzinfo=UTC)
    return {"server_time": theirs.timestamp(), "local_time": (sent_at + received_at) / 2}


def _quiet_httpx() -> None:
    """httpx logs every request's URL at INFO, and a Telegram URL holds the token."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


async def _get(url: str, headers: dict[str, str], within_s: float) -> tuple[Any, dict[str, float]]:
    import httpx

    _quiet_httpx()
    async with httpx.AsyncClient(timeout=within_s) as client:
        sent = time.time()
        response = await client.get(url, headers=headers)
        return response, _server_clock(response.headers, sent, time.time())


def _body(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def telegram_identity(
    base_url: str, token: str, *, within_s: float = DEFAULT_TIMEOUT_S
) -> Finding:
    """getMe: is the token accepted, and which bot is it?"""
    import httpx

    check = "telegram token"
    if not token:
        return fail(
            check, "MIRROR_TELEGRAM_TOKEN is not set", "run `mirror setup` or set it in .env"
        )
    try:
        response, clock = await _get(f"{base_url}{token}/getMe", {}, within_s)
    except httpx.HTTPError as exc:
        reason = _hide(str(exc) or type(exc).__name__, token)
        return fail(
            check,
            f"cannot reach {base_url}: {reason}",
            "check the network and [entrances.telegram] base_url",
        )
    body = _body(response)
    if response.status_code in (401, 404) or (not body.get("ok") and response.status_code < 500):
        return fail(
            check,
            f"Telegram refused the token ({response.status_code} "
            f"{body.get('description', 'Unauthorized')})",
            "get the token again from @BotFather (/token) and set MIRROR_TELEGRAM_TOKEN",
            **clock,
        )
    if not body.get("ok"):
        return warn(
            check,
            f"Telegram answered {response.status_code}",
            "try again later; https://status.telegram.org may know more",
            **clock,
        )
    me = body.get("result") or {}
    name = f"@{me.get('username')}" if me.get("username") else str(me.get("first_name", "?"))
    return ok(
        check,
        f"accepted: the bot is {name} (id {me.get('id')})",
        bot_id=str(me.get("id", "")),
        bot_name=name,
        **clock,
    )


class WhoamiConflict(Exception):
    """Telegram refuses to hand out the bot's updates: another process polls them."""


async def telegram_whoami(
    base_url: str, token: str, *, wait_s: float, poll_s: float = 10.0
) -> tuple[str, str] | None:
    """Wait up to `wait_s` for someone to send /whoami to the bot in a private chat; return
    (their user id, their name) and tell them in the chat, or None.

    It reads getUpdates without confirming anything but that /whoami message (and only when
    it is the oldest pending update), so messages waiting for the entrance are not lost.
    Run it only while no entrance polls the same bot: Telegram answers two pollers with
    409 Conflict, and one would take the other's updates.
    """
    import asyncio

    import httpx

    _quiet_httpx()
    deadline = time.monotonic() + wait_s
    url = f"{base_url}{token}"
    async with httpx.AsyncClient(timeout=poll_s + 10) as client:
        while (left := deadline - time.monotonic()) > 0:
            # No allowed_updates: Telegram remembers it for the entrance's later polls.
            params = {"timeout": int(min(poll_s, max(left, 1)))}
            try:
                response = await client.post(f"{url}/getUpdates", data=params)
                body = _body(response)
                if response.status_code == 409:  # another poller, or a webhook
                    raise WhoamiConflict(str(body.get("description") or "409 Conflict"))
                updates = body.get("result") or []
            except httpx.HTTPError:
                updates = []
                await asyncio.sleep(min(1.0, max(left, 0)))
                continue
            for index, update in enumerate(updates):
                message = update.get("message") or {}
                chat = message.get("chat") or {}
                sender = message.get("from") or {}
                text = str(message.get("text") or "")
                if chat.get("type") != "private" or not re.match(r"/whoami(@\w+)?\b", text):
                    continue
                user_id = str(sender.get("id"))
                name = " ".join(
                    part for part in (sender.get("first_name"), sender.get("last_name")) if part
                ) or str(sender.get("username") or user_id)
                with contextlib.suppress(httpx.HTTPError):
                    if index == 0:  # confirm it alone: nothing older is pending
                        await client.post(
                            f"{url}/getUpdates",
                            data={"offset": int(update["update_id"]) + 1, "timeout": 0},
                        )
                    await client.post(
                        f"{url}/sendMessage",
                        data={
                            "chat_id": chat["id"],
                            "text": f"You are telegram:{user_id}. MirrorOS setup has made you "
                            "the coordinator.",
                        },
                    )
                return user_id, name
            if updates:
                # Someone else's pending messages come back at once on every call: don't spin.
                await asyncio.sleep(min(1.0, max(deadline - time.monotonic(), 0)))
    return None


async def discord_whoami(settings: Any, token: str, *, wait_s: float) -> tuple[str, str] | None:
    """Wait up to `wait_s` for a /whoami sent to the Discord bot in a DM; (user id, name) of
    the sender, who is told their address, or None. `settings`: `[entrances.discord]`."""
    import importlib

    from bot.entrance import manifest

    package = manifest("discord").runtime.partition(":")[0].rpartition(".")[0]
    whoami = importlib.import_module(f"{package}.whoami")
    found: tuple[str, str] | None = await whoami.wait_for_whoami(settings, token, wait_s=wait_s)
    return found


async def discord_identity(
    api_base: str, token: str, *, within_s: float = DEFAULT_TIMEOUT_S
) -> Finding:
    """users/@me: is the token accepted, and which bot is it?"""
    import httpx

    check = "discord token"
    if not token:
        return fail(
            check, "MIRROR_DISCORD_TOKEN is not set", "run `mirror setup` or set it in .env"
        )
    try:
        response, clock = await _get(
            f"{api_base.rstrip('/')}/users/@me", {"Authorization": f"Bot {token}"}, within_s
        )
    except httpx.HTTPError as exc:
        reason = _hide(str(exc) or type(exc).__name__, token)
        return fail(
            check,
            f"cannot reach {api_base}: {reason}",
            "check the network and [entrances.discord] api_base",
        )
    body = _body(response)
    if response.status_code == 401:
        return fail(
            check,
            "Discord refused the token (401 Unauthorized)",
            "reset the token (Developer Portal → Bot → Reset Token) and set MIRROR_DISCORD_TOKEN",
            **clock,
        )
    if response.status_code != 200:
        return warn(
            check,
            f"Discord answered {response.status_code} {body.get('message', '')}".rstrip(),
            "try again later; https://discordstatus.com may know more",
            **clock,
        )
    name = str(body.get("username", "?"))
    if not body.get("bot", False):
        return warn(
            check,
            f"accepted, but {name} (id {body.get('id')}) is not a bot account",
            "use a bot token (Developer Portal → Bot)",
            bot_id=str(body.get("id", "")),
            bot_name=name,
            **clock,
        )
    return ok(
        check,
        f"accepted: the bot is {name} (id {body.get('id')})",
        bot_id=str(body.get("id", "")),
        bot_name=name,
        **clock,
    )


async def mail_servers(
    settings: Any, password: str, *, within_s: float = DEFAULT_TIMEOUT_S
) -> list[Finding]:
    """IMAP login (and INBOX) and SMTP EHLO (and login), with the email entrance's own
    connection code. `settings` is the entrance's `[entrances.email]` model."""
    import importlib

    # The adapter's probe module, named through the registry's package (bot/ imports no
    # adapter at module level).
    from bot.entrance import manifest

    package = manifest("email").runtime.partition(":")[0].rpartition(".")[0]
    probe = importlib.import_module(f"{package}.probe")
    if not password:
        missing = fail(
            "mail login", "MIRROR_EMAIL_PASSWORD is not set", "run `mirror setup` or set it in .env"
        )
        return [missing]
    found: list[Finding] = []
    for check, call, todo in (
        (
            "mail IMAP",
            probe.check_imap,
            "check [entrances.email] imap_host, imap_port, security, username and the password",
        ),
        (
            "mail SMTP",
            probe.check_smtp,
            "check [entrances.email] smtp_host, smtp_port, security, username and the password",
        ),
    ):
        try:
            found.append(ok(check, await call(settings, password, within_s=within_s)))
        except probe.MailCheckFailed as exc:
            found.append(fail(check, _hide(str(exc), password), todo))
    return found


async def model_answers(
    config: ModelConfig, *, soul_name: str = "MirrorOS", within_s: float = 30.0
) -> Finding:
    """One short call to the configured model (no retries, no fallbacks) through bot.llm."""
    from bot import llm
    from bot.context import Context

    check = "model"
    name = config.name
    if llm.is_offline(name):
        return warn(
            check,
            f"{name}: the offline brain (simple answers, no model calls)",
            "for a real model run `mirror setup` or set [model] name and its API key",
        )
    probe_config = config.model_copy(
        update={
            "fallbacks": [],
            "retries": 0,
            "timeout_s": min(config.timeout_s, within_s),
            "max_tokens": 16,
        }
    )
    context = Context(
        soul_name=soul_name,
        soul_text=f"# Name\n{soul_name}\n",
        soul_version=None,
        instance_id="doctor",
        entrance="local",
        style="one word",
        timezone="UTC",
        now=datetime.now(UTC),
        person_id=0,
        person_name="mirror doctor",
        conversation_kind="dm",
        incoming_id=0,
        text="Say OK.",
    )
    started = time.monotonic()
    try:
        await llm.complete(probe_config, context)
    except llm.ModelUnavailable as exc:
        reason = str(exc).removeprefix(f"{name}: ")
        todo = (
            "set the key it names in the environment (or .env); `mirror setup` writes it"
            if reason.startswith("MissingKey")
            else "check [model] name and api_base, the key, and the provider's status"
        )
        return fail(check, f"{name} did not answer: {reason}", todo)
    fallbacks = (
        f" (fallbacks not called: {', '.join(config.fallbacks)})" if config.fallbacks else ""
    )
    return ok(check, f"{name} answered in {time.monotonic() - started:.1f}s{fallbacks}")


def clock_skew(samples: list[tuple[str, dict[str, Any]]]) -> Finding:
    """Our clock against the Date header of the platforms probed (name, facts)."""
    check = "clock"
    measured = [
        (where, facts["server_time"] - facts["local_time"])
        for where, facts in samples
        if "server_time" in facts
    ]
    if not measured:
        return ok(check, "no platform answered with a Date header to compare with")
    where, skew = max(measured, key=lambda item: abs(item[1]))
    # The Date header has whole seconds: a second either way is nothing.
    text = f"{abs(skew):.0f}s {'behind' if skew > 0 else 'ahead of'} {where}"
    if abs(skew) >= SKEW_FAIL_S:
        return fail(check, text, "set the system clock (timedatectl set-ntp true)")
    if abs(skew) >= SKEW_WARN_S:
        return warn(check, text, "set the system clock (timedatectl set-ntp true)")
    return ok(check, f"within {max(1.0, abs(skew)):.0f}s of {where}")
