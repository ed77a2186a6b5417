"""The web entrance: the persona in the console's chat page, a full instance of its own.

`manifest` tells `bot/` about it; `runtime.WebChat` is hosted inside the console process
(`mirror console`), which hands it what a signed-in user types and shows the replies.
"""
