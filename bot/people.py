"""People and their accounts: pairing approvals, links between accounts, the people list.

Chat commands (`/approve-pair`, `/link`) and the CLI (`mirror pair approve`, `mirror link`,
`mirror unlink`, `mirror people`) call these same functions. Each returns an `Outcome`
(or data); the caller has already checked that the actor may do it. Never calls the model.
"""

from __future__ import annotations

from bot.accounts import AccountRef
from bot.guard import normalize_code
from bot.memory import CodeError, Memory, PendingPairing
from bot.models import Person
from bot.outcome import Outcome, invalid

PAIRED_WELCOME = "You're in: my coordinator approved you. Say hello whenever you like."


async def approve_pairing(memory: Memory, code: str, actor: str) -> Outcome:
    """Let in the account that was given `code`: the code is used up, the approval audited,
    and the person told on their entrance."""
    normalized = normalize_code(code)
    try:
        account = await memory.approve_pairing_code(normalized, actor, welcome=PAIRED_WELCOME)
    except CodeError as exc:
        return invalid(f"I can't approve {normalized}: {exc}.")
    who = account.display_name or account.external_id
    return Outcome(
        f"Approved: {who} ({account.entrance}:{account.external_id}) can talk to me now.",
        changed=True,
    )


async def pending_pairings(memory: Memory) -> list[PendingPairing]:
    """Unused, unexpired pairing codes (for `mirror pair list`)."""
    return await memory.pending_pairings()


async def list_people(memory: Memory) -> list[Person]:
    """Everyone the persona knows, each with their linked accounts (`mirror people`)."""
    return await memory.people()


async def link_accounts(memory: Memory, first: str, second: str, actor: str) -> Outcome:
    """Link two accounts (ENTRANCE:ID each) to one person (`mirror link A B`).

    The older person keeps everything; accounts that never wrote yet are created. Raises
    ValueError when an address is not ENTRANCE:ID.
    """
    a, b = AccountRef.parse(first), AccountRef.parse(second)
    result = await memory.link_identities(
        (a.entrance, a.external_id), (b.entrance, b.external_id), actor
    )
    if result.merged_person is None:
        return Outcome(f"{first} and {second} already are one person.")
    return Outcome(
        f"Linked: {', '.join(result.accounts)} are one person now (#{result.kept_person}).",
        changed=True,
    )


async def unlink_account(memory: Memory, account: str, actor: str) -> Outcome:
    """Give an account a person of its own again (`mirror unlink A`).

    Its private conversations go with it; what it wrote before stays with the person it
    leaves. Raises ValueError when the address is not ENTRANCE:ID.
    """
    ref = AccountRef.parse(account)
    try:
        unlinked = await memory.unlink_identity(ref.entrance, ref.external_id, actor)
    except CodeError as exc:
        return invalid(f"Nothing to unlink: {exc}.")
    return Outcome(f"Unlinked: {ref} is person #{unlinked.person_id} now.", changed=True)
