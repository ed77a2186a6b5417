"""Entrances that exist only for tests, registered at run time with `bot.entrance.register`."""
