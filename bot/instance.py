"""An instance: what every entrance process shares, whatever its platform.

It opens memory.db, keeps the soul in sync with SOUL.md, registers and heartbeats in
`instances`, runs the outbox courier for its entrance, and hands each `Incoming` to the
mind. Adapters own the platform; this class owns every background task it starts and
cancels them on `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from bot.access import Gatekeeper
from bot.config import Config
from bot.coordinator import Coordinator, Outcome
from bot.entrance import EntranceFailure
from bot.memory import Memory
from bot.mind import Mind
from bot.models import Incoming, Reply
from bot.outbox import OutboxCourier, Send
from bot.soul import SoulWatcher

log = logging.getLogger(__name__)


class Instance:
    def __init__(
        self,
        config: Config,
        *,
        instance_id: str,
        entrance: str,
        heartbeat_s: float | None = None,
        watch_soul: bool = True,
        exclusive: bool | None = None,
    ) -> None:
        self.config = config
        self.instance_id = instance_id
        self.entrance = entrance
        # Three heartbeats fit in the time after which others consider us dead.
        self.heartbeat_s = heartbeat_s or min(5.0, config.persona.instance_dead_after_s / 3)
        # One poller per platform entrance: a second `mirror run telegram` must not also poll.
        self.exclusive = entrance != "local" if exclusive is None else exclusive
        self.lease_name = f"entrance:{entrance}"
        self.lease_ttl_s = self.heartbeat_s * 3
        self.holder = f"{instance_id}@{socket.gethostname()}:{os.getpid()}"
        self.memory = Memory(config.memory.path, busy_timeout_ms=config.memory.busy_timeout_ms)
        self.coordinator = Coordinator(self.memory, config)
        self.gatekeeper = Gatekeeper(
            self.memory,
            config,
            instance_id=instance_id,
            entrance=entrance,
            coordinator=self.coordinator,
        )
        self.mind = Mind(
            self.memory,
            config,
            instance_id=instance_id,
            entrance=entrance,
            gatekeeper=self.gatekeeper,
        )
        self.watcher = (
            SoulWatcher(self.memory, config.soul.path, max_bytes=config.soul.max_bytes)
            if watch_soul
            else None
        )
        self._tasks: list[asyncio.Task[Any]] = []
        self._turns_in_flight = 0
        self._no_turns = asyncio.Event()
        self._no_turns.set()
        self.started = False

    @property
    def host(self) -> str:
        return socket.gethostname()

    async def start(self) -> None:
        await self.memory.open()
        if self.exclusive:
            try:
                await self._take_lease()
            except BaseException:
                await self.memory.close()
                raise
            # We are the only deliverer for this entrance now: rows a killed predecessor had
            # claimed come back at once instead of after their claim expires.
            released = await self.memory.release_claims(self.entrance, self.instance_id)
            if released:
                log.info(
                    "%s: took back %d outbox row(s) claimed before a crash",
                    self.instance_id,
                    released,
                )
        if self.watcher is not None:
            await self.watcher.start()
        soul = await self.memory.active_soul()
        await self.memory.register_instance(
            self.instance_id, self.entrance, self.host, os.getpid(), soul.id if soul else None
        )
        await self.gatekeeper.warm_up()
        self.spawn(self._heartbeat(), "heartbeat")
        self.spawn(self._preload_model(), "preload-model")
        self.started = True
        log.info(
            "instance %s (%s) started; memory %s; soul %s",
            self.instance_id,
            self.entrance,
            self.config.memory.path,
            f"v{soul.id} {soul.name}" if soul else "none (check SOUL.md)",
        )

    async def stop(self) -> None:
        """Let the current turn finish, cancel every task, mark the instance stopped."""
        if not self.started:
            await self.memory.close()
            return
        try:
            await asyncio.wait_for(self._no_turns.wait(), timeout=self.config.model.timeout_s)
        except TimeoutError:
            log.warning("stopping with %d turn(s) still running", self._turns_in_flight)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.watcher is not None:
            await self.watcher.stop()
        with contextlib.suppress(Exception):
            await self.memory.stop_instance(self.instance_id)
        if self.exclusive:
            with contextlib.suppress(Exception):
                await self.memory.release_lease(self.lease_name, self.holder)
        await self.memory.close()
        self.started = False
        log.info("instance %s stopped", self.instance_id)

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a background task this instance owns (cancelled on stop)."""
        task = asyncio.create_task(coroutine, name=f"{self.instance_id}:{name}")
        self._tasks.append(task)
        return task

    def deliver_outbox(self, send: Send, *, targets: list[str] | None = None) -> OutboxCourier:
        """Deliver this entrance's outbox rows (only those for `targets`, when given)."""
        courier = OutboxCourier(self.memory, self.entrance, self.instance_id, send, targets=targets)
        self.spawn(courier.run(), "outbox")
        return courier

    def add_own_account(self, external_id: str) -> None:
        """The persona's own account on this entrance (a bot id): never answered."""
        self.gatekeeper.add_own_account(self.entrance, external_id)

    async def handle(self, incoming: Incoming) -> Reply | None:
        """One turn; shutdown waits for turns in flight so nothing is half-written.

        Commands are answered by code, never by the model: the guard's (/link,
        /approve-pair, /soul …, for admins and the coordinator) and the coordinator's
        (/pending, /resolve …, only for the configured coordinator). The model's output is
        only ever sent, never read as a command.
        """
        self._turns_in_flight += 1
        self._no_turns.clear()
        try:
            if incoming.author.is_bot:
                # Bots never command: their text goes to the guard (allowlist, budgets).
                return await self.mind.turn(incoming)
            answer = await self.gatekeeper.handle_command(incoming)
            if answer is not None:
                return Reply(text=answer, model=None)
            outcome = await self.coordinator.handle(
                incoming.entrance,
                incoming.author.external_id,
                incoming.text,
                private=incoming.conversation_kind == "dm",
            )
            if outcome is not None:
                return Reply(text=outcome.text, model=None)
            return await self.mind.turn(incoming)
        except Exception:
            # The message is recorded (or the failure is in recording it); the log says which.
            log.exception("turn failed for a message on %s", incoming.entrance)
            return Reply(
                text="Sorry, something went wrong on my side; I've logged it.", answered=False
            )
        finally:
            self._turns_in_flight -= 1
            if not self._turns_in_flight:
                self._no_turns.set()

    async def press(self, external_id: str, data: str, *, private: bool) -> Outcome:
        """A button press on this entrance (coordinator choices); private: in a DM."""
        return await self.coordinator.press(self.entrance, external_id, data, private=private)

    async def _take_lease(self) -> None:
        """Hold this entrance's lease, or refuse (or, with --standby, wait for it)."""
        announced = False
        while True:
            held, lease = await self.memory.acquire_lease(
                self.lease_name, self.holder, self.host, os.getpid(), ttl_s=self.lease_ttl_s
            )
            if held:
                if announced:
                    log.info("%s: took over the %s lease", self.instance_id, self.entrance)
                return
            since = datetime.fromtimestamp(lease.acquired_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
            who = f"pid {lease.pid} on {lease.host} since {since} UTC"
            if not self.config.standby:
                raise EntranceFailure(
                    f"{self.entrance} is already running ({who}); stop it, or start this one "
                    "with --standby to take over when it stops"
                )
            if not announced:
                log.info(
                    "%s: standby; the %s entrance is held by %s",
                    self.instance_id,
                    self.entrance,
                    who,
                )
                announced = True
            await asyncio.sleep(max(0.2, self.lease_ttl_s / 5))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                if self.exclusive:
                    held, lease = await self.memory.acquire_lease(
                        self.lease_name,
                        self.holder,
                        self.host,
                        os.getpid(),
                        ttl_s=self.lease_ttl_s,
                    )
                    if not held:
                        # Someone took over while we were stalled: stop, never poll twice.
                        log.error(
                            "%s: lost the %s lease to pid %d; stopping",
                            self.instance_id,
                            self.entrance,
                            lease.pid,
                        )
                        os.kill(os.getpid(), signal.SIGTERM)
                        return
                soul = await self.memory.active_soul()
                await self.memory.heartbeat(self.instance_id, soul.id if soul else None)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat failed")

    async def _preload_model(self) -> None:
        from bot import llm

        try:
            await llm.preload()
        except Exception:
            log.exception("could not load the model library")
