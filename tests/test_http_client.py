"""bot/http_client against a real HTTP server (aiohttp on 127.0.0.1): the bytes sent, the
answers read (Content-Length, chunked, gzip, errors), connections kept alive and reused,
and never reused after a server closed them or a caller gave up halfway (a late answer must
not become the next request's)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from bot import http_client


@dataclass
class Server:
    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)  # one per request
    slow: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    found = Server(url="")

    def record(request: web.Request, body: bytes) -> None:
        found.seen.append(
            {
                "path": request.path_qs,
                "method": request.method,
                "headers": dict(request.headers),
                "body": body,
                "peer": request.transport.get_extra_info("peername") if request.transport else None,
            }
        )

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        record(request, body)
        return web.json_response({"got": json.loads(body) if body else None, "n": len(found.seen)})

    async def chunked(request: web.Request) -> web.StreamResponse:
        record(request, await request.read())
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        response.enable_compression(web.ContentCoding.gzip)
        await response.prepare(request)
        for part in (b'{"parts": ', b'["one", ', b'"two"]}'):
            await response.write(part)
        await response.write_eof()
        return response

    async def refuse(request: web.Request) -> web.Response:
        record(request, await request.read())
        return web.json_response({"error": {"message": "no such model"}}, status=404)

    async def closing(request: web.Request) -> web.Response:
        record(request, await request.read())
        return web.Response(text="bye", headers={"Connection": "close"})

    async def slow(request: web.Request) -> web.Response:
        record(request, await request.read())
        await found.slow.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_get("/echo", echo)
    app.router.add_post("/chunked", chunked)
    app.router.add_post("/refuse", refuse)
    app.router.add_post("/closing", closing)
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}"
    try:
        yield found
    finally:
        found.slow.set()
        await runner.cleanup()


async def test_a_post_sends_its_body_and_headers_and_reads_the_json_answer(server: Server) -> None:
    client = http_client.Client(user_agent="mirroros-test")
    body = json.dumps({"model": "m", "text": "héllo"}, ensure_ascii=False).encode()
    try:
        response = await client.request(
            "POST",
            f"{server.url}/echo?x=1",
            content=body,
            headers=[("Authorization", "Bearer sk-test"), ("Content-Type", "application/json")],
        )
    finally:
        await client.aclose()
    assert response.status_code == 200
    assert response.json() == {"got": {"model": "m", "text": "héllo"}, "n": 1}
    [seen] = server.seen
    assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/echo?x=1", body)
    assert seen["headers"]["Authorization"] == "Bearer sk-test"
    assert seen["headers"]["User-Agent"] == "mirroros-test"
    assert seen["headers"]["Host"] == server.url.removeprefix("http://")


async def test_one_kept_connection_serves_requests_one_after_another(server: Server) -> None:
    client = http_client.Client()
    try:
        for n in range(3):
            response = await client.request("GET", f"{server.url}/echo")
            assert response.json()["n"] == n + 1
    finally:
        await client.aclose()
    assert len({seen["peer"] for seen in server.seen}) == 1


async def test_chunked_and_gzip_answers_are_read_whole(server: Server) -> None:
    client = http_client.Client()
    try:
        response = await client.request("POST", f"{server.url}/chunked", content=b"{}")
        again = await client.request("GET", f"{server.url}/echo")
    finally:
        await client.aclose()
    assert response.json() == {"parts": ["one", "two"]}
    assert again.json()["n"] == 2  # the chunked answer was read to its end


async def test_an_error_status_is_an_answer_with_its_text(server: Server) -> None:
    client = http_client.Client()
    try:
        response = await client.request("POST", f"{server.url}/refuse", content=b"{}")
    finally:
        await client.aclose()
    assert (response.status_code, response.reason_phrase) == (404, "Not Found")
    assert response.json()["error"]["message"] == "no such model"


async def test_a_connection_the_server_closes_is_not_reused(server: Server) -> None:
    client = http_client.Client()
    try:
        closed = await client.request("POST", f"{server.url}/closing")
        after = await client.request("GET", f"{server.url}/echo")
    finally:
        await client.aclose()
    assert closed.text == "bye" and after.json()["n"] == 2
    assert server.seen[0]["peer"] != server.seen[1]["peer"]


async def test_an_answer_a_caller_stopped_waiting_for_never_reaches_the_next_request(
    server: Server,
) -> None:
    client = http_client.Client()
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await client.request("POST", f"{server.url}/slow")
        server.slow.set()  # the late answer goes to a connection nobody reads any more
        response = await client.request("GET", f"{server.url}/echo")
    finally:
        await client.aclose()
    assert response.json()["n"] == 2
    assert server.seen[0]["peer"] != server.seen[1]["peer"]


async def test_a_refused_connection_raises_an_os_error() -> None:
    client = http_client.Client()
    with pytest.raises(OSError):
        await client.request("GET", "http://127.0.0.1:1/")


def test_a_proxy_in_the_environment_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    assert not http_client.proxied()
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert http_client.proxied()


def test_telegram_keeps_httpx_when_a_proxy_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.telegram.plain_request import PlainRequest, plain_request

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    assert isinstance(plain_request(), PlainRequest)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert plain_request() is None
