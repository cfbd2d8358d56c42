"""A circuit breaker for one fallback link, so that a link that keeps failing is skipped at once
instead of adding its timeout to every request, and is tried again, one call at a time, after a
pause.

closed: calls go through; ``failure_threshold`` consecutive failures open the breaker.
open: calls are refused until ``open_seconds`` have passed; the next ``allow`` then moves to
half_open.
half_open: exactly one trial call goes through; others are refused while it runs. Its success
closes the breaker, its failure opens it again with a fresh timer. A trial that never reports
(its task was cancelled: a client went away) is presumed lost after ``open_seconds``, and another
trial is allowed, so a breaker cannot stay half-open forever.

Not thread-safe, and needs not be: the server calls it from its one asyncio event loop thread,
and every method runs without awaiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """``opened_count`` counts every move to open, reopenings after a failed trial included."""

    def __init__(
        self, failure_threshold: int, open_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if open_seconds < 0:
            raise ValueError(f"open_seconds must not be negative, got {open_seconds}")
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_started: float | None = None
        self.opened_count = 0

    @property
    def state(self) -> State:
        """The state now: an open breaker whose pause is over is half-open (a router that skips
        open backends then offers it the trial call)."""
        if self._state is State.OPEN and self._clock() - self._opened_at >= self.open_seconds:
            self._state = State.HALF_OPEN
            self._trial_started = None
        return self._state

    def allow(self) -> bool:
        """Whether a call may go through now. True in half_open starts the one trial call, so a
        caller that is allowed must report with ``record_success`` or ``record_failure``."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.OPEN:
            return False
        now = self._clock()
        if self._trial_started is not None and now - self._trial_started < self.open_seconds:
            return False
        self._trial_started = now
        return True

    def record_success(self) -> None:
        """A call succeeded: the failure streak ends, and a half-open breaker closes. A late
        success from a call let through before the breaker opened does not close it."""
        if self._state is State.OPEN:
            return
        self._state = State.CLOSED
        self._failures = 0
        self._trial_started = None

    def record_failure(self) -> None:
        """A call failed: a half-open breaker opens again; a closed one opens at the threshold.
        Late failures while open do not extend the pause."""
        if self._state is State.OPEN:
            return
        self._failures += 1
        if self._state is State.HALF_OPEN or self._failures >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        self._state = State.OPEN
        self._opened_at = self._clock()
        self._trial_started = None
        self.opened_count += 1
