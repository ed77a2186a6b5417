"""Intentions: subject keys and the deterministic conflict rules (pure functions, no IO).

Rules, applied when a new intention is stored:
  (a) double-booking: open intentions of different instances whose [due, due + duration)
      windows overlap;
  (b) same subject, different content, different instances;
  (c) contradicts a coordinator decision on the same subject.
A new intention with a target entrance (another entrance must act) is a request for the
coordinator, not a conflict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ACTIVE_STATUSES = ("open", "conflicted", "resolved")
_WORD = re.compile(r"[a-z0-9]+")
_FILLER = frozenset(
    """a an the to of for on at in by with and or me my you your i we us our it this that
    please can could would will you'd kindly be is are am do does let lets let's just also
    today tomorrow tonight morning afternoon evening night noon midnight next this coming
    monday tuesday wednesday thursday friday saturday sunday mon tue wed thu fri sat sun
    january february march april may june july august september october november december
    am pm o clock oclock minutes minute hours hour week weeks day days remind""".split()
)


def normalize_subject(text: str, *, person: str | None = None, max_words: int = 4) -> str:
    """A short, stable key for what an intention is about: 'call alice', 'review draft'."""
    words = [w for w in _WORD.findall(text.lower()) if w not in _FILLER and not w.isdigit()]
    words = [w for w in words if not re.fullmatch(r"\d+(am|pm|h)?", w)]
    key = words[:max_words]
    if person:
        name = person.lower().split()[0]
        if name not in key:
            key.append(name)
    return " ".join(key) or "unspecified"


def normalize_content(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class IntentionFacts:
    """What the rules need to know about one intention."""

    id: int
    owner_instance: str
    subject: str
    text: str
    due_at: float | None
    duration_s: int
    status: str = "open"
    target_entrance: str | None = None

    @property
    def window(self) -> tuple[float, float] | None:
        if self.due_at is None:
            return None
        return self.due_at, self.due_at + max(self.duration_s, 1)


@dataclass(frozen=True)
class Decision:
    """A coordinator decision on a subject: the content it kept (None: nothing kept)."""

    conflict_id: int
    subject: str
    kept_texts: tuple[str, ...]


@dataclass(frozen=True)
class Finding:
    """A conflict the rules found: between two intentions, or one and a decision."""

    intention_a: int
    intention_b: int | None
    decision_of: int | None
    reasons: tuple[str, ...]
    subject: str

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def overlaps(a: IntentionFacts, b: IntentionFacts) -> bool:
    first, second = a.window, b.window
    if first is None or second is None:
        return False
    return first[0] < second[1] and second[0] < first[1]


def find_conflicts(
    new: IntentionFacts, others: list[IntentionFacts], decisions: list[Decision]
) -> list[Finding]:
    """Every conflict `new` has with other active intentions and with earlier decisions."""
    findings: list[Finding] = []
    for other in others:
        if other.id == new.id or other.owner_instance == new.owner_instance:
            continue
        if other.status not in ACTIVE_STATUSES:
            continue
        reasons = []
        if overlaps(new, other):
            reasons.append("double-booking")
        if new.subject == other.subject and normalize_content(new.text) != normalize_content(
            other.text
        ):
            reasons.append("same subject, different content")
        if reasons:
            low, high = sorted((new.id, other.id))
            findings.append(Finding(low, high, None, tuple(reasons), new.subject))
    content = normalize_content(new.text)
    for decision in decisions:
        if decision.subject != new.subject:
            continue
        if content not in {normalize_content(kept) for kept in decision.kept_texts}:
            findings.append(
                Finding(
                    new.id, None, decision.conflict_id, ("contradicts a decision",), new.subject
                )
            )
    return findings
