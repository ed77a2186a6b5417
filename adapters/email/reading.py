"""Reading a received mail: who sent it, its thread, its text, and whether to answer it.

Pure functions over stdlib `email` messages (parsed with `POLICY`: email.policy.default, its
header classes made once); no IO. The loop guard `why_not_answer` is the one place that
decides a mail must never be answered (auto-replies, bounces, receipts, lists, robots, the
persona itself, senders not allowed).
HTML is turned into text with the stdlib parser only: nothing in a mail is ever executed,
fetched or opened, and attachments are named, never read.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import functools
import hashlib
import re
from dataclasses import dataclass
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from html.parser import HTMLParser
from typing import Any

# A msg-id as it appears in Message-ID, In-Reply-To and References (RFC 5322 3.6.4). Quotes
# and backslashes are excluded so an id can be quoted safely in an IMAP search.
_MSG_ID = re.compile(r"<[^<>\s\"\\]+>")
_ROBOT_LOCAL_PART = re.compile(
    r"^(mailer-daemon|postmaster|no[-_.]?reply|do[-_.]?not[-_.]?reply)([-_.+].*)?$"
)
_LOOP_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
# Present at all (whatever the value): the mail comes from a robot or a list.
_LOOP_HEADERS = (
    "X-Autoreply",
    "X-Autorespond",
    "X-Auto-Response-Suppress",
    "List-Id",
    "List-Unsubscribe",
    "X-Loop",
    "Feedback-ID",
)
_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|aw|sv|antw)(?:\s*\[\d+\])?\s*:\s*)+", re.IGNORECASE)
# "On Tue, 3 Jun 2025 at 10:00, Alice <a@example.org> wrote:" (and a few other languages;
# German names the writer after the verb: "Am Di., 3. Juni 2025 schrieb Alice <a@x.org>:").
_ATTRIBUTION = re.compile(
    r"^(on\b.*\bwrote|le\b.*\ba écrit|am\b.*\bschrieb\b.*|el\b.*\bescribió|il\b.*\bha scritto)"
    r"\s*:$",
    re.IGNORECASE,
)
_ORIGINAL_MESSAGE = re.compile(
    r"^\s*-{2,}\s*(original message|forwarded message|ursprüngliche nachricht)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_OUTLOOK_RULE = re.compile(r"^\s*_{10,}\s*$")
_OUTLOOK_FROM = re.compile(r"^\s*\*?(from|von|de)\s*:\*?\s", re.IGNORECASE)


@dataclass(frozen=True)
class Sender:
    address: str  # lower-cased
    display_name: str


@dataclass(frozen=True)
class ReadMail:
    """What the entrance needs from one received mail."""

    message_id: str
    thread_id: str
    in_reply_to: str | None
    sender: Sender | None
    reply_to: str | None  # where an answer goes: Reply-To, else From
    subject: str
    body: str  # quotes and signature stripped
    attachments: list[str]
    references: list[str]  # the References of an answer to this mail

    @property
    def text(self) -> str:
        """What memory records and the persona reads: subject, body, attachment names."""
        parts = [f"Subject: {self.subject}" if self.subject else "", self.body]
        if self.attachments:
            parts.append(f"[attachments: {', '.join(self.attachments)}]")
        return "\n\n".join(part for part in parts if part).strip()


class _HeaderClasses(HeaderRegistry):
    """email.policy.default's header registry, each header's class made once: the stdlib's
    makes a new class (`type(...)`, about 50 µs) every time a header is read or set, some
    twenty times for each mail read and each mail written. And each header parsed once
    per text: the stdlib parses a header again each time it is read (reading one mail
    reads its Content-Type a dozen times, about 0.1 ms each); a parsed header is an
    immutable `str`, so the same text under the same name can share one."""

    PARSED_KEPT = 512  # parsed headers remembered (then forgotten all at once)
    PARSED_LONGEST = 998  # longer texts (a line's limit in RFC 5322) are parsed every time

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}
        self._parsed: dict[tuple[str, str], BaseHeader] = {}

    def __call__(self, name: str, value: Any) -> BaseHeader:
        if type(value) is not str or len(value) > self.PARSED_LONGEST:
            return super().__call__(name, value)  # an Address, a datetime...: made as given
        key = (name, value)
        parsed = self._parsed.get(key)
        if parsed is None:
            if len(self._parsed) >= self.PARSED_KEPT:
                self._parsed.clear()
            parsed = self._parsed[key] = super().__call__(name, value)
        return parsed

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made


# email.policy.default, with the header classes made once (the same headers, parsed,
# decoded and folded alike): every mail read or written here uses it.
POLICY = email.policy.default.clone(header_factory=_HeaderClasses())


def parse_mail(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=POLICY)
    assert isinstance(message, EmailMessage)
    return message


def header(message: Message, name: str) -> str:
    """A header's decoded text ('' when absent or unreadable): `message.get(name)`, the
    first such header, decoded once per text (see `_decoded`)."""
    wanted = name.lower()
    raw = next((value for key, value in message.raw_items() if key.lower() == wanted), None)
    if raw is None:
        return ""
    if message.policy is not POLICY:
        return _decode(message.policy, name, raw)
    return _decoded(wanted, raw)


@functools.lru_cache(maxsize=256)
def _decoded(name: str, raw: str) -> str:
    """A header decoded by POLICY: its parser costs about 0.1 ms a header (an address
    header more), and reading one mail asks for From four times."""
    return _decode(POLICY, name, raw)


def _decode(policy: Any, name: str, raw: str) -> str:
    try:
        value = policy.header_fetch_parse(name, raw)
    except Exception:  # a malformed header must not stop the mail from being read
        return ""
    return " ".join(str(value).split())


def header_values(message: Message, name: str) -> list[str]:
    """Every value of a header that may appear more than once, decoded like `header`."""
    try:
        values = message.get_all(name) or []
    except Exception:  # a malformed header must not stop the mail from being read
        return [""]
    return [" ".join(str(value).split()) for value in values]


def addresses(message: Message, name: str) -> list[tuple[str, str]]:
    """(display name, lower-cased address) pairs of an address header."""
    text = header(message, name)
    if len(text) > _HeaderClasses.PARSED_LONGEST:
        return list(_address_pairs.__wrapped__(text))
    return list(_address_pairs(text))


@functools.lru_cache(maxsize=256)
def _address_pairs(text: str) -> tuple[tuple[str, str], ...]:
    """`addresses` of a decoded header text, parsed once per (short) text: reading one mail
    asks for From four times."""
    found = []
    for display, address in email.utils.getaddresses([text]):
        address = address.strip().lower()
        if "@" in address and not any(c.isspace() for c in address):
            found.append((display.strip(), address))
    return tuple(found)


def sender_of(message: Message) -> Sender | None:
    found = addresses(message, "From")
    if not found:
        return None
    display, address = found[0]
    return Sender(address=address, display_name=display or address)


def reply_address(message: Message) -> str | None:
    """Where an answer goes: the first Reply-To address, else the sender."""
    for name in ("Reply-To", "From"):
        found = addresses(message, name)
        if found:
            return found[0][1]
    return None


def message_ids(value: str) -> list[str]:
    return _MSG_ID.findall(value)


def message_id_of(message: Message, raw: bytes) -> str:
    """The Message-ID, or a stable stand-in derived from the bytes when there is none."""
    found = message_ids(header(message, "Message-ID"))
    if found:
        return found[0]
    return f"<sha256-{hashlib.sha256(raw).hexdigest()[:32]}@mirroros.invalid>"


def thread_id_of(message: Message, message_id: str) -> str:
    """The thread's root: first of References, else In-Reply-To, else this mail itself."""
    for name in ("References", "In-Reply-To"):
        found = message_ids(header(message, name))
        if found:
            return found[0]
    return message_id


