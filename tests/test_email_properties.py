"""Property-based tests (hypothesis) of reading and answering mail: any bytes are read without
raising and keep the thread rules, the new text of a reply is what is read, HTML shows only its
visible text, and auto-replies, lists, robots and the persona itself are never answered."""

from __future__ import annotations

import html
import re
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.email.reading import (
    html_to_text,
    parse_mail,
    read_mail,
    reply_subject,
    strip_quotes_and_signature,
    why_not_answer,
)
from adapters.email.runtime import command_line
from bot.commands import COMMAND_NAMES as COMMANDS
from tests.strategies import FAST

# Printable text on one line, without the line separators str.splitlines() also breaks on.
LINE_CHAR = st.characters(categories=("L", "N", "P", "S", "Zs"))
PERSONA = "persona@mirror.test"
ALICE = "alice@example.test"
HEADER_NAMES = [
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Sender",
    "Subject",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Return-Path",
    "Auto-Submitted",
    "Precedence",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "MIME-Version",
    "Date",
]
ODD_VALUES = [
    "multipart/mixed; boundary=b",
    "multipart/alternative; boundary=b",
    "multipart/report; report-type=delivery-status; boundary=b",
    'multipart/mixed; boundary="',
    "text/html; charset=utf-8",
    "text/plain; charset=x-unknown-8",
    "text/plain; charset*=utf-8''%ff%fe",
    "message/rfc822",
    "base64",
    "quoted-printable",
    "x-uuencode",
    "attachment; filename*=utf-8''%ff",
    'attachment; filename="a\\',
    "=?utf-8?b?////?=",
    "=?unknown?q?x?=",
    "=?utf-8?q?persona=40mirror.test?=",
    "<a@b> <c@d>",
    "<>",
    '"" <>',
    '"unclosed <x@y>',
    "a@b, , @, <@>, <a@>",
    "Alice <alice@example.test>",
    "no",
    "auto-replied",
]
HEADER_VALUE = st.one_of(
    st.sampled_from(ODD_VALUES).map(str.encode),
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b" ").replace(b"\n", b" ")),
    st.text(LINE_CHAR, max_size=40).map(lambda t: t.encode("utf-8")),
)
PART = st.tuples(
    st.lists(st.tuples(st.sampled_from(HEADER_NAMES), HEADER_VALUE), max_size=4),
    st.binary(max_size=200),
)


@st.composite
def mail_bytes(draw: st.DrawFn) -> bytes:
    """Mail-shaped bytes: headers with odd values, and a body that may have MIME parts."""
    headers = draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), HEADER_VALUE), max_size=12))
    lines = [name.encode() + b": " + value for name, value in headers]
    separator = draw(st.sampled_from([b"\r\n", b"\n"]))
    body = draw(st.binary(max_size=300))
    for part_headers, part_body in draw(st.lists(PART, max_size=3)):
        head = separator.join(n.encode() + b": " + v for n, v in part_headers)
        body += separator + b"--b" + separator + head + separator * 2 + part_body
    if draw(st.booleans()):
        body += separator + b"--b--" + separator
    return separator.join(lines) + separator * 2 + body


MSG_ID = re.compile(r"<[^<>\s\"\\]+>")


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.binary(max_size=500), mail_bytes()))
def test_any_bytes_are_read_without_raising_and_keep_the_thread_rules(raw: bytes) -> None:
    message = parse_mail(raw)
    mail = read_mail(message, raw)
    reason = why_not_answer(message, PERSONA, [])
    if reason is not None:  # an allowlist only ever refuses more
        assert why_not_answer(message, PERSONA, ["@example.test"]) is not None
    assert isinstance(mail.text, str)
    assert command_line(mail.body) is None or mail.body.lstrip().startswith("/")
    # Ids are safe to quote in an IMAP search; the thread's root starts the References.
    for found in (mail.message_id, mail.thread_id, *mail.references):
        assert MSG_ID.fullmatch(found), found
    assert mail.in_reply_to is None or MSG_ID.fullmatch(mail.in_reply_to)
    assert mail.references[0] == mail.thread_id and mail.message_id in mail.references
    assert len(mail.references) == len(set(mail.references)) <= 20
    assert read_mail(parse_mail(raw), raw) == mail  # the same bytes, the same ids
    if reason is None:  # an answer has somewhere to go, and it is never the persona
        assert mail.sender is not None and mail.reply_to is not None
        assert mail.reply_to != PERSONA and "@" in mail.reply_to


