"""The console's pages, one module each, in the order their routes are tried.

Adding a page (say "promises"):
1. `bot/console/pages/promises.py` with a module docstring, `NAV = NavItem("/promises",
   "Promises", role="viewer", order=60)` (omit NAV for pages not in the top bar) and
   `ROUTES = [page_route("/promises", show), action_route("/promises/{id:int}/cancel",
   cancel, role="coordinator"), ...]` from `bot.console.layout`. Endpoints are
   `async def show(request, user) -> Response`; they call `bot/` (a command through
   `console_of(request).commands.run(user.speaker, Command(...))`, or a memory method),
   never SQL, and render a template with `render(request, "promises.html", user, ...)`.
2. `bot/console/templates/promises.html` extending `base.html`; a part that must stay live
   is a fragment (its own template and GET route) loaded with
   `hx-get="/promises/list" hx-trigger="load, changed from:body"`: the page's event stream
   fires `changed` on <body> whenever memory.db changes. Forms post with the CSRF token:
   `<input type="hidden" name="csrf" value="{{ user.csrf }}">` (htmx requests carry it in
   a header already, set on <body>). An htmx action answers with
   `outcome_response(request, user, outcome)` into a `<div id="outcome-area">` placed
   outside the live fragments (an outcome inside one is wiped by the redraw its own
   commit causes).
3. Add "promises" to PAGES below.
4. A browser test in `tests/console/test_promises.py` with the fixtures of
   tests/console/conftest.py (`console`: a real `mirror console` process; `admin_page`: a
   signed-in Chromium page), and an HTTP-level test of who may do what.
Privacy: render for the signed-in user's role (`user.sees_private`); a viewer never sees
private content.
"""

PAGES = (
    "sign_in",
    "mirror_view",
    "queue",
    "chat",
    "events",
    "soul",
    "people",
    "promises",
)
