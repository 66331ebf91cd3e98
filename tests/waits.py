"""Waits that end on a condition, with a generous upper bound: tests never assume the machine is fast."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# The slowest machines we support (2 AVX2 cores shared with TensorFlow, or one core under taskset) are
# many times slower than a developer's laptop: bounds are there to end a hung test, not to time it.
DEFAULT_TIMEOUT_S = 300.0


def wait_until(condition: Callable[[], T], what: str, timeout: float = DEFAULT_TIMEOUT_S, interval: float = 0.1) -> T:
    """Poll ``condition`` until it returns a truthy value and return that value; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
