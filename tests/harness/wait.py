"""Polling helper for integration tests: wait until a condition holds, fail clearly if it never does."""

import time


def wait_for(predicate, timeout: float = 10, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(interval)
    return result
