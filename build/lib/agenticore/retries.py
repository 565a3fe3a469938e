"""When to try a job again: exponential backoff with jitter."""

from __future__ import annotations

import random

__all__ = ["backoff_seconds", "jittered"]


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Delay before attempt ``attempt + 1``: base·2^(attempt-1), capped, with jitter.

    The jitter spreads retries of jobs that failed together (a provider outage) so they do
    not all come back at the same moment.
    """
    return jittered(min(cap, base * 2 ** max(0, attempt - 1)))


def jittered(seconds: float) -> float:
    return seconds * random.uniform(0.5, 1.0)
