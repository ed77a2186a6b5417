"""Real mail servers for the email tests: Dovecot (IMAP) and an aiosmtpd sink (SMTP).

Both listen on 127.0.0.1 on free ports and keep all their state in a private temporary
folder, so tests never touch the system's mail setup.

- :class:`Dovecot` runs the Debian ``dovecot`` binary (``dovecot -F -c CONF``) with a
  generated configuration: plaintext IMAP, users from a passwd-file, Maildir storage.
  :meth:`Dovecot.deliver` drops a message straight into a user's ``Maildir/new`` (the way an
  MDA would), and :meth:`Dovecot.mailbox` / :meth:`~Dovecot.messages` / :meth:`~Dovecot.flags`
  read the Maildir back so tests can check what an IMAP client did (e.g. ``\\Seen``).
- :class:`SmtpSink` is an aiosmtpd ``Controller`` that accepts every message (AUTH PLAIN and
  LOGIN are offered and any credentials are accepted), records it in
  :attr:`SmtpSink.received`, and delivers it into the Dovecot Maildir of every recipient
  that is a Dovecot user. :meth:`SmtpSink.wait_for` waits for messages without sleeping.

Usage in a test (the fixtures are meant to be imported into a ``conftest.py``)::

    async def test_reply(dovecot: Dovecot, smtp_sink: SmtpSink) -> None:
        dovecot.deliver(PERSONA, b"From: alice@example.test\\r\\nSubject: hi\\r\\n\\r\\nhi\\r\\n")
        ...  # run the email entrance against dovecot.imap_port / smtp_sink.port
        [sent] = await smtp_sink.wait_for(lambda m: m.message["Subject"] == "Re: hi")
        assert dovecot.flags(PERSONA) == [frozenset({"\\\\Seen"})]

Dovecot needs the ``dovecot-imapd`` package (``scripts/install-test-deps.sh``). As root it
runs its login processes as ``dovenull``, its internal ones as ``dovecot`` and mail
access as ``nobody``/``nogroup`` (65534), because Dovecot refuses uid 0 for mail; as any
other user everything runs as that user. Stopping takes about a second (the master
always waits one second for its log process), so the fixture hands that wait to a
background thread; every Dovecot started here is waited for before the interpreter
exits, so none outlive the test run.

Notes for IMAP clients under test (Dovecot behaviour, not specific to this module):
messages delivered to ``new/`` are only noticed at a mailbox sync, so send ``NOOP``
before ``UID SEARCH UNSEEN``; during ``IDLE`` Dovecot pushes ``* N EXISTS`` about half a
second after a delivery.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import email
import email.policy
import grp
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.fakes.server import LOCALHOST, Served, free_port
from tests.waiting import wait_until

__all__ = [
    "ALICE",
    "ALICE_PASSWORD",
    "PERSONA",
    "PERSONA_PASSWORD",
    "Dovecot",
    "DovecotNotInstalled",
    "ReceivedMail",
    "SmtpSink",
    "StoredMail",
    "dovecot",
    "free_port",
    "smtp_sink",
]

PERSONA = "persona@mirror.test"
PERSONA_PASSWORD = "secret"
ALICE = "alice@example.test"
ALICE_PASSWORD = "alice-pw"

INSTALL_HINT = "run scripts/install-test-deps.sh (installs Debian's dovecot-imapd)"

# Maildir info letters (":2,<letters>") and the IMAP flags they stand for.
_MAILDIR_FLAGS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
_DELIVERY_COUNTER = itertools.count(1)
_KEY_ORDER = re.compile(r"^(\d+)(?:\.M(\d+))?(?:P\d+)?(?:Q(\d+))?")


def _parse(raw: bytes) -> EmailMessage:
    """Parse with CRLF turned into LF, so bodies read back as Python text ("\\n")."""
    message = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _as_bytes(message: bytes | Message) -> bytes:
    if isinstance(message, bytes):
        return message
    return message.as_bytes(policy=email.policy.default)


class DovecotNotInstalled(RuntimeError):
    """The ``dovecot`` binary is missing."""


@dataclass(frozen=True)
class StoredMail:
    """One message file of a Maildir folder, as Dovecot left it."""

    key: str
    """The Maildir base name (without ``:2,…``); stable when Dovecot moves or flags it."""
    path: Path
    uid: int | None
    """The IMAP UID from ``dovecot-uidlist``; None until an IMAP session has seen it."""
    flags: frozenset[str]
    """IMAP flags, e.g. ``{"\\\\Seen"}``; empty for a message still in ``new/``."""
    message: EmailMessage

    @property
    def message_id(self) -> str | None:
        value = self.message["Message-ID"]
        return None if value is None else str(value).strip()


class Dovecot(Served):
    """A private Dovecot IMAP server on 127.0.0.1 with Maildir users in a temp folder."""

    def __init__(
        self, *, host: str = LOCALHOST, binary: str | None = None, ready_timeout: float = 10.0
    ) -> None:
        self.host = host
        self.ready_timeout = ready_timeout
        self.imap_port = 0
        self.binary = binary or shutil.which("dovecot") or "/usr/sbin/dovecot"
        self.workdir = Path(tempfile.mkdtemp(prefix="mirroros-dovecot-"))
        # mkdtemp makes 0700 folders; Dovecot's unprivileged processes must traverse it.
        self.workdir.chmod(0o755)
        self.maildir_root = self.workdir / "mail"
        self.maildir_root.mkdir(mode=0o755)
        self.maildir_root.chmod(0o755)
        self.config_path = self.workdir / "dovecot.conf"
        self.log_path = self.workdir / "dovecot.log"
        self._passwd_path = self.workdir / "passwd"
        self._passwd_path.touch(mode=0o644)
        self._passwords: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._reaper: threading.Thread | None = None
        self._lock = threading.Lock()
        if os.geteuid() == 0:
            self._login_user, self._internal_user, self._internal_group = (
                "dovenull",
                "dovecot",
                "dovecot",
            )
            self._mail_uid = self._mail_gid = 65534
        else:  # Dovecot's "rootless" mode: every process runs as the current user
            self._login_user = self._internal_user = pwd.getpwuid(os.geteuid()).pw_name
            self._internal_group = grp.getgrgid(os.getegid()).gr_name
            self._mail_uid, self._mail_gid = os.geteuid(), os.getegid()

    # -- users and mailboxes ---------------------------------------------------------

    @property
    def users(self) -> dict[str, str]:
        """Known users (lower-cased addresses) and their passwords."""
        return dict(self._passwords)

    def has_user(self, address: str) -> bool:
        return address.strip().lower() in self._passwords

    def add_user(self, address: str, password: str) -> None:
        """Create a user with an empty INBOX; works before and after :meth:`start`.

        Dovecot re-reads the passwd-file when it changes, so no reload is needed.
        """
        user = address.strip().lower()
        if not user or any(c in user for c in ":/\n") or ":" in password or "\n" in password:
            raise ValueError(f"unusable address or password for a passwd-file: {address!r}")
        if user in self._passwords:
            raise ValueError(f"user {user!r} already exists")
        for sub in ("cur", "new", "tmp"):
            self._makedirs(self.maildir(user) / sub)
        with self._lock:
            self._passwords[user] = password
            with self._passwd_path.open("a", encoding="utf-8") as passwd:
                passwd.write(f"{user}:{{PLAIN}}{password}::::::\n")

    def maildir(self, address: str, folder: str = "INBOX") -> Path:
        """The Maildir++ folder of ``address`` (INBOX is the Maildir itself)."""
        base = self.maildir_root / address.strip().lower() / "Maildir"
        return base if folder.upper() == "INBOX" else base / f".{folder.replace('/', '.')}"

    def deliver(self, address: str, message: bytes | Message) -> str:
        """Drop a message into the user's INBOX ``new/`` (unseen), like an MDA would.

        The file is written to ``tmp/`` and renamed, so Dovecot never sees half a message.
        Returns the Maildir key of the new file (see :attr:`StoredMail.key`).
        """
        user = address.strip().lower()
        if user not in self._passwords:
            raise KeyError(f"{address!r} is not a Dovecot user here (add_user first)")
        now = time.time()
        key = (
            f"{int(now)}.M{int(now % 1 * 1_000_000):06d}P{os.getpid()}"
            f"Q{next(_DELIVERY_COUNTER)}.mirror-test"
        )
        folder = self.maildir(user)
        tmp = folder / "tmp" / key
        with tmp.open("xb") as file:
            file.write(_as_bytes(message))
        if os.geteuid() == 0:
            os.chown(tmp, self._mail_uid, self._mail_gid)
        tmp.chmod(0o600)
        tmp.rename(folder / "new" / key)
        return key

    def mailbox(self, address: str, folder: str = "INBOX") -> list[StoredMail]:
        """All messages of a folder, in IMAP UID order (unsynced new ones last, by age).

        Dovecot renames files while it works (``new/`` to ``cur/``, flags in the name), so
        the folder is read until one listing stays the same across the read.
        """
        root = self.maildir(address, folder)
        for _attempt in range(50):
            listing = self._listing(root)
            uids = self._uidlist(root)
            keywords = self._keywords(root)
            found: list[StoredMail] = []
            try:
                for path in listing:
                    key, _, info = path.name.partition(":2,")
                    flags = {_MAILDIR_FLAGS.get(ch, ch) for ch in info if ch.isupper()}
                    flags |= {keywords.get(ord(ch) - ord("a"), ch) for ch in info if ch.islower()}
                    found.append(
                        StoredMail(
                            key=key,
                            path=path,
                            uid=uids.get(key.split(",")[0]),
                            flags=frozenset(flags),
                            message=_parse(path.read_bytes()),
                        )
                    )
            except FileNotFoundError:
                continue  # renamed while we read: look again
            if self._listing(root) == listing:
                found.sort(key=lambda m: (m.uid is None, m.uid or 0, _key_order(m.key)))
                return found
        raise RuntimeError(f"{root} kept changing while it was read")

    @staticmethod
    def _listing(root: Path) -> list[Path]:
        paths: list[Path] = []
        for sub in ("cur", "new"):
            with contextlib.suppress(FileNotFoundError):
                paths.extend(sorted((root / sub).iterdir()))
        return paths

    def messages(self, address: str, folder: str = "INBOX") -> list[EmailMessage]:
        """The parsed messages of a folder, in the order of :meth:`mailbox`."""
        return [stored.message for stored in self.mailbox(address, folder)]

    def flags(self, address: str, folder: str = "INBOX") -> list[frozenset[str]]:
        """The IMAP flags of each message, in the order of :meth:`mailbox`/:meth:`messages`."""
        return [stored.flags for stored in self.mailbox(address, folder)]

    # -- process -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    async def start(self) -> None:
        """Start ``dovecot -F`` and return once it greets IMAP clients."""
        if self._process is not None:
            raise RuntimeError("this Dovecot was already started")
        try:
            for attempt in range(3):  # another process may grab the free port meanwhile
                self._spawn(attempt)
                if await self._wait_ready():
                    return
                if "Address already in use" not in self._log_tail():
                    break
            raise RuntimeError(f"dovecot did not start:\n{self._log_tail()}")
        except BaseException:
            await self.stop()
            raise

    def _spawn(self, attempt: int) -> None:
        if not Path(self.binary).exists():
            raise DovecotNotInstalled(f"dovecot is not installed: {INSTALL_HINT}")
        if self._process is not None:
            self._process.wait()  # a failed previous attempt; already exiting
        self.imap_port = free_port(self.host)
        self.config_path.write_text(self._config(attempt), encoding="utf-8")
        with (self.workdir / "dovecot.stderr").open("wb") as stderr:
            self._process = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,  # no terminal signals; killpg as a last resort
            )
        _LIVE.add(self)

    async def stop(self, *, wait: bool = True) -> None:
        """SIGTERM the master, then wait for it and remove the temp folder.

        The master always lingers ~1 s for its log process; with ``wait=False`` that wait
        (and the cleanup) happens in a background thread, which the interpreter joins at
        exit, so tests do not pay for it.
        """
        if self._reaper is None:
            if self._process is not None and self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
            self._reaper = threading.Thread(
                target=self._reap, name=f"dovecot-reaper-{self.imap_port}", daemon=False
            )
            self._reaper.start()
        if wait:
            await asyncio.to_thread(self._reaper.join)

    # -- internals -----------------------------------------------------------------------

    def _reap(self, grace: float = 15.0) -> None:
        process = self._process
        if process is not None:
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:  # should never happen; avoid leaking children
                warnings.warn(
                    f"dovecot {process.pid} ignored SIGTERM; killing its group", stacklevel=1
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        _LIVE.discard(self)
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def _wait_ready(self) -> bool:
        """Wait until the IMAP greeting comes from a ready login process; False if the
        master exited first."""
        process = self._process
        assert process is not None
        deadline = asyncio.get_running_loop().time() + self.ready_timeout

        async def greeted_or_exited() -> str | None:
            if process.poll() is not None:
                return "exited"
            return "greeted" if await self._greets(deadline) else None

        outcome = await wait_until(
            greeted_or_exited,
            self.ready_timeout,
            lambda: f"dovecot to get ready:\n{self._log_tail()}",
            interval=0.01,
        )
        return outcome == "greeted"

    async def _greets(self, deadline: float) -> bool:
        """One try: does a client connecting now get the greeting of a ready login process?"""
        try:
            reader, writer = await asyncio.open_connection(self.host, self.imap_port)
        except OSError:
            return False
        try:
            # "* OK Waiting for authentication process to respond.." may come first.
            async with asyncio.timeout_at(deadline):
                while True:
                    line = await reader.readline()
                    if not line or b"ready" in line.lower():
                        break
            writer.write(b"x LOGOUT\r\n")
            await writer.drain()
        except (OSError, TimeoutError):
            line = b""
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return bool(line)

    def _log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.workdir / "dovecot.stderr", self.log_path):
            with contextlib.suppress(OSError):
                text += path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _makedirs(self, path: Path) -> None:
        """Create ``path`` and missing parents below the mail root, owned by the mail uid."""
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for directory in reversed(missing):
            mode = 0o700 if directory.name in ("cur", "new", "tmp") else 0o755
            directory.mkdir(mode=mode)
            if os.geteuid() == 0:
                os.chown(directory, self._mail_uid, self._mail_gid)

    def _config(self, attempt: int) -> str:
        """Dovecot 2.3 configuration (2.4 renamed most of these settings)."""
        work = self.workdir
        return f"""\
