"""When to try a contact again (design.md section 3).

Two layers that are never confused:

* :class:`RetryPolicy` works across runs, in minutes, through the database: after a transient failure the
  contact goes back to the queue with a next-attempt time, until its attempts are used up.
* :class:`RequestRetry` works inside one HTTP request, in seconds (see :mod:`crmsync_core.http`): timeouts, dropped connections, 5xx and 429 are retried a few times before
  the contact counts as failed. Waiting for a rate limit never counts as a failed attempt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Across-run retries of one CRM.

    Attempt 1 is immediate; after the n-th failed attempt the next one waits
    ``delay * 2**(n-1)`` (exponential) or ``delay * n`` (linear), capped at ``max_delay`` and spread by
    ``jitter`` (a fraction: 0.1 means up to 10% either way, so that a burst of failures does not retry in
    one burst). After ``max_retries`` retries the contact ends in ``Error``.
    """

    max_retries: int = 3
    delay: timedelta = timedelta(minutes=5)
    exponential: bool = True
    max_delay: timedelta = timedelta(hours=24)
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if self.delay < timedelta(0) or self.max_delay < timedelta(0):
            raise ValueError("retry delays must not be negative")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be a fraction in [0, 1)")

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def delay_after(
        self,
        failed_attempts: int,
        *,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> timedelta | None:
        """How long to wait after ``failed_attempts`` failures, or ``None`` when no attempt is left.

        ``retry_after`` (seconds, from the CRM) lengthens the delay, never shortens it.
        """
        if failed_attempts < 1:
            raise ValueError("failed_attempts counts from 1")
        if failed_attempts > self.max_retries:
            return None
        factor = 2 ** (failed_attempts - 1) if self.exponential else failed_attempts
        seconds = min(self.delay.total_seconds() * factor, self.max_delay.total_seconds())
        if self.jitter:
            seconds *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        if retry_after is not None:
            seconds = max(seconds, retry_after)
        return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class RequestRetry:
    """Inside-request retries: ``attempts`` tries per request, exponential waits from ``initial_wait``
    seconds up to ``max_wait``. A rate limit (429) is waited out for up to ``max_rate_limit_wait`` seconds
    per request without using up an attempt; beyond that the contact is handed back as a transient failure
    with the CRM's reset time as its retry-after."""

    attempts: int = 3
    initial_wait: float = 0.5
    max_wait: float = 30.0
    max_rate_limit_wait: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failed try of a request."""
        return float(min(self.initial_wait * 2 ** (attempt - 1), self.max_wait))


#: For tests and benchmarks: retry requests at once.
NO_WAIT = RequestRetry(attempts=3, initial_wait=0.0, max_wait=0.0, max_rate_limit_wait=5.0)
