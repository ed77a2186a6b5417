"""The email entrance, through real `mirror run email` processes against a real Dovecot (IMAP)
and an aiosmtpd sink (SMTP) on 127.0.0.1, plus unit tests of its pure parts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from adapters.email.manifest import EmailSettings
from adapters.email.reading import (
    html_to_text,
    parse_mail,
    read_mail,
    reply_subject,
    strip_quotes_and_signature,
    why_not_answer,
)
from adapters.email.runtime import EmailEntrance, check_settings, command_line
from adapters.email.transport import ImapSession, MailboxUnavailable, send_mail
from adapters.email.writing import Letter, compose, letter_for, reply_message_id
from bot.config import Config, load_config
from bot.entrance import EntranceFailure
from bot.memory import Memory, ReplyDelivery, TurnRecord
from bot.models import Message, OutboxItem
from tests.conftest import run_mirror
from tests.email_helpers import TlsDovecot, TlsSmtp, make_certificate
from tests.fakes import mail_servers
from tests.fakes.mail_servers import ALICE, PERSONA, PERSONA_PASSWORD, Dovecot, SmtpSink
from tests.fakes.openai_api import FakeOpenAI
from tests.processes import ChatProcess, MirrorProcess
from tests.waiting import wait_until

dovecot = mail_servers.dovecot
smtp_sink = mail_servers.smtp_sink

# A first turn imports litellm (seconds on a busy machine): generous limits, never sleeps.
TURN_S = 60.0
CAROL = "carol@example.test"


# Helpers -----------------------------------------------------------------------------------


def mail(
    subject: str,
    body: str,
    *,
    message_id: str,
    sender: str = f"Alice Example <{ALICE}>",
    **headers: str,
) -> EmailMessage:
    """A mail to the persona; keyword headers use '_' for '-' (Reply_To=...)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = PERSONA
    message["Subject"] = subject
    message["Message-ID"] = message_id
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


def email_config(
    write_config: Callable[..., Path],
    dovecot: Dovecot,
    smtp_sink: SmtpSink,
    *,
    before: str = "",
    email_extra: str = "",
    imap_port: int | None = None,
) -> Path:
    return write_config(
        before
        + "[entrances.email]\nenabled = true\n"
        + f'address = "{PERSONA}"\n'
        + f'imap_host = "127.0.0.1"\nimap_port = {imap_port or dovecot.imap_port}\n'
        + f'smtp_host = "127.0.0.1"\nsmtp_port = {smtp_sink.port}\n'
        + 'security = "none"\n'
        + email_extra
    )


async def start_email(config: Path, *options: str, **env: str) -> MirrorProcess:
    process = MirrorProcess(
        "run",
        "email",
        "--config",
        str(config),
        *options,
        env={"MIRROR_EMAIL_PASSWORD": PERSONA_PASSWORD, **env},
    )
    await process.start()
    try:
        await process.wait_for_line(lambda line: "watching" in line, stream="stderr", timeout=30)
    except BaseException:
        await process.stop(signal.SIGKILL)
        raise
    return process


def seen(dovecot: Dovecot) -> list[bool]:
    return ["\\Seen" in flags for flags in dovecot.flags(PERSONA)]


async def wait_until_seen(dovecot: Dovecot, expected: list[bool]) -> None:
    """Wait until the persona's INBOX is `expected`: per message, whether it is \\Seen."""
    await wait_until(
        lambda: seen(dovecot) == expected,
        TURN_S,
        lambda: f"\\Seen flags {expected} (they are {seen(dovecot)})",
    )


@contextlib.asynccontextmanager
async def open_memory(path: Path) -> AsyncIterator[Memory]:
    memory = Memory(path)
    await memory.open()
    try:
        yield memory
    finally:
        await memory.close()


async def messages(path: Path, direction: str) -> list[Message]:
    async with open_memory(path) as memory:
        return [m for m in await memory.message_log(200) if m.direction == direction]


async def wait_for_outbox(db: Path, predicate: Callable[[OutboxItem], bool]) -> OutboxItem:
    """The first outbox row matching `predicate`, polled from memory.db."""
    async with open_memory(db) as memory:
        rows: list[OutboxItem] = []

        async def matching_row() -> OutboxItem | None:
            rows[:] = await memory.outbox()
            return next((row for row in rows if predicate(row)), None)

        return await wait_until(matching_row, TURN_S, lambda: f"a matching outbox row in {rows}")


