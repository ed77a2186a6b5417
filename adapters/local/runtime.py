"""The local entrance: the persona in a terminal (`mirror chat`), a full instance.

Lines from stdin are messages from PERSON in a DM; replies go to stdout. Outbox rows
addressed to `local:PERSON` are printed as they arrive. With `--jsonl` every output is one
JSON object per line (for programs and tests); otherwise replies are plain text, with a
prompt when stdin is a terminal (the persona's name and the prompt in colour when stdout
is a colour terminal and NO_COLOR is unset). EOF or Ctrl-C ends the instance cleanly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from adapters.local.manifest import MANIFEST
from bot.config import Config
from bot.instance import Instance
from bot.models import Author, Incoming
from bot.outbox import Button

log = logging.getLogger(__name__)

ENTRANCE = MANIFEST.name
PERSONA_COLOUR = "\x1b[1;36m"  # bold cyan
PERSON_COLOUR = "\x1b[1;32m"  # bold green
RESET = "\x1b[0m"


def colour_terminal(stream: TextIO) -> bool:
    """Does this stream take ANSI colours? (https://no-color.org)"""
    return (
        stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM", "") != "dumb"
    )


class LocalChat:
    def __init__(
        self,
        config: Config,
        *,
        instance_id: str,
        person: str,
        jsonl: bool = False,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        banner: str | None = None,
    ) -> None:
        self.instance = Instance(
            config, instance_id=instance_id, entrance=ENTRANCE, send=self.show_message
        )
        self.person = person
        self.jsonl = jsonl
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.banner = banner
        self.interactive = not jsonl and self.stdin.isatty()
        self.colour = self.interactive and colour_terminal(self.stdout)
        self._prompt_shown = False
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.speaker = "persona"
        self._stopping = False

    async def run(self) -> None:
        await self.instance.start()
        try:
            # Rows for this person (the coordinator's address) or for this conversation.
            self.instance.deliver_outbox(targets=[self.person, self.conversation_id])
            self._start_reader()
            if self.banner and self.interactive:
                self.write(self.banner)
            self.emit("ready", f"{self.instance.instance_id} is listening as {self.person}")
            while True:
                self.prompt()
                line = await self._lines.get()
                self._prompt_shown = False  # Enter moved the cursor past it
                if line is None or self._stopping:
                    break
                text = line.rstrip("\r\n")
                if not text.strip():
                    continue
                await self.turn(text)
        finally:
            await self.instance.stop()

    @property
    def conversation_id(self) -> str:
        return f"{self.instance.instance_id}:{self.person}"

    def request_stop(self) -> None:
        """Finish the current turn, then leave (as on EOF)."""
        self._stopping = True
        self._lines.put_nowait(None)

    async def turn(self, text: str) -> None:
        incoming = Incoming(
            entrance=ENTRANCE,
            # Each terminal is its own conversation: the same person on two instances is
            # two DMs, as on two platforms.
            conversation_id=self.conversation_id,
            conversation_kind="dm",
            author=Author(external_id=self.person, display_name=self.person),
            text=text,
        )
        # The terminal prints the reply itself, with its memory id and model.
        reply = await self.instance.handle(incoming, deliver=False)
        if reply is not None:
            self.speaker = await self.instance.soul_name()
            self.emit("reply", reply.text, message_id=reply.message_id, model=reply.model)

    async def show_message(
        self,
        target: str,
        text: str,
        *,
        reply_to: str | None = None,
        buttons: Sequence[Button] = (),
        key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str | None:
        """A message for this terminal's person from the outbox (a coordinator item, a
        notice): printed between turns."""
        self.emit("outbox", text, key=key, payload=dict(extra or {}))
        return None

    def emit(self, kind: str, text: str, **extra: object) -> None:
        if self.jsonl:
            self.write(json.dumps({"type": kind, "text": text, **extra}, ensure_ascii=False))
        elif kind == "reply":
            if self.interactive:
                self.write(f"{self.painted(self.speaker, PERSONA_COLOUR)}: {text}")
            else:
                self.write(text)
        elif kind == "outbox":
            self.write(f"\n[message for {self.person}]\n{text}")
            self.prompt()
        elif kind == "ready" and self.interactive:
            self.write(f"({text}; Ctrl-D to leave)")

    def write(self, text: str) -> None:
        self._prompt_shown = False
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def prompt(self) -> None:
        if self.interactive:
            self.stdout.write(f"{self.painted(self.person + '>', PERSON_COLOUR)} ")
            self.stdout.flush()
            self._prompt_shown = True

    def above_prompt(self, text: str) -> None:
        """A line for the person at the terminal (a warning from the log), on stderr: above
        the prompt when it is showing (what they typed so far stays in the line buffer)."""
        redraw = self._prompt_shown and self.stdout.isatty()
        if redraw:
            self.stdout.write("\r\x1b[K")  # the prompt's line, cleared
            self.stdout.flush()
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
        if redraw:
            self.prompt()

    def painted(self, text: str, colour: str) -> str:
        return f"{colour}{text}{RESET}" if self.colour else text

    def _start_reader(self) -> None:
        """Read stdin in a daemon thread so a blocked read never holds up shutdown."""
        loop = asyncio.get_running_loop()

        def read() -> None:
            try:
                for line in self.stdin:
                    loop.call_soon_threadsafe(self._lines.put_nowait, line)
            except (OSError, ValueError):
                pass
            finally:
                try:
                    loop.call_soon_threadsafe(self._lines.put_nowait, None)
                except RuntimeError:
                    pass  # the loop is already closed

        threading.Thread(target=read, name="stdin", daemon=True).start()
