"""The web console: a web page for the coordinator and the admins, and the web entrance.

`mirror console` serves it (Starlette + uvicorn + Jinja2 templates + htmx vendored in
static/); it is a process like the others that shares only memory.db. It calls `bot/` for
everything (the command router, the coordinator, people, soul admin) and never speaks SQL:
bot/memory/console_store.py holds its rows. `app` builds the app, `auth` decides who may do
what, `layout` is what every page shares, `live` makes pages live, and `pages/` holds one
module per page (its docstring says how to add one). Cheap to import: nothing here is
imported by `mirror --help`.
"""
