"""Self-test of the mail test servers: a real Dovecot and the aiosmtpd sink."""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
from collections.abc import AsyncIterator
from email.message import EmailMessage

import aioimaplib
import aiosmtplib
import pytest

from tests.fakes import mail_servers
from tests.fakes.mail_servers import (
    ALICE,
    ALICE_PASSWORD,
    PERSONA,
    PERSONA_PASSWORD,
    Dovecot,
    DovecotNotInstalled,
    SmtpSink,
)

# The fixtures, as a conftest.py would import them.
dovecot = mail_servers.dovecot
smtp_sink = mail_servers.smtp_sink


def make_message(subject: str, message_id: str, to: str = PERSONA) -> EmailMessage:
    message = EmailMessage()
    message["From"] = ALICE
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message.set_content(f"Body of {subject}.\n")
    return message


@contextlib.asynccontextmanager
async def imap_session(
    server: Dovecot, user: str, password: str
) -> AsyncIterator[aioimaplib.IMAP4]:
    client = aioimaplib.IMAP4(host=server.host, port=server.imap_port, timeout=10)
    await client.wait_hello_from_server()
    response = await client.login(user, password)
    assert response.result == "OK", response
    response = await client.select("INBOX")
    assert response.result == "OK", response
    try:
        yield client
    finally:
        await client.logout()


async def unseen_uids(client: aioimaplib.IMAP4) -> list[str]:
    # Dovecot only notices files dropped into new/ at a mailbox sync: NOOP first.
    assert (await client.noop()).result == "OK"
    response = await client.uid_search("UNSEEN", charset=None)
    assert response.result == "OK", response
    first: bytes = response.lines[0]  # [b"1 2", b"Search completed (...)"]
    return first.decode().split()


async def fetch_message(client: aioimaplib.IMAP4, uid: str) -> EmailMessage:
    response = await client.uid("fetch", uid, "(BODY.PEEK[])")
    assert response.result == "OK", response
    # [b"1 FETCH (UID 1 BODY[] {104}", bytearray(literal), b")", b"Fetch completed (...)"]
    literal = next(line for line in response.lines if isinstance(line, bytearray))
    parsed = email.message_from_bytes(bytes(literal), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


async def test_imap_sees_delivery_fetches_it_and_marks_it_seen(dovecot: Dovecot) -> None:
    async with imap_session(dovecot, PERSONA, PERSONA_PASSWORD) as client:
        assert await unseen_uids(client) == []
        key = dovecot.deliver(PERSONA, make_message("first", "<first@example.test>"))
        assert dovecot.flags(PERSONA) == [frozenset()]

        [uid] = await unseen_uids(client)
        fetched = await fetch_message(client, uid)
        assert fetched["Subject"] == "first"
        assert fetched.get_content().strip() == "Body of first."
        assert dovecot.flags(PERSONA) == [frozenset()]  # BODY.PEEK does not set \Seen

        response = await client.uid("store", uid, "+FLAGS", "(\\Seen)")
        assert response.result == "OK", response
        assert response.lines[0].startswith(f"1 FETCH (UID {uid} FLAGS (\\Seen".encode())

        [stored] = dovecot.mailbox(PERSONA)
        assert (stored.key, stored.uid, stored.flags) == (key, int(uid), frozenset({"\\Seen"}))
        assert stored.message_id == "<first@example.test>"
        assert await unseen_uids(client) == []
    assert dovecot.messages(ALICE) == []


async def test_idle_pushes_exists_after_delivery(dovecot: Dovecot) -> None:
    async with imap_session(dovecot, ALICE, ALICE_PASSWORD) as client:
        idle = await client.idle_start(timeout=10)
        dovecot.deliver(ALICE, make_message("ping", "<ping@example.test>", to=ALICE))
        push = await client.wait_server_push(timeout=5)
        assert b"1 EXISTS" in push, push
        client.idle_done()
        response = await asyncio.wait_for(idle, 5)
        assert response.result == "OK", response
        assert await unseen_uids(client) == ["1"]


async def test_add_user_after_start(dovecot: Dovecot) -> None:
    dovecot.add_user("bob@example.test", "bob-pw")
    dovecot.deliver("Bob@Example.test", make_message("hi bob", "<bob@example.test>"))
    async with imap_session(dovecot, "bob@example.test", "bob-pw") as client:
        assert await unseen_uids(client) == ["1"]


async def test_smtp_sink_records_and_delivers_to_dovecot_users(
    dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    message = make_message("hello persona", "<hello@example.test>")
    await aiosmtplib.send(
        message,
        hostname=smtp_sink.host,
        port=smtp_sink.port,
        recipients=[PERSONA, ALICE, "stranger@elsewhere.test"],
        username=PERSONA,
        password=PERSONA_PASSWORD,
        start_tls=False,
        timeout=10,
    )
    [mail] = await smtp_sink.wait_for(lambda m: m.message["Subject"] == "hello persona")
    assert mail.mail_from == ALICE
    assert mail.rcpt_tos == [PERSONA, ALICE, "stranger@elsewhere.test"]
    assert (mail.auth_login, mail.auth_password) == (PERSONA, PERSONA_PASSWORD)
    assert mail.message["Message-ID"] == "<hello@example.test>"
    assert b"Subject: hello persona\r\n" in mail.raw
    assert set(mail.delivered) == {PERSONA, ALICE}

    [at_alice] = dovecot.messages(ALICE)
    assert at_alice["Delivered-To"] == ALICE
    async with imap_session(dovecot, PERSONA, PERSONA_PASSWORD) as client:
        [uid] = await unseen_uids(client)
        fetched = await fetch_message(client, uid)
        assert fetched["Message-ID"] == "<hello@example.test>"
        assert fetched["Return-Path"] == f"<{ALICE}>"


async def test_wait_for_counts_matches_and_times_out(smtp_sink: SmtpSink) -> None:
    async def send(subject: str) -> None:
        message = make_message(subject, f"<{subject}@example.test>", to="x@elsewhere.test")
        await aiosmtplib.send(message, hostname=smtp_sink.host, port=smtp_sink.port)

    waiter = asyncio.create_task(smtp_sink.wait_for(count=2, timeout=5))
    await send("one")
    assert not waiter.done()
    await send("two")
    assert [m.message["Subject"] for m in await waiter] == ["one", "two"]
    assert smtp_sink.received[0].delivered == {}

    with pytest.raises(TimeoutError, match="not received"):
        await smtp_sink.wait_for(lambda m: m.message["Subject"] == "three", timeout=0.05)

    smtp_sink.reject_next(status="451 4.3.0 Try again later")
    with pytest.raises(aiosmtplib.SMTPDataError) as error:
        await send("rejected")
    assert error.value.code == 451
    assert len(smtp_sink.received) == 2


async def test_stop_removes_process_and_folder() -> None:
    server = Dovecot()
    server.add_user(PERSONA, PERSONA_PASSWORD)
    async with server:
        assert server.running
        workdir = server.workdir
    assert not server.running
    assert not workdir.exists()


async def test_missing_binary_says_how_to_install() -> None:
    server = Dovecot(binary="/nonexistent/dovecot")
    with pytest.raises(DovecotNotInstalled, match=r"scripts/install-test-deps\.sh"):
        await server.start()
    await server.stop()
    assert not server.workdir.exists()
