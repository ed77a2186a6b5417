"""`mirror up`: one supervised OS process per entrance, plus the scheduler.

Each child is a `mirror run NAME` process; its output lines are prefixed with its name. A
child that exits unexpectedly is restarted with exponential backoff (capped, reset after
it has run healthily for a while); one that keeps crashing is reported and given up after
`max_restarts` tries, without touching the others. A child that exits with code 2 (a
problem the admin must fix, such as a refused token) is not restarted. Stopping sends
SIGTERM to every child (each finishes its current turn), then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

log = logging.getLogger(__name__)

PERMANENT_FAILURE = 2


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: list[str]
    # How to restart it: an entrance restarts with --standby, so it waits for the lease its
    # crashed predecessor still holds instead of being refused.
    restart_argv: list[str] | None = None


@dataclass
class ChildState:
    spec: ChildSpec
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    gave_up: str | None = None
    last_lines: list[str] = field(default_factory=list)
    relay: asyncio.Task[None] | None = None


def mirror_argv(*args: str) -> list[str]:
    """The command line of a `mirror` child running with this interpreter."""
    return [sys.executable, "-m", "bot.cli", *args]


class Supervisor:
    def __init__(
        self,
        specs: list[ChildSpec],
        *,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        healthy_after_s: float = 60.0,
        max_restarts: int = 5,
        stop_timeout_s: float = 20.0,
        output: TextIO | None = None,
    ) -> None:
        self.children = {spec.name: ChildState(spec) for spec in specs}
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.healthy_after_s = healthy_after_s
        self.max_restarts = max_restarts
        self.stop_timeout_s = stop_timeout_s
        self.output = output or sys.stderr
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        watchers = [
            asyncio.create_task(self._keep_running(state)) for state in self.children.values()
        ]
        try:
            await self._stopping.wait()
        finally:
            self._stopping.set()
            await self._stop_all()
            for watcher in watchers:
                watcher.cancel()
            for watcher in watchers:
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    async def _keep_running(self, state: ChildState) -> None:
        consecutive = 0
        while not self._stopping.is_set():
            await self._start(state)
            assert state.process is not None
            code = await state.process.wait()
            if self._stopping.is_set():
                return
            ran_for = time.monotonic() - state.started_at
            if ran_for >= self.healthy_after_s:
                consecutive = 0
            if code == PERMANENT_FAILURE:
                state.gave_up = f"exited with code 2: {self._last_line(state)}"
                self._say(f"{state.spec.name}: not restarting ({state.gave_up})")
                return
            consecutive += 1
            state.restarts += 1
            if consecutive > self.max_restarts:
                state.gave_up = f"crashed {consecutive} times in a row (last exit code {code})"
                self._say(f"{state.spec.name}: giving up: {state.gave_up}")
                return
            delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (consecutive - 1))
            self._say(
                f"{state.spec.name}: exited with code {code} after {ran_for:.1f}s; "
                f"restarting in {delay:.1f}s (try {consecutive} of {self.max_restarts})"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _start(self, state: ChildState) -> None:
        argv = state.spec.argv
        if state.restarts and state.spec.restart_argv:
            argv = state.spec.restart_argv
        state.process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
        state.started_at = time.monotonic()
        self._say(f"{state.spec.name}: started (pid {state.process.pid})")
        state.relay = asyncio.create_task(self._relay(state, state.process))

    async def _relay(self, state: ChildState, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            state.last_lines = [*state.last_lines[-4:], text]
            self._say(f"[{state.spec.name}] {text}")

    async def _stop_all(self) -> None:
        running = [
            s.process for s in self.children.values() if s.process and s.process.returncode is None
        ]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        if not running:
            return
        _, pending = await asyncio.wait(
            [asyncio.create_task(p.wait()) for p in running], timeout=self.stop_timeout_s
        )
        for process in running:
            if process.returncode is None:
                self._say(f"pid {process.pid} did not stop in {self.stop_timeout_s}s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        if pending:
            await asyncio.wait(pending, timeout=5)
        relays = [s.relay for s in self.children.values() if s.relay is not None]
        if relays:
            await asyncio.wait(relays, timeout=5)  # the children's last words

    def _last_line(self, state: ChildState) -> str:
        return state.last_lines[-1] if state.last_lines else "no output"

    def _say(self, text: str) -> None:
        self.output.write(text + "\n")
        self.output.flush()