IDS = st.from_regex(r"<[a-z0-9.]{1,8}@[a-z]{1,6}\.test>", fullmatch=True)


@FAST
@given(st.lists(IDS, max_size=40), st.none() | IDS, IDS)
def test_thread_root_and_references_of_an_answer(
    references: list[str], in_reply_to: str | None, message_id: str
) -> None:
    message = EmailMessage()
    message["From"] = ALICE
    message["Message-ID"] = message_id
    if references:
        message["References"] = " ".join(references)
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
    message.set_content("hello")
    raw = message.as_bytes()
    mail = read_mail(parse_mail(raw), raw)
    assert mail.message_id == message_id and mail.in_reply_to == in_reply_to
    parent_chain = references or ([in_reply_to] if in_reply_to else [])
    assert mail.thread_id == (parent_chain[0] if parent_chain else message_id)
    chain = list(dict.fromkeys([*parent_chain, message_id]))
    # Long chains keep the root and the newest ids (RFC 5322 suggests trimming).
    assert mail.references == (chain if len(chain) <= 20 else [chain[0], *chain[-19:]])


# Words of the new text of a reply: they may start a line with "On"/"Am"/"Le" (as attributions
# do) but never end one with ":", so no line of new text is an attribution itself.
NEW_WORD = st.one_of(
    st.sampled_from(["On", "on", "Am", "Le", "El", "Il", "wrote", "From", "Sent", "Friday"]),
    st.text("abcdefghijklmnopqrstuvwxyzäöüéñß0123456789", min_size=1, max_size=9),
)
NEW_LINE = st.one_of(
    st.tuples(
        st.sampled_from(["", "", "  "]),
        st.lists(NEW_WORD, min_size=1, max_size=10).map(" ".join),
        st.sampled_from(["", ".", "!", "?", ",", "  ", " \t"]),
    ).map("".join),
    st.sampled_from(["", " ", "\t"]),
)
QUOTED_LINE = st.builds(
    lambda mark, text: mark + text,
    st.sampled_from([">", "> ", ">> ", " > ", "> > "]),
    st.text(LINE_CHAR, max_size=50),
)
ATTRIBUTIONS = [
    "On Tue, 3 Jun 2025 at 10:00, Wren <wren@mirror.test> wrote:",
    "On 3 Jun 2025, at 10:00, Wren <wren@mirror.test> wrote:",
    "Le mar. 3 juin 2025 à 10:00, Wren <wren@mirror.test> a écrit :",
    "Am Di., 3. Juni 2025 um 10:00 Uhr schrieb Wren <wren@mirror.test>:",
    "El mar, 3 jun 2025 a las 10:00, Wren (<wren@mirror.test>) escribió:",
    "Il giorno mar 3 giu 2025 alle ore 10:00 Wren <wren@mirror.test> ha scritto:",
]


@st.composite
def quoted_block(draw: st.DrawFn) -> tuple[str, list[str]]:
    """Quoted history, sometimes introduced by an attribution (wrapped or not, any language)."""
    quotes = draw(st.lists(QUOTED_LINE, min_size=1, max_size=4))
    if not draw(st.booleans()):
        return "quote", quotes
    attribution = draw(st.sampled_from(ATTRIBUTIONS))
    if draw(st.booleans()):  # wrapped by the sender's client at a space
        spaces = [i for i, c in enumerate(attribution) if c == " "]
        at = draw(st.sampled_from(spaces))
        attribution = attribution[:at] + "\n" + attribution[at + 1 :]
    gap = draw(st.sampled_from([[], [""]]))
    return "quote", [*attribution.split("\n"), *gap, *quotes]