# Generated by tests/fakes/mail_servers.py for Dovecot 2.3
base_dir = {work}/run-{attempt}
state_dir = {work}/state
instance_name = mirroros-test-{os.getpid()}-{work.name}
listen = {self.host}
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {self._login_user}
default_internal_user = {self._internal_user}
default_internal_group = {self._internal_group}
first_valid_uid = {self._mail_uid}
last_valid_uid = {self._mail_uid}
first_valid_gid = {self._mail_gid}
last_valid_gid = {self._mail_gid}
log_path = {self.log_path}
mail_location = maildir:~/Maildir
mail_fsync = never
login_greeting = Dovecot ready.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self._passwd_path}
}}
userdb {{
  driver = static
  args = uid={self._mail_uid} gid={self._mail_gid} home={self.maildir_root}/%u
}}
# No chroot: it is not possible without root, and buys nothing in a test.
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {self.host}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""

    @staticmethod
    def _uidlist(folder: Path) -> dict[str, int]:
        """Maildir key -> UID from Dovecot's ``dovecot-uidlist`` (version 3 format)."""
        try:
            lines = (folder / "dovecot-uidlist").read_text(encoding="utf-8").splitlines()
        except OSError:
            return {}
        uids: dict[str, int] = {}
        for line in lines[1:]:
            head, sep, name = line.partition(" :")
            if sep and head.split()[0].isdigit():
                uids[name.split(",")[0]] = int(head.split()[0])
        return uids

    @staticmethod
    def _keywords(folder: Path) -> dict[int, str]:
        """Keyword index -> name from ``dovecot-keywords`` (letters a..z in file names)."""
        try:
            lines = (folder / "dovecot-keywords").read_text(encoding="utf-8").splitlines()
        except OSError:
            return {}
        pairs = (line.split(" ", 1) for line in lines if " " in line)
        return {int(index): name for index, name in pairs if index.isdigit()}


