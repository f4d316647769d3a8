"""Polling with a deadline: the one way tests and the test bed wait for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold before its deadline (an AssertionError, so pytest reports it plainly)."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.2,
    max_interval: float = 2.0,
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that value.

    Polls from ``interval`` up to ``max_interval`` seconds apart (backing off by 1.5x) until
    ``timeout`` seconds have passed, then raises :class:`WaitTimeout` naming ``what``, the last
    value seen and the last exception the predicate raised, if any. Exceptions from the predicate
    are treated as "not yet" (an object that does not exist yet is the common case).
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this loop
    deadline = time.monotonic() + timeout
    last_value: object = None
    last_error: BaseException | None = None
    attempts = 0
    delay = interval
    while True:
        attempts += 1
        try:
            value = predicate()
        except Exception as e:  # the predicate's failures are "not yet"; the last one is reported
            last_error = e
        else:
            if value:
                return value
            last_value = value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            msg = f"timed out after {timeout:.1f}s ({attempts} checks) waiting for {what}"
            msg += f"; last value: {last_value!r}"
            if last_error is not None:
                msg += f"; last error: {type(last_error).__name__}: {str(last_error)[:2000]}"
            raise WaitTimeout(msg)
        time.sleep(min(delay, remaining))  # a poll interval, not synchronisation: the loop re-checks
        delay = min(max_interval, delay * 1.5)
