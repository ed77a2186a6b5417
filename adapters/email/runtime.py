"""The email entrance process: unseen mail in, threaded answers out through the outbox.

For each unseen mail in INBOX (oldest first): refuse it (recorded, audited, never answered)
when `why_not_answer` says so or it is over `max_message_bytes`; otherwise hand it to the
shared `Instance` and queue the answer in the outbox under the key
"email-reply:<Message-ID>". Only then is the mail marked \\Seen. A crash before that leaves
the mail unseen, so it is read again on restart: the turn is not repeated for a message
already answered (the stored answer is queued again, which the key makes a no-op), and the
outbox courier sends whatever is still unsent. The answer's Message-ID is derived from the
mail it answers, so even a letter sent twice shows once in the recipient's client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.email.manifest import MANIFEST, EmailSettings
from adapters.email.reading import (
    ReadMail,
    parse_mail,
    read_mail,
    reply_subject,
    why_not_answer,
)
from adapters.email.transport import ImapSession, MailboxUnavailable, SmtpSubmitter
from adapters.email.writing import (
    Letter,
    compose,
    letter_for,
    outbox_message_id,
    reply_message_id,
    reply_payload,
)
from bot.commands import is_declared
from bot.config import Config
from bot.entrance import EntranceFailure
from bot.instance import Instance
from bot.models import Author, Incoming
from bot.outbox import Button, OutboxCourier, Unreachable
from bot.timeouts import wait_event

log = logging.getLogger(__name__)

ENTRANCE = MANIFEST.name
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
RECONNECT_FIRST_S = 1.0
RECONNECT_MAX_S = 60.0
STABLE_SESSION_S = 30.0  # a connection that lasted this long resets the reconnect backoff


def check_settings(settings: EmailSettings) -> None:
    """Refuse at start-up what cannot work or would be unsafe; one line naming the key."""
    if "@" not in settings.address.strip():
        raise EntranceFailure("set [entrances.email] address (the persona's mail address)")
    for key in ("imap_host", "smtp_host"):
        if not str(getattr(settings, key)).strip():
            raise EntranceFailure(f"set [entrances.email] {key}")
    if settings.security == "none":
        for key in ("imap_host", "smtp_host"):
            host = str(getattr(settings, key)).strip().lower().strip("[]")
            if host not in LOCAL_HOSTS:
                raise EntranceFailure(
                    f'[entrances.email] security = "none" sends the password in clear text, '
                    f"so it is allowed only for 127.0.0.1, localhost or ::1, not {key} = "
                    f'"{host}": use "ssl" or "starttls"'
                )


def command_line(body: str) -> str | None:
    """A command written as the first line of a mail's new text, if any."""
    first = next((line.strip() for line in body.splitlines() if line.strip()), "")
    return first if first.startswith("/") and is_declared(first) else None


def is_thread_target(target: str) -> bool:
    """Outbox targets are an address (the coordinator) or a thread id (a conversation)."""
    return target.startswith("<") and target.endswith(">")


