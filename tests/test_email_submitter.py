"""The email entrance's SMTP connection, kept between replies (adapters/email/transport.py):
replies one after another share one connection (one login), and a connection the server
has dropped meanwhile is replaced before a mail is sent, so no reply is lost to it."""

from __future__ import annotations

import asyncio
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from adapters.email.manifest import EmailSettings
from adapters.email.transport import SmtpSubmitter
from adapters.email.writing import Letter, compose
from tests.fakes.server import LOCALHOST, free_port

PERSONA = "wren@mirror.test"
ALICE = "alice@example.test"


class Recorder:
    """Accepts every mail; notes which connection (client address) carried it."""

    def __init__(self) -> None:
        self.mails: list[tuple[Any, list[str]]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.mails.append((session.peer, list(envelope.rcpt_tos)))
        return "250 OK"


async def served(recorder: Recorder, port: int) -> Controller:
    controller = Controller(recorder, hostname=LOCALHOST, port=port, ready_timeout=10.0)
    await asyncio.to_thread(controller.start)
    return controller


def reply(n: int) -> Any:
    letter = Letter(to=ALICE, subject=f"Re: note {n}", text=f"Answer {n}.", message_id=f"<{n}@x>")
    return compose(letter, own_address=PERSONA, own_name="Wren")


async def test_replies_share_one_connection_and_a_dropped_one_is_replaced() -> None:
    port = free_port(LOCALHOST)
    settings = EmailSettings(
        address=PERSONA, imap_host=LOCALHOST, smtp_host=LOCALHOST, smtp_port=port, security="none"
    )
    submitter = SmtpSubmitter(settings, "secret", within_s=10)
    first, second = Recorder(), Recorder()
    server = await served(first, port)
    try:
        await submitter.send(reply(1), ALICE)
        await submitter.send(reply(2), ALICE)
        assert [rcpt for _, rcpt in first.mails] == [[ALICE], [ALICE]]
        assert first.mails[0][0] == first.mails[1][0]  # the same connection

        await asyncio.to_thread(server.stop)  # the server goes away, and comes back
        server = await served(second, port)
        await submitter.send(reply(3), ALICE)
        assert [rcpt for _, rcpt in second.mails] == [[ALICE]]
    finally:
        await submitter.close()
        await asyncio.to_thread(server.stop)


def test_aioimaplib_chatter_stays_out_of_the_log(caplog: Any) -> None:
    """aioimaplib logs "ignored untagged response" at INFO for each new mail's EXISTS and
    RECENT (bench/lean: 46 of a run's 534 lines); its warnings still come through."""
    import logging

    import adapters.email.transport  # noqa: F401  (sets the level where it imports aioimaplib)

    chatty = logging.getLogger("aioimaplib.aioimaplib")
    with caplog.at_level(logging.INFO):
        chatty.info("ignored untagged response : b'3 EXISTS'")
        chatty.warning("connection lost")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("aioimaplib")] == [
        "connection lost"
    ]
