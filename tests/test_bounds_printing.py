"""`kubectl cutover status` and the demo show an unbounded confidence bound as unbounded: at the
start of a rollout the error-rate ratio lies in [0, ∞), which they printed as [0.00, 0.00]
(issue 12, item 13)."""

from __future__ import annotations

from typing import Any

from cutover.operator import kubectl_plugin
from hack import demo


def body(metric: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "fraud"},
        "spec": {"model": {"name": "fraud-scorer", "version": "v2"}, "strategy": {"type": "canary"}},
        "status": {"lastAnalysis": {"verdict": "inconclusive", "reason": "too little data", "metrics": [metric]}},
    }


# As the operator writes it: status leaves out the upper bound, which does not exist yet.
START = {"name": "error-rate", "decision": "inconclusive", "candidateSamples": 40, "baselineSamples": 41, "lower": 0.0}


def test_status_prints_an_unbounded_side_as_such() -> None:
    (line,) = [line for line in kubectl_plugin.status_lines(body(START)) if "error-rate" in line]
    assert line.endswith("estimate n/a [0, ∞)")
    bounded = {**START, "estimate": 1.2345, "lower": 0.81, "upper": 1.9}
    (line,) = [line for line in kubectl_plugin.status_lines(body(bounded)) if "error-rate" in line]
    assert line.endswith("estimate 1.23 [0.81, 1.9]")


def test_status_prints_no_bounds_when_there_are_none() -> None:
    (line,) = [line for line in kubectl_plugin.status_lines(body({"name": "agreement"})) if "agreement" in line]
    assert line.endswith("estimate n/a")


def test_demo_prints_an_unbounded_side_as_such() -> None:
    assert demo.evidence_text({**START, "estimate": 2.0}) == " (error ratio 2.00, CS [0, ∞), n=40/41)"
    assert demo.evidence_text(START) == ""
