"""Property-based tests (hypothesis) for the parsers that take outside input: SOUL.md, commands
and buttons, received mail, and the Telegram and Discord reply splitters.

Whatever the input: no exception but the documented one, and each function keeps the promise
its docstring makes. Pure functions only, so the whole file runs in a few seconds.
"""

from __future__ import annotations

import hashlib
import html
import re
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from adapters.discord import is_fence_line, split_for_discord
from adapters.email.entrance import command_line
from adapters.email.reading import (
    html_to_text,
    parse_mail,
    read_mail,
    reply_subject,
    strip_quotes_and_signature,
    why_not_answer,
)
from adapters.telegram import split_for_telegram, telegram_length
from bot.coordinator import COMMANDS, Command, button_data, parse_button, parse_command
from bot.soul import SoulError, parse_soul

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any text, lone surrogates included: a str decoded from JSON ("\ud800") can hold them.
ANY_CHAR = st.one_of(st.characters(), st.characters(categories=("Cs",)))
ANY_TEXT = st.text(ANY_CHAR, max_size=300)
# Printable text on one line, without the line separators str.splitlines() also breaks on.
LINE_CHAR = st.characters(categories=("L", "N", "P", "S", "Zs"))


# SOUL.md ------------------------------------------------------------------------------------

SOUL_WORD = st.text("abcdefghijklmnopqrstuvwxyzÄéß0123456789.,'!?", min_size=1, max_size=10)
SOUL_BODY_LINE = st.one_of(
    st.lists(SOUL_WORD, min_size=1, max_size=8).map(" ".join),
    st.sampled_from(["", "- be kind", "### a sub-heading is text", "#hashtag", "  indented"]),
)
# A body with text, and sometimes a code block holding what would otherwise be a heading.
SOUL_BODY = st.tuples(
    st.lists(SOUL_BODY_LINE, max_size=5),
    st.lists(SOUL_WORD, min_size=1, max_size=6).map(" ".join),
    st.booleans(),
).map(
    lambda parts: "\n".join(
        [*parts[0], parts[1], *(["```", "## Voice", "# Name", "```"] if parts[2] else [])]
    )
)
SOUL_NAME = st.from_regex(r"[A-Za-zÀ-ÿ][A-Za-zÀ-ÿ0-9 .'-]{0,30}", fullmatch=True)
FREE_TITLE = st.sampled_from(["Hobbies", "Memories", "Quirks", "Style notes", "Friends"])


@st.composite
def souls(draw: st.DrawFn) -> tuple[str, str, dict[str, str]]:
    """A valid SOUL.md: (text, expected name, expected sections in file order)."""
    name = draw(SOUL_NAME)
    decorated = draw(st.sampled_from(["{}", "**{}**", "_{}_", "`{}`", "  {}  "])).format(name)
    titles = ["Name", "Voice", "Values", "Boundaries", *draw(st.sets(FREE_TITLE, max_size=2))]
    titles = draw(st.permutations(titles))
    bodies = {title: decorated if title == "Name" else draw(SOUL_BODY) for title in titles}
    parts = []
    for title in titles:
        marks = draw(st.sampled_from(["#", "##"]))
        shown = draw(st.sampled_from([title, title.upper(), title.lower()]))
        closing = draw(st.sampled_from(["", " #", " ##"]))
        parts.append(f"{marks} {shown}{closing}\n{bodies[title]}\n")
    text = draw(st.sampled_from(["", "Notes before the first heading.\n\n"])) + "\n".join(parts)
    expected = {title.lower(): bodies[title].strip() for title in titles}
    return text, name.strip().strip("*_` "), expected


@given(st.one_of(st.binary(max_size=600), ANY_TEXT), st.integers(0, 1000))
def test_parse_soul_takes_any_input_and_raises_only_soul_error(
    data: bytes | str, max_bytes: int
) -> None:
    try:
        soul = parse_soul(data, max_bytes=max_bytes)
    except SoulError as exc:
        assert str(exc) and "\n" not in str(exc)  # one line, for the log and the audit
        return
    assert soul.name and {"name", "voice", "values", "boundaries"} <= set(soul.sections)