async def conflicts(config: Path) -> list[dict[str, object]]:
    result = await asyncio.to_thread(run_mirror, "conflicts", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    found: list[dict[str, object]] = json.loads(result.stdout)
    return found


# Through a real `mirror run email` ----------------------------------------------------------


BOUNCE = (
    b"Return-Path: <>\r\n"
    b"From: Mail Delivery System <MAILER-DAEMON@example.test>\r\n"
    b"To: persona@mirror.test\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"Message-ID: <bounce@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
    b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.test\r\n\r\n"
    b"Final-Recipient: rfc822; nobody@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"--b1--\r\n"
)


async def test_a_mail_gets_one_threaded_reply_and_automated_mail_gets_none(
    write_config: Callable[..., Path], dovecot: Dovecot, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    config = email_config(
        write_config, dovecot, smtp_sink, email_extra="max_message_bytes = 20000\n"
    )
    process = await start_email(config)
    try:
        dovecot.deliver(
            PERSONA,
            mail(
                "Out of office",
                "I'm away until Monday.",
                message_id="<ooo@example.test>",
                Auto_Submitted="auto-replied",
            ),
        )
        dovecot.deliver(PERSONA, BOUNCE)
        dovecot.deliver(
            PERSONA,
            mail(
                "Weekly digest",
                "Can you call me on Friday at 3pm?",
                message_id="<list@example.test>",
                sender="Bob <bob@example.test>",
                List_Id="Friends <friends.lists.example.test>",
            ),
        )
        dovecot.deliver(
            PERSONA,
            mail("Huge", "What is your name?\n" + "x" * 30_000, message_id="<huge@example.test>"),
        )
        dovecot.deliver(
            PERSONA,
            mail(
                "RE: Re: What is your name?",
                "What is your name?\n\nOn Mon, 1 Jun 2026, Wren <persona@mirror.test> wrote:\n"
                "> an older line\n-- \nAlice, sent from a phone\n",
                message_id="<second@example.test>",
                In_Reply_To="<first@example.test>",
                References="<root@example.test> <first@example.test>",
                Reply_To="Alice at home <alice.home@example.test>",
            ),
        )
        # Mail is taken oldest first and answers leave in order: when the last mail's answer
        # arrives, an answer to any of the others would have arrived before it.
        [reply] = await smtp_sink.wait_for(timeout=TURN_S)
        await wait_until_seen(dovecot, [True] * 5)
    finally:
        assert await process.stop() == 0
    assert len(smtp_sink.received) == 1
    answer = reply.message
    assert reply.rcpt_tos == ["alice.home@example.test"]
    assert answer["To"] == "alice.home@example.test"
    assert answer["Subject"] == "Re: What is your name?"
    assert answer["In-Reply-To"] == "<second@example.test>"
    assert answer["References"].split() == [
        "<root@example.test>",
        "<first@example.test>",
        "<second@example.test>",
    ]
    assert answer["Auto-Submitted"] == "auto-replied"
    assert answer["From"].addresses[0].addr_spec == PERSONA
    assert answer["Message-ID"] == reply_message_id("<second@example.test>", PERSONA)
    assert "Wren" in answer.get_content()

    async with open_memory(tmp_path / "memory.db") as memory:
        recorded = {m.platform_message_id: m for m in await memory.message_log(20)}
        refused = await memory.audit_log(action="email.refused")
        [queued] = await memory.outbox()
    asked = recorded["<second@example.test>"]
    assert asked.text == "Subject: RE: Re: What is your name?\n\nWhat is your name?"
    assert asked.conversation_external_id == "<root@example.test>"
    assert asked.status == "answered"
    assert queued.dedupe_key == "reply:<second@example.test>"
    reasons = {entry.subject: str(entry.detail["reason"]) for entry in refused}
    assert reasons["<ooo@example.test>"] == "Auto-Submitted: auto-replied"
    assert reasons["<bounce@example.test>"].startswith("multipart/report")
    assert reasons["<list@example.test>"].startswith("List-Id")
    assert reasons["<huge@example.test>"].startswith("too large")
    for automated in ("<ooo@example.test>", "<bounce@example.test>", "<list@example.test>"):
        assert recorded[automated].status == "refused"
    huge = recorded["<huge@example.test>"]
    assert huge.status == "refused"
    assert "[not read: the mail is" in huge.text and "xxxx" not in huge.text


async def test_kill_9_mid_turn_or_before_sending_still_gives_exactly_one_reply(
    write_config: Callable[..., Path], dovecot: Dovecot, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    db = tmp_path / "memory.db"
    env = {"OPENAI_API_KEY": "sk-test"}
    async with FakeOpenAI(default_content="Hello Alice, yes we can. Best, Wren") as fake:
        model = (
            f'[model]\nname = "openai/fake-model"\napi_base = "{fake.base_url}"\n'
            "retries = 0\ntimeout_s = 30\n\n"
            # A killed process holds the entrance's lease this long; --standby waits it out.
            "[persona]\ninstance_dead_after_s = 0.6\n\n"
        )
        config = email_config(write_config, dovecot, smtp_sink, before=model)

        # First life: killed while the model is still thinking.
        fake.queue_delay(120, "too late")
        first = await start_email(config, **env)
        try:
            dovecot.deliver(PERSONA, mail("A talk", "Can we talk?", message_id="<talk@x.test>"))
            await fake.wait_for_requests(1, timeout=TURN_S)
        finally:
            await first.stop(signal.SIGKILL)
        assert seen(dovecot) == [False]
        assert smtp_sink.received == []

        # Second life: the turn completes and the answer is queued, but the SMTP server
        # turns it away once; killed before the courier's retry.
        smtp_sink.reject_next(1)
        second = await start_email(config, "--standby", **env)
        try:
            await wait_until_seen(dovecot, [True])
            await wait_for_outbox(db, lambda row: (row.status, row.attempts) == ("pending", 1))
        finally:
            await second.stop(signal.SIGKILL)
        assert smtp_sink.received == []

        # Third life: the queued answer goes out once; the mail is not thought about again.
        third = await start_email(config, "--standby", **env)
        try:
            [reply] = await smtp_sink.wait_for(timeout=TURN_S)
            await wait_for_outbox(db, lambda row: row.status == "sent")
        finally:
            # No turn ran: a clean stop would only wait for the model library's import.
            await third.stop(signal.SIGKILL)
        assert len(fake.requests) == 2
    assert len(smtp_sink.received) == 1
    assert reply.message["In-Reply-To"] == "<talk@x.test>"
    assert "yes we can" in reply.message.get_content()
    assert len(await messages(db, "out")) == 1
    async with open_memory(db) as memory:
        [row] = await memory.outbox()
    assert (row.status, row.dedupe_key) == ("sent", "reply:<talk@x.test>")


async def test_coordinator_resolves_a_conflict_by_mail_and_only_the_coordinator_can(
    write_config: Callable[..., Path], dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:

    config = email_config(
        write_config,
        dovecot,
        smtp_sink,
        before=f'[coordinator]\naddress = "email:{CAROL}"\n\n',
    )
    process, bob = await asyncio.gather(
        start_email(config), ChatProcess(config, "desk", "bob").start()
    )
    try:
        # Alice asks by mail, Bob on his terminal: both want Friday at 3pm.
        dovecot.deliver(
            PERSONA,
            mail("A call", "Can you call me on Friday at 3pm?", message_id="<call@example.test>"),
        )
        await smtp_sink.wait_for(lambda m: m.rcpt_tos == [ALICE], timeout=TURN_S)
        await bob.say("Could you review my draft on Friday at 3pm?")
        [conflict] = await conflicts(config)
        scheduler = await asyncio.to_thread(
            run_mirror, "scheduler", "--once", "--config", str(config)
        )
        assert scheduler.returncode == 0, scheduler.stderr

        [surfaced] = await smtp_sink.wait_for(lambda m: m.rcpt_tos == [CAROL], timeout=TURN_S)
        item = surfaced.message
        assert item["Subject"] == f"MirrorOS: item {conflict['id']} needs your decision"
        assert item["Auto-Submitted"] == "auto-generated"
        assert f"/resolve {conflict['id']} A|B" in item.get_content()

        def answer(sender: str, line: str, message_id: str) -> EmailMessage:
            quoted = "\n".join(f"> {text}" for text in item.get_content().splitlines())
            return mail(
                f"Re: {item['Subject']}",
                f"{line}\n\nOn Tue, 24 Nov 2026, Wren <{PERSONA}> wrote:\n{quoted}\n",
                message_id=message_id,
                sender=sender,
                In_Reply_To=item["Message-ID"],
                References=item["Message-ID"],
            )

        # Someone else writing the same line is refused, and nothing changes.
        dovecot.deliver(
            PERSONA,
            answer("mallory@example.test", f"/resolve {conflict['id']} B", "<m@example.test>"),
        )
        [refusal] = await smtp_sink.wait_for(lambda m: m.rcpt_tos == ["mallory@example.test"])
        assert "Only my coordinator" in refusal.message.get_content()
        assert [c["status"] for c in await conflicts(config)] == ["surfaced"]

        # The coordinator's answer resolves it and tells Alice (in her thread) and Bob.
        dovecot.deliver(
            PERSONA, answer(CAROL, f"/resolve {conflict['id']} A --notify", "<c@example.test>")
        )
        [confirmation] = await smtp_sink.wait_for(
            lambda m: m.rcpt_tos == [CAROL] and m.message["In-Reply-To"] == "<c@example.test>"
        )
        assert f"Resolved #{conflict['id']}" in confirmation.message.get_content()
        [resolved] = await conflicts(config)
        assert (resolved["status"], resolved["choice"]) == ("resolved", "A")
        assert resolved["resolved_by"] == f"email:{CAROL}"

        in_alices_thread = await smtp_sink.wait_for(
            lambda m: m.rcpt_tos == [ALICE] and m.message["In-Reply-To"] == "<call@example.test>",
            count=2,  # her answer, then the update
        )
        update = in_alices_thread[1]
        assert "my coordinator decided" in update.message.get_content()
        assert "my coordinator decided" in (await bob.next_outbox(timeout=TURN_S))["text"]
    finally:
        codes = await asyncio.gather(process.stop(), bob.quit())
    assert codes == [0, 0]


class ImapRelay:
    """A TCP relay to Dovecot that can hide the IDLE capability and cut every connection."""

    def __init__(self, target_port: int, *, hide_idle: bool) -> None:
        self.target_port = target_port
        self.hide_idle = hide_idle
        self.port = 0
        self.accepted = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ImapRelay:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, from_server: bool
        ) -> None:
            try:
                while data := await source.read(65536):
                    if from_server and self.hide_idle:
                        data = data.replace(b" IDLE", b"")
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))


async def test_polls_without_idle_and_reconnects_after_the_connection_drops(
    write_config: Callable[..., Path], dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    def out_of_office(number: int) -> EmailMessage:
        return mail(
            "Away",
            "Back on Monday.",
            message_id=f"<away-{number}@example.test>",
            Auto_Submitted="auto-replied",
        )

    async with ImapRelay(dovecot.imap_port, hide_idle=True) as relay:
        config = email_config(
            write_config,
            dovecot,
            smtp_sink,
            imap_port=relay.port,
            email_extra="poll_interval_s = 0.2\n",
        )
        process = await start_email(config)
        try:
            assert any("polling every 0.2 s" in line for line in process.stderr)
            dovecot.deliver(PERSONA, out_of_office(1))
            await wait_until_seen(dovecot, [True])

            connections = relay.accepted
            relay.cut()
            await process.wait_for_line(
                lambda line: "reconnected" in line, stream="stderr", timeout=30
            )
            assert relay.accepted == connections + 1
            dovecot.deliver(PERSONA, out_of_office(2))
            await wait_until_seen(dovecot, [True, True])
        finally:
            # No turn ran, so a clean stop would only wait for the model library's
            # background import; clean stops are checked by the other tests.
            await process.stop(signal.SIGKILL)
    assert any("IMAP connection lost" in line for line in process.stderr)


def test_plain_text_login_to_a_remote_server_is_refused_at_start(
    write_config: Callable[..., Path],
) -> None:
    config = write_config(
        f'[entrances.email]\nenabled = true\naddress = "{PERSONA}"\n'
        'imap_host = "mail.example.org"\nsmtp_host = "127.0.0.1"\nsecurity = "none"\n'
    )
    result = run_mirror("run", "email", "--config", str(config), MIRROR_EMAIL_PASSWORD="pw")
    assert result.returncode == 2
    assert 'security = "none"' in result.stderr and "mail.example.org" in result.stderr


async def test_a_refused_login_stops_the_entrance_with_one_clear_line(
    write_config: Callable[..., Path], dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    config = email_config(write_config, dovecot, smtp_sink)
    result = await asyncio.to_thread(
        run_mirror, "run", "email", "--config", str(config), MIRROR_EMAIL_PASSWORD="wrong"
    )
    assert result.returncode == 2
    assert "refused the login" in result.stderr and "MIRROR_EMAIL_PASSWORD" in result.stderr


# Pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Sounds good.\n\nOn Tue, 3 Jun 2025 at 10:00, Wren <w@x.org> wrote:\n> old\n> older\n",
            "Sounds good.",
        ),
        (  # the attribution wrapped over two lines by the sender's client
            "Yes.\n\nOn Tue, 3 Jun 2025 at 10:00, Wren\n<w@x.org> wrote:\n\n> old\n",
            "Yes.",
        ),
        (  # interleaved answers survive, quotes do not
            "> Can you come?\nYes.\n> At what time?\nAt six.\n",
            "Yes.\nAt six.",
        ),
        ("Thanks!\n-- \nAlice\n+49 123\n", "Thanks!"),
        ("Thanks!\n--\nAlice\n", "Thanks!"),
        ("Fine.\n\n-----Original Message-----\nFrom: Wren\nSent: today\n\nold text\n", "Fine."),
        ("Fine.\n\n________________________________\nFrom: Wren\nSent: today\nold\n", "Fine."),
        ("Le mar. 3 juin 2025, Wren a écrit :\n> vieux\nOui.", "Oui."),
        (
            "Keep -- this dash and\nthe > inside a line.",
            "Keep -- this dash and\nthe > inside a line.",
        ),
    ],
)
def test_quotes_and_signatures_are_stripped(text: str, expected: str) -> None:
    assert strip_quotes_and_signature(text) == expected


