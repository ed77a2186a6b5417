"""The records and errors that cross the memory boundary, in one module.

What a store method takes or returns, and what it raises, when code outside `bot.memory`
needs to name it: `bot.memory` re-exports every one, so callers never learn which store
module holds which table. Plain frozen dataclasses and exceptions only: this module must
never speak SQL, nor import aiosqlite or a store (`bot.memory.snapshot`, which `mirror
status` imports on its own, must stay light).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.guard import BotBudget, BotDecision
from bot.models import Conflict, Incoming, Intention, OutboxItem

# Errors ---------------------------------------------------------------------------------


class CodeError(Exception):
    """A one-time code that cannot be used: unknown, expired, used, or the wrong account."""


class ItemError(Exception):
    """A coordinator action that cannot be done (unknown id, wrong choice, already closed)."""


class LeaseLost(Exception):
    """The writer no longer holds the lease its epoch names."""


class ReminderError(Exception):
    """A reminder that cannot be stored: the account is unknown or has no private chat."""


# Conversations and turns ----------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """Where an incoming message landed; `sent`: what `SentSince` asked for, read in the
    recording's transaction (None: not asked); `admission`: its rate limits' tokens, taken
    in the recording's transaction when asked (None: not taken there; the guard's admission
    takes them)."""

    message_id: int
    conversation_id: int
    person_id: int
    identity_id: int
    created: bool
    sent: list[SentMessage] | None = None
    admission: Admission | None = None


@dataclass(frozen=True)
class SentSince:
    """The persona's outgoing messages with an id above `after`, sent after `since`: what a
    guard check compares a message with, asked for when it is recorded (one read fewer)."""

    after: int
    since: float


@dataclass(frozen=True)
class NewIntention:
    owner_instance: str
    entrance: str
    conversation_id: int | None
    person_id: int | None
    visibility: str
    text: str
    subject: str
    due_at: float | None
    duration_s: int
    target_entrance: str | None
    source_message_id: int | None
    kind: str = "promise"  # or 'reminder'
    recurrence: str | None = None  # CronTrigger fields as JSON (bot.recurrence); None: once


@dataclass(frozen=True)
class TurnRecord:
    """Everything one turn writes."""

    incoming_id: int
    conversation_id: int
    entrance: str
    instance_id: str
    person_id: int
    visibility: str
    reply_text: str
    soul_version: int | None
    model: str | None
    answered: bool = True
    context_rows: list[tuple[str, int]] = field(default_factory=list)
    intentions: list[NewIntention] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    delivery: ReplyDelivery | None = None  # None: the caller shows the reply itself
    followed_up: int | None = None  # the due intention this turn followed up (marked done)
    person_name: str | None = None  # the name the person gave ("my name is Sam"), stored

    @classmethod
    def answering(
        cls,
        recorded: Recorded,
        incoming: Incoming,
        instance_id: str,
        reply_text: str,
        **fields: Any,
    ) -> TurnRecord:
        """The turn that answers `incoming` (recorded as `recorded`) with `reply_text`."""
        fields.setdefault("soul_version", None)
        fields.setdefault("model", None)
        return cls(
            incoming_id=recorded.message_id,
            conversation_id=recorded.conversation_id,
            entrance=incoming.entrance,
            instance_id=instance_id,
            person_id=recorded.person_id,
            visibility=incoming.visibility,
            reply_text=reply_text,
            **fields,
        )


@dataclass(frozen=True)
class ReplyDelivery:
    """Where a turn's reply goes: queued in the outbox in the turn's own transaction, so
    a crash between storing and sending loses nothing (the entrance sends it on restart)."""

    target: str
    dedupe_key: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Unfinished:
    """An incoming message whose turn never finished (its process died, or every model
    failed): enough to run the turn again. `at`: when it arrived (epoch seconds)."""

    message_id: int
    incoming: Incoming
    at: float
    attempts: int
    status: str  # 'received' (its process died mid-turn) or 'unanswered' (no model answered)


@dataclass(frozen=True)
class DueFollowUp:
    """An intention that fell due, with what its follow-up turn needs: the internal event
    (`incoming`, authored by whoever the promise was made to, in that conversation) and the
    promise itself. `status`/`follow_up`: the intention's, when it was read."""

    intention_id: int
    text: str
    due_at: float
    status: str
    follow_up: str | None
    incoming: Incoming
    kind: str = "promise"  # or 'reminder'