def references_for_answer(message: Message, message_id: str, keep: int = 20) -> list[str]:
    """References of an answer: the parent's References (or In-Reply-To) plus its id.

    Very long chains keep the root and the newest ids, as RFC 5322 suggests trimming.
    """
    chain = (
        message_ids(header(message, "References"))
        or message_ids(header(message, "In-Reply-To"))[:1]
    )
    chain = list(dict.fromkeys([*chain, message_id]))
    if len(chain) > keep:
        chain = [chain[0], *chain[-(keep - 1) :]]
    return chain


def reply_subject(subject: str) -> str:
    """'Re: ' once, however many 'Re:'/'RE:'/'Aw:'/'Re[2]:' the subject already has."""
    rest = _REPLY_PREFIX.sub("", subject or "").strip()
    return f"Re: {rest}" if rest else "Re: your message"


def _is_allowed(address: str, allow_senders: list[str]) -> bool:
    domain = address.rpartition("@")[2]
    for entry in allow_senders:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry.startswith("@"):
            if domain == entry[1:]:
                return True
        elif "@" in entry:
            if address == entry:
                return True
        elif domain == entry:  # a bare domain is read as "@domain"
            return True
    return False


def why_not_answer(message: Message, own_address: str, allow_senders: list[str]) -> str | None:
    """Why this mail must not be answered (None: answer it). Never feeds a mail loop.

    A header that appears more than once counts with each of its values (an auto-responder
    may add its own Auto-Submitted below a copied "Auto-Submitted: no").
    """
    for value in header_values(message, "Auto-Submitted"):
        auto_submitted = value.split(";")[0].strip().lower()
        if auto_submitted and auto_submitted != "no":
            return f"Auto-Submitted: {auto_submitted}"
    for value in header_values(message, "Precedence"):
        precedence = value.strip().lower()
        if precedence in _LOOP_PRECEDENCE:
            return f"Precedence: {precedence}"
    for name in _LOOP_HEADERS:
        if name in message:
            return f"{name} header (automated or list mail)"
    if message.get_content_type() == "multipart/report":
        report = str(message.get_param("report-type", "") or "bounce or receipt")
        return f"multipart/report ({report})"
    if any(not message_path(value) for value in header_values(message, "Return-Path")):
        return "empty Return-Path (a bounce)"
    sender = sender_of(message)
    if sender is None:
        return "no sender address"
    own = own_address.strip().lower()
    target = reply_address(message) or sender.address
    for who, address in (("sender", sender.address), ("reply address", target)):
        if address == own:
            return f"{who} is my own address"
        if _ROBOT_LOCAL_PART.match(address.partition("@")[0]):
            return f"{who} {address} is a robot (mailer-daemon, postmaster or no-reply)"
    if allow_senders:
        for who, address in (("sender", sender.address), ("reply address", target)):
            if not _is_allowed(address, allow_senders):
                return f"{who} {address} is not in allow_senders"
    return None


