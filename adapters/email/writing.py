"""Writing mail: the persona's threaded answers and its outbox letters. Pure, no IO.

Every Message-ID the persona mints is derived from what it answers (or from the outbox
row's dedupe key), so a letter sent again after a crash carries the same id and the
recipient's client shows it once. Every letter says it was written by a program
(`Auto-Submitted`), so other robots do not answer it and no mail loop can start.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from adapters.email.reading import POLICY

REPLY_KIND = "email_reply"
COORDINATOR_KIND = "coordinator_item"
COMMAND_HINT = (
    "(Answer by mail with the command on the first line of your reply, for example "
    "/resolve {id} A; the quoted text below it is ignored.)"
)
_SUBJECT_LIMIT = 78


@dataclass(frozen=True)
class Letter:
    """One mail the persona sends."""

    to: str
    subject: str
    text: str
    message_id: str
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    auto_submitted: str = "auto-replied"
    extra_headers: dict[str, str] = field(default_factory=dict)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower() or "mirroros.invalid"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:24]


def reply_message_id(incoming_message_id: str, own_address: str) -> str:
    """The Message-ID of the answer to a mail: the same however often it is sent."""
    return f"<reply-{_digest(incoming_message_id)}@{domain_of(own_address)}>"


def outbox_message_id(key: str, own_address: str) -> str:
    return f"<outbox-{_digest(key)}@{domain_of(own_address)}>"


def reply_payload(
    *, subject: str, in_reply_to: str, references: list[str], message_id: str
) -> dict[str, Any]:
    """What an outbox row for a threaded answer carries (see `letter_for`)."""
    return {
        "kind": REPLY_KIND,
        "subject": subject,
        "in_reply_to": in_reply_to,
        "references": references,
        "message_id": message_id,
    }


def _subject_from_text(text: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = " ".join(first.split())
    if len(first) > _SUBJECT_LIMIT:
        first = first[: _SUBJECT_LIMIT - 1].rstrip() + "…"
    return first or "A message from MirrorOS"


def _string(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def letter_for(
    to: str, text: str, payload: Mapping[str, Any], key: str, own_address: str
) -> Letter:
    """The letter for a message addressed to a mail address `to`: a threaded answer when
    `payload` carries reply headers, a coordinator item, or a plain note. `key` (stable
    for one outbox row) makes its Message-ID, so a retry is recognisably the same mail."""
    message_id = _string(payload.get("message_id")) or outbox_message_id(key, own_address)
    listed = payload.get("references")
    references = [r for r in listed if isinstance(r, str)] if isinstance(listed, list) else []
    if payload.get("kind") == COORDINATOR_KIND:
        item_id = payload.get("item_id", "?")
        prefix = ""
        if text.startswith("Reminder:"):
            prefix = "Reminder: "
        elif text.startswith("OVERDUE:"):
            prefix = "Overdue: "
        return Letter(
            to=to,
            subject=f"{prefix}MirrorOS: item {item_id} needs your decision",
            text=f"{text}\n\n{COMMAND_HINT.format(id=item_id)}",
            message_id=message_id,
            auto_submitted="auto-generated",
            extra_headers={"X-MirrorOS-Item": str(item_id)},
        )
    in_reply_to = _string(payload.get("in_reply_to"))
    return Letter(
        to=to,
        subject=_string(payload.get("subject")) or _subject_from_text(text),
        text=text,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        auto_submitted="auto-replied" if in_reply_to else "auto-generated",
    )


def compose(letter: Letter, *, own_address: str, own_name: str | None) -> EmailMessage:
    """The RFC 5322 message for a letter, from the persona's address."""
    message = EmailMessage(policy=POLICY)
    username, _, domain = own_address.partition("@")
    message["From"] = Address(display_name=own_name or "", username=username, domain=domain)
    message["To"] = letter.to
    message["Subject"] = letter.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = letter.message_id
    if letter.in_reply_to:
        message["In-Reply-To"] = letter.in_reply_to
    if letter.references:
        message["References"] = " ".join(letter.references)
    message["Auto-Submitted"] = letter.auto_submitted
    for name, value in letter.extra_headers.items():
        message[name] = value
    message.set_content(_normalise_newlines(letter.text))
    return message


def _normalise_newlines(text: str) -> str:
    return re.sub(r"\r\n?", "\n", text).rstrip("\n") + "\n"
