"""bot/heap.py: a library's load-time code pages dropped from the process, and the library
still runs (its code comes back from the page cache)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="smaps and madvise: Linux")

CHILD = """
import json, numpy
from bot.heap import _clean_mappings, drop_library_pages, glibc

def resident(name):
    return sum(r for _, _, r in _clean_mappings(name))

before = resident("numpy")
dropped = drop_library_pages("numpy")
after = resident("numpy")
a = numpy.arange(1000, dtype=numpy.float64)
total = float((a @ a) + numpy.linalg.norm(a))  # code that ran at import and code that did not
print(json.dumps({"glibc": glibc() is not None, "before": before, "dropped": dropped,
                  "after": after, "again": resident("numpy"), "total": total}))
"""


def test_a_library_whose_pages_were_dropped_still_runs() -> None:
    pytest.importorskip("numpy")
    result = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    import json

    found = json.loads(result.stdout)
    if not found["glibc"]:
        pytest.skip("not glibc: nothing is dropped")
    assert found["before"] > 1 << 20  # numpy's code, resident after its import
    assert found["dropped"] == found["before"]
    assert found["after"] < found["before"] / 4
    expected = sum(i * i for i in range(1000)) + sum(i * i for i in range(1000)) ** 0.5
    assert found["total"] == pytest.approx(expected)
    assert found["again"] > found["after"]  # what ran came back, from the file
