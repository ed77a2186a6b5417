"""IMAP and SMTP for the email entrance: the only code in MirrorOS importing aioimaplib or
aiosmtplib.

`ImapSession` is one logged-in connection to INBOX: it lists unseen mail, fetches it with
BODY.PEEK (so reading never marks it seen; its size and, up to a limit, its bytes in one
command), marks it seen, and waits for news with IDLE (or a timer when the server has no
IDLE; after IDLE reported new mail, the next listing skips its NOOP). Every problem with
the connection is raised as `MailboxUnavailable`, which the entrance answers by
reconnecting; problems the admin must fix (refused login, no STARTTLS) are
`EntranceFailure`. `send_mail` submits one message over SMTP; `SmtpSubmitter` does the
same over a connection kept open between messages (a reply then costs MAIL, RCPT and DATA,
not a connection, EHLO, TLS and a login each). Neither decides anything about what a mail
means. One client TLS context serves every connection of the process: building one reads
the CA store (about 20 ms of CPU), which every reply used to pay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
import time
from collections.abc import Awaitable
from email.message import EmailMessage
from typing import Any, TypeVar

import aioimaplib
import aiosmtplib

from adapters.email.manifest import EmailSettings
from bot.entrance import EntranceFailure

T = TypeVar("T")
# aioimaplib says "ignored untagged response" at INFO for each new mail's EXISTS and RECENT
# (two lines a mail in the log, nothing an operator can act on); its warnings stay.
logging.getLogger("aioimaplib").setLevel(logging.WARNING)
_CONNECTION_ERRORS = (OSError, TimeoutError, aioimaplib.AioImapException)
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
SMTP_KEEP_S = 30.0  # an SMTP connection idle longer than this is closed, not reused
_tls: dict[tuple[str | None, str | None], ssl.SSLContext] = {}


def tls_context() -> ssl.SSLContext:
    """The client TLS context of this process, as aioimaplib and aiosmtplib build one per
    connection (ssl.create_default_context(): the system's CAs, host names checked); a new
    one if SSL_CERT_FILE or SSL_CERT_DIR, which it reads, changed."""
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    context = _tls.get(key)
    if context is None:
        context = _tls[key] = ssl.create_default_context()
    return context


class MailboxUnavailable(Exception):
    """The IMAP connection is gone or unusable: reconnect."""


class MailboxError(Exception):
    """The server refused a command about one message (NO/BAD)."""


def imap_user(settings: EmailSettings) -> str:
    return settings.username or settings.address


def _search_uids(lines: list[Any]) -> list[str]:
    """UIDs from a SEARCH response: [b"1 2", b"Search completed (…)"] -> ["1", "2"]."""
    uids: list[str] = []
    for line in lines[:-1]:
        if not isinstance(line, bytes):
            continue
        tokens = line.decode("ascii", "replace").split()
        if tokens and tokens[0].upper() == "SEARCH":
            tokens = tokens[1:]
        if tokens and all(token.isdigit() for token in tokens):
            uids.extend(tokens)
    return list(dict.fromkeys(uids))


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapSession:
    """One connection to the persona's INBOX."""

    def __init__(self, settings: EmailSettings, password: str, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.password = password
        self.timeout = timeout
        self.lost = asyncio.Event()
        self._client: Any = None
        # IDLE just ended on an EXISTS push: the server has synced INBOX (that is what the
        # push reports), so the next `unseen` needs no NOOP to make it look.
        self._synced = False

    @property
    def where(self) -> str:
        return f"{self.settings.imap_host}:{self.settings.imap_port}"

    @property
    def has_idle(self) -> bool:
        return bool(self._client is not None and self._client.has_capability("IDLE"))

    async def open(self) -> None:
        """Connect, log in and select INBOX."""
        settings = self.settings
        context = tls_context() if settings.security == "ssl" else None
        try:
            self._client = aioimaplib.IMAP4(
                host=settings.imap_host,
                port=settings.imap_port,
                timeout=self.timeout,
                conn_lost_cb=self._connection_lost,
                ssl_context=context,
            )
            await self._client.wait_hello_from_server()
        except _CONNECTION_ERRORS as exc:
            raise MailboxUnavailable(f"cannot reach IMAP {self.where}: {_describe(exc)}") from exc
        if settings.security == "starttls":
            await self._start_tls()
        user = imap_user(settings)
        response = await self._run(self._client.login(user, self.password), "LOGIN")
        if response.result != "OK" and b"[UNAVAILABLE]" in b" ".join(
            line for line in response.lines if isinstance(line, bytes)
        ):
            raise MailboxUnavailable(f"IMAP {self.where} cannot log in right now: {response}")
        if response.result != "OK":
            raise EntranceFailure(
                f"IMAP {self.where} refused the login of {user!r}: check MIRROR_EMAIL_PASSWORD"
                " and [entrances.email] username"
            )
        response = await self._run(self._client.select("INBOX"), "SELECT INBOX")
        if response.result != "OK":
            raise EntranceFailure(f"IMAP {self.where} has no INBOX for {user!r}: {response}")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if not self.lost.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.logout(), 5)
        transport = getattr(client.protocol, "transport", None)
        if transport is not None:
            transport.close()

    async def unseen(self) -> list[str]:
        """UIDs of unseen mail, oldest first (NOOP first: Dovecot syncs new files then;
        not right after IDLE reported new mail, which the server found by syncing)."""
        if not self._synced:
            await self._ok(self._client.noop(), "NOOP", MailboxUnavailable)
        self._synced = False
        response = await self._ok(
            self._client.uid_search("UNSEEN", charset=None), "UID SEARCH", MailboxUnavailable
        )
        return sorted(_search_uids(response.lines), key=int)

    async def head(self, uid: str) -> tuple[int | None, bytes] | None:
        """(size in bytes, header block) of a mail, None when it is gone."""
        response = await self._ok(
            self._client.uid("fetch", uid, "(RFC822.SIZE BODY.PEEK[HEADER])"), f"FETCH {uid}"
        )
        literal = _literal(response.lines)
        if literal is None:
            return None
        return _size(response.lines), literal

    async def fetch(self, uid: str) -> bytes | None:
        """The whole mail, left unseen; None when it is gone."""
        response = await self._ok(self._client.uid("fetch", uid, "(BODY.PEEK[])"), f"FETCH {uid}")
        return _literal(response.lines)

    async def fetch_upto(self, uid: str, limit: int) -> tuple[int | None, bytes] | None:
        """(size in bytes, the mail's first `limit` bytes) in one command, left unseen: the
        whole mail when its size is at most `limit`; None when it is gone."""
        response = await self._ok(
            self._client.uid("fetch", uid, f"(RFC822.SIZE BODY.PEEK[]<0.{max(limit, 1)}>)"),
            f"FETCH {uid}",
        )
        literal = _literal(response.lines)
        if literal is None:
            return None
        return _size(response.lines), literal

    async def mark_seen(self, uid: str) -> None:
        await self._ok(self._client.uid("store", uid, "+FLAGS", "(\\Seen)"), f"STORE {uid}")

    async def thread_uids(self, thread_id: str) -> list[str]:
        """UIDs of the mail in INBOX of the thread rooted at `thread_id`, newest first."""
        quoted = _quoted(thread_id)
        response = await self._ok(
            self._client.uid_search(
                "OR", "HEADER", "Message-ID", quoted, "HEADER", "References", quoted, charset=None
            ),
            "UID SEARCH thread",
        )
        return sorted(_search_uids(response.lines), key=int, reverse=True)

    async def wait_for_news(self, stop: asyncio.Event, seconds: float) -> None:
        """Return when new mail may have arrived, `seconds` passed, or `stop` is set.

        With IDLE the server pushes EXISTS; without it this is a plain timer (polling).
        """
        if not self.has_idle:
            await _first(stop.wait(), self.lost.wait(), within=seconds)
            if self.lost.is_set():
                raise MailboxUnavailable("connection lost while waiting")
            return
        client = self._client
        queue = client.protocol.idle_queue
        while not queue.empty():  # pushes from before the last search: already handled
            queue.get_nowait()
        idle = await self._run(
            asyncio.wait_for(client.idle_start(timeout=seconds), self.timeout), "IDLE"
        )
        news = False
        try:
            while not stop.is_set() and not self.lost.is_set():
                push = await _first(
                    client.wait_server_push(timeout=seconds + self.timeout),
                    stop.wait(),
                    self.lost.wait(),
                    within=None,
                )
                if stop.is_set() or self.lost.is_set() or not isinstance(push, list):
                    break
                if push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break  # time to renew IDLE (and look again, in case a push was missed)
                if any(isinstance(line, bytes) and line.endswith(b"EXISTS") for line in push):
                    news = True
                    break
        except TimeoutError:
            pass  # not even the renewal came: re-issue IDLE
        finally:
            if not self.lost.is_set() and client.has_pending_idle():
                client.idle_done()
                with contextlib.suppress(TimeoutError, *_CONNECTION_ERRORS):
                    await _first(asyncio.shield(idle), self.lost.wait(), within=self.timeout)
        if not idle.done():  # the server never ended IDLE: this connection is unusable
            idle.cancel()
            raise MailboxUnavailable("IDLE did not end")
        if self.lost.is_set():
            raise MailboxUnavailable("connection lost during IDLE")
        self._synced = (
            news
            and not idle.cancelled()
            and idle.exception() is None
            and getattr(idle.result(), "result", None) == "OK"
        )

    async def _start_tls(self) -> None:
        """STARTTLS, which aioimaplib does not offer itself: upgrade the transport in place."""
        client = self._client
        if not client.has_capability("STARTTLS"):
            raise EntranceFailure(
                f'IMAP {self.where} does not offer STARTTLS; use security = "ssl" with the '
                "server's TLS port"
            )
        protocol = client.protocol
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        response = await self._run(protocol.execute(command), "STARTTLS")
        if response.result != "OK":
            raise EntranceFailure(f"IMAP {self.where} refused STARTTLS: {response}")
        try:
            transport = await asyncio.get_running_loop().start_tls(
                protocol.transport,
                protocol,
                tls_context(),
                server_hostname=self.settings.imap_host,
            )
        except (OSError, ssl.SSLError) as exc:
            raise MailboxUnavailable(f"TLS with IMAP {self.where}: {exc}") from exc
        protocol.transport = transport
        await self._run(protocol.capability(), "CAPABILITY")  # may differ after TLS

    def _connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()

    async def _run(self, awaitable: Awaitable[T], what: str) -> T:
        """Run one IMAP command; a lost connection or timeout is MailboxUnavailable."""
        if self.lost.is_set() or self._client is None:
            raise MailboxUnavailable(f"{what}: not connected to {self.where}")
        command = asyncio.ensure_future(awaitable)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({command, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not command.done():
                command.cancel()
        if not command.done() or command.cancelled():
            raise MailboxUnavailable(f"{what}: connection to {self.where} lost")
        try:
            return command.result()
        except _CONNECTION_ERRORS as exc:
            raise MailboxUnavailable(f"{what}: {_describe(exc)}") from exc

    async def _ok(
        self,
        awaitable: Awaitable[Any],
        what: str,
        error: type[Exception] = MailboxError,
    ) -> Any:
        response = await self._run(awaitable, what)
        if response.result != "OK":
            raise error(f"{what}: {response.result} {response.lines[-1:]}")
        return response


def _size(lines: list[Any]) -> int | None:
    """RFC822.SIZE from a FETCH response (None when the server did not say)."""
    size = None
    for line in lines:
        if isinstance(line, bytes) and (match := _SIZE.search(line)):
            size = int(match.group(1))
    return size


def _literal(lines: list[Any]) -> bytes | None:
    literal = next((line for line in lines if isinstance(line, bytearray)), None)
    return None if literal is None else bytes(literal)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _first(*awaitables: Awaitable[Any], within: float | None) -> Any:
    """The result of the first awaitable to finish (None on timeout); cancels the others."""
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        done, _ = await asyncio.wait(tasks, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
    for task in tasks:  # in argument order: a result beats a simultaneous stop
        if task in done:
            return task.result()
    return None


async def send_mail(
    settings: EmailSettings,
    password: str,
    message: EmailMessage,
    recipient: str,
    *,
    within_s: float = 30.0,
) -> None:
    """Submit one message: TLS from the start (ssl), upgraded (starttls) or plain (none)."""
    client = _smtp_client(settings, within_s)
    async with client:
        if client.supports_extension("auth"):
            await client.login(imap_user(settings), password)
        await client.send_message(message, sender=settings.address, recipients=[recipient])


def _smtp_client(settings: EmailSettings, within_s: float) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        use_tls=settings.security == "ssl",
        start_tls=settings.security == "starttls",
        tls_context=tls_context() if settings.security != "none" else None,
        timeout=within_s,
    )


class SmtpSubmitter:
    """`send_mail` over a connection kept open between messages (closed after SMTP_KEEP_S
    idle, or by `close`). A kept connection answers NOOP before it is used; one that does
    not is dropped for a new one, so a message is never half-sent on a stale connection.
    Messages sent at the same time each take their own connection; one is kept."""

    def __init__(self, settings: EmailSettings, password: str, *, within_s: float = 30.0):
        self.settings = settings
        self.password = password
        self.within_s = within_s
        self._idle: tuple[aiosmtplib.SMTP, float] | None = None  # (client, idle since)

    async def send(self, message: EmailMessage, recipient: str) -> None:
        client = await self._kept() or await self._connected()
        try:
            await client.send_message(message, sender=self.settings.address, recipients=[recipient])
        except BaseException:
            await _quit(client)
            raise
        if self._idle is None:
            self._idle = (client, time.monotonic())
        else:
            await _quit(client)

    async def close(self) -> None:
        if self._idle is not None:
            client, self._idle = self._idle[0], None
            await _quit(client)

    async def _kept(self) -> aiosmtplib.SMTP | None:
        if self._idle is None:
            return None
        (client, since), self._idle = self._idle, None
        if time.monotonic() - since < SMTP_KEEP_S and client.is_connected:
            try:
                await client.noop()
                return client
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                pass
        await _quit(client)
        return None

    async def _connected(self) -> aiosmtplib.SMTP:
        client = _smtp_client(self.settings, self.within_s)
        await client.connect()
        try:
            if client.supports_extension("auth"):
                await client.login(imap_user(self.settings), self.password)
        except BaseException:
            await _quit(client)
            raise
        return client


async def _quit(client: aiosmtplib.SMTP) -> None:
    """QUIT politely when the connection still works; close it in any case."""
    try:
        if client.is_connected:
            await asyncio.wait_for(client.quit(), 5.0)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        pass
    finally:
        client.close()