def test_html_becomes_text_without_scripts_and_with_line_breaks() -> None:
    html = (
        "<html><head><title>t</title><style>p {color: red}</style></head><body>"
        "<script>alert('x')</script><p>Hello&nbsp;Wren &amp; co,</p>"
        "<div>line one<br>line two</div><ul><li>first</li><li>second</li></ul>"
        "<blockquote>quoted <b>history</b></blockquote><p>Bye</p></body></html>"
    )
    text = html_to_text(html)
    assert text == (
        "Hello Wren & co,\n\nline one\nline two\n- first\n- second\n\n> quoted history\n\nBye"
    )
    assert "alert" not in text and "color" not in text
    assert (
        strip_quotes_and_signature(text)
        == "Hello Wren & co,\n\nline one\nline two\n- first\n- second\n\nBye"
    )
    assert html_to_text("<p>unclosed <b>tags <script>evil()") == "unclosed tags"


def test_html_only_mail_is_read_as_text_and_attachments_are_only_named() -> None:
    message = EmailMessage()
    message["From"] = "Ann <ann@example.test>"
    message["Subject"] = "Plans"
    message["Message-ID"] = "<plans@example.test>"
    message.set_content("<p>Can we meet?</p><script>steal()</script>", subtype="html")
    message.add_attachment(
        b"%PDF-1.4 secret", maintype="application", subtype="pdf", filename="a.pdf"
    )
    message.add_attachment(b"\x89PNG", maintype="image", subtype="png", filename="b.png")
    raw = message.as_bytes()
    read = read_mail(parse_mail(raw), raw)
    assert read.body == "Can we meet?"
    assert read.attachments == ["a.pdf", "b.png"]
    assert read.text == "Subject: Plans\n\nCan we meet?\n\n[attachments: a.pdf, b.png]"
    assert read.sender is not None and read.sender.display_name == "Ann"
    assert read.thread_id == read.message_id == "<plans@example.test>"


