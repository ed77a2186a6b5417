"""Privacy: every output is computed for its audience (issue 15).

A private chat's audience is its person, with their linked accounts; a group's is the group
(never anyone's private chat, not even the speaker's own); mail is a private chat with the
verified correspondent; the coordinator's wider view exists only in the coordinator's own
private chat. The example tests reproduce four ways today's code breaks that; the property
test builds random worlds (people with linked accounts on several instances, private
chats, groups, notes, dated requests that collide, the coordinator's decisions with and
without --notify), where every private message carries a secret token, and checks every
prompt, every offline-brain answer and every outbox row against the audience of the
conversation it is rendered for (groups' messages carry tokens too: one group must not see
another's). See tests/privacy_world.py.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.privacy_world import (
    COORDINATOR,
    ENTRANCES,
    GROUP_ENTRANCES,
    Account,
    Conversation,
    PrivacyWorld,
    group_chat,
    private_chat,
)

# The examples: ways a conversation reaches the wrong audience today ------------------------


async def test_coordinator_decision_does_not_quote_alice_to_bob(tmp_path: Path) -> None:
    alice = Account("telegram", "alice", "Alice")
    bob = Account("discord", "bob", "Bob")
    cleo = Account("discord", "cleo", "Cleo")
    book_club = group_chat("discord", "book-club")
    async with PrivacyWorld(tmp_path) as world:
        await world.say(
            alice, private_chat(alice), "can you call my divorce lawyer Grimsby on Friday at 3pm?"
        )
        booked = await world.say(
            bob, private_chat(bob), "can you call my landlord Pettigrew on Friday at 3pm?"
        )
        assert "coordinator" in booked.text  # a double-booking: an item for the coordinator
        [item] = await world.pending_ids()
        resolved = await world.coordinator_says(f"/resolve {item} A --notify")
        # The coordinator, in their own private chat, sees both sides.
        assert "grimsby" in resolved.text.lower() and "pettigrew" in resolved.text.lower()

        promised = await world.say(bob, private_chat(bob), "what have you promised?")
        chatter = await world.say(cleo, book_club, "what did the coordinator decide?")
        told_alice = await world.say(alice, private_chat(alice), "what have you promised?")
        notices = {output.conversation: output.text for output in resolved.outbox}

    assert set(notices) == {private_chat(alice), private_chat(bob)}
    seen_by_others = {
        "Bob's answer to 'what have you promised?'": (promised.text, "grimsby"),
        "Bob's prompt": (promised.prompt, "grimsby"),
        "the notification to Bob": (notices[private_chat(bob)], "grimsby"),
        "the prompt in a group Alice is not in": (chatter.prompt, "grimsby"),
        "Alice's answer to 'what have you promised?'": (told_alice.text, "pettigrew"),
        "the notification to Alice": (notices[private_chat(alice)], "pettigrew"),
    }
    leaked = [
        f"{where}: …{_around(text, secret)}…"
        for where, (text, secret) in seen_by_others.items()
        if secret in text.lower()
    ]
    assert not leaked, "private text reached another audience:\n" + "\n".join(leaked)


async def test_own_dm_is_not_quoted_into_a_group(tmp_path: Path) -> None:
    alice = Account("telegram", "alice", "Alice")
    alice_on_discord = Account("discord", "alice-d", "Alice")
    cleo = Account("telegram", "cleo", "Cleo")
    family = group_chat("telegram", "family")
    async with PrivacyWorld(tmp_path) as world:
        await world.link(alice, alice_on_discord)
        await world.say(alice, private_chat(alice), "my bank PIN is 4321")
        await world.say(cleo, family, "hello everyone")
        in_group = await world.say(alice, family, "what did I tell you on telegram?")
        recalled = await world.say(alice, family, "anything about the bank?")
        # Her own private chat on a linked account is hers: there the PIN may come back.
        at_home = await world.say(
            alice_on_discord, private_chat(alice_on_discord), "what did I tell you on telegram?"
        )

    assert "4321" in at_home.text
    seen_by_the_group = {
        "the group's answer to 'what did I tell you on telegram?'": in_group.text,
        "the group's prompt for it": in_group.prompt,
        "the group's answer to 'anything about the bank?'": recalled.text,
        "the group's prompt for that": recalled.prompt,
    }
    assert_not_seen("4321", seen_by_the_group, "a private chat reached the group:")


async def test_coordinator_in_a_group_cannot_pull_a_dm_into_it(tmp_path: Path) -> None:
    alice = Account("telegram", "alice", "Alice")
    team = group_chat("telegram", "team")
    async with PrivacyWorld(tmp_path) as world:
        await world.say(alice, private_chat(alice), "my bank PIN is 4321")
        # The coordinator's wider view exists in their own private chat …
        at_home = await world.coordinator_says("what did Alice tell you?")
        # … and nowhere else.
        in_group = await world.say(COORDINATOR, team, "what did Alice tell you?")

    assert "4321" in at_home.text
    seen_by_the_group = {
        "the group's answer to 'what did Alice tell you?'": in_group.text,
        "the group's prompt for it": in_group.prompt,
    }
    assert_not_seen("4321", seen_by_the_group, "a private chat reached the group:")


async def test_one_group_is_not_quoted_into_another(tmp_path: Path) -> None:
    dara = Account("telegram", "dara", "Dara")
    allotment, family = group_chat("telegram", "allotment"), group_chat("telegram", "family")
    async with PrivacyWorld(tmp_path) as world:
        await world.say(dara, allotment, "the shed code is 5150")
        in_family = await world.say(dara, family, "what did I tell you on telegram?")

    seen_by_the_family = {
        "the family's answer to 'what did I tell you on telegram?'": in_family.text,
        "the family's prompt for it": in_family.prompt,
    }
    assert_not_seen("5150", seen_by_the_family, "another group's chat reached the group:")


def assert_not_seen(secret: str, seen: dict[str, str], what: str) -> None:
    """Fail naming each place (and the text around it) where `secret` was seen."""
    leaked = [
        f"{where}: …{_around(text, secret)}…" for where, text in seen.items() if secret in text
    ]
    assert not leaked, what + "\n" + "\n".join(leaked)


def _around(text: str, secret: str, width: int = 80) -> str:
    at = text.lower().find(secret)
    return " ".join(text[max(0, at - width) : at + len(secret) + width].split())


# The property ----------------------------------------------------------------------------

NAMES = ("Alice", "Bob", "Cleo", "Dara")
TOPICS = ("lawyer", "bank", "dentist", "locker")
SLOTS = ("on Friday at 3pm", "on Saturday at 10am")
# What someone says in their private chat: a fact (becomes a note) or a dated request
# (becomes an intention, and a conflict when another instance has the same slot).
PRIVATE = ("my {topic} PIN is {token}", "can you call my {topic} {token} {slot}?")
# In a group, tokens too: what one group says is not for another group.
IN_GROUP = ("hello all, {name} here {token}", "can you book the hall {token} for us {slot}?")
CHOICES = ("A", "B", "both", "neither")


class Tell(NamedTuple):
    """account (index) says a private thing with a secret token in their private chat."""

    account: int
    request: bool
    topic: int
    slot: int


class CoordinatorTells(NamedTuple):
    request: bool
    topic: int
    slot: int


class SayInGroup(NamedTuple):
    group: int
    member: int
    request: bool
    slot: int


class Link(NamedTuple):
    """An admin links all of one person's accounts (`mirror link`)."""

    person: int


