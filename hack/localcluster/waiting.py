"""Waiting for something to become true: the one polling loop of the local cluster and its tests.

Deadlines here are generous limits against hanging forever, never
measurements: a test that needs a figure times it itself and prints it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(check: Callable[[], T | None], timeout: float, every: float = 0.5) -> T | None:
    """Call `check` until it returns something true or `timeout` seconds pass.

    Returns the first true value, or the last (false) one at the deadline.
    `check` runs at least once, and once more after the deadline has passed
    if the previous call began before it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(every)


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float = 60, every: float = 0.5
) -> T:
    """The first true value of `check`; TimeoutError naming `what` and the last value if none."""
    value = poll(check, timeout, every)
    if not value:
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {value!r}")
    return value