HISTORY = st.sampled_from(
    [
        "",
        "-- \nAlice\n+49 123 456\n> not a quote, a signature",
        "--\nAlice",
        "-----Original Message-----\nFrom: Wren\nSent: today\n\nold text",
        "________________________________\nFrom: Wren\nSent: today\nold text",
    ]
)


def text_lines(text: str) -> list[str]:
    """The lines with text, without trailing spaces (blank lines only space paragraphs)."""
    return [line.rstrip() for line in text.strip().split("\n") if line.strip()]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.one_of(NEW_LINE.map(lambda line: ("new", [line])), quoted_block()), max_size=12),
    HISTORY,
    st.sampled_from(["plain", "alternative", "attachment"]),
)
def test_the_new_text_of_a_plain_mail_is_what_is_read(
    blocks: list[tuple[str, list[str]]], history: str, shape: str
) -> None:
    new_lines = [line for kind, lines in blocks if kind == "new" for line in lines]
    body = "\n".join(line for _, lines in blocks for line in lines)
    if history:
        body += "\n\n" + history
    message = EmailMessage()
    message["From"] = f"Alice <{ALICE}>"
    message["To"] = PERSONA
    message["Subject"] = "Friday"
    message["Message-ID"] = "<m@example.test>"
    message.set_content(body + "\n")
    if shape == "alternative":
        message.add_alternative("<p>HTMLPART</p>", subtype="html")
    elif shape == "attachment":
        message.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="a.pdf")
    raw = message.as_bytes()
    mail = read_mail(parse_mail(raw), raw)
    assert text_lines(mail.body) == text_lines("\n".join(new_lines))
    assert mail.body == mail.body.strip() and "\n\n\n" not in mail.body
    assert strip_quotes_and_signature(body) == mail.body
    assert mail.attachments == (["a.pdf"] if shape == "attachment" else [])


VISIBLE_WORD = st.text("abcdefghijklmnopqrstuvwxyzäöü0123456789", min_size=1, max_size=8)
HIDDEN = "HIDDENWORD"  # never visible: it appears only where nothing is shown
HIDDEN_TAGS = ["script", "style", "title", "noscript", "template", "svg", "object", "head"]
# What a script or style may hold: markup-looking text that must still not show.
HIDDEN_CONTENT = st.lists(
    st.sampled_from([HIDDEN, "<p>", "<b>", "if (a < b && c > d)", "'", '"', "<!-- x -->", "{}"]),
    min_size=1,
    max_size=6,
).map(lambda parts: " ".join([HIDDEN, *parts]))
BLOCK_TAGS = ["p", "div", "blockquote", "ul", "li", "h2", "pre", "table", "tr", "td", "section"]
INLINE_TAGS = ["b", "i", "span", "a", "font", "u"]
# Markup that shows nothing, the malformed declarations html.parser chokes on included.
NOTHING = [
    "<br>",
    "<hr>",
    "<img src='x.png'>",
    f"<!-- {HIDDEN} -->",
    f"<![CDATA[ {HIDDEN} ]]>",
    "<![if !supportLists]>",
    "<![endif]>",
    f"<![ {HIDDEN}]>",
    f"<![{HIDDEN}]>",
    "<![\x00>",
    f"<!{HIDDEN}>",
    "<!DOCTYPE html>",
    f"<?xml {HIDDEN}?>",
]


Node = str | tuple[str, str, list["Node"]]
HTML_NODES: st.SearchStrategy[Node] = st.recursive(
    st.one_of(
        st.lists(VISIBLE_WORD, min_size=1, max_size=4).map(lambda ws: " " + " ".join(ws) + " "),
        st.tuples(
            st.just("hidden"), st.sampled_from(HIDDEN_TAGS), HIDDEN_CONTENT.map(lambda t: [t])
        ),
        st.tuples(st.just("nothing"), st.sampled_from(NOTHING), st.just([])),
    ),
    lambda children: st.tuples(
        st.just("tag"), st.sampled_from(BLOCK_TAGS + INLINE_TAGS), st.lists(children, max_size=4)
    ),
    max_leaves=25,
)


