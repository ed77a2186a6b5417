"""The loopback entrance: a test-only entrance in the shape of `adapters/<name>/`.

Nothing in `bot/` names it: a test registers `manifest.MANIFEST` and the registry, config
validation, the CLI and `Instance` take it like any shipped entrance.
"""