def message_path(value: str) -> str:
    """The address inside a Return-Path ('' for the null path '<>')."""
    return value.strip().strip("<>").strip()


# Text --------------------------------------------------------------------------------------


def strip_quotes_and_signature(text: str) -> str:
    """The new part of a mail: no quoted history, no attribution line, no signature."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        if line in ("-- ", "--"):  # RFC 3676 signature delimiter
            break
        if _ORIGINAL_MESSAGE.match(line):
            break
        if _OUTLOOK_RULE.match(line) and any(
            _OUTLOOK_FROM.match(following) for following in lines[index + 1 : index + 3]
        ):
            break
        kept.append(line)
    without_quotes: list[str] = []
    index = 0
    while index < len(kept):
        line = kept[index]
        if line.lstrip().startswith(">"):
            index += 1
            continue
        span = _attribution_lines(kept, index)
        if span and _only_quotes_follow(kept[index + span :]):
            index += span
            continue
        without_quotes.append(line.rstrip())
        index += 1
    return _tidy("\n".join(without_quotes))


def _attribution_lines(lines: list[str], index: int) -> int:
    """How many lines (1 to 3) of an attribution start at `index`; 0 when none does.

    A client may wrap an attribution, but not over a blank line; and a line above one that is
    whole on its own ("On Friday works." above "On Tue, ... wrote:") is the reply's text.
    """
    for size in (1, 2, 3):
        span = [line.strip() for line in lines[index : index + size]]
        if len(span) < size or not span[-1]:
            return 0
        if _ATTRIBUTION.match(" ".join(span)):
            rest_alone = any(_ATTRIBUTION.match(" ".join(span[k:])) for k in range(1, size))
            return 0 if rest_alone else size
    return 0


def _only_quotes_follow(lines: list[str]) -> bool:
    """True when an attribution introduces quoted lines (or nothing) up to the next reply."""
    for line in lines:
        if not line.strip():
            continue
        return line.lstrip().startswith(">")
    return True


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript", "svg", "object"})
_BLOCK = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tr",
        "ul",
    }
)
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "pre"})


class _HtmlText(HTMLParser):
    """Visible text of an HTML mail with its line structure; quotes become '> ' lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[tuple[int, str]] = []
        self.line = ""
        self.line_depth = 0
        self.skip = 0
        self.quote = 0
        self.pre = 0

    def newline(self, blank: bool = False) -> None:
        if self.line.strip() or not blank:
            self.lines.append((self.line_depth, self.line.strip() if not self.pre else self.line))
        self.line, self.line_depth = "", self.quote
        if blank and self.lines and self.lines[-1][1]:
            self.lines.append((self.quote, ""))

    def parse_html_declaration(self, i: int) -> int:
        # html.parser raises on a malformed "<![..." (Outlook writes "<![if ...]>" and worse);
        # read it as a bogus comment, as browsers do, and go on with the rest of the mail.
        try:
            return super().parse_html_declaration(i)
        except AssertionError:
            return self.parse_bogus_comment(i)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag == "br":
            self.newline()
        elif tag in _BLOCK:
            if self.line.strip():
                self.newline()
            if tag == "blockquote":
                self.quote += 1
                self.line_depth = self.quote
            elif tag == "pre":
                self.pre += 1
            elif tag == "li":
                self.line = "- "
            elif tag == "hr":
                self.lines.append((self.quote, "---"))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK:
            self.newline(blank=tag in _PARAGRAPH or tag == "blockquote")
            if tag == "blockquote":
                self.quote = max(0, self.quote - 1)
                self.line_depth = self.quote
            elif tag == "pre":
                self.pre = max(0, self.pre - 1)
        elif tag in ("td", "th"):
            self.line += " "

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            for index, chunk in enumerate(data.split("\n")):
                if index:
                    self.newline()
                self.line += chunk
            return
        text = re.sub(r"\s+", " ", data)
        if not self.line.strip():
            self.line_depth = self.quote
            text = text.lstrip() if not self.line else text
        self.line += text

    def text(self) -> str:
        self.close()
        if self.line.strip():
            self.newline()
        out = [("> " * depth + line).rstrip() if line else "" for depth, line in self.lines]
        return _tidy("\n".join(out))


