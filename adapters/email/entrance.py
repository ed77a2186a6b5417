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
import contextlib
import logging
import time

from adapters.email.reading import (
    ReadMail,
    parse_mail,
    read_mail,
    reply_subject,
    why_not_answer,
)
from adapters.email.transport import ImapSession, MailboxUnavailable, send_mail
from adapters.email.writing import (
    Letter,
    compose,
    letter_for,
    outbox_message_id,
    reply_message_id,
    reply_payload,
)
from bot.config import Config
from bot.config import EmailEntrance as EmailSettings
from bot.coordinator import COMMANDS, parse_command
from bot.entrance import EntranceFailure
from bot.instance import Instance
from bot.models import Author, Incoming, OutboxItem
from bot.outbox import OutboxCourier

log = logging.getLogger(__name__)

ENTRANCE = "email"
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
    """A coordinator command written as the first line of a mail's new text, if any."""
    first = next((line.strip() for line in body.splitlines() if line.strip()), "")
    command = parse_command(first) if first.startswith("/") else None
    return first if command is not None and command.name in COMMANDS else None


def is_thread_target(target: str) -> bool:
    """Outbox targets are an address (the coordinator) or a thread id (a conversation)."""
    return target.startswith("<") and target.endswith(">")


class EmailEntrance:
    """`mirror run email`: the persona's mailbox, over IMAP and SMTP."""

    def __init__(self, config: Config, secret: str) -> None:
        self.settings = config.entrances.email
        check_settings(self.settings)
        self.password = secret
        self.own_address = self.settings.address.strip().lower()
        self.instance = Instance(config, instance_id=ENTRANCE, entrance=ENTRANCE)
        coordinator = config.coordinator.parsed
        self.coordinator = coordinator.id if coordinator.entrance == ENTRANCE else None
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
            self._courier = self.instance.deliver_outbox(self.deliver)
            await self._watch_inbox()
            await self._flush_outbox()
        finally:
            await self.instance.stop()

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
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

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
        head = await session.head(uid)
        if head is None:
            return  # expunged meanwhile
        size, header_block = head
        limit = self.settings.max_message_bytes
        if size is not None and size > limit:
            await self._refuse_large(header_block, size)
            await session.mark_seen(uid)
            return
        raw = await session.fetch(uid)
        if raw is None:
            return
        if len(raw) > limit:
            await self._refuse_large(header_block, len(raw))
            await session.mark_seen(uid)
            return
        message = parse_mail(raw)
        mail = read_mail(message, raw)
        reason = why_not_answer(message, self.own_address, self.allow_senders)
        if reason is not None:
            await self._refuse(self._incoming(mail, mail.text), reason)
            await session.mark_seen(uid)
            return
        command = command_line(mail.body)
        incoming = self._incoming(mail, command or mail.text)
        reply = await self.instance.handle(incoming)
        if reply is None:  # answered before a crash: queue the stored answer (a no-op if queued)
            text = await self._stored_answer(incoming)
        elif not reply.answered and reply.message_id is None:
            # The turn failed before anything was stored: leave the mail unseen for a retry.
            raise RuntimeError(f"the turn for {mail.message_id} failed")
        else:
            text = reply.text
        if text:
            await self._queue_answer(mail, text)
        await session.mark_seen(uid)
        log.info(
            "mail %s from %s %s",
            mail.message_id,
            incoming.author.external_id,
            "answered" if text else "had been handled already",
        )

    def _incoming(self, mail: ReadMail, text: str) -> Incoming:
        sender = mail.sender
        address = sender.address if sender else "unknown"
        if self.coordinator and address == self.coordinator.lower():
            # Addresses are compared lower-cased; the coordinator check compares exactly.
            address = self.coordinator
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
        )

    async def _refuse(self, incoming: Incoming, reason: str) -> None:
        """Record a mail that must not be answered, with the reason in the audit log."""
        memory = self.instance.memory
        recorded = await memory.record_incoming(incoming, self.instance.instance_id)
        if await memory.incoming_status(recorded.message_id) not in (None, "received"):
            return  # handled before (a crash came before \Seen)
        await memory.set_message_status(recorded.message_id, "refused")
        await memory.audit(
            f"{ENTRANCE}:{incoming.author.external_id}",
            "email.refused",
            incoming.platform_message_id,
            reason=reason,
        )
        log.info(
            "not answering %s from %s: %s",
            incoming.platform_message_id,
            incoming.author.external_id,
            reason,
        )

    async def _refuse_large(self, header_block: bytes, size: int) -> None:
        headers = parse_mail(header_block)
        mail = read_mail(headers, header_block)
        limit = self.settings.max_message_bytes
        note = f"[not read: the mail is {size} bytes, over max_message_bytes = {limit}]"
        text = f"Subject: {mail.subject}\n\n{note}" if mail.subject else note
        await self._refuse(self._incoming(mail, text), f"too large ({size} bytes > {limit})")

    async def _stored_answer(self, incoming: Incoming) -> str | None:
        memory = self.instance.memory
        recorded = await memory.record_incoming(incoming, self.instance.instance_id)
        answer_id = await memory.reply_to(recorded.message_id)
        answer = await memory.message(answer_id) if answer_id is not None else None
        return answer.text if answer is not None else None

    async def _queue_answer(self, mail: ReadMail, text: str) -> None:
        assert mail.reply_to is not None  # why_not_answer refuses mail without a sender
        await self.instance.memory.enqueue(
            entrance=ENTRANCE,
            target=mail.reply_to,
            text=text,
            payload=reply_payload(
                subject=reply_subject(mail.subject),
                in_reply_to=mail.message_id,
                references=mail.references,
                message_id=reply_message_id(mail.message_id, self.own_address),
            ),
            dedupe_key=f"email-reply:{mail.message_id}",
        )

    # Sending --------------------------------------------------------------------------------

    async def deliver(self, item: OutboxItem) -> None:
        """Mail one outbox row (the courier retries with backoff when this raises)."""
        target = item.target.strip()
        if is_thread_target(target):
            letter = await self._letter_in_thread(item)
        elif "@" in target:
            letter = letter_for(item, self.own_address)
        else:
            raise ValueError(f"outbox target {target!r} is neither a mail address nor a thread")
        soul = await self.instance.memory.active_soul()
        message = compose(
            letter, own_address=self.own_address, own_name=soul.name if soul else None
        )
        await send_mail(self.settings, self.password, message, letter.to)

    async def _letter_in_thread(self, item: OutboxItem) -> Letter:
        """A follow-up in a conversation: to whoever last wrote in that thread (not a robot)."""
        thread_id = item.target.strip()
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
                    text=item.text,
                    message_id=outbox_message_id(
                        item.dedupe_key or f"outbox:{item.id}", self.own_address
                    ),
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