def human(**headers: str) -> EmailMessage:
    return mail("Hi", "Hello there", message_id="<h@example.test>", **headers)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Auto_Submitted": "auto-replied"}, "Auto-Submitted: auto-replied"),
        ({"Auto_Submitted": "auto-generated; owner-email=x@y"}, "Auto-Submitted: auto-generated"),
        ({"Precedence": "bulk"}, "Precedence: bulk"),
        ({"Precedence": "junk"}, "Precedence: junk"),
        ({"Precedence": "List"}, "Precedence: list"),
        ({"Precedence": "auto_reply"}, "Precedence: auto_reply"),
        ({"X_Autoreply": "yes"}, "X-Autoreply header"),
        ({"X_Autorespond": "yes"}, "X-Autorespond header"),
        ({"X_Auto_Response_Suppress": "All"}, "X-Auto-Response-Suppress header"),
        ({"List_Id": "<l.example.test>"}, "List-Id header"),
        ({"List_Unsubscribe": "<mailto:u@example.test>"}, "List-Unsubscribe header"),
        ({"X_Loop": "persona@mirror.test"}, "X-Loop header"),
        ({"Feedback_ID": "1:2:3"}, "Feedback-ID header"),
        ({"Return_Path": "<>"}, "empty Return-Path"),
        ({"sender": "MAILER-DAEMON@example.test"}, "is a robot"),
        ({"sender": "postmaster@example.test"}, "is a robot"),
        ({"sender": "no-reply@example.test"}, "is a robot"),
        ({"sender": "noreply+news@example.test"}, "is a robot"),
        ({"sender": "do-not-reply@example.test"}, "is a robot"),
        ({"sender": "Wren <Persona@Mirror.test>"}, "sender is my own address"),
        ({"Reply_To": PERSONA}, "reply address is my own address"),
        ({"Reply_To": "noreply@example.test"}, "is a robot"),
        ({"sender": "Nobody <>"}, "no sender address"),
    ],
)
def test_why_not_answer_refuses_robots_lists_and_loops(
    headers: dict[str, str], reason: str
) -> None:
    found = why_not_answer(human(**headers), PERSONA, [])
    assert found is not None and reason in found