@FAST
@given(souls(), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_a_valid_soul_round_trips(
    soul: tuple[str, str, dict[str, str]], newline: str, bom: bool
) -> None:
    text, name, sections = soul
    text = text.replace("\n", newline)
    parsed = parse_soul(("\ufeff" if bom else "") + text)
    assert parsed.name == name
    assert parsed.sections == sections and list(parsed.sections) == list(sections)
    assert parsed.text == text  # preserved as written, without a byte-order mark
    assert parsed.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert parse_soul(text.encode("utf-8")) == parsed  # bytes and str read alike
    assert parse_soul(parsed.text) == parsed  # stable: the stored text parses the same


@FAST
@given(souls(), st.integers(1, 200))
def test_an_oversize_soul_is_refused_and_one_at_the_limit_is_not(
    soul: tuple[str, str, dict[str, str]], over: int
) -> None:
    raw = soul[0].encode("utf-8")
    assert parse_soul(raw, max_bytes=len(raw)).name == soul[1]
    for data in (raw, soul[0]):
        with pytest.raises(SoulError, match="limit"):
            parse_soul(data, max_bytes=max(len(raw) - over, 0))


INVALID_UTF8 = st.sampled_from(
    [b"\xff", b"\xfe", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"]
)


@FAST
@given(souls(), INVALID_UTF8, st.integers(0, 10_000))
def test_invalid_utf8_anywhere_in_a_soul_is_refused_as_such(
    soul: tuple[str, str, dict[str, str]], bad: bytes, at: int
) -> None:
    raw = soul[0].encode("utf-8")
    at %= len(raw) + 1
    with pytest.raises(SoulError, match="not UTF-8"):
        parse_soul(raw[:at] + bad + raw[at:])


@FAST
@given(souls(), st.text(st.characters(categories=("Cs",)), min_size=1, max_size=3))
def test_a_soul_text_with_lone_surrogates_is_refused_not_crashed_on(
    soul: tuple[str, str, dict[str, str]], surrogates: str
) -> None:
    with pytest.raises(SoulError):
        parse_soul(soul[0] + surrogates)


# Commands and buttons -------------------------------------------------------------------------

COMMAND_NAME = st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True)
BOT_NAME = st.from_regex(r"[A-Za-z0-9_]{1,32}", fullmatch=True)
ARGUMENT_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)


@given(ANY_TEXT)
def test_only_a_text_starting_with_a_slash_is_a_command_and_any_text_is_taken(text: str) -> None:
    command = parse_command(text)
    if not text.strip().startswith("/"):
        assert command is None
        return
    assert command is not None
    assert command.name == command.name.lower()
    assert "@" not in command.name and not any(c.isspace() for c in command.name)
    assert all(arg and not any(c.isspace() for c in arg) for arg in command.args)


@given(COMMAND_NAME, BOT_NAME, ARGUMENT_TEXT, st.sampled_from(["", " ", "\n", "  \t"]))
def test_command_arguments_are_the_words_after_it(
    name: str, bot: str, rest: str, padding: str
) -> None:
    """'/resolve 12 A take the call' -> ['12', 'A', 'take', ...]: every word kept as typed,
    apostrophes, quotes and backslashes included (a note is the person's own words)."""
    expected = Command(name, rest.split())
    assert parse_command(f"{padding}/{name} {rest}{padding}") == expected
    # Telegram sends /cmd@botname in groups, and people type commands in any case.
    assert parse_command(f"/{name}@{bot} {rest}") == expected
    assert parse_command(f"/{name.upper()} {rest}") == expected


@given(st.sampled_from(["approve-pair", "approve_pair", "soul", "link"]), BOT_NAME, ARGUMENT_TEXT)
def test_the_guard_commands_are_recognised_the_way_access_reads_them(
    name: str, bot: str, rest: str
) -> None:
    # bot/access.py reads command.name with "_" as "-" (Telegram allows no "-" in commands).
    for text in (f"/{name} {rest}", f"/{name.title()}@{bot} {rest}"):
        command = parse_command(text)
        assert command is not None
        assert command.name.replace("_", "-") == name.replace("_", "-")


BUTTON_VERBS = st.sampled_from(["resolve", "approve", "deny", "dismiss"])


@given(
    BUTTON_VERBS,
    st.integers(0, 2**63 - 1),
    st.none() | st.from_regex(r"\w{1,12}", fullmatch=True),
)
def test_button_data_round_trips_through_parse_button(
    verb: str, item_id: int, choice: str | None
) -> None:
    data = button_data(verb, item_id, choice)
    assert parse_button(data) == Command(verb, [str(item_id), *([choice] if choice else [])])


@given(
    BUTTON_VERBS, st.integers(0, 2**63 - 1), st.sampled_from([None, "A", "B", "both", "neither"])
)
def test_button_data_fits_telegrams_64_bytes(verb: str, item_id: int, choice: str | None) -> None:
    assert len(button_data(verb, item_id, choice).encode("utf-8")) <= 64


