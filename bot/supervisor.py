"""`mirror up`: one supervised OS process per entrance, plus the scheduler.

Each child is a `mirror run NAME` process; its output lines are prefixed with its name. A
child that exits unexpectedly is restarted with exponential backoff (capped, reset after
it has run healthily for a while); one that keeps crashing is reported and given up after
`max_restarts` tries, without touching the others. A child that exits with code 2 (a
problem the admin must fix, such as a refused token) is not restarted. When every entrance
has been given up the supervisor stops the rest (the scheduler) and reports why, so that
`mirror up` never looks healthy while no bot is up. Stopping sends SIGTERM to every child
(each finishes its current turn), then SIGKILL after a grace period; a child whose
supervisor vanished (kill -9) is sent SIGHUP by the kernel and stops the same way.
Given a logger (`mirror up` in a terminal), every line goes to it instead of `output`,
at the level the child logged it with, so a quiet terminal shows only the trouble.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # The lean supervisor (`exec_lean`) never opens a TLS connection, and asyncio imports
    # the ssl module only if it can (Python may be built without it): marked absent before
    # asyncio is imported, it is not loaded, 4.5 MiB resident less for as long as the
    # persona runs (measured 2026-12-03). No other process is touched: only
    # `python -m bot.supervisor` runs this.
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from bot.timeouts import wait_event

log = logging.getLogger(__name__)

PERMANENT_FAILURE = 2
# A child's log line, in the format bot/cli/common.py gives its log: "DATE TIME LEVEL name: …".
_CHILD_LEVEL = re.compile(r"^\S+ \S+ (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: list[str]
    # How to restart it: an entrance restarts with --standby, so it waits for the lease its
    # crashed predecessor still holds instead of being refused.
    restart_argv: list[str] | None = None
    # The scheduler is not an entrance: it runs beside them, and alone it serves nobody.
    entrance: bool = True


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


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def stop_with_parent() -> Callable[[], None] | None:
    """A preexec function making the child receive SIGHUP when its supervisor dies.

    Children run in their own sessions (so Ctrl-C reaches the supervisor only), which also
    means nothing tells them when `mirror up` is killed with -9: they would keep running
    with parent 1 and keep their entrance leases, and the next `mirror up` would be refused.
    Linux's PR_SET_PDEATHSIG makes the kernel send a signal at the parent's death, with no
    polling in the child: chosen over a child watching os.getppid() because it costs nothing
    while all is well and acts at once. The signal is SIGHUP, which `mirror run` takes as a
    request to stop after the current turn (releasing the lease), never as a hurry: the
    kernel sends it again at each reparenting (first to another thread of the dying
    supervisor, then to init), and a second SIGTERM would cancel the turn and skip the
    clean-up. SIGHUP is reset to its default in the child, as `nohup mirror up` ignores it
    and children inherit that. PDEATHSIG is tied to the thread that forks: the event loop's,
    alive as long as the supervisor.

    preexec_fn is unsafe with threads when it takes a lock another thread held at the fork
    (an import, a logging call): this one imports nothing, since libc is loaded here, before
    the fork, and makes two foreign calls and two system calls. None elsewhere than Linux
    (there children outlive a kill -9 of the supervisor).
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl, set_handler = libc.prctl, libc.signal
    except (OSError, AttributeError):
        return None
    set_handler.argtypes = [ctypes.c_int, ctypes.c_void_p]
    set_handler.restype = ctypes.c_void_p
    hangup = int(signal.SIGHUP)
    parent = os.getpid()

    def preexec() -> None:
        set_handler(hangup, None)  # None is SIG_DFL (0)
        prctl(_PR_SET_PDEATHSIG, hangup, 0, 0, 0)
        # The supervisor may have died between fork and prctl: no signal would ever come.
        if os.getppid() != parent:
            os.kill(os.getpid(), hangup)

    return preexec


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
        logger: logging.Logger | None = None,
    ) -> None:
        self.children = {spec.name: ChildState(spec) for spec in specs}
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.healthy_after_s = healthy_after_s
        self.max_restarts = max_restarts
        self.stop_timeout_s = stop_timeout_s
        self.output = output or sys.stderr
        self.logger = logger
        # Why `run` ended by itself: every entrance was given up (None when asked to stop).
        self.nothing_running: str | None = None
        self._stopping = asyncio.Event()
        self._preexec = stop_with_parent()

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
            if state.relay is not None:
                # Its last words (the reason it gave up) may still be in the pipe; a grandchild
                # holding the pipe open must not hold us, hence the timeout.
                await asyncio.wait({state.relay}, timeout=5)
            ran_for = time.monotonic() - state.started_at
            if ran_for >= self.healthy_after_s:
                consecutive = 0
            if code == PERMANENT_FAILURE:
                state.gave_up = f"exited with code 2: {self._last_line(state)}"
                self._say(f"{state.spec.name}: not restarting ({state.gave_up})")
                self._stop_if_no_entrance_runs()
                return
            consecutive += 1
            state.restarts += 1
            if consecutive > self.max_restarts:
                state.gave_up = f"crashed {consecutive} times in a row (last exit code {code})"
                self._say(f"{state.spec.name}: giving up: {state.gave_up}")
                self._stop_if_no_entrance_runs()
                return
            delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (consecutive - 1))
            self._say(
                f"{state.spec.name}: exited with code {code} after {ran_for:.1f}s; "
                f"restarting in {delay:.1f}s (try {consecutive} of {self.max_restarts})"
            )
            await wait_event(self._stopping, delay)

    def _stop_if_no_entrance_runs(self) -> None:
        """Stop everything once every entrance is given up: the scheduler alone serves
        nobody, and a service manager would take the running `mirror up` for a healthy one."""
        entrances = [state for state in self.children.values() if state.spec.entrance]
        if not entrances or any(state.gave_up is None for state in entrances):
            return
        reasons = "; ".join(f"{state.spec.name} {state.gave_up}" for state in entrances)
        self.nothing_running = f"no entrance is running: {reasons}"
        self._stopping.set()

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
            preexec_fn=self._preexec,
        )
        state.started_at = time.monotonic()
        self._say(f"{state.spec.name}: started (pid {state.process.pid})", logging.INFO)
        state.relay = asyncio.create_task(self._relay(state, state.process))

    async def _relay(self, state: ChildState, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            state.last_lines = [*state.last_lines[-4:], text]
            self._say(f"[{state.spec.name}] {text}", _child_level(text))

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

    def _say(self, text: str, level: int = logging.WARNING) -> None:
        if self.logger is not None:
            self.logger.log(level, "%s", text)
            return
        self.output.write(text + "\n")
        self.output.flush()


def _child_level(line: str) -> int:
    """The level a child logged a line at; a line outside the log format (a traceback, a
    last word on exit) counts as a warning, so that it is seen."""
    found = _CHILD_LEVEL.match(line)
    return logging.getLevelNamesMapping()[found.group("level")] if found else logging.WARNING


# The lean supervisor --------------------------------------------------------------------------

# The plan `mirror up` hands to the process it replaces itself with (JSON; not inherited by
# the children).
PLAN_ENV = "MIRROR_SUPERVISOR_PLAN"


def exec_lean(specs: list[ChildSpec], log: dict[str, object]) -> None:
    """Replace this `mirror up` process (same pid, same stdio, same service manager) with a
    supervisor that imports only what supervising takes: deciding what to run needed typer,
    pydantic and the config (~40 MiB resident), watching the children needs none of them
    (~18 MiB, without the ssl module: see the top of this module), and the supervisor stays
    up as long as they do. `log`: the arguments of
    `bot.log_setup.quiet_terminal` (path, max_bytes, backups, verbose)."""
    plan = {"children": [vars(spec) for spec in specs], "log": log}
    os.environ[PLAN_ENV] = json.dumps(plan)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "bot.supervisor"])


def main() -> int:
    """`python -m bot.supervisor`: the process `exec_lean` starts; exit codes as `mirror up`'s
    (1: every entrance was given up, 130: interrupted)."""
    from pathlib import Path

    from bot.log_setup import quiet_terminal, to_stderr
    from bot.recall_host import remove_socket_folder, socket_path
    from bot.service_loop import serve_until_stopped

    plan = json.loads(os.environ.pop(PLAN_ENV))
    settings = plan["log"]  # bot.cli.common `log_settings`, as `mirror up` would use them
    to_stderr(settings["verbose"])
    logger = quiet_terminal(Path(settings.pop("path")), **settings, service=True)
    supervisor = Supervisor([ChildSpec(**child) for child in plan["children"]], logger=logger)
    try:
        asyncio.run(serve_until_stopped(supervisor))
    except KeyboardInterrupt:
        return 130
    finally:
        remove_socket_folder(socket_path())  # the children have stopped
    if supervisor.nothing_running:  # every entrance given up: not healthy, say why
        sys.stderr.write(f"mirror: {supervisor.nothing_running}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
