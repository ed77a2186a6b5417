"""Chat: the persona answering in the page, through the web entrance (adapters/web) the
console hosts: its own instance id, its own conversation per console user (`web:NAME`),
the same turn and guard as every entrance. The conversation is read back from memory.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bot.console.auth import SignedIn
from bot.console.layout import NavItem, action_route, console_of, page_route, render

NAV = NavItem("/chat", "Chat", role="viewer", order=70)
SHOWN = 100


async def chat_page(request: Request, user: SignedIn) -> Response:
    console = console_of(request)
    return render(
        request,
        "chat.html",
        user,
        enabled=console.web_chat is not None,
        problem=console.chat_problem,
    )


async def conversation_fragment(request: Request, user: SignedIn) -> Response:
    from bot.memory import TimelineFilter

    console = console_of(request)
    chat = console.web_chat
    messages = []
    notices: list[str] = []
    if chat is not None:
        conversation = await console.memory.conversation_id_of(
            chat.instance.entrance, chat.conversation_of(user.name)
        )
        if conversation is not None:
            found = await console.memory.timeline(
                TimelineFilter(conversation_id=conversation, limit=SHOWN)
            )
            messages = list(reversed(found))
        notices = list(chat.notices.get(chat.conversation_of(user.name), ()))
    name = await chat.instance.soul_name() if chat is not None else "persona"
    return render(request, "_chat.html", user, messages=messages, notices=notices, persona=name)


async def say(request: Request, user: SignedIn) -> Response:
    console = console_of(request)
    form = await request.form()
    text = str(form.get("text") or "").strip()
    if console.web_chat is not None and text:
        await console.web_chat.say(user.name, text)
    if request.headers.get("HX-Request"):
        return await conversation_fragment(request, user)
    return RedirectResponse("/chat", status_code=303)


ROUTES = [
    page_route("/chat", chat_page),
    page_route("/chat/messages", conversation_fragment),
    action_route("/chat", say, role="viewer"),
]
