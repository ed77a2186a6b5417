"""The offline brain: a small deterministic persona that needs no model, no key, no network.

It is the embedded default (`model = "mirror/offline"`, registered as a litellm provider by
`bot.llm`). It answers only from the turn's `Context` (the same data a real model sees):
its name from SOUL.md, its other instances from the mirror view, what a person said on
another entrance, what it has promised; it turns an explicit request with a date or time
into a commitment plus an intention, and "remind me to X …" into a reminder (once, or
recurring: "every weekday at 8:30"), in the person's timezone, asking when if no time was
given; it answers small talk in the persona's voice without noting it, stores the name a
person gives ("my name is Sam") and keeps what they say about themselves as facts about
them ("Sam lives in Porto"); and it says once per conversation that it is offline.
It never pretends to understand more than it does.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot import recurrence
from bot.context import Context, decision_text
from bot.entrance import manifests, named_by
from bot.intentions import normalize_subject
from bot.models import ViewIntention

OFFLINE_NOTICE = (
    "(I'm running on MirrorOS's offline brain, so my answers are simple. To give me a real "
    'model, set [model] name in config/mirror.toml (e.g. "openai/gpt-4o-mini") and its API '
    "key in the environment.)"
)

_NAME = re.compile(r"\b(what'?s|what is|tell me) your name\b|\bwho are you\b|\byour name\??$")
_WHERE = re.compile(
    r"\bwhere else\b|\bother (instances|entrances|places|selves)\b|\bwhich instances\b"
    r"|\bwhere are you\b|\bare you (also |still )?(on|up|online)\b|\byour instances\b"
)
_TOLD = re.compile(
    r"\bwhat (did|have) i (tell|told|say|said|write|wrote|send|sent|mention|mentioned)"
    r"( to)? you (on|in|over|via|at|through) (the )?(?P<where>[\w.-]+)"
)
_PROMISES = re.compile(
    r"\bwhat (have|did) you (promise|promised|commit|committed)"
    r"|\byour (promises|commitments|plans)\b"
    r"|\bwhat are you (going|planning) to\b|\bwhat do you (owe|have planned)\b"
)
_MY_REMINDERS = re.compile(
    r"\b(what are|list|show( me)?|any of|do i have( any)?) my reminders\b"
    r"|\bwhat (did|have) i asked? you to remind me\b|\bwhat are you reminding me\b"
)
_DONE = re.compile(
    r"\b(it'?s|that'?s|it is|that is|all) (done|finished|sorted|taken care of)\b"
    r"|\b(already|now) done\b|\bno longer needed\b|^done[.!]*$"
)
_REQUEST = re.compile(
    r"\b(can|could|would|will) you\b|\bplease\b|\bremind me\b|\blet'?s\b|\bi need you to\b"
    r"|\bdon'?t forget\b"
)
# Followed by a word for an entrance other than the terminal (see `_target`).
_TARGET_HEAD = (
    r"\b(tell|post|announce|let|message|notify|inform|say|ask)\b.*?\b((on|in|to|via|over)\s+)?"
    r"(the\s+)?"
)
_ACTION = re.compile(
    r"\b(?:can|could|would|will) you\s+(?:please\s+)?(?P<a>.+)|\bplease\s+(?P<b>.+)"
    r"|\bremind me to\s+(?P<c>.+)|\blet'?s\s+(?P<d>.+)|\bi need you to\s+(?P<e>.+)"
    r"|\bdon'?t forget to\s+(?P<f>.+)"
)
_TIME_WORDS = re.compile(
    r"\b(on|at|by|this|next|coming)?\s*(mon|tues|wednes|thurs|fri|satur|sun)day\b.*"
    r"|\b(at|by|around)\s+\d.*|\b(tomorrow|tonight|today)\b.*|\bin \d+ (minutes?|hours?|days?)\b.*"
    r"|\b\d{1,2}(:\d2)?\s*(am|pm)\b.*"
    r"|\bevery\s+(day|weekday|weekend|(mon|tues|wednes|thurs|fri|satur|sun)day)s?\b.*"
    r"|\b(on\s+)?the\s+\d{1,2}(st|nd|rd|th)\b.*"
)
_TIME_WORDS_ANY_CASE = re.compile(_TIME_WORDS.pattern, re.I)  # for words kept as said
_REMIND = re.compile(r"\bremind (me|us)\b", re.I)
_REMINDER_ACTION = re.compile(r"\bremind (?:me|us)\b.*?\bto\s+(?P<action>.+)", re.I | re.S)
_IN = re.compile(
    r"\bin\s+(?P<n>\d+|an?|one|two|three|four|five|ten|fifteen|twenty|thirty)\s+"
    r"(?P<unit>minute|min|hour|hr|day|week)s?\b",
    re.I,
)
_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "ten": 10,
    "fifteen": 15, "twenty": 20, "thirty": 30,
}  # fmt: skip
# A part of the day said instead of a time ("tonight"); "morning" is reminder_time.
_PARTS_OF_DAY = {"tonight": (20, 0), "evening": (18, 0), "afternoon": (15, 0)}
_UNITS = {"minute": 60, "min": 60, "hour": 3600, "hr": 3600, "day": 86400, "week": 7 * 86400}
# A time of day given in words or digits ("at 9", "8:30", "3pm", "noon"); without one, a
# reminder for a day is due at [persona] reminder_time.
_CLOCK_GIVEN = re.compile(
    r"\b\d{1,2}:\d{2}\b|\b\d{1,2}\s*(am|pm)\b|\b(at|by|around)\s+\d{1,2}\b|\bnoon\b|\bmidnight\b",
    re.I,
)
_QUESTION = re.compile(r"\?\s*$|^(who|what|when|where|why|how|do|does|did|is|are|can)\b")
_COMMAND = re.compile(r"^/(?P<name>[a-z][\w-]*)(?:@\w+)?\b", re.I)
# Small talk, said on its own (after punctuation, emoji and the persona's name are dropped).
_SMALL_TALK = {
    "greeting": re.compile(
        r"^(hi|hello|hey|hiya|howdy|yo|greetings|good (morning|afternoon|evening|day))"
        r"( there| again| all| everyone)?$"
        r"|^(hi|hello|hey),? how are you( doing| today)?$|^how are you( doing| today)?$"
    ),
    "thanks": re.compile(
        r"^(thanks|thank you|thx|ty|cheers|many thanks|thanks a lot|thank you so much"
        r"|thanks so much)( (so|very) much)?( again)?$"
    ),
    "goodbye": re.compile(
        r"^(bye|goodbye|bye bye|see you|see you later|see ya|later|cya|take care"
        r"|good night|goodnight|night|gn|talk (to you )?later|ttyl)( for now| then)?$"
    ),
    "joke": re.compile(r"^(tell me a joke|(do you )?know (a|any) jokes?|say something funny)$"),
}
# "My name is Sam", "I'm called Sam", "call me Sam" (a name alone: "call me tomorrow" is not).
_MY_NAME = re.compile(
    r"^(?:(?:hi|hello|hey)[,!. ]+)?(?:my name is|my name's|i'?m called|i am called"
    r"|(?:you can |please )?call me)\s+(?P<name>[^\W\d_][\w'-]*(?: [^\W\d_][\w'-]*)?)"
    r"\s*[.!]*$",
    re.I,
)
_NOT_A_NAME = frozenset(
    {"tomorrow", "today", "tonight", "later", "back", "soon", "now", "again", "maybe"}
)
_ABOUT_ME = re.compile(
    r"\bwhat (do|did) you (know|remember|have) (about|on) me\b|\bwhat have i told you\b"
    r"|\bwhat do you know of me\b|\bdo you (know|remember) anything about me\b"
)
# Statements about oneself, kept as facts about the person ("I live in Porto").
_SELF_VERBS = {
    "live": "lives", "work": "works", "have": "has", "like": "likes", "love": "loves",
    "hate": "hates", "prefer": "prefers", "own": "owns", "speak": "speaks", "study": "studies",
    "play": "plays", "drink": "drinks", "eat": "eats", "come": "comes", "go": "goes",
    "teach": "teaches", "run": "runs", "use": "uses", "was": "was", "grew": "grew",
    "moved": "moved", "worked": "worked", "lived": "lived", "studied": "studied",
}  # fmt: skip
_SELF_FACT = re.compile(
    r"^(?:(?P<am>i'?m|i am)\s+(?P<state>.+)"
    r"|i'?ve\s+(?:got\s+)?(?P<has>.+)"
    r"|i\s+(?P<neg>don'?t|do not|never)\s+(?P<negverb>\w+)\s+(?P<negrest>.+)"
    rf"|i\s+(?P<verb>{'|'.join(_SELF_VERBS)})\s+(?P<rest>.+)"
    r"|my\s+(?P<mine>\w.+?\s(?:is|are|was|were|'s)\s.+))$",
    re.I | re.S,
)
REPLY_ELSEWHERE_NOTICE = (
    "(This reply goes to an address other than the one that wrote, so I've left out "
    "anything private.)"
)
GREETING_COMMANDS = frozenset({"start", "hello", "hi"})
COMMANDS_HELP = (
    "Commands I know: /link (connect your accounts on my other entrances)"
    "; my coordinator and admins have a few more."
)


def answer(context: Context, notice: str = OFFLINE_NOTICE) -> dict[str, Any]:
    """The structured reply (same shape a real model is asked for); `notice`: the
    once-per-conversation line saying it is the offline brain (and how to set a model)."""
    text = context.text.strip()
    lowered = text.lower()
    reply: dict[str, Any] = {"reply": "", "intentions": [], "notes": [], "done": []}

    if context.due is not None:
        reply["reply"] = follow_up(context)
        reply["done"] = [context.due.intention_id]
    elif match := _COMMAND.match(lowered):
        reply["reply"] = command_answer(context, match.group("name"))
    elif _NAME.search(lowered):
        reply["reply"] = introduce(context)
    elif (name := given_name(text)) is not None:
        reply["reply"] = f"Nice to meet you, {name}. I'll call you {name} on every entrance."
        reply["person_name"] = name
    elif (kind := small_talk_kind(context, lowered)) is not None:
        reply["reply"] = small_talk(context, kind)
    elif _ABOUT_ME.search(lowered):
        reply["reply"] = what_i_know(context)
    elif match := _TOLD.search(lowered):
        reply["reply"] = what_they_said(context, match.group("where"))
    elif _WHERE.search(lowered):
        reply["reply"] = where_else(context)
    elif _MY_REMINDERS.search(lowered):
        reply["reply"] = my_reminders(context)
    elif _PROMISES.search(lowered):
        reply["reply"] = promises(context)
    elif _DONE.search(lowered) and (mine := _open_for_person(context)):
        item = mine[0]
        reply["done"] = [item.id]
        reply["reply"] = f"Good, I've marked it done: {item.text}."
    elif _REMIND.search(lowered):
        reply.update(remind(context, text))
    elif _REQUEST.search(lowered) and (
        rule := recurrence.parse_every(text, context.timezone, context.reminder_time)
    ):
        reply.update(commit(context, text, None, rule=rule))
    elif _REQUEST.search(lowered) and (due := find_due(text, context)) is not None:
        reply.update(commit(context, text, due))
    elif _REQUEST.search(lowered) and (target := target_entrance(lowered)) is not None:
        reply.update(commit(context, text, None, target=target))
    elif _QUESTION.search(lowered):
        reply["reply"] = recall_answer(context)
    elif (fact := fact_about_person(context, text)) is not None:
        # Told back by name, or to them ("you're …") before they gave one.
        told = fact if _named(context) else fact_about_person(context, text, to_them=True)
        reply["reply"] = f"Noted: {told}. My other instances will know it too."
        reply["notes"] = [fact]
    else:
        reply["reply"] = "Noted. I've written that down where my other instances can see it."
        reply["notes"] = [f"{context.person_name or 'someone'} said: {text}"]

    reply["reply"] = styled(context, reply["reply"], notice)
    return reply


def styled(context: Context, body: str, notice: str = OFFLINE_NOTICE) -> str:
    """Apply the entrance style and the once-per-conversation offline notice."""
    if context.reply_elsewhere:
        body = f"{body}\n\n{REPLY_ELSEWHERE_NOTICE}"
    if not context.view.offline_notice_given:
        body = f"{body}\n\n{notice}"
    style = context.style.lower()
    if "greeting" in style or "sign-off" in style:
        name = context.person_name or "there"
        body = f"Hi {name},\n\n{body}\n\nBest,\n{context.soul_name}"
    return body


_CALL = re.compile(r"\b(call|phone|ring|video)\b", re.IGNORECASE)
_MAIL = re.compile(r"\b(e-?mail|mail)\b", re.IGNORECASE)


def follow_up(context: Context) -> str:
    """A promise fell due: say what it was, plainly, and what the persona can do about it
    ("It's Fri 15:00: you asked me to call you. I can't place calls, so this is your
    reminder.")."""
    assert context.due is not None
    due = context.due
    zone = ZoneInfo(context.timezone)
    now = context.now.astimezone(zone).strftime("%a %H:%M")
    action = due.text
    if context.person_name:
        action = re.sub(rf"\b{re.escape(context.person_name)}'s\b", "your", action)
        action = re.sub(rf"\b{re.escape(context.person_name)}\b", "you", action)
    if due.kind == "reminder":
        text = f"Reminder: {action}."
        if due.late:
            when = due.due_at.astimezone(zone).strftime("%a %H:%M")
            text = f"Sorry, this comes late (it was due {when}; I was away). {text}"
        return text
    text = f"It's {now}: you asked me to {action}."
    if due.late:
        when = due.due_at.astimezone(zone).strftime("%a %H:%M")
        text = f"Sorry, this comes late (it was due {when}; I was away). {text}"
    if _CALL.search(action):
        return f"{text} I can't place calls, so this is your reminder instead."
    if _MAIL.search(action):
        return f"{text} I can't send mail from here, so this is your reminder instead."
    return f"{text} This is your reminder."


def command_answer(context: Context, name: str) -> str:
    """A slash command nobody's code took (the guard and the coordinator answer theirs)."""
    if name in GREETING_COMMANDS or name == "help":
        return f"{introduce(context)}\n\n{COMMANDS_HELP}"
    return f"I don't know the command /{name}. {COMMANDS_HELP}"


def apology(context: Context, reason: str, notice: str = OFFLINE_NOTICE) -> str:
    """What the persona says when its model failed (the message is kept as unanswered)."""
    return styled(
        context,
        f"Sorry, I can't think straight right now ({reason}). I've kept your message and "
        "will pick it up again.",
        notice,
    )


def introduce(context: Context) -> str:
    """Who the persona is, composed from SOUL.md (its name, then "# About" or its first
    value), and which of its sides is speaking."""
    where = (
        f"This is my {entrance_label(context.entrance)} side (instance '{context.instance_id}')."
    )
    return f"{persona_line(context)} {where}"


def persona_line(context: Context) -> str:
    """ "I'm Wren, one persona living in several places at once, …": the name, then a
    sentence from an "About" section, else from the first of the values."""
    name = context.soul_name
    about = _first_sentence(context.soul_text, "about")
    if about:
        return f"I'm {name}. {_sentence(about)}"
    value = _first_item(context.soul_text, "values")
    if not value:
        return f"I'm {name}."
    head, _, tail = value.partition(":")
    if tail.strip():
        first = re.split(r"(?<=[.!?])\s", tail.strip(), maxsplit=1)[0]
        return f"I'm {name}, {_sentence(first)}"
    return f"I'm {name}. I care about {_sentence(head[:1].lower() + head[1:])}"


# "I'm Sam" / "Hi, I am Sam Lee": a name only when written as one (capitalised), and the
# whole message ("I'm tired", "I'm allergic to peanuts", "I'm Happy to help" are not).
_IM_NAME = re.compile(
    r"^(?:(?:hi|hello|hey)[,!. ]+)?(?:i'?m|i am)\s+(?P<name>[A-Z][\w'-]*(?: [A-Z][\w'-]*)?)"
    r"\s*[.!]*$",
    re.I,
)
_NOT_A_NAME_AFTER_IM = frozenset(
    {"fine", "good", "ok", "okay", "here", "back", "ready", "sorry", "tired", "happy", "sad",
     "done", "busy", "home", "in", "out", "well", "great", "hungry", "new", "lost", "sure",
     "bored", "free", "late", "away", "confused", "thirsty", "excited", "cold", "hot"}
)  # fmt: skip


def given_name(text: str) -> str | None:
    """The name in "my name is Sam" or "I'm Sam" (capitalised as a name), None when it is
    no name."""
    text = text.strip()
    match = _MY_NAME.match(text)
    if match is not None and match.group("name").lower() not in _NOT_A_NAME:
        name = match.group("name")
        return (name[:1].upper() + name[1:])[:64]
    match = _IM_NAME.match(text)
    if match is None:
        return None
    name = match.group("name")
    first = name.split()[0]
    if not first[0].isupper() or first.lower() in _NOT_A_NAME_AFTER_IM | _NOT_A_NAME:
        return None
    return name[:64]


def small_talk_kind(context: Context, lowered: str) -> str | None:
    """ "greeting", "thanks", "goodbye" or "joke" when that is all the message says."""
    words = re.sub(r"[^\w\s']", " ", lowered)
    words = re.sub(rf"\b{re.escape(context.soul_name.lower())}\b", " ", words)
    words = " ".join(words.split())
    return next((kind for kind, said in _SMALL_TALK.items() if said.match(words)), None)


def small_talk(context: Context, kind: str) -> str:
    """Small talk in the persona's voice; nothing in it is worth a note."""
    person = f", {context.person_name}" if context.person_name else ""
    if kind == "greeting":
        return f"Hello{person}. {persona_line(context)} What's on your mind?"
    if kind == "thanks":
        return f"You're welcome{person}."
    if kind == "goodbye":
        bye = "Good night" if "night" in context.text.lower() else "Goodbye"
        return (
            f"{bye}{person}. Whatever we settled is in memory.db, so any of my sides can "
            "pick it up."
        )
    return (
        "Here's one: I live in several places at once, and I still can't remember where I put "
        "anything that isn't written down."
    )


# Names a person has before they give one (the terminal's "you", or none at all): a fact
# about them then says "They", its verb agreeing ("They are …", never "you is …").
_NO_NAME = frozenset({"", "you", "me", "i", "someone", "they"})
_PLURAL_VERBS = {"was": "were"}  # the first person's verb serves "they", but for this one


def _named(context: Context) -> bool:
    """Has the person speaking a name of their own (not the terminal's "you")?"""
    return (context.person_name or "").strip().lower() not in _NO_NAME


def fact_about_person(context: Context, text: str, *, to_them: bool = False) -> str | None:
    """A statement about oneself as a fact about the person: "I live in Porto" ->
    "Sam lives in Porto" ("They live in Porto" before they gave a name); `to_them`: told
    back to them instead ("you live in Porto"). None when the message is not one."""
    cleaned = re.sub(r"[.!]+$", "", " ".join(text.split())).strip()
    match = _SELF_FACT.match(cleaned)
    if match is None:
        return None
    name = (context.person_name or "").strip()
    named = _named(context) and not to_them
    subject = name if named else ("you" if to_them else "They")
    if match.group("am"):
        fact = f"{subject} {'is' if named else 'are'} {match.group('state')}"
    elif match.group("has"):
        fact = f"{subject} {'has' if named else 'have'} {match.group('has')}"
    elif match.group("neg"):
        verb, rest = match.group("negverb"), match.group("negrest")
        if match.group("neg").lower() == "never":
            fact = (
                f"{subject} never {_SELF_VERBS.get(verb.lower(), verb) if named else verb} {rest}"
            )
        else:
            fact = f"{subject} {'doesn' if named else 'don'}'t {verb} {rest}"
    elif match.group("verb"):
        verb = match.group("verb").lower()
        said = _SELF_VERBS[verb] if named else _PLURAL_VERBS.get(verb, match.group("verb"))
        fact = f"{subject} {said} {match.group('rest')}"
    else:
        owner = f"{name}'s" if named else ("your" if to_them else "Their")
        fact = f"{owner} {match.group('mine')}"
    their, them, themselves = (
        ("your", "you", "yourself") if to_them else ("their", "them", "themselves")
    )
    fact = re.sub(r"\bmy\b", their, fact, flags=re.I)
    fact = re.sub(r"\bme\b", them, fact, flags=re.I)
    return re.sub(r"\bmyself\b", themselves, fact, flags=re.I)


def what_i_know(context: Context) -> str:
    """The facts memory.db holds about the person speaking, as this audience may see them."""
    facts = [note.text for note in context.view.about_person]
    if not facts:
        return (
            "I don't know anything about you yet: memory.db holds nothing you've told me. "
            "Tell me something and all my instances will know it."
        )
    listed = "\n".join(f"- {_short(fact)}" for fact in facts[:8])
    return f"Here's what memory.db holds about you:\n{listed}"


def where_else(context: Context) -> str:
    # Only entrances are sides of the persona (the scheduler is machinery, not a side).
    entrances = manifests()
    others = [
        i for i in context.view.instances if i.id != context.instance_id and i.entrance in entrances
    ]
    if not others:
        return "Right now this is my only instance; memory.db shows no others."
    lines = []
    for instance in others:
        place = entrance_label(instance.entrance)
        if instance.alive:
            state = "online"
        else:
            state = f"offline since {context.local_time(instance.since)}"
        latest = instance.recent[0] if instance.recent else None
        doing = ""
        if latest is not None and latest.text is None:
            kind = "a private conversation" if latest.conversation_kind == "dm" else "a group"
            doing = f"; lately {kind} on {place} that I can't share here"
        elif latest is not None:
            who = "I said" if latest.direction == "out" else f"{latest.person_name} said"
            doing = f"; lately {who}: “{_short(latest.text or '')}”"
        lines.append(f"- my {place} side ('{instance.id}') is {state}{doing}")
    return "Besides this one, my instances are:\n" + "\n".join(lines)


def what_they_said(context: Context, where: str) -> str:
    where = where.lower().rstrip("?.!")
    where = named_by(where) or where  # "mail" -> "email"
    said = [
        m
        for m in context.view.elsewhere
        if m.direction == "in"
        and m.text
        and where in (m.entrance, m.instance_id.lower())
        and told_something(context, m.text)
    ]
    if not said:
        return (
            f"I have nothing from you on {where} in memory.db. If it was on another account, "
            "link your accounts and I'll see it."
        )
    quoted = "\n".join(f"- “{m.text}” ({context.local_time(m.at)})" for m in said[:5])
    return f"On {where} you told me:\n{quoted}"


def told_something(context: Context, text: str) -> bool:
    """A fact or a request: not a command, a question or small talk."""
    lowered = text.strip().lower()
    if lowered.startswith("/") or small_talk_kind(context, lowered) is not None:
        return False
    return bool(_REQUEST.search(lowered)) or not _QUESTION.search(lowered)


def promises(context: Context) -> str:
    visible = [i for i in context.view.intentions if i.text is not None]
    hidden = [i for i in context.view.intentions if i.text is None]
    decisions = [(d, decision_text(d)) for d in context.view.decisions]
    decisions = [(d, text) for d, text in decisions if text]
    lines = []
    for item in visible:
        due = f" ({context.local_time(item.due_at)})" if item.due_at else ""
        state = " — waiting for my coordinator" if item.status == "conflicted" else ""
        lines.append(f"- {item.text}{due}{state} [via {item.owner_instance}]")
    if hidden:
        where = ", ".join(sorted({entrance_label(i.entrance) for i in hidden}))
        others = "another conversation" if len(hidden) == 1 else "other conversations"
        lines.append(f"- and {len(hidden)} from {others} ({where}) that I can't share here")
    answer = "My open promises:\n" + "\n".join(lines) if lines else "I have no open promises."
    if decisions:
        answer += "\nMy coordinator decided:\n" + "\n".join(
            f"- {d.subject or 'a private matter'}: {text}" for d, text in decisions[:3]
        )
    return answer


def my_reminders(context: Context) -> str:
    """The speaker's own open reminders and promises, in words (/reminders numbers them):
    the turn's intentions are already those this conversation may see."""
    mine = _open_for_person(context)
    if not mine:
        return "You have no reminders, and I owe you nothing right now."
    lines = [
        f"- {item.text}" + (f" ({context.local_time(item.due_at)})" if item.due_at else "")
        for item in mine
    ]
    return "Yours:\n" + "\n".join(lines) + "\n/reminders shows them with their numbers."


def recall_answer(context: Context) -> str:
    promised = [i for i in context.view.recall_intentions if i.text]
    if promised and _ABOUT_PROMISES.search(context.text.lower()):
        return promised_answer(context, promised[0])
    visible = [m for m in context.view.recall if m.text]
    # Quote what people told (not their commands or questions); the persona's own lines
    # only when no one's matches.
    people = [m for m in visible if m.direction == "in"]
    told = [m for m in people if told_something(context, m.text or "")]
    visible = told if people else visible
    if visible:
        latest = visible[0]
        who = "I" if latest.direction == "out" else (latest.person_name or "someone")
        return (
            "I can't reason about that offline, but memory.db has this: "
            f"{who} on {latest.entrance}: “{_short(latest.text or '')}”"
        )
    for note in context.view.recall_notes:
        return f"I can't reason about that offline, but I noted: “{_short(note.text)}”"
    if promised:
        return promised_answer(context, promised[0])
    return "I don't know that; nothing in memory.db answers it."


# A question about what the persona promised or plans (recall then answers with the
# intention it found by meaning before anything people said).
_ABOUT_PROMISES = re.compile(r"\b(promis\w*|commit\w*|plan(s|ned|ning)?|going to|agreed)\b")


def promised_answer(context: Context, item: ViewIntention) -> str:
    """An intention recall found by meaning, as the offline brain tells it."""
    due = f" ({context.local_time(item.due_at)})" if item.due_at else ""
    return f"I have this open promise: {_short(item.text or '')}{due} [via {item.owner_instance}]."


def commit(
    context: Context,
    text: str,
    due: datetime | None,
    *,
    target: str | None = None,
    rule: dict[str, Any] | None = None,
) -> dict[str, Any]:
    action = request_action(text)
    subject = normalize_subject(action, person=context.person_name)
    when = f" on {context.local_time(due)}" if due else ""
    if rule is not None:
        due = recurrence.next_occurrence(rule, context.now)
        when = f" {recurrence.describe(rule)} ({context.timezone})"
    target = target or target_entrance(text.lower())
    intention = {
        "text": _for_record(context, action),
        "subject": subject,
        "due_at": due.isoformat() if due else None,
        "duration_minutes": 60,
        "target_entrance": target,
        "recurrence": rule,
    }
    conflicts = [
        i
        for i in context.view.intentions
        if due is not None and i.due_at is not None and abs((i.due_at - due).total_seconds()) < 3600
    ]
    reply = f"Yes, I'll {action}{when}. I've written it down"
    if target and target != context.entrance:
        reply += f"; it needs my {entrance_label(target)} side, so I've asked my coordinator"
    elif conflicts:
        reply += ", but I may already have something then; my coordinator will sort it out"
    return {"reply": reply + ".", "intentions": [intention]}


def remind(context: Context, text: str) -> dict[str, Any]:
    """ "remind me to X tomorrow" -> a reminder of X (what the person will do) at [persona]
    reminder_time tomorrow, in their timezone; "in 2 hours": now + 2 h; "every weekday at
    8:30": a recurring one. No time at all: a question back, and nothing stored."""
    action = reminder_action(text)
    if action is None:
        return {"reply": "What should I remind you to do, and when?"}
    zone = context.timezone
    rule = recurrence.parse_every(text, zone, context.reminder_time)
    due = recurrence.next_occurrence(rule, context.now) if rule else reminder_due(text, context)
    if due is None:
        return {"reply": f"When should I remind you to {action}?"}
    if rule is not None:
        when = f"{recurrence.describe(rule)} ({zone}); the first is {short_time(context, due)}"
    else:
        when = f"on {short_time(context, due)} ({zone})"
    intention = {
        "text": _for_record(context, action),
        "subject": normalize_subject(f"remind {action}", person=context.person_name),
        "due_at": due.isoformat(),
        "duration_minutes": 1,  # a reminder takes the persona a moment, not an hour
        "kind": "reminder",
        "recurrence": rule,
    }
    return {"reply": f"I'll remind you to {action} {when}.", "intentions": [intention]}


def reminder_action(text: str) -> str | None:
    """What the person wants to be reminded to do, in their words, without the time:
    "remind me to buy milk tomorrow" -> "buy milk"; None when it says no "to …"."""
    match = _REMINDER_ACTION.search(text)
    if match is None:
        return None
    action = _TIME_WORDS_ANY_CASE.sub("", match.group("action"))
    action = _IN.sub("", action)
    action = re.sub(r"[?!.]+$", "", action.strip()).strip(" ,;")
    action = re.sub(r"\bme\b", "you", action, flags=re.I)
    action = re.sub(r"\bmy\b", "your", action, flags=re.I)
    return action or None


def reminder_due(text: str, context: Context) -> datetime | None:
    """When a one-off reminder is due: "in 2 hours" from now; a day and a time as said; a
    day alone ("tomorrow", "on Friday") at [persona] reminder_time; None: no time given."""
    zone = ZoneInfo(context.timezone)
    if match := _IN.search(text):
        count = match.group("n").lower()
        number = int(count) if count.isdigit() else _NUMBERS[count]
        return context.now + timedelta(seconds=number * _UNITS[match.group("unit").lower()])
    found = find_due(text, context)
    if found is None:
        return None
    if _CLOCK_GIVEN.search(text):
        return found
    clock = next(
        (at for word, at in _PARTS_OF_DAY.items() if re.search(rf"\b{word}\b", text, re.I)),
        None,
    ) or (recurrence.clock_time(context.reminder_time) or (9, 0))
    due = datetime.combine(found.astimezone(zone).date(), time(*clock), zone)
    return due if due > context.now else None


def short_time(context: Context, moment: datetime) -> str:
    """ "Thu 09:00" within the coming week, "Thu 10 Dec 09:00" further away."""
    local = moment.astimezone(ZoneInfo(context.timezone))
    if moment - context.now < timedelta(days=6):
        return local.strftime("%a %H:%M")
    return local.strftime("%a %d %b %H:%M")


def _for_record(context: Context, action: str) -> str:
    """An action as memory keeps it: "call your mum" -> "call Alice's mum"."""
    for_record = re.sub(r"\byou\b", context.person_name or "them", action)
    return re.sub(
        r"\byour\b", f"{context.person_name}'s" if context.person_name else "their", for_record
    )


def request_action(text: str) -> str:
    """The action of a request, without the time: 'call me on Friday at 3pm?' -> 'call you'."""
    match = _ACTION.search(text.lower())
    action = next((g for g in match.groups() if g), text) if match else text
    action = _TIME_WORDS.sub("", action.lower())
    action = re.sub(r"[?!.]+$", "", action).strip(" ,;")
    action = re.sub(r"\bme\b", "you", action)
    action = re.sub(r"\bmy\b", "your", action)
    return action or "do that"


def target_entrance(lowered: str) -> str | None:
    match = _target().search(lowered)
    if not match:
        return None
    return named_by(match.group("entrance"))


def _target() -> re.Pattern[str]:
    """A request naming another entrance ("tell them on the mail"), by any of its words."""
    words = {word for m in manifests().values() if not m.terminal for word in m.words()}
    alternatives = "|".join(re.escape(word) for word in sorted(words, key=lambda w: (-len(w), w)))
    return re.compile(rf"{_TARGET_HEAD}(?P<entrance>{alternatives})\b")  # re caches it


def entrance_label(name: str) -> str:
    """How the persona names an entrance in a sentence: "my Telegram side"."""
    found = manifests().get(name)
    return found.label if found is not None else name


def find_due(text: str, context: Context) -> datetime | None:
    """The first date or time in a request, in the context's timezone (future preferred).

    dateparser reads wall-clock times (naive, relative to the local now) and the zone is
    applied to the date they fall on, so "tomorrow at 9am" is 09:00 on the far side of a
    daylight-saving change too (dateparser's own zone handling keeps today's offset)."""
    from dateparser.search import search_dates

    zone = ZoneInfo(context.timezone)
    now = context.now.astimezone(zone)
    found = search_dates(
        text,
        languages=["en"],
        settings={"PREFER_DATES_FROM": "future", "RELATIVE_BASE": now.replace(tzinfo=None)},
    )
    if not found:
        return None
    moments = [
        _day_of_month(phrase, moment, now).replace(tzinfo=zone)
        if moment.tzinfo is None
        else moment.astimezone(zone)
        for phrase, moment in found
        if _looks_like_time(phrase)
    ]
    if not moments:
        return None
    # "on Friday at 3pm" may come back as two phrases: combine a day with a time of day.
    due = moments[0]
    if len(moments) > 1 and due.hour == now.hour and due.minute == now.minute:
        due = due.replace(hour=moments[1].hour, minute=moments[1].minute)
    due = due.astimezone(zone)
    if due < now - timedelta(minutes=1):
        due += timedelta(days=7 if due.date() != now.date() else 1)
    return due


_ORDINAL_DAY = re.compile(r"^(?:on\s+)?the\s+(?P<day>\d{1,2})(?:st|nd|rd|th)$", re.I)


def _day_of_month(phrase: str, moment: datetime, now: datetime) -> datetime:
    """ "on the 5th" is the next 5th of a month (dateparser reads it as a month away)."""
    match = _ORDINAL_DAY.match(phrase.strip())
    if match is None:
        return moment
    day, year, month = int(match.group("day")), now.year, now.month
    for _ in range(13):
        try:
            candidate = moment.replace(year=year, month=month, day=day)
        except ValueError:  # no such day in this month
            candidate = None
        if candidate is not None and candidate.date() >= now.date():
            return candidate
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return moment


def _looks_like_time(phrase: str) -> bool:
    return bool(
        re.search(
            r"\d|today|tomorrow|tonight|monday|tuesday|wednesday|thursday|friday|saturday|sunday"
            r"|noon|midnight|morning|evening|week",
            phrase.lower(),
        )
    )


def _open_for_person(context: Context) -> list[ViewIntention]:
    return [i for i in context.view.intentions if i.about_this_person and i.text]


def _first_sentence(soul_text: str, section: str) -> str:
    match = re.search(
        rf"^##?\s+{section}\s*$\n+(?P<body>.+?)(?=\n\s*\n|\n#|\Z)", soul_text, re.I | re.M | re.S
    )
    if not match:
        return ""
    body = " ".join(match.group("body").split())
    sentence = re.split(r"(?<=[.!?])\s", body, maxsplit=1)[0]
    return sentence


def _first_item(soul_text: str, section: str) -> str:
    """The first bullet of a section (joined across its wrapped lines), or its first
    sentence when it has no bullets."""
    match = re.search(
        rf"^##?\s+{section}\s*$\n+(?P<body>.+?)(?=\n#|\Z)", soul_text, re.I | re.M | re.S
    )
    if not match:
        return ""
    body = match.group("body").strip()
    if body.startswith(("-", "*")):
        body = re.split(r"\n\s*[-*]\s", "\n" + body)[1]
    return " ".join(body.split())


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
