"""When to try a failed call again, and how long to wait first.

Only UNAVAILABLE (nobody answered, or the gateway's Triton is away) and RESOURCE_EXHAUSTED
(the gateway is at capacity) can succeed on a later try; every other status would fail the
same way again. Waits grow exponentially with jitter (so that many clients refused together
do not come back together), are never shorter than the gateway's retry hint, and a retry
that could not start before the caller's deadline is not made.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

from toneserve.client.errors import AnalyzeError


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4  # tries in all, the first included; 1: never retry
    initial_backoff: float = 0.25  # seconds before the first retry (before jitter)
    multiplier: float = 2.0
    max_backoff: float = 10.0
    # A hint longer than this is not waited for, deadline or not: a tenant's day quota hints the
    # end of the UTC day. The error (with its retry_after) goes to the caller instead.
    max_hinted_wait: float = 120.0

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")

    def backoff(self, retry: int) -> float:
        """Seconds before retry number `retry` (1, 2, ...): between half and all of the exponential step."""
        step = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return step * random.uniform(0.5, 1.0)

    def wait_before_retry(self, error: AnalyzeError, attempt: int, deadline: Deadline) -> float | None:
        """Seconds to wait before trying again after `attempt` failed with `error`; None: give up."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        if (error.retry_after or 0.0) > self.max_hinted_wait:
            return None
        wait = max(self.backoff(attempt), error.retry_after or 0.0)
        remaining = deadline.remaining()
        if remaining is not None and wait >= remaining:
            return None  # the retry would start after the caller's deadline
        return wait


class Deadline:
    """The caller's timeout for a whole call, retries and waits included."""

    def __init__(self, timeout: float | None):
        self.timeout = timeout
        self.at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())