@dataclass(frozen=True)
class Upcoming:
    """An intention as its person (or an operator) sees it in a list of what is planned:
    `kind` 'promise' | 'reminder', `due_at` epoch seconds, `timezone` the person's (None:
    the persona's), `recurring` when it repeats until cancelled."""

    id: int
    kind: str
    text: str
    due_at: float | None
    status: str
    recurring: bool
    entrance: str
    owner_instance: str
    person_id: int | None
    person_name: str | None
    timezone: str | None


@dataclass(frozen=True)
class StoredTurn:
    message_id: int
    intention_ids: list[int]
    conflicts_found: int
    done: list[int]
    # The reply's outbox row, claimed by the turn's instance to send at once (None: nothing
    # to send, or that dedupe key was queued before).
    outbox: OutboxItem | None = None


@dataclass(frozen=True)
class Provenance:
    message_id: int
    soul_version: int | None
    model: str | None
    rows: list[tuple[str, int]]


@dataclass(frozen=True)
class ViewLimits:
    history: int = 20
    recent_per_instance: int = 3
    intentions: int = 30
    decisions: int = 10
    recall: int = 8
    elsewhere: int = 12
    about_person: int = 12


# The coordinator's items and the outbox -------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One intention of an item, with where it came from (the coordinator sees all)."""

    intention: Intention
    conversation_external_id: str | None
    conversation_kind: str | None


@dataclass(frozen=True)
class ItemDetails:
    item: Conflict
    sides: list[Side]
    decision: Conflict | None = None  # the earlier decision a 'decision' conflict contradicts


@dataclass(frozen=True)
class Outgoing:
    """An outbox row to queue with a decision."""

    entrance: str
    target: str
    text: str
    dedupe_key: str
    payload: dict[str, Any] = field(default_factory=dict)


# Presence -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    host: str
    pid: int
    epoch: int
    acquired_at: float
    expires_at: float


# Admission (bot.memory.admission_store) -------------------------------------------------


@dataclass(frozen=True)
class FactsRequest:
    """What one check needs to read; each part is skipped when not asked for."""

    message_id: int
    conversation_id: int
    person_id: int
    sent_after: int | None = None  # outgoing messages with a larger id (None: skip)
    sent_since: float = 0.0
    recent_incoming: int = 0
    want_grant: bool = False
    usage_day: int | None = None


@dataclass(frozen=True)
class SentMessage:
    id: int
    at: float
    conversation_id: int
    text: str


@dataclass(frozen=True)
class GuardFacts:
    sent: list[SentMessage] = field(default_factory=list)  # oldest first
    recent_incoming: list[tuple[str, bool]] = field(default_factory=list)  # newest first
    granted: bool = False
    usage_tokens: int = 0
    usage_cost_usd: float = 0.0


# A bucket key naming the speaker's bucket before the recording knows who spoke
# (`Memory.record_incoming(take_tokens=…)` fills in their person id: 'person:42').
PERSON_KEY = "person:{person}"


@dataclass(frozen=True)
class BucketSpec:
    key: str
    rate_per_s: float
    burst: float


@dataclass(frozen=True)
class AdmitRequest:
    """Everything that must be decided atomically for a message otherwise let in."""

    buckets: list[BucketSpec] = field(default_factory=list)
    bot_conversation: int | None = None  # a bot wrote: apply the bot budget here
    bot_budget: BotBudget = field(default_factory=BotBudget)
    human_conversation: int | None = None  # a person wrote: the bot streak starts over


@dataclass(frozen=True)
class Admission:
    allowed: bool
    limited_by: str | None = None  # the bucket key that was empty
    bot: BotDecision | None = None
    # The buckets a token was taken from with the message's recording (`EarlyTake`): given
    # back if the guard then refuses the message before its admission.
    taken: tuple[BucketSpec, ...] = ()


# Identity (bot.memory.identity_store) ---------------------------------------------------


@dataclass(frozen=True)
class Account:
    identity_id: int
    person_id: int
    entrance: str
    external_id: str
    display_name: str | None


@dataclass(frozen=True)
class PendingPairing:
    code: str
    account: str
    display_name: str | None
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class LinkResult:
    kept_person: int
    merged_person: int | None  # None: the accounts already were one person
    accounts: list[str]
