"""Real `mirror` processes for tests: start, talk to, wait for output, stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, mirror_env


class MirrorProcess:
    """A `mirror` child process whose stdout lines are collected as they arrive."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = mirror_env(**(env or {}))
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._new_line = asyncio.Condition()
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> MirrorProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            *self.args,
            cwd=ROOT,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdout and self.proc.stderr
        self._readers = [
            asyncio.create_task(self._collect(self.proc.stdout, self.lines)),
            asyncio.create_task(self._collect(self.proc.stderr, self.stderr)),
        ]
        return self

    async def _collect(self, stream: asyncio.StreamReader, into: list[str]) -> None:
        while line := await stream.readline():
            async with self._new_line:
                into.append(line.decode(errors="replace").rstrip("\n"))
                self._new_line.notify_all()
        async with self._new_line:
            self._new_line.notify_all()

    async def wait_for_line(
        self, predicate: Any, *, since: int = 0, timeout: float = 30.0, stream: str = "stdout"
    ) -> str:
        lines = self.lines if stream == "stdout" else self.stderr

        def found() -> str | None:
            return next((line for line in lines[since:] if predicate(line)), None)

        async def wait() -> str:
            async with self._new_line:
                while (line := found()) is None:
                    if (
                        self.proc is not None
                        and self.proc.returncode is not None
                        and all(reader.done() for reader in self._readers)
                    ):
                        raise AssertionError(f"process exited: {self.tail()}")
                    # Looked at again every half second: the last notification (end of
                    # output) may come before the readers are done and the exit is known.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._new_line.wait(), 0.5)
                return line

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no matching line within {timeout}s: {self.tail()}") from None

    def tail(self) -> str:
        return (
            "\nstdout: " + "\n".join(self.lines[-20:]) + "\nstderr: " + "\n".join(self.stderr[-30:])
        )

    async def write(self, text: str) -> None:
        assert self.proc and self.proc.stdin
        self.proc.stdin.write((text + "\n").encode())
        await self.proc.stdin.drain()

    async def close_stdin(self) -> None:
        assert self.proc and self.proc.stdin
        self.proc.stdin.close()

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = await self.proc.wait()
        for reader in self._readers:
            try:
                await asyncio.wait_for(reader, 5)
            except (TimeoutError, asyncio.CancelledError):
                reader.cancel()
        return code


class ChatProcess(MirrorProcess):
    """`mirror chat --jsonl`: send a line, get the persona's reply as a dict."""

    def __init__(self, config: Path, instance: str, person: str, **kwargs: Any) -> None:
        super().__init__(
            "chat",
            "--config",
            str(config),
            "--instance",
            instance,
            "--as",
            person,
            "--jsonl",
            **kwargs,
        )

    async def start(self) -> ChatProcess:
        await super().start()
        await self.wait_for_line(lambda line: '"type": "ready"' in line, timeout=60)
        return self

    def events(self, kind: str) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.lines if line.startswith("{")]
        return [event for event in parsed if event["type"] == kind]

    async def say(self, text: str, timeout: float = 60.0) -> dict[str, Any]:
        before = len(self.lines)
        await self.write(text)
        line = await self.wait_for_line(
            lambda line: '"type": "reply"' in line, since=before, timeout=timeout
        )
        return json.loads(line)

    async def next_outbox(self, timeout: float = 30.0, since: int = 0) -> dict[str, Any]:
        line = await self.wait_for_line(
            lambda line: '"type": "outbox"' in line, since=since, timeout=timeout
        )
        return json.loads(line)

    async def quit(self) -> int:
        await self.close_stdin()
        assert self.proc
        code = await asyncio.wait_for(self.proc.wait(), 30)
        await self.stop()
        return code
