"""A/B test: split live traffic between stable (A) and candidate (B), each client pinned to
one arm, for at most the test's duration; the candidate is promoted when the sequential test
finds it the winner on the named metric, and stable is kept when the time runs out."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

from cutover.api.v1alpha1.base import seconds
from cutover.api.v1alpha1.modeldeployment import AbTestStrategy

from .. import reasons
from ..state import Pass, elapsed
from ..traffic import Split
from ..transitions import rollback, try_promote
from ..types import AnalysisInput
from .base import Strategy


@dataclass(frozen=True)
class AbTest(Strategy):
    name = "abTest"
    spec: AbTestStrategy

    def wanted(self, p: Pass) -> int:
        return max(1, math.ceil(p.replicas * self.spec.candidate_weight / 100))

    def advance(self, p: Pass, candidate_ready: int, analysis: AnalysisInput | None) -> None:
        if analysis is not None and analysis.verdict == "promote":
            try_promote(p, f"A/B test: the candidate won on {self.spec.metric}")
        elif elapsed(p.state.rollout_started_at, p.now) >= seconds(self.spec.duration):
            rollback(
                p, reasons.AB_TEST_ENDED, f"no winner on {self.spec.metric} within {self.spec.duration}; stable kept"
            )

    def allowance(self, p: Pass) -> float:
        return seconds(self.spec.duration)

    def split(self, p: Pass, candidate: str, revisions: Collection[str]) -> Split:
        return Split({candidate: self.spec.candidate_weight})

    def describe(self, p: Pass, weight: int) -> str:
        return f"abTest {p.state.candidate_revision}, candidate weight {weight}%"