def _key_order(key: str) -> tuple[int, int, int, str]:
    match = _KEY_ORDER.match(key)
    if match is None:
        return (0, 0, 0, key)
    seconds, micros, counter = (int(g) if g else 0 for g in match.groups())
    return (seconds, micros, counter, key)


_LIVE: set[Dovecot] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Stop Dovecots whose owners never called stop() (runs after reaper threads)."""
    for server in list(_LIVE):
        if server._reaper is None and server._process is not None:
            with contextlib.suppress(ProcessLookupError):
                server._process.send_signal(signal.SIGTERM)
            server._reap()


# -- SMTP -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    """One message accepted by :class:`SmtpSink`."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    """The DATA exactly as the client sent it (CRLF line ends, dots unstuffed)."""
    message: EmailMessage
    auth_login: str | None = None
    auth_password: str | None = None
    delivered: dict[str, str] = field(default_factory=dict)
    """Recipient -> Maildir key, for recipients delivered into Dovecot."""


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self._sink._accept(session, envelope)


def _accept_any_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    return AuthResult(success=True, handled=False, auth_data=auth_data)


class SmtpSink(Served):
    """An SMTP server on 127.0.0.1 that accepts, records and (optionally) delivers mail.

    aiosmtpd serves from its own thread; recording and Maildir delivery happen there,
    before the client gets its ``250``, so after ``await smtp.send(...)`` the message is
    already in :attr:`received` and in the recipients' INBOX. Waiters in the test's event
    loop are woken with ``loop.call_soon_threadsafe``.
    """

    def __init__(
        self,
        dovecot: Dovecot | None = None,
        *,
        host: str = LOCALHOST,
        deliver: bool = True,
    ) -> None:
        self.host = host
        self.port = 0
        self.dovecot = dovecot
        self.deliver = deliver
        self._received: list[ReceivedMail] = []
        self._rejections: list[str] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    @property
    def received(self) -> list[ReceivedMail]:
        """A snapshot of every message accepted so far, oldest first."""
        with self._lock:
            return list(self._received)

    def reject_next(self, count: int = 1, status: str = "451 4.3.0 Try again later") -> None:
        """Answer the next ``count`` DATA commands with ``status`` instead of accepting."""
        with self._lock:
            self._rejections.extend([status] * count)

    def clear(self) -> None:
        with self._lock:
            self._received.clear()

    async def start(self) -> None:
        if self._controller is not None:
            raise RuntimeError("this SmtpSink was already started")
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self.port = free_port(self.host)
        self._controller = Controller(
            _SinkHandler(self),
            hostname=self.host,
            port=self.port,
            ready_timeout=10.0,
            server_hostname="smtp.mirror.test",
            authenticator=_accept_any_login,
            auth_required=False,
            auth_require_tls=False,
        )
        # start() blocks until the server thread answers; keep the test loop responsive.
        await asyncio.to_thread(self._controller.start)

    async def stop(self) -> None:
        if self._controller is not None:
            controller, self._controller = self._controller, None
            await asyncio.to_thread(controller.stop)

    async def wait_for(
        self,
        predicate: Callable[[ReceivedMail], bool] | None = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[ReceivedMail]:
        """Wait until ``count`` received messages match ``predicate``; return all matches.

        Raises TimeoutError (listing what did arrive) when ``timeout`` passes first.
        """
        if self._changed is None:
            raise RuntimeError("SmtpSink.start() was not called")
        changed = self._changed
        check = predicate or (lambda _mail: True)

        async def until_enough() -> list[ReceivedMail]:
            while True:
                changed.clear()  # cleared before looking, so no arrival can be missed
                matches = [mail for mail in self.received if check(mail)]
                if len(matches) >= count:
                    return matches
                await changed.wait()

        try:
            return await asyncio.wait_for(until_enough(), timeout)
        except TimeoutError:
            seen = [(m.mail_from, m.rcpt_tos, m.message["Subject"]) for m in self.received]
            raise TimeoutError(
                f"{count} matching message(s) not received in {timeout} s; got {seen}"
            ) from None

    # Runs in the aiosmtpd thread.
    def _accept(self, session: Session, envelope: Envelope) -> str:
        with self._lock:
            if self._rejections:
                return self._rejections.pop(0)
        raw = envelope.original_content or b""
        login = password = None
        if isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode("utf-8", "replace")
            password = session.auth_data.password.decode("utf-8", "replace")
        mail_from = envelope.mail_from or ""
        delivered: dict[str, str] = {}
        if self.deliver and self.dovecot is not None:
            for rcpt in envelope.rcpt_tos:
                if self.dovecot.has_user(rcpt):
                    trace = f"Return-Path: <{mail_from}>\r\nDelivered-To: {rcpt}\r\n"
                    delivered[rcpt] = self.dovecot.deliver(rcpt, trace.encode() + raw)
        mail = ReceivedMail(
            mail_from=mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            raw=raw,
            message=_parse(raw),
            auth_login=login,
            auth_password=password,
            delivered=delivered,
        )
        with self._lock:
            self._received.append(mail)
        if self._loop is not None and self._changed is not None:
            with contextlib.suppress(RuntimeError):  # the test's loop is already closed
                self._loop.call_soon_threadsafe(self._changed.set)
        return "250 OK"


# -- pytest fixtures ----------------------------------------------------------------------


@pytest_asyncio.fixture
async def dovecot() -> AsyncIterator[Dovecot]:
    """A started Dovecot with users persona@mirror.test/secret and alice@example.test."""
    server = Dovecot()
    server.add_user(PERSONA, PERSONA_PASSWORD)
    server.add_user(ALICE, ALICE_PASSWORD)
    try:
        await server.start()
        yield server
    finally:
        await server.stop(wait=False)


@pytest_asyncio.fixture
async def smtp_sink(dovecot: Dovecot) -> AsyncIterator[SmtpSink]:
    """An SMTP sink delivering mail for Dovecot's users into their INBOX."""
    sink = SmtpSink(dovecot)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()
