"""An entrance's line to the host's recall (bot/recall_host.py `ask`): one connection kept
for its questions, a new one after the host restarted, and never a late answer read as
the next question's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot import recall_host


class FakeHost:
    """Answers each question line with its text, after `delay_s` for the texts in `slow`;
    counts the connections it accepted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections = 0
        self.slow: dict[str, float] = {}
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._client, path=str(self.path))

    async def restart(self) -> None:
        """As a scheduler that stopped and came back: every open line closed, a new socket."""
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()
        self.path.unlink(missing_ok=True)
        await self.start()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        while line := await reader.readline():
            text = json.loads(line)["text"]
            await asyncio.sleep(self.slow.get(text, 0.0))
            writer.write(json.dumps({"text": text}).encode() + b"\n")
            await writer.drain()
        writer.close()


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[FakeHost]:
    fake = FakeHost(tmp_path / "recall.sock")
    await fake.start()
    yield fake
    recall_host._line.close()
    assert fake.server is not None
    fake.server.close()
    for writer in fake.writers:
        writer.close()


async def ask(host: FakeHost, text: str, timeout: float = 2.0) -> str:
    answer = await asyncio.to_thread(recall_host.ask, str(host.path), {"text": text}, timeout)
    return str(answer["text"])


async def test_questions_share_one_connection_and_a_restarted_host_gets_a_new_one(
    host: FakeHost,
) -> None:
    assert [await ask(host, "one"), await ask(host, "two")] == ["one", "two"]
    assert host.connections == 1

    await host.restart()

    assert await ask(host, "three") == "three"  # the closed line noticed, asked anew
    assert host.connections == 2


async def test_a_late_answer_is_never_taken_for_the_next_questions(host: FakeHost) -> None:
    host.slow["late"] = 0.5
    with pytest.raises(TimeoutError):
        await ask(host, "late", timeout=0.1)
    await asyncio.sleep(0.6)  # the late answer has arrived on the old line by now

    assert await ask(host, "next") == "next"
    assert host.connections == 2


async def test_no_host_listening_is_an_error_the_turn_can_catch(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        await asyncio.to_thread(recall_host.ask, str(tmp_path / "nobody.sock"), {"text": "x"})
