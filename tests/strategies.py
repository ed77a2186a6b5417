"""Hypothesis strategies and settings shared by the property tests (tests/test_*_properties.py).

The properties there hold whatever the input: no exception but the documented one, and each
function keeps the promise its docstring makes. They test pure functions only, so each file
runs in a few seconds.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any text, lone surrogates included: a str decoded from JSON ("\ud800") can hold them.
ANY_CHAR = st.one_of(st.characters(), st.characters(categories=("Cs",)))
ANY_TEXT = st.text(ANY_CHAR, max_size=300)
