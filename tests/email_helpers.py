"""TLS variants of the mail test servers, for the email entrance's ssl and starttls modes.

A throw-away certificate for 127.0.0.1/localhost is made with the `openssl` command (part of
every Debian system with ca-certificates); clients trust it through SSL_CERT_FILE, which
`ssl.create_default_context()` reads, so the entrance's certificate checks stay on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from tests.fakes.mail_servers import Dovecot
from tests.fakes.server import Served, free_port


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_certificate(folder: Path) -> Certificate:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    key.chmod(0o644)  # Dovecot's config reader must open it
    return Certificate(cert, key)


class TlsDovecot(Dovecot):
    """Dovecot requiring TLS: STARTTLS on `imap_port`, implicit TLS on `imaps_port`."""

    def __init__(self, certificate: Certificate) -> None:
        super().__init__()
        self.certificate = certificate
        self.imaps_port = 0

    def _config(self, attempt: int) -> str:
        self.imaps_port = free_port(self.host)
        config = super()._config(attempt)
        tls = (
            f"ssl = required\nssl_cert = <{self.certificate.cert}\n"
            f"ssl_key = <{self.certificate.key}\n"
        )
        imaps = f"address = {self.host}\n    port = {self.imaps_port}"
        config = config.replace("ssl = no\n", tls)
        return config.replace(
            "  inet_listener imaps {\n    port = 0\n", f"  inet_listener imaps {{\n    {imaps}\n"
        )


@dataclass(frozen=True)
class TlsMail:
    rcpt_tos: list[str]
    raw: bytes
    encrypted: bool


class TlsSmtp(Served):
    """An SMTP server that records what it accepts and whether the session was encrypted.

    `implicit=True` speaks TLS from the first byte (security = "ssl"); otherwise it requires
    STARTTLS before MAIL (security = "starttls").
    """

    def __init__(self, certificate: Certificate, *, implicit: bool) -> None:
        self.certificate = certificate
        self.implicit = implicit
        self.port = 0
        self.received: list[TlsMail] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self.port = free_port()
        context = self.certificate.server_context()
        tls = {"ssl_context": context} if self.implicit else {"tls_context": context}
        self._controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="localhost",
            require_starttls=not self.implicit,
            authenticator=_accept_any_login,
            auth_require_tls=True,
            **tls,  # type: ignore[arg-type]
        )
        await asyncio.to_thread(self._controller.start)

    async def stop(self) -> None:
        if self._controller is not None:
            controller, self._controller = self._controller, None
            await asyncio.to_thread(controller.stop)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        transport = server.transport
        mail = TlsMail(
            rcpt_tos=list(envelope.rcpt_tos),
            raw=envelope.original_content or b"",
            encrypted=transport is not None and transport.get_extra_info("ssl_object") is not None,
        )
        with self._lock:
            self.received.append(mail)
        if self._loop is not None and self._changed is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._changed.set)
        return "250 OK"

    async def wait_for_mail(self, timeout: float = 30.0) -> TlsMail:
        assert self._changed is not None
        changed = self._changed

        async def first() -> TlsMail:
            while True:
                changed.clear()
                with self._lock:
                    if self.received:
                        return self.received[0]
                await changed.wait()

        return await asyncio.wait_for(first(), timeout)


def _accept_any_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
) -> AuthResult:
    return AuthResult(success=True, handled=False, auth_data=auth_data)