@given(st.one_of(ANY_TEXT, st.builds("mirror:{}:{}".format, BUTTON_VERBS, ANY_TEXT)))
def test_parse_button_takes_any_data_and_yields_only_known_verbs(data: str) -> None:
    command = parse_button(data)
    if command is None:
        return
    assert data.startswith("mirror:" + command.name + ":")
    assert command.name in ("resolve", "approve", "deny", "dismiss")
    assert command.args and command.args[0].isdigit() and len(command.args) <= 2


# Mail -----------------------------------------------------------------------------------------

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


# Chunking -------------------------------------------------------------------------------------

PROSE_PIECE = st.sampled_from(
    ["word", "Sentence.", "end!", "why?", "“quoted.”", "😀", "é", "(aside.)", "…", "x" * 30]
)
PROSE = st.lists(
    st.tuples(PROSE_PIECE, st.sampled_from([" ", " ", " ", "\n", "\n\n", "\n \n", "\t", "  "])),
    max_size=120,
).map(lambda pairs: "".join(a + b for a, b in pairs))


def longest_word(text: str) -> int:
    return max((telegram_length(word) for word in text.split()), default=0)


def assert_split_for_telegram(text: str, limit: int, chunks: list[str]) -> None:
    """Chunks fit, are not blank, and are the text in order but for whitespace at the cuts;
    a cut without whitespace only splits a word longer than a whole message."""
    stripped = text.strip()
    assert (chunks == []) == (stripped == "")
    position = 0
    for index, chunk in enumerate(chunks):
        assert chunk and chunk == chunk.strip()
        assert telegram_length(chunk) <= limit
        gap_end = position
        while gap_end < len(stripped) and stripped[gap_end].isspace():
            gap_end += 1
        if index and gap_end == position:  # cut inside a word: only one too long for a message
            tail, head = chunks[index - 1].split()[-1], chunk.split()[0]
            assert telegram_length(tail + head) > limit
        assert stripped.startswith(chunk, gap_end)
        position = gap_end + len(chunk)
    assert position == len(stripped)
    if longest_word(text) <= limit:
        assert [word for chunk in chunks for word in chunk.split()] == text.split()


@settings(max_examples=100, deadline=None)
@given(st.one_of(PROSE, st.text(max_size=400)), st.integers(2, 200))
def test_telegram_chunks_fit_and_give_back_the_text_but_the_cut_whitespace(
    text: str, limit: int
) -> None:
    assert_split_for_telegram(text, limit, split_for_telegram(text, limit))