def render(node: Node, upper: bool) -> str:
    if isinstance(node, str):
        return node
    kind, name, children = node
    if kind == "nothing":
        return name
    tag = name.upper() if upper else name
    attributes = f" title=\"{HIDDEN} &gt; <x>\" data-x='{HIDDEN}'"
    inner = "".join(render(child, upper) for child in children)
    return f"<{tag}{attributes}>{inner}</{tag}>"


def words_shown(node: Node, quoted: bool = False) -> list[str]:
    """The visible words, in order; inside a <blockquote> only when `quoted`."""
    if isinstance(node, str):
        return node.split()
    kind, name, children = node
    if kind != "tag" or (name == "blockquote" and not quoted):
        return []
    return [word for child in children for word in words_shown(child, quoted)]


@settings(max_examples=80, deadline=None)
@given(st.lists(HTML_NODES, max_size=6), st.booleans())
def test_an_html_only_mail_reads_as_its_visible_text_without_tags_or_scripts(
    nodes: list[Node], upper: bool
) -> None:
    markup = "".join(render(node, upper) for node in nodes)
    document = f"<html><head><style>p {{{HIDDEN}}}</style></head><body>{markup}</body></html>"
    text = html_to_text(document)
    assert HIDDEN not in text
    assert not re.search(r"<[a-zA-Z/!?]", text), text
    marks = {"-", "---", ">"}  # list bullets, rules, quote marks
    assert [w for w in text.split() if w not in marks] == [
        word for node in nodes for word in words_shown(node, quoted=True)
    ]
    message = EmailMessage()
    message["From"] = ALICE
    message.set_content(document, subtype="html")
    raw = message.as_bytes()
    body = read_mail(parse_mail(raw), raw).body
    assert HIDDEN not in body and not re.search(r"<[a-zA-Z/!?]", body)
    assert [w for w in body.split() if w not in marks] == [
        word for node in nodes for word in words_shown(node)
    ]


@given(st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=200))
def test_escaped_text_in_html_reads_back_as_the_text(text: str) -> None:
    assert html_to_text(f"<p>{html.escape(text)}</p>").split() == text.split()


@given(st.text(max_size=400))
def test_html_to_text_takes_any_text(text: str) -> None:
    assert isinstance(html_to_text(text), str)


def human_mail(*extra: tuple[str, str], sender: str = f"Alice <{ALICE}>") -> EmailMessage:
    lines = [
        ("From", sender),
        ("To", PERSONA),
        ("Subject", "Lunch?"),
        ("Message-ID", "<lunch@example.test>"),
        *extra,
    ]
    raw = "".join(f"{name}: {value}\r\n" for name, value in lines) + "\r\nAre you free?\r\n"
    return parse_mail(raw.encode("utf-8"))


def any_case(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda ups: "".join(c.upper() if up else c.lower() for c, up in zip(word, ups, strict=True))
    )