def test_multipart_report_is_never_answered() -> None:
    assert (
        why_not_answer(parse_mail(BOUNCE.replace(b"Return-Path: <>\r\n", b"")), "p@x", []) or ""
    ).startswith("multipart/report (delivery-status)")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Auto_Submitted": "no"}, {"Precedence": "first-class"}, {"Return_Path": f"<{ALICE}>"}],
)
def test_why_not_answer_lets_people_through(headers: dict[str, str]) -> None:
    assert why_not_answer(human(**headers), PERSONA, []) is None


def test_allow_senders_takes_addresses_and_domains() -> None:
    assert why_not_answer(human(), PERSONA, [ALICE]) is None
    assert why_not_answer(human(), PERSONA, ["@Example.test"]) is None
    assert why_not_answer(human(), PERSONA, ["example.test"]) is None
    refused = why_not_answer(human(), PERSONA, ["bob@example.test", "@other.test"])
    assert refused == f"sender {ALICE} is not in allow_senders"
    elsewhere = why_not_answer(human(Reply_To="eve@evil.test"), PERSONA, ["@example.test"])
    assert elsewhere == "reply address eve@evil.test is not in allow_senders"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Lunch", "Re: Lunch"),
        ("Re: Lunch", "Re: Lunch"),
        ("RE: re:Re: Lunch", "Re: Lunch"),
        ("Re[2]: Lunch", "Re: Lunch"),
        ("AW: Lunch", "Re: Lunch"),
        ("Regarding lunch", "Re: Regarding lunch"),
        ("", "Re: your message"),
    ],
)
def test_reply_subject_has_exactly_one_re(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected


def test_thread_and_references_of_an_answer() -> None:
    raw = (
        b"From: alice@example.test\r\nMessage-ID: <h@example.test>\r\n"
        b"In-Reply-To: <b@x>\r\nReferences: <a@x>\r\n <b@x>\r\n\r\nhi\r\n"
    )
    read = read_mail(parse_mail(raw), raw)
    assert read.thread_id == "<a@x>" and read.in_reply_to == "<b@x>"
    assert read.references == ["<a@x>", "<b@x>", "<h@example.test>"]
    only_parent = read_mail(human(In_Reply_To="<b@x>"), b"")
    assert only_parent.thread_id == "<b@x>" and only_parent.references == [
        "<b@x>",
        "<h@example.test>",
    ]
    no_id = EmailMessage()
    no_id["From"] = ALICE
    no_id.set_content("hi")
    first, again = (read_mail(no_id, no_id.as_bytes()).message_id for _ in range(2))
    assert first == again and first.startswith("<sha256-")


def test_coordinator_command_must_be_the_first_new_line() -> None:
    assert command_line("\n/resolve 12 A take the call\nthanks") == "/resolve 12 A take the call"
    assert command_line("/tmp is full again") is None
    assert command_line("Hello\n/resolve 12 A") is None


def test_answer_ids_are_stable_and_coordinator_items_have_a_subject() -> None:
    assert reply_message_id("<a@x>", PERSONA) == reply_message_id("<a@x>", PERSONA)
    assert reply_message_id("<a@x>", PERSONA) != reply_message_id("<b@x>", PERSONA)
    letter = letter_for(
        CAROL,
        "Reminder: still waiting for you.\nConflict #12 ...",
        {"kind": "coordinator_item", "item_id": 12},
        "outbox-3-0",
        PERSONA,
    )
    assert letter.subject == "Reminder: MirrorOS: item 12 needs your decision"
    assert letter.to == CAROL and letter.auto_submitted == "auto-generated"
    assert "/resolve 12 A" in letter.text


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_plain_connections_only_to_this_machine(host: str) -> None:
    settings = EmailSettings(address=PERSONA, imap_host=host, smtp_host=host, security="none")
    check_settings(settings)
    with pytest.raises(EntranceFailure, match="smtp_host"):
        check_settings(settings.model_copy(update={"smtp_host": "smtp.example.org"}))
    check_settings(settings.model_copy(update={"smtp_host": "smtp.example.org", "security": "ssl"}))


# TLS --------------------------------------------------------------------------------------


async def test_starttls_for_imap_and_smtp_with_the_certificate_checked(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    certificate = make_certificate(tmp_path)
    server = TlsDovecot(certificate)  # refuses any login before STARTTLS
    server.add_user(PERSONA, PERSONA_PASSWORD)
    async with server, TlsSmtp(certificate, implicit=False) as smtp:
        config = write_config(
            "[entrances.email]\nenabled = true\n"
            f'address = "{PERSONA}"\n'
            f'imap_host = "127.0.0.1"\nimap_port = {server.imap_port}\n'
            f'smtp_host = "127.0.0.1"\nsmtp_port = {smtp.port}\n'
            'security = "starttls"\n'
        )
        async with open_memory(tmp_path / "memory.db") as memory:
            await memory.enqueue(
                entrance="email",
                target=ALICE,
                text="Hello over TLS.",
                payload={"subject": "TLS check"},
                dedupe_key="tls-check",
            )
        process = await start_email(config, SSL_CERT_FILE=str(certificate.cert))
        try:
            server.deliver(
                PERSONA,
                mail("Away", "Back soon.", message_id="<t@x.test>", Auto_Submitted="auto-replied"),
            )
            sent = await smtp.wait_for_mail(TURN_S)
            await wait_until_seen(server, [True])
        finally:
            # No turn ran: a clean stop would only wait for the model library's import.
            await process.stop(signal.SIGKILL)
    assert sent.encrypted and sent.rcpt_tos == [ALICE]
    letter = parse_mail(sent.raw)
    assert letter["Subject"] == "TLS check" and letter["Auto-Submitted"] == "auto-generated"


async def test_implicit_tls_for_imap_and_smtp_and_untrusted_servers_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate = make_certificate(tmp_path)
    server = TlsDovecot(certificate)
    server.add_user(PERSONA, PERSONA_PASSWORD)
    async with server, TlsSmtp(certificate, implicit=True) as smtp:
        settings = EmailSettings(
            address=PERSONA,
            imap_host="127.0.0.1",
            imap_port=server.imaps_port,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            security="ssl",
        )
        untrusted = ImapSession(settings, PERSONA_PASSWORD, timeout=10)
        with pytest.raises(MailboxUnavailable, match="certificate verify failed"):
            await untrusted.open()
        await untrusted.close()

        monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
        session = ImapSession(settings, PERSONA_PASSWORD, timeout=10)
        await session.open()
        try:
            server.deliver(PERSONA, mail("Hi", "Hello", message_id="<i@x.test>"))
            assert await session.unseen() == ["1"]
            assert await session.fetch("1") is not None
            assert seen(server) == [False]  # BODY.PEEK leaves it unseen
            await session.mark_seen("1")
            assert seen(server) == [True]
        finally:
            await session.close()
        letter = Letter(to=ALICE, subject="Re: Hi", text="Hello back.", message_id="<r@x.test>")
        await send_mail(
            settings,
            PERSONA_PASSWORD,
            compose(letter, own_address=PERSONA, own_name="Wren"),
            ALICE,
        )
        sent = await smtp.wait_for_mail()
    assert sent.encrypted and sent.rcpt_tos == [ALICE]


def test_the_coordinator_is_recognised_whatever_the_case_of_the_address(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "memory": {"path": str(tmp_path / "memory.db")},
            "coordinator": {"address": "email:Carol@Example.test"},
            "entrances": {
                "email": {
                    "address": PERSONA,
                    "imap_host": "127.0.0.1",
                    "smtp_host": "127.0.0.1",
                    "security": "none",
                }
            },
        }
    )
    entrance = EmailEntrance(config, PERSONA_PASSWORD)
    raw = b"From: carol@EXAMPLE.test\r\nMessage-ID: <c@x>\r\n\r\n/pending\r\n"
    incoming = entrance._incoming(read_mail(parse_mail(raw), raw), "/pending")
    speaker = entrance.instance.roster.speaker(incoming)
    assert speaker.coordinator


async def test_a_crash_between_the_turn_and_seen_never_answers_twice(
    write_config: Callable[..., Path], dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    """In-process: the two crash windows a killed process cannot hit on purpose."""
    config = load_config(
        email_config(
            write_config, dovecot, smtp_sink, before=f'[coordinator]\naddress = "email:{CAROL}"\n\n'
        )
    )
    entrance = EmailEntrance(config, PERSONA_PASSWORD)
    memory = entrance.instance.memory
    await memory.open()
    session = ImapSession(config.entrance("email"), PERSONA_PASSWORD)
    await session.open()
    try:
        # 1. The answer was stored — and queued with it, in one transaction — then the
        # process died before sending it or marking the mail \Seen.
        asked = mail("Lunch?", "Lunch on Friday?", message_id="<lunch@example.test>")
        dovecot.deliver(PERSONA, asked)
        raw = asked.as_bytes()
        incoming = entrance._incoming(read_mail(parse_mail(raw), raw), "Lunch on Friday?")
        recorded = await memory.record_incoming(incoming, "email")
        await memory.store_turn(
            TurnRecord(
                incoming_id=recorded.message_id,
                conversation_id=recorded.conversation_id,
                entrance="email",
                instance_id="email",
                person_id=recorded.person_id,
                visibility="private",
                reply_text="Friday works. Best, Wren",
                soul_version=None,
                model="earlier-life",
                delivery=ReplyDelivery(
                    target=ALICE,
                    dedupe_key="reply:<lunch@example.test>",
                    payload={"in_reply_to": "<lunch@example.test>"},
                ),
            )
        )
        [uid] = await session.unseen()
        await entrance._take(session, uid)  # no model is asked, nothing is queued twice
        [row] = await memory.outbox()
        assert (row.target, row.text) == (ALICE, "Friday works. Best, Wren")
        assert row.payload["in_reply_to"] == "<lunch@example.test>"
        assert seen(dovecot) == [True]

        # 2. The answer was queued, then the process died before \Seen: taken again, the
        # same answer is not queued twice.
        dovecot.deliver(
            PERSONA, mail("Items", "/pending", message_id="<p@example.test>", sender=CAROL)
        )
        [uid] = await session.unseen()
        mark_seen = session.mark_seen

        async def crash(uid: str) -> None:
            raise MailboxUnavailable("killed before \\Seen")

        session.mark_seen = crash  # type: ignore[method-assign]
        with pytest.raises(MailboxUnavailable):
            await entrance._take(session, uid)
        session.mark_seen = mark_seen  # type: ignore[method-assign]
        assert seen(dovecot) == [True, False]
        await entrance._take(session, uid)
        assert seen(dovecot) == [True, True]
        rows = await memory.outbox()
        assert [(r.target, r.text) for r in rows].count((CAROL, "Nothing is waiting for you.")) == 1
        assert len(rows) == 2
    finally:
        await session.close()
        await memory.close()


@pytest.mark.parametrize(
    "cell", ["after-record", "during-model", "after-store", "during-send", "after-send"]
)
async def test_kill_9_at_each_step_of_a_mail_turn_answers_once(
    cell: str,
    write_config: Callable[..., Path],
    dovecot: Dovecot,
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> None:
    """The crash matrix for mail (Telegram and Discord: tests/e2e/test_crash_matrix.py)."""
    db = tmp_path / "memory.db"
    config = email_config(write_config, dovecot, smtp_sink)
    first = await start_email(config, MIRROR_CRASH_AT=cell)
    dovecot.deliver(PERSONA, mail("A talk", "What is your name?", message_id="<talk@x.test>"))
    assert first.proc is not None
    assert await asyncio.wait_for(first.proc.wait(), TURN_S) == -signal.SIGKILL, first.tail()
    second = await start_email(config)
    try:
        await smtp_sink.wait_for(timeout=TURN_S)
        await wait_until_seen(dovecot, [True])
        await wait_for_outbox(db, lambda row: row.status == "sent")
        await asyncio.sleep(1.0)  # a second copy, if any, would arrive now
    finally:
        assert await second.stop() == 0, second.tail()
    delivered = [r for r in smtp_sink.received if r.message["In-Reply-To"] == "<talk@x.test>"]
    print(f"crash matrix: mail {cell}: the reply arrived {len(delivered)} time(s)")  # with -s
    # After SMTP took it and before memory marked it sent, a crash sends it again — with
    # the same Message-ID, so the person's mail client shows one.
    assert 1 <= len(delivered) <= (2 if cell in ("during-send", "after-send") else 1)
    assert len({r.message["Message-ID"] for r in delivered}) == 1
    async with open_memory(db) as memory:
        log = await memory.message_log(10)
    assert [m.status for m in log if m.direction == "in"] == ["answered"]
