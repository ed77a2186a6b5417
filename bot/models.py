"""Typed data that crosses module and process boundaries (pydantic models).

Pure data: no SQL, no IO. Times are timezone-aware datetimes in memory (UTC when read back
from memory.db, which stores epoch seconds).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from bot import clock

ConversationKind = Literal["dm", "group", "thread"]
Visibility = Literal["private", "group"]
IntentionKind = Literal["promise", "reminder"]
IntentionStatus = Literal["open", "done", "cancelled", "expired", "conflicted", "resolved"]
ConflictStatus = Literal["open", "surfaced", "resolved", "dismissed"]
OutboxStatus = Literal["pending", "sending", "sent", "failed"]
# in: received (to answer) | observed (not addressed to the persona) | answered |
# unanswered (every model failed) | refused | echo | missed (too late to answer);
# out: pending (stored, not yet taken by the platform) | sent
MessageStatus = Literal[
    "received",
    "observed",
    "answered",
    "unanswered",
    "refused",
    "echo",
    "missed",
    "pending",
    "sent",
]


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Text from outside as memory can keep it: control characters (NUL and friends, which
    confuse logs and terminals) dropped; lone surrogates (a platform's broken escaping,
    which UTF-8 cannot store) become U+FFFD."""
    return _SURROGATE.sub("\ufffd", _CONTROL.sub("", text))


# Every field that carries text from outside (names, titles, subjects, addresses, ids, the
# message) is this type, so it is cleaned where it enters and no later path can forget.
OutsideText = Annotated[str, AfterValidator(clean_text)]


def utcnow() -> datetime:
    return datetime.fromtimestamp(clock.now(), UTC)


def from_epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)


class Author(Frozen):
    """Who wrote a message, as the platform knows them."""

    external_id: OutsideText
    display_name: OutsideText | None = None
    is_bot: bool = False


class Incoming(Frozen):
    """A platform event normalized by an adapter."""

    entrance: str
    conversation_id: OutsideText
    conversation_kind: ConversationKind = "dm"
    conversation_title: OutsideText | None = None
    author: Author
    text: OutsideText
    platform_message_id: OutsideText | None = None
    reply_to_platform_id: OutsideText | None = None
    # Ids this conversation also belongs to, for [access.*] groups (a guild, a parent channel).
    places: tuple[OutsideText, ...] = ()
    # The reply goes to someone other than the verified author (a mail's Reply-To, a
    # forwarded thread): it is answered with no private context at all.
    reply_elsewhere: bool = False
    received_at: datetime = Field(default_factory=utcnow)

    @property
    def visibility(self) -> Visibility:
        return "private" if self.conversation_kind == "dm" else "group"


class IntentionDraft(BaseModel):
    """An intention as the model proposes it, before it is stored."""

    text: str
    subject: str | None = None
    due_at: datetime | None = None
    duration_minutes: int = 60
    target_entrance: str | None = None
    # 'reminder': the persona reminds the person to do `text`; 'promise': it does `text`.
    kind: IntentionKind = "promise"
    # A recurring plan: APScheduler CronTrigger fields (see bot.recurrence); None: once.
    recurrence: dict[str, Any] | None = None


class Reply(BaseModel):
    """What one turn produced."""

    text: str
    intentions: list[IntentionDraft] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    done: list[int] = Field(default_factory=list)  # ids of intentions now fulfilled
    # The name the person asked to be called by ("my name is Sam"); None: unchanged.
    person_name: str | None = Field(default=None, max_length=64)
    model: str | None = None
    message_id: int | None = None
    answered: bool = True
    outbox: OutboxItem | None = None  # the stored reply's outbox row, claimed to send now


class SoulVersion(Frozen):
    id: int
    sha256: str
    name: str
    text: str
    created_at: datetime
    source: str
    author: str | None = None


class Instance(Frozen):
    id: str
    entrance: str
    host: str
    pid: int
    started_at: datetime
    last_seen: datetime
    status: Literal["alive", "stopped", "dead"]
    status_since: datetime
    soul_version: int | None = None


class Message(Frozen):
    id: int
    conversation_id: int
    conversation_external_id: str | None = None
    conversation_kind: ConversationKind | None = None
    instance_id: str
    entrance: str
    direction: Literal["in", "out"]
    person_id: int | None = None
    person_name: str | None = None
    text: str
    created_at: datetime
    platform_message_id: str | None = None
    visibility: Visibility
    status: str
    soul_version: int | None = None
    model: str | None = None


class Note(Frozen):
    id: int
    instance_id: str
    person_id: int | None
    visibility: Visibility
    text: str
    created_at: datetime


class Intention(Frozen):
    id: int
    owner_instance: str
    entrance: str
    conversation_id: int | None
    person_id: int | None
    person_name: str | None = None
    visibility: Visibility
    text: str
    subject: str
    due_at: datetime | None
    duration_s: int
    target_entrance: str | None
    status: IntentionStatus
    created_at: datetime
    updated_at: datetime