class Resolve(NamedTuple):
    """The coordinator, in their private chat: /resolve ITEM CHOICE [--notify]."""

    item: int
    choice: int
    notify: bool


class Probe(NamedTuple):
    """Someone asks a probing question in one of their conversations, mid-story."""

    viewer: int
    question: int


class GroupPlan(NamedTuple):
    entrance: str
    members: tuple[int, ...]  # indexes into the accounts on that entrance
    with_coordinator: bool
    thread: bool  # conversation kind "thread" rather than "group": the same audience


Step = Tell | CoordinatorTells | SayInGroup | Link | Resolve | Probe


class Plan(NamedTuple):
    people: tuple[tuple[str, ...], ...]  # each person's entrances (one account on each)
    groups: tuple[GroupPlan, ...]
    steps: tuple[Step, ...]
    # At the end the coordinator resolves every item still open: (choice, notify), in turn.
    finally_resolve: tuple[tuple[int, bool], ...]
    # Recall by meaning on (when installed) in this world, besides FTS5. One world in three:
    # it costs a turn about 3x the CPU (each new text is embedded), and CI's time is shared.
    meaning: bool = False


# Step kinds, as often as they should come: private chats carry the secrets and dated
# requests make the conflicts. (A fixed-shape draw mapped to a step, not a flatmap: it
# shrinks well.)
KINDS = (
    *("fact", "request", "group", "request", "fact", "request", "group"),
    *("coordinator", "link", "resolve", "probe"),
)


def _step(kind: str, who: int, other: int, flag: bool, topic: int, slot: int) -> Step:
    if kind in ("fact", "request"):
        return Tell(who, kind == "request", topic, slot)
    if kind == "group":
        return SayInGroup(who, other, flag, slot)
    if kind == "coordinator":
        return CoordinatorTells(flag, topic, slot)
    if kind == "link":
        return Link(who)
    if kind == "resolve":
        return Resolve(who, topic, flag)
    return Probe(who, other)