def html_to_text(html: str) -> str:
    """Readable text from HTML: no scripts or styles, line breaks kept, quotes as '> '."""
    parser = _HtmlText()
    try:
        parser.feed(html)
        return parser.text()
    except Exception:  # html.parser is lenient; this is a last resort for hostile input
        hidden = "|".join(_SKIP)
        html = re.sub(rf"<({hidden})\b.*?(</\1\s*>|\Z)", " ", html, flags=re.IGNORECASE | re.DOTALL)
        return _tidy(re.sub(r"<[^>]*>", " ", html))


def _part_text(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except Exception:  # unknown charset or broken transfer encoding: decode what we can
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    return content if isinstance(content, str) else ""


def body_of(message: EmailMessage) -> str:
    """The mail's text: text/plain when there is one, else text from its HTML."""
    try:
        part = message.get_body(preferencelist=("plain", "html"))
    except Exception:
        part = None
    if part is None:
        return ""
    text = _part_text(part)
    if part.get_content_subtype() == "html":
        text = html_to_text(text)
    return text


def attachment_names(message: EmailMessage) -> list[str]:
    """Names of attached files (never opened), in order."""
    try:
        body = message.get_body(preferencelist=("plain", "html"))
    except Exception:
        body = None
    names = []
    for part in message.walk():
        if part is body or part.is_multipart():
            continue
        filename = part.get_filename()
        disposition = part.get_content_disposition()
        if filename or disposition == "attachment":
            name = " ".join((filename or f"unnamed {part.get_content_type()}").split())
            names.append(name[:120])
        elif disposition is None and part.get_content_maintype() not in ("text", "multipart"):
            names.append(f"unnamed {part.get_content_type()}")
    return names


def read_mail(message: EmailMessage, raw: bytes) -> ReadMail:
    message_id = message_id_of(message, raw)
    return ReadMail(
        message_id=message_id,
        thread_id=thread_id_of(message, message_id),
        in_reply_to=next(iter(message_ids(header(message, "In-Reply-To"))), None),
        sender=sender_of(message),
        reply_to=reply_address(message),
        subject=header(message, "Subject"),
        body=strip_quotes_and_signature(body_of(message)),
        attachments=attachment_names(message),
        references=references_for_answer(message, message_id),
    )
