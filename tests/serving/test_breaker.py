"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from cutover.serving.breaker import CircuitBreaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def opened(clock: Clock, threshold: int = 3, open_seconds: float = 30.0) -> CircuitBreaker:
    breaker = CircuitBreaker(threshold, open_seconds, clock=clock)
    for _ in range(threshold):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == State.OPEN
    return breaker


def test_consecutive_failures_open_the_breaker_at_the_threshold() -> None:
    breaker = CircuitBreaker(3, 30.0, clock=Clock())
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.opened_count == 1


def test_a_success_resets_the_failure_streak() -> None:
    breaker = CircuitBreaker(3, 30.0, clock=Clock())
    for _ in range(5):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state == State.CLOSED
    assert breaker.opened_count == 0


def test_open_refuses_until_the_pause_is_over_then_allows_one_trial() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 29.9
    assert not breaker.allow()
    assert breaker.state == State.OPEN
    clock.now += 0.1
    assert breaker.allow()
    assert breaker.state == State.HALF_OPEN
    # The trial is running: everyone else is refused.
    assert not breaker.allow()
    assert not breaker.allow()


def test_a_successful_trial_closes_the_breaker() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 30
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == State.CLOSED
    assert all(breaker.allow() for _ in range(5))
    # The failure streak starts again from zero.
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == State.CLOSED


def test_a_failed_trial_reopens_with_a_fresh_timer() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 30
    assert breaker.allow()
    clock.now += 5
    breaker.record_failure()
    assert breaker.state == State.OPEN
    assert breaker.opened_count == 2
    clock.now += 29
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()
    assert breaker.state == State.HALF_OPEN


def test_a_trial_that_never_reports_is_presumed_lost_after_the_pause() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 30
    assert breaker.allow()  # this trial's task is cancelled and never reports
    clock.now += 29
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()
    assert not breaker.allow()


def test_late_results_while_open_do_not_change_it() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += 20
    breaker.record_failure()  # a call let through before the breaker opened
    breaker.record_success()
    assert breaker.state == State.OPEN
    assert breaker.opened_count == 1
    clock.now += 10
    assert breaker.allow()


def test_state_values_are_the_metric_labels() -> None:
    assert [s.value for s in State] == ["closed", "open", "half_open"]


@pytest.mark.parametrize(("threshold", "open_seconds"), [(0, 1.0), (1, -1.0)])
def test_nonsense_settings_are_refused(threshold: int, open_seconds: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold, open_seconds)
