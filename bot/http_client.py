"""A small HTTP/1.1 client on asyncio streams, for the requests every turn makes: the
model's answer on the direct path (bot/llm) and the Telegram Bot API calls (getUpdates,
sendChatAction, sendMessage).

httpx spends about 1.5 ms of CPU on each such request (URL models, cookie jar, header
merging, anyio cancel scopes; bench/lean.py) where the bytes on the wire need a tenth of
that; this client writes the request line and headers itself and reads the answer with
asyncio's StreamReader. It does only what those requests need: one request at a time per
connection, a body sent with Content-Length, answers with Content-Length, chunked or
read to the end (gzip/deflate decoded), connections kept alive for a few seconds, TLS set
up as httpx sets it up (certifi, or SSL_CERT_FILE / SSL_CERT_DIR). It never goes through a
proxy: `proxied()` says when the environment names one, and callers then keep httpx, which
honours it. Timeouts are the caller's (`asyncio.timeout`): a request cut off, cancelled or
failed closes its connection, never returns it to the pool.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

KEEPALIVE_S = 5.0  # httpx's keepalive_expiry: an idle connection older than this is closed
MAX_IDLE = 4  # kept-alive connections per origin
_PROXY_VARIABLES = tuple(
    case(name) for name in ("http_proxy", "https_proxy", "all_proxy") for case in (str, str.upper)
)
_READ_LIMIT = 1 << 20  # the longest line (status line, one header) an answer may have
_ssl_contexts: dict[tuple[str, str], ssl.SSLContext] = {}


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


def proxied() -> bool:
    """Does the environment name a proxy (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, any case)?
    Then requests must go through httpx, which honours it."""
    return any(os.environ.get(name) for name in _PROXY_VARIABLES)


def ssl_context() -> ssl.SSLContext:
    """The context httpx would build (verify=True, trust_env=True), once per process (and
    again if SSL_CERT_FILE or SSL_CERT_DIR changed)."""
    key = (os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))
    context = _ssl_contexts.get(key)
    if context is None:
        if key[0]:
            context = ssl.create_default_context(cafile=key[0])
        elif key[1]:
            context = ssl.create_default_context(capath=key[1])
        else:
            import certifi

            context = ssl.create_default_context(cafile=certifi.where())
        context.set_alpn_protocols(["http/1.1"])
        _ssl_contexts[key] = context
    return context


@dataclass
class Response:
    status_code: int
    reason_phrase: str
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass(frozen=True)
class _Origin:
    secure: bool
    host: str
    port: int

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = field(default_factory=time.monotonic)

    def usable(self) -> bool:
        """Still open, not expired, and nothing unasked for waiting in it."""
        return (
            time.monotonic() - self.idle_since < KEEPALIVE_S
            and not self.writer.is_closing()
            and not self.reader.at_eof()
            and not self.reader._buffer  # type: ignore[attr-defined]  # bytes nobody asked for
        )

    def close(self) -> None:
        self.writer.close()


class _Fresh(Exception):
    """A kept-alive connection the server had closed before our request: try a new one."""


class Client:
    """Kept-alive connections per origin, for one event loop (its streams are that loop's)."""

    def __init__(self, *, user_agent: str = "mirroros") -> None:
        self.user_agent = user_agent
        self._idle: dict[_Origin, list[_Connection]] = {}

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
    ) -> Response:
        """One request and its whole answer. Raises OSError (connecting, a reset),
        asyncio.IncompleteReadError (the server hung up mid-answer) or ProtocolError."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        secure = parts.scheme == "https"
        origin = _Origin(secure, parts.hostname, parts.port or (443 if secure else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [
            f"{method} {target} HTTP/1.1",
            f"Host: {origin.host_header}",
            "Accept: */*",
            "Accept-Encoding: gzip, deflate",
            "Connection: keep-alive",
            f"User-Agent: {self.user_agent}",
        ]
        head += [f"{name}: {value}" for name, value in headers]
        if content or method not in ("GET", "HEAD"):
            head.append(f"Content-Length: {len(content)}")
        wire = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + content
        connection = self._kept(origin)
        if connection is not None:
            try:
                return await self._exchange(origin, connection, wire, method, reused=True)
            except _Fresh:
                pass
        connection = await self._connect(origin)
        return await self._exchange(origin, connection, wire, method, reused=False)

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _kept(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.usable():
                return connection
            connection.close()
        return None

    async def _connect(self, origin: _Origin) -> _Connection:
        reader, writer = await asyncio.open_connection(
            origin.host,
            origin.port,
            ssl=ssl_context() if origin.secure else None,
            server_hostname=origin.host if origin.secure else None,
            limit=_READ_LIMIT,
        )
        return _Connection(reader, writer)

    async def _exchange(
        self, origin: _Origin, connection: _Connection, wire: bytes, method: str, *, reused: bool
    ) -> Response:
        keep = False
        try:
            try:
                connection.writer.write(wire)
                await connection.writer.drain()
                status_line = await connection.reader.readuntil(b"\r\n")
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                partial = getattr(exc, "partial", b"")
                if reused and not partial:
                    raise _Fresh from exc
                raise
            response, keep = await self._read_answer(connection.reader, status_line, method)
            return response
        finally:
            if keep:
                connection.idle_since = time.monotonic()
                idle = self._idle.setdefault(origin, [])
                idle.append(connection)
                while len(idle) > MAX_IDLE:
                    idle.pop(0).close()
            else:
                connection.close()

    async def _read_answer(
        self, reader: asyncio.StreamReader, status_line: bytes, method: str
    ) -> tuple[Response, bool]:
        """The answer (interim 1xx answers skipped) and whether the connection may be reused."""
        while True:
            version, status, reason = _status(status_line)
            headers = await _headers(reader)
            if not (100 <= status < 200) or status == 101:
                break
            status_line = await reader.readuntil(b"\r\n")
        tokens = headers.get("connection", "").lower()
        keep = "close" not in tokens and (version == "HTTP/1.1" or "keep-alive" in tokens)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _chunked(reader)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise ProtocolError("a Content-Length that is no number") from None
            body = await reader.readexactly(length)
        else:
            body, keep = await reader.read(), False
        encoding = headers.get("content-encoding", "").lower().strip()
        if encoding in ("gzip", "x-gzip"):
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            try:
                body = zlib.decompress(body)
            except zlib.error:  # raw deflate, without the zlib header
                body = zlib.decompress(body, -zlib.MAX_WBITS)
        elif encoding not in ("", "identity"):
            raise ProtocolError(f"an answer encoded as {encoding!r}")
        return Response(status, reason, headers, body), keep


def _status(line: bytes) -> tuple[str, int, str]:
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""


async def _headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ProtocolError(f"a header line without a colon: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"a chunk size that is no number: {line[:40]!r}") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(chunks)
        chunk = await reader.readexactly(size + 2)
        chunks.append(chunk[:-2])