class EmailEntrance:
    """`mirror run email`: the persona's mailbox, over IMAP and SMTP."""

    def __init__(self, config: Config, secret: str) -> None:
        self.settings = MANIFEST.settings_of(config)
        check_settings(self.settings)
        self.password = secret
        self.smtp = SmtpSubmitter(self.settings, secret)
        self.own_address = self.settings.address.strip().lower()
        # A mail is marked read only once its answer is stored (and with it queued), so a
        # crash between the two answers it once, not never; a turn that failed before
        # storing anything sends no apology: the mail stays unread and is tried again.
        self.instance = Instance(
            config, instance_id=ENTRANCE, entrance=ENTRANCE, send=self.send, send_failures=False
        )
        self.instance.add_own_account(self.own_address)  # mail from itself is never answered
        coordinator = config.coordinator.parsed
        self.coordinator = coordinator.external_id if coordinator.entrance == ENTRANCE else None
        self.allow_senders = list(self.settings.allow_senders)
        if self.allow_senders and self.coordinator:
            self.allow_senders.append(self.coordinator)  # the coordinator may always write
        self._stop = asyncio.Event()
        self._courier: OutboxCourier | None = None

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        await self._check_login()
        await self.instance.start()
        try:
            self._courier = self.instance.deliver_outbox()
            await self._watch_inbox()
            await self._flush_outbox()
        finally:
            await self.instance.stop()
            await self.smtp.close()

    # Reading the inbox ----------------------------------------------------------------------

    def _session(self) -> ImapSession:
        return ImapSession(self.settings, self.password)

    async def _check_login(self) -> None:
        """A refused login is the admin's to fix: fail before anything starts.

        An unreachable server is not: the inbox loop keeps trying with backoff.
        """
        session = self._session()
        try:
            await session.open()
        except MailboxUnavailable as exc:
            log.warning("%s; will keep trying", exc)
        finally:
            await session.close()

    async def _watch_inbox(self) -> None:
        backoff = RECONNECT_FIRST_S
        connected_before = False
        while not self._stop.is_set():
            session = self._session()
            try:
                await session.open()
            except MailboxUnavailable as exc:
                await session.close()
                log.warning("%s; retrying in %.0f s", exc, backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_S)
                continue
            except BaseException:
                await session.close()
                raise
            if connected_before:
                log.info("reconnected to IMAP %s", session.where)
            connected_before = True
            opened = time.monotonic()
            try:
                await self._serve(session)
            except MailboxUnavailable as exc:
                if time.monotonic() - opened > STABLE_SESSION_S:
                    backoff = RECONNECT_FIRST_S
                log.warning("IMAP connection lost (%s); reconnecting in %.0f s", exc, backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_S)
            finally:
                await session.close()

    async def _pause(self, seconds: float) -> None:
        await wait_event(self._stop, seconds)

    async def _serve(self, session: ImapSession) -> None:
        log.info(
            "watching %s's INBOX on %s (%s)",
            self.own_address,
            session.where,
            "IDLE" if session.has_idle else f"polling every {self.settings.poll_interval_s} s",
        )
        while not self._stop.is_set():
            await self._answer_unseen(session)
            if self._stop.is_set():
                return
            await session.wait_for_news(self._stop, self.settings.poll_interval_s)

    async def _answer_unseen(self, session: ImapSession) -> None:
        """Take every unseen mail, looking again until none is new (mail may arrive meanwhile)."""
        attempted: set[str] = set()
        while not self._stop.is_set():
            fresh = [uid for uid in await session.unseen() if uid not in attempted]
            if not fresh:
                return
            for uid in fresh:
                if self._stop.is_set():
                    return
                attempted.add(uid)
                try:
                    await self._take(session, uid)
                except (MailboxUnavailable, EntranceFailure):
                    raise
                except Exception:
                    log.exception("mail uid %s not handled; it stays unseen for a later try", uid)

    async def _take(self, session: ImapSession, uid: str) -> None:
        """One unseen mail: refuse it or answer it, then mark it seen."""
        raw = await self._small_mail(session, uid)
        if raw is None:
            return  # expunged meanwhile, or too large (then refused)
        message = parse_mail(raw)
        mail = read_mail(message, raw)
        reason = why_not_answer(message, self.own_address, self.allow_senders)
        if reason is not None:
            await self._refuse(self._incoming(mail, mail.text), reason)
            await session.mark_seen(uid)
            return
        command = command_line(mail.body)
        incoming = self._incoming(mail, command or mail.text)
        assert mail.reply_to is not None  # why_not_answer refuses mail without a sender
        # Answered before a crash: its answer was queued with it, and is sent (or was).
        reply = await self.instance.handle(
            incoming,
            reply_target=mail.reply_to,
            reply_extra=reply_payload(
                subject=reply_subject(mail.subject),
                in_reply_to=mail.message_id,
                references=mail.references,
                message_id=reply_message_id(mail.message_id, self.own_address),
            ),
        )
        if reply is not None and not reply.answered and reply.message_id is None:
            raise RuntimeError(f"the turn for {mail.message_id} failed")
        await session.mark_seen(uid)
        log.info(
            "mail %s from %s %s",
            mail.message_id,
            incoming.author.external_id,
            "answered" if reply is not None else "had been handled already",
        )

    async def _small_mail(self, session: ImapSession, uid: str) -> bytes | None:
        """The mail's bytes when it is at most max_message_bytes; None when it is gone, or
        too large (then it is refused from its header block and marked seen).

        One FETCH (its size and its first max_message_bytes bytes, never more) for a mail
        that fits; when it does not, or the server did not give its size, the two FETCHes
        of before: the header block and size, then the whole mail if it fits."""
        limit = self.settings.max_message_bytes
        got = await session.fetch_upto(uid, limit)
        if got is None:
            return None
        size, raw = got
        if size is not None and size <= limit and len(raw) == size:
            return raw
        head = await session.head(uid)
        if head is None:
            return None
        size, header_block = head
        if size is not None and size > limit:
            await self._refuse_large(header_block, size)
            await session.mark_seen(uid)
            return None
        whole = await session.fetch(uid)
        if whole is None:
            return None
        if len(whole) > limit:
            await self._refuse_large(header_block, len(whole))
            await session.mark_seen(uid)
            return None
        return whole

    def _incoming(self, mail: ReadMail, text: str) -> Incoming:
        sender = mail.sender
        address = sender.address if sender else "unknown"
        # An answer that would go to another address than the (verified) sender's — a
        # Reply-To elsewhere — gets no private context: it could be anyone's inbox.
        elsewhere = mail.reply_to is not None and mail.reply_to.lower() != address.lower()
        return Incoming(
            entrance=ENTRANCE,
            conversation_id=mail.thread_id,
            conversation_kind="dm",
            conversation_title=mail.subject or None,
            author=Author(
                external_id=address,
                display_name=sender.display_name if sender else "unknown sender",
            ),
            text=text or "(an empty mail)",
            platform_message_id=mail.message_id,
            reply_to_platform_id=mail.in_reply_to,
            reply_elsewhere=elsewhere,
        )

    async def _refuse(self, incoming: Incoming, reason: str) -> None:
        """Record a mail that must not be answered, with the reason in the audit log."""
        await self.instance.refuse(incoming, reason)

    async def _refuse_large(self, header_block: bytes, size: int) -> None:
        headers = parse_mail(header_block)
        mail = read_mail(headers, header_block)
        limit = self.settings.max_message_bytes
        note = f"[not read: the mail is {size} bytes, over max_message_bytes = {limit}]"
        text = f"Subject: {mail.subject}\n\n{note}" if mail.subject else note
        await self._refuse(self._incoming(mail, text), f"too large ({size} bytes > {limit})")

    # Sending --------------------------------------------------------------------------------

    async def send(
        self,
        target: str,
        text: str,
        *,
        reply_to: str | None = None,
        buttons: Sequence[Button] = (),
        key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Mail one message: to an address (an answer, with the thread's headers in `extra`,
        or a coordinator item), or a follow-up into a thread. Returns its Message-ID; raises
        when the server will not take it (the courier retries with backoff)."""
        target = target.strip()
        payload = dict(extra or {})
        key = key or target  # the core always gives one; a Message-ID needs something
        if is_thread_target(target):
            letter = await self._letter_in_thread(target, text, key)
        elif "@" in target:
            letter = letter_for(target, text, payload, key, self.own_address)
        else:
            raise Unreachable(f"outbox target {target!r} is neither a mail address nor a thread")
        message = compose(
            letter, own_address=self.own_address, own_name=await self.instance.soul_name()
        )
        await self.smtp.send(message, letter.to)
        return letter.message_id

    async def _letter_in_thread(self, thread_id: str, text: str, key: str) -> Letter:
        """A follow-up in a conversation: to whoever last wrote in that thread (not a robot)."""
        session = self._session()
        try:
            await session.open()
            for uid in await session.thread_uids(thread_id):
                head = await session.head(uid)
                if head is None:
                    continue
                message = parse_mail(head[1])
                if why_not_answer(message, self.own_address, self.allow_senders) is not None:
                    continue
                mail = read_mail(message, head[1])
                assert mail.reply_to is not None
                return Letter(
                    to=mail.reply_to,
                    subject=reply_subject(mail.subject),
                    text=text,
                    message_id=outbox_message_id(key, self.own_address),
                    in_reply_to=mail.message_id,
                    references=mail.references,
                    auto_submitted="auto-generated",
                )
        finally:
            await session.close()
        raise LookupError(f"no mail of thread {thread_id} in INBOX to answer")

    async def _flush_outbox(self) -> None:
        """On the way out, send what is already due (answers queued a moment ago)."""
        if self._courier is None:
            return
        try:
            await asyncio.wait_for(self._courier.deliver_due(), 10)
        except Exception:
            log.exception("could not send the outbox before stopping; it is sent on restart")