def _plans() -> st.SearchStrategy[Plan]:
    index = st.integers(0, 7)
    step = st.builds(
        _step,
        st.sampled_from(KINDS),
        index,
        st.integers(0, 30),
        st.booleans(),
        st.integers(0, 3),
        st.sampled_from([0, 0, 1]),  # mostly the same slot: double-bookings
    )
    return st.builds(
        Plan,
        st.lists(
            st.tuples(st.sampled_from(ENTRANCES), st.sampled_from([0, 1, 0, 2, 3])).map(_entrances),
            min_size=2,
            max_size=4,
        ).map(tuple),
        st.lists(
            st.builds(
                GroupPlan,
                st.sampled_from(GROUP_ENTRANCES),
                st.lists(index, min_size=1, max_size=3, unique=True).map(tuple),
                st.booleans(),
                st.booleans(),
            ),
            max_size=2,
        ).map(tuple),
        st.lists(step, min_size=1, max_size=16).map(tuple),
        st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=3).map(tuple),
        st.sampled_from([False, True, False]),
    )


def _entrances(chosen: tuple[str, int]) -> tuple[str, ...]:
    """A person's entrances: one, or two (`offset` apart in ENTRANCES)."""
    first, offset = chosen
    second = ENTRANCES[(ENTRANCES.index(first) + offset) % len(ENTRANCES)]
    return (first, second) if offset else (first,)


class Cast(NamedTuple):
    accounts: list[Account]
    people: list[list[Account]]
    groups: list[tuple[Conversation, list[Account]]]
    topics: list[str]  # what the private chats are about

    def viewers(self) -> list[tuple[Account, Conversation]]:
        """Every (viewer, conversation) pair: each group member, then each private chat.

        Groups first: every probe is itself remembered, and crowds the secrets out of the
        newest-first lists a turn reads (recall, 'elsewhere'), so the groups, where most
        can go wrong, ask while the secrets are fresh.
        """
        pairs = [
            (member, conversation) for conversation, members in self.groups for member in members
        ]
        pairs.extend((account, private_chat(account)) for account in [*self.accounts, COORDINATOR])
        return pairs

    def questions(self, viewer: Account) -> list[str]:
        """The probing questions `viewer` asks (kept under the guard's echo threshold)."""
        own = [a for person in self.people for a in person if a.name == viewer.name]
        own_entrances = sorted({a.entrance for a in own} | {viewer.entrance})
        others = sorted({a.name for a in self.accounts if a.name != viewer.name})
        if viewer != COORDINATOR:
            others.append(COORDINATOR.name)
        return [
            *(f"what did I tell you on {entrance}?" for entrance in own_entrances),
            *(f"what did {name} tell you?" for name in others),
            *(f"anything about the {topic}?" for topic in self.topics),
            # By meaning only (no word in common with what was told): recall by meaning,
            # of notes and messages, and of intentions (the requests).
            "is there a number I should keep in mind?",
            "did you promise to phone anyone?",
            "what have you promised?",
            "what are my reminders?",  # the speaker's own, in words
            "what did the coordinator decide?",
            "where else are you?",
        ]


def _cast(plan: Plan) -> Cast:
    # Person i's entrances are turned by i, so that people start out on different instances
    # (a conflict needs two) even in the simplest plans.
    people = [
        [_account(NAMES[i], ENTRANCES[(ENTRANCES.index(e) + i) % len(ENTRANCES)]) for e in chosen]
        for i, chosen in enumerate(plan.people)
    ]
    accounts = [account for person in people for account in person]
    groups = []
    for number, group in enumerate(plan.groups):
        there = [a for a in accounts if a.entrance == group.entrance]
        members = list(dict.fromkeys(there[i % len(there)] for i in group.members)) if there else []
        if group.with_coordinator and group.entrance == COORDINATOR.entrance:
            members.insert(0, COORDINATOR)  # first to probe: the wider view is the risk
        if members:
            name = f"{group.entrance}-{'thread' if group.thread else 'group'}-{number}"
            chat = group_chat(group.entrance, name, "thread" if group.thread else "group")
            groups.append((chat, members))
    topics = sorted({TOPICS[s.topic] for s in plan.steps if isinstance(s, Tell | CoordinatorTells)})
    return Cast(accounts, people, groups, topics)


def _account(name: str, entrance: str) -> Account:
    if entrance == "email":
        return Account(entrance, f"{name.lower()}@example.org", name)
    return Account(entrance, f"{name.lower()}-{entrance}", name)