@FAST
@given(PROSE.filter(lambda p: p.strip()), st.integers(9_000, 20_000))
def test_telegram_splits_long_prose_at_its_real_limit(prose: str, size: int) -> None:
    text = (prose * (size // len(prose) + 1))[:size]
    chunks = split_for_telegram(text)
    assert len(chunks) >= 3
    assert_split_for_telegram(text, 4096, chunks)


def fences_balanced(chunk: str) -> bool:
    return sum(is_fence_line(line) for line in chunk.split("\n")) % 2 == 0


def code_lines(text: str) -> list[tuple[str, str | None]]:
    """Each line that is not a fence, with the info string of the code block it is in."""
    lines: list[tuple[str, str | None]] = []
    fence: str | None = None
    for line in text.split("\n"):
        if is_fence_line(line):
            fence = line.strip()[3:] if fence is None else None
        else:
            lines.append((line, fence))
    return lines


def shows_something(chunk: str, text: str) -> bool:
    """A line to read, and no code block with nothing in it but of the text's own."""
    blocks, block = [], None
    for line in chunk.split("\n"):
        if block is not None:
            block.append(line)
        if is_fence_line(line):
            if block is None:
                block = [line]
            else:
                blocks.append(block)
                block = None
    empty = ["\n".join(b) for b in blocks if not any(line.strip() for line in b[1:-1])]
    closed = text + ("" if fences_balanced(text) else "\n```")  # as the split closes it
    if not any(line.strip() for line, _ in code_lines(chunk)):
        return chunk in closed
    return all(f"\n{b}\n" in f"\n{closed}\n" for b in empty)


# Lines shorter than a message (at most 54 characters, the limit is 100 or more).
DISCORD_LINE = st.one_of(
    st.lists(st.text("abcdefgh xyz`#*_-.,()", min_size=1, max_size=10), max_size=5).map(" ".join),
    st.sampled_from(
        [
            "```",
            "```",
            "```python",
            "```js",
            "  ```",
            "   ```py",
            "    ``` not a fence",
            "````",
            "``` ",
            "```" + "x" * 40,
            "a ``` in a line",
            "",
            "",
            "   ",
        ]
    ),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(DISCORD_LINE, min_size=8, max_size=150), st.integers(100, 400))
def test_discord_chunks_keep_every_line_in_its_code_block(lines: list[str], limit: int) -> None:
    """Lines shorter than a message are never cut: each chunk is the next stretch of lines
    (blank lines outside code dropped at its edges), and each line renders in the same code
    block, with its language tag, as in the whole text (a tag over 32 characters is dropped)."""
    text = "\n".join(lines)
    chunks = split_for_discord(text, limit)
    original = code_lines(text)
    position = 0
    for chunk in chunks:
        assert len(chunk) <= limit
        assert fences_balanced(chunk), chunk
        edges = chunk.split("\n")
        assert edges[0].strip() and edges[-1].strip()  # blank edges are dropped
        shown = code_lines(chunk)
        assert shows_something(chunk, text), chunk
        # Skip the blank lines dropped between this chunk and the last: at the edges of a
        # message, or a stretch of a code block with nothing to show but blank lines.
        while not same_lines(shown, original[position : position + len(shown)]):
            assert not original[position][0].strip(), (chunk, original[position:])
            position += 1
        position += len(shown)
    assert all(not line.strip() for line, _ in original[position:])
    if any(line.strip() for line, _ in original):
        assert chunks  # something to read is always sent
    if not text.strip():
        assert chunks == []


def same_lines(shown: list[tuple[str, str | None]], kept: list[tuple[str, str | None]]) -> bool:
    """The same lines in the same code blocks; a block reopened in a later chunk keeps its
    language tag unless the tag is too long (over 32 characters with the fence)."""
    return len(shown) == len(kept) and all(
        line == kept_line
        and (
            fence == kept_fence or (fence == "" and kept_fence is not None and len(kept_fence) > 29)
        )
        for (line, fence), (kept_line, kept_fence) in zip(shown, kept, strict=True)
    )


@settings(max_examples=80, deadline=None)
@given(
    st.one_of(
        st.text(max_size=2500),
        st.lists(st.one_of(DISCORD_LINE, st.text(max_size=900)), max_size=30).map("\n".join),
    ),
    st.integers(100, 600),
)
def test_discord_chunks_fit_are_never_blank_and_balance_their_fences(text: str, limit: int) -> None:
    # Known limit: a fence line longer than a message minus 37 characters is cut like any
    # line, so the rest of its info string shows as code in the next message.
    assume(all(len(line) <= limit - 37 for line in text.split("\n") if is_fence_line(line)))
    chunks = split_for_discord(text, limit)
    for chunk in chunks:
        assert len(chunk) <= limit
        assert chunk.strip()
        assert fences_balanced(chunk), chunk
        assert shows_something(chunk, text), chunk
    shown = "".join(line for c in chunks for line in c.split("\n") if not is_fence_line(line))
    assert "".join(shown.split()) == "".join(
        "".join(line for line in text.split("\n") if not is_fence_line(line)).split()
    )
    if len(text) <= limit and fences_balanced(text) and text.strip():
        lines = text.split("\n")
        while not lines[0].strip():
            lines.pop(0)
        while not lines[-1].strip():
            lines.pop()
        assert chunks == ["\n".join(lines)]  # one message: the text as written


def test_the_helpers_see_what_the_properties_need() -> None:
    """The helpers the properties rely on see what they must (a guard against vacuous tests)."""
    assert not fences_balanced("```\ncode")
    assert not shows_something("```py\n```", "a\n```py\ncode\n```")  # an added empty box
    assert not shows_something("```\n\n```", "```\n\ncode\n```")
    assert not shows_something("a\n```py\n```", "a\n```py\ncode\n```")
    assert shows_something("```\n```", "x\n```\n```\ny")  # the text's own
    assert shows_something("a\n```\n```", "a\n```") and shows_something("```\nb\n```", "b")
    assert code_lines("a\n```py\nb\n```") == [("a", None), ("b", "py")]
    assert text_lines("\n  a  \n \n\nb\n") == ["a", "b"]
    assert same_lines([("x", "")], [("x", "p" * 30)]) and not same_lines([("x", "")], [("x", "p")])
