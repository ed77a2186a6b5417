"""Benchmarks: scripts that print figures. Never timed assertions in tests."""
