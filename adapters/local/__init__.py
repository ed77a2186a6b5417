"""The local entrance: the persona in this terminal (`mirror chat`), a full instance.

`manifest` tells `bot/` about it; `runtime.LocalChat` reads stdin and writes stdout.
"""