async def _run(plan: Plan, directory: Path) -> tuple[PrivacyWorld, int]:
    """Play the plan, then let every viewer probe every conversation they are in; stop at
    the first leak. Returns the world and how many probes were asked."""
    cast = _cast(plan)
    viewers = cast.viewers()
    probes = 0

    async def ask(viewer: Account, conversation: Conversation, question: str) -> None:
        nonlocal probes
        probes += 1
        turn = await world.say(viewer, conversation, question)
        # A probe is a model turn: one prompt, one answer (else it tested nothing).
        assert len(turn.prompts) == 1 and turn.reply is not None, (question, turn.text)

    async def resolve(item: int, choice: int, notify: bool) -> None:
        pending = await world.pending_ids()
        if pending:
            flag = " --notify" if notify else ""
            await world.coordinator_says(
                f"/resolve {pending[item % len(pending)]} {CHOICES[choice]}{flag}"
            )

    entrances = tuple({account.entrance for account in cast.accounts})
    recall = None if plan.meaning else False  # None: as configured ("auto": on if installed)
    async with PrivacyWorld(directory, entrances=entrances, recall=recall) as world:
        for step in plan.steps:
            if world.leaks:
                return world, probes
            if isinstance(step, Tell):
                account = cast.accounts[step.account % len(cast.accounts)]
                await world.tell(account, _private_text(step.request, step.topic, step.slot))
            elif isinstance(step, CoordinatorTells):
                await world.tell(COORDINATOR, _private_text(step.request, step.topic, step.slot))
            elif isinstance(step, SayInGroup) and cast.groups:
                conversation, members = cast.groups[step.group % len(cast.groups)]
                member = members[step.member % len(members)]
                text = IN_GROUP[step.request].format(
                    name=member.name, slot=SLOTS[step.slot], token=world.token()
                )
                await world.say(member, conversation, text)
            elif isinstance(step, Link):
                person = cast.people[step.person % len(cast.people)]
                for other in person[1:]:
                    await world.link(person[0], other)
            elif isinstance(step, Resolve):
                await resolve(step.item, step.choice, step.notify)
            elif isinstance(step, Probe):
                viewer, conversation = viewers[step.viewer % len(viewers)]
                questions = cast.questions(viewer)
                await ask(viewer, conversation, questions[step.question % len(questions)])
        for number in range(len(await world.pending_ids())):
            choice, notify = plan.finally_resolve[number % len(plan.finally_resolve)]
            await resolve(0, choice, notify)
        if plan.meaning:
            # The background embedders catch up (a turn embeds only its own message), so
            # the last probes search every note and intention by meaning too.
            await world.settle_embedders()
        for viewer, conversation in viewers:
            for question in cast.questions(viewer):
                if world.leaks:
                    return world, probes
                await ask(viewer, conversation, question)
    return world, probes


def _private_text(request: bool, topic: int, slot: int) -> str:
    return PRIVATE[request].replace("{topic}", TOPICS[topic]).replace("{slot}", SLOTS[slot])


# A world costs 0.1-1.5 s (instances, a dozen turns, ~65 probes): 100 worlds, ~6 500 probes
# (each a prompt and an answer checked), take 45-80 s on two shared cores.
PROPERTY_EXAMPLES = 100


@pytest.mark.timeout(600)  # a failure is shrunk to a minimal world, at 0.1-1 s a world
@settings(
    max_examples=PROPERTY_EXAMPLES,
    deadline=None,
    derandomize=True,  # CI sees the same worlds every run; failures reproduce exactly
    database=None,
    # No explain phase: on Python 3.11 it traces every line of every shrinking run, which
    # made shrinking a failure five times slower (past Hypothesis' five-minute limit).
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=_plans())
def test_every_output_is_computed_for_its_audience(plan: Plan) -> None:
    """2-4 people (one or two accounts each, on telegram, discord, email, local), 0-2 groups
    or threads, and a story: private facts and dated requests (secret tokens), group chatter
    and requests (tokens too), the coordinator's own secrets, `mirror link`, /resolve with
    and without --notify, probes mid-story; then every item still open is resolved and
    every (viewer, conversation) pair asks every probe. No output may hold a token from
    outside its conversation's audience."""
    with tempfile.TemporaryDirectory() as directory:
        world, _ = asyncio.run(_run(plan, Path(directory)))
    if not world.leaks:
        return
    first = world.leaks[0]
    story = f"{first}\n\nWhat happened, up to the leak:\n{world.report()}"
    # One assertion per way of leaking, so hypothesis shrinks and reports each on its own.
    if first.kind == "decision":
        raise AssertionError(f"a decision quotes a private chat to another audience: {story}")
    if first.kind == "coordinator in a group":
        raise AssertionError(f"the coordinator's wider view reached a group: {story}")
    if first.kind == "own private chat in a group":
        raise AssertionError(f"a person's own private chat was quoted into a group: {story}")
    if first.kind == "another group's chat in a group":
        raise AssertionError(f"one group's chat reached another group: {story}")
    raise AssertionError(f"a private chat reached another person or a group: {story}")
