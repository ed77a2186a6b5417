"""python-telegram-bot's requests over bot/http_client instead of httpx.

Each message costs the Telegram entrance three Bot API requests (the getUpdates that brings
it, sendChatAction, sendMessage); through PTB's HTTPXRequest each spends about 1.5 ms of
CPU in httpx alone, through bot/http_client about a tenth of that (bench/lean.py). The
request is the one HTTPXRequest sends: the same URL, method, form-encoded JSON parameters,
User-Agent and timeouts (connect + write + read, as one deadline), and the same errors
(TimedOut, NetworkError). Uploads (multipart) and a proxy named in the environment keep
PTB's HTTPXRequest (`plain_request()` returns None for the latter).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, HTTPXRequest, RequestData

from bot import http_client

# HTTPXRequest's defaults (seconds).
READ_S, WRITE_S, CONNECT_S = 5.0, 5.0, 5.0


class PlainRequest(BaseRequest):
    def __init__(self) -> None:
        self._client = http_client.Client(user_agent=self.USER_AGENT)
        self._uploads: HTTPXRequest | None = None  # made on the first upload, if ever

    @property
    def read_timeout(self) -> float | None:
        return READ_S

    async def initialize(self) -> None:
        if self._uploads is not None:
            await self._uploads.initialize()

    async def shutdown(self) -> None:
        await self._client.aclose()
        if self._uploads is not None:
            await self._uploads.shutdown()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if request_data is not None and request_data.contains_files:
            if self._uploads is None:
                self._uploads = HTTPXRequest()
                await self._uploads.initialize()
            return await self._uploads.do_request(
                url,
                method,
                request_data,
                read_timeout,
                write_timeout,
                connect_timeout,
                pool_timeout,
            )
        parts = [
            READ_S if isinstance(read_timeout, DefaultValue) else read_timeout,
            WRITE_S if isinstance(write_timeout, DefaultValue) else write_timeout,
            CONNECT_S if isinstance(connect_timeout, DefaultValue) else connect_timeout,
        ]
        deadline = None if any(part is None for part in parts) else sum(p or 0.0 for p in parts)
        headers: tuple[tuple[str, str], ...] = ()
        content = b""
        if request_data is not None:
            # What httpx's `data=` sends: the JSON-encoded parameters as a form.
            content = urlencode(request_data.json_parameters, doseq=True).encode()
            headers = (("Content-Type", "application/x-www-form-urlencoded"),)
        try:
            async with asyncio.timeout(deadline):
                response = await self._client.request(method, url, content=content, headers=headers)
        except TimeoutError as exc:
            raise TimedOut from exc
        except (OSError, asyncio.IncompleteReadError, http_client.ProtocolError) as exc:
            raise NetworkError(f"{type(exc).__name__}: {exc}") from exc
        return response.status_code, response.content


def plain_request() -> PlainRequest | None:
    """A PlainRequest, or None when the environment names a proxy (httpx honours it)."""
    return None if http_client.proxied() else PlainRequest()
