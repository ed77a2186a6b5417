"""The event stream every page opens (`/events`, server-sent events): one `changed` event
after each commit to memory.db, from the console's one change watcher (bot.console.live).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from bot.console.auth import SignedIn
from bot.console.layout import console_of, page_route


async def events(request: Request, user: SignedIn) -> Response:
    feed = console_of(request).feed
    return StreamingResponse(
        feed.events(request.is_disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


ROUTES = [page_route("/events", events)]