class Conflict(Frozen):
    id: int
    kind: Literal["conflict", "request"]
    intention_a: int
    intention_b: int | None
    decision_of: int | None
    reason: str
    subject: str
    status: ConflictStatus
    choice: str | None
    resolution: str | None
    note: str | None
    resolved_by: str | None
    resolved_at: datetime | None
    created_at: datetime
    surfaced_at: datetime | None
    kept: list[str] = Field(default_factory=list)


class OutboxItem(Frozen):
    id: int
    entrance: str
    target: str
    text: str
    payload: dict[str, object] = Field(default_factory=dict)
    status: OutboxStatus
    attempts: int
    dedupe_key: str | None = None
    created_at: datetime


class Person(Frozen):
    id: int
    name: str
    identities: list[str] = Field(default_factory=list)  # "entrance:external_id"


class AuditEntry(Frozen):
    id: int
    at: datetime
    actor: str
    action: str
    subject: str | None
    detail: dict[str, object] = Field(default_factory=dict)


class Status(BaseModel):
    """What `mirror status` reports."""

    memory_path: str
    schema_version: int
    soul: SoulVersion | None
    instances: list[Instance]
    alive: dict[str, bool]
    messages: int
    open_intentions: int
    open_conflicts: int
    pending_outbox: int


# The mirror view: what one turn's context may know, already filtered for its audience. -----


class ViewMessage(Frozen):
    """A message as an audience may see it; `text` is None when it is private to others."""

    id: int
    entrance: str
    instance_id: str
    conversation_kind: ConversationKind
    direction: Literal["in", "out"]
    person_name: str | None
    text: str | None
    at: datetime

    @property
    def redacted(self) -> bool:
        return self.text is None


class ViewInstance(Frozen):
    id: str
    entrance: str
    alive: bool
    status: str
    since: datetime
    last_seen: datetime
    recent: list[ViewMessage] = Field(default_factory=list)


class ViewIntention(Frozen):
    """An open intention; `text` and `subject` (made from the text) are None when it came
    from a conversation outside the audience."""

    id: int
    owner_instance: str
    entrance: str
    person_name: str | None
    about_this_person: bool
    text: str | None
    subject: str | None
    due_at: datetime | None
    status: str
    target_entrance: str | None


class DecisionSide(Frozen):
    """One side of a decided item as an audience may see it: `text` None when it came from
    a conversation outside the audience; `kept` None when the decision left it as it was."""

    label: str
    text: str | None
    kept: bool | None
    owner_instance: str


class ViewDecision(Frozen):
    """A coordinator decision, already filtered for the audience: when any side is hidden
    from it, `subject`, `resolution` and `note` are None (they quote the sides) and the
    decision is told from `sides` alone."""

    conflict_id: int
    subject: str | None
    choice: str | None
    resolution: str | None
    note: str | None
    status: str
    resolved_by: str | None
    resolved_at: datetime | None
    sides: list[DecisionSide] = Field(default_factory=list)


class Audience(Frozen):
    """Who an output is for; memory returns only what they may see.

    Always this conversation's own content. A private chat (`person_id` set) adds that
    person's private content anywhere (linked accounts are one person) and what groups said;
    `everyone`: the coordinator in their own private chat. A group sees only itself; a
    reply going to someone other than the verified correspondent (`conversation_id` None)
    sees nothing private at all.
    """

    conversation_id: int | None
    person_id: int | None = None
    everyone: bool = False


class ViewNote(Frozen):
    id: int
    instance_id: str
    person_name: str | None
    text: str
    at: datetime


class TurnView(BaseModel):
    """Everything memory contributes to one turn's context."""

    # The active soul, read in the view's snapshot (None: memory has no valid one yet).
    soul: SoulVersion | None = None
    instances: list[ViewInstance] = Field(default_factory=list)
    intentions: list[ViewIntention] = Field(default_factory=list)
    decisions: list[ViewDecision] = Field(default_factory=list)
    recall: list[ViewMessage] = Field(default_factory=list)
    recall_notes: list[ViewNote] = Field(default_factory=list)
    # Active intentions nearest the text by meaning (this audience's only), nearest first.
    recall_intentions: list[ViewIntention] = Field(default_factory=list)
    # Notes about the person speaking (facts they told), newest first, for this audience.
    about_person: list[ViewNote] = Field(default_factory=list)
    elsewhere: list[ViewMessage] = Field(default_factory=list)
    history: list[ViewMessage] = Field(default_factory=list)
    offline_notice_given: bool = False
    # The speaking person as memory knows them: the name they gave, their timezone.
    speaker_name: str | None = None
    speaker_timezone: str | None = None
