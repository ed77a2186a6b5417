"""Live checks of the persona's mail servers for `mirror setup` and `mirror doctor`.

IMAP: log in and select INBOX with the entrance's own `ImapSession`, then log out. SMTP:
connect as `send_mail` does (ssl, starttls or none), say EHLO and log in when the server
offers AUTH, then quit without sending anything. Each returns a one-line description of
what it found and raises `MailCheckFailed` with a one-line reason; nothing is read, marked
or sent.
"""

from __future__ import annotations

import asyncio

import aiosmtplib

from adapters.email.manifest import EmailSettings
from adapters.email.runtime import check_settings
from adapters.email.transport import ImapSession, MailboxUnavailable, imap_user
from bot.entrance import EntranceFailure


class MailCheckFailed(Exception):
    """The check failed; the message is one line naming the server."""


async def check_imap(settings: EmailSettings, password: str, *, within_s: float = 10.0) -> str:
    try:
        check_settings(settings)
    except EntranceFailure as exc:
        raise MailCheckFailed(str(exc)) from None
    session = ImapSession(settings, password, timeout=within_s)
    try:
        await asyncio.wait_for(session.open(), within_s)
    except TimeoutError:
        raise MailCheckFailed(f"IMAP {session.where} did not answer within {within_s:g}s") from None
    except (MailboxUnavailable, EntranceFailure) as exc:
        raise MailCheckFailed(str(exc)) from None
    finally:
        await session.close()
    return f"IMAP {session.where} accepted the login of {imap_user(settings)}"


async def check_smtp(settings: EmailSettings, password: str, *, within_s: float = 10.0) -> str:
    try:
        check_settings(settings)
    except EntranceFailure as exc:
        raise MailCheckFailed(str(exc)) from None
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    client = aiosmtplib.SMTP(
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        use_tls=settings.security == "ssl",
        start_tls=settings.security == "starttls",
        timeout=within_s,
    )
    try:
        async with client:
            await client.ehlo()
            if not client.supports_extension("auth"):
                return f"SMTP {where} answered EHLO (it asks for no login)"
            await client.login(imap_user(settings), password)
            return f"SMTP {where} answered EHLO and accepted the login"
    except aiosmtplib.SMTPAuthenticationError as exc:
        raise MailCheckFailed(
            f"SMTP {where} refused the login of {imap_user(settings)!r}: {exc.code} {exc.message}"
        ) from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise MailCheckFailed(f"cannot reach SMTP {where}: {exc or type(exc).__name__}") from None
