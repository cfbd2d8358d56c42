"""The alert instance machine, as a scenario per behaviour: evaluations in, states out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from cutover.operator.alerts.instances import Instance, Observation, advance, firing, rule_state, step, underlying

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVERY = timedelta(seconds=30)


def seen(value: float | None, revision: str = "r1", message: str = "", role: str = "candidate") -> Observation:
    return Observation("shop/fraud", "fraud", revision, role, value, message)


def run(
    values: Sequence[float | None], *, for_: int = 3, silenced: Sequence[bool] = (), threshold: float = 1.5
) -> list[Instance]:
    """Evaluate a single instance once per value, 30 s apart; the instance after each evaluation."""
    history: list[Instance] = []
    current: list[Instance] = []
    for i, value in enumerate(values):
        quiet = silenced[i] if i < len(silenced) else False
        current = advance(
            current,
            [seen(value)],
            operator=">",
            threshold=threshold,
            for_=for_,
            now=T0 + i * EVERY,
            silenced=quiet,
        )
        history.append(current[0])
    return history


def states(history: Sequence[Instance]) -> list[str]:
    return [i.state for i in history]


def test_fires_after_exactly_for_violations_in_a_row() -> None:
    history = run([2.0, 2.0, 2.0, 2.0])
    assert states(history) == ["Pending", "Pending", "Firing", "Firing"]
    assert [i.violations for i in history] == [1, 2, 3, 4]
    assert history[2].fired_at == T0 + 2 * EVERY
    assert history[3].since == T0 + 2 * EVERY, "since stays at the transition while the state holds"
    assert history[0].since == history[1].since == T0


def test_for_one_fires_at_the_first_violation() -> None:
    assert states(run([2.0], for_=1)) == ["Firing"]


def test_resolved_for_one_evaluation_then_inactive() -> None:
    history = run([2.0, 2.0, 2.0, 1.0, 1.0])
    assert states(history) == ["Pending", "Pending", "Firing", "Resolved", "Inactive"]
    assert history[3].violations == 0
    assert history[4].fired_at == T0 + 2 * EVERY, "fired_at says when it last started firing"


def test_one_good_evaluation_resets_pending() -> None:
    assert states(run([2.0, 2.0, 1.0, 2.0, 2.0, 2.0])) == [
        "Pending",
        "Pending",
        "Inactive",
        "Pending",
        "Pending",
        "Firing",
    ]


def test_flapping_value_never_fires_and_resolves_once_per_episode() -> None:
    flapping = [2.0, 1.0] * 10
    assert "Firing" not in states(run(flapping))
    history = run([2.0, 2.0, 2.0, 1.0, 2.0, 2.0, 2.0, 1.0])
    assert states(history).count("Resolved") == 2
    assert states(history)[4] == "Pending", "a new episode counts from one again"


def test_missing_data_freezes_state_and_count_and_says_why() -> None:
    history = run([2.0, 2.0, None, None, 2.0])
    assert states(history) == ["Pending", "Pending", "Pending", "Pending", "Firing"]
    assert [i.violations for i in history] == [1, 2, 2, 2, 3]
    assert history[2].value is None
    assert history[2].message == "no data"
    assert history[2].since == T0, "a gap is not a transition"


def test_missing_data_does_not_resolve_a_firing_alert() -> None:
    history = run([2.0, None, None, 1.0], for_=1)
    assert states(history) == ["Firing", "Firing", "Firing", "Resolved"]


def test_nan_is_missing_data() -> None:
    history = run([2.0, float("nan")], for_=1)
    assert states(history) == ["Firing", "Firing"]
    assert history[1].value is None


def test_reason_for_missing_data_is_kept() -> None:
    only = advance(
        [], [seen(None, message="query returned 2 series")], operator=">", threshold=1, for_=1, now=T0, silenced=False
    )
    assert only[0].message == "query returned 2 series"
    assert only[0].state == "Inactive"


def test_resolved_then_missing_data_goes_inactive() -> None:
    assert states(run([2.0, 1.0, None], for_=1)) == ["Firing", "Resolved", "Inactive"]


def test_silenced_shows_silenced_and_keeps_counting_underneath() -> None:
    history = run([2.0, 2.0, 2.0, 2.0, 2.0], silenced=[False, True, True, True, False])
    assert states(history) == ["Pending", "Silenced", "Silenced", "Silenced", "Firing"]
    assert [i.violations for i in history] == [1, 2, 3, 4, 5]
    assert history[1].since == history[3].since == T0 + EVERY, "one window is one Silenced span"
    assert history[4].since == T0 + 4 * EVERY, "leaving the window shows the real state from then"
    assert underlying(history[2], 3) == "Firing"


def test_firing_through_a_window_does_not_refire() -> None:
    history = run([2.0, 2.0, 2.0], for_=1, silenced=[False, True, False])
    assert states(history) == ["Firing", "Silenced", "Firing"]
    assert history[2].fired_at == T0, "the same episode: nothing new fired"
    assert firing(history[1:2]) == [], "a Silenced instance is not acted on"


def test_recovery_inside_a_window_is_swallowed() -> None:
    history = run([2.0, 1.0, 1.0], for_=1, silenced=[False, True, False])
    assert states(history) == ["Firing", "Silenced", "Inactive"]


def test_new_revisions_start_inactive_and_gone_revisions_drop() -> None:
    first = advance([], [seen(2.0, "r1"), seen(0.5, "r2")], operator=">", threshold=1, for_=2, now=T0, silenced=False)
    assert [(i.revision, i.state) for i in first] == [("r1", "Pending"), ("r2", "Inactive")]
    second = advance(first, [seen(2.0, "r3")], operator=">", threshold=1, for_=2, now=T0 + EVERY, silenced=False)
    assert [(i.revision, i.state, i.violations) for i in second] == [("r3", "Pending", 1)]


def test_role_and_threshold_follow_the_latest_evaluation() -> None:
    first = advance([], [seen(2.0, role="candidate")], operator=">", threshold=1, for_=3, now=T0, silenced=False)
    second = advance(first, [seen(2.0, role="stable")], operator=">", threshold=5, for_=3, now=T0, silenced=False)
    assert second[0].role == "stable"
    assert second[0].threshold == 5
    assert second[0].state == "Inactive", "below the new threshold"


@pytest.mark.parametrize(
    ("operator", "value", "violated"),
    [(">", 1.0, False), (">=", 1.0, True), ("<", 0.5, True), ("<=", 1.0, True), ("<", 1.0, False)],
)
def test_operators(operator: str, value: float, violated: bool) -> None:
    after = advance([], [seen(value)], operator=operator, threshold=1.0, for_=1, now=T0, silenced=False)  # type: ignore[arg-type]
    assert (after[0].state == "Firing") is violated


def test_rule_state_is_the_worst_instance() -> None:
    base = advance([], [seen(0.0, "a")], operator=">", threshold=1, for_=2, now=T0, silenced=False)[0]

    def of(*s: str) -> str:
        return rule_state([replace(base, state=x) for x in s])  # type: ignore[arg-type]

    assert of() == "Inactive"
    assert of("Inactive", "Resolved") == "Inactive"
    assert of("Silenced", "Inactive") == "Silenced"
    assert of("Silenced", "Pending") == "Pending"
    assert of("Pending", "Firing", "Silenced") == "Firing"


def test_step_refuses_for_below_one() -> None:
    base = advance([], [seen(0.0)], operator=">", threshold=1, for_=1, now=T0, silenced=False)[0]
    with pytest.raises(ValueError, match="at least 1"):
        step(base, seen(1.0), operator=">", for_=0, now=T0)