LOOP_HEADERS = [
    "X-Autoreply",
    "X-Autorespond",
    "X-Auto-Response-Suppress",
    "List-Id",
    "List-Unsubscribe",
    "X-Loop",
    "Feedback-ID",
]
PRINTABLE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
AUTO_SUBMITTED = st.one_of(
    st.sampled_from(["auto-replied", "auto-generated", "auto-notified"]).flatmap(any_case),
    st.from_regex(r"[A-Za-z][A-Za-z-]{0,19}", fullmatch=True).filter(lambda v: v.lower() != "no"),
)
LOOP_HEADER = st.one_of(
    st.tuples(st.sampled_from(LOOP_HEADERS).flatmap(any_case), PRINTABLE),
    st.tuples(
        any_case("Auto-Submitted"),
        st.builds(
            "{}{}{}{}".format,
            st.sampled_from(["", " "]),
            AUTO_SUBMITTED,
            st.sampled_from(["", " "]),
            st.sampled_from(["", "; owner-email=a@b.test", ";x"]),
        ),
    ),
    st.tuples(
        any_case("Precedence"),
        st.sampled_from(["bulk", "junk", "list", "auto_reply"]).flatmap(any_case),
    ),
    st.tuples(any_case("Return-Path"), st.sampled_from(["<>", "< >", "", "<  >"])),
    st.tuples(
        any_case("Content-Type"),
        st.builds(
            "multipart/report; report-type={}; boundary=b".format,
            st.sampled_from(["delivery-status", "disposition-notification", "x"]),
        ),
    ),
)
BENIGN_HEADER = st.sampled_from(
    [
        ("X-Mailer", "Thunderbird"),
        ("Date", "Tue, 3 Jun 2025 10:00:00 +0000"),
        ("Auto-Submitted", "no"),
        ("Auto-Submitted", " No "),
        ("Precedence", "first-class"),
        ("Return-Path", f"<{ALICE}>"),
        ("Cc", PERSONA),
        ("In-Reply-To", "<a@x.test>"),
    ]
)


@given(st.lists(BENIGN_HEADER, max_size=3), LOOP_HEADER, st.data())
def test_any_auto_reply_or_list_header_stops_an_answer(
    benign: list[tuple[str, str]], loop: tuple[str, str], data: st.DataObject
) -> None:
    assert why_not_answer(human_mail(*benign), PERSONA, []) is None
    at = data.draw(st.integers(0, len(benign)))
    headers = [*benign[:at], loop, *benign[at:]]
    assert why_not_answer(human_mail(*headers), PERSONA, []) is not None


ROBOT = st.builds(
    "{}{}@{}".format,
    st.sampled_from(
        ["mailer-daemon", "postmaster", "noreply", "no-reply", "no_reply", "do-not-reply"]
    ).flatmap(any_case),
    st.sampled_from(["", "+news", "-bounces", ".x"]),
    st.sampled_from(["example.test", "mail.example.test"]),
)
OWN = st.tuples(any_case(PERSONA), st.sampled_from(["{}", "<{}>", "Wren <{}>", '"Me" <{}>']))


@given(st.one_of(ROBOT.map(lambda a: ("robot", a)), OWN.map(lambda o: ("own", o[1].format(o[0])))))
def test_robots_and_the_persona_itself_are_never_answered(who: tuple[str, str]) -> None:
    kind, address = who
    own = PERSONA.upper() if kind == "own" else PERSONA
    assert why_not_answer(human_mail(sender=address), f" {own} ", []) is not None
    assert why_not_answer(human_mail(("Reply-To", address)), f" {own} ", []) is not None


@given(
    st.lists(
        st.sampled_from(["Re", "RE", "re", "Aw", "SV", "Antw", "Re[2]", "Re [3]"]), max_size=4
    ),
    st.text(LINE_CHAR, max_size=40),
)
def test_a_reply_subject_has_exactly_one_re(prefixes: list[str], subject: str) -> None:
    once = reply_subject("".join(f"{p}: " for p in prefixes) + subject)
    assert once.startswith("Re: ") and once == reply_subject(once)
    assert not re.match(r"(?i)(re|aw|sv|antw)\s*(\[\d+\])?\s*:", once[4:])


@given(st.lists(NEW_LINE, max_size=3), st.sampled_from(COMMANDS), PRINTABLE)
def test_a_coordinator_command_is_only_the_first_line_of_new_text(
    before: list[str], name: str, rest: str
) -> None:
    line = f"/{name} {rest}".strip()
    found = command_line("\n".join([*before, line, "thanks"]))
    if any(b.strip() for b in before):
        assert found is None
    else:
        assert found == line


def test_text_lines_sees_what_the_property_needs() -> None:
    """A guard against a vacuous property: blank lines and trailing spaces are not text."""
    assert text_lines("\n  a  \n \n\nb\n") == ["a", "b"]
